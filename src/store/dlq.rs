//! The dead letters: events given up, one JSON object per line, in segment files.
//!
//! ```text
//! {"endpoint":"audit","seq":42,"published_ms":..,"failed_ms":..,"status":400,"error":"..",
//!  "attempts":5,"id":"evt-1","type":"..","action":"..","media_type":"..","event":{...}}
//! ```
//!
//! (one line; `status` is `null` when the endpoint never answered; `type`, `action` and
//! `media_type` are left out when the event has none). The event's JSON is inline and kept
//! byte for byte, except that line breaks in it (whitespace, in valid JSON) become spaces so
//! that it stays on one line.
//!
//! The lines live in `DIR/dead-letters/<n>.ndjson` (`n`: 20 digits, counting up). Appends go
//! to the last one, synced (`fdatasync`), until it passes [`SEGMENT_BYTES`]; every segment
//! together stays under a cap ([`Error::DeadLettersFull`] past it, writing nothing). Reading
//! streams a line at a time, so listing and replaying take memory for one line (and a chunk
//! of letters being replayed), whatever the file holds. Taking letters out first seals the
//! segment being appended to (appends go on in a new one), so it only ever touches segments
//! nothing appends to: each one with letters taken is rewritten without them (temp file,
//! fsync, rename) or deleted when nothing is left: a replay costs at most the segments that
//! hold what it replays, never the whole file. A torn last line (a crash during an append)
//! is cut at open. A `DIR/dead-letters.ndjson` of an older hookwire becomes segment 0.
//!
//! Nothing here waits on the store's lock; an append waits at most for another append or for
//! a take to seal the segment.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::files::{TMP_SUFFIX, remove_tmp_files, sync_dir};
use super::{DeadLetter, DeadLetterFilter, DeadLetterStore};
use crate::{Error, Event, RawEvent};

/// The file of an older hookwire (one file, rewritten whole by each take).
const LEGACY_FILE: &str = "dead-letters.ndjson";
/// The directory of segments.
pub(super) const DIR_NAME: &str = "dead-letters";
/// A segment is closed (appends go to a new one) once it holds this much.
pub(super) const SEGMENT_BYTES: u64 = 4 << 20;
/// Letters handed to a take's callback at once at most (and bytes of their lines).
const CHUNK_LETTERS: usize = 1024;
const CHUNK_BYTES: usize = 4 << 20;

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

/// The segment appends go to.
#[derive(Debug)]
struct Active {
    /// Its number.
    number: u64,
    /// Its size.
    size: u64,
}

/// The dead letters of one store directory.
#[derive(Debug)]
pub(super) struct DeadLetters {
    /// `DIR/dead-letters`.
    seg_dir: PathBuf,
    /// Read-only, before a writer moved it: `DIR/dead-letters.ndjson`, read as segment 0.
    legacy: Option<PathBuf>,
    /// The most bytes every segment together may hold.
    cap: u64,
    /// When a segment is closed.
    segment_bytes: u64,
    /// Bytes in every segment.
    used: AtomicU64,
    /// Held by an append, and by a take while it seals the active segment.
    active: Mutex<Active>,
    /// One take at a time.
    take: Mutex<()>,
    /// Opened read-only: appends and takes fail.
    read_only: bool,
}

impl DeadLetters {
    /// The dead letters in `dir`, after moving an older hookwire's file into place and
    /// cutting torn last lines. Returns them and how many torn lines were cut.
    pub(super) fn open(
        dir: &Path,
        cap: u64,
        segment_bytes: u64,
    ) -> Result<(DeadLetters, u64), Error> {
        let seg_dir = dir.join(DIR_NAME);
        if !seg_dir.is_dir() {
            fs::create_dir_all(&seg_dir).map_err(|e| Error::storage("create", &seg_dir, e))?;
            sync_dir(dir)?;
        }
        remove_tmp_files(&seg_dir)?;
        let legacy = dir.join(LEGACY_FILE);
        if legacy.is_file() {
            let number = match list_segments(&seg_dir)?.first() {
                Some(&(0, _)) => list_segments(&seg_dir)?.last().map_or(0, |s| s.0 + 1),
                _ => 0,
            };
            let to = segment_path(&seg_dir, number);
            fs::rename(&legacy, &to).map_err(|e| Error::storage("rename", &legacy, e))?;
            sync_dir(&seg_dir)?;
            sync_dir(dir)?;
        }
        let segments = list_segments(&seg_dir)?;
        let mut skipped = 0;
        let mut used = 0;
        for (_, path) in &segments {
            let (size, cut) = repair_tail(path)?;
            used += size;
            skipped += cut;
        }
        let active = match segments.last() {
            Some((n, path)) => Active {
                number: *n,
                size: fs::metadata(path).map_or(0, |m| m.len()),
            },
            None => Active { number: 1, size: 0 },
        };
        let letters = DeadLetters {
            seg_dir,
            legacy: None,
            cap,
            segment_bytes,
            used: AtomicU64::new(used),
            active: Mutex::new(active),
            take: Mutex::new(()),
            read_only: false,
        };
        Ok((letters, skipped))
    }

