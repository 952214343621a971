//! Endpoint slots and cursors: `slots.json` and `cursors.json`.
//!
//! `slots.json` (`{"version":1,"endpoints":{"<name>":{"slot":N,"since":S}}}`) changes only when
//! an endpoint registers; `cursors.json` (the same, with `"acked":A` beside each) changes as
//! endpoints deliver. Both are replaced atomically (temp file, fsync, rename, directory fsync).
//! Each can stand in for the other's slots: the slot map comes from `slots.json`, or from
//! `cursors.json` when `slots.json` is lost. A lost cursor file resets every endpoint to the
//! oldest record it may still have (redelivery, never a skip).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::files::{read_optional, write_atomic};
use super::{CursorRepair, EndpointState};
use crate::Error;

const SLOTS: &str = "slots.json";
const CURSORS: &str = "cursors.json";
const VERSION: u32 = 1;
/// Slots are mask bits.
const SLOT_COUNT: usize = super::SLOTS;
/// Seqs stop below 2^63 (segment names do too): a file naming one past that did not come
/// from this store, and taking it would start the log where seqs overflow.
const SEQ_LIMIT: u64 = 1 << 63;

#[derive(Serialize, Deserialize)]
struct SlotsFile {
    version: u32,
    endpoints: BTreeMap<String, SlotEntry>,
}

#[derive(Serialize, Deserialize, Clone, Copy)]
struct SlotEntry {
    slot: u8,
    since: u64,
}

#[derive(Serialize, Deserialize)]
struct CursorsFile {
    version: u32,
    endpoints: BTreeMap<String, EndpointState>,
}

/// What the two files held at open (`None`: missing or unreadable).
#[derive(Default)]
pub(super) struct Loaded {
    slots: Option<BTreeMap<String, SlotEntry>>,
    cursors: Option<BTreeMap<String, EndpointState>>,
}

impl Loaded {
    /// Reads both files from `dir`. A file that is missing, not JSON, of another version, or
    /// with an impossible slot or seq counts as lost; only an I/O error fails.
    pub(super) fn read(dir: &Path) -> Result<Loaded, Error> {
        let slots = read_optional(&dir.join(SLOTS))?
            .and_then(|b| serde_json::from_slice::<SlotsFile>(&b).ok())
            .filter(|f| f.version == VERSION && valid_slots(f.endpoints.values().map(|e| e.slot)))
            .filter(|f| f.endpoints.values().all(|e| e.since < SEQ_LIMIT))
            .map(|f| f.endpoints);
        let cursors = read_optional(&dir.join(CURSORS))?
            .and_then(|b| serde_json::from_slice::<CursorsFile>(&b).ok())
            .filter(|f| f.version == VERSION && valid_slots(f.endpoints.values().map(|e| e.slot)))
            .filter(|f| {
                f.endpoints
                    .values()
                    .all(|e| e.since < SEQ_LIMIT && e.acked < SEQ_LIMIT)
            })
            .map(|f| f.endpoints);
        Ok(Loaded { slots, cursors })
    }

    /// The highest seq either file mentions (0: none), so that an empty log does not start
    /// below seqs the cursors already passed.
    pub(super) fn max_seq(&self) -> u64 {
        let slots = self.slots.iter().flat_map(|m| m.values().map(|e| e.since));
        let cursors = self
            .cursors
            .iter()
            .flat_map(|m| m.values().map(|e| e.since.max(e.acked)));
        slots.chain(cursors).max().unwrap_or(0)
    }
}

/// Slots below 64, none taken twice.
fn valid_slots(slots: impl Iterator<Item = u8>) -> bool {
    let mut seen = 0u64;
    for slot in slots {
        if usize::from(slot) >= SLOT_COUNT || seen & (1 << slot) != 0 {
            return false;
        }
        seen |= 1 << slot;
    }
    true
}

/// The endpoints the store knows, and their cursors.
#[derive(Debug)]
pub(super) struct Meta {
    dir: PathBuf,
    endpoints: BTreeMap<String, EndpointState>,
    /// `cursors.json` does not hold what `endpoints` does (a failed or skipped write).
    dirty: bool,
    /// Opened read-only: nothing is written.
    read_only: bool,
}

