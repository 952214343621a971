//! `LogStore`'s tests: the log, readers, recovery, quota, cursors, the lock and dead letters.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use super::*;
use crate::Event;
use crate::store::dlq::letter;
use crate::store::test_dir::TestDir;
use crate::store::{CursorRepair, DamageKind, DeadLetter, DeadLetterFilter};

pub(super) fn config(dir: &Path, segment_bytes: u64, quota_bytes: u64) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.segment_bytes = segment_bytes;
    config.quota_bytes = quota_bytes;
    config
}

/// A payload that tells its seq and length apart from any other.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
}

/// (seq, mask, time_ms, payload)
type Owned = (u64, u64, u64, Vec<u8>);

pub(super) fn read(
    reader: &mut dyn StoreReader,
    from: u64,
    until: u64,
    mask: u64,
    max: usize,
) -> (Vec<Owned>, u64) {
    let mut out = Vec::new();
    let next = reader
        .read(from, until, mask, max, &mut |r| {
            out.push((r.seq, r.mask, r.time_ms, r.payload.to_vec()))
        })
        .expect("read");
    (out, next)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// Appends `n` records (mask cycling 1, 2, 3; payload of 100 bytes) and commits.
fn fill(store: &mut LogStore, n: u64) -> u64 {
    let mut last = 0;
    for _ in 0..n {
        let seq = store.next_seq();
        last = store
            .append(1 + seq % 3, seq * 1000, &payload(seq, 100))
            .unwrap();
        assert_eq!(last, seq);
    }
    assert_eq!(store.commit().unwrap(), last);
    last
}

#[test]
fn round_trip_across_segments() {
    let dir = TestDir::new("round-trip");
    let mut store = LogStore::open(config(dir.path(), 4096, 1 << 30)).unwrap();
    assert_eq!(
        (store.first_seq(), store.next_seq(), store.durable_through()),
        (1, 1, 0)
    );
    let last = fill(&mut store, 200);
    assert_eq!(
        (last, store.durable_through(), store.next_seq()),
        (200, 200, 201)
    );
    assert!(segments(dir.path()).len() > 5, "small segments roll");
    let on_disk: u64 = segments(dir.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(store.used_bytes(), on_disk);
    assert_eq!(on_disk, 200 * 132);

    // Sequentially, seven at a time: every record, in order, intact.
    let mut reader = store.reader().unwrap();
    let (mut all, mut from) = (Vec::new(), 1);
    while from <= 200 {
        let (got, next) = read(&mut *reader, from, 200, u64::MAX, 7);
        assert!(!got.is_empty() && got.len() <= 7);
        assert_eq!(next, got.last().unwrap().0 + 1);
        all.extend(got);
        from = next;
    }
    assert_eq!(all.len(), 200);
    for (i, (seq, mask, time_ms, bytes)) in all.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!((*mask, *time_ms), (1 + seq % 3, seq * 1000));
        assert_eq!(*bytes, payload(*seq, 100));
    }

    // From the middle, with a fresh reader and with the used one (going back).
    for reader in [&mut store.reader().unwrap(), &mut reader] {
        let (got, next) = read(&mut **reader, 123, 200, u64::MAX, 3);
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), [123, 124, 125]);
        assert_eq!(next, 126);
    }

    // Mask 1 takes the records whose mask has bit 0 (masks 1 and 3: seqs 3k and 3k+2).
    let (got, next) = read(&mut *reader, 1, 200, 1, 1000);
    assert!(got.iter().all(|r| r.1 & 1 != 0));
    assert_eq!(
        got.len(),
        (1..=200u64).filter(|s| (1 + s % 3) & 1 != 0).count()
    );
    assert_eq!(next, 201);

    // `until` is respected, and the reader goes on from where it stopped.
    let (got, next) = read(&mut *reader, 40, 50, u64::MAX, 1000);
    assert_eq!(
        (got.first().unwrap().0, got.last().unwrap().0, next),
        (40, 50, 51)
    );
    let (got, next) = read(&mut *reader, 51, 51, u64::MAX, 1000);
    assert_eq!((got.len(), next), (1, 52));
    // Nothing to give: from past until, or max 0.
    assert_eq!(read(&mut *reader, 60, 59, u64::MAX, 10), (vec![], 60));
    assert_eq!(read(&mut *reader, 60, 70, u64::MAX, 0), (vec![], 60));
    // Past the end of the log: nothing, and no skipping ahead.
    assert_eq!(read(&mut *reader, 201, 500, u64::MAX, 10), (vec![], 201));
}

#[test]
fn a_reader_follows_the_writer() {
    let dir = TestDir::new("follow");
    let mut store = LogStore::open(config(dir.path(), 1024, 1 << 30)).unwrap();
    let mut reader = store.reader().unwrap();
    assert_eq!(read(&mut *reader, 1, 0, u64::MAX, 10), (vec![], 1));
    let mut from = 1;
    for round in 0..20 {
        let last = fill(&mut store, 3 + round % 4);
        let (got, next) = read(&mut *reader, from, last, u64::MAX, 100);
        assert_eq!(got.len() as u64, last + 1 - from);
        assert_eq!(got.first().unwrap().0, from);
        from = next;
        assert_eq!(from, last + 1);
        // Appended but not committed: a reader told `until = durable_through` does not see it.
        store.append(1, 0, b"pending").unwrap();
        let (got, _) = read(&mut *reader, from, store.durable_through(), u64::MAX, 100);
        assert!(got.is_empty());
        store.commit().unwrap();
        let (got, next) = read(&mut *reader, from, store.durable_through(), u64::MAX, 100);
        assert_eq!(got.len(), 1);
        from = next;
    }
}

