//! The embedded default store: segment files, cursors and dead letters in one directory.
//!
//! [`LogStore`] puts the parts together: the log's [`Writer`], the endpoints' slots and
//! cursors ([`Meta`]), the dead-letter file, and the directory lock. Opening it recovers what
//! a crash left, in this order: take the lock, sweep `*.tmp` leftovers, read the slot and
//! cursor files, repair the log's last segment, then clamp every cursor to the log.
//!
//! Segments are removed by [`save_cursors`](Store::save_cursors) once every known endpoint's
//! cursor has passed them. A store that knows no endpoint removes nothing: its records may be
//! what is left of endpoints whose slot files were lost. Endpoints that register in such a
//! store (while it is open) start at its oldest record, so those records are redelivered,
//! not stranded.
//!
//! [`LogStore::open_read_only`] opens a directory for looking only: no lock, nothing created,
//! cut, synced or rewritten, and every write fails.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::damage::{DamageKind, QUARANTINE, Quarantine};
use super::disk::{Disk, OsDisk};
use super::dlq::{self, DeadLetters};
use super::files::{lock_dir, remove_tmp_files, sync_dir};
use super::meta::{Loaded, Meta};
use super::reader::LogReader;
use super::segment;
use super::writer::{Mode, Writer};
use super::{DeadLetterStore, EndpointState, Recovery, Store, StoreConfig, StoreReader};
use crate::Error;

/// The embedded default [`Store`]: an append-only log of segment files in one directory.
///
/// One process at a time may have a directory open (`DIR/LOCK` is locked while the store
/// lives). After a write or sync of the log fails, every later append and commit fails too:
/// drop the store and open it again, which repairs the log's tail.
#[derive(Debug)]
pub struct LogStore {
    log_dir: PathBuf,
    writer: Writer,
    meta: Meta,
    dead_letters: Arc<DeadLetters>,
    quarantine: Arc<Quarantine>,
    recovery: Recovery,
    /// Opened read-only: nothing is written.
    read_only: bool,
    /// The slot and cursor files were lost while the log had records: where endpoints that
    /// register now start (the oldest record), so nothing is stranded.
    orphans_from: Option<u64>,
    /// Per slot, the first seq an endpoint that takes it may start at: one past every record
    /// that could carry the bit of the endpoint forgotten there while this store was open.
    reuse_from: [u64; 64],
    /// Holds the directory's lock for as long as the store lives (`None`: read-only).
    _lock: Option<File>,
}

impl LogStore {
    /// Opens (creating if needed) the store in `config.dir`, recovering what a crash left.
    /// [`recovery`](Store::recovery) tells what was found and repaired.
    ///
    /// The last segment is scanned to its end: damage followed by valid records is copied to
    /// `DIR/quarantine` and skipped (never cut); damage nothing valid follows (a torn tail)
    /// is copied there, then cut. Older segments are checked by readers as they reach them.
    ///
    /// Fails with [`Error::Storage`] if another store holds the directory (op `lock`), or if
    /// a file cannot be read or written (damaged bytes that cannot be copied aside are not
    /// cut: the open fails instead); with [`Error::Config`] if `segment_bytes` is 0, or
    /// `quota_bytes` is less than two segments (the active segment is never removed, so a
    /// smaller quota could fill for good).
    pub fn open(config: StoreConfig) -> Result<LogStore, Error> {
        Self::open_on(config, Arc::new(OsDisk))
    }

    /// [`open`](LogStore::open) with the log's segment files on `disk` (tests put them on a
    /// disk that injects faults; the other files stay in `config.dir`).
    pub(crate) fn open_on(config: StoreConfig, disk: Arc<dyn Disk>) -> Result<LogStore, Error> {
        if config.segment_bytes == 0 {
            return Err(Error::config("segment_bytes", "must be at least 1"));
        }
        if config.quota_bytes < config.segment_bytes.saturating_mul(2) {
            return Err(Error::config(
                "quota_bytes",
                format!(
                    "{} is less than two segments of {} bytes: the segment being written is \
                     never removed, so the quota could fill for good",
                    config.quota_bytes, config.segment_bytes
                ),
            ));
        }
        let dir = config.dir.clone();
        let log_dir = dir.join("log");
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| Error::storage("create", &dir, e))?;
            // The new directory's own entry must survive a power cut too.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let lock = lock_dir(&dir)?;
        if !log_dir.is_dir() {
            fs::create_dir_all(&log_dir).map_err(|e| Error::storage("create", &log_dir, e))?;
            sync_dir(&dir)?;
        }
        remove_tmp_files(&dir)?;
        remove_tmp_files(&log_dir)?;

