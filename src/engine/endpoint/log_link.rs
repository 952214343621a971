//! A durable endpoint's link to the log: where it is in it, and whether it reads the log
//! (after a restart, or once it lagged half a ring) or the ring (its read-ahead tail).
//!
//! The endpoint never touches a file. While it reads the log it asks for records with
//! [`Action::ReadLog`](super::Action::ReadLog), one request at a time; the worker hands the
//! request to the log reader thread, and the answer comes back as a [`LogRead`]. What it needs
//! to know of the log's progress it reads from [`LogMarks`], two counters the persistence
//! thread keeps.

use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use crate::Error;
use crate::engine::lease::Gate;
use crate::engine::source::Events;
use crate::stats::DropReason;
use crate::store::Damage;

use super::Action;
use super::batch::Held;
use super::warn;

/// How far the log has got, as the persistence thread publishes it.
#[derive(Debug, Default)]
pub(crate) struct LogMarks {
    /// The highest committed sequence number; stored before the records enter the ring.
    pub durable_through: AtomicU64,
    /// Every record up to here is in the ring for the durable endpoints routed when it was
    /// committed (or was for none): an endpoint that has read the ring to its head and holds
    /// nothing has finished everything up to here, even if none of it was its.
    pub published_through: AtomicU64,
}

impl LogMarks {
    /// Marks at `through` (what a store held when it was opened).
    pub fn at(through: u64) -> LogMarks {
        LogMarks {
            durable_through: AtomicU64::new(through),
            published_through: AtomicU64::new(through),
        }
    }
}

/// What the log reader could not hand over as an event.
#[derive(Debug)]
pub(crate) enum Unread {
    /// The record passed its checksum but is not an event.
    Undecodable {
        /// Its sequence number.
        seq: u64,
        /// Why it could not be decoded.
        error: Error,
    },
    /// A damaged range of the log was skipped: the records `first..end` (from the read's
    /// `from` on) are lost. For whom is unknown (their masks were lost with them).
    Lost {
        /// The first sequence number lost.
        first: u64,
        /// One past the last.
        end: u64,
        /// The damaged range, as the store reported it.
        damage: Box<Damage>,
    },
}

/// What the log reader found for one [`Action::ReadLog`](super::Action::ReadLog).
#[derive(Debug)]
pub(crate) struct LogRead {
    /// The records for the endpoint, in order, decoded; a record that could not be decoded
    /// and the damaged ranges the read skipped come as [`Unread`].
    pub records: Vec<Result<Held, Unread>>,
    /// The sequence number to read from next: one past the last record looked at (records
    /// of other endpoints included).
    pub next: u64,
    /// Reading stopped at this error (what came before it is in `records`).
    pub error: Option<Error>,
}

impl LogRead {
    /// The entry for a record that passed its checksum but is not an event.
    pub fn undecodable(seq: u64, error: Error) -> Result<Held, Unread> {
        Err(Unread::Undecodable { seq, error })
    }

    /// The entry for the records `first..end` lost in `damage`.
    pub fn lost(first: u64, end: u64, damage: &Damage) -> Result<Held, Unread> {
        Err(Unread::Lost {
            first,
            end,
            damage: Box::new(damage.clone()),
        })
    }
}

/// A durable endpoint's position in the log.
#[derive(Debug)]
pub(crate) struct LogLink {
    /// The log's progress.
    pub marks: std::sync::Arc<LogMarks>,
    /// Its slot's bit in record masks.
    pub slot_bit: u64,
    /// Records below this were accepted by an earlier run (or while the endpoint was away):
    /// they are counted when taken; the rest were counted when committed.
    pub counted_from: u64,
    /// The next sequence number it has not taken.
    pub next_seq: u64,
    /// Reading the log rather than the ring.
    pub disk: bool,
    /// A read was asked for and has not been answered.
    pub reading: bool,
    /// When a failed read may be tried again.
    pub retry_read: Option<Instant>,
    /// The log is shared with other processes: the endpoint always reads it (the ring only
    /// carries this process's events).
    pub shared: bool,
    /// Its lease, when a lease manager decides which process delivers it (see
    /// `engine/lease.rs`).
    pub gate: Option<std::sync::Arc<Gate>>,
    /// The lease epoch it is delivering under (0: none).
    pub epoch: u64,
    /// Answers still to come to reads asked under an epoch it has left: ignored.
    pub stale_reads: u32,
}

