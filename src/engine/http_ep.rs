//! A webhook endpoint inside its worker: backlog, batches, connections, retries, breaker.
//!
//! Events flow: ring (read in place) -> the open batch (the envelope is written straight from
//! the ring's bytes, so a healthy endpoint copies each event once, into its request body) ->
//! `ready` (formed batches; a batch that failed goes back to the front, so order holds) ->
//! a request on one of at most `max_in_flight` keep-alive connections -> delivered,
//! retried, or dead-lettered. An endpoint that cannot keep up copies its oldest events out
//! of the ring into `backlog` (one `Arc` clone each) once it lags half a ring, so it never
//! holds the ring back; its capacity bounds that backlog, with its overflow policy.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::endpoint::{BatchConfig, EndpointConfig, MAX_DURATION};
use crate::http::conn::{Conn, Progress, Response, Timeouts};
use crate::http::target::Target;
use crate::http::{Secret, Signer, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
use crate::policy::{Attempt, parse_retry_after};
use crate::sink::{Overflow, RetryStrategy, Verdict};
use crate::stats::DropReason;
use crate::store::{DeadLetter, StoreReader};
use crate::{Error, Event, RawEvent};

use super::persist::{Durable, unix_ms};
use super::shared::Shared;
use super::worker::{Io, Source};

/// How long an unused keep-alive connection is kept.
const IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Headers the endpoint sets itself; a configured header may not replace them.
const RESERVED: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "upgrade",
];

/// An endpoint's configuration, checked and resolved on the caller's thread.
pub(crate) struct Prepared {
    target: Target,
    headers: Vec<(String, String)>,
    signer: Option<Signer>,
    batch: BatchConfig,
    max_in_flight: usize,
    timeouts: Timeouts,
    strategy: Box<dyn RetryStrategy<()>>,
    capacity: usize,
    overflow: Overflow,
}

impl Prepared {
    /// Checks what `validate` does not, parses the URL and resolves its host (blocking DNS,
    /// which is why this runs in `add_endpoint` and never in a worker).
    pub fn new(config: &EndpointConfig, secrets: Vec<Secret>) -> Result<Self, Error> {
        for (field, d) in [
            ("timeout", Some(config.timeout)),
            ("connect_timeout", config.connect_timeout),
        ] {
            if let Some(d) = d
                && (d.is_zero() || d > MAX_DURATION)
            {
                return Err(Error::config(
                    field,
                    format!("{d:?} must be more than zero and at most a year"),
                ));
            }
        }
        if let Overflow::Block { timeout: Some(d) } = config.overflow
            && (d.is_zero() || d > MAX_DURATION)
        {
            return Err(Error::config(
                "overflow",
                format!("a Block timeout of {d:?} must be more than zero and at most a year"),
            ));
        }
        if config.capacity == 0 {
            return Err(Error::config("capacity", "must be at least 1"));
        }
        let target = Target::parse(&config.url, &config.tls)?;
        let mut headers = vec![(
            "User-Agent".to_string(),
            concat!("hookwire/", env!("CARGO_PKG_VERSION")).to_string(),
        )];
        if !config
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("Content-Type".into(), config.media_type.as_str().into()));
        }
        for (name, value) in &config.headers {
            let token = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
            if name.is_empty() || !name.bytes().all(token) {
                return Err(Error::config(
                    "headers",
                    format!("{name:?} is not a valid header name"),
                ));
            }
            if RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
                return Err(Error::config(
                    "headers",
                    format!("{name} is set by hookwire itself"),
                ));
            }
            if value.bytes().any(|c| c == b'\r' || c == b'\n' || c == 0) {
                return Err(Error::config(
                    "headers",
                    format!("the value of {name} is not a valid header value"),
                ));
            }
            headers.push((name.clone(), value.clone()));
        }
        let signer = if secrets.is_empty() {
            None
        } else {
            Some(Signer::new(secrets)?)
        };
        Ok(Prepared {
            target,
            headers,
            signer,
            batch: config.batch,
            max_in_flight: config.max_in_flight,
            timeouts: Timeouts {
                connect: config.connect_timeout.unwrap_or(config.timeout),
                request: config.timeout,
                idle: IDLE,
            },
            strategy: crate::endpoint::strategy::<()>(config)?,
            capacity: config.capacity,
            overflow: config.overflow,
        })
    }
}