/// Found by fuzzing: a read whose `until` reached into an empty last segment (a new store, or
/// one just rolled) re-opened that segment forever. The read runs on its own thread so that
/// the old behaviour fails the test instead of hanging it: it takes microseconds, the bound
/// is 60 s.
#[test]
fn a_read_into_an_empty_segment_returns() {
    let dir = TestDir::new("empty-tail");
    let mut store = LogStore::open(config(dir.path(), 200, 1 << 30)).unwrap();
    let last = fill(&mut store, 3); // 132-byte records: every one starts a segment
    let reader = store.reader().unwrap();
    // Rolls to a new segment, which stays empty until the commit.
    assert_eq!(
        store.append(1, 0, &payload(last + 1, 100)).unwrap(),
        last + 1
    );
    assert_eq!(segments(dir.path()).len() as u64, last + 1);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = reader;
        let fresh = read(&mut *reader, 1, u64::MAX, u64::MAX, 100);
        let _ = tx.send(fresh);
    });
    let (got, next) = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the read returned");
    assert_eq!(got.len() as u64, last);
    assert_eq!(next, last + 1);
}

#[test]
fn reopen_keeps_what_was_committed() {
    let dir = TestDir::new("reopen");
    let cfg = config(dir.path(), 2048, 1 << 30);
    let mut store = LogStore::open(cfg.clone()).unwrap();
    fill(&mut store, 50);
    drop(store);
    let mut store = LogStore::open(cfg.clone()).unwrap();
    let r = store.recovery().clone();
    assert_eq!((r.first_seq, r.next_seq, r.records), (1, 51, 50));
    assert_eq!((r.truncated_bytes, r.corrupt_records), (0, 0));
    // Records but no cursor file: as if the cursors were lost (no endpoint had registered).
    assert!(r.cursors_reset);
    assert_eq!(r.segments, segments(dir.path()).len());
    assert_eq!(store.durable_through(), 50);
    let (got, _) = read(&mut *store.reader().unwrap(), 1, 50, u64::MAX, 1000);
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|r| r.3 == payload(r.0, 100)));

    // Appended, never committed, then dropped: may survive or not; seqs stay consecutive.
    for _ in 0..30 {
        store.append(1, 0, &[7; 100]).unwrap();
    }
    drop(store);
    let mut store = LogStore::open(cfg).unwrap();
    let next = store.next_seq();
    assert!((51..=81).contains(&next));
    let (got, last) = read(&mut *store.reader().unwrap(), 1, next - 1, u64::MAX, 1000);
    assert_eq!(got.len() as u64, next - 1);
    assert_eq!(last, next);
    assert!(got.iter().enumerate().all(|(i, r)| r.0 == i as u64 + 1));
    assert_eq!(store.append(1, 0, b"x").unwrap(), next);
}

/// Writes ten records in one segment, commits, damages the file with `damage`, reopens.
fn damaged(damage: impl FnOnce(&Path, &[u64])) -> (TestDir, LogStore) {
    let dir = TestDir::new("damage");
    let cfg = config(dir.path(), 1 << 20, 1 << 30);
    let mut store = LogStore::open(cfg.clone()).unwrap();
    // Records of 32 + 10·seq bytes: record k starts at offsets[k - 1].
    let mut offsets = vec![0];
    for seq in 1..=10u64 {
        store
            .append(1, seq, &payload(seq, 10 * seq as usize))
            .unwrap();
        offsets.push(offsets.last().unwrap() + 32 + 10 * seq);
    }
    store.commit().unwrap();
    drop(store);
    damage(&segments(dir.path())[0], &offsets);
    let store = LogStore::open(cfg).unwrap();
    (dir, store)
}

fn flip(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// The damaged ranges a read skipped, as `(first lost, next valid, kind)`.
fn skipped(reader: &dyn StoreReader) -> Vec<(u64, u64, DamageKind)> {
    reader
        .damaged()
        .iter()
        .map(|d| (d.after_seq + 1, d.next_seq, d.kind))
        .collect()
}

/// The quarantine's `.bin` files, by name.
fn quarantine_bins(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir.join("quarantine")) else {
        return Vec::new();
    };
    let mut bins: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    bins.sort();
    bins
}

