//! A model-based property test of `LogStore`: random appends, commits, crashes (with a torn
//! tail of uncommitted data), clean reopens, cursor saves, flipped bytes in committed records
//! (in any segment) and read-only opens, checked against an in-memory model after every step.
//! Committed records are never lost or changed, except one whose byte was flipped: that one
//! alone is lost (skipped, reported, copied aside), or, if nothing valid follows it in the
//! last segment, cut as a torn tail. Seqs stay consecutive; segments go only when every
//! cursor has passed them; a read-only open sees what the writer committed.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use proptest::prelude::*;

use super::tests::{config, read};
use super::*;
use crate::store::DamageKind;
use crate::store::segment::{self, HEADER_LEN, parse_segment_name};
use crate::store::test_dir::TestDir;

const SEGMENT_BYTES: u64 = 512;
const QUOTA: u64 = 2000;
const ENDPOINTS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Append {
        mask: u64,
        len: usize,
    },
    Commit,
    /// Drop without committing, then cut up to `cut` bytes of uncommitted data from the end
    /// of the last segment, then add the first `torn` bytes of a record (a torn write).
    Crash {
        cut: u64,
        torn: usize,
    },
    /// Commit, drop, open.
    Reopen,
    /// `permille` of the way from the first seq to `durable_through + 1` (past 1000: beyond
    /// it, which the store clamps). Slot 3 is unknown to the store.
    Save {
        slot: u8,
        permille: u16,
    },
    /// The same, for every endpoint at once.
    SaveAll {
        permille: u16,
    },
    /// Commit, drop, flip a byte of a committed record still in the log (`pick` permille of
    /// the way through them; its byte `at` permille of the way through it), open.
    Flip {
        pick: u16,
        at: u16,
    },
    /// A read-only open beside the writer: it reads what the model says is committed.
    ReadOnly,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u64..8, 0usize..160).prop_map(|(mask, len)| Op::Append { mask, len }),
        3 => Just(Op::Commit),
        1 => (0u64..400, 0usize..72).prop_map(|(cut, torn)| Op::Crash { cut, torn }),
        1 => Just(Op::Reopen),
        2 => (0u8..4, 0u16..1100).prop_map(|(slot, permille)| Op::Save { slot, permille }),
        1 => (0u16..1100).prop_map(|permille| Op::SaveAll { permille }),
        1 => (0u16..1000, 0u16..1000).prop_map(|(pick, at)| Op::Flip { pick, at }),
        1 => Just(Op::ReadOnly),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    seq: u64,
    mask: u64,
    time_ms: u64,
    payload: Vec<u8>,
    /// A byte of it was flipped: readers skip it.
    lost: bool,
}

#[derive(Debug, Default)]
struct Model {
    /// Every committed record, from seq 1 (the store may have removed a prefix).
    committed: Vec<Rec>,
    /// Appended since the last commit.
    pending: Vec<Rec>,
    acked: [u64; ENDPOINTS],
    /// Makes every payload unique, so a reused seq never matches stale bytes.
    appends: u64,
}

impl Model {
    fn committed_next(&self) -> u64 {
        self.committed.last().map_or(1, |r| r.seq + 1)
    }

    fn next_seq(&self) -> u64 {
        self.pending
            .last()
            .map_or_else(|| self.committed_next(), |r| r.seq + 1)
    }
}

fn owned(recs: Vec<(u64, u64, u64, Vec<u8>)>) -> Vec<Rec> {
    recs.into_iter()
        .map(|(seq, mask, time_ms, payload)| Rec {
            seq,
            mask,
            time_ms,
            payload,
            lost: false,
        })
        .collect()
}

/// The records a reader must give from `from` on: the committed ones not lost.
fn readable(model: &Model, from: u64) -> Vec<Rec> {
    model
        .committed
        .iter()
        .filter(|r| r.seq >= from && !r.lost)
        .cloned()
        .collect()
}

/// The seqs from `from` on that the model has lost.
fn lost_from(model: &Model, from: u64) -> Vec<u64> {
    model
        .committed
        .iter()
        .filter(|r| r.seq >= from && r.lost)
        .map(|r| r.seq)
        .collect()
}

/// The seqs a reader's last read reported lost, from `from` on.
fn reported_lost(reader: &dyn StoreReader, from: u64) -> Vec<u64> {
    reader
        .damaged()
        .iter()
        .inspect(|d| assert_eq!(d.kind, DamageKind::Corrupt, "{d:?}"))
        .flat_map(|d| d.lost_seqs())
        .filter(|&s| s >= from)
        .collect()
}

fn open(dir: &Path) -> LogStore {
    LogStore::open(config(dir, SEGMENT_BYTES, QUOTA)).expect("open")
}

