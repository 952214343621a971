//! The log's writer: recovery of the segment files at open, buffered appends, group commit,
//! segment rolling and removal.
//!
//! Appends only encode into a buffer (a memcpy and a CRC); `commit` writes the buffer with one
//! `write` and makes it durable with one `fdatasync` (and a directory fsync when a segment was
//! created since the last commit). The buffer is also written out, without a sync, when it
//! passes [`FLUSH_AT`], so memory stays bounded however much is appended between commits.
//!
//! Rolling to a new segment first writes and `fdatasync`s the old one (and syncs the
//! directory if the old one's entry is not durable yet), and only then creates the new file.
//! So once a segment exists, every older one is complete on disk, and recovery only has to
//! repair the last one.
//!
//! A failed write or sync leaves the file in an unknown state (a partial write, or pages the
//! kernel dropped after a failed `fdatasync`), so the writer refuses every later append and
//! commit with the same error; reopening the store repairs the tail.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::files::sync_dir;
use super::segment::{self, HEADER_LEN, MAX_PAYLOAD, Peek, Scanner};
use crate::Error;

/// Buffered bytes past which an append writes the buffer out first (without a sync).
const FLUSH_AT: usize = 4 << 20;

/// What recovery cut from the last segment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Repair {
    /// Bytes cut.
    pub(super) truncated_bytes: u64,
    /// Records cut (the first bad one; what follows it cannot be counted reliably).
    pub(super) corrupt_records: u64,
}

/// The segment being appended to.
struct Active {
    first_seq: u64,
    path: PathBuf,
    file: File,
    /// Bytes in the file.
    written: u64,
    /// Encoded records not written yet.
    buf: Vec<u8>,
}

impl fmt::Debug for Active {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Active")
            .field("first_seq", &self.first_seq)
            .field("written", &self.written)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl Active {
    fn new(first_seq: u64, path: PathBuf, file: File, written: u64) -> Active {
        Active {
            first_seq,
            path,
            file,
            written,
            buf: Vec::new(),
        }
    }

    fn size(&self) -> u64 {
        self.written + self.buf.len() as u64
    }
}

/// The log's writing side.
#[derive(Debug)]
pub(super) struct Writer {
    log_dir: PathBuf,
    segment_bytes: u64,
    quota_bytes: u64,
    /// Segments before the active one, oldest first: (first seq, bytes).
    closed: VecDeque<(u64, u64)>,
    closed_bytes: u64,
    active: Active,
    next_seq: u64,
    durable_through: u64,
    /// The active file was written to since its last `fdatasync`.
    unsynced: bool,
    /// A segment was created since the directory was last synced.
    dir_dirty: bool,
    /// The write or sync error that broke the writer.
    failed: Option<Error>,
}

impl Writer {
    /// Opens the log in `log_dir`: checks the older segments, repairs the last one, and makes
    /// what it holds durable. An empty log starts at `min_next_seq` (at least 1), so seqs that
    /// cursors already refer to are not reused.
    pub(super) fn open(
        log_dir: &Path,
        segment_bytes: u64,
        quota_bytes: u64,
        min_next_seq: u64,
    ) -> Result<(Writer, Repair), Error> {
        let seqs = segment::list_segments(log_dir)?;
        let Some((&last, older)) = seqs.split_last() else {
            let first = min_next_seq.max(1);
            let path = log_dir.join(segment::segment_name(first));
            let file = create_segment(&path)?;
            sync_dir(log_dir)?;
            let active = Active::new(first, path, file, 0);
            let writer = Writer::new(log_dir, segment_bytes, quota_bytes, VecDeque::new(), active);
            return Ok((writer, Repair::default()));
        };
        let mut closed = VecDeque::with_capacity(older.len());
        for &seq in older {
            let path = log_dir.join(segment::segment_name(seq));
            closed.push_back((seq, check_older(&path, seq)?));
        }
        let path = log_dir.join(segment::segment_name(last));
        let tail = recover_last(&path, last)?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::storage("open", &path, e))?;
        if tail.repair.truncated_bytes > 0 {
            file.set_len(tail.valid_bytes)
                .map_err(|e| Error::storage("truncate", &path, e))?;
            log::warn!(
                "durable store: cut a torn or corrupt tail of {} bytes from {}",
                tail.repair.truncated_bytes,
                path.display()
            );
        }
        // What a crashed process wrote may still be only in the page cache: sync it before
        // calling it durable.
        file.sync_data()
            .map_err(|e| Error::storage("fdatasync", &path, e))?;
        let active = Active::new(last, path, file, tail.valid_bytes);
        let mut writer = Writer::new(log_dir, segment_bytes, quota_bytes, closed, active);
        writer.next_seq = tail.next_seq;
        writer.durable_through = tail.next_seq - 1;
        Ok((writer, tail.repair))
    }

