//! The writer on a disk that fails writes and syncs, fills up, and loses unsynced data in a
//! crash (`fault_disk.rs`). What a commit reported durable must be read back after any crash;
//! what a failed commit (or append) refused must never be read back, after a crash or not.

use std::collections::{BTreeMap, BTreeSet};

use super::super::fault_disk::{FaultDisk, Rng, records};
use super::super::test_dir::TestDir;
use super::*;

const QUOTA: u64 = 1 << 40;

fn log_dir() -> PathBuf {
    PathBuf::from("/fault-disk/log")
}

fn open(disk: &FaultDisk, q: &Quarantine, segment_bytes: u64) -> Result<Writer, Error> {
    Writer::open_on(
        Arc::new(disk.clone()),
        &log_dir(),
        segment_bytes,
        QUOTA,
        1,
        Mode::Write(q),
    )
    .map(|(w, _)| w)
}

/// Every valid record on `disk`, by seq.
fn read_all(disk: &FaultDisk) -> BTreeMap<u64, Vec<u8>> {
    records(disk, &log_dir())
}

/// A payload that names its record (`id`), padded to vary record sizes.
fn payload(id: u64, pad: usize) -> Vec<u8> {
    let mut p = id.to_le_bytes().to_vec();
    p.resize(8 + pad, 0xAB);
    p
}

fn id_of(payload: &[u8]) -> u64 {
    u64::from_le_bytes(payload[..8].try_into().unwrap())
}

/// What the test knows about every record it appended.
#[derive(Default)]
struct Ledger {
    /// Committed (their "ticket" succeeded): id -> seq.
    durable: BTreeMap<u64, u64>,
    /// Refused (their "ticket" failed).
    failed: BTreeSet<u64>,
    /// Segments whose records are all below this may have been removed.
    removed_below: u64,
    /// Failures seen, and failures whose rollback itself failed.
    failures: u64,
    undo_failures: u64,
}

impl Ledger {
    /// What is on the disk keeps the promises: every durable record (unless removed) is
    /// there with its seq, and no refused one is.
    fn check(&self, disk: &FaultDisk, when: &str) {
        let found = read_all(disk);
        for (&id, &seq) in &self.durable {
            if seq < self.removed_below {
                continue;
            }
            let got = found.get(&seq).map(|p| id_of(p));
            assert_eq!(
                got,
                Some(id),
                "{when}: durable record {id} (seq {seq}) is gone"
            );
        }
        for (seq, p) in &found {
            let id = id_of(p);
            assert!(
                !self.failed.contains(&id),
                "{when}: record {id} was refused (its commit failed) but is read back as seq {seq}"
            );
        }
    }

    /// A failure: the records of the group are refused.
    fn refuse(&mut self, group: &mut Vec<(u64, u64)>, e: &Error) {
        self.failures += 1;
        let text = e.to_string();
        assert!(
            text.contains("rolled back") || text.contains("failed too"),
            "the error says what became of the group: {text}"
        );
        if text.contains("failed too") {
            // Only with two faults in a row (this loop injects one per session).
            self.undo_failures += 1;
        }
        self.failed.extend(group.drain(..).map(|(id, _)| id));
    }
}

