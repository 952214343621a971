//! Segment recovery: what `LogStore::open` makes of the segment files it finds, and what its
//! readers then hand out (docs/durable.md, "On disk").
//!
//! Two ways in. [`check_raw`] writes the fuzzer's bytes as the last segment (or as an older
//! one) beside well-formed ones. [`check_structured`] builds a whole log of valid records from
//! the input and then damages it (flipped bytes, cuts, inserted or overwritten runs, a zeroed
//! tail, a renamed segment), which gets much deeper than raw bytes, where nearly every record
//! fails its checksum.
//!
//! Invariants: opening never panics; damage confined to the last segment never stops the
//! store from opening (the tail is cut); every record a reader hands out is in a segment file
//! byte for byte with a checksum that matches; seqs come out strictly increasing and below
//! `next_seq`; reading reaches `next_seq` or fails, never stops short silently; an undamaged log reads back exactly as written; an append after the repair is
//! durable, and a second open finds nothing to repair.

use std::collections::BTreeMap;
use std::fs;

use arbitrary::Unstructured;
use hookwire::Error;
use hookwire::store::{LogStore, Store, StoreConfig};

use crate::scratch::Scratch;

/// One record as the checks build and read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub seq: u64,
    pub mask: u64,
    pub time_ms: u64,
    pub payload: Vec<u8>,
}

impl Rec {
    /// The record's bytes on disk, written from the format's description (not the store's
    /// code): `len u32 | crc32 u32 | seq u64 | mask u64 | time_ms u64 | payload`, the CRC over
    /// everything but itself.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let len = (self.payload.len() as u32).to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&len);
        crc.update(&self.seq.to_le_bytes());
        crc.update(&self.mask.to_le_bytes());
        crc.update(&self.time_ms.to_le_bytes());
        crc.update(&self.payload);
        out.extend_from_slice(&len);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.mask.to_le_bytes());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out.extend_from_slice(&self.payload);
    }
}

/// `first_seq` as a segment file name.
fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

fn encode_all(recs: &[Rec]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in recs {
        r.encode(&mut out);
    }
    out
}

fn records(first_seq: u64, n: u64, tag: u8) -> Vec<Rec> {
    (0..n)
        .map(|i| Rec {
            seq: first_seq + i,
            mask: 1 << (i % 3),
            time_ms: 1_700_000_000_000 + i,
            payload: vec![tag; i as usize],
        })
        .collect()
}

/// What a check knows about the files it wrote.
pub struct Expect {
    /// Only the last segment may be damaged: the store must open and reach its end.
    pub older_intact: bool,
    /// Records that must read back exactly (in order, mask 0 left out).
    pub exact: Option<Vec<Rec>>,
}

/// Input: a layout byte, then one segment's bytes.
/// - 0: the bytes are the only segment, `1.seg`.
/// - 1: a valid `1.seg` of three records, then the bytes as the last segment, `4.seg`.
/// - 2: the bytes as an older segment, `1.seg`, then a valid `1000.seg`.
pub fn check_raw(data: &[u8]) {
    let Some((&layout, bytes)) = data.split_first() else {
        return;
    };
    let mut files = BTreeMap::new();
    let older_intact = match layout % 3 {
        0 => {
            files.insert(1, bytes.to_vec());
            true
        }
        1 => {
            files.insert(1, encode_all(&records(1, 3, b'a')));
            files.insert(4, bytes.to_vec());
            true
        }
        _ => {
            files.insert(1, bytes.to_vec());
            files.insert(1000, encode_all(&records(1000, 3, b'z')));
            false
        }
    };
    open_and_check(
        &files,
        &Expect {
            older_intact,
            exact: None,
        },
    );
}

/// Input: drives a plan of segments of valid records, then up to four kinds of damage.
pub fn check_structured(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((files, expect)) = plan(&mut u) else {
        return;
    };
    open_and_check(&files, &expect);
}

fn plan(u: &mut Unstructured<'_>) -> arbitrary::Result<(BTreeMap<u64, Vec<u8>>, Expect)> {
    let segments = u.int_in_range(1..=3)?;
    let mut seq = u.int_in_range(1..=3)?;
    let mut plan: Vec<(u64, Vec<Rec>)> = Vec::new();
    for _ in 0..segments {
        let n = u.int_in_range(0..=5)?;
        let mut recs = Vec::new();
        for i in 0..n {
            let mask = match u.int_in_range(0..=3)? {
                0 => 0,
                1 => u.arbitrary()?,
                _ => 1 << (i % 64),
            };
            let len = u.int_in_range(0..=48)?;
            recs.push(Rec {
                seq: seq + i,
                mask,
                time_ms: u.arbitrary()?,
                payload: u.bytes(len)?.to_vec(),
            });
        }
        plan.push((seq, recs));
        seq += n;
    }
    let mut files: BTreeMap<u64, Vec<u8>> = plan
        .iter()
        .map(|(first, recs)| (*first, encode_all(recs)))
        .collect();
    // Two segments with the same first seq (empty ones in a row): the later one wins.
    let mut all: Vec<Rec> = Vec::new();
    for (first, recs) in &plan {
        if files.get(first).is_some_and(|b| *b == encode_all(recs)) {
            all.extend(recs.iter().cloned());
        }
    }
    let last = *files.keys().last().expect("one segment");
    // An empty segment before the last one is damage too (it does not start with a record).
    let older_nonempty = files.iter().rev().skip(1).all(|(_, b)| !b.is_empty());
    let mut damaged_older = false;
    let mut damaged = false;
    for _ in 0..u.int_in_range(0..=4)? {
        let names: Vec<u64> = files.keys().copied().collect();
        let name = *u.choose(&names)?;
        let is_last = name == last;
        let bytes = files.get_mut(&name).expect("listed");
        let pos = if bytes.is_empty() {
            0
        } else {
            u.int_in_range(0..=bytes.len() - 1)?
        };
        match u.int_in_range(0..=5)? {
            0 if !bytes.is_empty() => bytes[pos] ^= u.int_in_range(1..=255)?,
            1 => bytes.truncate(pos),
            2 => {
                let n = u.int_in_range(1..=40)?;
                let run = u.bytes(n)?;
                bytes.splice(pos..pos, run.iter().copied());
            }
            3 => {
                let n = u.int_in_range(1..=40)?;
                let run = u.bytes(n)?;
                let end = (pos + run.len()).min(bytes.len());
                bytes.splice(pos..end, run.iter().copied());
            }
            4 => {
                let n = u.int_in_range(1..=64)?;
                bytes.extend(std::iter::repeat_n(0, n)); // a tail the file system zero-filled
            }
            _ => {
                // A segment under another name: its records no longer start where it says.
                let to: u64 = u.int_in_range(1..=40)?;
                if files.contains_key(&to) {
                    continue;
                }
                let moved = files.remove(&name).expect("listed");
                files.insert(to, moved);
                damaged_older = true; // the order of the files changed: anything goes
                damaged = true;
                continue;
            }
        }
        damaged = true;
        damaged_older |= !is_last;
    }
    let exact = (!damaged).then(|| all.into_iter().filter(|r| r.mask != 0).collect());
    let expect = Expect {
        older_intact: !damaged_older && older_nonempty,
        exact,
    };
    Ok((files, expect))
}