    /// A writer appending to `active`, its seqs set as for an empty segment (`open` sets
    /// them for a recovered one).
    fn new(
        log_dir: &Path,
        segment_bytes: u64,
        quota_bytes: u64,
        closed: VecDeque<(u64, u64)>,
        active: Active,
    ) -> Writer {
        Writer {
            log_dir: log_dir.to_owned(),
            segment_bytes,
            quota_bytes,
            closed_bytes: closed.iter().map(|s| s.1).sum(),
            closed,
            next_seq: active.first_seq,
            durable_through: active.first_seq - 1,
            active,
            unsynced: false,
            dir_dirty: false,
            failed: None,
        }
    }

    /// Buffers one record; see [`Store::append`](super::Store::append).
    pub(super) fn append(&mut self, mask: u64, time_ms: u64, payload: &[u8]) -> Result<u64, Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::config(
                "payload",
                format!(
                    "an event of {} bytes is larger than the store's limit of {MAX_PAYLOAD}",
                    payload.len()
                ),
            ));
        }
        let size = (HEADER_LEN + payload.len()) as u64;
        let used = self.used_bytes();
        if used.saturating_add(size) > self.quota_bytes {
            return Err(Error::Quota {
                quota: self.quota_bytes,
                used,
            });
        }
        if self.active.size() > 0 && self.active.size() + size > self.segment_bytes {
            self.roll()?;
        } else if self.active.buf.len() + size as usize > FLUSH_AT {
            self.flush()?;
        }
        let seq = self.next_seq;
        segment::encode(&mut self.active.buf, seq, mask, time_ms, payload);
        self.next_seq += 1;
        Ok(seq)
    }

    /// Makes every append so far durable; see [`Store::commit`](super::Store::commit).
    pub(super) fn commit(&mut self) -> Result<u64, Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.flush()?;
        self.sync_active()?;
        if self.dir_dirty {
            sync_dir(&self.log_dir).map_err(|e| self.fail(e))?;
            self.dir_dirty = false;
        }
        self.durable_through = self.next_seq - 1;
        Ok(self.durable_through)
    }

    /// Removes the closed segments whose every record is below `seq`, then syncs the
    /// directory. The active segment is never removed.
    pub(super) fn remove_before(&mut self, seq: u64) -> Result<(), Error> {
        let mut removed = false;
        while let Some(&(first, bytes)) = self.closed.front() {
            let next_first = self.closed.get(1).map_or(self.active.first_seq, |s| s.0);
            if next_first > seq {
                break;
            }
            let path = self.log_dir.join(segment::segment_name(first));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::storage("remove", &path, e)),
            }
            self.closed.pop_front();
            self.closed_bytes -= bytes;
            removed = true;
        }
        if removed {
            sync_dir(&self.log_dir)?;
        }
        Ok(())
    }

    /// The seq the next append gets.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The highest seq made durable (0: none).
    pub(super) fn durable_through(&self) -> u64 {
        self.durable_through
    }

    /// The oldest seq kept (the first segment's name).
    pub(super) fn first_seq(&self) -> u64 {
        self.closed.front().map_or(self.active.first_seq, |s| s.0)
    }

    /// Bytes in segment files plus bytes buffered.
    pub(super) fn used_bytes(&self) -> u64 {
        self.closed_bytes + self.active.size()
    }

    /// The quota, in bytes.
    pub(super) fn quota_bytes(&self) -> u64 {
        self.quota_bytes
    }

    /// Segment files, the active one included.
    pub(super) fn segments(&self) -> usize {
        self.closed.len() + 1
    }

    /// Closes the active segment (written and synced) and starts the next one at `next_seq`.
    fn roll(&mut self) -> Result<(), Error> {
        self.flush()?;
        self.sync_active()?;
        // The new segment's entry must not outlive the old one's in a crash.
        if self.dir_dirty {
            sync_dir(&self.log_dir).map_err(|e| self.fail(e))?;
        }
        let path = self.log_dir.join(segment::segment_name(self.next_seq));
        let file = create_segment(&path).map_err(|e| self.fail(e))?;
        let old = std::mem::replace(&mut self.active, Active::new(self.next_seq, path, file, 0));
        self.active.buf = old.buf;
        self.closed.push_back((old.first_seq, old.written));
        self.closed_bytes += old.written;
        self.dir_dirty = true;
        Ok(())
    }

    /// Writes the buffer to the active file (no sync).
    fn flush(&mut self) -> Result<(), Error> {
        if self.active.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.active.file.write_all(&self.active.buf) {
            return Err(self.fail(Error::storage("write", &self.active.path, e)));
        }
        self.active.written += self.active.buf.len() as u64;
        self.active.buf.clear();
        // One huge record should not pin its memory for the life of the store.
        if self.active.buf.capacity() > 2 * FLUSH_AT {
            self.active.buf.shrink_to(FLUSH_AT);
        }
        self.unsynced = true;
        Ok(())
    }

    /// `fdatasync`s the active file if it was written to.
    fn sync_active(&mut self) -> Result<(), Error> {
        if self.unsynced {
            if let Err(e) = self.active.file.sync_data() {
                return Err(self.fail(Error::storage("fdatasync", &self.active.path, e)));
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// Breaks the writer with `e` (every later append and commit fails with it).
    fn fail(&mut self, e: Error) -> Error {
        self.failed = Some(e.clone());
        e
    }
}

/// Creates an empty segment file, open for appending.
fn create_segment(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::storage("create", path, e))
}

/// Checks a segment before the last one: it must start with a valid record numbered as the
/// file is named. Returns its size. (Its later records are checked when a reader reaches them.)
fn check_older(path: &Path, first_seq: u64) -> Result<u64, Error> {
    let file = File::open(path).map_err(|e| Error::storage("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::storage("open", path, e))?
        .len();
    // Only the first record is read: a small buffer (it grows if the record is larger).
    let mut scanner = Scanner::new(file, first_seq, vec![0; 4096]);
    match scanner.peek() {
        Ok(Peek::Ready) => Ok(len),
        Ok(_) => Err(Error::storage(
            "recover",
            path,
            "a segment before the last one is empty or does not start with its first record; \
             the log is damaged (move the file away to open the store without it)",
        )),
        Err(e) => Err(Error::storage("read", path, e)),
    }
}

/// The valid part of the last segment, and what lies beyond it.
struct Tail {
    valid_bytes: u64,
    next_seq: u64,
    repair: Repair,
}

/// Scans the last segment to its end: how much of it is valid, and what must be cut.
fn recover_last(path: &Path, first_seq: u64) -> Result<Tail, Error> {
    let file = File::open(path).map_err(|e| Error::storage("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::storage("open", path, e))?
        .len();
    let mut scanner = Scanner::new(file, first_seq, Vec::new());
    loop {
        match scanner
            .peek()
            .map_err(|e| Error::storage("read", path, e))?
        {
            Peek::Ready => scanner.consume(),
            Peek::Eof { partial: 0 } => break,
            Peek::Eof { .. } | Peek::Corrupt(_) => {
                let valid_bytes = scanner.offset();
                return Ok(Tail {
                    valid_bytes,
                    next_seq: scanner.next_seq(),
                    repair: Repair {
                        truncated_bytes: len - valid_bytes,
                        corrupt_records: 1,
                    },
                });
            }
        }
    }
    Ok(Tail {
        valid_bytes: scanner.offset(),
        next_seq: scanner.next_seq(),
        repair: Repair::default(),
    })
}