    /// The dead letters in `dir`, left as they are (a torn last line is counted, not cut; an
    /// older hookwire's file is read where it is); appends and takes fail.
    pub(super) fn open_read_only(dir: &Path) -> Result<(DeadLetters, u64), Error> {
        let seg_dir = dir.join(DIR_NAME);
        let legacy = Some(dir.join(LEGACY_FILE)).filter(|p| p.is_file());
        let letters = DeadLetters {
            seg_dir,
            legacy,
            cap: u64::MAX,
            segment_bytes: SEGMENT_BYTES,
            used: AtomicU64::new(0),
            active: Mutex::new(Active { number: 0, size: 0 }),
            take: Mutex::new(()),
            read_only: true,
        };
        let mut skipped = 0;
        let mut used = 0;
        for path in letters.segments()? {
            let Ok(mut file) = File::open(&path) else {
                continue;
            };
            used += file.metadata().map_or(0, |m| m.len());
            if ends_torn(&mut file).map_err(|e| Error::storage("read", &path, e))? {
                skipped += 1;
            }
        }
        letters.used.store(used, Ordering::Relaxed);
        Ok((letters, skipped))
    }

    /// Fails if the letters may not be changed.
    fn writable(&self) -> Result<(), Error> {
        if self.read_only {
            return Err(Error::storage(
                "write",
                &self.seg_dir,
                "the store was opened read-only (LogStore::open_read_only)",
            ));
        }
        Ok(())
    }

    /// Every segment's path, oldest first (the older hookwire's file first, if read-only).
    fn segments(&self) -> Result<Vec<PathBuf>, Error> {
        let mut out: Vec<PathBuf> = self.legacy.iter().cloned().collect();
        if self.seg_dir.is_dir() {
            out.extend(list_segments(&self.seg_dir)?.into_iter().map(|(_, p)| p));
        }
        Ok(out)
    }

