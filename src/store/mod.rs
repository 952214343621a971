//! Durable storage for the engine's durable endpoints: an append-only, group-committed log of
//! events, one cursor per durable endpoint, and a dead-letter file.
//!
//! [`Store`] is the small interface the engine needs; [`LogStore`] is the embedded default
//! (segment files in one directory, no server). The engine drives a store from one
//! persistence thread (group commit: append everything queued, then one `fdatasync`), and the
//! workers read it back through [`StoreReader`]s when a durable endpoint's backlog no longer
//! fits in memory (`Overflow::Spill`) or when it resumes after a restart.
//!
//! # On disk (`LogStore`)
//!
//! ```text
//! DIR/LOCK                 held (flock) while a store is open: one process per directory
//! DIR/log/<first seq>.seg  records: len u32 | crc32 u32 | seq u64 | mask u64 | time_ms u64 | payload
//! DIR/slots.json           endpoint name -> slot (mask bit) and the seq it started at
//! DIR/cursors.json         endpoint name -> acked (every seq below it is finished)
//! DIR/dead-letters/<n>.ndjson  events given up, one JSON object per line, in segments
//! DIR/quarantine/          copies of damaged ranges of the log (see [`Damage`])
//! ```
//!
//! See `docs/durable.md` for the format, the recovery rules and the at-least-once contract.

mod damage;
pub(crate) mod disk;
mod dlq;
#[cfg(test)]
pub(crate) mod fault_disk;
mod files;
pub(crate) mod forget;
mod log_store;
mod meta;
#[cfg(feature = "postgres")]
pub mod pg;
mod reader;
mod segment;
#[cfg(test)]
mod test_dir;
mod writer;

pub use damage::{Damage, DamageKind, quarantined};
pub use forget::{FORGOTTEN_ERROR, Forgotten, forget_endpoint};
pub use log_store::LogStore;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Error;

/// How many durable endpoints a store keeps at most (a record's mask has one bit for each):
/// see [`forget_endpoint`] to free one.
pub const SLOTS: usize = 64;

/// Where and how a [`LogStore`] keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The data directory (created if missing).
    pub dir: PathBuf,
    /// Size at which a segment file is closed and a new one started. Default 64 MiB.
    pub segment_bytes: u64,
    /// The most bytes the log's segments may take; an append past it fails with
    /// [`Error::Quota`]. Default 1 GiB.
    pub quota_bytes: u64,
    /// The most bytes the dead letters may take (`DIR/dead-letters/`, apart from the log's
    /// quota); an append past it fails with [`Error::DeadLettersFull`] and writes nothing
    /// (the engine then counts the letters it could not keep in
    /// `Metrics::dead_letter_errors`). Default 256 MiB.
    pub dead_letter_bytes: u64,
}

impl StoreConfig {
    /// The defaults (64 MiB segments, a 1 GiB quota, 256 MiB of dead letters) in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            quota_bytes: 1 << 30,
            dead_letter_bytes: 256 << 20,
        }
    }
}

/// One record read back from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its sequence number (the first record ever written is 1; never reused).
    pub seq: u64,
    /// Which endpoint slots it is for (bit `s` for slot `s`).
    pub mask: u64,
    /// When it was published, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The event, as the engine encoded it.
    pub payload: &'a [u8],
}

