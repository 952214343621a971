//! NDJSON input for `hookwire send`: one JSON object per line, each with an `id`.
//!
//! Lines are read with a hard cap (1 MiB by default) so that one runaway line cannot take the
//! process's memory: past the cap the rest of the line is skipped, not stored. Each line is
//! then one of: blank (ignored), an event, or malformed with a reason a person can act on.

use std::io::{self, BufRead};

use hookwire::{Error, Event, RawEvent};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The longest line accepted, in bytes (without its line ending).
pub(crate) const MAX_LINE: usize = 1 << 20;

/// What one input line held.
#[derive(Debug)]
pub(crate) enum Line {
    /// Empty or only whitespace: ignored.
    Blank,
    /// An event, ready to publish.
    Event(RawEvent),
    /// Not an event, and why.
    Malformed(String),
}

/// Reads numbered lines (from 1) of at most `cap` bytes from `input`.
pub(crate) struct Lines<R> {
    input: R,
    cap: usize,
    number: u64,
    buf: Vec<u8>,
    signed: bool,
}

impl<R: BufRead> Lines<R> {
    /// Lines of `input`, each at most `cap` bytes.
    pub(crate) fn new(input: R, cap: usize) -> Self {
        Lines {
            input,
            cap,
            number: 0,
            buf: Vec::new(),
            signed: false,
        }
    }

    /// Requests are signed (`--secret`): an id that cannot be a `webhook-id` header (see
    /// [`header_safe`]) makes its line malformed, instead of a dead letter later.
    pub(crate) fn signed(mut self, on: bool) -> Self {
        self.signed = on;
        self
    }

    /// The next line and its number, or `None` at the end of the input. Only a read error is
    /// an error; a bad line is a [`Line::Malformed`].
    pub(crate) fn next_line(&mut self) -> io::Result<Option<(u64, Line)>> {
        self.buf.clear();
        let mut len = 0usize; // bytes in the line, stored or not
        let mut any = false;
        loop {
            let chunk = match self.input.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                break;
            }
            any = true;
            let (part, found) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], true),
                None => (chunk, false),
            };
            let room = (self.cap + 1).saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&part[..part.len().min(room)]);
            len += part.len();
            let used = part.len() + usize::from(found);
            self.input.consume(used);
            if found {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.number += 1;
        if self.buf.last() == Some(&b'\r') && len <= self.cap + 1 {
            self.buf.pop();
            len -= 1;
        }
        let line = if len > self.cap {
            Line::Malformed(format!(
                "line is {len} bytes, longer than the {} byte limit",
                self.cap
            ))
        } else {
            match std::str::from_utf8(&self.buf) {
                Err(e) => Line::Malformed(format!("not UTF-8 (byte {})", e.valid_up_to() + 1)),
                Ok(text) if text.trim().is_empty() => Line::Blank,
                Ok(text) => match parse_event(text) {
                    Ok(ev) if self.signed && !header_safe(&ev.id()) => Line::Malformed(format!(
                        "\"id\" {:?} cannot be signed: with a secret, an id must be printable \
                         ASCII (it is sent as the webhook-id header)",
                        ev.id()
                    )),
                    Ok(ev) => Line::Event(ev),
                    Err(reason) => Line::Malformed(reason),
                },
            }
        };
        Ok(Some((self.number, line)))
    }
}

/// Whether `id` can be sent as a `webhook-id` header: printable ASCII (0x20 to 0x7e), the
/// engine's rule for signed requests.
pub(crate) fn header_safe(id: &str) -> bool {
    id.bytes().all(|c| (0x20..0x7f).contains(&c))
}

