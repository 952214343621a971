//! The persistence thread over a log on a disk that fails writes and syncs, fills up, and
//! loses unsynced data in a crash (`store/fault_disk.rs`). Tickets are the promise: every
//! event whose ticket said `Ok(seq)` is read back at `seq` after a crash, and no event whose
//! ticket (or publish) failed is ever read back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use super::*;
use crate::engine::ticket::Ticket;
use crate::store::fault_disk::{FaultDisk, Rng, records};
use crate::store::{LogStore, StoreConfig};

/// A fresh data directory (the slot, cursor and lock files live there; the log's segments
/// live on the fault disk).
struct Dir(PathBuf);

impl Dir {
    fn new(seed: u64) -> Dir {
        let path = std::env::temp_dir().join(format!(
            "hookwire-persist-faults-{}-{seed}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the test was told about every event it published.
#[derive(Default)]
struct Told {
    /// Its ticket said `Ok(seq)`: id -> seq.
    durable: BTreeMap<String, u64>,
    /// Its ticket (or its publish) failed.
    failed: BTreeSet<String>,
    /// Each event's record payload -> its id.
    ids: HashMap<Vec<u8>, String>,
}

impl Told {
    fn check(&self, disk: &FaultDisk, log_dir: &std::path::Path, when: &str) {
        let found = records(disk, log_dir);
        for (id, seq) in &self.durable {
            let got = found.get(seq).and_then(|p| self.ids.get(p));
            assert_eq!(
                got,
                Some(id),
                "{when}: {id}, durable at seq {seq}, is not read back"
            );
        }
        for (seq, p) in &found {
            if let Some(id) = self.ids.get(p) {
                assert!(
                    !self.failed.contains(id),
                    "{when}: {id} was reported not durable but is read back at seq {seq}"
                );
            }
        }
    }
}

fn run(seed: u64) -> (usize, usize) {
    let mut rng = Rng::new(seed ^ 0x7157);
    let disk = FaultDisk::new(seed);
    let dir = Dir::new(seed);
    let log_dir = dir.0.join("log");
    let mut told = Told::default();
    let mut next = 0;
    for session in 0..6 {
        let when = format!("seed {seed} session {session}");
        if rng.one_in(4) {
            let used: u64 = records(&disk, &log_dir)
                .values()
                .map(|p| p.len() as u64 + 32)
                .sum();
            disk.set_capacity(Some(used + rng.below(6000)));
        } else {
            disk.random_faults(2 + rng.below(40), 1);
        }
        let mut config = StoreConfig::new(&dir.0);
        config.segment_bytes = 512 + rng.below(4096);
        let store = match LogStore::open_on(config, Arc::new(disk.clone())) {
            Ok(store) => store,
            Err(_) => {
                disk.crash();
                told.check(&disk, &log_dir, &when);
                continue;
            }
        };
        let d = Arc::new(Durable::new(Box::new(store)));
        let runner = {
            let d = d.clone();
            std::thread::spawn(move || d.run(|_| true))
        };
        let mut tickets = Vec::new();
        for _ in 0..rng.below(8) {
            for _ in 0..rng.below(40) {
                let id = format!("e{next}");
                next += 1;
                let pad = "x".repeat(rng.below(100) as usize);
                let event = RawEvent::new(id.clone(), format!("{{\"pad\":\"{pad}\"}}")).unwrap();
                let mut payload = Vec::new();
                event.encode_record(&mut payload);
                told.ids.insert(payload, id.clone());
                match d.submit(event, 1, 0, Instant::now(), true, Duration::from_secs(10)) {
                    Ok(cell) => tickets.push((
                        id,
                        Ticket {
                            cell,
                            durable: Some(d.clone()),
                        },
                    )),
                    Err(e) => {
                        assert!(matches!(e, Error::Storage { .. }), "{when}: {e}");
                        told.failed.insert(id);
                    }
                }
            }
            // Now and then wait for a commit, so that a session has several groups.
            if rng.one_in(2)
                && let Some((_, t)) = tickets.last()
            {
                let _ = t.wait(Duration::from_secs(10));
            }
        }
        d.stop();
        runner.join().unwrap();
        for (id, t) in tickets {
            match t
                .try_get()
                .expect("every ticket is decided once the thread stopped")
            {
                Ok(Some(seq)) => {
                    told.durable.insert(id, seq);
                }
                Ok(None) => panic!("{when}: {id} had no durable endpoint"),
                Err(e) => {
                    assert!(matches!(e, Error::Storage { .. }), "{when}: {e}");
                    told.failed.insert(id);
                }
            }
        }
        d.close();
        disk.random_faults(0, 0);
        disk.set_capacity(None);
        if !rng.one_in(4) {
            disk.crash();
        }
        told.check(&disk, &log_dir, &when);
    }
    (told.durable.len(), told.failed.len())
}

/// Issue 10, item 5.
#[test]
fn a_ticket_that_failed_never_comes_back_and_one_that_succeeded_always_does() {
    let (mut durable, mut failed) = (0, 0);
    for seed in 0..60 {
        let (d, f) = run(seed);
        durable += d;
        failed += f;
    }
    assert!(durable > 2_000, "{durable} events reported durable");
    assert!(failed > 200, "{failed} events reported not durable");
}
