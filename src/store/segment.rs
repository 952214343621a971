//! The segment file format: records, their checksums, segment names, and a buffered scanner
//! that both recovery and readers walk records with.
//!
//! A record is a 32-byte header and its payload:
//!
//! ```text
//! len u32 LE | crc u32 LE | seq u64 LE | mask u64 LE | time_ms u64 LE | payload (len bytes)
//! ```
//!
//! `crc` is CRC-32 (IEEE) over the header without the crc field (`len|seq|mask|time_ms`) and
//! then the payload, so a torn write, a zero-filled tail or a flipped bit anywhere in the
//! record is caught. A segment is named by the seq of its first record, 20 digits with leading
//! zeros (`00000000000000000001.seg`), so names sort as numbers do.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;

use super::Record;
use super::disk::{Disk, OsDisk};
use crate::Error;

/// Bytes before each record's payload.
pub(super) const HEADER_LEN: usize = 32;
/// The largest payload a record may have (a record is then at most 64 MiB).
pub(super) const MAX_PAYLOAD: usize = (64 << 20) - HEADER_LEN;
/// How much a scanner reads per `read` call.
const CHUNK: usize = 1 << 20;
/// A segment file's extension.
const SEG_EXT: &str = ".seg";

/// The file name of the segment whose first record is `first_seq`.
pub(super) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEG_EXT}")
}

/// The first seq a segment file name stands for; `None` if it is not a segment's name.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEG_EXT)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Seqs start at 1; names past 2^63 cannot come from this store (and would overflow).
    digits.parse().ok().filter(|&seq| seq > 0 && seq < 1 << 63)
}

/// The segments in `log_dir`, by first seq, ascending. Other files are ignored.
pub(super) fn list_segments(log_dir: &Path) -> Result<Vec<u64>, Error> {
    list_segments_on(&OsDisk, log_dir)
}

/// The segments in `log_dir` on `disk`, by first seq, ascending. Other files are ignored.
pub(super) fn list_segments_on(disk: &dyn Disk, log_dir: &Path) -> Result<Vec<u64>, Error> {
    let names = disk
        .list(log_dir)
        .map_err(|e| Error::storage("list", log_dir, e))?;
    let mut seqs: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Appends one record (header and payload) to `out`. The caller has checked the payload's
/// length against [`MAX_PAYLOAD`].
pub(super) fn encode(out: &mut Vec<u8>, seq: u64, mask: u64, time_ms: u64, payload: &[u8]) {
    let len = payload.len() as u32;
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header[16..24].copy_from_slice(&mask.to_le_bytes());
    header[24..32].copy_from_slice(&time_ms.to_le_bytes());
    let crc = checksum(&header, payload);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// The record checksum: the header without its crc field, then the payload.
fn checksum(header: &[u8; HEADER_LEN], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[0..4]);
    h.update(&header[8..HEADER_LEN]);
    h.update(payload);
    h.finalize()
}

/// A decoded header.
#[derive(Debug, Clone, Copy)]
struct Header {
    len: usize,
    crc: u32,
    seq: u64,
    mask: u64,
    time_ms: u64,
}

impl Header {
    fn decode(bytes: &[u8; HEADER_LEN]) -> Header {
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(b)
        };
        Header {
            len: u32_at(0) as usize,
            crc: u32_at(4),
            seq: u64_at(8),
            mask: u64_at(16),
            time_ms: u64_at(24),
        }
    }
}

/// What is at a scanner's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Peek {
    /// A whole, valid record: [`Scanner::record`] gives it, [`Scanner::consume`] moves past it.
    Ready,
    /// The end of the file so far, with `partial` bytes after the last whole record (0: the
    /// file ends cleanly). A file being appended to may grow later. While the scanner is in
    /// damage ([`Scanner::damage`]) they are the bytes not searched yet.
    Eof {
        /// Bytes of an incomplete record (or not yet searched, in damage).
        partial: usize,
    },
    /// Damaged bytes were skipped: a valid record follows them, and the next
    /// [`peek`](Scanner::peek) gives it.
    Skipped(Skip),
}

/// A damaged range a scanner skipped, and the valid record it found after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Skip {
    /// The file offset where the damage starts (where a record was due).
    pub(super) offset: u64,
    /// Bytes skipped.
    pub(super) bytes: u64,
    /// Why the record due at `offset` was not valid.
    pub(super) reason: &'static str,
    /// The seq that record should have had: the first one lost.
    pub(super) expected: u64,
    /// The seq of the valid record after the damage (`expected..next_seq` are lost).
    pub(super) next_seq: u64,
}

/// Where damage started, while the scanner searches for the next valid record.
#[derive(Debug, Clone, Copy)]
struct Bad {
    offset: u64,
    expected: u64,
    reason: &'static str,
}

