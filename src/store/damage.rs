//! Damaged ranges of the log, and the quarantine that keeps a copy of their bytes.
//!
//! A range of a segment that does not hold valid records is *damage*. When valid records
//! follow it (in the same segment, or in the next one) it is **corrupt**: it is skipped, never
//! cut, and the records in it are lost. When nothing valid follows it in the last segment it
//! is a **torn tail** (what a crash in the middle of a write leaves): a writer cuts it at open.
//!
//! Either way its bytes are first copied aside, once, by a store open for writing:
//!
//! ```text
//! DIR/quarantine/<segment>-<offset>.bin    the damaged bytes, as they were
//! DIR/quarantine/<segment>-<offset>.json   one line: the Damage (kind, segment, offset, bytes,
//!                                          reason, after_seq, next_seq, lost) and found_ms
//! ```
//!
//! (`<segment>` is the segment's 20-digit name, `<offset>` the byte where the damage starts;
//! a second, different damage at the same place gets `-2`, `-3`...). Both are written like
//! every other file here (temp file, fsync, rename, directory fsync), the `.json` last, so a
//! `.json` means the copy is whole. Nothing removes them: they are for a person to look at.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::files::{TMP_SUFFIX, read_optional, sync_dir, write_atomic};
use super::unix_ms;
use crate::Error;

/// The quarantine directory's name in a data directory.
pub(super) const QUARANTINE: &str = "quarantine";

/// At most this many different damaged ranges are kept for one place in a segment.
const MAX_AT_ONE_PLACE: u32 = 100;

/// What kind of damage a range is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DamageKind {
    /// Valid records follow it: it is skipped (never cut) and the records in it are lost.
    Corrupt,
    /// Nothing valid follows it in the last segment: what a crash in the middle of a write
    /// leaves. A store opened for writing cuts it (after copying it aside); it lost no record
    /// that a reader had seen, and none that was reported durable unless the disk lost a
    /// synced write (a cursor past the end of the log then says so).
    TornTail,
}

/// A damaged range of one segment file, found when a store was opened or by a reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damage {
    /// Corrupt (skipped) or a torn tail (cut).
    pub kind: DamageKind,
    /// The segment: the seq its file is named by.
    pub segment: u64,
    /// The byte of the segment file where the damage starts (where a record was due).
    pub offset: u64,
    /// Its length in bytes (0: records are missing without any bytes in their place, e.g. a
    /// segment that ends early).
    pub bytes: u64,
    /// Why the record due at `offset` was not valid.
    pub reason: String,
    /// The last valid record before it (`segment - 1` when it starts the segment).
    pub after_seq: u64,
    /// The first valid record after it; the records in between are lost. For a torn tail:
    /// the seq the next append gets.
    pub next_seq: u64,
    /// Records lost in it: `next_seq - after_seq - 1` (0 for a torn tail).
    pub lost: u64,
    /// Where its bytes were copied (`DIR/quarantine/...bin`). `None` if they were not: the
    /// store was opened read-only and no writer had copied them yet, or the copy failed
    /// (logged; the bytes stay in the segment until it is removed).
    pub quarantined: Option<PathBuf>,
}

impl Damage {
    /// The seqs of the records lost in it.
    pub fn lost_seqs(&self) -> Range<u64> {
        self.after_seq + 1..self.next_seq
    }

    /// A damaged range of `segment`.
    pub(super) fn new(
        kind: DamageKind,
        segment: u64,
        offset: u64,
        bytes: u64,
        reason: &str,
        first_lost: u64,
        next_seq: u64,
    ) -> Damage {
        let after_seq = first_lost.saturating_sub(1);
        Damage {
            kind,
            segment,
            offset,
            bytes,
            reason: reason.to_owned(),
            after_seq,
            next_seq,
            lost: next_seq.saturating_sub(first_lost),
            quarantined: None,
        }
    }

    /// Whether `other` describes the same damage (found again, by another open or reader).
    fn same(&self, other: &Damage) -> bool {
        (
            self.kind,
            self.segment,
            self.offset,
            self.bytes,
            self.after_seq,
        ) == (
            other.kind,
            other.segment,
            other.offset,
            other.bytes,
            other.after_seq,
        ) && self.next_seq == other.next_seq
    }
}

/// One `.json` file of the quarantine.
#[derive(Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    damage: Damage,
    /// When it was first found (ms since the Unix epoch).
    found_ms: u64,
}

/// The quarantine directory of one data directory.
#[derive(Debug)]
pub(super) struct Quarantine {
    /// The data directory.
    parent: PathBuf,
    /// `parent/quarantine`.
    dir: PathBuf,
}

impl Quarantine {
    /// The quarantine of the data directory `dir` (nothing is created until something is
    /// kept).
    pub(super) fn new(dir: &Path) -> Quarantine {
        Quarantine {
            parent: dir.to_owned(),
            dir: dir.join(QUARANTINE),
        }
    }