/// What [`Meta::recover`] found wrong with the two files, and repaired.
#[derive(Debug, Default)]
pub(super) struct MetaRepair {
    /// The cursor file was lost while there was something to resume.
    pub(super) cursors_reset: bool,
    /// Both files were lost while the log had records.
    pub(super) slots_lost: bool,
    /// The slot file was lost and rebuilt from the cursor file.
    pub(super) slots_rebuilt: bool,
    /// Saved cursors moved to fit the log.
    pub(super) clamped: Vec<CursorRepair>,
}

impl Meta {
    /// The endpoints from what was loaded, with every cursor clamped to the log
    /// (`max(since, first_seq) ..= next_seq`). Rewrites a file that was lost or repaired
    /// (unless `read_only`). Returns what it found.
    pub(super) fn recover(
        dir: &Path,
        loaded: Loaded,
        first_seq: u64,
        next_seq: u64,
        read_only: bool,
    ) -> Result<(Meta, MetaRepair), Error> {
        let Loaded { slots, cursors } = loaded;
        let slots_ok = slots.is_some();
        let mut slots = slots.unwrap_or_default();
        let mut slots_repaired = false;
        // Endpoints the cursor file knows and the slot file does not (the slot file was lost).
        let mut taken = slots.values().fold(0u64, |m, e| m | 1 << e.slot);
        for (name, c) in cursors.iter().flatten() {
            if !slots.contains_key(name) && taken & (1 << c.slot) == 0 {
                slots.insert(
                    name.clone(),
                    SlotEntry {
                        slot: c.slot,
                        since: c.since,
                    },
                );
                taken |= 1 << c.slot;
                slots_repaired = true;
            }
        }
        let has_records = next_seq > first_seq;
        let mut repair = MetaRepair {
            cursors_reset: cursors.is_none() && (!slots.is_empty() || has_records),
            slots_lost: !slots_ok && slots.is_empty() && cursors.is_none() && has_records,
            slots_rebuilt: !slots_ok && slots_repaired,
            clamped: Vec::new(),
        };
        let mut endpoints = BTreeMap::new();
        for (name, s) in slots {
            let saved = cursors
                .as_ref()
                .and_then(|c| c.get(&name))
                .filter(|c| c.slot == s.slot)
                .map(|c| c.acked);
            // Never below what the endpoint may still want, never past the log's end.
            let acked = saved
                .unwrap_or(s.since)
                .max(s.since)
                .max(first_seq)
                .min(next_seq);
            if let Some(saved) = saved.filter(|&a| a != acked) {
                repair.clamped.push(CursorRepair {
                    endpoint: name.clone(),
                    saved,
                    now: acked,
                });
            }
            endpoints.insert(
                name,
                EndpointState {
                    slot: s.slot,
                    since: s.since,
                    acked,
                },
            );
        }
        let mut meta = Meta {
            dir: dir.to_owned(),
            dirty: cursors.as_ref() != Some(&endpoints),
            endpoints,
            read_only,
        };
        if !read_only && (slots_repaired || !slots_ok) && !meta.endpoints.is_empty() {
            meta.write_slots()?;
        }
        if !read_only && meta.dirty && !meta.endpoints.is_empty() {
            meta.write_cursors()?;
        }
        Ok((meta, repair))
    }

    /// The endpoint called `name`, registered with `since = acked = start(slot)` if it is new
    /// (durably: `slots.json`, then `cursors.json`).
    pub(super) fn register(
        &mut self,
        name: &str,
        start: impl Fn(u8) -> u64,
    ) -> Result<EndpointState, Error> {
        if let Some(state) = self.endpoints.get(name) {
            return Ok(*state);
        }
        if self.read_only {
            return Err(read_only(&self.dir));
        }
        let taken = self.endpoints.values().fold(0u64, |m, e| m | 1 << e.slot);
        let slot = (!taken).trailing_zeros() as usize;
        if slot >= SLOT_COUNT {
            return Err(Error::TooManyEndpoints {
                limit: SLOT_COUNT,
                durable: true,
            });
        }
        let start = start(slot as u8);
        let state = EndpointState {
            slot: slot as u8,
            since: start,
            acked: start,
        };
        self.endpoints.insert(name.to_owned(), state);
        if let Err(e) = self.write_slots() {
            self.endpoints.remove(name);
            return Err(e);
        }
        // The slot is durable from here on; a failure below leaves `dirty` set and a cursor
        // file without this endpoint, which reads as `acked = since`.
        self.dirty = true;
        self.write_cursors()?;
        Ok(state)
    }