/// One seed: sessions of appends and commits, each with at most one injected fault, each
/// ended by a crash (or a plain exit), each followed by a check of what is on the disk.
fn run(seed: u64) -> Ledger {
    let mut rng = Rng::new(seed);
    let disk = FaultDisk::new(seed ^ 0xD15C);
    let dir = TestDir::new("writer-faults");
    let q = Quarantine::new(dir.path());
    let segment_bytes = 256 + rng.below(4096);
    let mut ledger = Ledger::default();
    let mut next_id = 0;
    for session in 0..10 {
        if rng.one_in(5) {
            // Disk full (the session's one fault): writes past a limit fail with ENOSPC;
            // truncation frees room.
            let used: u64 = read_all(&disk).values().map(|p| p.len() as u64 + 32).sum();
            disk.set_capacity(Some(used + rng.below(2000)));
        } else {
            disk.random_faults(2 + rng.below(60), 1);
        }
        let mut w = match open(&disk, &q, segment_bytes) {
            Ok(w) => w,
            Err(_) => {
                // Nothing was reported in this session: crash and look again.
                disk.crash();
                ledger.check(
                    &disk,
                    &format!("seed {seed} session {session}: failed open"),
                );
                continue;
            }
        };
        let mut group: Vec<(u64, u64)> = Vec::new();
        for _ in 0..rng.below(80) {
            if rng.one_in(5) {
                match w.commit() {
                    Ok(through) => {
                        for (id, seq) in group.drain(..) {
                            assert!(seq <= through);
                            ledger.durable.insert(id, seq);
                        }
                    }
                    Err(e) => {
                        ledger.refuse(&mut group, &e);
                        assert!(
                            w.append(0, 0, b"x").is_err(),
                            "a failed writer stays failed"
                        );
                        assert!(w.commit().is_err(), "a failed writer stays failed");
                        break;
                    }
                }
            } else if rng.one_in(20) {
                // Cursors passed everything durable: older segments may go.
                // (If a remove or directory sync fails, some of them may be gone.)
                let below = w.durable_through() + 1;
                let _ = w.remove_before(below);
                ledger.removed_below = below;
            } else {
                let id = next_id;
                next_id += 1;
                match w.append(1, id, &payload(id, rng.below(120) as usize)) {
                    Ok(seq) => group.push((id, seq)),
                    Err(e) => {
                        group.push((id, 0));
                        ledger.refuse(&mut group, &e);
                        break;
                    }
                }
            }
        }
        drop(w);
        disk.random_faults(0, 0);
        disk.set_capacity(None);
        if !rng.one_in(4) {
            disk.crash();
        }
        // Records of a group neither committed nor refused (the process died first) may or
        // may not be there: nothing was reported about them.
        ledger.check(&disk, &format!("seed {seed} session {session}"));
    }
    ledger
}

#[test]
fn nothing_refused_is_read_back_and_everything_committed_is_after_random_faults_and_crashes() {
    let (mut failures, mut durable, mut refused) = (0, 0, 0);
    for seed in 0..300 {
        let l = run(seed);
        assert_eq!(l.undo_failures, 0, "seed {seed}: one fault per session");
        failures += l.failures;
        durable += l.durable.len();
        refused += l.failed.len();
    }
    // The loop did exercise both sides.
    assert!(failures > 100, "{failures} failures");
    assert!(durable > 10_000, "{durable} durable records");
    assert!(refused > 500, "{refused} refused records");
}

/// A commit whose `fdatasync` fails after its bytes were written: they would be read back
/// (the kernel may well have written them), so they are cut.
#[test]
fn a_failed_sync_cuts_the_group_even_if_the_bytes_reached_the_disk() {
    let disk = FaultDisk::new(1);
    let dir = TestDir::new("writer-sync-fails");
    let q = Quarantine::new(dir.path());
    let mut w = open(&disk, &q, 1 << 20).unwrap();
    w.append(1, 0, &payload(0, 10)).unwrap();
    assert_eq!(w.commit().unwrap(), 1);
    w.append(1, 0, &payload(1, 10)).unwrap();
    w.append(1, 0, &payload(2, 10)).unwrap();
    // commit: write (op 1), fdatasync (op 2) fails.
    disk.fail_in(2);
    let e = w.commit().unwrap_err().to_string();
    assert!(e.contains("fdatasync") && e.contains("rolled back"), "{e}");
    assert_eq!(w.durable_through(), 1);
    // No crash at all (the bytes stay in the page cache): only record 1 is there.
    let path = log_dir().join(segment::segment_name(1));
    assert_eq!(disk.contents(&path).unwrap().len(), 32 + 18);
    drop(w);
    let found = read_all(&disk);
    assert_eq!(found.keys().copied().collect::<Vec<_>>(), [1]);
    // And a crash keeps the cut: it was synced.
    disk.crash();
    assert_eq!(read_all(&disk).len(), 1);
    // Reopened, the log continues after the last commit.
    let mut w = open(&disk, &q, 1 << 20).unwrap();
    assert_eq!(w.append(1, 0, &payload(3, 1)).unwrap(), 2);
}

