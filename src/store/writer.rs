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
//! A failed write or sync fails the group being committed, so nothing of it may be read back
//! later: the writer **rolls the log back** to the end of the last successful commit before it
//! returns the error (it removes the segments created since, cuts the one that was active
//! then back to its committed length, `fdatasync`s it and syncs the directory). Then it
//! refuses every later append and commit with the same error (the disk is full or failing);
//! reopening the store starts again from the last commit. If the rollback fails too, the
//! error says so: the failed group's records may then be read back after a restart.
//!
//! Every file operation goes through a [`Disk`]: the real file system, or in tests one that
//! injects faults and loses unsynced writes on a simulated crash.
//!
//! Recovery scans the last segment to its end. Damage followed by a valid record is corrupt:
//! it is copied to the quarantine and left in place (readers skip it). Damage with nothing
//! valid after it is a torn tail: copied to the quarantine, then cut. Opened read-only, the
//! writer finds the same and changes nothing (it cannot append).

use std::collections::VecDeque;
use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::damage::{Damage, DamageKind, Quarantine};
use super::disk::{Disk, SegmentFile, write_all};
use super::segment::{self, HEADER_LEN, MAX_PAYLOAD, Peek, Scanner};
use crate::Error;

/// Buffered bytes past which an append writes the buffer out first (without a sync).
const FLUSH_AT: usize = 4 << 20;

/// What recovery found in the last segment, and what it cut.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Repair {
    /// Bytes cut: a torn tail (read-only: the bytes a writer would cut).
    pub(super) truncated_bytes: u64,
    /// 1 if there was a torn tail (the records in it cannot be counted reliably).
    pub(super) corrupt_records: u64,
    /// The damaged ranges, the torn tail last.
    pub(super) damaged: Vec<Damage>,
}