#[test]
fn a_torn_tail_is_cut() {
    let (dir, mut store) = damaged(|path, offsets| set_len(path, offsets[10] - 5));
    let r = store.recovery().clone();
    assert_eq!((r.truncated_bytes, r.corrupt_records), (132 - 5, 1));
    assert_eq!(r.next_seq, 10);
    assert_eq!(r.damaged.len(), 1, "{r:?}");
    let torn = &r.damaged[0];
    assert_eq!(torn.kind, DamageKind::TornTail);
    assert_eq!((torn.after_seq, torn.next_seq, torn.lost), (9, 10, 0));
    assert_eq!(
        r.lost_records, 0,
        "a torn tail is not counted as lost records"
    );
    let nine: u64 = (1..=9).map(|s| 32 + 10 * s).sum();
    assert_eq!((torn.offset, torn.bytes), (nine, 132 - 5));
    // Cut, but copied aside first.
    let copy = torn.quarantined.as_ref().expect("quarantined");
    assert_eq!(fs::metadata(copy).unwrap().len(), 132 - 5);
    assert_eq!(quarantine_bins(dir.path()), std::slice::from_ref(copy));
    assert_eq!(fs::metadata(&segments(dir.path())[0]).unwrap().len(), nine);
    assert_eq!(store.append(1, 0, b"again").unwrap(), 10);
    store.commit().unwrap();
    let (got, _) = read(&mut *store.reader().unwrap(), 1, 10, u64::MAX, 100);
    assert_eq!(got.len(), 10);
    assert_eq!(got[9].3, b"again");

    // A zero-filled tail (a file extended, its data never written) is cut the same way.
    let (_dir, store) = damaged(|path, offsets| set_len(path, offsets[10] + 4096));
    let r = store.recovery();
    assert_eq!(
        (r.truncated_bytes, r.corrupt_records, r.next_seq),
        (4096, 1, 11)
    );
    // So is a damaged last record: nothing valid follows it.
    let (_dir, store) = damaged(|path, offsets| flip(path, offsets[10] - 1));
    let r = store.recovery();
    assert_eq!(
        (r.truncated_bytes, r.corrupt_records, r.next_seq),
        (132, 1, 10)
    );
}

/// Issue 10, item 1: a flipped byte mid-segment loses its record, not the records after it.
#[test]
fn a_flipped_byte_mid_segment_loses_only_its_record() {
    let rec5: u64 = 32 + 50;
    // In the mask, the length (pointing far past the end of the file), and the payload.
    for at in [20, 1, 40] {
        let (dir, mut store) = damaged(|path, offsets| flip(path, offsets[4] + at));
        let r = store.recovery().clone();
        assert_eq!(
            (r.truncated_bytes, r.corrupt_records),
            (0, 0),
            "byte {at}: {r:?}"
        );
        assert_eq!((r.next_seq, r.lost_records), (11, 1), "byte {at}: {r:?}");
        assert_eq!(r.damaged.len(), 1, "{r:?}");
        let d = &r.damaged[0];
        let at5: u64 = (1..=4).map(|s| 32 + 10 * s).sum();
        assert_eq!(d.kind, DamageKind::Corrupt);
        assert_eq!((d.segment, d.offset, d.bytes), (1, at5, rec5));
        assert_eq!((d.after_seq, d.next_seq, d.lost), (4, 6, 1));
        assert_eq!(d.lost_seqs(), 5..6);
        // Nothing was cut; the damaged bytes were copied aside as they are.
        let seg = &segments(dir.path())[0];
        let bytes = fs::read(seg).unwrap();
        assert_eq!(
            bytes.len() as u64,
            (1..=10).map(|s| 32 + 10 * s).sum::<u64>()
        );
        let copy = d.quarantined.as_ref().expect("quarantined");
        assert_eq!(
            fs::read(copy).unwrap(),
            &bytes[at5 as usize..(at5 + rec5) as usize]
        );
        // Every other record is read, and the read says what it skipped.
        let mut reader = store.reader().unwrap();
        let (got, next) = read(&mut *reader, 1, 10, u64::MAX, 100);
        assert_eq!(
            got.iter().map(|r| r.0).collect::<Vec<_>>(),
            [1, 2, 3, 4, 6, 7, 8, 9, 10]
        );
        assert!(got.iter().all(|r| r.3 == payload(r.0, 10 * r.0 as usize)));
        assert_eq!(next, 11);
        assert_eq!(skipped(&*reader), [(5, 6, DamageKind::Corrupt)]);
        // Reading up to the damage stops before it; reading past it from there reports it.
        let (got, next) = read(&mut *reader, 1, 4, u64::MAX, 100);
        assert_eq!((got.len(), next), (4, 5));
        assert!(skipped(&*reader).is_empty());
        let (got, next) = read(&mut *reader, 5, 10, u64::MAX, 2);
        assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), [6, 7]);
        assert_eq!(next, 8);
        assert_eq!(skipped(&*reader), [(5, 6, DamageKind::Corrupt)]);
        // Appends go on after the last record, and the damage stays where it is.
        assert_eq!(store.append(1, 0, b"more").unwrap(), 11);
        store.commit().unwrap();
        drop(reader);
        drop(store);
        let store = LogStore::open(config(dir.path(), 1 << 20, 1 << 30)).unwrap();
        let r = store.recovery();
        assert_eq!((r.next_seq, r.damaged.len()), (12, 1));
        assert_eq!(r.damaged[0].quarantined.as_ref(), Some(copy));
        assert_eq!(quarantine_bins(dir.path()).len(), 1, "kept once");
    }
}

