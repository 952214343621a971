//! The dead-letter file, `dead-letters.ndjson`: events given up, one JSON object per line.
//!
//! ```text
//! {"endpoint":"audit","seq":42,"published_ms":..,"failed_ms":..,"status":400,"error":"..",
//!  "attempts":5,"id":"evt-1","type":"..","action":"..","media_type":"..","event":{...}}
//! ```
//!
//! (one line; `status` is `null` when the endpoint never answered; `type`, `action` and
//! `media_type` are left out when the event has none). The event's JSON is inline and kept
//! byte for byte, except that line breaks in it (whitespace, in valid JSON) become spaces so
//! that it stays on one line. Appends are synced (`fdatasync`); taking letters out rewrites
//! the file atomically. A torn last line (a crash during an append) is cut at open.
//!
//! Nothing here waits on the store's lock, and no lock is held across a read of the whole
//! file or its rewrite: listing reads without a lock (a line being appended is not whole yet,
//! so it is not read); taking writes what stays to a temp file without a lock, then, holding
//! the append lock only for that, adds what was appended meanwhile and renames.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::files::{TMP_SUFFIX, read_optional, sync_dir};
use super::{DeadLetter, DeadLetterFilter, DeadLetterStore};
use crate::{Error, Event, RawEvent};

const FILE: &str = "dead-letters.ndjson";

/// One line, as written.
#[derive(Serialize)]
struct LineOut<'a> {
    endpoint: &'a str,
    seq: u64,
    published_ms: u64,
    failed_ms: u64,
    status: Option<u16>,
    error: &'a str,
    attempts: u32,
    id: &'a str,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<&'a str>,
    event: &'a RawValue,
}

/// One line, as read back.
#[derive(Deserialize)]
struct LineIn {
    endpoint: String,
    seq: u64,
    published_ms: u64,
    failed_ms: u64,
    status: Option<u16>,
    error: String,
    attempts: u32,
    id: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    media_type: Option<String>,
    event: Box<RawValue>,
}

/// The dead-letter file of one store directory.
#[derive(Debug)]
pub(super) struct DeadLetters {
    dir: PathBuf,
    path: PathBuf,
    /// Held by an append, and by a take only while it adds what was appended meanwhile and
    /// renames: appends never wait for a whole rewrite.
    append: Mutex<()>,
    /// One take at a time (a second works on the first's result).
    take: Mutex<()>,
    /// Opened read-only: appends and takes fail.
    read_only: bool,
}

impl DeadLetters {
    /// The file in `dir`, after cutting a torn last line. Returns it and how many lines could
    /// not be read (the torn one included).
    pub(super) fn open(dir: &Path) -> Result<(DeadLetters, u64), Error> {
        let letters = DeadLetters {
            dir: dir.to_owned(),
            path: dir.join(FILE),
            append: Mutex::new(()),
            take: Mutex::new(()),
            read_only: false,
        };
        let skipped = letters.recover()?;
        Ok((letters, skipped))
    }

    /// The file in `dir`, left as it is (a torn last line is counted, not cut); appends and
    /// takes fail.
    pub(super) fn open_read_only(dir: &Path) -> Result<(DeadLetters, u64), Error> {
        let letters = DeadLetters {
            dir: dir.to_owned(),
            path: dir.join(FILE),
            append: Mutex::new(()),
            take: Mutex::new(()),
            read_only: true,
        };
        let skipped = match read_optional(&letters.path)? {
            None => 0,
            Some(bytes) => lines(&bytes).filter(|line| parse(line).is_none()).count() as u64,
        };
        Ok((letters, skipped))
    }

    /// Fails if the file may not be changed.
    fn writable(&self) -> Result<(), Error> {
        if self.read_only {
            return Err(Error::storage(
                "write",
                &self.path,
                "the store was opened read-only (LogStore::open_read_only)",
            ));
        }
        Ok(())
    }