    /// Appends `letters`, one line each, and syncs: all of them, or none if they do not fit
    /// under the cap.
    fn append_lines(&self, letters: &[DeadLetter]) -> Result<(), Error> {
        self.writable()?;
        if letters.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        for letter in letters {
            encode(letter, &mut out)?;
        }
        let mut active = self.active.lock();
        let used = self.used.load(Ordering::Acquire);
        let needed = out.len() as u64;
        if used.saturating_add(needed) > self.cap {
            return Err(Error::DeadLettersFull {
                cap: self.cap,
                used,
                needed,
            });
        }
        if active.size > 0 && active.size.saturating_add(needed) > self.segment_bytes {
            active.number += 1;
            active.size = 0;
        }
        let path = segment_path(&self.seg_dir, active.number);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::storage("open", &path, e))?;
        if ends_torn(&mut file).map_err(|e| Error::storage("read", &path, e))? {
            // An append that failed earlier left half a line: end it, so ours stay readable.
            out.insert(0, b'\n');
        }
        let before = file.metadata().map_or(active.size, |m| m.len());
        let mut written = file.write_all(&out).and_then(|()| file.sync_data());
        if written.is_err() {
            // All of them or none: whole lines of a failed append would be appended again by
            // the retry, and replayed twice (found by review). Cut back to where it began.
            if let Err(e) = file.set_len(before).and_then(|()| file.sync_data()) {
                written = written.map_err(|w| {
                    std::io::Error::new(w.kind(), format!("{w}; and cutting it back failed: {e}"))
                });
            }
        }
        let after = file.metadata().map_or(before, |m| m.len());
        // What is in the file counts, whether the write worked or not.
        active.size = after;
        if after >= before {
            self.used.fetch_add(after - before, Ordering::AcqRel);
        }
        written.map_err(|e| Error::storage("write", &path, e))?;
        if !existed {
            sync_dir(&self.seg_dir)?;
        }
        Ok(())
    }

    /// Reads every whole line of every segment, oldest first, and hands `f` the letters
    /// `select` picks. A line being appended (no line break yet) is not whole. Returns how
    /// many unreadable lines were skipped.
    fn scan_lines(
        &self,
        select: &dyn Fn(&DeadLetter) -> bool,
        f: &mut dyn FnMut(DeadLetter) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        let mut skipped = 0;
        for path in self.segments()? {
            let file = match File::open(&path) {
                Ok(f) => f,
                // Taken out by a take since it was listed: its letters are gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::storage("open", &path, e)),
            };
            for_each_line(file, &path, &mut |line, whole| {
                if !whole {
                    // Being appended (or torn, and cut at the next open): not a letter yet.
                    return Ok(());
                }
                match parse(line) {
                    Some(d) if select(&d) => f(d)?,
                    Some(_) => {}
                    None => skipped += 1,
                }
                Ok(())
            })?;
        }
        Ok(skipped)
    }

    /// Takes out the letters `select` picks: hands them to `each` in chunks, and rewrites each
    /// segment without the letters `each` accepted (or deletes it). Stops at the first error:
    /// the chunks of that segment accepted before it are removed all the same (never handed
    /// out twice), what `each` refused and the rest stay. Returns how many were taken.
    fn take_lines(
        &self,
        select: &dyn Fn(&DeadLetter) -> bool,
        each: &mut dyn FnMut(Vec<DeadLetter>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        self.writable()?;
        let _taking = self.take.lock();
        // Seal: appends go to a new segment from here on, so every segment below is still.
        let sealed = {
            let mut active = self.active.lock();
            if active.size > 0 {
                active.number += 1;
                active.size = 0;
            }
            active.number
        };
        let mut taken = 0u64;
        for (n, path) in list_segments(&self.seg_dir)? {
            if n >= sealed {
                break;
            }
            let file = File::open(&path).map_err(|e| Error::storage("open", &path, e))?;
            let mut chunk = Vec::new();
            let mut chunk_bytes = 0;
            // Letters of this segment `each` accepted so far.
            let mut accepted = 0u64;
            let read = for_each_line(file, &path, &mut |line, _| {
                if let Some(d) = parse(line).filter(|d| select(d)) {
                    chunk.push(d);
                    chunk_bytes += line.len();
                    if chunk.len() >= CHUNK_LETTERS || chunk_bytes >= CHUNK_BYTES {
                        let n = chunk.len() as u64;
                        chunk_bytes = 0;
                        each(std::mem::take(&mut chunk))?;
                        accepted += n;
                    }
                }
                Ok(())
            });
            let result = read.and_then(|()| {
                if chunk.is_empty() {
                    return Ok(());
                }
                let n = chunk.len() as u64;
                each(std::mem::take(&mut chunk))?;
                accepted += n;
                Ok(())
            });
            if accepted > 0 {
                // Remove exactly what was accepted (the first `accepted` picked lines, in file
                // order), also when a later chunk failed: what the caller took must never be
                // handed out again.
                let left = std::cell::Cell::new(accepted);
                let first_accepted = |d: &DeadLetter| {
                    select(d) && left.get() > 0 && {
                        left.set(left.get() - 1);
                        true
                    }
                };
                self.rewrite_without(&path, &first_accepted)?;
                taken += accepted;
            }
            result?;
        }
        Ok(taken)
    }

    /// Replaces the (still) segment at `path` with its lines that `select` does not pick
    /// (unreadable ones are kept, for a person to look at), or deletes it if none is left.
    fn rewrite_without(
        &self,
        path: &Path,
        select: &dyn Fn(&DeadLetter) -> bool,
    ) -> Result<(), Error> {
        let before = fs::metadata(path).map_or(0, |m| m.len());
        let tmp = {
            let mut os = path.as_os_str().to_owned();
            os.push(TMP_SUFFIX);
            PathBuf::from(os)
        };
        let file = File::open(path).map_err(|e| Error::storage("open", path, e))?;
        let mut out =
            io::BufWriter::new(File::create(&tmp).map_err(|e| Error::storage("write", &tmp, e))?);
        let mut kept = 0u64;
        let copied = for_each_line(file, path, &mut |line, whole| {
            if parse(line).is_some_and(|d| select(&d)) {
                return Ok(());
            }
            kept += 1;
            out.write_all(line)
                .and_then(|()| if whole { out.write_all(b"\n") } else { Ok(()) })
                .map_err(|e| Error::storage("write", &tmp, e))
        });
        let done = copied.and_then(|()| {
            let file = out
                .into_inner()
                .map_err(|e| Error::storage("write", &tmp, e.into_error()))?;
            file.sync_data()
                .map_err(|e| Error::storage("fdatasync", &tmp, e))?;
            if kept == 0 {
                let _ = fs::remove_file(&tmp);
                fs::remove_file(path).map_err(|e| Error::storage("remove", path, e))
            } else {
                fs::rename(&tmp, path).map_err(|e| Error::storage("rename", path, e))
            }
        });
        if done.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        done?;
        sync_dir(&self.seg_dir)?;
        let after = fs::metadata(path).map_or(0, |m| m.len());
        self.used
            .fetch_sub(before.saturating_sub(after), Ordering::AcqRel);
        Ok(())
    }
}