/// Everything the store holds and the model says it must.
fn check(store: &LogStore, model: &Model) {
    assert_eq!(store.next_seq(), model.next_seq());
    assert_eq!(store.durable_through(), model.committed_next() - 1);
    let first = store.first_seq();
    let min_acked = *model.acked.iter().min().expect("endpoints");
    assert!(first <= min_acked, "removed {first} > acked {min_acked}");
    let mut reader = store.reader().expect("reader");
    let (got, next) = read(
        &mut *reader,
        first,
        store.durable_through(),
        u64::MAX,
        100_000,
    );
    assert_eq!(owned(got), readable(model, first));
    assert_eq!(reported_lost(&*reader, first), lost_from(model, first));
    assert_eq!(next, model.committed_next().max(first));
    let acked: Vec<_> = store.endpoints().iter().map(|e| e.1.acked).collect();
    assert_eq!(acked, model.acked);
}

/// Cuts up to `cut` bytes from the last segment, never into committed records, then writes
/// the first `torn` bytes of a 40-byte record after what is left.
fn tear(dir: &Path, model: &Model, cut: u64, torn: usize) {
    let mut segs: Vec<_> = fs::read_dir(dir.join("log"))
        .expect("list")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let seq = parse_segment_name(path.file_name()?.to_str()?)?;
            Some((seq, path))
        })
        .collect();
    segs.sort();
    let (first, path) = segs.last().expect("a segment");
    let committed: u64 = model
        .committed
        .iter()
        .filter(|r| r.seq >= *first)
        .map(|r| (HEADER_LEN + r.payload.len()) as u64)
        .sum();
    let len = fs::metadata(path).expect("stat").len();
    let cut = cut.min(len - committed);
    let mut file = OpenOptions::new().append(true).open(path).expect("open");
    file.set_len(len - cut).expect("truncate");
    let mut record = Vec::new();
    segment::encode(&mut record, model.next_seq(), 1, 0, &[9; 40]);
    file.write_all(&record[..torn]).expect("write");
}

/// The segment files, by first seq.
fn segment_files(dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
    let mut segs: Vec<_> = fs::read_dir(dir.join("log"))
        .expect("list")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let seq = parse_segment_name(path.file_name()?.to_str()?)?;
            Some((seq, path))
        })
        .collect();
    segs.sort();
    segs
}

/// The first seq of the last segment.
fn last_segment(dir: &Path) -> u64 {
    segment_files(dir).last().expect("a segment").0
}

/// Flips one byte of a committed record not yet lost (if there is one from `first` on) and
/// updates the model: the record is lost; or, if it is the last record of the last segment,
/// it and the lost records just before it in that segment are a torn tail, which opening
/// cuts. Returns whether it made a torn tail.
fn flip_record(dir: &Path, model: &mut Model, first: u64, pick: u16, at: u16) -> bool {
    let candidates: Vec<usize> = (0..model.committed.len())
        .filter(|&i| model.committed[i].seq >= first && !model.committed[i].lost)
        .collect();
    if candidates.is_empty() {
        return false;
    }
    let i = candidates[candidates.len() * usize::from(pick) / 1000];
    let seq = model.committed[i].seq;
    let segs = segment_files(dir);
    let (seg_first, path) = segs
        .iter()
        .rev()
        .find(|(s, _)| *s <= seq)
        .expect("the record's segment")
        .clone();
    // Every committed record of the segment is in the file, lost ones included.
    let offset: u64 = model
        .committed
        .iter()
        .filter(|r| r.seq >= seg_first && r.seq < seq)
        .map(|r| (HEADER_LEN + r.payload.len()) as u64)
        .sum();
    let size = (HEADER_LEN + model.committed[i].payload.len()) as u64;
    let byte = offset + size * u64::from(at) / 1000;
    let mut bytes = fs::read(&path).expect("read");
    bytes[byte as usize] ^= 0x21;
    fs::write(&path, bytes).expect("write");
    let last = seg_first == segs.last().expect("segments").0 && i + 1 == model.committed.len();
    if !last {
        model.committed[i].lost = true;
        return false;
    }
    model.committed.pop();
    while model
        .committed
        .last()
        .is_some_and(|r| r.lost && r.seq >= seg_first)
    {
        model.committed.pop();
    }
    true
}

/// Saves the cursors of `slots` at `permille` of the way through the log.
fn save(store: &mut LogStore, model: &mut Model, slots: &[u8], permille: u16) {
    let first = store.first_seq();
    let end = store.durable_through() + 1;
    let target = first + (end - first) * u64::from(permille) / 1000;
    let acked: Vec<_> = slots.iter().map(|&slot| (slot, target)).collect();
    store.save_cursors(&acked).expect("save");
    for &slot in slots {
        if let Some(acked) = model.acked.get_mut(usize::from(slot)) {
            *acked = (*acked).max(target.min(end));
        }
    }
}