/// What opening a store found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Recovery {
    /// Segment files found.
    pub segments: usize,
    /// Sequence numbers in the log (from `first_seq` to `next_seq - 1`; those lost in
    /// damaged ranges included).
    pub records: u64,
    /// The oldest sequence number still in the log.
    pub first_seq: u64,
    /// The sequence number the next append gets.
    pub next_seq: u64,
    /// Bytes cut from the end of the last segment: a torn tail (see [`DamageKind::TornTail`]).
    /// Opened read-only: the bytes a writer would cut (nothing is cut).
    pub truncated_bytes: u64,
    /// 1 if there was a torn tail (the records in it cannot be counted reliably), else 0.
    pub corrupt_records: u64,
    /// Every damaged range found in the last segment (older segments are checked by readers
    /// as they reach them): corrupt ranges, skipped and kept, and the torn tail, cut. Their
    /// bytes are in the quarantine (`Damage::quarantined`).
    pub damaged: Vec<Damage>,
    /// Records lost in the corrupt ranges of `damaged`.
    pub lost_records: u64,
    /// The cursor file was missing or unreadable, so every endpoint resumes from the oldest
    /// record it may have (redelivering, never skipping).
    pub cursors_reset: bool,
    /// Both the slot and the cursor files were missing or unreadable while the log had
    /// records: the store knew no endpoint, so endpoints that register while it is open start
    /// at the oldest record instead of the end of the log (redelivering, never skipping; see
    /// [`Store::endpoint`]).
    pub slots_lost: bool,
    /// The slot file was missing or unreadable and was rebuilt from the cursor file.
    pub slots_rebuilt: bool,
    /// Saved cursors that did not fit the log and were moved: past its end (records they had
    /// passed are gone: a cut tail, or a disk that lost synced writes), or before its oldest
    /// record (segments removed by hand).
    pub cursors_clamped: Vec<CursorRepair>,
    /// Torn last lines of dead-letter segments (a crash during an append) that were cut
    /// (read-only: that a writer would cut). Other unreadable lines are skipped when the
    /// letters are read ([`DeadLetterStore::scan`] counts them).
    pub dead_letters_skipped: u64,
    /// The store was opened read-only ([`LogStore::open_read_only`]): nothing was repaired or
    /// written, and what is reported as cut or rewritten is what a writer would do.
    pub read_only: bool,
}

/// A saved cursor that opening the store moved to fit the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CursorRepair {
    /// The endpoint's name.
    pub endpoint: String,
    /// The cursor as `cursors.json` had it.
    pub saved: u64,
    /// Where it resumes: within `first_seq ..= next_seq` (and not below its `since`).
    pub now: u64,
}

/// A durable endpoint as the store knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    /// Its bit in every record's mask (0..64).
    pub slot: u8,
    /// The first sequence number that can be for it (the log's next seq when it registered).
    pub since: u64,
    /// Every record for it below this sequence number is finished (delivered, dropped or
    /// dead-lettered). It resumes here.
    pub acked: u64,
}

/// An event given up for one durable endpoint, with why. In the dead-letter file it is one
/// JSON object per line: these fields, with the event's JSON inline under `event` and its id
/// and metadata beside it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The endpoint's name.
    pub endpoint: String,
    /// The event's sequence number in the log.
    pub seq: u64,
    /// When it was published (ms since the Unix epoch).
    pub published_ms: u64,
    /// When it was given up (ms since the Unix epoch).
    pub failed_ms: u64,
    /// The last HTTP status, if the endpoint answered.
    pub status: Option<u16>,
    /// The last error, in words.
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// The event.
    pub event: crate::RawEvent,
}

/// Selects dead letters: every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterFilter {
    /// Only this endpoint's.
    pub endpoint: Option<String>,
    /// Only sequence numbers in this range (inclusive).
    pub seqs: Option<(u64, u64)>,
    /// Only those given up in this time range (ms since the Unix epoch, inclusive).
    pub failed_ms: Option<(u64, u64)>,
    /// Only these `(endpoint, seq)` pairs (how a replay removes exactly what it re-queued).
    pub keys: Option<std::collections::BTreeSet<(String, u64)>>,
}

impl DeadLetterFilter {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// Whether `d` is selected.
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.endpoint.as_ref().is_none_or(|e| *e == d.endpoint)
            && self.seqs.is_none_or(|(a, b)| (a..=b).contains(&d.seq))
            && self
                .failed_ms
                .is_none_or(|(a, b)| (a..=b).contains(&d.failed_ms))
            && self
                .keys
                .as_ref()
                .is_none_or(|k| k.contains(&(d.endpoint.clone(), d.seq)))
    }

    /// Exactly the given dead letters.
    pub fn exactly<'a>(letters: impl IntoIterator<Item = &'a DeadLetter>) -> Self {
        DeadLetterFilter {
            keys: Some(
                letters
                    .into_iter()
                    .map(|d| (d.endpoint.clone(), d.seq))
                    .collect(),
            ),
            ..Self::default()
        }
    }
}