/// Walks the records of one segment file in order, reading it in large chunks.
///
/// It checks each record's checksum, its length, and that seqs are consecutive from the
/// segment's name. It keeps the bytes after the last whole record, so when the file grows (a
/// reader following the writer) the next [`peek`](Scanner::peek) continues where it stopped.
///
/// At an invalid record it does not stop: it searches the bytes after it, one offset at a
/// time, for the next record that is whole, passes its checksum, and whose seq continues
/// plausibly: at least the seq that was due, at most one more for every 32 bytes skipped
/// (a lost record took at least a header), and below the segment's `limit`. It then reports
/// the skipped range ([`Peek::Skipped`]). What it cannot tell is whether damage that reaches
/// the end of the file is a torn tail; its caller decides ([`Scanner::damage`]).
///
/// It reads a `File` (readers) or anything that reads and seeks (recovery, through
/// [`Disk`]).
#[derive(Debug)]
pub(super) struct Scanner<R = File> {
    file: R,
    /// Bytes read from the file; `buf[start..end]` are not consumed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The file offset of `buf[0]`.
    base: u64,
    /// The seq the record at `start` must have.
    next_seq: u64,
    /// Seqs at or above this cannot be in this segment (the next segment's first).
    limit: u64,
    /// Set by a `Ready` peek: the whole record's length.
    ready: Option<(Header, usize)>,
    /// Set while searching past damage.
    bad: Option<Bad>,
}

impl<R: Read + Seek> Scanner<R> {
    /// Scans `file` from its start; its first record must be `first_seq`. `buf` is a
    /// buffer to reuse (its contents are ignored; its length is how much to read at a time;
    /// if it is shorter than a header, a buffer of 1 MiB is made).
    pub(super) fn new(file: R, first_seq: u64, mut buf: Vec<u8>) -> Scanner<R> {
        if buf.len() < HEADER_LEN {
            buf = vec![0; CHUNK];
        }
        Scanner {
            file,
            buf,
            start: 0,
            end: 0,
            base: 0,
            next_seq: first_seq,
            limit: 1 << 63,
            ready: None,
            bad: None,
        }
    }

    /// Seqs at or above `limit` belong to a later segment: a candidate record past damage
    /// with such a seq is not taken for a valid one.
    pub(super) fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// The seq of the next record (one past the last consumed; in damage, the first lost).
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The file offset just past the last consumed record (in damage: the next offset to
    /// search).
    pub(super) fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    /// The file offset up to which the file has been read (at the end: its length).
    pub(super) fn read_to(&self) -> u64 {
        self.base + self.end as u64
    }

    /// While searching past damage: where it started (the record due there) and why.
    pub(super) fn damage(&self) -> Option<(u64, &'static str)> {
        self.bad.map(|b| (b.offset, b.reason))
    }

    /// The caller's judgement that the incomplete record at the end of the file (a
    /// [`Peek::Eof`] with `partial > 0`) is damage, not a write in progress: the next peek
    /// searches past it. Nothing happens if there is no such record.
    pub(super) fn mark_damaged(&mut self, reason: &'static str) {
        if self.bad.is_none() && self.ready.is_none() && self.end > self.start {
            self.enter_damage(reason);
        }
    }

    /// Gives the buffer back, for the next segment's scanner.
    pub(super) fn into_buf(self) -> Vec<u8> {
        self.buf
    }

    /// Looks at the record at the current position, reading more of the file if it is not
    /// all in the buffer yet; past damage, searches for the next valid record first.
    pub(super) fn peek(&mut self) -> io::Result<Peek> {
        if self.ready.is_some() {
            return Ok(Peek::Ready);
        }
        if self.bad.is_some() {
            return self.resync();
        }
        loop {
            let avail = self.end - self.start;
            let need = match self.buf[self.start..self.end].first_chunk::<HEADER_LEN>() {
                None => HEADER_LEN,
                Some(&header) => {
                    let h = Header::decode(&header);
                    if h.len > MAX_PAYLOAD {
                        self.enter_damage("record length out of range");
                        return self.resync();
                    }
                    let total = HEADER_LEN + h.len;
                    if avail >= total {
                        return match self.check(&header, h, total) {
                            Ok(()) => Ok(Peek::Ready),
                            Err(why) => {
                                self.enter_damage(why);
                                self.resync()
                            }
                        };
                    }
                    total
                }
            };
            if self.fill(need)? == 0 {
                return Ok(Peek::Eof {
                    partial: self.end - self.start,
                });
            }
        }
    }

    /// Validates a whole record in the buffer.
    fn check(
        &mut self,
        header: &[u8; HEADER_LEN],
        h: Header,
        total: usize,
    ) -> Result<(), &'static str> {
        let payload = &self.buf[self.start + HEADER_LEN..self.start + total];
        if checksum(header, payload) != h.crc {
            return Err("record checksum mismatch");
        }
        if h.seq != self.next_seq {
            return Err("record out of sequence");
        }
        if h.seq >= self.limit {
            // An older segment running into the next one's seqs: stale copies, not records.
            return Err("record overlaps the next segment");
        }
        self.ready = Some((h, total));
        Ok(())
    }

