//! The webhook endpoint as a Sans-IO state machine.
//!
//! An [`Endpoint`] owns no socket, no file, no thread and no clock. Its inputs are events (read
//! in place from its [`Events`] source), what happened to its connections and requests
//! (`handle_connected`, `handle_response`, `handle_failure`, `handle_closed`), records read
//! from the log (`handle_log`), a name resolution (`handle_resolved`) and time (every input
//! carries `now`; `handle_timeout` when [`poll_timeout`](Endpoint::poll_timeout) has passed).
//! Its outputs are [`Action`]s, taken with [`poll_action`](Endpoint::poll_action): send a
//! request (on a new connection or an idle one), close a connection, read the log, hand dead
//! letters on, resolve the host again. Its counters and gauges are the atomics of its
//! [`Shared`] half, which any thread may read.
//!
//! The worker is its only driver in the engine (it owns the sockets, the timers, the clock and
//! the hand-offs to the log reader and the persistence thread); the simulator drives it with a
//! fake clock, a fake network and a fake log, and replays any schedule exactly.
//!
//! Events flow: source -> (`backlog`, when the endpoint lags half a ring or reads the log) ->
//! the open batch -> `ready` (formed batches; a failed batch goes back to the front, so order
//! holds) -> a request on one of at most `max_in_flight` keep-alive connections -> delivered,
//! retried, or dead-lettered.
//!
//! One file per part: [`batch`] (the envelope), [`intake`] (taking events into batches),
//! [`prepare`] (the configuration, checked),
//! [`conns`] (connection slots and their deadlines), [`request`] (sending and what an
//! answer means), [`log_link`] (a durable endpoint's place in the log), [`warn`] (throttled
//! warnings).

mod batch;
mod conns;
mod intake;
mod log_link;
mod prepare;
mod request;
pub(crate) mod warn;

pub(crate) use batch::Held;
pub(crate) use log_link::{LogLink, LogMarks, LogRead};
pub(crate) use prepare::Prepared;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::Error;
use crate::config::Overflow;
use crate::http::target::Target;
use crate::policy::Attempt;
use crate::stats::DropReason;
use crate::store::DeadLetter;

use super::shared::Shared;
use super::source::Events;
use batch::Batch;
use conns::ConnSlot;
use warn::{Throttle, WARN_EVERY};

/// A connection of one endpoint: an index below its `max_in_flight`.
pub(crate) type ConnId = usize;

/// The Standard Webhooks headers of a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Signed {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: String,
    /// `webhook-signature`.
    pub signature: String,
}

/// What the endpoint asks its driver to do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Start a `POST` of `body` on connection `conn`; open it first if `connect` (to
    /// [`Endpoint::target`]). Answer with `handle_connected` once it is up, then
    /// `handle_response` or `handle_failure`. The request headers are
    /// [`Endpoint::headers`] and, if given, the signature headers.
    Send {
        /// Which connection.
        conn: ConnId,
        /// Open it first.
        connect: bool,
        /// The envelope, shared with the batch it came from (an attempt copies no byte).
        body: crate::http::Body,
        /// The signature headers, if the endpoint signs.
        signed: Option<Signed>,
    },
    /// Close connection `conn` (and forget it: the id will be reused).
    Close {
        /// Which connection.
        conn: ConnId,
    },
    /// Read the log: records for this endpoint (`mask`) with `from <= seq <= through`, at
    /// most `max` of them. Answer with `handle_log`.
    ReadLog {
        /// The first sequence number to look at.
        from: u64,
        /// The last (committed) one.
        through: u64,
        /// The endpoint's slot bit.
        mask: u64,
        /// Most records to hand back.
        max: usize,
    },
    /// Events given up on: persist them (durable) or hand them to the dead-letter hook.
    DeadLetter(Vec<DeadLetter>),
    /// Resolve the target's host again. Answer with `handle_resolved`.
    Resolve,
}

/// A request on the wire.
#[derive(Debug)]
struct Flight {
    batch: Batch,
    conn: ConnId,
    started: Instant,
    deadline: Instant,
}

