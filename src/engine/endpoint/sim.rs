//! The deterministic simulator (FoundationDB's simulation testing and TigerBeetle's VOPR are
//! the models).
//!
//! Because an [`Endpoint`] is a Sans-IO state machine, one seeded run can drive several of
//! them through a random schedule of faults with no socket, thread or sleep: a virtual clock,
//! a fake network (connections refused or slow to come up; answers 200, 500, 503/429 with
//! `Retry-After`, 410, 400; resets before and after the receiver processed a request; hangs;
//! trickles past the deadline; stale keep-alive connections), a fake log with slow reads and
//! read errors, group commits, cursor saves, and crashes of the store that lose what was not
//! committed and every durable endpoint's memory, which then resumes from its saved cursor.
//! Everything comes from the seed, so a failing seed replays exactly.
//!
//! Checked after every step: the accounting identity; memory bounds (backlog, formed batches,
//! requests, connections); FIFO per endpoint with `max_in_flight = 1`; nothing sent again in
//! an incarnation after it was dead-lettered. Checked after a final drain without faults:
//! every event a memory endpoint accepted was delivered (acknowledged) or dead-lettered,
//! exactly once, or evicted by its overflow policy (counted); every event committed for a
//! durable endpoint reached the receiver at least once or is in the dead-letter file, across
//! every crash.
//!
//! `cargo test --lib sim` runs a fixed set of seeds. `HOOKWIRE_SIM_SEEDS=N` runs N seeds
//! from `HOOKWIRE_SIM_BASE` (default 0), for a long soak or to replay one seed.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{BatchConfig, EndpointConfig, Overflow};
use crate::engine::EndpointId;
use crate::engine::shared::Shared;
use crate::engine::source::{Events, Published};
use crate::http::conn::Response;
use crate::policy::SplitMix64;
use crate::stats::DropReason;
use crate::{Error, Event, RawEvent};

use super::tests::Queue;
use super::{Action, Endpoint, Held, LogLink, LogMarks, LogRead, Prepared};

/// Records the simulated log reader looks at per read (small, so reads page).
const SCAN: u64 = 8;
/// How often cursors are saved (as the persistence thread does).
const SAVE_EVERY: Duration = Duration::from_millis(100);

/// How an endpoint's receiver and network misbehave: weights of each outcome.
#[derive(Debug, Clone, Copy)]
struct Profile {
    ok: u64,
    server_error: u64,
    throttle: u64,
    gone: u64,
    bad_request: u64,
    reset_before: u64,
    reset_after: u64,
    hang: u64,
    trickle: u64,
    /// Per connection: refused, or slow to come up (in 1/1000).
    refuse: u64,
    slow_connect: u64,
}

impl Profile {
    const HEALTHY: Profile = Profile {
        ok: 1,
        server_error: 0,
        throttle: 0,
        gone: 0,
        bad_request: 0,
        reset_before: 0,
        reset_after: 0,
        hang: 0,
        trickle: 0,
        refuse: 0,
        slow_connect: 0,
    };

    fn random(rng: &mut SplitMix64) -> Profile {
        let mut w = |max: u64| rng.below(max + 1);
        Profile {
            ok: 20 + w(60),
            server_error: w(15),
            throttle: w(6),
            gone: w(1),
            bad_request: w(2),
            reset_before: w(6),
            reset_after: w(4),
            hang: w(3),
            trickle: w(3),
            refuse: w(150),
            slow_connect: w(100),
        }
    }
}

/// What the network does with one request.
#[derive(Debug, Clone)]
enum Outcome {
    Status(u16, Option<String>),
    ResetBefore,
    ResetAfter,
    Hang { processed: bool },
    Trickle(u16),
}

/// Something scheduled to happen.
#[derive(Debug)]
enum Ev {
    Publish(usize),
    Connected {
        ep: usize,
        conn: usize,
        token: u64,
    },
    Answer {
        ep: usize,
        conn: usize,
        token: u64,
        idxs: Vec<usize>,
        result: Result<Response, (Error, bool)>,
    },
    Process {
        ep: usize,
        idxs: Vec<usize>,
    },
    Log {
        ep: usize,
        life: u64,
        from: u64,
        through: u64,
        mask: u64,
        max: usize,
    },
    Enable {
        ep: usize,
        life: u64,
    },
    Commit,
    Save,
    Crash,
}