/// An event copied out of the ring, or read from the log.
struct Held {
    event: RawEvent,
    at: Instant,
    seq: u64,
}

/// A durable endpoint's link to the log.
pub(crate) struct DurableLink {
    durable: Arc<Durable>,
    /// Its slot's bit in record masks.
    slot_bit: u64,
    /// Records below this were accepted by an earlier run (or while the endpoint was away):
    /// they are counted when taken; the rest were counted when committed.
    counted_from: u64,
    /// The next sequence number it has not taken.
    next_seq: u64,
    /// Reading the log rather than the ring.
    disk: bool,
    reader: Option<Box<dyn StoreReader>>,
    /// When a failed read may be tried again.
    retry_read: Option<Instant>,
}

impl DurableLink {
    /// A link for the endpoint in `slot`, resuming at `acked`. It starts by reading the log
    /// (from `acked` to what is committed), then joins the ring.
    pub fn new(durable: Arc<Durable>, slot: u8, acked: u64, counted_from: u64) -> Self {
        DurableLink {
            durable,
            slot_bit: 1 << slot,
            counted_from,
            next_seq: acked,
            disk: true,
            reader: None,
            retry_read: None,
        }
    }

    /// Where it resumes.
    pub fn resume_at(&self) -> u64 {
        self.next_seq
    }
}

/// One request's worth of events, as the envelope that carries them.
struct Batch {
    body: Vec<u8>,
    first_id: String,
    msg_id: String,
    /// When each event was published (for the lag histogram).
    ats: Vec<Instant>,
    /// Durable endpoints: each event's sequence number, and the event (for dead letters).
    seqs: Vec<u64>,
    events: Vec<RawEvent>,
    /// The attempt last made (None before the first).
    attempt: Option<Attempt>,
    /// Whether it was already resent once after a stale keep-alive connection failed.
    stale_retried: bool,
    /// The next event did not fit: send it now, whatever the linger says.
    overflowed: bool,
}

const HEAD: &[u8] = br#"{"events":["#;
const TAIL: &[u8] = b"]}";

impl Batch {
    fn new() -> Batch {
        Batch {
            body: HEAD.to_vec(),
            first_id: String::new(),
            msg_id: String::new(),
            ats: Vec::new(),
            seqs: Vec::new(),
            events: Vec::new(),
            attempt: None,
            stale_retried: false,
            overflowed: false,
        }
    }

    fn len(&self) -> u64 {
        self.ats.len() as u64
    }

    /// Whether an event of `n` bytes still fits under `max_bytes` (an empty batch takes
    /// anything: an oversized event goes alone).
    fn fits(&self, n: usize, max_bytes: usize) -> bool {
        self.ats.is_empty() || self.body.len() + n + 1 + TAIL.len() <= max_bytes
    }

    /// Adds an event; `seq` is its place in the log (durable endpoints; 0 otherwise).
    fn push(&mut self, event: &RawEvent, at: Instant, seq: u64) {
        if self.ats.is_empty() {
            self.first_id = event.id().into_owned();
        } else {
            self.body.push(b',');
        }
        self.body.extend_from_slice(event.json().as_bytes());
        self.ats.push(at);
        if seq != 0 {
            self.seqs.push(seq);
            self.events.push(event.clone());
        }
    }

    /// Closes the envelope and names the message (`webhook-id`): the event's id, or
    /// `{first}+{n}` for a batch, stable across retries.
    fn seal(&mut self) {
        self.body.extend_from_slice(TAIL);
        self.msg_id = if self.ats.len() == 1 {
            std::mem::take(&mut self.first_id)
        } else {
            format!("{}+{}", self.first_id, self.ats.len())
        };
    }
}

