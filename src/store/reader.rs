//! Reading the log back, on any thread, while the writer appends.
//!
//! A [`LogReader`] opens segment files by path with its own handles. It remembers where it
//! stopped (the segment, the file position and the seq there), so the common case, reading on
//! from where the last call ended, neither lists the directory nor rescans anything. A read
//! from elsewhere finds the segment by name (the cached list is refreshed when the target lies
//! past its end, or a file in it is gone) and scans that segment from its start.
//!
//! Damage does not stop a reader: it skips to the next valid record (see [`Scanner`]), or,
//! at the end of a segment that a newer one follows, to that segment, and reports what it
//! skipped through [`StoreReader::damaged`]. A reader of a store open for writing keeps the
//! damaged bytes in the quarantine (once); a read-only store's readers change nothing. Only
//! damage at the end of the last segment stops a read (with an error, to be retried): a
//! valid record may follow it once the writer appends more, and nothing may be cut while the
//! writer owns the file.

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::damage::{Damage, DamageKind, Quarantine};
use super::segment::{self, Peek, Scanner};
use super::{Record, StoreReader};
use crate::Error;

/// Where a reader is: a segment and a scanner positioned in it.
#[derive(Debug)]
struct Position {
    first_seq: u64,
    path: PathBuf,
    scanner: Scanner,
}

/// A [`StoreReader`] over the segment files of one log directory.
#[derive(Debug)]
pub(super) struct LogReader {
    log_dir: PathBuf,
    /// Segment names (first seqs) as last listed.
    segments: Vec<u64>,
    at: Option<Position>,
    /// A read buffer kept between positions.
    spare: Vec<u8>,
    /// Where damaged bytes are copied, and whether this reader may write there.
    quarantine: Arc<Quarantine>,
    may_write: bool,
    /// What the last read skipped.
    damaged: Vec<Damage>,
}

/// What one step of a read found.
enum Step {
    /// A record (given or passed over), or a damaged range skipped.
    Record,
    End {
        partial: usize,
    },
}

impl LogReader {
    /// A reader of `log_dir`, whose segments were last seen to be `segments`. It copies what
    /// it skips to `quarantine` if `may_write`.
    pub(super) fn new(
        log_dir: PathBuf,
        segments: Vec<u64>,
        quarantine: Arc<Quarantine>,
        may_write: bool,
    ) -> LogReader {
        LogReader {
            log_dir,
            segments,
            at: None,
            spare: Vec::new(),
            quarantine,
            may_write,
            damaged: Vec::new(),
        }
    }

    /// Re-lists the segment files.
    fn refresh(&mut self) -> Result<(), Error> {
        if !self.may_write && !self.log_dir.is_dir() {
            // A read-only store of a directory without a log (yet): nothing to read.
            self.segments.clear();
            return Ok(());
        }
        self.segments = segment::list_segments(&self.log_dir)?;
        Ok(())
    }

    /// Makes sure the reader is at or before `from`, in the segment that holds it (or at the
    /// first segment, when `from` is older than everything kept). False: no segments.
    fn position(&mut self, from: u64) -> Result<bool, Error> {
        if let Some(at) = &self.at {
            let here = at.scanner.next_seq();
            let same_segment = !self.segments.iter().any(|&s| s > at.first_seq && s <= from);
            if at.first_seq <= from && here <= from && same_segment {
                return Ok(true);
            }
        }
        self.seek(from)
    }

    /// Opens the segment holding `from` (the newest whose name is not above it; the first one
    /// if `from` is older than all of them) and positions the reader at its start.
    fn seek(&mut self, from: u64) -> Result<bool, Error> {
        if self.segments.last().is_none_or(|&last| from > last) {
            self.refresh()?;
        }
        for retry in [false, true] {
            if retry {
                self.refresh()?;
            }
            let Some(first_seq) = self.segment_for(from) else {
                return Ok(false);
            };
            let path = self.log_dir.join(segment::segment_name(first_seq));
            match File::open(&path) {
                Ok(file) => {
                    let buf = match self.at.take() {
                        Some(at) => at.scanner.into_buf(),
                        None => std::mem::take(&mut self.spare),
                    };
                    let mut scanner = Scanner::new(file, first_seq, buf);
                    // Past damage, a record of the next segment is not taken for this one's.
                    if let Some(&next) = self.segments.iter().find(|&&s| s > first_seq) {
                        scanner.set_limit(next);
                    }
                    self.at = Some(Position {
                        first_seq,
                        path,
                        scanner,
                    });
                    return Ok(true);
                }
                // Removed since the list was made (every endpoint had passed it): list again.
                Err(e) if e.kind() == ErrorKind::NotFound && !retry => {}
                Err(e) => return Err(Error::storage("open", &path, e)),
            }
        }
        Ok(false)
    }

    /// The segment that holds `seq`, by the cached list.
    fn segment_for(&self, seq: u64) -> Option<u64> {
        let after = self.segments.partition_point(|&s| s <= seq);
        match after {
            0 => self.segments.first().copied(),
            n => Some(self.segments[n - 1]),
        }
    }