/// One simulated endpoint and what its receiver saw.
struct Ep {
    cfg: EndpointConfig,
    slot: Option<u8>,
    profile: Profile,
    ep: Endpoint,
    shared: Arc<Shared>,
    src: Queue,
    /// Incarnation (bumped by a crash).
    life: u64,
    /// Per connection id: the token of the connection now in it (0: none), and requests served.
    tokens: Vec<u64>,
    served: Vec<u64>,
    published: usize,
    to_publish: usize,
    /// Memory: accepted into the source; durable: committed.
    accepted: BTreeSet<usize>,
    /// Processed by the receiver, in any incarnation.
    received: BTreeSet<usize>,
    /// Acknowledged (2xx) to the endpoint.
    acked: Vec<usize>,
    /// Dead letters written (durable) or handed on (memory).
    dlq: BTreeSet<usize>,
    /// Durable: dead letters not written yet (lost in a crash).
    queued_dead: Vec<usize>,
    /// Dead-lettered in this incarnation.
    dead_now: BTreeSet<usize>,
    last_send: Option<(usize, usize)>,
    saved_cursor: u64,
    idx_of_seq: BTreeMap<u64, usize>,
}

struct Sim {
    rng: SplitMix64,
    base: Instant,
    wall: SystemTime,
    t: Duration,
    agenda: BTreeMap<(Duration, u64), Ev>,
    next: u64,
    eps: Vec<Ep>,
    /// Committed records: seq = index + 1; (slot, endpoint, idx).
    log: Vec<(u8, usize, usize)>,
    intake: Vec<(usize, usize)>,
    marks: Arc<LogMarks>,
    full: Arc<AtomicU64>,
    faults: bool,
    crashes: u32,
    trace: Vec<String>,
}