/// Resolve the host again at most this often (after connection failures only).
pub(crate) const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// The state of one webhook endpoint.
pub(crate) struct Endpoint {
    p: Prepared,
    shared: Arc<Shared>,
    /// The dispatcher's "full" bits (this endpoint sets and clears its own).
    full_bits: Arc<AtomicU64>,
    backlog: VecDeque<Held>,
    open: Option<Batch>,
    ready: VecDeque<Batch>,
    flights: Vec<Flight>,
    conns: Vec<Option<ConnSlot>>,
    disabled: bool,
    not_before: Option<Instant>,
    /// Its cursor's position and the ring entries behind it at the last pump (published for
    /// it, or for others, interleaved, and not taken yet). Unread entries count against
    /// `capacity`, so that what a memory endpoint holds, taken or not, stays within it.
    pos: u64,
    unread: u64,
    log: Option<LogLink>,
    /// Shut down: its cursor no longer moves.
    abandoned: bool,
    /// Batches keep their events (for dead letters).
    keep_events: bool,
    actions: VecDeque<Action>,
    /// Wall-clock time at `wall_base.1`, for signatures, `Retry-After` dates and dead letters.
    wall_base: (SystemTime, Instant),
    /// A resolution was asked for and not answered; when the last one was asked.
    resolving: bool,
    resolved_at: Instant,
    warn_give_up: Throttle,
    warn_log: Throttle,
    warn_dns: Throttle,
}

impl Endpoint {
    /// A fresh endpoint. `log` links a durable one to the log; `keep_events` keeps given-up
    /// events for dead letters (always for a durable endpoint). `wall` is the wall-clock time
    /// at `now`.
    pub fn new(
        p: Prepared,
        shared: Arc<Shared>,
        full_bits: Arc<AtomicU64>,
        log: Option<LogLink>,
        keep_events: bool,
        wall: SystemTime,
        now: Instant,
    ) -> Endpoint {
        if let Some(d) = &log {
            shared.acked.store(d.next_seq, Ordering::Release);
            shared.disk.store(true, Ordering::Release);
        }
        Endpoint {
            keep_events: keep_events || log.is_some(),
            log,
            abandoned: false,
            p,
            shared,
            full_bits,
            backlog: VecDeque::new(),
            open: None,
            ready: VecDeque::new(),
            flights: Vec::new(),
            conns: Vec::new(),
            disabled: false,
            not_before: None,
            pos: 0,
            unread: 0,
            actions: VecDeque::new(),
            wall_base: (wall, now),
            resolving: false,
            resolved_at: now,
            warn_give_up: Throttle::new(WARN_EVERY),
            warn_log: Throttle::new(WARN_EVERY),
            warn_dns: Throttle::new(WARN_EVERY),
        }
    }

    /// Where its requests go.
    pub fn target(&self) -> &Target {
        &self.p.target
    }

    /// The headers every request carries (the signature headers come with each
    /// [`Action::Send`]).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.p.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether it would take an event from its source right now.
    pub fn wants_events(&self) -> bool {
        self.could_send() && self.ready.is_empty()
    }

    fn could_send(&self) -> bool {
        !self.disabled && self.not_before.is_none() && self.flights.len() < self.in_flight_limit()
    }

    /// Requests that may be in flight now: `max_in_flight`, or what adaptive concurrency
    /// has learnt.
    pub fn in_flight_limit(&self) -> usize {
        self.p
            .adaptive
            .as_ref()
            .map_or(self.p.max_in_flight, |a| a.limit())
    }

    /// Whether it holds any event (backlog, batches, requests), or may have some in the log.
    pub fn holds_events(&self) -> bool {
        self.log.as_ref().is_some_and(LogLink::more_to_read)
            || !self.backlog.is_empty()
            || self.open.as_ref().is_some_and(|b| !b.is_empty())
            || !self.ready.is_empty()
            || !self.flights.is_empty()
    }