impl LogLink {
    /// A link for the endpoint in `slot`, resuming at `acked`. It starts by reading the log
    /// (from `acked` to what is committed), then joins the ring.
    pub fn new(marks: std::sync::Arc<LogMarks>, slot: u8, acked: u64, counted_from: u64) -> Self {
        LogLink {
            marks,
            slot_bit: 1 << slot,
            counted_from,
            next_seq: acked,
            disk: true,
            reading: false,
            retry_read: None,
            shared: false,
            gate: None,
            epoch: 0,
            stale_reads: 0,
        }
    }

    /// Whether more may be read from the log now (a shared log: up to what is committed).
    pub fn more_to_read(&self) -> bool {
        if !self.disk || (self.gate.is_some() && self.epoch == 0) {
            return false;
        }
        !self.shared || self.next_seq <= self.marks.durable_through.load(Ordering::Acquire)
    }
}

impl super::Endpoint {
    /// A durable endpoint reading the log (after a restart, or once it lagged half a ring):
    /// moves its ring cursor to the head (everything there is committed, so the log has it),
    /// then asks for its records, up to `capacity` held, one read at a time. Once it has read
    /// everything committed, it goes back to the ring, passing over the entries it already
    /// read. Returns whether it asked for a read.
    pub(super) fn read_log<S: Events>(&mut self, src: &mut S, now: Instant) -> bool {
        let Some(d) = &mut self.log else {
            return false;
        };
        src.set_min_seq(d.next_seq);
        if !d.disk {
            return false;
        }
        // Routed first (see `Shared::routed`), then the ring, then the commit point: whatever
        // was skipped in the ring is at or below it. The ring is skipped even while a read is
        // out or a failed one waits to be retried, so this endpoint never holds producers back.
        let routed = self.shared.routed.load(Ordering::Acquire);
        src.skip_all();
        fence(Ordering::SeqCst);
        let through = d.marks.durable_through.load(Ordering::Acquire);
        if d.reading || d.retry_read.is_some_and(|t| now < t) {
            return false;
        }
        d.retry_read = None;
        if d.next_seq > through {
            // A shared log: the ring does not carry other processes' events; stay on the log.
            if routed && !d.shared {
                d.disk = false;
                self.shared.disk.store(false, Ordering::Release);
            }
            return false;
        }
        let room = self.p.capacity.saturating_sub(self.backlog.len());
        if room == 0 {
            return false;
        }
        d.reading = true;
        self.actions.push_back(Action::ReadLog {
            from: d.next_seq,
            through,
            mask: d.slot_bit,
            max: room,
        });
        true
    }

    /// Records read from the log (the answer to [`Action::ReadLog`]). Records lost in a
    /// damaged range are counted as `dropped.corrupt` (and, if an earlier run accepted them,
    /// in `events` as they are passed), so the identity holds; the endpoint goes on after
    /// them.
    pub fn handle_log(&mut self, read: LogRead, now: Instant) {
        let Some(d) = &mut self.log else {
            return;
        };
        if d.stale_reads > 0 {
            // Asked under a lease it has since left: another node may have moved on.
            d.stale_reads -= 1;
            return;
        }
        d.reading = false;
        let (mut old, mut bad, mut lost, mut reach) = (0u64, 0u64, 0u64, None::<u64>);
        // Lost ranges come in log order: each is counted from where the last one ended (or
        // from where this endpoint was), so nothing is counted twice.
        let mut counted_to = d.next_seq;
        for r in read.records {
            match r {
                Ok(h) => {
                    old += u64::from(h.seq < d.counted_from);
                    reach = reach.max(Some(h.seq + 1));
                    self.backlog.push_back(h);
                }
                Err(Unread::Undecodable { seq, error }) => {
                    old += u64::from(seq < d.counted_from);
                    reach = reach.max(Some(seq + 1));
                    bad += 1;
                    if let Some(held) = self.warn_log.check(now) {
                        log::error!(
                            "{}: record {seq} cannot be decoded, dropped: {error}{}",
                            self.shared.name,
                            warn::more(held)
                        );
                    }
                }
                Err(Unread::Lost { first, end, damage }) => {
                    // What this endpoint passed already is not counted again.
                    let first = first.max(counted_to);
                    reach = reach.max(Some(end));
                    if first >= end {
                        continue;
                    }
                    counted_to = end;
                    // Records of an earlier run are counted when passed, as when taken.
                    old += end.min(d.counted_from).saturating_sub(first);
                    lost += end - first;
                    if let Some(held) = self.warn_log.check(now) {
                        log::error!(
                            "{}: records {first}..{end} are lost to damage in the log ({} at \
                             byte {} of segment {}; copied to {}), counted as dropped{}",
                            self.shared.name,
                            damage.reason,
                            damage.offset,
                            damage.segment,
                            damage
                                .quarantined
                                .as_ref()
                                .map_or("nowhere".into(), |p| p.display().to_string()),
                            warn::more(held)
                        );
                    }
                }
            }
        }
        self.shared.taken.add(old);
        self.shared.dropped.add(DropReason::SinkError, bad);
        self.shared.dropped.add(DropReason::Corrupt, lost);
        match read.error {
            None => d.next_seq = d.next_seq.max(read.next),
            Some(e) => {
                // What was handed over (or skipped) before the failure is done: go on after it.
                if let Some(reach) = reach {
                    d.next_seq = d.next_seq.max(reach);
                }
                if let Some(held) = self.warn_log.check(now) {
                    log::error!(
                        "{}: reading the log at {} failed (retried every second): {e}{}",
                        self.shared.name,
                        d.next_seq,
                        warn::more(held)
                    );
                }
                d.retry_read = now.checked_add(Duration::from_secs(1));
            }
        }
        self.gauges();
    }