fn event_json(ep: usize, idx: usize) -> RawEvent {
    RawEvent::parse(format!(r#"{{"id":"{ep}-{idx}"}}"#)).expect("valid")
}

fn idx_of(e: &RawEvent) -> usize {
    let id = e.id();
    id.split('-')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("sim id")
}

/// The event indices in an envelope.
fn idxs_of(body: &[u8]) -> Vec<usize> {
    let v: serde_json::Value = serde_json::from_slice(body).expect("an envelope");
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let id = e["id"].as_str().expect("id");
            id.split('-')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("sim id")
        })
        .collect()
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = SplitMix64::new(seed);
        let n = 1 + rng.below(4) as usize;
        let base = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let marks = Arc::new(LogMarks::at(0));
        let full = Arc::new(AtomicU64::new(0));
        let mut sim = Sim {
            rng,
            base,
            wall,
            t: Duration::ZERO,
            agenda: BTreeMap::new(),
            next: 0,
            eps: Vec::new(),
            log: Vec::new(),
            intake: Vec::new(),
            marks,
            full,
            faults: true,
            crashes: 0,
            trace: Vec::new(),
        };
        let mut slots = 0u8;
        for i in 0..n {
            let durable = sim.rng.below(2) == 0;
            let mut cfg = EndpointConfig::new(format!("ep{i}"), "http://127.0.0.1:9/");
            cfg.timeout = Duration::from_millis(100 + sim.rng.below(900));
            cfg.connect_timeout = Some(Duration::from_millis(20 + sim.rng.below(200)));
            cfg.threshold = 1 + sim.rng.below(4) as u32;
            cfg.backoff = Duration::from_millis(1 + sim.rng.below(500));
            cfg.max_attempts = Some(2 + sim.rng.below(6) as u32);
            cfg.capacity = 4 + sim.rng.below(60) as usize;
            cfg.max_in_flight = if sim.rng.below(3) == 0 {
                2 + sim.rng.below(2) as usize
            } else {
                1
            };
            if sim.rng.below(4) == 0 {
                cfg.rate_limit = Some(crate::policy::RateLimit {
                    per_second: 20.0 + sim.rng.below(500) as f64,
                    burst: 1.0 + sim.rng.below(20) as f64,
                });
            }
            if sim.rng.below(6) == 0 {
                cfg.request_rate_limit = Some(crate::policy::RateLimit::per_second(
                    5.0 + sim.rng.below(100) as f64,
                ));
            }
            cfg.adaptive_concurrency = cfg.max_in_flight > 1 && sim.rng.below(2) == 0;
            cfg.batch = BatchConfig {
                max_events: 1 + sim.rng.below(5) as usize,
                max_bytes: 1 << 20,
                linger: Duration::from_millis(sim.rng.below(3) * 5),
            };
            let slot = if durable {
                cfg = cfg.durable();
                slots += 1;
                Some(slots - 1)
            } else {
                cfg.overflow = match sim.rng.below(3) {
                    0 => Overflow::DropOldest,
                    1 => Overflow::DropNewest,
                    _ => Overflow::Reject,
                };
                None
            };
            let to_publish = 20 + sim.rng.below(150) as usize;
            let profile = Profile::random(&mut sim.rng);
            let (ep, shared) = sim.incarnation(i, &cfg, slot, 1, 0);
            let relieve_above = 4 + sim.rng.below(32);
            sim.eps.push(Ep {
                cfg,
                slot,
                profile,
                ep,
                shared,
                src: Queue {
                    relieve_above,
                    ..Queue::default()
                },
                life: 1,
                tokens: Vec::new(),
                served: Vec::new(),
                published: 0,
                to_publish,
                accepted: BTreeSet::new(),
                received: BTreeSet::new(),
                acked: Vec::new(),
                dlq: BTreeSet::new(),
                queued_dead: Vec::new(),
                dead_now: BTreeSet::new(),
                last_send: None,
                saved_cursor: 1,
                idx_of_seq: BTreeMap::new(),
            });
            sim.at(Duration::ZERO, Ev::Publish(i));
        }
        if slots > 0 {
            sim.at(Duration::from_millis(1), Ev::Commit);
            sim.at(SAVE_EVERY, Ev::Save);
            if sim.rng.below(2) == 0 {
                let when = Duration::from_millis(50 + sim.rng.below(3000));
                sim.at(when, Ev::Crash);
            }
        }
        sim
    }

    /// A new endpoint state machine (and shared half) for endpoint `i`.
    fn incarnation(
        &mut self,
        i: usize,
        cfg: &EndpointConfig,
        slot: Option<u8>,
        life: u64,
        acked: u64,
    ) -> (Endpoint, Arc<Shared>) {
        let secrets = cfg.validate().expect("valid config");
        let mut p = Prepared::new(cfg, secrets).expect("prepared");
        p.strategy = crate::config::strategy_seeded(cfg, Some(self.rng.next_u64())).unwrap();
        let id = EndpointId(i as u64 * 1000 + life);
        let shared = Arc::new(Shared::new(id, i as u32, 0, cfg, cfg.url.clone()));
        let link = slot.map(|s| {
            let next = self.log.len() as u64 + 1;
            let _ = shared.slot.set(s);
            LogLink::new(self.marks.clone(), s, acked.max(1), next)
        });
        shared.routed.store(true, Ordering::Release);
        let now = self.now();
        let wall = self.wall + self.t;
        let ep = Endpoint::new(p, shared.clone(), self.full.clone(), link, true, wall, now);
        (ep, shared)
    }

    fn now(&self) -> Instant {
        self.base + self.t
    }

    fn at(&mut self, after: Duration, ev: Ev) {
        self.next += 1;
        self.agenda.insert((self.t + after, self.next), ev);
    }

    fn note(&mut self, s: impl FnOnce() -> String) {
        if self.trace.len() >= 80 {
            self.trace.drain(..40);
        }
        let line = format!("{:>9.3}s {}", self.t.as_secs_f64(), s());
        self.trace.push(line);
    }

    fn ms(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.rng.below(max + 1))
    }

    /// Runs the schedule with faults, then drains without them; checks as it goes.
    fn run(&mut self) {
        let fault_phase = Duration::from_secs(5 + self.rng.below(20));
        let limit = fault_phase + Duration::from_secs(3600);
        let mut steps = 0u64;
        loop {
            steps += 1;
            assert!(steps < 2_000_000, "runaway: {steps} steps");
            if self.faults && self.t >= fault_phase && self.all_published() {
                self.end_faults();
            }
            if !self.faults && self.quiet() {
                break;
            }
            assert!(
                self.t < limit,
                "not quiet {limit:?} in: {}",
                self.describe()
            );
            let timer = self
                .eps
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.ep.poll_timeout().map(|t| (t, i)))
                .min();
            let next_ev = self.agenda.keys().next().copied();
            let timer_first = match (timer, next_ev) {
                (Some((t, _)), Some((at, _))) => self.base + at >= t,
                (timer, _) => timer.is_some(),
            };
            if let (true, Some((t, i))) = (timer_first, timer) {
                self.t = self.t.max(t.saturating_duration_since(self.base));
                let now = self.now();
                self.note(|| format!("ep{i} timeout"));
                self.eps[i].ep.handle_timeout(now);
            } else if let Some(key) = next_ev {
                let ev = self.agenda.remove(&key).expect("present");
                self.t = self.t.max(key.0);
                self.apply(ev);
            } else {
                // Nothing scheduled and no timer: only a publish or the end can come.
                assert!(
                    !self.faults || !self.all_published() || self.quiet(),
                    "stalled"
                );
                self.t += Duration::from_millis(1);
            }
            self.pump_all();
            self.check();
        }
        // A clean stop saves last, as shutdown does: dead letters queued since the last save
        // (a durable endpoint's, written with the cursors) are in the store by then. Without
        // it, a batch given up just before the end looked lost.
        self.save();
        self.final_checks();
        if std::env::var_os("HOOKWIRE_SIM_VERBOSE").is_some() {
            eprintln!(
                "{steps} steps, {:.1} s simulated, {} crashes",
                self.t.as_secs_f64(),
                self.crashes
            );
        }
    }

    fn all_published(&self) -> bool {
        self.eps.iter().all(|e| e.published >= e.to_publish)
    }

    fn end_faults(&mut self) {
        self.faults = false;
        self.note(|| "faults end".into());
        let now = self.now();
        for e in &mut self.eps {
            e.profile = Profile::HEALTHY;
            e.ep.set_disabled(false, now);
        }
        self.agenda.retain(|_, ev| !matches!(ev, Ev::Crash));
    }

    fn quiet(&self) -> bool {
        self.intake.is_empty()
            && self
                .eps
                .iter()
                .all(|e| e.published >= e.to_publish && !e.ep.holds_events() && !e.src.has_entry())
            && self
                .agenda
                .values()
                .all(|ev| matches!(ev, Ev::Commit | Ev::Save | Ev::Process { .. }))
    }

    fn describe(&self) -> String {
        let eps: Vec<String> = self
            .eps
            .iter()
            .map(|e| {
                let m = e.shared.counts(0);
                format!(
                    "{}: published {}/{}, {:?}, holds {}, disabled {}",
                    e.cfg.name,
                    e.published,
                    e.to_publish,
                    e.ep.sizes(),
                    e.ep.holds_events(),
                    m.disabled
                )
            })
            .collect();
        eps.join("; ")
    }

    fn apply(&mut self, ev: Ev) {
        match ev {
            Ev::Publish(i) => self.publish(i),
            Ev::Connected { ep, conn, token } => {
                if self.eps[ep].tokens.get(conn) == Some(&token) {
                    self.note(|| format!("ep{ep} conn{conn} up"));
                    let now = self.now();
                    self.eps[ep].ep.handle_connected(conn, now);
                }
            }
            Ev::Answer {
                ep,
                conn,
                token,
                idxs,
                result,
            } => {
                if self.eps[ep].tokens.get(conn) != Some(&token) {
                    return; // closed meanwhile
                }
                self.eps[ep].tokens[conn] = 0;
                let now = self.now();
                match result {
                    Ok(resp) => {
                        self.note(|| format!("ep{ep} conn{conn} answer {}", resp.status));
                        if resp.keep_alive {
                            self.eps[ep].tokens[conn] = token;
                            self.eps[ep].served[conn] += 1;
                        }
                        if (200..300).contains(&resp.status) {
                            self.eps[ep].acked.extend(idxs);
                        }
                        self.eps[ep].ep.handle_response(conn, resp, now);
                    }
                    Err((e, stale)) => {
                        self.note(|| format!("ep{ep} conn{conn} failed ({e}, stale {stale})"));
                        self.eps[ep].ep.handle_failure(conn, e, stale, now);
                    }
                }
            }
            Ev::Process { ep, idxs } => {
                self.eps[ep].received.extend(idxs);
            }
            Ev::Log {
                ep,
                life,
                from,
                through,
                mask,
                max,
            } => self.serve_log(ep, life, from, through, mask, max),
            Ev::Enable { ep, life } => {
                if self.eps[ep].life == life {
                    let now = self.now();
                    self.eps[ep].ep.set_disabled(false, now);
                }
            }
            Ev::Commit => self.commit(),
            Ev::Save => self.save(),
            Ev::Crash => self.crash(),
        }
    }

    fn publish(&mut self, i: usize) {
        let e = &mut self.eps[i];
        if e.published >= e.to_publish {
            return;
        }
        let idx = e.published;
        e.published += 1;
        if e.slot.is_some() {
            self.intake.push((i, idx));
        } else if self.full.load(Ordering::Acquire) & (1 << i) != 0 {
            // The dispatcher's publish path refuses for a full endpoint, by its policy.
            let reason = match e.cfg.overflow {
                Overflow::DropNewest => crate::stats::DropReason::Newest,
                _ => crate::stats::DropReason::Rejected,
            };
            e.shared.dropped.inc(reason);
        } else {
            e.accepted.insert(idx);
            let now = self.base + self.t;
            e.src.items.push_back(Published {
                event: event_json(i, idx),
                at: now,
                version: 0,
                seq: 0,
            });
        }
        let gap = if self.rng.below(4) == 0 {
            self.ms(300)
        } else {
            self.ms(5)
        };
        self.at(gap, Ev::Publish(i));
    }

    fn commit(&mut self) {
        let intake = std::mem::take(&mut self.intake);
        for (i, idx) in intake {
            let slot = self.eps[i].slot.expect("durable");
            self.log.push((slot, i, idx));
            let seq = self.log.len() as u64;
            let e = &mut self.eps[i];
            e.idx_of_seq.insert(seq, idx);
            e.accepted.insert(idx);
            e.shared.taken.inc();
            let now = self.base + self.t;
            e.src.items.push_back(Published {
                event: event_json(i, idx),
                at: now,
                version: 0,
                seq,
            });
        }
        let through = self.log.len() as u64;
        self.marks.durable_through.store(through, Ordering::Release);
        self.marks
            .published_through
            .store(through, Ordering::Release);
        let gap = Duration::from_millis(1) + self.ms(4);
        self.at(gap, Ev::Commit);
    }

    fn save(&mut self) {
        // The cursors first, then the dead letters (written before a cursor passes them).
        let cursors: Vec<u64> = self
            .eps
            .iter()
            .map(|e| e.shared.acked.load(Ordering::Acquire))
            .collect();
        for (e, c) in self.eps.iter_mut().zip(cursors) {
            if e.slot.is_some() {
                let dead = std::mem::take(&mut e.queued_dead);
                e.dlq.extend(dead);
                e.saved_cursor = e.saved_cursor.max(c);
            }
        }
        self.at(SAVE_EVERY, Ev::Save);
    }

    /// The store crashes: what was not committed is lost, and every durable endpoint loses
    /// its memory and resumes from its saved cursor.
    fn crash(&mut self) {
        self.crashes += 1;
        self.note(|| "CRASH".into());
        self.intake.clear();
        for i in 0..self.eps.len() {
            let Some(slot) = self.eps[i].slot else {
                continue;
            };
            let life = self.eps[i].life + 1;
            let cfg = self.eps[i].cfg.clone();
            let acked = self.eps[i].saved_cursor;
            let (ep, shared) = self.incarnation(i, &cfg, Some(slot), life, acked);
            let e = &mut self.eps[i];
            e.life = life;
            e.ep = ep;
            e.shared = shared;
            e.src.items.clear();
            e.tokens.clear();
            e.served.clear();
            e.queued_dead.clear();
            e.dead_now.clear();
            e.last_send = None;
        }
        if self.rng.below(2) == 0 {
            let when = Duration::from_millis(100 + self.rng.below(5000));
            self.at(when, Ev::Crash);
        }
    }

    fn serve_log(&mut self, ep: usize, life: u64, from: u64, through: u64, mask: u64, max: usize) {
        if self.eps[ep].life != life {
            return;
        }
        let until = through.min(from + SCAN - 1);
        let fail = self.faults && self.rng.below(20) == 0;
        let mut records = Vec::new();
        let mut next = from;
        let now = self.now();
        for seq in from.max(1)..=until {
            let (slot, owner, idx) = self.log[seq as usize - 1];
            if fail && records.len() == 1 {
                break;
            }
            if records.len() >= max {
                break;
            }
            next = seq + 1;
            if mask & (1 << slot) != 0 {
                records.push(Ok(Held {
                    event: event_json(owner, idx),
                    at: now,
                    seq,
                }));
            }
        }
        if from > until {
            next = from;
        }
        let error = fail.then(|| Error::Io {
            kind: std::io::ErrorKind::Other,
            message: "simulated read error".into(),
            source: None,
        });
        let n = records.len();
        self.note(|| format!("ep{ep} log read {from}..={until} -> {n}, next {next}"));
        self.eps[ep].ep.handle_log(
            LogRead {
                records,
                next,
                error,
            },
            now,
        );
    }

    /// Lets every endpoint take events and act, until none moves.
    fn pump_all(&mut self) {
        for i in 0..self.eps.len() {
            for _ in 0..64 {
                let now = self.now();
                let e = &mut self.eps[i];
                let moved = e.ep.pump(&mut e.src, now);
                let acted = self.actions(i);
                if !moved && !acted {
                    break;
                }
            }
        }
    }

    /// Carries out endpoint `i`'s actions. Returns whether there were any.
    fn actions(&mut self, i: usize) -> bool {
        let mut any = false;
        while let Some(a) = self.eps[i].ep.poll_action() {
            any = true;
            match a {
                Action::Send {
                    conn,
                    connect,
                    body,
                    ..
                } => self.send(i, conn, connect, &body),
                Action::Close { conn } => {
                    if let Some(t) = self.eps[i].tokens.get_mut(conn) {
                        *t = 0;
                    }
                }
                Action::ReadLog {
                    from,
                    through,
                    mask,
                    max,
                } => {
                    let life = self.eps[i].life;
                    let delay = if self.faults {
                        self.ms(200)
                    } else {
                        self.ms(2)
                    };
                    self.at(
                        delay,
                        Ev::Log {
                            ep: i,
                            life,
                            from,
                            through,
                            mask,
                            max,
                        },
                    );
                }
                Action::DeadLetter(letters) => {
                    let e = &mut self.eps[i];
                    for l in letters {
                        let idx = idx_of(&l.event);
                        e.dead_now.insert(idx);
                        if e.slot.is_some() {
                            e.queued_dead.push(idx);
                        } else {
                            assert!(e.dlq.insert(idx), "ep{i}: {idx} dead-lettered twice");
                        }
                    }
                }
                Action::Resolve => {
                    let addrs = self.eps[i].ep.target().addrs.clone();
                    let now = self.now();
                    self.eps[i].ep.handle_resolved(Ok(addrs), now);
                }
            }
        }
        any
    }

    fn send(&mut self, i: usize, conn: usize, connect: bool, body: &[u8]) {
        let idxs = idxs_of(body);
        let (first, last) = (idxs[0], *idxs.last().expect("not empty"));
        {
            let e = &mut self.eps[i];
            for idx in &idxs {
                assert!(
                    !e.dead_now.contains(idx),
                    "ep{i}: {idx} sent again after it was dead-lettered"
                );
            }
            if e.cfg.max_in_flight == 1 {
                if let Some((a, b)) = e.last_send {
                    assert!(
                        (first, last) == (a, b) || first > b,
                        "ep{i}: FIFO broken: sent {first}..={last} after {a}..={b}"
                    );
                }
                e.last_send = Some((first, last));
            }
        }
        self.next += 1;
        let token = self.next;
        let e = &mut self.eps[i];
        if e.tokens.len() <= conn {
            e.tokens.resize(conn + 1, 0);
            e.served.resize(conn + 1, 0);
        }
        e.tokens[conn] = token;
        if connect {
            e.served[conn] = 0;
        }
        let served = e.served[conn];
        let p = e.profile;
        let timeout = e.cfg.timeout;
        let connect_timeout = e.cfg.connect_timeout.unwrap_or(timeout);
        self.note(|| format!("ep{i} send {first}..={last} on conn{conn} (new {connect})"));
        let mut start = Duration::ZERO;
        if connect {
            let roll = self.rng.below(1000);
            if roll < p.refuse {
                let e = Error::Io {
                    kind: std::io::ErrorKind::ConnectionRefused,
                    message: "simulated refusal".into(),
                    source: None,
                };
                let d = self.ms(2);
                let result = Err((e, false));
                self.answer(d, i, conn, token, idxs, result);
                return;
            }
            start = if roll < p.refuse + p.slow_connect {
                self.ms(connect_timeout.as_millis() as u64 * 2)
            } else {
                self.ms(3)
            };
            self.at(start, Ev::Connected { ep: i, conn, token });
        }
        let outcome = self.outcome(&p);
        let delay = start + self.ms(20);
        let keep_alive = self.rng.below(10) != 0;
        let resp = |status: u16, retry_after: Option<String>| Response {
            location: None,
            status,
            retry_after,
            keep_alive,
        };
        let reset = |stale: bool| {
            Err((
                Error::Io {
                    kind: std::io::ErrorKind::ConnectionReset,
                    message: "simulated reset".into(),
                    source: None,
                },
                stale,
            ))
        };
        match outcome {
            Outcome::Status(status, retry_after) => {
                if (200..300).contains(&status) {
                    self.at(
                        delay,
                        Ev::Process {
                            ep: i,
                            idxs: idxs.clone(),
                        },
                    );
                }
                let result = Ok(resp(status, retry_after));
                self.answer(delay, i, conn, token, idxs, result);
            }
            Outcome::ResetBefore => {
                let stale = served > 0 && self.rng.below(2) == 0;
                let result = reset(stale);
                self.answer(delay, i, conn, token, idxs, result);
            }
            Outcome::ResetAfter => {
                self.at(
                    delay,
                    Ev::Process {
                        ep: i,
                        idxs: idxs.clone(),
                    },
                );
                let result = reset(false);
                self.answer(delay, i, conn, token, idxs, result);
            }
            Outcome::Hang { processed } => {
                if processed {
                    self.at(delay, Ev::Process { ep: i, idxs });
                }
            }
            Outcome::Trickle(status) => {
                let late = start + self.ms(timeout.as_millis() as u64 * 2);
                if (200..300).contains(&status) {
                    self.at(
                        late,
                        Ev::Process {
                            ep: i,
                            idxs: idxs.clone(),
                        },
                    );
                }
                let result = Ok(resp(status, None));
                self.answer(late, i, conn, token, idxs, result);
            }
        }
    }

    /// Schedules the answer (or failure) to the request with `token` on `conn`, `after` now.
    fn answer(
        &mut self,
        after: Duration,
        ep: usize,
        conn: usize,
        token: u64,
        idxs: Vec<usize>,
        result: Result<Response, (Error, bool)>,
    ) {
        let ev = Ev::Answer {
            ep,
            conn,
            token,
            idxs,
            result,
        };
        self.at(after, ev);
    }

    fn outcome(&mut self, p: &Profile) -> Outcome {
        let weights = [
            p.ok,
            p.server_error,
            p.throttle,
            p.gone,
            p.bad_request,
            p.reset_before,
            p.reset_after,
            p.hang,
            p.trickle,
        ];
        let total: u64 = weights.iter().sum();
        let mut roll = self.rng.below(total);
        let mut pick = 0;
        for (k, w) in weights.iter().enumerate() {
            if roll < *w {
                pick = k;
                break;
            }
            roll -= w;
        }
        match pick {
            0 => Outcome::Status(200, None),
            1 => Outcome::Status(500, None),
            2 => {
                let code = if self.rng.below(2) == 0 { 503 } else { 429 };
                Outcome::Status(code, Some(self.rng.below(4).to_string()))
            }
            3 => Outcome::Status(410, None),
            4 => Outcome::Status(400, None),
            5 => Outcome::ResetBefore,
            6 => Outcome::ResetAfter,
            7 => Outcome::Hang {
                processed: self.rng.below(2) == 0,
            },
            _ => Outcome::Trickle(200),
        }
    }

    /// After every step.
    fn check(&mut self) {
        for (i, e) in self.eps.iter().enumerate() {
            let m = e.shared.counts(0);
            assert!(m.balanced(), "ep{i}: identity broken: {m:?}");
            let (backlog, ready, flights, conns) = e.ep.sizes();
            let max = e.cfg.max_in_flight;
            // Capacity bounds the backlog; events already in the ring when it filled (at most a
            // ring, twice `relieve_above`) are copied out on top. A durable endpoint reads
            // only what fits.
            let ring = if e.slot.is_some() {
                0
            } else {
                2 * e.src.relieve_above as usize
            };
            assert!(backlog <= e.cfg.capacity + ring, "ep{i}: backlog {backlog}");
            assert!(
                flights <= max && conns <= max,
                "ep{i}: {flights} requests, {conns} conns"
            );
            assert!(ready <= max + 1, "ep{i}: {ready} batches formed");
            if e.slot.is_none() {
                assert_eq!(m.pending, m.queued + m.in_flight, "ep{i}: {m:?}");
            }
            if m.disabled {
                // A host re-enables a disabled endpoint after a while.
                let (ep, life) = (i, e.life);
                let when = Duration::from_millis(500);
                self.next += 1;
                let key = (self.t + when, self.next);
                let already = self.agenda.values().any(
                    |ev| matches!(ev, Ev::Enable { ep: x, life: g } if *x == ep && *g == life),
                );
                if !already {
                    self.agenda.insert(key, Ev::Enable { ep, life });
                }
            }
        }
    }

    /// After the drain.
    fn final_checks(&mut self) {
        for (i, e) in self.eps.iter().enumerate() {
            let m = e.shared.counts(0);
            assert_eq!(m.pending, 0, "ep{i}: {m:?}");
            let acked: BTreeSet<usize> = e.acked.iter().copied().collect();
            for idx in &acked {
                assert!(
                    e.received.contains(idx),
                    "ep{i}: {idx} acknowledged, never received"
                );
            }
            if e.slot.is_some() {
                for idx in &e.accepted {
                    assert!(
                        e.received.contains(idx) || e.dlq.contains(idx),
                        "ep{i}: committed event {idx} was lost ({} crashes)",
                        self.crashes
                    );
                }
                continue;
            }
            let refused = m.dropped[&DropReason::Rejected] + m.dropped[&DropReason::Newest];
            assert_eq!(m.events, e.accepted.len() as u64 + refused, "ep{i}: {m:?}");
            assert!(
                acked.is_disjoint(&e.dlq),
                "ep{i}: delivered and dead-lettered"
            );
            assert_eq!(e.acked.len(), acked.len(), "ep{i}: acknowledged twice");
            let fated = acked.len() as u64 + e.dlq.len() as u64;
            let evicted = m.dropped[&DropReason::Oldest];
            assert_eq!(fated + evicted, e.accepted.len() as u64, "ep{i}: {m:?}");
            assert_eq!(
                (m.delivered, m.dead_lettered),
                (acked.len() as u64, e.dlq.len() as u64)
            );
        }
    }
}

/// Runs one seed; on a failure, panics with the seed, how to replay it, and the last steps.
fn run_seed(seed: u64) {
    let mut sim = Sim::new(seed);
    let result = catch_unwind(AssertUnwindSafe(|| sim.run()));
    if let Err(panic) = result {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!(
            "simulation seed {seed} failed: {what}\n\
             replay: HOOKWIRE_SIM_SEEDS=1 HOOKWIRE_SIM_BASE={seed} cargo test --lib sim -- --nocapture\n\
             last steps:\n{}",
            sim.trace.join("\n")
        );
    }
}

#[test]
fn sim_seeds() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    // The fixed budget CI runs (a debug build is slower).
    let default = if cfg!(debug_assertions) { 40 } else { 3000 };
    let n = env("HOOKWIRE_SIM_SEEDS").unwrap_or(default);
    let base = env("HOOKWIRE_SIM_BASE").unwrap_or(0);
    for seed in base..base + n {
        run_seed(seed);
    }
}