    /// At the end of what the current segment holds: moves to the next segment if there is
    /// one, reporting as damage whatever of this one could not be read (an incomplete or
    /// damaged record at its end, or records missing before the next segment's first).
    /// False: the current segment is the last (more may be appended to it later).
    fn next_segment(&mut self, partial: usize, until: u64) -> Result<bool, Error> {
        let Some(at) = &self.at else {
            return Ok(false);
        };
        let current = at.first_seq;
        let successor = |segments: &[u64]| segments.iter().copied().find(|&s| s > current);
        let mut next = successor(&self.segments);
        if next.is_none() {
            self.refresh()?;
            next = successor(&self.segments);
        }
        let Some(at) = self.at.as_mut() else {
            return Ok(false);
        };
        let here = at.scanner.next_seq();
        let damage = at.scanner.damage();
        // An incomplete record is damage if a newer segment follows, or if it is committed
        // (`until`), so the writer finished it: search past it first.
        if damage.is_none() && partial > 0 && (next.is_some() || here <= until) {
            at.scanner
                .mark_damaged("record extends past the end of the file");
            return Ok(true);
        }
        let Some(next) = next else {
            return match damage {
                None => Ok(false),
                Some((offset, why)) => Err(Error::storage(
                    "read",
                    &at.path,
                    format!(
                        "{why} at byte {offset}, and no valid record follows it yet (the \
                         segment being written: retried; a writer cuts it at open)"
                    ),
                )),
            };
        };
        if next < here {
            return Err(Error::storage(
                "read",
                &at.path,
                format!("the next segment starts at {next}, before this one's record {here}"),
            ));
        }
        if damage.is_some() || next > here {
            let (offset, why) = damage.unwrap_or((
                at.scanner.offset(),
                "the segment ends before its last record",
            ));
            let bytes = at.scanner.read_to() - offset;
            let path = at.path.clone();
            let d = Damage::new(DamageKind::Corrupt, current, offset, bytes, why, here, next);
            self.note(&path, d);
        }
        self.seek(next)
    }

    /// Records a damaged range this read skipped, copying its bytes aside first (once).
    fn note(&mut self, path: &Path, mut d: Damage) {
        if self.may_write {
            if let Err(e) = self.quarantine.keep(path, &mut d) {
                log::error!(
                    "durable store: could not copy the damaged range at byte {} of {} to the \
                     quarantine (it is skipped all the same): {e}",
                    d.offset,
                    path.display()
                );
            }
        } else {
            self.quarantine.find(&mut d);
        }
        self.damaged.push(d);
    }

    /// Looks at the record at the reader's position and hands it to `f` if it is wanted.
    fn step(
        &mut self,
        from: u64,
        mask: u64,
        f: &mut dyn FnMut(Record<'_>),
    ) -> Result<(Step, bool), Error> {
        let Some(at) = self.at.as_mut() else {
            return Ok((Step::End { partial: 0 }, false));
        };
        match at.scanner.peek() {
            Ok(Peek::Skipped(skip)) => {
                let path = at.path.clone();
                let d = Damage::new(
                    DamageKind::Corrupt,
                    at.first_seq,
                    skip.offset,
                    skip.bytes,
                    skip.reason,
                    skip.expected,
                    skip.next_seq,
                );
                self.note(&path, d);
                Ok((Step::Record, false))
            }
            Ok(Peek::Ready) => {
                let mut given = false;
                if let Some(rec) = at.scanner.record()
                    && rec.seq >= from
                    && rec.mask & mask != 0
                {
                    f(rec);
                    given = true;
                }
                at.scanner.consume();
                Ok((Step::Record, given))
            }
            Ok(Peek::Eof { partial }) => Ok((Step::End { partial }, false)),
            Err(e) => {
                let path = at.path.clone();
                self.at = None;
                Err(Error::storage("read", &path, e))
            }
        }
    }

    /// The seq the reader is at (`None`: nowhere).
    fn here(&self) -> Option<u64> {
        self.at.as_ref().map(|at| at.scanner.next_seq())
    }
}

impl StoreReader for LogReader {
    fn read(
        &mut self,
        from: u64,
        until: u64,
        mask: u64,
        max: usize,
        f: &mut dyn FnMut(Record<'_>),
    ) -> Result<u64, Error> {
        self.damaged.clear();
        if max == 0 || from > until || !self.position(from)? {
            return Ok(from);
        }
        let mut given = 0;
        while given < max && self.here().is_some_and(|seq| seq <= until) {
            let (step, gave) = self.step(from, mask, f)?;
            given += usize::from(gave);
            if let Step::End { partial } = step
                && !self.next_segment(partial, until)?
            {
                break;
            }
        }
        Ok(self.here().map_or(from, |seq| seq.max(from)))
    }

    fn damaged(&self) -> &[Damage] {
        &self.damaged
    }
}