        if dir.join(QUARANTINE).is_dir() {
            remove_tmp_files(&dir.join(QUARANTINE))?;
        }
        Self::recover(&config, Some(lock), disk)
    }

    /// Opens the store in `dir` to look at it only: it takes no lock (so it works while
    /// another process has the directory open, and sees what that one has written so far),
    /// and creates, cuts, syncs and rewrites nothing (no `LOCK`, no `log/`, no quarantine).
    /// Damage is found and reported as [`open`](LogStore::open) would ([`Store::recovery`],
    /// with `read_only` set), and readers read through it; every write (`append`, `commit`,
    /// a new `endpoint`, `save_cursors`, dead-letter `append` and `take`) fails with
    /// [`Error::Storage`].
    ///
    /// Fails with [`Error::Storage`] if `dir` is not a directory or a file cannot be read.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<LogStore, Error> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::storage("open", dir, "not a directory"));
        }
        Self::recover(&StoreConfig::new(dir), None, Arc::new(OsDisk))
    }

    /// Reads what is in the directory and repairs it (unless `lock` is `None`: read-only).
    fn recover(
        config: &StoreConfig,
        lock: Option<File>,
        disk: Arc<dyn Disk>,
    ) -> Result<LogStore, Error> {
        let read_only = lock.is_none();
        let dir = config.dir.clone();
        let log_dir = dir.join("log");
        let quarantine = Arc::new(Quarantine::new(&dir));
        let loaded = Loaded::read(&dir)?;
        let mode = if read_only {
            Mode::ReadOnly(&quarantine)
        } else {
            Mode::Write(&quarantine)
        };
        let (writer, repair) = Writer::open_on(
            disk,
            &log_dir,
            config.segment_bytes,
            config.quota_bytes,
            loaded.max_seq(),
            mode,
        )?;
        let (first_seq, next_seq) = (writer.first_seq(), writer.next_seq());
        let (meta, meta_repair) = Meta::recover(&dir, loaded, first_seq, next_seq, read_only)?;
        if meta_repair.cursors_reset {
            log::warn!(
                "durable store {}: the cursor file was missing or unreadable; every endpoint \
                 resumes from the oldest record it may have (events will be redelivered)",
                dir.display()
            );
        }
        if meta_repair.slots_lost {
            log::warn!(
                "durable store {}: the slot and cursor files were missing or unreadable; \
                 endpoints that register now start at the oldest record, {first_seq}",
                dir.display()
            );
        }
        for c in &meta_repair.clamped {
            log::warn!(
                "durable store {}: the cursor of {} was at {}, outside the log ({first_seq} to \
                 {next_seq}); it resumes at {}",
                dir.display(),
                c.endpoint,
                c.saved,
                c.now
            );
        }
        let (dead_letters, dead_letters_skipped) = if read_only {
            DeadLetters::open_read_only(&dir)?
        } else {
            DeadLetters::open(&dir, config.dead_letter_bytes, dlq::SEGMENT_BYTES)?
        };
        let lost_records = repair
            .damaged
            .iter()
            .filter(|d| d.kind == DamageKind::Corrupt)
            .map(|d| d.lost)
            .sum();
        let recovery = Recovery {
            segments: writer.segments(),
            records: next_seq - first_seq,
            first_seq,
            next_seq,
            truncated_bytes: repair.truncated_bytes,
            corrupt_records: repair.corrupt_records,
            damaged: repair.damaged,
            lost_records,
            cursors_reset: meta_repair.cursors_reset,
            slots_lost: meta_repair.slots_lost,
            slots_rebuilt: meta_repair.slots_rebuilt,
            cursors_clamped: meta_repair.clamped,
            dead_letters_skipped,
            read_only,
        };
        Ok(LogStore {
            log_dir,
            writer,
            meta,
            dead_letters: Arc::new(dead_letters),
            quarantine,
            recovery,
            read_only,
            orphans_from: meta_repair.slots_lost.then_some(first_seq),
            reuse_from: [0; 64],
            _lock: lock,
        })
    }
}

