//! Forgetting a durable endpoint: its backlog goes to the dead letters, then its slot is
//! freed for another endpoint.
//!
//! A durable endpoint keeps its slot (one bit of every record's mask, 64 per directory) and
//! its cursor, pinning the log, until it is forgotten: removing it from a dispatcher keeps
//! both so that adding it again resumes it. [`forget_endpoint`] works on a store no
//! dispatcher has open (the `hookwire forget` command);
//! [`Dispatcher::forget_endpoint`](crate::engine::Dispatcher::forget_endpoint) beside a
//! running one (through [`dead_letter_backlog`], the same chunked copy).
//!
//! The backlog is read in chunks and each chunk is written to the dead letters (synced), then
//! the endpoint's cursor is saved past it: a crash or a full dead-letter store in the middle
//! leaves the endpoint registered with what is not dead-lettered yet still ahead of its
//! cursor, so forgetting it again goes on where it stopped (a crash between a chunk's write
//! and its cursor save dead-letters that chunk twice). A chunk is 1,024 records however big
//! they are (a byte bound needs the reader to stop by size: left for later). Only when
//! the whole backlog is dead-lettered is the endpoint removed from `slots.json` and
//! `cursors.json`.

use serde::Serialize;

use super::{DeadLetter, Store, unix_ms};
use crate::{Error, RawEvent};

/// Records dead-lettered per write (each write is synced, then the cursor saved).
const CHUNK_RECORDS: usize = 1024;

/// The error each dead letter of a forgotten endpoint carries.
pub const FORGOTTEN_ERROR: &str = "the endpoint was forgotten before this event was delivered";

/// What [`forget_endpoint`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Forgotten {
    /// The endpoint's name.
    pub endpoint: String,
    /// The slot it had (free now).
    pub slot: u8,
    /// Events of its backlog written to the dead letters (error [`FORGOTTEN_ERROR`]).
    pub dead_lettered: u64,
    /// Records of its backlog lost to damage in the log (skipped by the reader; see
    /// [`Damage`](super::Damage)): they may or may not have been its own.
    pub lost: u64,
    /// Records of its backlog that passed their checksum but could not be decoded into an
    /// event (what the engine counts `dropped.sink_error`): not dead-lettered.
    pub undecodable: u64,
}

/// Forgets the durable endpoint called `name` in `store`: every event of its backlog (from
/// its cursor to the last durable record) is written to the dead letters, with error
/// [`FORGOTTEN_ERROR`] and no status; then its slot and cursor are removed
/// ([`Store::forget`]) and the slot may be given to a new endpoint, which never sees the
/// old records. Its dead letters stay, and are replayed only once an endpoint of that name
/// is registered again.
///
/// Fails with [`Error::Config`] (field `endpoint`) if the store has no endpoint of that
/// name; [`Error::DeadLettersFull`] if the dead letters have no room for the rest of the
/// backlog (what fitted is dead-lettered and the cursor moved past it; the endpoint keeps its
/// slot); [`Error::Storage`] if a file cannot be read or written, or the store is read-only.
pub fn forget_endpoint(store: &mut dyn Store, name: &str) -> Result<Forgotten, Error> {
    let Some(state) = store
        .endpoints()
        .into_iter()
        .find_map(|(n, st)| (n == name).then_some(st))
    else {
        return Err(no_such_endpoint(name));
    };
    // Everything appended is made durable, so the backlog ends at `durable_through`.
    let through = store.commit()?;
    let letters = store.dead_letters();
    let mut reader = store.reader()?;
    let done = dead_letter_backlog(name, state, through, &mut *reader, &*letters, &mut |next| {
        store.save_cursors(&[(state.slot, next)])
    })?;
    drop(reader);
    store.forget(name)?;
    Ok(done)
}

/// The error for forgetting a name the store does not know.
pub(crate) fn no_such_endpoint(name: &str) -> Error {
    Error::config(
        "endpoint",
        format!("the store has no durable endpoint named {name:?}"),
    )
}

