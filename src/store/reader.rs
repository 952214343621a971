//! Reading the log back, on any thread, while the writer appends.
//!
//! A [`LogReader`] opens segment files by path with its own handles. It remembers where it
//! stopped (the segment, the file position and the seq there), so the common case, reading on
//! from where the last call ended, neither lists the directory nor rescans anything. A read
//! from elsewhere finds the segment by name (the cached list is refreshed when the target lies
//! past its end, or a file in it is gone) and scans that segment from its start.

use std::fs::File;
use std::io::ErrorKind;
use std::path::PathBuf;

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
}

/// What one step of a read found.
enum Step {
    Record,
    End { partial: usize },
    Corrupt(&'static str),
}

impl LogReader {
    /// A reader of `log_dir`, whose segments were last seen to be `segments`.
    pub(super) fn new(log_dir: PathBuf, segments: Vec<u64>) -> LogReader {
        LogReader {
            log_dir,
            segments,
            at: None,
            spare: Vec::new(),
        }
    }

    /// Re-lists the segment files.
    fn refresh(&mut self) -> Result<(), Error> {
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
                    let scanner = Scanner::new(file, first_seq, buf);
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

    /// At the end of the current segment: moves to the next one if it exists. False: the
    /// current segment is the last (more may be appended to it later).
    fn next_segment(&mut self, partial: usize) -> Result<bool, Error> {
        let Some(want) = self.here() else {
            return Ok(false);
        };
        // At the start of an empty segment, `want` is its own name: nothing newer yet.
        if self.at.as_ref().is_some_and(|at| at.first_seq == want) {
            return Ok(false);
        }
        if !self.segments.contains(&want) {
            self.refresh()?;
            if !self.segments.contains(&want) {
                // Nothing newer yet; or every segment up to a newer one was removed (all
                // endpoints had passed them: skip to it); or a hole in the log.
                let Some(&next) = self.segments.iter().find(|&&s| s > want) else {
                    return Ok(false);
                };
                if self.segments.first().is_some_and(|&first| first < want)
                    && let Some(at) = self.at.take()
                {
                    return Err(Error::storage(
                        "read",
                        &at.path,
                        format!(
                            "records {want}..{next} are missing: the next segment starts at {next}"
                        ),
                    ));
                }
                return self.seek(want);
            }
        }
        if partial > 0
            && let Some(at) = self.at.take()
        {
            return Err(Error::storage(
                "read",
                &at.path,
                "segment ends in the middle of a record, and a newer segment follows it",
            ));
        }
        self.seek(want)
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
        // Where the next segment starts: this one's records must stop before it.
        let after = self.segments.partition_point(|&s| s <= at.first_seq);
        let limit = self.segments.get(after).copied().unwrap_or(u64::MAX);
        match at.scanner.peek() {
            Ok(Peek::Ready) if at.scanner.next_seq() >= limit => Ok((
                Step::Corrupt("record overlaps the next segment (the log is damaged)"),
                false,
            )),
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
            Ok(Peek::Corrupt(why)) => Ok((Step::Corrupt(why), false)),
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
        if max == 0 || from > until || !self.position(from)? {
            return Ok(from);
        }
        let mut given = 0;
        while given < max && self.here().is_some_and(|seq| seq <= until) {
            let (step, gave) = self.step(from, mask, f)?;
            given += usize::from(gave);
            match step {
                Step::Record => {}
                Step::End { partial } => {
                    if !self.next_segment(partial)? {
                        break;
                    }
                }
                Step::Corrupt(why) => {
                    let Some(at) = self.at.take() else { break };
                    let offset = at.scanner.offset();
                    return Err(Error::storage(
                        "read",
                        &at.path,
                        format!("{why} at byte {offset}"),
                    ));
                }
            }
        }
        Ok(self.here().map_or(from, |seq| seq.max(from)))
    }
}