fn run(ops: Vec<Op>) {
    let dir = TestDir::new("model");
    let mut store = open(dir.path());
    let mut model = Model::default();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let e = store.endpoint(name).expect("register");
        assert_eq!((usize::from(e.slot), e.since), (i, 1));
        model.acked[i] = 1;
    }
    // A reader kept across steps, reading on from where it stopped.
    let mut follower = store.reader().expect("reader");
    let mut followed = 1;
    for op in ops {
        match op {
            Op::Append { mask, len } => {
                model.appends += 1;
                let n = model.appends;
                let payload: Vec<u8> = (0..len).map(|i| (n * 7 + i as u64) as u8).collect();
                let used = store.used_bytes();
                let size = (HEADER_LEN + len) as u64;
                match store.append(mask, n, &payload) {
                    Ok(seq) => {
                        assert!(used + size <= QUOTA);
                        assert_eq!(seq, model.next_seq());
                        model.pending.push(Rec {
                            seq,
                            mask,
                            time_ms: n,
                            payload,
                            lost: false,
                        });
                    }
                    Err(Error::Quota { quota, used: u }) => {
                        assert_eq!((quota, u), (QUOTA, used));
                        assert!(used + size > QUOTA);
                        assert_eq!(store.used_bytes(), used);
                    }
                    Err(e) => panic!("append: {e}"),
                }
            }
            Op::Commit => {
                let pending = std::mem::take(&mut model.pending);
                model.committed.extend(pending);
                let durable = store.commit().expect("commit");
                assert_eq!(durable, model.committed_next() - 1);
                // The follower sees exactly the new records (or, after removals, from the
                // oldest kept).
                let (got, next) = read(&mut *follower, followed, durable, u64::MAX, 100_000);
                let from = followed.max(store.first_seq());
                assert_eq!(owned(got), readable(&model, from));
                followed = next;
            }
            Op::Crash { cut, torn } => {
                drop(follower);
                drop(store);
                tear(dir.path(), &model, cut, torn);
                store = open(dir.path());
                let r = store.recovery();
                if torn > 0 {
                    assert!(r.truncated_bytes >= torn as u64);
                    assert_eq!(r.corrupt_records, 1);
                }
                // Uncommitted records may have reached the disk (a segment roll writes them):
                // whatever survived is a prefix of them, intact.
                let next = store.next_seq();
                let from = model.committed_next();
                assert!(next >= from && next <= model.next_seq());
                let (got, _) = read(
                    &mut *store.reader().expect("reader"),
                    from,
                    next - 1,
                    u64::MAX,
                    100_000,
                );
                let survived: Vec<_> = model.pending.drain(..(next - from) as usize).collect();
                assert_eq!(owned(got), survived);
                model.committed.extend(survived);
                model.pending.clear();
                follower = store.reader().expect("reader");
                followed = store.first_seq();
            }
            Op::Reopen => {
                store.commit().expect("commit");
                let pending = std::mem::take(&mut model.pending);
                model.committed.extend(pending);
                drop(follower);
                drop(store);
                store = open(dir.path());
                let r = store.recovery();
                assert_eq!((r.truncated_bytes, r.corrupt_records), (0, 0));
                assert!(!r.cursors_reset);
                follower = store.reader().expect("reader");
                followed = store.first_seq();
            }
            Op::Save { slot, permille } => save(&mut store, &mut model, &[slot], permille),
            Op::SaveAll { permille } => save(&mut store, &mut model, &[0, 1, 2], permille),
            Op::Flip { pick, at } => {
                store.commit().expect("commit");
                let pending = std::mem::take(&mut model.pending);
                model.committed.extend(pending);
                let first = store.first_seq();
                drop(follower);
                drop(store);
                let torn = flip_record(dir.path(), &mut model, first, pick, at);
                store = open(dir.path());
                let r = store.recovery();
                let last_segment = last_segment(dir.path());
                if torn {
                    assert_eq!(r.corrupt_records, 1, "{r:?}");
                    assert!(r.truncated_bytes > 0, "{r:?}");
                    let end = model.committed_next();
                    for a in &mut model.acked {
                        *a = (*a).min(end);
                    }
                } else {
                    assert_eq!((r.truncated_bytes, r.corrupt_records), (0, 0), "{r:?}");
                }
                // Opening scans the last segment: what it lost there, it reports.
                let lost_there = lost_from(&model, last_segment);
                assert_eq!(r.lost_records, lost_there.len() as u64, "{r:?}");
                assert!(
                    r.damaged
                        .iter()
                        .filter(|d| d.kind == DamageKind::Corrupt)
                        .all(|d| d.quarantined.as_ref().is_some_and(|p| p.exists())),
                    "{r:?}"
                );
                follower = store.reader().expect("reader");
                followed = store.first_seq();
            }
            Op::ReadOnly => {
                let mut ro = LogStore::open_read_only(dir.path()).expect("read-only open");
                assert!(ro.recovery().read_only);
                // A segment roll writes uncommitted records out: they may be seen.
                let next = ro.next_seq();
                assert!(next >= model.committed_next() && next <= model.next_seq());
                let first = ro.first_seq();
                let mut reader = ro.reader().expect("reader");
                let until = model.committed_next() - 1;
                let (got, _) = read(&mut *reader, first, until, u64::MAX, 100_000);
                assert_eq!(owned(got), readable(&model, first));
                assert_eq!(reported_lost(&*reader, first), lost_from(&model, first));
                assert!(ro.append(1, 0, b"no").is_err());
            }
        }
        check(&store, &model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_store_matches_its_model(ops in proptest::collection::vec(op(), 1..48)) {
        run(ops);
    }
}