struct Flight {
    batch: Batch,
    conn: usize,
    started: Instant,
}

/// The worker-side state of one webhook endpoint.
pub(crate) struct HttpEp {
    p: Prepared,
    shared: Arc<Shared>,
    backlog: VecDeque<Held>,
    open: Option<Batch>,
    ready: VecDeque<Batch>,
    flights: Vec<Flight>,
    conns: Vec<Option<Conn>>,
    disabled: bool,
    not_before: Option<Instant>,
    full: bool,
    durable: Option<DurableLink>,
    /// Shut down: its cursor no longer moves.
    abandoned: bool,
}

impl HttpEp {
    /// A fresh endpoint; `durable` links a durable one to the log.
    pub fn new(p: Prepared, shared: Arc<Shared>, durable: Option<DurableLink>) -> HttpEp {
        if let Some(d) = &durable {
            shared.acked.store(d.next_seq, Ordering::Release);
            shared.disk.store(true, Ordering::Release);
        }
        HttpEp {
            durable,
            abandoned: false,
            p,
            shared,
            backlog: VecDeque::new(),
            open: None,
            ready: VecDeque::new(),
            flights: Vec::new(),
            conns: Vec::new(),
            disabled: false,
            not_before: None,
            full: false,
        }
    }

    /// Whether it would take an event from the ring right now.
    pub fn wants_events(&self) -> bool {
        !self.disabled
            && self.not_before.is_none()
            && self.ready.is_empty()
            && self.flights.len() < self.p.max_in_flight
    }

    /// Whether it holds any event (backlog, batches, requests), or may have some in the log.
    pub fn holds_events(&self) -> bool {
        self.durable.as_ref().is_some_and(|d| d.disk)
            || !self.backlog.is_empty()
            || self.open.as_ref().is_some_and(|b| !b.ats.is_empty())
            || !self.ready.is_empty()
            || !self.flights.is_empty()
    }

    /// The next moment something is due: a connection's timeout, the end of a backoff, a
    /// lingering batch.
    pub fn deadline(&self) -> Option<Instant> {
        // A lingering batch matters only if it could be sent when its linger ends.
        let could_send = !self.disabled
            && self.not_before.is_none()
            && self.ready.is_empty()
            && self.flights.len() < self.p.max_in_flight;
        let linger = self
            .open
            .as_ref()
            .filter(|b| could_send && !b.ats.is_empty() && !self.p.batch.linger.is_zero())
            .and_then(|b| b.ats[0].checked_add(self.p.batch.linger));
        let conns = self.conns.iter().flatten().filter_map(Conn::deadline);
        let retry_read = self.durable.as_ref().and_then(|d| d.retry_read);
        conns
            .chain(self.not_before)
            .chain(linger)
            .chain(retry_read)
            .min()
    }

    /// Takes events, forms batches, starts requests. Returns whether anything moved.
    pub fn pump(&mut self, src: &mut Source, io: &mut Io<'_>) -> bool {
        let mut progress = self.redrive(io);
        progress |= self.relieve(src, io);
        progress |= self.read_log(src, io);
        if let Some(t) = self.not_before
            && io.now >= t
        {
            self.not_before = None;
        }
        while !self.disabled
            && self.not_before.is_none()
            && self.flights.len() < self.p.max_in_flight
        {
            if self.ready.is_empty() {
                progress |= self.fill(src, io.now);
                if !self.close_open(io.now) {
                    break;
                }
            }
            let attempt = self.ready[0]
                .attempt
                .unwrap_or_else(|| Attempt::first(io.now));
            let wait = self.p.strategy.proceed(&(), &attempt, io.now);
            if !wait.is_zero() {
                self.not_before = io.now.checked_add(wait);
                break;
            }
            let batch = self.ready.pop_front().expect("checked above");
            self.send(batch, io);
            progress = true;
        }
        self.pass_foreign(src);
        self.gauges(io);
        progress
    }