    /// Forgets the endpoint called `name` (`None`: not known): `slots.json` without it, then
    /// `cursors.json` without it. Its slot is free from here on. A crash between the two
    /// writes leaves it in `cursors.json` only, and the next open rebuilds it from there
    /// (`slots_rebuilt`) with its cursor as saved: the caller moves that past everything
    /// first, so nothing is delivered twice, and forgetting it again finishes the job.
    pub(super) fn forget(&mut self, name: &str) -> Result<Option<EndpointState>, Error> {
        if !self.endpoints.contains_key(name) {
            return Ok(None);
        }
        if self.read_only {
            return Err(read_only(&self.dir));
        }
        let state = self.endpoints.remove(name);
        if let Err(e) = self.write_slots() {
            self.endpoints.extend(state.map(|s| (name.to_owned(), s)));
            return Err(e);
        }
        self.dirty = true;
        self.write_cursors()?;
        Ok(state)
    }

    /// Moves cursors forward (never back, never past `limit`), then writes `cursors.json` if
    /// anything changed since it was last written.
    pub(super) fn save(&mut self, acked: &[(u8, u64)], limit: u64) -> Result<(), Error> {
        if self.read_only {
            return Err(read_only(&self.dir));
        }
        for &(slot, seq) in acked {
            if let Some(state) = self.endpoints.values_mut().find(|e| e.slot == slot) {
                let seq = seq.min(limit);
                if seq > state.acked {
                    state.acked = seq;
                    self.dirty = true;
                }
            }
        }
        if self.dirty {
            self.write_cursors()?;
        }
        Ok(())
    }

    /// The lowest cursor (`None`: no endpoints).
    pub(super) fn min_acked(&self) -> Option<u64> {
        self.endpoints.values().map(|e| e.acked).min()
    }

    /// Every endpoint, by name.
    pub(super) fn endpoints(&self) -> Vec<(String, EndpointState)> {
        self.endpoints
            .iter()
            .map(|(name, state)| (name.clone(), *state))
            .collect()
    }

    fn write_slots(&self) -> Result<(), Error> {
        let file = SlotsFile {
            version: VERSION,
            endpoints: self
                .endpoints
                .iter()
                .map(|(name, e)| {
                    let entry = SlotEntry {
                        slot: e.slot,
                        since: e.since,
                    };
                    (name.clone(), entry)
                })
                .collect(),
        };
        write_atomic(&self.dir, SLOTS, &to_json(&file)?)
    }

    fn write_cursors(&mut self) -> Result<(), Error> {
        let file = CursorsFile {
            version: VERSION,
            endpoints: self.endpoints.clone(),
        };
        write_atomic(&self.dir, CURSORS, &to_json(&file)?)?;
        self.dirty = false;
        Ok(())
    }
}

/// The error a read-only store's writes fail with.
fn read_only(dir: &Path) -> Error {
    Error::storage(
        "write",
        dir,
        "the store was opened read-only (LogStore::open_read_only)",
    )
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>, Error> {
    Ok(serde_json::to_vec(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_validation() {
        assert!(valid_slots([0, 1, 63].into_iter()));
        assert!(!valid_slots([0, 0].into_iter()));
        assert!(!valid_slots([64].into_iter()));
    }

    #[test]
    fn max_seq_covers_both_files() {
        let mut loaded = Loaded::default();
        assert_eq!(loaded.max_seq(), 0);
        loaded.slots = Some(BTreeMap::from([(
            "a".into(),
            SlotEntry { slot: 0, since: 5 },
        )]));
        let state = EndpointState {
            slot: 0,
            since: 5,
            acked: 9,
        };
        loaded.cursors = Some(BTreeMap::from([("a".into(), state)]));
        assert_eq!(loaded.max_seq(), 9);
    }
}