    /// The next moment something is due: a request's or connection's deadline, the end of a
    /// backoff, a lingering batch, a failed log read to try again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // A lingering batch matters only if it could be sent when its linger ends.
        let linger = self
            .open
            .as_ref()
            .filter(|b| {
                self.could_send()
                    && self.ready.is_empty()
                    && !b.is_empty()
                    && !self.p.batch.linger.is_zero()
            })
            .and_then(|b| b.ats[0].checked_add(self.p.batch.linger));
        let retry_read = self.log.as_ref().and_then(|d| d.retry_read);
        self.conn_deadline()
            .into_iter()
            .chain(self.not_before)
            .chain(linger)
            .chain(retry_read)
            .chain(self.lease_deadline())
            .min()
    }

    /// Time passed: fails what is overdue, closes what idled too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
        self.gauges();
    }

    /// Takes events, forms batches, starts requests. Returns whether anything moved.
    pub fn pump<S: Events>(&mut self, src: &mut S, now: Instant) -> bool {
        #[cfg(test)]
        tests::maybe_panic(&self.shared.name);
        let mut progress = self.relieve(src);
        if !self.check_lease(src, now) {
            // Not this node's to deliver now (a shared store): nothing is read or sent.
            self.pos = src.position();
            self.unread = src.lag();
            self.gauges();
            return progress;
        }
        progress |= self.read_log(src, now);
        if let Some(t) = self.not_before
            && now >= t
        {
            self.not_before = None;
        }
        while self.could_send() {
            if self.ready.is_empty() {
                progress |= self.fill(src);
                if !self.close_open(now) {
                    break;
                }
            }
            let attempt = self.ready[0].attempt.unwrap_or_else(|| Attempt::first(now));
            // The rate limits first: asking the strategy could take a breaker's one half-open
            // probe, which must not then sit unused while the tokens come (the simulator found
            // that: the breaker stayed half-open for good).
            let mut wait = self.rate_wait(self.ready[0].len(), now);
            if wait.is_zero() {
                wait = self.p.strategy.proceed(&(), &attempt, now);
                self.shared.set_breaker(self.p.strategy.breaker());
            }
            if !wait.is_zero() {
                self.not_before = now.checked_add(wait);
                break;
            }
            self.take_rate(self.ready[0].len(), now);
            let batch = self.ready.pop_front().expect("checked above");
            self.send(batch, now);
            progress = true;
        }
        self.pass_foreign(src);
        self.pos = src.position();
        self.unread = src.lag();
        self.gauges();
        progress
    }

    /// How long the rate limits make a request of `events` wait (zero: none, or go now).
    fn rate_wait(&mut self, events: u64, now: Instant) -> Duration {
        let ev = self
            .p
            .rate
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait(events as f64, now));
        let req = self
            .p
            .request_rate
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait(1.0, now));
        ev.max(req)
    }

    /// Spends the tokens of a request of `events` that goes now.
    fn take_rate(&mut self, events: u64, now: Instant) {
        if let Some(b) = &mut self.p.rate {
            b.take(events as f64, now);
        }
        if let Some(b) = &mut self.p.request_rate {
            b.take(1.0, now);
        }
    }

    /// Pauses or resumes delivery (a command from the dispatcher).
    pub fn set_disabled(&mut self, disabled: bool, now: Instant) {
        if disabled {
            self.disabled = true;
            self.shared
                .set_disabled(Some("disabled by the host".into()));
        } else if self.disabled {
            self.disabled = false;
            self.not_before = None;
            self.p.strategy.enable(now);
            self.shared.set_breaker(self.p.strategy.breaker());
            self.shared.set_disabled(None);
        }
        self.gauges();
    }

    /// The host's addresses, resolved again (after [`Action::Resolve`]).
    pub fn handle_resolved(&mut self, result: Result<Vec<SocketAddr>, Error>, now: Instant) {
        self.resolving = false;
        match result {
            Ok(addrs) if !addrs.is_empty() => {
                if addrs != self.p.target.addrs {
                    log::info!(
                        "{}: {} now resolves to {addrs:?} (was {:?})",
                        self.shared.name,
                        self.p.target.host,
                        self.p.target.addrs
                    );
                    self.p.target.addrs = addrs;
                }
            }
            Ok(_) => self.warn_dns(
                now,
                &Error::Io {
                    kind: std::io::ErrorKind::NotFound,
                    message: format!("{} resolved to no address", self.p.target.host),
                    source: None,
                },
            ),
            Err(e) => self.warn_dns(now, &e),
        }
    }

    fn warn_dns(&mut self, now: Instant, e: &Error) {
        if let Some(held) = self.warn_dns.check(now) {
            log::warn!(
                "{}: resolving {} again failed (keeping {:?}): {e}{}",
                self.shared.name,
                self.p.target.host,
                self.p.target.addrs,
                warn::more(held)
            );
        }
    }

    /// After a connection-level failure: asks for the host to be resolved again, at most
    /// every [`RESOLVE_EVERY`], and never for an IP address.
    fn maybe_resolve(&mut self, err: &Error, now: Instant) {
        let connection_level = matches!(err, Error::Io { .. })
            || matches!(err, Error::Timeout { waiting_for, .. } if *waiting_for == "connect");
        if !connection_level
            || self.resolving
            || self.p.target.host.parse::<std::net::IpAddr>().is_ok()
            || now.saturating_duration_since(self.resolved_at) < RESOLVE_EVERY
        {
            return;
        }
        self.resolving = true;
        self.resolved_at = now;
        self.actions.push_back(Action::Resolve);
    }

    /// Wall-clock time at `now`.
    fn wall(&self, now: Instant) -> SystemTime {
        let (wall, at) = self.wall_base;
        match now.checked_duration_since(at) {
            Some(d) => wall + d,
            None => wall - at.duration_since(now),
        }
    }

    /// Milliseconds since the Unix epoch at `now`.
    fn unix_ms(&self, now: Instant) -> u64 {
        self.wall(now)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// Publishes the queue gauges, the cursor (durable) and the "full" bit.
    fn gauges(&mut self) {
        let open = self.open.as_ref().map_or(0, Batch::len);
        let queued =
            self.backlog.len() as u64 + open + self.ready.iter().map(Batch::len).sum::<u64>();
        let in_flight = self.flights.iter().map(|f| f.batch.len()).sum::<u64>();
        self.shared.queued.store(queued, Ordering::Release);
        self.shared.in_flight.store(in_flight, Ordering::Release);
        self.shared.set_breaker(self.p.strategy.breaker());
        if !self.abandoned
            && let Some(d) = &self.log
        {
            self.shared.acked.store(self.acked(d), Ordering::Release);
        }
        // A memory endpoint holds what it took and what waits for it in the ring; a durable one
        // reads its backlog from the log, so only what it copied into memory counts.
        let held = match &self.log {
            None => queued + in_flight + self.unread,
            Some(_) => self.backlog.len() as u64,
        };
        let bounded = self.p.overflow != Overflow::DropOldest;
        let full = bounded && held >= self.p.capacity as u64;
        if bounded && self.log.is_none() {
            // Where `publish` must look again: the position past which the ring would give
            // it more than its capacity.
            let room = (self.p.capacity as u64).saturating_sub(queued + in_flight);
            self.shared
                .room_until
                .store(self.pos.saturating_add(room), Ordering::Release);
        }
        // `publish` sets the bit too (see `room_until`): compare with the bit, not a copy.
        let set = self.full_bits.load(Ordering::Acquire) & (1u64 << self.shared.bit) != 0;
        if full != set {
            let bit = 1u64 << self.shared.bit;
            if full {
                self.full_bits.fetch_or(bit, Ordering::AcqRel);
            } else {
                self.full_bits.fetch_and(!bit, Ordering::AcqRel);
            }
        }
    }

    /// Where a durable endpoint's cursor is: the oldest event it holds, or the next it has
    /// not taken.
    fn acked(&self, d: &LogLink) -> u64 {
        let batches = self
            .flights
            .iter()
            .map(|f| &f.batch)
            .chain(&self.ready)
            .chain(&self.open);
        batches
            .filter_map(|b| b.seqs.first().copied())
            .chain(self.backlog.front().map(|h| h.seq))
            .min()
            .unwrap_or(d.next_seq)
    }

    /// Lets go of everything (shutdown, removal) and closes every connection. A memory
    /// endpoint counts what it held as dropped (`shutdown`), requests on the wire included. A
    /// durable endpoint drops nothing: its cursor stays where it is (what it held stays in the
    /// log, pending), for the next run.
    pub fn abandon(&mut self) {
        if self.log.is_some() {
            self.gauges();
            self.abandoned = true;
        } else {
            let mut n = self.backlog.len() as u64;
            n += self.open.as_ref().map_or(0, Batch::len);
            n += self.ready.iter().map(Batch::len).sum::<u64>();
            n += self.flights.iter().map(|f| f.batch.len()).sum::<u64>();
            self.shared.dropped.add(DropReason::Shutdown, n);
        }
        self.backlog.clear();
        self.open = None;
        self.ready.clear();
        self.flights.clear();
        self.close_all();
        self.p.capacity = usize::MAX;
        self.gauges();
    }

    /// Takes every event it holds, oldest first (an endpoint that failed hands them on as
    /// dead letters).
    pub fn take_held(&mut self) -> Vec<Held> {
        let mut flights: Vec<Flight> = self.flights.drain(..).collect();
        flights.sort_by_key(|f| f.started);
        let batches = flights
            .into_iter()
            .map(|f| f.batch)
            .chain(self.ready.drain(..))
            .chain(self.open.take());
        let mut out = Vec::new();
        for b in batches {
            let seqs = b.seqs.iter().copied().chain(std::iter::repeat(0));
            for ((event, at), seq) in b.events.into_iter().zip(b.ats).zip(seqs) {
                out.push(Held { event, at, seq });
            }
        }
        out.extend(self.backlog.drain(..));
        out
    }

    /// How much it holds in memory: backlog, formed batches, requests, connections (tests).
    #[cfg(test)]
    pub(crate) fn sizes(&self) -> (usize, usize, usize, usize) {
        let conns = self.conns.iter().flatten().count();
        (
            self.backlog.len(),
            self.ready.len(),
            self.flights.len(),
            conns,
        )
    }
}

#[cfg(test)]
#[path = "tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
mod sim;