    /// With a lease (a shared store): whether this endpoint may deliver at `now`. A lease
    /// taken at a new epoch resumes from the cursor the store had then; a lease lost, lapsed
    /// or changed hands makes it hand back everything it holds (connections closed at once,
    /// events counted as `dropped.handed_over`: they stay in the log for the next holder).
    /// Without a lease: always true.
    pub(super) fn check_lease<S: Events>(&mut self, src: &mut S, now: Instant) -> bool {
        let Some(d) = &mut self.log else {
            return true;
        };
        let Some(gate) = &d.gate else {
            return true;
        };
        let st = gate.get();
        let open = st.open(now);
        if open && st.epoch == d.epoch {
            return true;
        }
        if d.epoch != 0 {
            log::info!(
                "{}: lease epoch {} {}; handing back what it holds",
                self.shared.name,
                d.epoch,
                if open {
                    "changed hands"
                } else {
                    "lost or lapsed"
                }
            );
            self.hand_over();
        }
        let Some(d) = &mut self.log else {
            return false;
        };
        src.skip_all();
        if open {
            d.epoch = st.epoch;
            d.next_seq = st.resume;
            d.disk = true;
            d.retry_read = None;
            self.shared.disk.store(true, Ordering::Release);
            self.gauges();
            true
        } else {
            d.epoch = 0;
            false
        }
    }

    /// Lets go of everything held, for another node to deliver: counted as
    /// `dropped.handed_over`; connections closed; a read still out is ignored when it comes.
    fn hand_over(&mut self) {
        let mut n = self.backlog.len() as u64;
        n += self.open.as_ref().map_or(0, super::batch::Batch::len);
        n += self.ready.iter().map(super::batch::Batch::len).sum::<u64>();
        n += self.flights.iter().map(|f| f.batch.len()).sum::<u64>();
        self.shared.dropped.add(DropReason::HandedOver, n);
        self.backlog.clear();
        self.open = None;
        self.ready.clear();
        self.flights.clear();
        self.close_all();
        if let Some(d) = &mut self.log {
            if d.reading {
                d.reading = false;
                d.stale_reads += 1;
            }
            d.epoch = 0;
        }
        self.gauges();
    }

    /// When a lease this endpoint delivers under lapses (its worker must look then).
    pub(super) fn lease_deadline(&self) -> Option<Instant> {
        let d = self.log.as_ref()?;
        if d.epoch == 0 {
            return None;
        }
        d.gate.as_ref()?.get().until
    }

