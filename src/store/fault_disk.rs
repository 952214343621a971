//! A [`Disk`] in memory for tests: it keeps what was written apart from what was synced,
//! fails chosen operations, runs out of space, and on a simulated crash keeps only what a
//! real disk must keep (synced bytes and synced directory entries) plus, at random, some of
//! what it may keep (unsynced appends, truncations and entries).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::disk::{Disk, ReadSeek, SegmentFile};
use super::segment::{self, Peek, Scanner};

/// A small seeded generator (xorshift64*), so that a failing seed can be replayed.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `1 / n`.
    pub(crate) fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// Which operations fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Write,
    Sync,
    SetLen,
    Create,
    Remove,
    SyncDir,
}

#[derive(Debug, Default)]
struct File {
    /// What reads see (the page cache).
    data: Vec<u8>,
    /// What is on the disk for sure.
    synced: Vec<u8>,
}

#[derive(Debug)]
struct State {
    files: HashMap<u64, File>,
    next_id: u64,
    /// Directory entries as the page cache has them, and as they are on the disk for sure.
    entries: BTreeMap<PathBuf, u64>,
    synced_entries: BTreeMap<PathBuf, u64>,
    rng: Rng,
    /// Each fallible operation fails with probability `1 / fail_one_in` (0: never) while
    /// `faults_left` > 0.
    fail_one_in: u64,
    faults_left: u32,
    /// Fail exactly these operations, by their number (counted from 1), once each.
    fail_at: Vec<u64>,
    ops: u64,
    /// Bytes of file data that fit on the disk (what reads see counts); `None`: no limit.
    capacity: Option<u64>,
    /// Faults injected so far.
    injected: u64,
}