/// Re-queues the dead letters `filter` selects, on a store no dispatcher has open (the
/// `hookwire dlq replay` command): each event is appended again for its endpoint (a new
/// sequence number; same event and `webhook-id`), committed, and only then removed from the
/// dead letters, a chunk at a time (memory for one chunk, however many there are). A crash
/// in between replays them twice, never loses them. Dead letters of an endpoint the store
/// does not know are left alone. Returns how many were re-queued.
pub fn replay_dead_letters(store: &mut dyn Store, filter: &DeadLetterFilter) -> Result<u64, Error> {
    let slots: std::collections::HashMap<String, u8> = store
        .endpoints()
        .into_iter()
        .map(|(name, st)| (name, st.slot))
        .collect();
    let dead = store.dead_letters();
    let mut buf = Vec::new();
    dead.take_each(
        &|d| filter.matches(d) && slots.contains_key(&d.endpoint),
        &mut |letters| {
            for d in &letters {
                buf.clear();
                d.event.encode_record(&mut buf);
                store.append(1 << slots[&d.endpoint], unix_ms(), &buf)?;
            }
            store.commit().map(|_| ())
        },
    )
}

/// Reads records back, independently of the writer (each reader has its own file handles).
pub trait StoreReader: Send {
    /// Calls `f` for each record with `from <= seq <= until` whose mask has a bit of `mask`,
    /// in order, until `max` were given. Returns the sequence number to read from next
    /// (one past the last record looked at, or the first valid record after a damaged range
    /// it skipped; it may then be past `until + 1`). Records below the log's first seq are
    /// gone (every endpoint had passed them) and are skipped.
    ///
    /// A damaged range (records that fail their checksum, are cut short, or are missing) does
    /// not stop the read: it is skipped, and [`damaged`](StoreReader::damaged) tells what
    /// was skipped; the records in it are lost. Fails with [`Error::Storage`] when a file
    /// cannot be read, or when damage reaches the end of the segment being written (a valid
    /// record may follow once more is written: try again later). Blocks on file reads only.
    fn read(
        &mut self,
        from: u64,
        until: u64,
        mask: u64,
        max: usize,
        f: &mut dyn FnMut(Record<'_>),
    ) -> Result<u64, Error>;

    /// The damaged ranges the last call to [`read`](StoreReader::read) skipped, in log
    /// order, whether it returned `Ok` or not. They include ranges passed on the way to
    /// `from`: the records lost that the caller wanted are those of
    /// [`Damage::lost_seqs`] at or after its `from`. The default: none (a store that never
    /// skips). A reader that wraps another must forward it, or the engine cannot count what
    /// the inner one skipped.
    fn damaged(&self) -> &[Damage] {
        &[]
    }
}

/// A store's dead letters, shared by the threads that write, list and replay them. Every
/// method may be called from any thread at any time.
pub trait DeadLetterStore: Send + Sync + std::fmt::Debug {
    /// Appends dead letters, durably: all of them, or none. Fails with
    /// [`Error::DeadLettersFull`] if they do not fit under the store's cap.
    fn append(&self, letters: &[DeadLetter]) -> Result<(), Error>;

    /// Hands `f` the dead letters `filter` selects, oldest first, one at a time (memory for
    /// one, however many there are); stops at `f`'s first error and returns it. Returns how
    /// many unreadable lines were skipped.
    fn scan(
        &self,
        filter: &DeadLetterFilter,
        f: &mut dyn FnMut(DeadLetter) -> Result<(), Error>,
    ) -> Result<u64, Error>;

    /// Removes the dead letters `select` picks, handing them to `each` first, in chunks
    /// (oldest first, a bounded number at a time): a chunk is removed (durably) only once
    /// `each` returned `Ok` for it, and the first error stops the take and is returned, so
    /// a letter is never removed without having been handed over. A crash in between leaves
    /// letters that were handed over in place (a replay sends them twice, never loses them).
    /// Letters appended meanwhile are kept. Returns how many were taken.
    fn take_each(
        &self,
        select: &dyn Fn(&DeadLetter) -> bool,
        each: &mut dyn FnMut(Vec<DeadLetter>) -> Result<(), Error>,
    ) -> Result<u64, Error>;

    /// The dead letters `filter` selects, oldest first, all in memory (see
    /// [`scan`](DeadLetterStore::scan) to stream them).
    fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, Error> {
        let mut out = Vec::new();
        self.scan(filter, &mut |d| {
            out.push(d);
            Ok(())
        })?;
        Ok(out)
    }

