//! The store's JSON side files, read on every open: `slots.json`, `cursors.json` and the lines
//! of `dead-letters.ndjson` (src/store/meta.rs, src/store/dlq.rs).
//!
//! Input: a byte giving how many records the log already holds (0 to 3), then the three
//! files' contents separated by NUL bytes (JSON text never holds a raw NUL); a file with no
//! part is absent.
//!
//! Invariants: whatever the files hold, the store opens (a file it cannot use counts as lost,
//! and a dead-letter line it cannot read is skipped); every endpoint it reports has its own
//! slot below 64 and a cursor within the log; every dead letter it lists has an id and valid
//! JSON; and the store works afterwards: it registers an endpoint, takes and commits an
//! append, saves cursors and a dead letter, and opens again with the same endpoints and
//! letters, nothing reset and nothing to repair.

use std::fs;

use hookwire::store::{DeadLetter, DeadLetterFilter, LogStore, Store, StoreConfig};
use hookwire::{Error, Event, RawEvent};

use crate::scratch::Scratch;

const FILES: [&str; 3] = ["slots.json", "cursors.json", "dead-letters.ndjson"];

pub fn check(data: &[u8]) {
    let Some((&records, rest)) = data.split_first() else {
        return;
    };
    let scratch = Scratch::new();
    let dir = scratch.path().join("store");
    fs::create_dir_all(&dir).unwrap();
    for (name, part) in FILES.iter().zip(rest.split(|&b| b == 0)) {
        fs::write(dir.join(name), part).unwrap();
    }
    let config = StoreConfig::new(&dir);
    if records % 4 > 0 {
        // A log that already holds records, written through the store itself.
        let empty = Scratch::new();
        let mut seed = LogStore::open(StoreConfig::new(empty.path())).unwrap();
        for i in 0..records % 4 {
            seed.append(1 << i, 1, b"{}").unwrap();
        }
        seed.commit().unwrap();
        drop(seed);
        fs::rename(empty.path().join("log"), dir.join("log")).unwrap();
    }

    let mut store = LogStore::open(config.clone())
        .unwrap_or_else(|e| panic!("side files stopped the store from opening: {e}"));
    let r = store.recovery().clone();
    let endpoints = store.endpoints();
    let mut slots = 0u64;
    for (name, e) in &endpoints {
        assert!(e.slot < 64, "{name}: {e:?}");
        assert_eq!(slots & 1 << e.slot, 0, "slot {} twice", e.slot);
        slots |= 1 << e.slot;
        assert!(
            (r.first_seq..=r.next_seq).contains(&e.acked),
            "{name}: {e:?} {r:?}"
        );
    }
    let letters = store
        .dead_letters()
        .list(&DeadLetterFilter::all())
        .expect("list dead letters");
    for d in &letters {
        assert!(!d.event.id().is_empty());
        serde_json::from_str::<&serde_json::value::RawValue>(d.event.json())
            .expect("a listed dead letter holds valid JSON");
    }

    // The store works on from whatever it recovered.
    let added = match store.endpoint("fuzz-added") {
        Ok(state) => Some(state),
        Err(Error::TooManyEndpoints { .. }) => {
            assert_eq!(endpoints.len(), 64);
            None
        }
        Err(e) => panic!("register an endpoint: {e}"),
    };
    let mask = slots | added.map_or(0, |s| 1 << s.slot);
    let seq = store.append(mask.max(1), 7, b"{}").expect("append");
    assert_eq!(seq, r.next_seq);
    assert_eq!(store.commit().expect("commit"), seq);
    let acked: Vec<(u8, u64)> = store
        .endpoints()
        .iter()
        .map(|(_, e)| (e.slot, seq + 1))
        .collect();
    store.save_cursors(&acked).expect("save cursors");
    let letter = DeadLetter {
        endpoint: "fuzz-added".into(),
        seq,
        published_ms: 7,
        failed_ms: 8,
        status: Some(400),
        error: "refused".into(),
        attempts: 1,
        event: RawEvent::parse(r#"{"id":"fuzz-1"}"#).unwrap(),
    };
    store
        .dead_letters()
        .append(&[letter])
        .expect("append a dead letter");
    let names: Vec<String> = store.endpoints().into_iter().map(|(n, _)| n).collect();
    drop(store);

    let store = LogStore::open(config).expect("reopen");
    let again = store.recovery().clone();
    assert!(!again.cursors_reset, "{again:?}");
    assert_eq!(
        (again.truncated_bytes, again.corrupt_records),
        (0, 0),
        "{again:?}"
    );
    assert_eq!(again.next_seq, seq + 1, "{again:?}");
    // One segment, the active one, is never removed: the append is still in the log.
    assert!(again.first_seq <= seq, "{again:?}");
    let names_again: Vec<String> = store.endpoints().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names_again, names);
    for (name, e) in store.endpoints() {
        assert_eq!(e.acked, seq + 1, "{name}: {e:?}");
    }
    let letters_again = store.dead_letters().list(&DeadLetterFilter::all()).unwrap();
    assert_eq!(letters_again.len(), letters.len() + 1);
    assert_eq!(letters_again.last().unwrap().event.id(), "fuzz-1");
}