    /// A durable endpoint that holds nothing and has read the ring to its head has finished
    /// every record the persistence thread has put in the ring, its own or not: its cursor
    /// moves past them, so an endpoint that filters everything out does not pin the log.
    fn pass_foreign(&mut self, src: &mut Source) {
        if self.holds_events() {
            return;
        }
        let Some(d) = &mut self.durable else {
            return;
        };
        // The mark first: every record up to it is in the ring before it is stored.
        let mark = d.durable.published_through.load(Ordering::Acquire);
        src.skip_foreign();
        if !src.has_entry() && mark >= d.next_seq {
            d.next_seq = mark + 1;
            src.min_seq = d.next_seq;
        }
    }

    /// Copies the oldest events out of the ring once the endpoint lags half a ring, and
    /// applies the overflow policy to that backlog.
    fn relieve(&mut self, src: &mut Source, io: &mut Io<'_>) -> bool {
        let lag = src.lag();
        if lag <= io.ring_capacity / 2 {
            return false;
        }
        if let Some(d) = &mut self.durable {
            // Spill: the log has everything the ring has; read it from there instead.
            if !d.disk {
                d.disk = true;
                self.shared.disk.store(true, Ordering::Release);
            }
            return false;
        }
        let want = (lag - io.ring_capacity / 4) as usize;
        let backlog = &mut self.backlog;
        let n = src.take(want, |p| {
            backlog.push_back(Held {
                event: p.event.clone(),
                at: p.at,
                seq: 0,
            });
            true
        }) as u64;
        self.shared.taken.add(n);
        if self.p.overflow == Overflow::DropOldest {
            let over = self.backlog.len().saturating_sub(self.p.capacity);
            if over > 0 {
                self.backlog.drain(..over);
                self.shared.dropped.add(DropReason::Oldest, over as u64);
            }
        }
        n > 0
    }

    /// A durable endpoint reading the log (after a restart, or once it lagged half a ring):
    /// moves its ring cursor to the head (everything there is committed, so the log has it),
    /// then reads its records from the log into the backlog, up to `capacity` held. Once it
    /// has read everything committed, it goes back to the ring, passing over the entries it
    /// already read. Returns whether it read anything.
    fn read_log(&mut self, src: &mut Source, io: &mut Io<'_>) -> bool {
        let Some(d) = &mut self.durable else {
            return false;
        };
        if !d.disk {
            return false;
        }
        // Routed first (see `Shared::routed`), then the ring, then the commit point: whatever
        // was skipped in the ring is at or below it. The ring is skipped even while a failed
        // read waits to be retried, so this endpoint never holds producers back.
        let routed = self.shared.routed.load(Ordering::Acquire);
        src.skip_all();
        std::sync::atomic::fence(Ordering::SeqCst);
        let through = d.durable.durable_through.load(Ordering::Acquire);
        if d.retry_read.is_some_and(|t| io.now < t) {
            return false;
        }
        d.retry_read = None;
        if d.next_seq > through && routed {
            d.disk = false;
            self.shared.disk.store(false, Ordering::Release);
            src.min_seq = d.next_seq;
            return false;
        }
        let room = self.p.capacity.saturating_sub(self.backlog.len());
        if room == 0 {
            return false;
        }
        let reader = match &mut d.reader {
            Some(r) => r,
            None => match d.durable.store().and_then(|s| s.reader()) {
                Ok(r) => d.reader.insert(r),
                Err(e) => {
                    log::error!("{}: cannot read the log: {e}", self.shared.name);
                    d.retry_read = io.now.checked_add(std::time::Duration::from_secs(1));
                    return false;
                }
            },
        };
        let (now, now_ms, counted_from) = (io.now, unix_ms(), d.counted_from);
        let (mut old, mut bad, mut last) = (0u64, 0u64, None);
        let backlog = &mut self.backlog;
        let name = &self.shared.name;
        let read = reader.read(d.next_seq, through, d.slot_bit, room, &mut |rec| {
            last = Some(rec.seq);
            if rec.seq < counted_from {
                old += 1;
            }
            match RawEvent::decode_record(rec.payload) {
                Ok(event) => backlog.push_back(Held {
                    event,
                    at: now
                        .checked_sub(std::time::Duration::from_millis(
                            now_ms.saturating_sub(rec.time_ms),
                        ))
                        .unwrap_or(now),
                    seq: rec.seq,
                }),
                Err(e) => {
                    log::error!("{name}: record {} cannot be decoded, dropped: {e}", rec.seq);
                    bad += 1;
                }
            }
        });
        self.shared.taken.add(old);
        self.shared.dropped.add(DropReason::SinkError, bad);
        match read {
            Ok(next) => {
                let moved = next > d.next_seq;
                d.next_seq = next;
                src.min_seq = next;
                if next > through && routed {
                    d.disk = false;
                    self.shared.disk.store(false, Ordering::Release);
                }
                moved
            }
            Err(e) => {
                // What was handed over before the failure is held: go on after it.
                if let Some(seq) = last {
                    d.next_seq = seq + 1;
                    src.min_seq = d.next_seq;
                }
                log::error!(
                    "{}: reading the log at {} failed (retried every second): {e}",
                    self.shared.name,
                    d.next_seq
                );
                d.reader = None;
                d.retry_read = io.now.checked_add(std::time::Duration::from_secs(1));
                false
            }
        }
    }