/// Issue 10, item 2: damage in an older segment (which opening does not scan) is skipped by
/// readers, copied aside once, and reported; the records after it are read.
#[test]
fn a_reader_skips_damage_in_an_older_segment() {
    let dir = TestDir::new("old-corrupt");
    let cfg = config(dir.path(), 1024, 1 << 30);
    let mut store = LogStore::open(cfg.clone()).unwrap();
    // Seven records of 132 bytes a segment: segments start at 1, 8, 15, 22, 29.
    fill(&mut store, 30);
    drop(store);
    let segs = segments(dir.path());
    flip(&segs[0], 132 + 40); // record 2's payload
    flip(&segs[0], 6 * 132 + 2); // record 7's length: the last in its segment
    flip(&segs[1], 10); // record 8's seq: the first in its segment
    let store = LogStore::open(cfg.clone()).unwrap();
    assert!(
        store.recovery().damaged.is_empty(),
        "older segments are not scanned at open"
    );
    let mut reader = store.reader().unwrap();
    let (got, next) = read(&mut *reader, 1, 30, u64::MAX, 100);
    let seqs: Vec<u64> = got.iter().map(|r| r.0).collect();
    let want: Vec<u64> = (1..=30).filter(|s| ![2, 7, 8].contains(s)).collect();
    assert_eq!(seqs, want);
    assert_eq!(next, 31);
    assert_eq!(
        skipped(&*reader),
        [
            (2, 3, DamageKind::Corrupt),
            (7, 8, DamageKind::Corrupt),
            (8, 9, DamageKind::Corrupt)
        ]
    );
    let d = reader.damaged();
    assert_eq!((d[1].segment, d[1].offset, d[1].bytes), (1, 6 * 132, 132));
    assert_eq!((d[2].segment, d[2].offset, d[2].bytes), (8, 0, 132));
    assert!(d.iter().all(|d| d.quarantined.is_some()), "{d:?}");
    assert_eq!(quarantine_bins(dir.path()).len(), 3);
    // Another reader passing the same damage copies nothing again.
    let mut again = store.reader().unwrap();
    let (got, _) = read(&mut *again, 3, 30, u64::MAX, 100);
    assert_eq!(got.first().unwrap().0, 3);
    assert_eq!(
        skipped(&*again).len(),
        3,
        "passed on the way to 3, then 7 and 8"
    );
    assert_eq!(quarantine_bins(dir.path()).len(), 3);
    assert_eq!(crate::store::quarantined(dir.path()).unwrap(), d);
    // Reading past it works (another segment), and reports nothing.
    let (got, _) = read(&mut *reader, 20, 30, u64::MAX, 100);
    assert_eq!(got.len(), 11);
    assert!(skipped(&*reader).is_empty());
}