    /// Copies `damage`'s bytes from `segment_path` aside, unless the same damage was kept
    /// before, and sets `damage.quarantined`. Fails with [`Error::Storage`] if a file cannot
    /// be read or written (then nothing was recorded, and a later call tries again).
    pub(super) fn keep(&self, segment_path: &Path, damage: &mut Damage) -> Result<(), Error> {
        self.keep_from(segment_path, || File::open(segment_path), damage)
    }

    /// [`keep`](Quarantine::keep), reading the segment through `open` (the writer's
    /// [`Disk`](super::disk::Disk)).
    pub(super) fn keep_from<R: Read + Seek>(
        &self,
        segment_path: &Path,
        open: impl FnOnce() -> io::Result<R>,
        damage: &mut Damage,
    ) -> Result<(), Error> {
        if !self.dir.is_dir() {
            match fs::create_dir(&self.dir) {
                Ok(()) => sync_dir(&self.parent)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::storage("create", &self.dir, e)),
            }
        }
        for n in 1..=MAX_AT_ONE_PLACE {
            let stem = stem(damage, n);
            let json = self.dir.join(format!("{stem}.json"));
            let bin = self.dir.join(format!("{stem}.bin"));
            match read_entry(&json)? {
                Some(e) if e.damage.same(damage) => {
                    damage.quarantined = Some(bin);
                    return Ok(());
                }
                Some(_) => continue,
                None => {
                    copy_range(segment_path, open, damage.offset, damage.bytes, &bin)?;
                    damage.quarantined = Some(bin);
                    let entry = Entry {
                        damage: damage.clone(),
                        found_ms: unix_ms(),
                    };
                    let mut line = serde_json::to_vec(&entry)?;
                    line.push(b'\n');
                    return write_atomic(&self.dir, &format!("{stem}.json"), &line);
                }
            }
        }
        Err(Error::storage(
            "quarantine",
            &self.dir,
            format!(
                "more than {MAX_AT_ONE_PLACE} damaged ranges at byte {} of segment {}",
                damage.offset, damage.segment
            ),
        ))
    }

    /// Without writing anything: sets `damage.quarantined` if a writer kept it before.
    pub(super) fn find(&self, damage: &mut Damage) {
        for n in 1..=MAX_AT_ONE_PLACE {
            let stem = stem(damage, n);
            match read_entry(&self.dir.join(format!("{stem}.json"))) {
                Ok(Some(e)) if e.damage.same(damage) => {
                    damage.quarantined = Some(self.dir.join(format!("{stem}.bin")));
                    return;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    }
}

/// The file name (without extension) of the `n`th damage kept at `damage`'s place.
fn stem(damage: &Damage, n: u32) -> String {
    let base = format!("{:020}-{}", damage.segment, damage.offset);
    if n == 1 { base } else { format!("{base}-{n}") }
}

/// A quarantine `.json` file; `None` if it does not exist. One that cannot be parsed is
/// treated as another damage's (so a new copy gets a new name, and nothing is overwritten).
fn read_entry(path: &Path) -> Result<Option<Entry>, Error> {
    Ok(read_optional(path)?.map(|b| {
        serde_json::from_slice(&b).unwrap_or(Entry {
            damage: Damage::new(DamageKind::Corrupt, 0, u64::MAX, 0, "unreadable", 0, 0),
            found_ms: 0,
        })
    }))
}

/// Copies `len` bytes at `offset` of `from` (opened by `open`) into `to` (temp file, fsync, rename; the caller
/// syncs the directory).
fn copy_range<R: Read + Seek>(
    from: &Path,
    open: impl FnOnce() -> io::Result<R>,
    offset: u64,
    len: u64,
    to: &Path,
) -> Result<(), Error> {
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let copied = (|| {
        let mut src = open()?;
        src.seek(SeekFrom::Start(offset))?;
        let mut out = File::create(&tmp)?;
        let n = io::copy(&mut src.take(len), &mut out)?;
        if n != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{n} of {len} bytes could be read"),
            ));
        }
        out.flush()?;
        out.sync_all()
    })();
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(Error::storage("quarantine", from, e));
    }
    fs::rename(&tmp, to).map_err(|e| Error::storage("rename", to, e))
}

/// Every damaged range the quarantine of the data directory `dir` holds, by segment, then
/// offset. Reads only, never blocks on anything but the files; a directory without a
/// quarantine has none. Entries that cannot be read are left out. Fails with
/// [`Error::Storage`] if the quarantine directory cannot be listed.
pub fn quarantined(dir: &Path) -> Result<Vec<Damage>, Error> {
    let q = dir.join(QUARANTINE);
    let entries = match fs::read_dir(&q) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::storage("list", &q, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::storage("list", &q, e))?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(".json")) {
            names.push(entry.path());
        }
    }
    let mut found: Vec<Damage> = names
        .iter()
        .filter_map(|p| read_optional(p).ok().flatten())
        .filter_map(|b| serde_json::from_slice::<Entry>(&b).ok())
        .map(|e| e.damage)
        .collect();
    found.sort_by_key(|d| (d.segment, d.offset));
    Ok(found)
}