    /// The record at `start` is invalid: search from the byte after it.
    fn enter_damage(&mut self, reason: &'static str) {
        self.bad = Some(Bad {
            offset: self.offset(),
            expected: self.next_seq,
            reason,
        });
        self.start += 1;
    }

    /// Searches, one offset at a time, for a valid record that plausibly continues the
    /// segment. Stops at the end of what the file holds so far (and goes on from there at
    /// the next peek).
    fn resync(&mut self) -> io::Result<Peek> {
        let Some(bad) = self.bad else {
            return self.peek();
        };
        // The first plausible candidate that the file does not hold whole (yet). It cannot
        // stop the search (a damaged length can make the damaged record itself look like
        // one), but if nothing is found, the search resumes there once the file grows.
        let mut incomplete: Option<u64> = None;
        loop {
            let avail = self.end - self.start;
            let Some(&header) = self.buf[self.start..self.end].first_chunk::<HEADER_LEN>() else {
                if self.fill(HEADER_LEN)? == 0 {
                    if let Some(at) = incomplete {
                        self.rewind(at)?;
                    }
                    return Ok(Peek::Eof {
                        partial: (self.read_to() - self.offset()) as usize,
                    });
                }
                continue;
            };
            let h = Header::decode(&header);
            let here = self.offset();
            // Each lost record took at least a header's bytes.
            let room = (here - bad.offset) / HEADER_LEN as u64;
            let plausible = h.len <= MAX_PAYLOAD
                && h.seq >= bad.expected
                && h.seq - bad.expected <= room
                && h.seq < self.limit;
            if !plausible {
                self.start += 1;
                continue;
            }
            let total = HEADER_LEN + h.len;
            if avail < total {
                if self.fill(total)? == 0 {
                    incomplete.get_or_insert(here);
                    self.start += 1;
                }
                continue;
            }
            let payload = &self.buf[self.start + HEADER_LEN..self.start + total];
            if checksum(&header, payload) != h.crc {
                self.start += 1;
                continue;
            }
            self.bad = None;
            self.next_seq = h.seq;
            self.ready = Some((h, total));
            return Ok(Peek::Skipped(Skip {
                offset: bad.offset,
                bytes: here - bad.offset,
                reason: bad.reason,
                expected: bad.expected,
                next_seq: h.seq,
            }));
        }
    }

    /// The record a `Ready` peek found. `None` if the last peek was not `Ready`.
    pub(super) fn record(&self) -> Option<Record<'_>> {
        let (h, total) = self.ready?;
        Some(Record {
            seq: h.seq,
            mask: h.mask,
            time_ms: h.time_ms,
            payload: &self.buf[self.start + HEADER_LEN..self.start + total],
        })
    }

    /// Moves past the record a `Ready` peek found (nothing otherwise).
    pub(super) fn consume(&mut self) {
        if let Some((_, total)) = self.ready.take() {
            self.start += total;
            self.next_seq += 1;
        }
    }

    /// Moves back to file offset `at` (at or after the damage's start), dropping the buffer.
    fn rewind(&mut self, at: u64) -> io::Result<()> {
        self.file.seek(io::SeekFrom::Start(at))?;
        self.base = at;
        self.start = 0;
        self.end = 0;
        Ok(())
    }

    /// Reads more of the file so that `need` bytes from `start` fit, making room first.
    /// Returns the bytes read (0 at the end of the file).
    fn fill(&mut self, need: usize) -> io::Result<usize> {
        if self.start + need > self.buf.len() {
            // Move the unconsumed tail to the front (at most one partial record).
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
            if need > self.buf.len() {
                self.buf.resize(need.next_multiple_of(CHUNK), 0);
            }
        }
        loop {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(segment_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_name(&segment_name(1 << 40)), Some(1 << 40));
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), None);
        assert_eq!(parse_segment_name(&segment_name(0)), None);
        assert_eq!(parse_segment_name("00000000000000000001.seg.tmp"), None);
        assert_eq!(parse_segment_name("1.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.seg"), None);
        assert!(segment_name(9) < segment_name(10));
    }

    #[test]
    fn encoded_records_check_and_flipped_bits_do_not() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, 0b101, 99, b"hello");
        assert_eq!(buf.len(), HEADER_LEN + 5);
        let header: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap();
        let h = Header::decode(&header);
        assert_eq!((h.len, h.seq, h.mask, h.time_ms), (5, 7, 0b101, 99));
        assert_eq!(checksum(&header, &buf[HEADER_LEN..]), h.crc);
        for i in (0..buf.len()).filter(|i| !(4..8).contains(i)) {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            let header: [u8; HEADER_LEN] = bad[..HEADER_LEN].try_into().unwrap();
            let end = (HEADER_LEN + Header::decode(&header).len).min(bad.len());
            assert_ne!(checksum(&header, &bad[HEADER_LEN..end]), h.crc, "byte {i}");
        }
    }
}