/// How the log is opened.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode<'a> {
    /// To append: repairs the tail, keeping damaged bytes in the quarantine first.
    Write(&'a Quarantine),
    /// To read: creates, cuts and syncs nothing; appends fail.
    ReadOnly(&'a Quarantine),
}

/// The segment being appended to.
struct Active {
    first_seq: u64,
    path: PathBuf,
    /// `None` in a read-only log (nothing can be written).
    file: Option<Box<dyn SegmentFile>>,
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
    fn new(
        first_seq: u64,
        path: PathBuf,
        file: Option<Box<dyn SegmentFile>>,
        written: u64,
    ) -> Active {
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

/// Where the last successful commit left the log: the segment that was active then, and its
/// length. A rollback cuts the log back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    /// The segment's first seq (its name).
    segment: u64,
    /// Its committed length in bytes.
    len: u64,
}

/// The sizes a writer keeps to.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    segment_bytes: u64,
    quota_bytes: u64,
}

/// The log's writing side.
#[derive(Debug)]
pub(super) struct Writer {
    disk: Arc<dyn Disk>,
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
    /// The end of the last successful commit (or of what recovery found).
    committed: Mark,
    /// The write or sync error that broke the writer (or that it is read-only).
    failed: Option<Error>,
    /// Opened read-only: nothing is written, cut or removed.
    is_read_only: bool,
}

impl Writer {
    /// Opens the log in `log_dir`: lists the older segments, scans the last one, repairs its
    /// tail and makes what it holds durable. An empty log starts at `min_next_seq` (at least
    /// 1), so seqs that cursors already refer to are not reused. Read-only, it changes nothing
    /// (a missing `log_dir` is an empty log) and every append fails. The segment files are
    /// on `disk`.
    pub(super) fn open_on(
        disk: Arc<dyn Disk>,
        log_dir: &Path,
        segment_bytes: u64,
        quota_bytes: u64,
        min_next_seq: u64,
        mode: Mode<'_>,
    ) -> Result<(Writer, Repair), Error> {
        let read_only = matches!(mode, Mode::ReadOnly(_));
        let seqs = if read_only && !log_dir.is_dir() {
            Vec::new()
        } else {
            segment::list_segments_on(&*disk, log_dir)?
        };
        let sizes = Sizes {
            segment_bytes,
            quota_bytes,
        };
        let Some((&last, older)) = seqs.split_last() else {
            let first = min_next_seq.max(1);
            let path = log_dir.join(segment::segment_name(first));
            let file = if read_only {
                None
            } else {
                let file = disk
                    .create_new(&path)
                    .map_err(|e| Error::storage("create", &path, e))?;
                disk.sync_dir(log_dir)
                    .map_err(|e| Error::storage("fsync dir", log_dir, e))?;
                Some(file)
            };
            let active = Active::new(first, path, file, 0);
            let mut writer = Writer::new(disk, log_dir, sizes, VecDeque::new(), active);
            writer.read_only(read_only);
            return Ok((writer, Repair::default()));
        };
        let mut closed = VecDeque::with_capacity(older.len());
        for &seq in older {
            let path = log_dir.join(segment::segment_name(seq));
            let len = disk
                .len(&path)
                .map_err(|e| Error::storage("open", &path, e))?;
            closed.push_back((seq, len));
        }
        let path = log_dir.join(segment::segment_name(last));
        let mut tail = recover_last(&*disk, &path, last)?;
        let mut repair = Repair {
            truncated_bytes: tail.torn_bytes,
            corrupt_records: u64::from(tail.torn_bytes > 0),
            damaged: std::mem::take(&mut tail.damaged),
        };
        let mut file = match mode {
            Mode::ReadOnly(q) => {
                for d in &mut repair.damaged {
                    q.find(d);
                }
                let active = Active::new(last, path, None, tail.valid_bytes + tail.torn_bytes);
                let mut writer = Writer::new(disk, log_dir, sizes, closed, active);
                writer.next_seq = tail.next_seq;
                writer.durable_through = tail.next_seq - 1;
                writer.read_only(true);
                return Ok((writer, repair));
            }
            Mode::Write(q) => {
                // Copied aside before anything is cut: a torn tail is not destroyed either.
                for d in &mut repair.damaged {
                    q.keep_from(&path, || disk.open_read(&path), d)?;
                }
                disk.open_append(&path)
                    .map_err(|e| Error::storage("open", &path, e))?
            }
        };
        if tail.torn_bytes > 0 {
            file.set_len(tail.valid_bytes)
                .map_err(|e| Error::storage("truncate", &path, e))?;
            log::warn!(
                "durable store: cut a torn tail of {} bytes from {} (copied to the quarantine)",
                tail.torn_bytes,
                path.display()
            );
        }
        for d in repair
            .damaged
            .iter()
            .filter(|d| d.kind == DamageKind::Corrupt)
        {
            log::error!(
                "durable store: {} bytes at byte {} of {} are damaged ({}): records {}..{} \
                 are lost; the records after them are kept",
                d.bytes,
                d.offset,
                path.display(),
                d.reason,
                d.after_seq + 1,
                d.next_seq
            );
        }
        // What a crashed process wrote may still be only in the page cache: sync it before
        // calling it durable. Its directory entry too: the process that created it may have
        // died before syncing the directory (records committed into it now would be lost
        // with the entry).
        file.sync_data()
            .map_err(|e| Error::storage("fdatasync", &path, e))?;
        disk.sync_dir(log_dir)
            .map_err(|e| Error::storage("fsync dir", log_dir, e))?;
        let active = Active::new(last, path, Some(file), tail.valid_bytes);
        let mut writer = Writer::new(disk, log_dir, sizes, closed, active);
        writer.next_seq = tail.next_seq;
        writer.durable_through = tail.next_seq - 1;
        Ok((writer, repair))
    }

    /// Makes every append and commit fail: the log was opened read-only.
    fn read_only(&mut self, read_only: bool) {
        if read_only {
            self.failed = Some(read_only_error(&self.log_dir));
        }
        self.is_read_only = read_only;
    }

    /// A writer appending to `active`, its seqs set as for an empty segment (`open` sets
    /// them for a recovered one).
    fn new(
        disk: Arc<dyn Disk>,
        log_dir: &Path,
        sizes: Sizes,
        closed: VecDeque<(u64, u64)>,
        active: Active,
    ) -> Writer {
        Writer {
            disk,
            log_dir: log_dir.to_owned(),
            segment_bytes: sizes.segment_bytes,
            quota_bytes: sizes.quota_bytes,
            closed_bytes: closed.iter().map(|s| s.1).sum(),
            closed,
            next_seq: active.first_seq,
            durable_through: active.first_seq - 1,
            committed: Mark {
                segment: active.first_seq,
                len: active.written,
            },
            active,
            unsynced: false,
            dir_dirty: false,
            failed: None,
            is_read_only: false,
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
            self.sync_dir().map_err(|e| self.fail(e))?;
            self.dir_dirty = false;
        }
        self.durable_through = self.next_seq - 1;
        self.committed = Mark {
            segment: self.active.first_seq,
            len: self.active.written,
        };
        Ok(self.durable_through)
    }

    /// Removes the closed segments whose every record is below `seq`, then syncs the
    /// directory. The active segment is never removed.
    pub(super) fn remove_before(&mut self, seq: u64) -> Result<(), Error> {
        if self.is_read_only {
            return Err(read_only_error(&self.log_dir));
        }
        let mut removed = false;
        while let Some(&(first, bytes)) = self.closed.front() {
            let next_first = self.closed.get(1).map_or(self.active.first_seq, |s| s.0);
            if next_first > seq {
                break;
            }
            let path = self.log_dir.join(segment::segment_name(first));
            match self.disk.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::storage("remove", &path, e)),
            }
            self.closed.pop_front();
            self.closed_bytes -= bytes;
            removed = true;
        }
        if removed {
            self.sync_dir()?;
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
            self.sync_dir().map_err(|e| self.fail(e))?;
        }
        let path = self.log_dir.join(segment::segment_name(self.next_seq));
        let file = match self.disk.create_new(&path) {
            Ok(file) => file,
            Err(e) => return Err(self.fail(Error::storage("create", &path, e))),
        };
        let old = std::mem::replace(
            &mut self.active,
            Active::new(self.next_seq, path, Some(file), 0),
        );
        // Everything in the old segment was committed: a rollback need not reach back into
        // it (and it may be removed once the cursors pass it).
        if self.committed
            == (Mark {
                segment: old.first_seq,
                len: old.written,
            })
        {
            self.committed = Mark {
                segment: self.next_seq,
                len: 0,
            };
        }
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
        let Some(file) = &mut self.active.file else {
            return Err(self.fail(read_only_error(&self.log_dir)));
        };
        // Some bytes may have reached the file before an error: a rollback cuts them.
        self.unsynced = true;
        if let Err(e) = write_all(&mut **file, &self.active.buf) {
            return Err(self.fail(Error::storage("write", &self.active.path, e)));
        }
        self.active.written += self.active.buf.len() as u64;
        self.active.buf.clear();
        // One huge record should not pin its memory for the life of the store.
        if self.active.buf.capacity() > 2 * FLUSH_AT {
            self.active.buf.shrink_to(FLUSH_AT);
        }
        Ok(())
    }

    /// `fdatasync`s the active file if it was written to.
    fn sync_active(&mut self) -> Result<(), Error> {
        if self.unsynced {
            let synced = match &mut self.active.file {
                Some(file) => file
                    .sync_data()
                    .map_err(|e| Error::storage("fdatasync", &self.active.path, e)),
                None => Err(read_only_error(&self.log_dir)),
            };
            if let Err(e) = synced {
                return Err(self.fail(e));
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// Syncs the log directory's entries.
    fn sync_dir(&self) -> Result<(), Error> {
        self.disk
            .sync_dir(&self.log_dir)
            .map_err(|e| Error::storage("fsync dir", &self.log_dir, e))
    }

    /// Breaks the writer with `e`: rolls the log back to the last commit (so nothing of the
    /// group that failed can be read back, after a restart either), then makes every later
    /// append and commit fail. Returns `e`, saying whether the rollback worked.
    fn fail(&mut self, e: Error) -> Error {
        if self.is_read_only {
            self.failed = Some(e.clone());
            return e;
        }
        // Said by the caller (the engine logs it once and fails the tickets with it).
        let through = self.durable_through;
        let e = match self.roll_back() {
            Ok(()) => with_note(
                e,
                &format!(
                    "nothing after seq {through} was kept (the log was rolled back); the \
                     store takes no more writes"
                ),
            ),
            Err(undo) => with_note(
                e,
                &format!(
                    "rolling the log back to seq {through} failed too ({undo}): records \
                     after it may be read back after a restart"
                ),
            ),
        };
        self.failed = Some(e.clone());
        e
    }

    /// Cuts the log back to where the last commit left it: removes the segments created
    /// since, truncates the segment that was active then to its committed length, syncs it
    /// and the directory. The writer's state follows the files (so `used_bytes` is right).
    fn roll_back(&mut self) -> Result<(), Error> {
        let mark = self.committed;
        self.active.buf.clear();
        self.next_seq = self.durable_through + 1;
        let mut removed = false;
        while self.active.first_seq > mark.segment {
            let path = self.active.path.clone();
            self.active.file = None;
            match self.disk.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::storage("remove", &path, e)),
            }
            removed = true;
            let Some((first, bytes)) = self.closed.pop_back() else {
                return Err(Error::storage(
                    "rollback",
                    &self.log_dir,
                    format!("segment {} is not in the log", mark.segment),
                ));
            };
            self.closed_bytes -= bytes;
            let path = self.log_dir.join(segment::segment_name(first));
            self.active = Active::new(first, path, None, bytes);
        }
        if self.active.file.is_none() {
            let file = self
                .disk
                .open_append(&self.active.path)
                .map_err(|e| Error::storage("open", &self.active.path, e))?;
            self.active.file = Some(file);
        }
        let path = self.active.path.clone();
        if let Some(file) = &mut self.active.file {
            file.set_len(mark.len)
                .map_err(|e| Error::storage("truncate", &path, e))?;
            file.sync_data()
                .map_err(|e| Error::storage("fdatasync", &path, e))?;
        }
        self.active.written = mark.len;
        self.unsynced = false;
        if removed || self.dir_dirty {
            self.sync_dir()?;
            self.dir_dirty = false;
        }
        Ok(())
    }
}