    /// Removes the dead letters `filter` selects, durably, and returns them, all in memory
    /// (see [`take_each`](DeadLetterStore::take_each) to stream them).
    fn take(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, Error> {
        let mut out = Vec::new();
        self.take_each(&|d| filter.matches(d), &mut |chunk| {
            out.extend(chunk);
            Ok(())
        })?;
        Ok(out)
    }

    /// Bytes the dead letters take now (0 if not known).
    fn used_bytes(&self) -> u64 {
        0
    }

    /// The most bytes they may take ([`StoreConfig::dead_letter_bytes`]; `u64::MAX`: no
    /// cap).
    fn cap_bytes(&self) -> u64 {
        u64::MAX
    }
}

/// What the engine needs from durable storage. All methods are called from one thread at a
/// time (the engine wraps the store in a mutex); readers run on other threads.
pub trait Store: Send + 'static {
    /// Buffers one record and returns its sequence number. Fails with [`Error::Quota`] (and
    /// writes nothing) if the log would pass its quota, or [`Error::Storage`].
    fn append(&mut self, mask: u64, time_ms: u64, payload: &[u8]) -> Result<u64, Error>;

    /// Makes everything appended so far durable (one `fdatasync`, and a directory sync if a
    /// segment was created). Returns the highest durable sequence number (0: none yet). On an
    /// error, nothing appended since the last successful commit may be taken as durable.
    fn commit(&mut self) -> Result<u64, Error>;

    /// The highest sequence number made durable (0: none).
    fn durable_through(&self) -> u64;

    /// The sequence number the next append gets.
    fn next_seq(&self) -> u64;

    /// The oldest sequence number still kept.
    fn first_seq(&self) -> u64;

    /// Bytes the log's segments take now.
    fn used_bytes(&self) -> u64;

    /// The quota, in bytes.
    fn quota_bytes(&self) -> u64;

    /// A reader of committed records.
    fn reader(&self) -> Result<Box<dyn StoreReader>, Error>;

    /// The endpoint called `name`: its slot and cursor, registered (durably) if it is new,
    /// starting at the current `next_seq` (or, when the store's slot and cursor files were
    /// lost, [`Recovery::slots_lost`], at the oldest record: see `docs/durable.md`). Fails
    /// with [`Error::TooManyEndpoints`] when 64 slots are taken, [`Error::Storage`] if the
    /// store is read-only and `name` is new.
    fn endpoint(&mut self, name: &str) -> Result<EndpointState, Error>;

    /// Forgets the endpoint called `name`: its slot and cursor are removed (durably), and
    /// the slot may be given to a new endpoint, which never reads the records appended before
    /// (they may still carry this endpoint's bit). Returns what it was (`None`: not known).
    /// What it had not finished is left in the log, unread: [`forget_endpoint`] dead-letters
    /// it first. Fails with [`Error::Storage`] if the store is read-only.
    fn forget(&mut self, name: &str) -> Result<Option<EndpointState>, Error>;

    /// Every endpoint the store knows, by name.
    fn endpoints(&self) -> Vec<(String, EndpointState)>;

    /// Records how far endpoints have got (`(slot, acked)`; unknown slots are ignored, and a
    /// cursor never moves back), durably (write, fsync, rename). Then removes the segments
    /// that every known endpoint has passed.
    fn save_cursors(&mut self, acked: &[(u8, u64)]) -> Result<(), Error>;

    /// The dead letters, as a handle that works without this store's lock (the engine
    /// keeps the store behind one, held across every group commit): listing or replaying
    /// dead letters never stalls durable publishes, and appending them never waits for a
    /// listing.
    fn dead_letters(&self) -> std::sync::Arc<dyn DeadLetterStore>;

    /// What opening the store found and repaired.
    fn recovery(&self) -> &Recovery;

    /// Whether a failed append or commit may succeed if tried again (a database that
    /// reconnects). `false` (the default, and the local log's answer): a failure is for good,
    /// and every later durable publish fails. `true`: the failed group's publishes fail, and
    /// the next group tries again.
    fn retries_failures(&self) -> bool {
        false
    }

    /// Whether other processes append to the same log (a shared database): a durable
    /// endpoint then always reads the log, since the ring only carries this process's events,
    /// and [`durable_through`](Store::durable_through) may move without a local commit.
    /// Default `false`.
    fn shared(&self) -> bool {
        false
    }
}

/// Wall-clock milliseconds, for records and dead letters.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