    /// Adds events to the open batch: the backlog first (older), then the ring.
    fn fill(&mut self, src: &mut Source, now: Instant) -> bool {
        let max_events = self.p.batch.max_events;
        let max_bytes = self.p.batch.max_bytes;
        let batch = self.open.get_or_insert_with(Batch::new);
        let before = batch.ats.len();
        while batch.ats.len() < max_events {
            let Some(h) = self.backlog.front() else {
                break;
            };
            if !batch.fits(h.event.json().len(), max_bytes) {
                batch.overflowed = true;
                return batch.ats.len() > before;
            }
            let h = self.backlog.pop_front().expect("checked above");
            batch.push(&h.event, h.at, h.seq);
        }
        let from_backlog = batch.ats.len() - before;
        let room = max_events - batch.ats.len();
        // In the log's read mode, the ring is not read.
        let from_ring = self.durable.as_ref().is_none_or(|d| !d.disk);
        let counted_from = self.durable.as_ref().map_or(u64::MAX, |d| d.counted_from);
        let (mut last_seq, mut old) = (0, 0u64);
        let n = if room > 0 && self.backlog.is_empty() && from_ring {
            src.take(room, |p| {
                if batch.fits(p.event.json().len(), max_bytes) {
                    batch.push(&p.event, p.at, p.seq);
                    last_seq = p.seq;
                    if p.seq < counted_from {
                        old += 1;
                    }
                    true
                } else {
                    batch.overflowed = true;
                    false
                }
            })
        } else {
            0
        };
        match &mut self.durable {
            // Memory endpoints count what they take; durable ones counted their events at
            // commit, except those from before (`counted_from`).
            None => self.shared.taken.add(n as u64),
            Some(d) => {
                self.shared.taken.add(old);
                if n > 0 {
                    d.next_seq = last_seq + 1;
                    src.min_seq = d.next_seq;
                }
            }
        }
        let _ = now;
        from_backlog + n > 0
    }

    /// Moves the open batch to `ready` if it is full or its linger is over. Returns whether a
    /// batch is ready.
    fn close_open(&mut self, now: Instant) -> bool {
        let Some(b) = self.open.as_ref() else {
            return false;
        };
        if b.ats.is_empty() {
            return false;
        }
        let cfg = self.p.batch;
        let due = b.ats.len() >= cfg.max_events
            || b.overflowed
            || b.body.len() + TAIL.len() >= cfg.max_bytes
            || cfg.linger.is_zero()
            || b.ats[0].checked_add(cfg.linger).is_none_or(|t| now >= t);
        if !due {
            return false;
        }
        let mut b = self.open.take().expect("checked above");
        b.seal();
        self.ready.push_back(b);
        true
    }