impl DeadLetterStore for DeadLetters {
    fn append(&self, letters: &[DeadLetter]) -> Result<(), Error> {
        self.append_lines(letters)
    }

    fn scan(
        &self,
        filter: &DeadLetterFilter,
        f: &mut dyn FnMut(DeadLetter) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        self.scan_lines(&|d| filter.matches(d), f)
    }

    fn take_each(
        &self,
        select: &dyn Fn(&DeadLetter) -> bool,
        each: &mut dyn FnMut(Vec<DeadLetter>) -> Result<(), Error>,
    ) -> Result<u64, Error> {
        self.take_lines(select, each)
    }

    fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    fn cap_bytes(&self) -> u64 {
        self.cap
    }
}

/// The segments in `dir` (`<20 digits>.ndjson`), by number.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let entries = fs::read_dir(dir).map_err(|e| Error::storage("list", dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::storage("list", dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".ndjson")) else {
            continue;
        };
        if stem.len() == 20
            && let Ok(n) = stem.parse::<u64>()
        {
            out.push((n, entry.path()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What [`for_each_line`] calls: a line, and whether it ended with a line break.
type LineFn<'a> = dyn FnMut(&[u8], bool) -> Result<(), Error> + 'a;

/// The path of segment `n` in `dir`.
fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.ndjson"))
}

/// Calls `f` with each non-empty line of `file` (without its line break) and whether it had
/// one, reading a buffer at a time: memory for one line, however long the file. Only the last
/// line can lack its break (a torn append, or one being written).
fn for_each_line(file: File, path: &Path, f: &mut LineFn<'_>) -> Result<(), Error> {
    let mut reader = BufReader::with_capacity(64 << 10, file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::storage("read", path, e))?;
        if n == 0 {
            return Ok(());
        }
        let whole = line.last() == Some(&b'\n');
        if whole {
            line.pop();
        }
        if !line.trim_ascii().is_empty() {
            f(&line, whole)?;
        }
        if !whole {
            return Ok(());
        }
    }
}

/// Cuts a torn last line of the segment at `path` (completes it if it parses). Returns its
/// size afterwards and 1 if a line was cut.
fn repair_tail(path: &Path) -> Result<(u64, u64), Error> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::storage("open", path, e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::storage("read", path, e))?
        .len();
    if !ends_torn(&mut file).map_err(|e| Error::storage("read", path, e))? {
        return Ok((size, 0));
    }
    // Find where the last line starts, reading backwards a block at a time.
    let mut start = size;
    let mut block = vec![0u8; 64 << 10];
    'find: while start > 0 {
        let from = start.saturating_sub(block.len() as u64);
        let len = (start - from) as usize;
        file.seek(SeekFrom::Start(from))
            .and_then(|_| file.read_exact(&mut block[..len]))
            .map_err(|e| Error::storage("read", path, e))?;
        if let Some(i) = block[..len].iter().rposition(|&b| b == b'\n') {
            start = from + i as u64 + 1;
            break 'find;
        }
        start = from;
    }
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(start))
        .and_then(|_| file.read_to_end(&mut tail))
        .map_err(|e| Error::storage("read", path, e))?;
    let (repaired, size, cut) = if parse(&tail).is_some() {
        // Whole but for its line break: keep it, so later lines start on their own.
        ((&file).write_all(b"\n"), size + 1, 0)
    } else {
        (file.set_len(start), start, 1)
    };
    repaired
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::storage("repair", path, e))?;
    Ok((size, cut))
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

    fn open(dir: &Path, cap: u64, segment_bytes: u64) -> DeadLetters {
        DeadLetters::open(dir, cap, segment_bytes).unwrap().0
    }

    fn seqs(letters: &DeadLetters) -> Vec<u64> {
        let all = letters.list(&DeadLetterFilter::all()).unwrap();
        all.iter().map(|d| d.seq).collect()
    }

    fn line_len(d: &DeadLetter) -> u64 {
        let mut out = Vec::new();
        encode(d, &mut out).unwrap();
        out.len() as u64
    }

    #[test]
    fn takes_lose_nothing_appended_while_they_rewrite() {
        let dir = crate::store::test_dir::TestDir::new("dlq-race");
        let letters = std::sync::Arc::new(open(dir.path(), u64::MAX, 2048));
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
        let (letters, skipped) = DeadLetters::open(dir.path(), u64::MAX, SEGMENT_BYTES).unwrap();
        assert_eq!(skipped, 0);
        letters.append(&[letter("a", 1, 1)]).unwrap();
        let path = segment_path(&letters.seg_dir, 1);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"endpoint\":").unwrap();
        letters.append(&[letter("a", 2, 2)]).unwrap();
        assert_eq!(seqs(&letters), [1, 2]);
        let skipped = letters
            .scan(&DeadLetterFilter::all(), &mut |_| Ok(()))
            .unwrap();
        assert_eq!(skipped, 1, "the half line");
    }

    /// Issue 10, item 9: the dead letters have a cap, and what does not fit is refused whole,
    /// with a typed error; taking letters out makes room again.
    #[test]
    fn the_cap_refuses_whole_batches_and_takes_make_room() {
        let dir = crate::store::test_dir::TestDir::new("dlq-cap");
        let one = line_len(&letter("a", 1, 1));
        let letters = open(dir.path(), 3 * one + one / 2, SEGMENT_BYTES);
        letters
            .append(&[letter("a", 1, 1), letter("a", 3, 3)])
            .unwrap();
        let e = letters
            .append(&[letter("a", 5, 5), letter("a", 7, 7)])
            .unwrap_err();
        match e {
            Error::DeadLettersFull { cap, used, needed } => {
                assert_eq!((cap, used, needed), (3 * one + one / 2, 2 * one, 2 * one));
            }
            e => panic!("{e}"),
        }
        assert_eq!(
            seqs(&letters),
            [1, 3],
            "nothing of the refused batch written"
        );
        letters.append(&[letter("a", 5, 5)]).unwrap();
        assert!(letters.append(&[letter("a", 7, 7)]).is_err());
        assert_eq!(letters.used_bytes(), 3 * one);
        let mut first = DeadLetterFilter::all();
        first.seqs = Some((1, 1));
        assert_eq!(letters.take(&first).unwrap().len(), 1);
        assert_eq!(letters.used_bytes(), 2 * one);
        letters.append(&[letter("a", 7, 7)]).unwrap();
        assert_eq!(seqs(&letters), [3, 5, 7]);
        // The cap holds across an open: what is on disk counts.
        drop(letters);
        let letters = open(dir.path(), 3 * one + one / 2, SEGMENT_BYTES);
        assert_eq!(letters.used_bytes(), 3 * one);
        assert!(letters.append(&[letter("a", 9, 9)]).is_err());
    }

    /// A take whose second chunk is refused still removes the first chunk, which the caller
    /// accepted: it must never be handed out (and so replayed) again. (Found by review: the
    /// whole segment stayed, so a retried replay delivered the first chunk twice.)
    #[test]
    fn a_take_that_fails_midway_removes_what_was_accepted() {
        let dir = crate::store::test_dir::TestDir::new("dlq-take-midway");
        let letters = open(dir.path(), 1 << 30, 1 << 30);
        let n = CHUNK_LETTERS as u64 + 500;
        let all: Vec<DeadLetter> = (1..=n).map(|s| letter("a", s, s)).collect();
        letters.append(&all).unwrap();
        let mut chunks = 0;
        let mut got = Vec::new();
        let e = letters
            .take_each(&|_| true, &mut |chunk| {
                chunks += 1;
                if chunks == 2 {
                    return Err(Error::Closed);
                }
                got.extend(chunk.into_iter().map(|d| d.seq));
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(e, Error::Closed), "{e}");
        assert_eq!(got.len(), CHUNK_LETTERS);
        let left = seqs(&letters);
        assert_eq!(left.len() as u64, n - CHUNK_LETTERS as u64);
        assert_eq!(
            left[0],
            CHUNK_LETTERS as u64 + 1,
            "the accepted ones are gone"
        );
        // The rest comes out whole on the next take, nothing twice.
        let rest = letters.take_each(&|_| true, &mut |_| Ok(())).unwrap();
        assert_eq!(rest, n - CHUNK_LETTERS as u64);
        assert!(seqs(&letters).is_empty());
    }

    /// Issue 10, item 9: the letters are in segments; a take rewrites only the segments that
    /// hold what it takes (and deletes those it empties), and hands them over in chunks.
    #[test]
    fn takes_touch_only_the_segments_they_take_from() {
        let dir = crate::store::test_dir::TestDir::new("dlq-segments");
        let one = line_len(&letter("a", 10, 10));
        // Four letters a segment (odd seqs have no status: one byte longer).
        let letters = open(dir.path(), u64::MAX, 4 * (one + 1));
        for seq in 10..30 {
            let ep = if seq < 14 { "b" } else { "a" };
            letters.append(&[letter(ep, seq, seq)]).unwrap();
        }
        let segs = || list_segments(&letters.seg_dir).unwrap();
        assert_eq!(segs().len(), 5);
        let stamp = |n: usize| {
            let (_, p) = &segs()[n];
            (p.clone(), fs::metadata(p).unwrap().modified().unwrap())
        };
        let untouched: Vec<_> = (2..5).map(stamp).collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Segment 1 is all b's: deleted; segment 2 loses one letter: rewritten; the rest
        // stay as they are.
        let mut select = DeadLetterFilter::all();
        select.endpoint = Some("b".into());
        let mut chunks = 0;
        let taken = letters
            .take_each(&|d| select.matches(d) || d.seq == 15, &mut |chunk| {
                chunks += 1;
                assert!(!chunk.is_empty());
                Ok(())
            })
            .unwrap();
        assert_eq!((taken, chunks), (5, 2), "one chunk per segment");
        assert_eq!(segs().len(), 4, "segment 1 gone");
        for (p, t) in &untouched {
            assert_eq!(
                fs::metadata(p).unwrap().modified().unwrap(),
                *t,
                "{p:?} untouched"
            );
        }
        assert_eq!(
            seqs(&letters),
            [14, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]
        );
        // A refused chunk stops the take and removes nothing of its segment.
        let e = letters
            .take_each(&|d| d.seq >= 20, &mut |_| Err(Error::Closed))
            .unwrap_err();
        assert!(e.is_closed());
        assert_eq!(seqs(&letters).len(), 15);
        // Appends after a take go to a new segment; a take empties everything.
        letters.append(&[letter("a", 30, 30)]).unwrap();
        assert_eq!(letters.take(&DeadLetterFilter::all()).unwrap().len(), 16);
        assert!(segs().is_empty());
        assert_eq!(letters.used_bytes(), 0);
    }

    /// A dead-letter file of an older hookwire is read in place read-only, and becomes the
    /// first segment when a writer opens the directory.
    #[test]
    fn an_older_single_file_is_kept() {
        let dir = crate::store::test_dir::TestDir::new("dlq-legacy");
        let mut bytes = Vec::new();
        for seq in 1..=3 {
            encode(&letter("a", seq, seq), &mut bytes).unwrap();
        }
        bytes.extend_from_slice(b"{\"torn");
        fs::write(dir.path().join(LEGACY_FILE), &bytes).unwrap();
        let (ro, skipped) = DeadLetters::open_read_only(dir.path()).unwrap();
        assert_eq!((seqs(&ro), skipped), (vec![1, 2, 3], 1));
        assert!(
            !dir.path().join(DIR_NAME).exists(),
            "read-only creates nothing"
        );
        let (letters, skipped) = DeadLetters::open(dir.path(), u64::MAX, SEGMENT_BYTES).unwrap();
        assert_eq!(skipped, 1);
        assert!(!dir.path().join(LEGACY_FILE).exists());
        letters.append(&[letter("a", 4, 4)]).unwrap();
        assert_eq!(seqs(&letters), [1, 2, 3, 4]);
        assert_eq!(list_segments(&letters.seg_dir).unwrap()[0].0, 0);
    }

    #[test]
    fn bad_lines_do_not_parse() {
        assert!(parse(b"").is_none());
        assert!(parse(b"{\"endpoint\":\"a\"").is_none());
        assert!(parse(b"not json").is_none());
    }
}
