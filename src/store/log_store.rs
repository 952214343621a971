//! The embedded default store: segment files, cursors and dead letters in one directory.
//!
//! [`LogStore`] puts the parts together: the log's [`Writer`], the endpoints' slots and
//! cursors ([`Meta`]), the dead-letter file, and the directory lock. Opening it recovers what
//! a crash left, in this order: take the lock, sweep `*.tmp` leftovers, read the slot and
//! cursor files, repair the log's last segment, then clamp every cursor to the log.
//!
//! Segments are removed by [`save_cursors`](Store::save_cursors) once every known endpoint's
//! cursor has passed them. A store that knows no endpoint removes nothing: its records may be
//! what is left of endpoints whose slot files were lost, and an operator may still want them
//! (they cost disk until an endpoint registers, after which they are removed as usual, since a
//! new endpoint starts at the end of the log).

use std::fs::{self, File};
use std::path::PathBuf;

use super::dlq::DeadLetters;
use super::files::{lock_dir, remove_tmp_files, sync_dir};
use super::meta::{Loaded, Meta};
use super::reader::LogReader;
use super::segment;
use super::writer::Writer;
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
    dead_letters: std::sync::Arc<DeadLetters>,
    recovery: Recovery,
    /// Holds the directory's lock for as long as the store lives.
    _lock: File,
}

impl LogStore {
    /// Opens (creating if needed) the store in `config.dir`, recovering what a crash left.
    /// [`recovery`](Store::recovery) tells what was found and repaired.
    ///
    /// Fails with [`Error::Storage`] if another store holds the directory (op `lock`), if a
    /// file cannot be read or written, or if a segment before the last one is damaged (op
    /// `recover`: that is not what a crash leaves, so it is not repaired silently); with
    /// [`Error::Config`] if `segment_bytes` is 0, or `quota_bytes` is less than two segments
    /// (the active segment is never removed, so a smaller quota could fill for good).
    pub fn open(config: StoreConfig) -> Result<LogStore, Error> {
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

        let loaded = Loaded::read(&dir)?;
        let (writer, repair) = Writer::open(
            &log_dir,
            config.segment_bytes,
            config.quota_bytes,
            loaded.max_seq(),
        )?;
        let (first_seq, next_seq) = (writer.first_seq(), writer.next_seq());
        let (meta, cursors_reset) = Meta::recover(&dir, loaded, first_seq, next_seq)?;
        if cursors_reset {
            log::warn!(
                "durable store {}: the cursor file was missing or unreadable; every endpoint \
                 resumes from the oldest record it may have (events will be redelivered)",
                dir.display()
            );
        }
        let (dead_letters, dead_letters_skipped) = DeadLetters::open(&dir)?;
        let recovery = Recovery {
            segments: writer.segments(),
            records: next_seq - first_seq,
            first_seq,
            next_seq,
            truncated_bytes: repair.truncated_bytes,
            corrupt_records: repair.corrupt_records,
            cursors_reset,
            dead_letters_skipped,
        };
        Ok(LogStore {
            log_dir,
            writer,
            meta,
            dead_letters: std::sync::Arc::new(dead_letters),
            recovery,
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
        let segments = segment::list_segments(&self.log_dir)?;
        Ok(Box::new(LogReader::new(self.log_dir.clone(), segments)))
    }

    /// A new endpoint starts after the last durable record (`durable_through + 1`, which is
    /// `next_seq` unless appends are waiting for a commit). Records still waiting were
    /// appended before it existed, so none has its bit; starting before them rather than
    /// after keeps `since` valid even if a crash loses them and their seqs are given again.
    fn endpoint(&mut self, name: &str) -> Result<EndpointState, Error> {
        self.meta.register(name, self.writer.durable_through() + 1)
    }

    fn endpoints(&self) -> Vec<(String, EndpointState)> {
        self.meta.endpoints()
    }

    /// Cursors are also kept at or below `durable_through + 1`: nothing past it can have
    /// been delivered.
    fn save_cursors(&mut self, acked: &[(u8, u64)]) -> Result<(), Error> {
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