impl State {
    /// Whether the next fallible operation fails.
    fn fault(&mut self, op: Op) -> io::Result<()> {
        self.ops += 1;
        let chosen = if let Some(i) = self.fail_at.iter().position(|&n| n == self.ops) {
            self.fail_at.swap_remove(i);
            true
        } else {
            self.fail_one_in > 0 && self.faults_left > 0 && self.rng.one_in(self.fail_one_in)
        };
        if chosen {
            self.faults_left = self.faults_left.saturating_sub(1);
            self.injected += 1;
            return Err(io::Error::other(format!("injected fault ({op:?})")));
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        self.files.values().map(|f| f.data.len() as u64).sum()
    }
}

/// The disk: cheap to clone (clones share it).
#[derive(Debug, Clone)]
pub(crate) struct FaultDisk(Arc<Mutex<State>>);

impl FaultDisk {
    /// An empty disk with no faults; `seed` drives faults and crashes.
    pub(crate) fn new(seed: u64) -> FaultDisk {
        FaultDisk(Arc::new(Mutex::new(State {
            files: HashMap::new(),
            next_id: 0,
            entries: BTreeMap::new(),
            synced_entries: BTreeMap::new(),
            rng: Rng::new(seed),
            fail_one_in: 0,
            faults_left: 0,
            fail_at: Vec::new(),
            ops: 0,
            capacity: None,
            injected: 0,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().expect("the fault disk's lock")
    }

    /// From now on, each fallible operation fails with probability `1 / one_in`, at most
    /// `faults` times.
    pub(crate) fn random_faults(&self, one_in: u64, faults: u32) {
        let mut s = self.state();
        s.fail_one_in = one_in;
        s.faults_left = faults;
    }

    /// Fails the `n`th fallible operation from now (1: the next one), once.
    pub(crate) fn fail_in(&self, n: u64) {
        let mut s = self.state();
        let at = s.ops + n;
        s.fail_at.push(at);
    }

    /// Faults injected so far.
    pub(crate) fn injected(&self) -> u64 {
        self.state().injected
    }

    /// Limits the data the disk holds to `bytes` (`None`: no limit): a write past it writes
    /// what fits, then fails with `ENOSPC`.
    pub(crate) fn set_capacity(&self, bytes: Option<u64>) {
        self.state().capacity = bytes;
    }

    /// A power cut: every file and directory entry goes back to what was synced, except that
    /// at random an unsynced change survives (part of an append, a truncation, an entry
    /// created or removed), as it may on a real disk. Faults are switched off.
    pub(crate) fn crash(&self) {
        let mut guard = self.state();
        let s = &mut *guard;
        s.fail_one_in = 0;
        s.fail_at.clear();
        let mut entries = s.synced_entries.clone();
        let paths: Vec<PathBuf> = s
            .entries
            .keys()
            .chain(s.synced_entries.keys())
            .cloned()
            .collect();
        for path in paths {
            let now = s.entries.get(&path).copied();
            if now != s.synced_entries.get(&path).copied() && s.rng.one_in(3) {
                match now {
                    Some(id) => entries.insert(path, id),
                    None => entries.remove(&path),
                };
            }
        }
        s.entries = entries.clone();
        s.synced_entries = entries;
        let live: Vec<u64> = s.entries.values().copied().collect();
        s.files.retain(|id, _| live.contains(id));
        for f in s.files.values_mut() {
            let kept = if f.data.starts_with(&f.synced) {
                // Unsynced appends: none, all, or a prefix of them reached the disk.
                let extra = (f.data.len() - f.synced.len()) as u64;
                let n = match s.rng.below(3) {
                    0 => 0,
                    1 => extra,
                    _ => s.rng.below(extra + 1),
                };
                f.data[..f.synced.len() + n as usize].to_vec()
            } else if s.rng.one_in(2) {
                // An unsynced truncation or rewrite: the old or the new contents.
                f.synced.clone()
            } else {
                f.data.clone()
            };
            f.data = kept.clone();
            f.synced = kept;
        }
    }

    /// What a read of `path` sees now (for tests that damage or inspect files).
    pub(crate) fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state();
        let id = s.entries.get(path)?;
        Some(s.files[id].data.clone())
    }
}

/// An open file of a [`FaultDisk`].
struct Handle {
    disk: FaultDisk,
    id: u64,
}

impl SegmentFile for Handle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.disk.state();
        if let Err(e) = s.fault(Op::Write) {
            // A failed write may still have written part of what it was given.
            let n = s.rng.below(buf.len() as u64 + 1) as usize;
            let f = s.files.get_mut(&self.id).expect("an open file exists");
            f.data.extend_from_slice(&buf[..n]);
            return Err(e);
        }
        let room = match s.capacity {
            Some(cap) => cap.saturating_sub(s.used()),
            None => u64::MAX,
        };
        if room == 0 {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        let n = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let f = s.files.get_mut(&self.id).expect("an open file exists");
        f.data.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = self.disk.state();
        s.fault(Op::Sync)?;
        let f = s.files.get_mut(&self.id).expect("an open file exists");
        f.synced = f.data.clone();
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut s = self.disk.state();
        s.fault(Op::SetLen)?;
        let f = s.files.get_mut(&self.id).expect("an open file exists");
        f.data.resize(len as usize, 0);
        Ok(())
    }
}

/// A reader of a [`FaultDisk`] file: reads what the file holds at each call.
struct Reader {
    disk: FaultDisk,
    id: u64,
    pos: u64,
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let s = self.disk.state();
        let data = s.files.get(&self.id).map_or(&[][..], |f| &f.data[..]);
        let from = (self.pos as usize).min(data.len());
        let n = buf.len().min(data.len() - from);
        buf[..n].copy_from_slice(&data[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Reader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(n) => n,
            _ => return Err(io::Error::other("the fault disk seeks from the start only")),
        };
        Ok(self.pos)
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

impl Disk for FaultDisk {
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state();
        Ok(s.entries
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let mut s = self.state();
        s.fault(Op::Create)?;
        if s.entries.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        let id = s.next_id;
        s.next_id += 1;
        s.files.insert(id, File::default());
        s.entries.insert(path.to_owned(), id);
        Ok(Box::new(Handle {
            disk: self.clone(),
            id,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let s = self.state();
        let id = *s.entries.get(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(Handle {
            disk: self.clone(),
            id,
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadSeek>> {
        let s = self.state();
        let id = *s.entries.get(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(Reader {
            disk: self.clone(),
            id,
            pos: 0,
        }))
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        let s = self.state();
        let id = s.entries.get(path).ok_or_else(|| not_found(path))?;
        Ok(s.files[id].data.len() as u64)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.fault(Op::Remove)?;
        s.entries.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.fault(Op::SyncDir)?;
        let State {
            entries,
            synced_entries,
            ..
        } = &mut *s;
        synced_entries.retain(|p, _| p.parent() != Some(dir));
        for (p, id) in entries.iter().filter(|(p, _)| p.parent() == Some(dir)) {
            synced_entries.insert(p.clone(), *id);
        }
        Ok(())
    }
}

/// Every valid record in the log directory `log_dir` on `disk`, by seq, as a reader finds
/// them (damage skipped): what a later open would read.
pub(crate) fn records(disk: &FaultDisk, log_dir: &Path) -> BTreeMap<u64, Vec<u8>> {
    let seqs = segment::list_segments_on(disk, log_dir).expect("list the fault disk");
    let mut out = BTreeMap::new();
    for (i, &first) in seqs.iter().enumerate() {
        let path = log_dir.join(segment::segment_name(first));
        let file = disk.open_read(&path).expect("a listed segment");
        let mut scanner = Scanner::new(file, first, Vec::new());
        if let Some(&next) = seqs.get(i + 1) {
            scanner.set_limit(next);
        }
        loop {
            match scanner.peek().expect("reads from memory do not fail") {
                Peek::Ready => {
                    let r = scanner.record().expect("a ready record");
                    out.insert(r.seq, r.payload.to_vec());
                    scanner.consume();
                }
                Peek::Skipped(_) => {}
                Peek::Eof { .. } => break,
            }
        }
    }
    out
}