    /// Sends `batch` on an idle connection, or a new one.
    fn send(&mut self, mut batch: Batch, io: &mut Io<'_>) {
        let now = io.now;
        let attempt = match batch.attempt {
            None => Attempt::first(now),
            Some(a) => a.next(),
        };
        batch.attempt = Some(attempt);
        if attempt.number > 1 {
            self.shared.retries.inc();
        }
        let conn = match self.conn(io) {
            Ok(c) => c,
            Err(e) => {
                self.shared.errors.inc();
                return self.failed(batch, e, io);
            }
        };
        let signature;
        let ts;
        let mut headers: Vec<(&str, &str)> = self
            .p
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(signer) = &self.p.signer {
            if batch.msg_id.bytes().any(|c| !(0x20..0x7f).contains(&c)) {
                let e = Error::Encode {
                    message: format!(
                        "event id {:?} cannot be sent as a webhook-id header",
                        batch.msg_id
                    ),
                };
                return self.failed(batch, e, io);
            }
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            ts = secs.to_string();
            signature = signer.sign(&batch.msg_id, secs, &batch.body);
            headers.push((WEBHOOK_ID, batch.msg_id.as_str()));
            headers.push((WEBHOOK_TIMESTAMP, ts.as_str()));
            headers.push((WEBHOOK_SIGNATURE, signature.as_str()));
        }
        let c = self.conns[conn]
            .as_mut()
            .expect("conn() returns a live slot");
        if let Err(e) = c.start(&headers, batch.body.clone(), now) {
            self.shared.errors.inc();
            self.close_conn(conn, io);
            return self.failed(batch, e, io);
        }
        self.flights.push(Flight {
            batch,
            conn,
            started: now,
        });
        // `start` does no I/O, and an edge-triggered socket that is already writable will not
        // say so again: drive it now.
        self.on_io(conn, io);
    }

    /// An idle keep-alive connection, or a new one.
    fn conn(&mut self, io: &mut Io<'_>) -> Result<usize, Error> {
        for i in 0..self.conns.len() {
            if self.conns[i].as_ref().is_some_and(Conn::is_dead) {
                self.close_conn(i, io);
            }
        }
        let busy = |i: usize| self.flights.iter().any(|f| f.conn == i);
        if let Some(i) = (0..self.conns.len())
            .find(|&i| !busy(i) && self.conns[i].as_ref().is_some_and(Conn::is_idle))
        {
            return Ok(i);
        }
        let i = match self.conns.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        // Tokens are `slot << 8 | connection`; max_in_flight (<= 64) keeps `i` below 255.
        let token = mio::Token(io.slot << 8 | i);
        self.conns[i] = Some(Conn::connect(
            &self.p.target,
            io.registry,
            token,
            self.p.timeouts,
            io.now,
        )?);
        Ok(i)
    }

    fn close_conn(&mut self, i: usize, io: &mut Io<'_>) {
        if let Some(c) = self.conns.get_mut(i).and_then(Option::take) {
            c.close(io.registry);
        }
    }

    /// A socket event for connection `i`.
    pub fn on_io(&mut self, i: usize, io: &mut Io<'_>) {
        let Some(Some(c)) = self.conns.get_mut(i) else {
            return;
        };
        let progress = c.on_event(io.registry, io.now);
        self.settle(i, progress, io);
    }

    /// Drives again the connections whose last drive stopped at its budget (mio reports
    /// them no more). Returns whether there was one, so the worker does not sleep.
    fn redrive(&mut self, io: &mut Io<'_>) -> bool {
        let mut any = false;
        for i in 0..self.conns.len() {
            if self.conns[i].as_ref().is_some_and(Conn::wants_drive) {
                any = true;
                self.on_io(i, io);
            }
        }
        any
    }

