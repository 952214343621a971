//! `hookwire send`'s NDJSON reader (src/bin/hookwire/ndjson.rs, included by path as
//! `crate::ndjson`): any bytes on stdin.
//!
//! Input: a byte choosing the line cap (1 to 255 bytes, or the real 1 MiB), then the input.
//! Invariants: never panics; lines are numbered 1, 2, ... one per line of input (a last line
//! without its newline counts); how the input arrives (1, 7 or 8192 bytes per read) changes
//! nothing; a line longer than the cap (its CR not counted) is malformed and the next line
//! is read normally; blank lines are blank; an event is the line's JSON, trimmed, and is what
//! `parse_event` makes of that line.

use std::io::{BufReader, Cursor};

use hookwire::Event;

use crate::ndjson::{Line, Lines, MAX_LINE, parse_event};

pub fn check(data: &[u8]) {
    let Some((&cap, input)) = data.split_first() else {
        return;
    };
    let cap = if cap == 0 { MAX_LINE } else { usize::from(cap) };
    let small = read(input, cap, 1);
    assert_eq!(read(input, cap, 7), small, "7-byte reads");
    let lines = read(input, cap, 8192);
    assert_eq!(lines, small, "8 KiB reads");

    let mut raw: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    if input.is_empty() || input.ends_with(b"\n") {
        raw.pop();
    }
    assert_eq!(lines.len(), raw.len(), "one entry per line");
    for (i, ((n, line), raw)) in lines.iter().zip(&raw).enumerate() {
        assert_eq!(*n, i as u64 + 1);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw);
        match line {
            Rendered::Long => assert!(raw.len() > cap, "line {n} is short: {raw:?}"),
            _ => assert!(raw.len() <= cap, "line {n} is over the cap"),
        }
        match line {
            Rendered::Blank => assert!(text.unwrap().trim().is_empty()),
            Rendered::Event(id, json) => {
                let text = text.unwrap();
                assert_eq!(json, text.trim());
                let again = parse_event(text).expect("parses alone too");
                assert_eq!(
                    (again.id().as_ref(), again.json()),
                    (id.as_str(), json.as_str())
                );
            }
            Rendered::Malformed(reason) => {
                assert!(!reason.is_empty());
                if let Ok(text) = text {
                    assert!(!text.trim().is_empty());
                    assert!(parse_event(text).is_err(), "line {n}: {reason}");
                }
            }
            Rendered::Long => {}
        }
    }
}

/// A line, comparable across reads.
#[derive(Debug, PartialEq, Eq)]
enum Rendered {
    Blank,
    Event(String, String),
    Long,
    Malformed(String),
}

fn read(input: &[u8], cap: usize, chunk: usize) -> Vec<(u64, Rendered)> {
    let mut lines = Lines::new(BufReader::with_capacity(chunk, Cursor::new(input)), cap);
    let mut out = Vec::new();
    while let Some((n, line)) = lines.next_line().expect("reading memory cannot fail") {
        let line = match line {
            Line::Blank => Rendered::Blank,
            Line::Event(e) => Rendered::Event(e.id().into_owned(), e.json().to_owned()),
            Line::Malformed(r) if r.contains("byte limit") => Rendered::Long,
            Line::Malformed(r) => Rendered::Malformed(r),
        };
        out.push((n, line));
    }
    out
}