    /// A durable endpoint that holds nothing and has read the ring to its head has finished
    /// every record the persistence thread has put in the ring, its own or not: its cursor
    /// moves past them, so an endpoint that filters everything out does not pin the log.
    pub(super) fn pass_foreign<S: Events>(&mut self, src: &mut S) {
        if self.holds_events() {
            return;
        }
        let Some(d) = &mut self.log else {
            return;
        };
        if d.shared {
            // The ring does not carry every record: the log reads pass them instead.
            return;
        }
        // The mark first: every record up to it is in the ring before it is stored.
        let mark = d.marks.published_through.load(Ordering::Acquire);
        src.skip_foreign();
        if !src.has_entry() && mark >= d.next_seq {
            d.next_seq = mark + 1;
            src.set_min_seq(d.next_seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::time::{Instant, SystemTime};

    use super::super::tests::Queue;
    use super::super::{Endpoint, Prepared};
    use super::*;
    use crate::RawEvent;
    use crate::config::EndpointConfig;
    use crate::engine::EndpointId;
    use crate::engine::shared::Shared;
    use crate::store::DamageKind;

    fn damage(first: u64, end: u64) -> Damage {
        Damage {
            kind: DamageKind::Corrupt,
            segment: 1,
            offset: 64,
            bytes: 100,
            reason: "record checksum mismatch".into(),
            after_seq: first - 1,
            next_seq: end,
            lost: end - first,
            quarantined: None,
        }
    }

    /// A durable endpoint called `ep` on `link`, and its counters.
    fn durable_endpoint(link: LogLink, now: Instant) -> (Endpoint, Arc<Shared>) {
        let config = EndpointConfig::new("ep", "http://127.0.0.1:9/").durable();
        let secrets = config.validate().unwrap();
        let p = Prepared::new(&config, secrets).unwrap();
        let shared = Arc::new(Shared::new(
            EndpointId(1),
            0,
            0,
            &config,
            config.url.clone(),
        ));
        let ep = Endpoint::new(
            p,
            shared.clone(),
            Arc::new(AtomicU64::new(0)),
            Some(link),
            false,
            SystemTime::now(),
            now,
        );
        (ep, shared)
    }

    fn held(seq: u64, now: Instant) -> Result<Held, Unread> {
        Ok(Held {
            event: RawEvent::parse(format!(r#"{{"id":"e{seq}"}}"#)).unwrap(),
            at: now,
            seq,
        })
    }

    /// Issue 12: with a lease (a shared store), the endpoint reads and sends only while its
    /// gate is open; a new epoch resumes from the store's cursor; losing the lease closes
    /// its connections at once, counts what it held as handed over, and ignores the answer
    /// of a read asked under the old epoch. Driven with an injected clock.
    #[test]
    fn a_leased_endpoint_delivers_only_while_its_gate_is_open() {
        let marks = Arc::new(LogMarks::at(100));
        let board = crate::engine::lease::LeaseBoard::new(marks.clone());
        let mut link = LogLink::new(marks, 0, 1, u64::MAX);
        link.shared = true;
        link.gate = Some(board.gate("ep"));
        let now = Instant::now();
        let (mut ep, shared) = durable_endpoint(link, now);
        let mut src = Queue::default();
        let actions =
            |ep: &mut Endpoint| std::iter::from_fn(|| ep.poll_action()).collect::<Vec<_>>();
        // Not held: nothing is read, and it holds nothing (a removal need not wait for it).
        ep.pump(&mut src, now);
        assert!(actions(&mut ep).is_empty());
        assert!(!ep.holds_events());
        // Granted at epoch 1 from cursor 5: it reads from 5 up to what is committed.
        let until = now + std::time::Duration::from_secs(10);
        board.grant("ep", 1, 5, until);
        ep.pump(&mut src, now);
        let a = actions(&mut ep);
        assert!(
            matches!(
                a.as_slice(),
                [Action::ReadLog {
                    from: 5,
                    through: 100,
                    ..
                }]
            ),
            "{a:?}"
        );
        ep.handle_log(
            LogRead {
                records: vec![held(5, now), held(6, now)],
                next: 101,
                error: None,
            },
            now,
        );
        ep.pump(&mut src, now);
        let a = actions(&mut ep);
        assert!(a.iter().any(|x| matches!(x, Action::Send { .. })), "{a:?}");
        assert_eq!(shared.taken.get(), 2, "counted when taken (a shared store)");
        assert_eq!(ep.poll_timeout().map(|t| t <= until), Some(true));
        // The lease lapses (no renewal came): at the deadline it closes its connection and
        // hands back the two events, without another request.
        ep.pump(&mut src, until);
        let a = actions(&mut ep);
        assert!(a.iter().any(|x| matches!(x, Action::Close { .. })), "{a:?}");
        assert!(
            !a.iter()
                .any(|x| matches!(x, Action::Send { .. } | Action::ReadLog { .. })),
            "{a:?}"
        );
        let m = shared.snapshot(0);
        assert_eq!(m.metrics.dropped[&DropReason::HandedOver], 2, "{m:?}");
        assert!(!ep.holds_events());
        // Granted again at epoch 2 (another node moved the cursor to 50): it resumes there.
        board.grant("ep", 2, 50, until + std::time::Duration::from_secs(10));
        ep.pump(&mut src, until);
        let a = actions(&mut ep);
        assert!(
            matches!(a.as_slice(), [Action::ReadLog { from: 50, .. }]),
            "{a:?}"
        );
        // Revoked while that read is out: the answer, when it comes, is ignored.
        board.revoke("ep");
        ep.pump(&mut src, until);
        ep.handle_log(
            LogRead {
                records: vec![held(50, until)],
                next: 101,
                error: None,
            },
            until,
        );
        assert_eq!(shared.taken.get(), 2, "the stale answer was not taken");
        let until3 = until + std::time::Duration::from_secs(10);
        board.grant("ep", 3, 60, until3);
        ep.pump(&mut src, until);
        let a = actions(&mut ep);
        assert!(
            matches!(a.as_slice(), [Action::ReadLog { from: 60, .. }]),
            "{a:?}"
        );
        ep.handle_log(
            LogRead {
                records: vec![held(60, until)],
                next: 65,
                error: None,
            },
            until,
        );
        // A renewal of the epoch it delivers under (the store's cursor lags): it goes on
        // from where it is.
        board.grant("ep", 3, 55, until3);
        ep.pump(&mut src, until);
        assert_eq!(ep.log.as_ref().unwrap().next_seq, 65);
        // Its gate lapses (the database was away), then the same epoch is renewed in time:
        // it starts again from the store's cursor, not from where the epoch began.
        ep.pump(&mut src, until3);
        actions(&mut ep);
        board.grant("ep", 3, 61, until3 + std::time::Duration::from_secs(10));
        ep.pump(&mut src, until3);
        let a = actions(&mut ep);
        assert!(
            matches!(a.as_slice(), [Action::ReadLog { from: 61, .. }]),
            "{a:?}"
        );
    }

    /// Issue 10, item 2: records lost to damage are counted (`dropped.corrupt`; those of an
    /// earlier run in `events` too), once, and the endpoint goes on after them.
    #[test]
    fn records_lost_to_damage_are_counted_once_and_passed() {
        // Resumes at 5; this run counts from 20 (what is below came from an earlier run).
        let marks = Arc::new(LogMarks::at(30));
        let link = LogLink::new(marks, 0, 5, 20);
        let now = Instant::now();
        let (mut ep, shared) = durable_endpoint(link, now);
        let mut src = Queue::default();
        ep.pump(&mut src, now);
        while ep.poll_action().is_some() {}
        // 5, then 6..=9 lost, then 10; then 18..=21 lost (two of an earlier run, two of this
        // one: counted at commit already), reported twice (two ranges passed by one read).
        ep.handle_log(
            LogRead {
                records: vec![
                    held(5, now),
                    LogRead::lost(6, 10, &damage(6, 10)),
                    held(10, now),
                    LogRead::lost(18, 22, &damage(18, 22)),
                    LogRead::lost(18, 22, &damage(18, 22)),
                ],
                next: 22,
                error: None,
            },
            now,
        );
        let m = shared.snapshot(0);
        let corrupt = m.metrics.dropped[&DropReason::Corrupt];
        assert_eq!(corrupt, 4 + 4, "{m:?}");
        assert_eq!(shared.taken.get(), 2 + 4 + 2, "5 and 10, 6..=9, 18 and 19");
        assert_eq!(ep.log.as_ref().unwrap().next_seq, 22);
        // A failed read after a skipped range: the endpoint goes on after the range, and a
        // range it already passed is not counted again.
        ep.log.as_mut().unwrap().reading = true;
        ep.handle_log(
            LogRead {
                records: vec![
                    LogRead::lost(18, 22, &damage(18, 22)),
                    LogRead::lost(24, 26, &damage(24, 26)),
                ],
                next: 22,
                error: Some(Error::Closed),
            },
            now,
        );
        let m = shared.snapshot(0);
        assert_eq!(m.metrics.dropped[&DropReason::Corrupt], 8 + 2);
        assert_eq!(ep.log.as_ref().unwrap().next_seq, 26);
        assert_eq!(
            shared.taken.get(),
            8,
            "24 and 25 were this run's: counted at commit"
        );
    }
}