    /// A timer fired: time out what is overdue.
    pub fn on_timer(&mut self, io: &mut Io<'_>) {
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            if c.deadline().is_some_and(|d| d <= io.now) {
                let progress = c.on_timer(io.now);
                self.settle(i, progress, io);
            }
        }
    }

    fn settle(&mut self, i: usize, progress: Progress, io: &mut Io<'_>) {
        match progress {
            Progress::Pending => {}
            Progress::Done(resp) => self.finish(i, Ok(resp), io),
            Progress::Failed(e) => self.finish(i, Err(e), io),
        }
        let busy = self.flights.iter().any(|f| f.conn == i);
        if !busy && self.conns[i].as_ref().is_some_and(Conn::is_dead) {
            self.close_conn(i, io);
        }
    }

    /// A request on connection `i` ended.
    fn finish(&mut self, i: usize, result: Result<Response, Error>, io: &mut Io<'_>) {
        let Some(at) = self.flights.iter().position(|f| f.conn == i) else {
            return;
        };
        let Flight {
            mut batch, started, ..
        } = self.flights.swap_remove(at);
        let now = io.now;
        match result {
            Ok(resp) => {
                self.shared.statuses.record(resp.status);
                self.shared
                    .rtt
                    .record(now.saturating_duration_since(started));
                if !resp.keep_alive {
                    self.close_conn(i, io);
                }
                if (200..300).contains(&resp.status) {
                    self.shared.successes.inc();
                    self.p.strategy.success(&(), now);
                    self.shared
                        .lag
                        .record_all(batch.ats.iter().map(|t| now.saturating_duration_since(*t)));
                    self.shared.delivered.add(batch.len());
                } else {
                    self.shared.failures.inc();
                    let retry_after = resp
                        .retry_after
                        .as_deref()
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    let e = Error::Status {
                        code: resp.status,
                        retry_after,
                    };
                    self.failed(batch, e, io);
                }
            }
            Err(e) => {
                self.shared.errors.inc();
                let stale = self.conns[i].as_ref().is_some_and(Conn::failed_stale);
                self.close_conn(i, io);
                if stale && !batch.stale_retried {
                    // The server closed a keep-alive connection we had not noticed yet: the
                    // request never reached it. Resend once, on a fresh connection, as the
                    // same attempt.
                    batch.stale_retried = true;
                    // If it was the breaker's probe, the resend must be allowed to be one.
                    self.p.strategy.abandon(now);
                    batch.attempt = batch.attempt.map(|a| Attempt {
                        number: a.number.saturating_sub(1),
                        ..a
                    });
                    self.ready.push_front(batch);
                    return;
                }
                self.failed(batch, e, io);
            }
        }
    }

    /// An attempt failed with `err`: retry (at the front, keeping order), give up, or disable.
    fn failed(&mut self, batch: Batch, err: Error, io: &mut Io<'_>) {
        let now = io.now;
        let attempt = batch.attempt.unwrap_or_else(|| Attempt::first(now));
        match self.p.strategy.failure(&(), &attempt, &err, now) {
            Verdict::Retry => self.ready.push_front(batch),
            Verdict::GiveUp(reason) => {
                log::warn!(
                    "{}: gave up on {} event(s) ({}): {reason}; last error: {err}",
                    self.shared.name,
                    batch.len(),
                    batch.msg_id
                );
                let n = batch.len();
                if let Some(d) = &self.durable {
                    // Written by the persistence thread before the cursor passes them.
                    d.durable
                        .dead_letter(self.dead_letters(batch, &err, attempt.number, now));
                }
                self.shared.dead_lettered.add(n);
            }
            Verdict::Disable(reason) => {
                // The batch is kept (first in line) and goes out when the endpoint is enabled.
                self.ready.push_front(batch);
                log::warn!("{}: disabled: {reason}", self.shared.name);
                self.disabled = true;
                self.shared.set_disabled(Some(reason.to_string()));
            }
        }
    }

    /// A given-up batch of a durable endpoint, as dead letters.
    fn dead_letters(
        &self,
        batch: Batch,
        err: &Error,
        attempts: u32,
        now: Instant,
    ) -> Vec<DeadLetter> {
        let now_ms = unix_ms();
        let status = match err {
            Error::Status { code, .. } => Some(*code),
            _ => None,
        };
        let error = err.to_string();
        batch
            .events
            .into_iter()
            .zip(batch.seqs)
            .zip(batch.ats)
            .map(|((event, seq), at)| DeadLetter {
                endpoint: self.shared.name.clone(),
                seq,
                published_ms: now_ms
                    .saturating_sub(now.saturating_duration_since(at).as_millis() as u64),
                failed_ms: now_ms,
                status,
                error: error.clone(),
                attempts,
                event,
            })
            .collect()
    }

    /// Pauses or resumes delivery (a command from the dispatcher).
    pub fn set_disabled(&mut self, disabled: bool, io: &mut Io<'_>) {
        if disabled {
            self.disabled = true;
            self.shared
                .set_disabled(Some("disabled by the host".into()));
        } else if self.disabled {
            self.disabled = false;
            self.not_before = None;
            self.p.strategy.enable(io.now);
            self.shared.set_disabled(None);
        }
    }

    /// Publishes the queue gauges and the "full" bit.
    fn gauges(&mut self, io: &mut Io<'_>) {
        let open = self.open.as_ref().map_or(0, Batch::len);
        let queued =
            self.backlog.len() as u64 + open + self.ready.iter().map(Batch::len).sum::<u64>();
        let in_flight = self.flights.iter().map(|f| f.batch.len()).sum::<u64>();
        self.shared.queued.store(queued, Ordering::Release);
        self.shared.in_flight.store(in_flight, Ordering::Release);
        if !self.abandoned
            && let Some(d) = &self.durable
        {
            self.shared.acked.store(self.acked(d), Ordering::Release);
        }
        let full = self.p.overflow != Overflow::DropOldest && self.backlog.len() >= self.p.capacity;
        if full != self.full {
            self.full = full;
            let bit = 1u64 << self.shared.bit;
            if full {
                io.full.fetch_or(bit, Ordering::AcqRel);
            } else {
                io.full.fetch_and(!bit, Ordering::AcqRel);
            }
        }
    }

    /// Where a durable endpoint's cursor is: the oldest event it holds, or the next it has
    /// not taken.
    fn acked(&self, d: &DurableLink) -> u64 {
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

    /// Counts everything held as dropped (`shutdown`), requests on the wire included, and
    /// closes every connection. A durable endpoint drops nothing: it saves its cursor where
    /// it is (what it held stays in the log, pending) and leaves the store's members.
    pub fn abandon(&mut self, io: &mut Io<'_>) {
        if self.durable.is_some() {
            self.gauges(io);
            self.abandoned = true;
            self.backlog.clear();
            self.open = None;
            self.ready.clear();
            self.flights.clear();
            for i in 0..self.conns.len() {
                self.close_conn(i, io);
            }
            self.shared.queued.store(0, Ordering::Release);
            self.shared.in_flight.store(0, Ordering::Release);
            if let Some(d) = &self.durable {
                d.durable.leave(&self.shared);
            }
            return;
        }
        let mut n = self.backlog.len() as u64;
        n += self.open.take().map_or(0, |b| b.len());
        n += self.ready.drain(..).map(|b| b.len()).sum::<u64>();
        n += self.flights.drain(..).map(|f| f.batch.len()).sum::<u64>();
        self.backlog.clear();
        self.shared.dropped.add(DropReason::Shutdown, n);
        for i in 0..self.conns.len() {
            self.close_conn(i, io);
        }
        self.p.capacity = usize::MAX;
        self.gauges(io);
    }
}