/// A group that rolled into new segments before it failed: the new segments are removed and
/// the old one, synced by the roll, is cut back.
#[test]
fn a_failed_group_that_spanned_segments_is_removed_from_all_of_them() {
    let disk = FaultDisk::new(2);
    let dir = TestDir::new("writer-roll-fails");
    let q = Quarantine::new(dir.path());
    let mut w = open(&disk, &q, 200).unwrap();
    w.append(1, 0, &payload(0, 40)).unwrap();
    w.commit().unwrap();
    // Each record is 80 bytes: the third of these rolls twice (a segment holds two).
    for id in 1..6 {
        w.append(1, 0, &payload(id, 40)).unwrap();
    }
    assert!(w.segments() >= 3);
    disk.fail_in(2); // the commit's write, then its fdatasync
    let e = w.commit().unwrap_err().to_string();
    assert!(e.contains("rolled back"), "{e}");
    assert_eq!(w.segments(), 1);
    let names = segment::list_segments_on(&disk, &log_dir()).unwrap();
    assert_eq!(names, [1]);
    disk.crash();
    let found = read_all(&disk);
    assert_eq!(found.len(), 1, "{:?}", found.keys());
    assert_eq!(id_of(&found[&1]), 0);
}

/// ENOSPC: the write that does not fit fails, what part of the group fit is cut (which
/// frees the room again), and the error names the cause.
#[test]
fn a_full_disk_refuses_the_group_and_keeps_what_was_committed() {
    let disk = FaultDisk::new(3);
    let dir = TestDir::new("writer-enospc");
    let q = Quarantine::new(dir.path());
    disk.set_capacity(Some(1000));
    let mut w = open(&disk, &q, 1 << 20).unwrap();
    let mut committed = 0;
    let mut id = 0;
    let e = loop {
        for _ in 0..3 {
            w.append(1, 0, &payload(id, 60)).unwrap();
            id += 1;
        }
        match w.commit() {
            Ok(through) => committed = through,
            Err(e) => break e,
        }
    };
    let text = e.to_string();
    assert!(
        text.contains("os error 28") && text.contains("rolled back"),
        "{text}"
    );
    assert_eq!(
        committed, 9,
        "three groups of three records of 100 bytes fit in 1000"
    );
    let path = log_dir().join(segment::segment_name(1));
    assert_eq!(
        disk.contents(&path).unwrap().len(),
        900,
        "the partial write was cut"
    );
    assert!(
        w.append(1, 0, b"more").is_err(),
        "no more writes after the failure"
    );
    drop(w);
    disk.crash();
    let found = read_all(&disk);
    assert_eq!(found.len(), 9);
    assert!(found.values().all(|p| id_of(p) < 9));
}

/// Two faults in a row (the write, then the truncate undoing it): the error says the group's
/// records may come back.
#[test]
fn a_failed_rollback_is_said() {
    let disk = FaultDisk::new(4);
    let dir = TestDir::new("writer-undo-fails");
    let q = Quarantine::new(dir.path());
    let mut w = open(&disk, &q, 1 << 20).unwrap();
    w.append(1, 0, &payload(0, 10)).unwrap();
    disk.fail_in(1); // the commit's write
    disk.fail_in(2); // the rollback's truncate
    let e = w.commit().unwrap_err().to_string();
    assert!(e.contains("failed too") && e.contains("truncate"), "{e}");
    assert_eq!(disk.injected(), 2);
}