    fn recover(&self) -> Result<u64, Error> {
        let Some(bytes) = read_optional(&self.path)? else {
            return Ok(0);
        };
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut skipped = lines(&bytes[..complete])
            .filter(|line| parse(line).is_none())
            .count() as u64;
        let tail = &bytes[complete..];
        if tail.is_empty() {
            return Ok(skipped);
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::storage("open", &self.path, e))?;
        let repaired = if parse(tail).is_some() {
            // Whole but for its line break: keep it, so later lines start on their own.
            (&file).write_all(b"\n")
        } else {
            skipped += 1;
            file.set_len(complete as u64)
        };
        repaired
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::storage("repair", &self.path, e))?;
        Ok(skipped)
    }

    /// Appends `letters`, one line each, and syncs the file.
    fn append_lines(&self, letters: &[DeadLetter]) -> Result<(), Error> {
        self.writable()?;
        if letters.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        for letter in letters {
            encode(letter, &mut out)?;
        }
        let _appending = self.append.lock();
        let existed = self.path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::storage("open", &self.path, e))?;
        if ends_torn(&mut file).map_err(|e| Error::storage("read", &self.path, e))? {
            // An append that failed earlier left half a line: end it, so ours stay readable.
            out.insert(0, b'\n');
        }
        file.write_all(&out)
            .map_err(|e| Error::storage("write", &self.path, e))?;
        file.sync_data()
            .map_err(|e| Error::storage("fdatasync", &self.path, e))?;
        if !existed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Removes the letters `filter` selects and returns them. The file is replaced
    /// atomically with the rest (unreadable lines are kept, for a person to look at), and
    /// letters appended while it was rewritten are kept too.
    fn take_lines(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, Error> {
        self.writable()?;
        let _taking = self.take.lock();
        // Without the append lock: what is whole now. A line being appended is not yet.
        let Some(bytes) = read_optional(&self.path)? else {
            return Ok(Vec::new());
        };
        let seen = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut taken = Vec::new();
        let mut kept = Vec::with_capacity(seen);
        for line in lines(&bytes[..seen]) {
            match parse(line) {
                Some(d) if filter.matches(&d) => taken.push(d),
                _ => {
                    kept.extend_from_slice(line);
                    kept.push(b'\n');
                }
            }
        }
        if taken.is_empty() {
            return Ok(taken);
        }
        let mut tmp_name = self.path.as_os_str().to_owned();
        tmp_name.push(TMP_SUFFIX);
        let tmp = PathBuf::from(tmp_name);
        let mut out = File::create(&tmp)
            .and_then(|mut f| f.write_all(&kept).map(|()| f))
            .map_err(|e| Error::storage("write", &tmp, e))?;
        // With the append lock, briefly: what was appended since, then the swap.
        let _appending = self.append.lock();
        let swapped = (|| {
            let mut file = File::open(&self.path)?;
            file.seek(SeekFrom::Start(seen as u64))?;
            let mut since = Vec::new();
            file.read_to_end(&mut since)?;
            out.write_all(&since)?;
            out.sync_data()?;
            fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = swapped {
            let _ = fs::remove_file(&tmp);
            return Err(Error::storage("rewrite", &self.path, e));
        }
        sync_dir(&self.dir)?;
        Ok(taken)
    }
}

impl DeadLetterStore for DeadLetters {
    fn append(&self, letters: &[DeadLetter]) -> Result<(), Error> {
        self.append_lines(letters)
    }

    fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, Error> {
        let Some(bytes) = read_optional(&self.path)? else {
            return Ok(Vec::new());
        };
        Ok(lines(&bytes)
            .filter_map(parse)
            .filter(|d| filter.matches(d))
            .collect())
    }

    fn take(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, Error> {
        self.take_lines(filter)
    }
}

/// Whether the file's last byte is not a line break (a line was left half written).
fn ends_torn(file: &mut File) -> io::Result<bool> {
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// The non-empty lines of `bytes`.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|line| !line.trim_ascii().is_empty())
}

/// Appends `letter` as one line.
fn encode(letter: &DeadLetter, out: &mut Vec<u8>) -> Result<(), Error> {
    let event = &letter.event;
    let id = event.id();
    let flat;
    let json = if event.json().contains(['\n', '\r']) {
        flat = RawValue::from_string(event.json().replace(['\n', '\r'], " "))?;
        &*flat
    } else {
        event.raw_json()
    };
    let line = LineOut {
        endpoint: &letter.endpoint,
        seq: letter.seq,
        published_ms: letter.published_ms,
        failed_ms: letter.failed_ms,
        status: letter.status,
        error: &letter.error,
        attempts: letter.attempts,
        id: &id,
        kind: event.kind(),
        action: event.action(),
        media_type: event.media_type(),
        event: json,
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.push(b'\n');
    Ok(())
}

/// One line back into a letter; `None` if it is not a whole, valid one.
fn parse(line: &[u8]) -> Option<DeadLetter> {
    let l: LineIn = serde_json::from_slice(line).ok()?;
    let json = Box::<str>::from(l.event).into_string();
    let event = RawEvent::from_parts(l.id, l.kind, l.action, l.media_type, json).ok()?;
    Some(DeadLetter {
        endpoint: l.endpoint,
        seq: l.seq,
        published_ms: l.published_ms,
        failed_ms: l.failed_ms,
        status: l.status,
        error: l.error,
        attempts: l.attempts,
        event,
    })
}

/// Used by the file's own tests and the store's.
#[cfg(test)]
pub(super) fn letter(endpoint: &str, seq: u64, failed_ms: u64) -> DeadLetter {
    DeadLetter {
        endpoint: endpoint.into(),
        seq,
        published_ms: seq * 10,
        failed_ms,
        status: if seq.is_multiple_of(2) {
            Some(400)
        } else {
            None
        },
        error: format!("gave up on {seq}"),
        attempts: 3,
        event: RawEvent::parse(format!(r#"{{"id":"e{seq}","action":"push","n":{seq}}}"#))
            .expect("test event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_with_metadata() {
        let mut d = letter("a", 4, 100);
        d.event = RawEvent::from_parts(
            "custom".into(),
            Some("t".into()),
            Some("push".into()),
            Some("m".into()),
            "{\n  \"x\": [1,\r\n 2]\n}".into(),
        )
        .unwrap();
        let mut out = Vec::new();
        encode(&d, &mut out).unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains(r#""status":400"#) && text.contains(r#""type":"t""#));
        let back = parse(out.trim_ascii_end()).unwrap();
        assert_eq!(
            (back.endpoint.as_str(), back.seq, back.failed_ms),
            ("a", 4, 100)
        );
        assert_eq!((back.status, back.attempts), (Some(400), 3));
        assert_eq!(back.event.id(), "custom");
        assert_eq!(back.event.kind(), Some("t"));
        assert_eq!(back.event.action(), Some("push"));
        assert_eq!(back.event.media_type(), Some("m"));
        assert_eq!(back.event.json(), "{   \"x\": [1,   2] }");

        out.clear();
        encode(&letter("b", 3, 7), &mut out).unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains(r#""status":null"#) && !text.contains("media_type"));
        let back = parse(&out).unwrap();
        assert_eq!(back.event.json(), r#"{"id":"e3","action":"push","n":3}"#);
        assert_eq!(back.event.kind(), None);
    }

    #[test]
    fn takes_lose_nothing_appended_while_they_rewrite() {
        let dir = crate::store::test_dir::TestDir::new("dlq-race");
        let letters = std::sync::Arc::new(DeadLetters::open(dir.path()).unwrap().0);
        let n = 300u64;
        let appender = {
            let letters = letters.clone();
            std::thread::spawn(move || {
                for seq in 1..=n {
                    letters.append(&[letter("a", seq, seq)]).unwrap();
                }
            })
        };
        let mut seen = Vec::new();
        while !appender.is_finished() {
            seen.extend(letters.take(&DeadLetterFilter::all()).unwrap());
        }
        appender.join().unwrap();
        seen.extend(letters.list(&DeadLetterFilter::all()).unwrap());
        let mut seqs: Vec<u64> = seen.iter().map(|d| d.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "each once, none lost");
    }

    #[test]
    fn an_append_after_half_a_line_starts_a_new_one() {
        let dir = crate::store::test_dir::TestDir::new("dlq-torn");
        let (letters, skipped) = DeadLetters::open(dir.path()).unwrap();
        assert_eq!(skipped, 0);
        letters.append(&[letter("a", 1, 1)]).unwrap();
        let mut file = OpenOptions::new().append(true).open(&letters.path).unwrap();
        file.write_all(b"{\"endpoint\":").unwrap();
        letters.append(&[letter("a", 2, 2)]).unwrap();
        let seqs: Vec<_> = letters
            .list(&DeadLetterFilter::all())
            .unwrap()
            .iter()
            .map(|d| d.seq)
            .collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!(DeadLetters::open(dir.path()).unwrap().1, 1, "the half line");
    }

    #[test]
    fn bad_lines_do_not_parse() {
        assert!(parse(b"").is_none());
        assert!(parse(b"{\"endpoint\":\"a\"").is_none());
        assert!(parse(b"not json").is_none());
    }
}