impl Store for LogStore {
    fn append(&mut self, mask: u64, time_ms: u64, payload: &[u8]) -> Result<u64, Error> {
        self.writer.append(mask, time_ms, payload)
    }

    fn commit(&mut self) -> Result<u64, Error> {
        self.writer.commit()
    }

    fn durable_through(&self) -> u64 {
        self.writer.durable_through()
    }

    fn next_seq(&self) -> u64 {
        self.writer.next_seq()
    }

    fn first_seq(&self) -> u64 {
        self.writer.first_seq()
    }

    fn used_bytes(&self) -> u64 {
        self.writer.used_bytes()
    }

    fn quota_bytes(&self) -> u64 {
        self.writer.quota_bytes()
    }

    fn reader(&self) -> Result<Box<dyn StoreReader>, Error> {
        let segments = if self.read_only && !self.log_dir.is_dir() {
            Vec::new()
        } else {
            segment::list_segments(&self.log_dir)?
        };
        Ok(Box::new(LogReader::new(
            self.log_dir.clone(),
            segments,
            self.quarantine.clone(),
            !self.read_only,
        )))
    }

    /// A new endpoint starts after the last durable record (`durable_through + 1`, which is
    /// `next_seq` unless appends are waiting for a commit). Records still waiting were
    /// appended before it existed, so none has its bit; starting before them rather than
    /// after keeps `since` valid even if a crash loses them and their seqs are given again.
    ///
    /// When the slot and cursor files were lost ([`Recovery::slots_lost`]) it starts at the
    /// oldest record instead: the records in the log were for endpoints the store can no
    /// longer name, and a new registration takes the lowest free slot, as the lost ones did
    /// in the order they registered; so endpoints registered again in the same order (as
    /// `hookwire send --resume` does) get their own records back.
    ///
    /// A slot freed by [`forget`](Store::forget) is given again like any other; the new
    /// endpoint starts no earlier than one past the last record appended before the forget,
    /// so the records that still carry the old endpoint's bit are never read for it.
    fn endpoint(&mut self, name: &str) -> Result<EndpointState, Error> {
        let start = self
            .orphans_from
            .unwrap_or(self.writer.durable_through() + 1);
        let reuse_from = self.reuse_from;
        self.meta
            .register(name, |slot| start.max(reuse_from[usize::from(slot)]))
    }

    /// Commits what is appended first (so every record that may carry the endpoint's bit is
    /// below where a new endpoint on its slot starts).
    fn forget(&mut self, name: &str) -> Result<Option<EndpointState>, Error> {
        if self.read_only {
            return self.meta.forget(name);
        }
        if self.writer.next_seq() != self.writer.durable_through() + 1 {
            self.writer.commit()?;
        }
        let forgotten = self.meta.forget(name)?;
        if let Some(state) = forgotten {
            self.reuse_from[usize::from(state.slot)] = self.writer.next_seq();
        }
        Ok(forgotten)
    }

    fn endpoints(&self) -> Vec<(String, EndpointState)> {
        self.meta.endpoints()
    }

    /// Cursors are also kept at or below `durable_through + 1`: nothing past it can have
    /// been delivered.
    fn save_cursors(&mut self, acked: &[(u8, u64)]) -> Result<(), Error> {
        // (Read-only: `save` fails, so nothing below runs.)
        self.meta.save(acked, self.writer.durable_through() + 1)?;
        if let Some(min) = self.meta.min_acked() {
            self.writer.remove_before(min)?;
        }
        Ok(())
    }

    fn dead_letters(&self) -> std::sync::Arc<dyn DeadLetterStore> {
        self.dead_letters.clone()
    }

    fn recovery(&self) -> &Recovery {
        &self.recovery
    }
}

#[cfg(test)]
#[path = "log_store_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "log_store_model.rs"]
mod model;