/// `e` with `note` added to its message.
fn with_note(e: Error, note: &str) -> Error {
    match e {
        Error::Storage {
            op,
            path,
            message,
            source,
        } => Error::Storage {
            op,
            path,
            message: format!("{message}; {note}"),
            source,
        },
        other => other,
    }
}

/// The error every write to a read-only log fails with.
fn read_only_error(log_dir: &Path) -> Error {
    Error::storage(
        "write",
        log_dir,
        "the store was opened read-only (LogStore::open_read_only)",
    )
}

/// The last segment as recovery found it.
struct Tail {
    /// Bytes up to the end of the last valid record (where a torn tail starts).
    valid_bytes: u64,
    /// Bytes of the torn tail after them (0: none).
    torn_bytes: u64,
    next_seq: u64,
    /// Corrupt ranges, then the torn tail, if any.
    damaged: Vec<Damage>,
}

/// Scans the last segment to its end: its valid records, the damage between them (skipped,
/// kept), and a torn tail (damage nothing valid follows).
fn recover_last(disk: &dyn Disk, path: &Path, first_seq: u64) -> Result<Tail, Error> {
    let file = disk
        .open_read(path)
        .map_err(|e| Error::storage("open", path, e))?;
    let len = disk
        .len(path)
        .map_err(|e| Error::storage("open", path, e))?;
    let mut scanner = Scanner::new(file, first_seq, Vec::new());
    let mut damaged = Vec::new();
    loop {
        let peek = scanner
            .peek()
            .map_err(|e| Error::storage("read", path, e))?;
        match peek {
            Peek::Ready => scanner.consume(),
            Peek::Skipped(skip) => damaged.push(Damage::new(
                DamageKind::Corrupt,
                first_seq,
                skip.offset,
                skip.bytes,
                skip.reason,
                skip.expected,
                skip.next_seq,
            )),
            Peek::Eof { .. } if scanner.damage().is_some() => break,
            Peek::Eof { partial: 0 } => break,
            // A record cut short, unless a valid one follows it (its length is damaged).
            Peek::Eof { .. } => scanner.mark_damaged("record extends past the end of the file"),
        }
    }
    let next_seq = scanner.next_seq();
    let Some((offset, reason)) = scanner.damage() else {
        return Ok(Tail {
            valid_bytes: scanner.offset(),
            torn_bytes: 0,
            next_seq,
            damaged,
        });
    };
    damaged.push(Damage::new(
        DamageKind::TornTail,
        first_seq,
        offset,
        len - offset,
        reason,
        next_seq,
        next_seq,
    ));
    Ok(Tail {
        valid_bytes: offset,
        torn_bytes: len - offset,
        next_seq,
        damaged,
    })
}

#[cfg(test)]
#[path = "writer_faults.rs"]
mod faults;