/// Writes `files` as a store's log, opens it, reads everything back and checks the
/// invariants in the module's header.
pub fn open_and_check(files: &BTreeMap<u64, Vec<u8>>, expect: &Expect) {
    let scratch = Scratch::new();
    let dir = scratch.path().join("store");
    let log = dir.join("log");
    fs::create_dir_all(&log).unwrap();
    for (first, bytes) in files {
        fs::write(log.join(segment_name(*first)), bytes).unwrap();
    }
    let config = StoreConfig::new(&dir);
    let mut store = match LogStore::open(config.clone()) {
        Ok(store) => store,
        Err(e) => {
            assert!(
                !expect.older_intact,
                "a damaged last segment stopped the store from opening: {e}"
            );
            assert!(matches!(e, Error::Storage { .. }), "{e:?}");
            return;
        }
    };
    let r = store.recovery().clone();
    assert_eq!(r.records, r.next_seq - r.first_seq, "{r:?}");
    assert_eq!(r.segments, files.len(), "{r:?}");
    assert_eq!(Some(&r.first_seq), files.keys().next(), "{r:?}");
    assert!(r.corrupt_records <= 1 && (r.corrupt_records == 0) == (r.truncated_bytes == 0));

    let (got, reached, read_error) = read_all(&store, r.first_seq);
    for rec in &got {
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        assert!(
            files
                .values()
                .any(|f| f.windows(bytes.len()).any(|w| w == bytes)),
            "read a record that is not in any segment with a matching checksum: {rec:?}"
        );
        assert!(
            rec.seq >= r.first_seq && rec.seq < r.next_seq,
            "{rec:?} {r:?}"
        );
    }
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "out of order");
    // A reader never stops short of the log's end without saying why: a silent stop is an
    // endpoint that waits forever for records it will never get.
    assert!(
        reached == r.next_seq || read_error.is_some(),
        "reading stopped at {reached} without an error: {r:?}"
    );
    if expect.older_intact {
        assert_eq!(read_error, None, "{r:?}");
        assert_eq!(reached, r.next_seq, "{r:?}");
    }
    if let Some(exact) = &expect.exact {
        assert_eq!(&got, exact, "an undamaged log read back differently");
        assert_eq!((r.truncated_bytes, r.corrupt_records), (0, 0), "{r:?}");
    }

    // The repaired log takes appends, and a second open has nothing left to repair.
    let seq = store.append(1, 42, b"after").expect("append");
    assert_eq!(seq, r.next_seq);
    assert_eq!(store.commit().expect("commit"), seq);
    drop(store);
    let store = LogStore::open(config).expect("reopen after a repair");
    let again = store.recovery().clone();
    assert_eq!(
        (again.truncated_bytes, again.corrupt_records),
        (0, 0),
        "{again:?}"
    );
    assert_eq!(again.next_seq, seq + 1, "{again:?}");
    let mut tail = Vec::new();
    store
        .reader()
        .unwrap()
        .read(seq, seq, u64::MAX, 1, &mut |rec| {
            tail.push((rec.seq, rec.mask, rec.time_ms, rec.payload.to_vec()))
        })
        .expect("read the append back");
    assert_eq!(tail, [(seq, 1, 42, b"after".to_vec())]);
}

/// Reads every record from `from` on, in bounded steps. Returns the records, where reading
/// stopped, and the error that stopped it, if any.
fn read_all(store: &LogStore, from: u64) -> (Vec<Rec>, u64, Option<String>) {
    let mut reader = store.reader().expect("a reader");
    let mut got = Vec::new();
    let mut at = from;
    loop {
        let res = reader.read(at, u64::MAX, u64::MAX, 16, &mut |rec| {
            got.push(Rec {
                seq: rec.seq,
                mask: rec.mask,
                time_ms: rec.time_ms,
                payload: rec.payload.to_vec(),
            })
        });
        match res {
            Ok(next) if next > at => at = next,
            Ok(_) => return (got, at, None),
            Err(e) => {
                assert!(matches!(e, Error::Storage { .. }), "{e:?}");
                return (got, at, Some(e.to_string()));
            }
        }
    }
}