/// Writes the records for `state`'s slot from its cursor through `through` to `letters`, a
/// chunk at a time, calling `save(next)` after each chunk to move its cursor past it. Nothing
/// else may move that cursor meanwhile, nor append records with its bit.
pub(crate) fn dead_letter_backlog(
    name: &str,
    state: super::EndpointState,
    through: u64,
    reader: &mut dyn super::StoreReader,
    letters_store: &dyn super::DeadLetterStore,
    save: &mut dyn FnMut(u64) -> Result<(), Error>,
) -> Result<Forgotten, Error> {
    let mut done = Forgotten {
        endpoint: name.to_owned(),
        slot: state.slot,
        dead_lettered: 0,
        lost: 0,
        undecodable: 0,
    };
    let mut from = state.acked;
    while from <= through {
        let mut letters = Vec::new();
        let mut undecodable = 0;
        let failed_ms = unix_ms();
        let next = reader.read(from, through, 1 << state.slot, CHUNK_RECORDS, &mut |rec| {
            match RawEvent::decode_record(rec.payload) {
                Ok(event) => letters.push(DeadLetter {
                    endpoint: name.to_owned(),
                    seq: rec.seq,
                    published_ms: rec.time_ms,
                    failed_ms,
                    status: None,
                    error: FORGOTTEN_ERROR.to_owned(),
                    attempts: 0,
                    event,
                }),
                Err(_) => undecodable += 1,
            }
        })?;
        let lost: u64 = reader
            .damaged()
            .iter()
            .map(|d| {
                let seqs = d.lost_seqs();
                seqs.end.saturating_sub(seqs.start.max(from))
            })
            .sum();
        if !letters.is_empty() {
            letters_store.append(&letters)?;
        }
        // Past what is dead-lettered now: a later attempt goes on from here.
        save(next.min(through + 1))?;
        done.dead_lettered += letters.len() as u64;
        done.undecodable += undecodable;
        done.lost += lost;
        if next <= from {
            break;
        }
        from = next;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;
    use crate::store::test_dir::TestDir;
    use crate::store::{DeadLetterFilter, LogStore, StoreConfig};

    fn event(n: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        RawEvent::parse(format!(r#"{{"id":"e{n}"}}"#))
            .unwrap()
            .encode_record(&mut buf);
        buf
    }

    /// Seqs of the records `mask` reads from `from`.
    fn seqs(store: &LogStore, from: u64, mask: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let until = store.durable_through();
        store
            .reader()
            .unwrap()
            .read(from, until, mask, usize::MAX, &mut |r| out.push(r.seq))
            .unwrap();
        out
    }

    #[test]
    fn a_forgotten_slot_is_reused_without_its_old_records() {
        let dir = TestDir::new("forget");
        let mut store = LogStore::open(StoreConfig::new(dir.path())).unwrap();
        for i in 0..64 {
            store.endpoint(&format!("e{i}")).unwrap();
        }
        let e3 = store.endpoint("e3").unwrap();
        assert_eq!(e3.slot, 3);
        // Five events for e3 (and e0), e3 delivers the first two.
        for n in 1..=5 {
            store.append(1 | 1 << 3, n, &event(n)).unwrap();
        }
        store.commit().unwrap();
        store.save_cursors(&[(3, 3)]).unwrap();
        // One more appended, not committed: forgetting commits it, and dead-letters it too.
        store.append(1 << 3, 6, &event(6)).unwrap();
        assert!(matches!(
            store.endpoint("new"),
            Err(Error::TooManyEndpoints { limit: 64, .. })
        ));

        let done = forget_endpoint(&mut store, "e3").unwrap();
        assert_eq!((done.slot, done.dead_lettered, done.lost), (3, 4, 0));
        let dead = store.dead_letters().list(&DeadLetterFilter::all()).unwrap();
        let got: Vec<(u64, String)> = dead.iter().map(|d| (d.seq, d.event.id().into())).collect();
        let want: Vec<(u64, String)> = (3..=6).map(|n| (n, format!("e{n}"))).collect();
        assert_eq!(got, want);
        assert!(
            dead.iter()
                .all(|d| d.error == FORGOTTEN_ERROR && d.status.is_none())
        );
        assert!(!store.endpoints().iter().any(|(n, _)| n == "e3"));

        // The slot is free again, and the new endpoint does not see e3's records.
        let new = store.endpoint("new").unwrap();
        assert_eq!(new.slot, 3);
        assert_eq!(new.acked, 7);
        assert_eq!(seqs(&store, new.acked, 1 << 3), Vec::<u64>::new());
        store.append(1 << 3, 7, &event(7)).unwrap();
        store.commit().unwrap();
        assert_eq!(seqs(&store, new.acked, 1 << 3), [7]);
        // e0 still has every record.
        assert_eq!(seqs(&store, 1, 1), [1, 2, 3, 4, 5]);

        // Durable: reopened, the slot is "new"'s, e3 is gone, e0 kept.
        drop(store);
        let mut store = LogStore::open(StoreConfig::new(dir.path())).unwrap();
        let eps = store.endpoints();
        assert!(
            eps.iter()
                .any(|(n, s)| n == "new" && s.slot == 3 && s.since == 7)
        );
        assert!(!eps.iter().any(|(n, _)| n == "e3"));
        assert!(!store.recovery().slots_rebuilt && !store.recovery().cursors_reset);
        // Forgetting what is not there is an error, and changes nothing.
        let e = forget_endpoint(&mut store, "e3").unwrap_err();
        assert!(
            matches!(
                e,
                Error::Config {
                    field: "endpoint",
                    ..
                }
            ),
            "{e}"
        );
        // Re-registered, e3 starts after everything (a new endpoint, slot 64 is none).
        forget_endpoint(&mut store, "e63").unwrap();
        let again = store.endpoint("e3").unwrap();
        assert_eq!((again.slot, again.acked), (63, 8));
    }

    #[test]
    fn a_read_only_store_forgets_nothing() {
        let dir = TestDir::new("forget-ro");
        let mut store = LogStore::open(StoreConfig::new(dir.path())).unwrap();
        store.endpoint("a").unwrap();
        drop(store);
        let mut ro = LogStore::open_read_only(dir.path()).unwrap();
        assert!(matches!(
            forget_endpoint(&mut ro, "a"),
            Err(Error::Storage { .. })
        ));
        assert_eq!(ro.endpoints().len(), 1);
    }
}