#[derive(Deserialize)]
struct IdProbe<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// Parses one line into an event, or says what is wrong with it.
pub(crate) fn parse_event(text: &str) -> Result<RawEvent, String> {
    if !text.trim_start().starts_with('{') {
        return Err("not a JSON object".into());
    }
    let probe: IdProbe<'_> =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Some(id) = probe.id.map(RawValue::get) else {
        return Err("no \"id\" field (or it is null)".into());
    };
    let is_number = id.starts_with(|c: char| c == '-' || c.is_ascii_digit());
    if id == "\"\"" || !(id.starts_with('"') || is_number) {
        return Err(format!(
            "\"id\" must be a non-empty string or a number, not {id}"
        ));
    }
    RawEvent::parse(text.trim()).map_err(|e| match e {
        Error::Encode { message } => message,
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    fn all(input: &[u8], cap: usize) -> Vec<(u64, String)> {
        // A tiny BufReader buffer makes lines span many fill_buf calls.
        let mut lines = Lines::new(
            BufReader::with_capacity(7, Cursor::new(input.to_vec())),
            cap,
        );
        let mut out = Vec::new();
        while let Some((n, line)) = lines.next_line().unwrap() {
            let what = match line {
                Line::Blank => "blank".to_owned(),
                Line::Event(e) => format!("event {}", e.id()),
                Line::Malformed(r) => format!("bad: {r}"),
            };
            out.push((n, what));
        }
        out
    }

    #[test]
    fn numbers_lines_and_sorts_them() {
        let input =
            b"{\"id\":\"a\"}\n\n   \r\n{\"id\":7,\"x\":[1,2]}\r\nnot json\n{\"id\":\"last\"}";
        let got = all(input, MAX_LINE);
        assert_eq!(got[0], (1, "event a".into()));
        assert_eq!(got[1], (2, "blank".into()));
        assert_eq!(got[2], (3, "blank".into()));
        assert_eq!(got[3], (4, "event 7".into()));
        assert_eq!(got[4], (5, "bad: not a JSON object".into()));
        assert_eq!(
            got[5],
            (6, "event last".into()),
            "a last line without newline counts"
        );
        assert_eq!(got.len(), 6);
    }

    #[test]
    fn long_lines_are_skipped_whole_and_reported() {
        let mut input = Vec::new();
        input.extend_from_slice(b"{\"id\":\"ok1\"}\n");
        input.extend_from_slice(
            format!("{{\"id\":\"big\",\"pad\":\"{}\"}}\n", "x".repeat(100)).as_bytes(),
        );
        input.extend_from_slice(b"{\"id\":\"ok2\"}\n");
        let got = all(&input, 64);
        assert_eq!(got[0].1, "event ok1");
        assert_eq!(got[1].0, 2);
        assert!(
            got[1].1.contains("longer than the 64 byte limit"),
            "{}",
            got[1].1
        );
        assert!(got[1].1.contains("121 bytes"), "{}", got[1].1);
        assert_eq!(
            got[2],
            (3, "event ok2".into()),
            "reading resumes after the long line"
        );
        // Exactly at the cap is fine; a CR before the newline does not count.
        let exact = format!("{{\"id\":\"{}\"}}\r\n", "y".repeat(64 - 9));
        assert_eq!(exact.len(), 66);
        assert_eq!(
            all(exact.as_bytes(), 64)[0].1,
            format!("event {}", "y".repeat(55))
        );
    }

    #[test]
    fn malformed_lines_say_why() {
        let reason = |s: &str| parse_event(s).unwrap_err();
        assert!(
            reason("{\"id\":").starts_with("invalid JSON"),
            "{}",
            reason("{\"id\":")
        );
        assert!(reason("{\"id\":\"a\"} trailing").starts_with("invalid JSON"));
        assert_eq!(reason("[1]"), "not a JSON object");
        assert_eq!(reason("\"id\""), "not a JSON object");
        assert!(reason("{\"x\":1}").contains("no \"id\""));
        assert!(reason("{\"id\":null}").contains("no \"id\""));
        assert!(reason("{\"id\":\"\"}").contains("non-empty"));
        assert!(reason("{\"id\":{\"a\":1}}").contains("non-empty string or a number"));
        assert!(reason("{\"id\":true}").contains("non-empty string or a number"));
        assert!(!reason("{\"id\":\"a\",\"action\":5}").is_empty());
        let e = parse_event("  {\"id\":-1.5,\"action\":\"push\"}  ").unwrap();
        assert_eq!((e.id().as_ref(), e.action()), ("-1.5", Some("push")));
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let got = all(b"{\"id\":\"\xff\"}\n{\"id\":\"b\"}\n", MAX_LINE);
        assert_eq!(got[0].1, "bad: not UTF-8 (byte 8)");
        assert_eq!(got[1].1, "event b");
    }

    #[test]
    fn with_signing_an_id_that_cannot_be_a_header_is_malformed() {
        let input =
            "{\"id\":\"caf\u{e9}\"}\n{\"id\":\"a\\u0001b\"}\n{\"id\":\"ok-1 x\"}\n{\"id\":7}\n";
        let read = |signed: bool| {
            let mut lines = Lines::new(input.as_bytes(), MAX_LINE).signed(signed);
            let mut out = Vec::new();
            while let Some((n, line)) = lines.next_line().unwrap() {
                out.push((n, matches!(line, Line::Event(_)), format!("{line:?}")));
            }
            out
        };
        let signed = read(true);
        assert_eq!(
            signed
                .iter()
                .map(|(n, ok, _)| (*n, *ok))
                .collect::<Vec<_>>(),
            [(1, false), (2, false), (3, true), (4, true)]
        );
        assert!(signed[0].2.contains("cannot be signed"), "{}", signed[0].2);
        assert!(
            read(false).iter().all(|(_, ok, _)| *ok),
            "unsigned: any id goes"
        );
        assert!(header_safe("a b~") && !header_safe("é") && !header_safe("\u{7f}"));
    }

    proptest::proptest! {
        // Any bytes: every line is numbered once, and reading never panics.
        #[test]
        fn any_input_is_read_line_by_line(input in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let lines = all(&input, 32);
            let expected = input.split(|&b| b == b'\n').count() - usize::from(input.last() == Some(&b'\n') || input.is_empty());
            proptest::prop_assert_eq!(lines.len(), expected);
            for (i, (n, _)) in lines.iter().enumerate() {
                proptest::prop_assert_eq!(*n, i as u64 + 1);
            }
        }
    }
}