/// A hole between segments (a segment file lost) and an overlap (an older segment running
/// past the next one's name, so its last records are stale copies) are damage: reads skip and
/// report them and go on to the end of the log, never stop silently and never hand out a
/// second copy of a seq (found by fuzzing, issue 9; skipped rather than failed, issue 10).
#[test]
fn holes_and_overlaps_between_segments_are_skipped_and_reported() {
    for damage in ["hole", "overlap"] {
        let dir = TestDir::new("hole");
        let cfg = config(dir.path(), 300, 1 << 30);
        let mut store = LogStore::open(cfg.clone()).unwrap();
        fill(&mut store, 9); // two 132-byte records per segment: 1, 3, 5, 7, 9
        drop(store);
        let segs = segments(dir.path());
        match damage {
            "hole" => fs::remove_file(&segs[2]).unwrap(),
            // Segments 1 and 3 replaced by one starting at 2 and running into segment 5.
            _ => {
                fs::remove_file(&segs[1]).unwrap();
                let to = segs[1].with_file_name("00000000000000000002.seg");
                fs::rename(&segs[0], &to).unwrap();
                let mut bytes = Vec::new();
                for seq in 2..=6 {
                    super::segment::encode(&mut bytes, seq, 1, 0, b"old");
                }
                fs::write(&to, bytes).unwrap();
            }
        }
        let store = LogStore::open(cfg).unwrap();
        let mut reader = store.reader().unwrap();
        let (mut seqs, mut damaged) = (Vec::new(), Vec::new());
        let mut from = store.first_seq();
        while from <= 9 {
            let next = reader
                .read(from, 9, u64::MAX, 100, &mut |r| seqs.push(r.seq))
                .unwrap();
            damaged.extend(reader.damaged().iter().cloned());
            assert!(next > from, "{damage}: reads stopped at {next}");
            from = next;
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{damage}: {seqs:?}");
        assert!(!damaged.is_empty(), "{damage}: not reported");
        let expected: &[u64] = match damage {
            "hole" => &[1, 2, 3, 4, 7, 8, 9],
            _ => &[2, 3, 4, 5, 6, 7, 8, 9],
        };
        assert_eq!(seqs, expected, "{damage}: {damaged:?}");
    }
}

#[test]
fn a_cut_or_missing_older_segment_is_skipped_and_reported() {
    let dir = TestDir::new("old-damaged");
    let cfg = config(dir.path(), 1024, 1 << 30);
    let mut store = LogStore::open(cfg.clone()).unwrap();
    fill(&mut store, 30);
    drop(store);
    let segs = segments(dir.path());
    set_len(&segs[0], 0);
    fs::remove_file(&segs[2]).unwrap();
    set_len(&segs[3], 132 * 3 + 7); // 22..=24, then part of 25
    let store = LogStore::open(cfg).unwrap();
    let mut reader = store.reader().unwrap();
    let (got, next) = read(&mut *reader, 1, 30, u64::MAX, 100);
    let seqs: Vec<u64> = got.iter().map(|r| r.0).collect();
    let want: Vec<u64> = (8..=14).chain(22..=24).chain(29..=30).collect();
    assert_eq!(seqs, want);
    assert_eq!(next, 31);
    assert_eq!(
        skipped(&*reader),
        [
            (1, 8, DamageKind::Corrupt),
            (15, 22, DamageKind::Corrupt),
            (25, 29, DamageKind::Corrupt)
        ]
    );
    let d = reader.damaged();
    assert_eq!((d[0].offset, d[0].bytes, d[0].lost), (0, 0, 7));
    assert_eq!((d[2].offset, d[2].bytes, d[2].lost), (132 * 3, 7, 4));
}

/// Issue 10, item 3: a read-only open of a damaged directory changes no byte, takes no lock,
/// and works while a writer holds the directory.
#[test]
fn a_read_only_open_changes_nothing_and_takes_no_lock() {
    let dir = TestDir::new("read-only");
    let cfg = config(dir.path(), 1 << 20, 1 << 30);
    let mut store = LogStore::open(cfg.clone()).unwrap();
    store.endpoint("a").unwrap();
    fill(&mut store, 20);
    store.save_cursors(&[(0, 3)]).unwrap();
    drop(store);
    let seg = &segments(dir.path())[0];
    flip(seg, 5 * 132 + 50); // record 6
    let mut bytes = fs::read(seg).unwrap();
    bytes.extend_from_slice(&[0x40, 0, 0, 0, 1, 2, 3]); // a torn tail
    fs::write(seg, &bytes).unwrap();
    fs::remove_file(dir.path().join("LOCK")).unwrap();
    fs::write(dir.path().join("dead-letters.ndjson"), b"{\"torn").unwrap();
    let snapshot = || {
        let mut all = Vec::new();
        for d in [dir.path().to_owned(), dir.path().join("log")] {
            let mut names: Vec<_> = fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for p in names {
                let b = if p.is_dir() {
                    Vec::new()
                } else {
                    fs::read(&p).unwrap()
                };
                all.push((p, b));
            }
        }
        all
    };
    let before = snapshot();

    let mut ro = LogStore::open_read_only(dir.path()).unwrap();
    let r = ro.recovery().clone();
    assert!(r.read_only);
    assert_eq!((r.next_seq, r.lost_records, r.truncated_bytes), (21, 1, 7));
    let kinds: Vec<_> = r.damaged.iter().map(|d| (d.kind, d.lost)).collect();
    assert_eq!(kinds, [(DamageKind::Corrupt, 1), (DamageKind::TornTail, 0)]);
    assert!(
        r.damaged.iter().all(|d| d.quarantined.is_none()),
        "nothing copied"
    );
    assert_eq!(r.dead_letters_skipped, 1);
    assert_eq!(ro.endpoints()[0].1.acked, 3);
    let mut reader = ro.reader().unwrap();
    let (got, next) = read(&mut *reader, 1, 20, u64::MAX, 100);
    assert_eq!((got.len(), next), (19, 21));
    assert_eq!(skipped(&*reader), [(6, 7, DamageKind::Corrupt)]);
    // Every write fails, and changes nothing.
    for e in [
        ro.append(1, 0, b"x").unwrap_err(),
        ro.commit().unwrap_err(),
        ro.endpoint("new").unwrap_err(),
        ro.save_cursors(&[(0, 9)]).unwrap_err(),
        ro.dead_letters()
            .take(&DeadLetterFilter::all())
            .unwrap_err(),
    ] {
        assert!(matches!(e, Error::Storage { .. }), "{e}");
    }
    assert_eq!(
        ro.endpoint("a").unwrap().acked,
        3,
        "a known endpoint is there"
    );
    assert!(
        ro.dead_letters()
            .list(&DeadLetterFilter::all())
            .unwrap()
            .is_empty()
    );
    drop(reader);
    drop(ro);
    assert_eq!(snapshot(), before, "a read-only open changed the directory");
    assert!(!dir.path().join("LOCK").exists() && !dir.path().join("quarantine").exists());

    // While a writer holds the directory (it repaired it: the damage is in the quarantine).
    let mut writer = LogStore::open(cfg).unwrap();
    assert_eq!(writer.recovery().truncated_bytes, 7);
    let ro = LogStore::open_read_only(dir.path()).unwrap();
    let r = ro.recovery();
    assert_eq!((r.next_seq, r.truncated_bytes, r.damaged.len()), (21, 0, 1));
    assert!(
        r.damaged[0].quarantined.is_some(),
        "found where the writer put it"
    );
    writer.append(1, 0, b"seen").unwrap();
    writer.commit().unwrap();
    let (got, _) = read(&mut *ro.reader().unwrap(), 21, 21, u64::MAX, 10);
    assert_eq!(got[0].3, b"seen", "it reads what the writer commits");

    // An empty directory stays empty; a missing one is an error.
    let empty = TestDir::new("read-only-empty");
    let ro = LogStore::open_read_only(empty.path()).unwrap();
    assert_eq!((ro.next_seq(), ro.recovery().records), (1, 0));
    let (got, _) = read(&mut *ro.reader().unwrap(), 1, 10, u64::MAX, 10);
    assert!(got.is_empty());
    assert!(fs::read_dir(empty.path()).unwrap().next().is_none());
    let e = LogStore::open_read_only(empty.path().join("nope")).unwrap_err();
    assert!(matches!(e, Error::Storage { .. }), "{e}");
}

#[test]
fn quota_refuses_and_cursors_make_room() {
    let dir = TestDir::new("quota");
    let mut store = LogStore::open(config(dir.path(), 1024, 4096)).unwrap();
    let a = store.endpoint("a").unwrap();
    let mut n = 0;
    let err = loop {
        match store.append(1, 0, &[1; 100]) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(n, 4096 / 132);
    let used = store.used_bytes();
    assert!(
        matches!(err, Error::Quota { quota: 4096, used: u } if u == used),
        "{err}"
    );
    assert_eq!(
        store.next_seq(),
        n + 1,
        "nothing appended by the failing call"
    );
    store.commit().unwrap();
    let on_disk: u64 = segments(dir.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, used);
    // Delivering (acknowledging) frees the segments before the active one.
    store.save_cursors(&[(a.slot, store.next_seq())]).unwrap();
    assert_eq!(store.first_seq(), 29);
    assert_eq!(store.used_bytes(), 3 * 132);
    store.append(1, 0, &[1; 100]).unwrap();
}

#[test]
fn oversized_payloads_are_refused() {
    let dir = TestDir::new("oversize");
    let mut store = LogStore::open(config(dir.path(), 1 << 20, u64::MAX)).unwrap();
    let e = store.append(1, 0, &vec![0u8; 64 << 20]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Config {
                field: "payload",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(store.next_seq(), 1);
}

#[test]
fn cursors_survive_reopen_and_never_move_back() {
    let dir = TestDir::new("cursors");
    let cfg = config(dir.path(), 1024, 1 << 30);
    let mut store = LogStore::open(cfg.clone()).unwrap();
    fill(&mut store, 5);
    let a = store.endpoint("a").unwrap();
    assert_eq!((a.slot, a.since, a.acked), (0, 6, 6));
    assert_eq!(
        store.endpoint("a").unwrap(),
        a,
        "registering twice returns the same"
    );
    fill(&mut store, 10);
    let b = store.endpoint("b").unwrap();
    assert_eq!((b.slot, b.since, b.acked), (1, 16, 16));
    fill(&mut store, 10);
    store.save_cursors(&[(0, 12), (1, 20), (9, 3)]).unwrap();
    store.save_cursors(&[(0, 8)]).unwrap(); // back: ignored
    store.save_cursors(&[(1, 1000)]).unwrap(); // past the log: clamped
    let acked = |s: &LogStore| s.endpoints().iter().map(|e| e.1.acked).collect::<Vec<_>>();
    assert_eq!(acked(&store), [12, 26]);
    drop(store);
    let store = LogStore::open(cfg).unwrap();
    assert!(!store.recovery().cursors_reset);
    assert_eq!(acked(&store), [12, 26]);
    let names: Vec<_> = store.endpoints().into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn a_lost_cursor_file_resets_to_since() {
    for damage in ["delete", "garbage", "wrong version"] {
        let dir = TestDir::new("cursor-loss");
        let cfg = config(dir.path(), 1 << 20, 1 << 30);
        let mut store = LogStore::open(cfg.clone()).unwrap();
        fill(&mut store, 5);
        store.endpoint("a").unwrap();
        fill(&mut store, 5);
        store.save_cursors(&[(0, 9)]).unwrap();
        drop(store);
        let cursors = dir.path().join("cursors.json");
        match damage {
            "delete" => fs::remove_file(&cursors).unwrap(),
            "garbage" => fs::write(&cursors, b"{\"version\":1,\"endp").unwrap(),
            _ => fs::write(&cursors, br#"{"version":2,"endpoints":{}}"#).unwrap(),
        }
        let store = LogStore::open(cfg.clone()).unwrap();
        assert!(store.recovery().cursors_reset, "{damage}");
        let a = store.endpoints()[0].1;
        assert_eq!((a.since, a.acked), (6, 6), "{damage}: redeliver from since");
        drop(store);
        // The reset was written down: the next open finds a good cursor file.
        let store = LogStore::open(cfg).unwrap();
        assert!(!store.recovery().cursors_reset);
    }
}

/// Found by the store_meta fuzz check: a cursor or slot file naming a seq at or past 2^63
/// started an empty log there. At u64::MAX the first append overflowed; at 2^63 the segment
/// got a name the store does not list, so the next open left it behind and started another.
#[test]
fn a_seq_past_the_range_makes_a_side_file_lost() {
    for (file, seq) in [
        ("cursors.json", u64::MAX),
        ("cursors.json", 1 << 63),
        ("slots.json", 1 << 63),
    ] {
        let dir = TestDir::new("seq-range");
        let text = match file {
            "cursors.json" => format!(
                r#"{{"version":1,"endpoints":{{"a":{{"slot":0,"since":1,"acked":{seq}}}}}}}"#
            ),
            _ => format!(r#"{{"version":1,"endpoints":{{"a":{{"slot":0,"since":{seq}}}}}}}"#),
        };
        fs::write(dir.path().join(file), text).unwrap();
        let cfg = config(dir.path(), 1 << 20, 1 << 30);
        let mut store = LogStore::open(cfg.clone()).unwrap();
        assert_eq!(store.next_seq(), 1, "{file} {seq}: the file counts as lost");
        let appended = store.append(1, 0, b"x").unwrap();
        store.commit().unwrap();
        drop(store);
        let store = LogStore::open(cfg).unwrap();
        assert_eq!(store.first_seq(), appended, "{file} {seq}");
        assert_eq!(store.next_seq(), appended + 1, "{file} {seq}");
        assert_eq!(segments(dir.path()).len(), 1, "{file} {seq}");
    }
}

#[test]
fn a_lost_slot_file_is_rebuilt_from_the_cursors() {
    let dir = TestDir::new("slot-loss");
    let cfg = config(dir.path(), 1024, 1 << 30);
    let mut store = LogStore::open(cfg.clone()).unwrap();
    store.endpoint("a").unwrap();
    store.endpoint("b").unwrap();
    fill(&mut store, 10);
    store.save_cursors(&[(0, 4), (1, 7)]).unwrap();
    let before = store.endpoints();
    drop(store);
    fs::remove_file(dir.path().join("slots.json")).unwrap();
    let mut store = LogStore::open(cfg.clone()).unwrap();
    assert!(!store.recovery().cursors_reset);
    assert!(store.recovery().slots_rebuilt && !store.recovery().slots_lost);
    assert_eq!(store.endpoints(), before);
    assert!(dir.path().join("slots.json").exists(), "rewritten");
    assert_eq!(
        store.endpoint("c").unwrap().slot,
        2,
        "a new endpoint takes a free slot"
    );
}

/// Issue 10, item 8: with both the slot and the cursor files lost, the records in the log
/// belong to no known endpoint; endpoints that register then start at the oldest record
/// (redelivering), not at the end of the log (which would strand every record).
#[test]
fn lost_slot_and_cursor_files_start_new_registrations_at_the_oldest_record() {
    let dir = TestDir::new("meta-loss");
    let cfg = config(dir.path(), 1024, 1 << 30);
    let mut store = LogStore::open(cfg.clone()).unwrap();
    store.endpoint("a").unwrap();
    store.endpoint("b").unwrap();
    fill(&mut store, 20);
    store.save_cursors(&[(0, 9), (1, 12)]).unwrap();
    let first = store.first_seq();
    drop(store);
    fs::remove_file(dir.path().join("slots.json")).unwrap();
    fs::remove_file(dir.path().join("cursors.json")).unwrap();
    let mut store = LogStore::open(cfg.clone()).unwrap();
    let r = store.recovery().clone();
    assert!(r.slots_lost && r.cursors_reset && !r.slots_rebuilt, "{r:?}");
    assert!(store.endpoints().is_empty());
    let a = store.endpoint("a").unwrap();
    let b = store.endpoint("b").unwrap();
    assert_eq!((a.slot, a.since, a.acked), (0, first, first));
    assert_eq!((b.slot, b.since, b.acked), (1, first, first));
    // Slot 0's records are a's again.
    let (got, _) = read(&mut *store.reader().unwrap(), a.acked, 20, 1 << a.slot, 100);
    assert_eq!(
        got.len(),
        (first..=20).filter(|s| (1 + s % 3) & 1 != 0).count()
    );
    drop(store);
    let store = LogStore::open(cfg).unwrap();
    assert!(!store.recovery().slots_lost, "written down");
    assert_eq!(store.endpoints()[0].1.since, first);
}

#[test]
fn cursors_are_clamped_to_the_log() {
    let dir = TestDir::new("clamp");
    let cfg = config(dir.path(), 1 << 20, 1 << 30);
    let mut store = LogStore::open(cfg.clone()).unwrap();
    store.endpoint("a").unwrap();
    fill(&mut store, 10);
    store.save_cursors(&[(0, 11)]).unwrap();
    drop(store);
    // The last records are lost (a disk that lied about a sync): acked is pulled back.
    set_len(&segments(dir.path())[0], 132 * 6);
    let store = LogStore::open(cfg.clone()).unwrap();
    assert_eq!(store.next_seq(), 7);
    assert_eq!(store.endpoints()[0].1.acked, 7);
    // ...and it says so (issue 10, item 8).
    let repair = CursorRepair {
        endpoint: "a".into(),
        saved: 11,
        now: 7,
    };
    assert_eq!(store.recovery().cursors_clamped, [repair]);
    drop(store);
    let store = LogStore::open(cfg).unwrap();
    assert!(store.recovery().cursors_clamped.is_empty(), "written back");
}

#[test]
fn an_emptied_log_does_not_reuse_seqs() {
    let dir = TestDir::new("emptied");
    let cfg = config(dir.path(), 1024, 1 << 30);
    let mut store = LogStore::open(cfg.clone()).unwrap();
    store.endpoint("a").unwrap();
    fill(&mut store, 20);
    store.save_cursors(&[(0, 21)]).unwrap();
    drop(store);
    for seg in segments(dir.path()) {
        fs::remove_file(seg).unwrap();
    }
    let store = LogStore::open(cfg).unwrap();
    assert_eq!((store.first_seq(), store.next_seq()), (21, 21));
}

#[test]
fn segments_go_once_every_endpoint_passed_them() {
    let dir = TestDir::new("remove");
    let cfg = config(dir.path(), 1024, 1 << 30);
    let mut store = LogStore::open(cfg.clone()).unwrap();
    // Seven records (132 bytes) fill a 1 KiB segment: segments start at 1, 8, 15, 22...
    fill(&mut store, 20);
    // No endpoint: nothing is removed.
    store.save_cursors(&[]).unwrap();
    assert_eq!(store.first_seq(), 1);
    // New endpoints start at 21: what is before it is for no one.
    let a = store.endpoint("a").unwrap().slot;
    let b = store.endpoint("b").unwrap().slot;
    store.save_cursors(&[]).unwrap();
    assert_eq!(store.first_seq(), 15, "15..=21 holds 21");
    fill(&mut store, 40);
    assert_eq!(segments(dir.path()).len(), 7);
    store.save_cursors(&[(a, 50)]).unwrap();
    assert_eq!(store.first_seq(), 15, "b has not passed anything");
    store.save_cursors(&[(b, 28)]).unwrap();
    assert_eq!(
        store.first_seq(),
        22,
        "15..=21 passed by both; 22..=28 not by b"
    );
    store.save_cursors(&[(b, 29)]).unwrap();
    assert_eq!(store.first_seq(), 29);
    assert_eq!(segments(dir.path()).len(), 5);
    // A reader asked for what is gone starts at the oldest kept.
    let (got, _) = read(&mut *store.reader().unwrap(), 3, 40, u64::MAX, 100);
    assert_eq!(got.first().unwrap().0, 29);
    // The active segment stays, even when everything is passed.
    store.save_cursors(&[(a, 61), (b, 61)]).unwrap();
    assert_eq!(segments(dir.path()).len(), 1);
    assert_eq!((store.first_seq(), store.next_seq()), (57, 61));
    drop(store);
    let store = LogStore::open(cfg).unwrap();
    assert_eq!((store.first_seq(), store.next_seq()), (57, 61));
}

#[test]
fn sixty_four_endpoints_fill_the_slots() {
    let dir = TestDir::new("full");
    let mut store = LogStore::open(config(dir.path(), 1024, 1 << 30)).unwrap();
    for i in 0..64 {
        assert_eq!(store.endpoint(&format!("e{i}")).unwrap().slot, i as u8);
    }
    let e = store.endpoint("one-more").unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooManyEndpoints {
                limit: 64,
                durable: true
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("too many durable endpoints"), "{e}");
}

#[test]
fn one_store_per_directory() {
    let dir = TestDir::new("lock");
    let cfg = config(dir.path(), 1024, 1 << 30);
    let store = LogStore::open(cfg.clone()).unwrap();
    let e = LogStore::open(cfg.clone()).unwrap_err();
    assert!(matches!(e, Error::Storage { op: "lock", .. }), "{e}");
    drop(store);
    LogStore::open(cfg).unwrap();
}

#[test]
fn leftover_temp_files_are_swept() {
    let dir = TestDir::new("tmp");
    let cfg = config(dir.path(), 1024, 1 << 30);
    drop(LogStore::open(cfg.clone()).unwrap());
    fs::write(dir.path().join("cursors.json.tmp"), b"half").unwrap();
    fs::write(dir.path().join("log").join("junk.tmp"), b"half").unwrap();
    fs::write(dir.path().join("log").join("README"), b"not a segment").unwrap();
    let store = LogStore::open(cfg).unwrap();
    assert!(!dir.path().join("cursors.json.tmp").exists());
    assert!(!dir.path().join("log").join("junk.tmp").exists());
    assert_eq!(store.recovery().segments, 1);
}

#[test]
fn dead_letters_are_kept_listed_and_taken() {
    let dir = TestDir::new("dlq");
    let cfg = config(dir.path(), 1024, 1 << 30);
    let store = LogStore::open(cfg.clone()).unwrap();
    assert!(
        store
            .dead_letters()
            .list(&DeadLetterFilter::all())
            .unwrap()
            .is_empty()
    );
    let letters: Vec<_> = (1..=6)
        .map(|seq| letter(if seq <= 3 { "a" } else { "b" }, seq, 100 * seq))
        .collect();
    store.dead_letters().append(&letters[..4]).unwrap();
    store.dead_letters().append(&letters[4..]).unwrap();
    let seqs = |v: Vec<DeadLetter>| v.iter().map(|d| d.seq).collect::<Vec<_>>();
    let all = store.dead_letters().list(&DeadLetterFilter::all()).unwrap();
    assert_eq!(all[3].event.id(), "e4");
    assert_eq!(all[3].status, Some(400));
    assert_eq!(seqs(all), [1, 2, 3, 4, 5, 6]);

    let mut by_endpoint = DeadLetterFilter::all();
    by_endpoint.endpoint = Some("b".into());
    assert_eq!(
        seqs(store.dead_letters().list(&by_endpoint).unwrap()),
        [4, 5, 6]
    );
    let mut by_seq = DeadLetterFilter::all();
    by_seq.seqs = Some((2, 4));
    assert_eq!(seqs(store.dead_letters().list(&by_seq).unwrap()), [2, 3, 4]);
    let mut by_time = DeadLetterFilter::all();
    by_time.failed_ms = Some((500, 10_000));
    assert_eq!(seqs(store.dead_letters().list(&by_time).unwrap()), [5, 6]);
    by_time.endpoint = Some("a".into());
    assert!(store.dead_letters().list(&by_time).unwrap().is_empty());

    assert_eq!(seqs(store.dead_letters().take(&by_seq).unwrap()), [2, 3, 4]);
    assert_eq!(
        seqs(store.dead_letters().list(&DeadLetterFilter::all()).unwrap()),
        [1, 5, 6]
    );
    assert!(store.dead_letters().take(&by_seq).unwrap().is_empty());
    drop(store);

    // A torn last line: skipped (and cut) at open; appends go on cleanly.
    let mut files: Vec<PathBuf> = fs::read_dir(dir.path().join("dead-letters"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let file = files.pop().expect("a dead-letter segment");
    let mut bytes = fs::read(&file).unwrap();
    bytes.extend_from_slice(br#"{"endpoint":"a","seq":9,"publ"#);
    fs::write(&file, &bytes).unwrap();
    let store = LogStore::open(cfg.clone()).unwrap();
    assert_eq!(store.recovery().dead_letters_skipped, 1);
    store.dead_letters().append(&[letter("a", 7, 1)]).unwrap();
    let all = store.dead_letters().list(&DeadLetterFilter::all()).unwrap();
    assert_eq!(seqs(all), [1, 5, 6, 7]);
    drop(store);
    let store = LogStore::open(cfg).unwrap();
    assert_eq!(store.recovery().dead_letters_skipped, 0);
}
