//! The HTTP server: one thread, one `mio::Poll`, every connection non-blocking.
//!
//! A connection reads (edge-triggered, until `WouldBlock`, at most one largest request plus a
//! little ahead), parses one request at a time, and answers in order. An ingest request
//! publishes its events with tickets and then **waits without blocking the loop**: each ticket
//! gets an [`on_complete`](crate::engine::Ticket::on_complete) callback that sets a flag and
//! wakes the loop through a `mio::Waker` (one wake per batch of completions, whatever their
//! number); the loop then reads the tickets with `try_get` and answers the requests whose
//! tickets are all done. Only then is a 2xx written: the events are in the durable log.
//!
//! Deadlines, checked on every turn: a connection idle between requests for `idle_timeout`,
//! or whose request has not arrived whole `read_timeout` after its first byte, or whose
//! response has not been taken `read_timeout` after it was ready, is closed (slowloris); an
//! ingest request whose events are not durable by `ack_timeout` is answered 503.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::json;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::config::EndpointConfig;
use crate::engine::{Dispatcher, EndpointId, OnComplete, ShutdownReport, Ticket};
use crate::store::DeadLetterFilter;
use crate::{Error, Event, RawEvent};

use super::admin::{self, ServerCounters};
use super::cluster::{self, Cluster};
use super::config::{Limits, ServeConfig};
use super::http::{self, CONTINUE, Parse, Request, Response};
use super::ingest::{self, Dedup, Seen};
use super::reload::{self, ReloadReport};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// The longest the loop sleeps without looking at its deadlines.
const TICK: Duration = Duration::from_millis(100);

/// A configuration to apply, and where to say how it went.
type PendingReload = (ServeConfig, Sender<Result<ReloadReport, Error>>);

/// What the loop and its handles share.
struct Control {
    stop: AtomicBool,
    /// A configuration to apply, and where to say how it went.
    reload: Mutex<Option<PendingReload>>,
    /// Set by ticket callbacks: some ticket completed since the loop last looked.
    tickets_done: AtomicBool,
    waker: Waker,
}

/// Stops or reconfigures a running [`Server`] from any thread (a signal handler's thread, a
/// test).
#[derive(Clone)]
pub struct Handle(Arc<Control>);

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    /// Applies `config` to the running server and says what changed: endpoints added, removed
    /// and changed (by name), tokens and limits; settings that need a restart are kept and
    /// listed. The loop applies it between requests. Waits at most `timeout` for the answer
    /// ([`Error::Timeout`]; the reload still happens). On an error, what was applied stays.
    pub fn reload(&self, config: ServeConfig, timeout: Duration) -> Result<ReloadReport, Error> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        *self.0.reload.lock() = Some((config, tx));
        let _ = self.0.waker.wake();
        rx.recv_timeout(timeout).unwrap_or(Err(Error::Timeout {
            waiting_for: "the server to apply the configuration",
            after: timeout,
        }))
    }

    /// Stops accepting connections and answers new ingest requests 503; requests already
    /// waiting for durability are answered, then the engine drains by its deadline.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
        let _ = self.0.waker.wake();
    }
}

/// A running relay service: the engine with the configured endpoints, and the HTTP server's
/// loop thread in front of it.
pub struct Server {
    addr: SocketAddr,
    control: Arc<Control>,
    dispatcher: Arc<Dispatcher>,
    cluster: Option<Arc<dyn Cluster>>,
    thread: Option<JoinHandle<()>>,
    drain: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the durable log in `config.data_dir` (resuming every durable endpoint from its
    /// cursor), adds the endpoints, binds `config.listen` and starts the loop thread.
    pub fn start(config: ServeConfig) -> Result<Server, Error> {
        let builder = Dispatcher::builder()
            .workers(config.workers)
            // The loop publishes: never let it wait long for room (503 instead).
            .publish_timeout(Duration::from_millis(200))
            .shutdown_timeout(config.limits.drain_timeout);
        let (dispatcher, start_cluster) = cluster::engine(&config, builder)?;
        let mut endpoints = Vec::new();
        for e in &config.endpoints {
            endpoints.push((e.clone(), dispatcher.add_endpoint(e.clone())?));
        }
        let dispatcher = Arc::new(dispatcher);
        let cluster = match start_cluster {
            Some(start) => Some(start(&dispatcher, cluster::durable_names(&config))?),
            None => None,
        };
        let mut listener = TcpListener::bind(config.listen)?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let control = Arc::new(Control {
            stop: AtomicBool::new(false),
            reload: Mutex::new(None),
            tickets_done: AtomicBool::new(false),
            waker: Waker::new(poll.registry(), WAKER)?,
        });
        let mut lp = Loop {
            poll,
            listener: Some(listener),
            conns: HashMap::new(),
            next_token: 2,
            accept_again: false,
            limits: config.limits.clone(),
            tokens: config.tokens.clone(),
            admin_tokens: config.admin_tokens.clone(),
            dispatcher: dispatcher.clone(),
            endpoints,
            running: config.clone(),
            control: control.clone(),
            on_complete: {
                let c = control.clone();
                Arc::new(move || {
                    if !c.tickets_done.swap(true, Ordering::AcqRel) {
                        let _ = c.waker.wake();
                    }
                })
            },
            dedup: Dedup::new(config.limits.dedup_window),
            cluster: cluster.clone(),
            unresolved: Vec::new(),
            counters: ServerCounters::default(),
            stopping_since: None,
        };
        let thread = std::thread::Builder::new()
            .name("hookwire-serve".into())
            .spawn(move || lp.run())?;
        Ok(Server {
            addr,
            control,
            dispatcher,
            cluster,
            thread: Some(thread),
            drain: config.limits.drain_timeout,
        })
    }

    /// The address it listens on (with the port it was given for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The engine behind it.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// A handle that stops or reconfigures the server from another thread.
    pub fn handle(&self) -> Handle {
        Handle(self.control.clone())
    }

    /// Waits until the server was stopped (by a [`Handle`]) and its loop ended, then shuts
    /// the engine down by the drain deadline: what is not delivered by then stays in the
    /// durable log for the next start.
    pub fn wait(mut self) -> ShutdownReport {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(c) = &self.cluster {
            c.stop_relay();
        }
        let report = self.dispatcher.shutdown(self.drain);
        // The engine has let go of every endpoint: give the leases back, so the other nodes
        // take them over now rather than when they expire.
        if let Some(c) = &self.cluster {
            c.stop();
        }
        report
    }

    /// Stops the server and waits for it ([`Handle::stop`], then [`wait`](Self::wait)).
    pub fn shutdown(self) -> ShutdownReport {
        self.handle().stop();
        self.wait()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.handle().stop();
            let _ = t.join();
        }
    }
}

/// What a connection is doing.
enum State {
    /// Reading a request (or idle between requests).
    Reading,
    /// An ingest request's events are published; waiting for their tickets.
    Waiting(Waiting),
    /// Writing a response.
    Writing,
}

struct Waiting {
    tickets: Vec<Arc<Ticket>>,
    /// Tickets `..done` completed successfully.
    done: usize,
    events: u64,
    duplicates: u64,
    deadline: Instant,
    keep_alive: bool,
    route: &'static str,
}

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    written: usize,
    state: State,
    /// When the current phase began: idle since, the request's first byte, the response ready.
    since: Instant,
    /// Close once the write buffer is out.
    close_after: bool,
    /// The peer sent EOF.
    eof: bool,
    /// Reading stopped at the read-ahead limit; read again when the buffer drains.
    paused: bool,
    continue_sent: bool,
}

/// When a connection in `state` is closed for not moving, or `None` (waiting on tickets).
fn conn_deadline(state: &State, idle: bool, since: Instant, limits: &Limits) -> Option<Instant> {
    match state {
        State::Reading if idle => since.checked_add(limits.idle_timeout),
        State::Reading | State::Writing => since.checked_add(limits.read_timeout),
        State::Waiting(_) => None,
    }
}

enum Outcome {
    Respond(Response),
    Wait(Waiting),
}

struct Loop {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    /// An accept failed (out of file descriptors...): connections may wait in the listen
    /// queue, and the edge-triggered listener says so only once; retried every turn.
    accept_again: bool,
    limits: Limits,
    tokens: Vec<String>,
    admin_tokens: Vec<String>,
    dispatcher: Arc<Dispatcher>,
    /// The configured endpoints and their ids (the admin routes find them by name).
    endpoints: Vec<(EndpointConfig, EndpointId)>,
    /// The configuration it runs (for reloads: what may not change without a restart).
    running: ServeConfig,
    control: Arc<Control>,
    on_complete: OnComplete,
    dedup: Dedup,
    /// Every published event whose ticket has not completed, to settle its dedup entry.
    unresolved: Vec<(String, Arc<Ticket>)>,
    counters: ServerCounters,
    stopping_since: Option<Instant>,
    /// With a database: the other nodes and the leases.
    cluster: Option<Arc<dyn Cluster>>,
}

impl Loop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            if self.control.stop.load(Ordering::SeqCst) && self.stopping_since.is_none() {
                self.begin_stop(now);
            }
            if let Some(since) = self.stopping_since {
                let busy = self
                    .conns
                    .values()
                    .any(|c| !matches!(c.state, State::Reading) || c.written < c.wbuf.len());
                if !busy || now >= since + self.limits.ack_timeout.min(Duration::from_secs(60)) {
                    return;
                }
            }
            let timeout = self
                .next_deadline()
                .map_or(TICK, |d| d.saturating_duration_since(now).min(TICK));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                log::error!("hookwire serve: poll failed: {e}");
                return;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    token => {
                        if let Some(c) = self.conns.get_mut(&token) {
                            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                                read(c, &self.limits);
                            }
                            self.advance(token);
                        }
                    }
                }
            }
            if self.accept_again {
                self.accept();
            }
            self.settle_tickets();
            self.expire(Instant::now());
            let pending = self.control.reload.lock().take();
            if let Some((config, reply)) = pending {
                let _ = reply.send(self.reload(config));
            }
        }
    }

    fn reload(&mut self, new: ServeConfig) -> Result<ReloadReport, Error> {
        let mut report = ReloadReport::default();
        reload::apply_limits(&self.running, &mut self.limits, &new, &mut report);
        self.tokens = new.tokens.clone();
        self.admin_tokens = new.admin_tokens.clone();
        reload::apply_endpoints(
            &self.dispatcher,
            &mut self.endpoints,
            &new.endpoints,
            self.limits.drain_timeout,
            &mut report,
        )?;
        if let Some(c) = &self.cluster {
            c.set_endpoints(cluster::durable_names(&new));
        }
        let (listen, data_dir, database, workers) = (
            self.running.listen,
            self.running.data_dir.clone(),
            self.running.database.clone(),
            self.running.workers,
        );
        self.running = ServeConfig {
            listen,
            data_dir,
            database,
            workers,
            limits: self.limits.clone(),
            ..new
        };
        Ok(report)
    }

    fn begin_stop(&mut self, now: Instant) {
        self.stopping_since = Some(now);
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        // Idle connections close now; the others after their current request.
        let idle: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Reading) && c.rbuf.is_empty())
            .map(|(t, _)| *t)
            .collect();
        for t in idle {
            self.close(t);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|c| match &c.state {
                State::Waiting(w) => Some(w.deadline),
                s => conn_deadline(s, c.rbuf.is_empty(), c.since, &self.limits),
            })
            .min()
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= self.limits.max_connections {
                        self.counters.connections_refused += 1;
                        let mut out = Vec::new();
                        Response::unavailable("too many connections", self.limits.retry_after)
                            .closing()
                            .encode(&mut out);
                        let _ = stream.write(&out);
                        continue;
                    }
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    self.counters.connections_accepted += 1;
                    self.conns.insert(
                        token,
                        Conn {
                            stream,
                            rbuf: Vec::new(),
                            wbuf: Vec::new(),
                            written: 0,
                            state: State::Reading,
                            since: Instant::now(),
                            close_after: false,
                            eof: false,
                            paused: false,
                            continue_sent: false,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_again = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors and the like: tried again at the next turn of
                    // the loop (at most a tick away), not only at the next listener event.
                    if !self.accept_again {
                        log::warn!("hookwire serve: accept failed: {e}");
                    }
                    self.accept_again = true;
                    return;
                }
            }
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(mut c) = self.conns.remove(&token) {
            if matches!(c.state, State::Waiting(_)) {
                // The client left; its events' tickets stay tracked in `unresolved`.
                self.counters.waiting -= 1;
            }
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    /// Moves a connection on as far as it can go without waiting.
    fn advance(&mut self, token: Token) {
        loop {
            let Some(c) = self.conns.get_mut(&token) else {
                return;
            };
            match &c.state {
                State::Waiting(_) => return,
                State::Writing => match flush(c) {
                    Ok(true) => {
                        if c.close_after {
                            self.close(token);
                            return;
                        }
                        c.state = State::Reading;
                        c.since = Instant::now();
                        if c.paused {
                            read(c, &self.limits);
                        }
                    }
                    Ok(false) => return,
                    Err(_) => {
                        self.close(token);
                        return;
                    }
                },
                State::Reading => {
                    if c.rbuf.is_empty() {
                        if c.eof || self.stopping_since.is_some() {
                            self.close(token);
                        }
                        return;
                    }
                    match http::parse(&c.rbuf, &self.limits) {
                        Parse::Incomplete { expect_continue } => {
                            // Refused from its head alone (no token, no such route): before
                            // a 100 Continue, and without holding a large body (a small one
                            // is read, so the connection stays usable after the answer).
                            if let Parse::Head(head) = http::parse_head(&c.rbuf, &self.limits)
                                && (expect_continue || declared_length(&head) > EARLY_BODY)
                                && let Some(r) = self.refuse_early(&head)
                            {
                                let route = route_name(&head.path);
                                if let Some(c) = self.conns.get_mut(&token) {
                                    c.rbuf.clear();
                                }
                                self.respond(token, route, r.closing(), false);
                                continue;
                            }
                            let Some(c) = self.conns.get_mut(&token) else {
                                return;
                            };
                            if expect_continue && !c.continue_sent {
                                c.continue_sent = true;
                                c.wbuf.extend_from_slice(CONTINUE);
                                if flush(c).is_err() {
                                    self.close(token);
                                    return;
                                }
                            }
                            if c.eof {
                                self.close(token);
                            }
                            return;
                        }
                        Parse::Refuse(r) => {
                            c.rbuf.clear();
                            self.respond(token, "other", r, false);
                        }
                        Parse::Head(_) => unreachable!("parse never returns a head alone"),
                        Parse::Complete(req, n) => {
                            c.rbuf.drain(..n);
                            c.continue_sent = false;
                            let keep_alive = req.keep_alive;
                            let route = route_name(&req.path);
                            match self.handle(req) {
                                Outcome::Respond(r) => self.respond(token, route, r, keep_alive),
                                Outcome::Wait(w) => {
                                    if let Some(c) = self.conns.get_mut(&token) {
                                        c.state = State::Waiting(w);
                                    }
                                    self.counters.waiting += 1;
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Queues `r` on the connection and puts it in `Writing`.
    fn respond(&mut self, token: Token, route: &'static str, mut r: Response, keep_alive: bool) {
        *self.counters.requests.entry((route, r.status)).or_default() += 1;
        let stopping = self.stopping_since.is_some();
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        if !keep_alive || stopping {
            r.close = true;
        }
        c.close_after |= r.close;
        r.encode(&mut c.wbuf);
        c.state = State::Writing;
        c.since = Instant::now();
    }

    fn handle(&mut self, req: Request) -> Outcome {
        let admin_open = self.admin_tokens.is_empty();
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/healthz") => {
                let snaps = self.dispatcher.snapshot();
                let stopping = self.stopping_since.is_some();
                let mut body = admin::healthz(&snaps, stopping);
                let db_ok = self.cluster.as_ref().is_none_or(|c| c.healthy());
                if let Some(c) = &self.cluster {
                    body["database"] = json!(if db_ok { "ok" } else { "unreachable" });
                    body["cluster"] = c.view();
                }
                if !db_ok {
                    body["status"] = json!("database unreachable");
                }
                Outcome::Respond(Response::json(if db_ok { 200 } else { 503 }, &body))
            }
            ("GET", "/readyz") => Outcome::Respond(if self.stopping_since.is_some() {
                Response::unavailable("stopping", self.limits.retry_after)
            } else if self.cluster.as_ref().is_some_and(|c| !c.healthy()) {
                Response::unavailable("the database is unreachable", self.limits.retry_after)
            } else {
                Response::json(200, &json!({ "ready": true }))
            }),
            ("GET", "/metrics") => {
                self.refresh_gauges();
                let snaps = self.dispatcher.snapshot();
                Outcome::Respond(Response::text(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    admin::prometheus(&snaps, &self.counters),
                ))
            }
            ("GET", "/" | "/v1/status" | "/debug/vars" | "/v1/endpoints" | "/v1/dead-letters")
                if !admin_open && !authorized(&req, &self.admin_tokens) =>
            {
                Outcome::Respond(unauthorized())
            }
            ("POST", p)
                if (p.starts_with("/v1/endpoints/") || p == "/v1/dead-letters/replay")
                    && !admin_open
                    && !authorized(&req, &self.admin_tokens) =>
            {
                Outcome::Respond(unauthorized())
            }
            ("GET", "/v1/dead-letters") => Outcome::Respond(self.dead_letters(&req, false)),
            ("POST", "/v1/dead-letters/replay") => Outcome::Respond(self.dead_letters(&req, true)),
            ("POST", p) if p.starts_with("/v1/endpoints/") => {
                Outcome::Respond(self.switch(&p["/v1/endpoints/".len()..]))
            }
            ("GET", "/debug/vars") => {
                self.refresh_gauges();
                let snaps = self.dispatcher.snapshot();
                Outcome::Respond(Response::json(200, &admin::expvar(&snaps, &self.counters)))
            }
            ("GET", "/v1/endpoints") => {
                let snaps = self.dispatcher.snapshot();
                let mut body = admin::endpoints(&snaps);
                if let Some(c) = &self.cluster {
                    admin::add_leases(&mut body, c.view());
                }
                Outcome::Respond(Response::json(200, &body))
            }
            ("GET", "/") => {
                let snaps = self.dispatcher.snapshot();
                Outcome::Respond(Response::text(
                    200,
                    "text/html; charset=utf-8",
                    crate::stats::render_status_page(&snaps, "/v1/status"),
                ))
            }
            ("GET", "/v1/status") => {
                // The status page's refresh: every endpoint's snapshot, as the page reads it.
                let snaps = self.dispatcher.snapshot();
                Outcome::Respond(Response::json(
                    200,
                    &serde_json::to_value(&snaps).unwrap_or_default(),
                ))
            }
            ("POST", "/v1/events" | "/v1/registry") => self.ingest(&req),
            (
                _,
                "/" | "/v1/status" | "/healthz" | "/readyz" | "/metrics" | "/debug/vars"
                | "/v1/endpoints",
            ) => Outcome::Respond(not_allowed("GET")),
            (_, "/v1/events" | "/v1/registry") => Outcome::Respond(not_allowed("POST")),
            _ => Outcome::Respond(Response::error(404, "no such route")),
        }
    }

    /// `POST /v1/endpoints/NAME/disable` or `.../enable`.
    fn switch(&self, rest: &str) -> Response {
        let Some((name, action)) = rest.rsplit_once('/') else {
            return Response::error(
                404,
                "expected /v1/endpoints/NAME/disable, /enable or /forget",
            );
        };
        let configured = self.endpoints.iter().find(|(e, _)| e.name == name);
        if action == "forget" {
            // Frees a durable endpoint's slot in the log that the configuration no longer
            // has (a configured one would come back at the next start or reload): its
            // backlog goes to the dead letters. Blocks the loop for the copy (bounded by the
            // drain timeout).
            if configured.is_some() {
                return Response::error(
                    409,
                    &format!("{name:?} is configured: remove it from the configuration first"),
                );
            }
            return match self
                .dispatcher
                .forget_endpoint(name, self.limits.drain_timeout)
            {
                Ok(f) => Response::json(
                    200,
                    &json!({
                        "name": name,
                        "action": "forget",
                        "dead_lettered": f.dead_lettered,
                        "lost": f.lost,
                    }),
                ),
                Err(e @ Error::Config { .. }) => Response::error(404, &e.to_string()),
                Err(e) => Response::error(409, &e.to_string()),
            };
        }
        let Some((_, id)) = configured else {
            return Response::error(404, &format!("no endpoint named {name:?}"));
        };
        let result = match action {
            "disable" => self.dispatcher.disable(*id),
            "enable" => self.dispatcher.enable(*id),
            _ => return Response::error(404, "expected disable, enable or forget"),
        };
        match result {
            Ok(()) => Response::json(200, &json!({ "name": name, "action": action })),
            Err(e) => Response::error(409, &e.to_string()),
        }
    }

    /// `GET /v1/dead-letters` (list) or `POST /v1/dead-letters/replay`, filtered by
    /// `endpoint=NAME` and `seq=A..B` (inclusive).
    fn dead_letters(&self, req: &Request, replay: bool) -> Response {
        let mut filter = DeadLetterFilter::all();
        filter.endpoint = req.param("endpoint").map(str::to_string);
        if let Some(range) = req.param("seq") {
            let parsed = range
                .split_once("..")
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
            match parsed {
                Some((a, b)) if a <= b => filter.seqs = Some((a, b)),
                _ => return Response::error(400, "seq must be A..B (inclusive, A <= B)"),
            }
        }
        if replay {
            return match self.dispatcher.replay_dead_letters(&filter) {
                Ok(n) => Response::json(200, &json!({ "replayed": n })),
                Err(e) => Response::error(500, &e.to_string()),
            };
        }
        const MOST: usize = 1000;
        match self.dispatcher.dead_letters(&filter) {
            Ok(list) => {
                let shown: Vec<_> = list
                    .iter()
                    .take(MOST)
                    .map(|d| {
                        json!({
                            "endpoint": d.endpoint,
                            "seq": d.seq,
                            "id": d.event.id(),
                            "published_ms": d.published_ms,
                            "failed_ms": d.failed_ms,
                            "status": d.status,
                            "error": d.error,
                            "attempts": d.attempts,
                            "event": serde_json::from_str::<serde_json::Value>(d.event.json()).unwrap_or_default(),
                        })
                    })
                    .collect();
                Response::json(
                    200,
                    &json!({ "dead_letters": shown, "total": list.len(), "truncated": list.len() > MOST }),
                )
            }
            Err(e) => Response::error(500, &e.to_string()),
        }
    }

    fn refresh_gauges(&mut self) {
        self.counters.connections_open = self.conns.len() as u64;
        self.counters.dedup_ids = self.dedup.len() as u64;
    }

    fn ingest(&mut self, req: &Request) -> Outcome {
        if !self.tokens.is_empty() && !authorized(req, &self.tokens) {
            return Outcome::Respond(unauthorized());
        }
        if self.stopping_since.is_some() {
            return Outcome::Respond(
                Response::unavailable("shutting down", self.limits.retry_after).closing(),
            );
        }
        if self.cluster.as_ref().is_some_and(|c| !c.healthy()) {
            // It could not be made durable: refused now, never accepted and then lost.
            return Outcome::Respond(Response::unavailable(
                "the database is unreachable",
                self.limits.retry_after,
            ));
        }
        let registry = req.path == "/v1/registry";
        let parsed = if registry {
            if !ingest::registry_media_type(req.header("content-type")) {
                return Outcome::Respond(Response::error(
                    415,
                    "expected Content-Type application/vnd.docker.distribution.events.v1+json, v2, or application/json",
                ));
            }
            ingest::parse_registry(&req.body)
        } else {
            ingest::parse_events(&req.body)
        };
        let events = match parsed {
            Ok(e) => e,
            Err(bad) => return Outcome::Respond(Response::error(400, &bad.0)),
        };
        let mut tickets = Vec::with_capacity(events.len());
        let mut duplicates = 0;
        let total = events.len() as u64;
        for ev in events {
            let id = ev.id().into_owned();
            match self.dedup.lookup(&id) {
                Seen::Done => duplicates += 1,
                Seen::Pending(t) => {
                    duplicates += 1;
                    tickets.push(t);
                }
                Seen::New => match self.publish(ev) {
                    Ok(t) => {
                        self.dedup.insert(&id, t.clone());
                        self.unresolved.push((id, t.clone()));
                        tickets.push(t);
                    }
                    // What was published before stays tracked: a re-post finds it in the
                    // window and waits for it rather than publishing it twice.
                    Err(e) => return Outcome::Respond(self.refusal(&e)),
                },
            }
        }
        let mut w = Waiting {
            tickets,
            done: 0,
            events: total,
            duplicates,
            deadline: Instant::now() + self.limits.ack_timeout,
            keep_alive: req.keep_alive,
            route: if registry { "registry" } else { "events" },
        };
        match self.verdict(&mut w, Instant::now()) {
            Some(r) => Outcome::Respond(r),
            None => Outcome::Wait(w),
        }
    }

    fn publish(&mut self, ev: RawEvent) -> Result<Arc<Ticket>, Error> {
        let t = Arc::new(self.dispatcher.publish_with_ticket(ev)?);
        self.counters.events_published += 1;
        t.on_complete(self.on_complete.clone());
        Ok(t)
    }

    /// The answer for an error that kept events from becoming durable.
    fn refusal(&self, e: &Error) -> Response {
        let retry = self.limits.retry_after;
        match e {
            Error::Quota { .. } => Response::unavailable("the durable log is full (quota)", retry),
            Error::Timeout { .. } | Error::Full { .. } => {
                Response::unavailable(&format!("at capacity: {e}"), retry)
            }
            Error::Closed => Response::unavailable("shutting down", retry),
            Error::Broadcast { first, .. } => self.refusal(first),
            Error::Disabled { .. } => Response::unavailable(&e.to_string(), retry),
            // A shared database that failed a commit: the next one reconnects.
            Error::Storage { .. } if self.cluster.is_some() => {
                Response::unavailable(&format!("not stored, try again: {e}"), retry)
            }
            other => Response::error(500, &format!("not stored: {other}")),
        }
    }

    /// The answer for a waiting request, once there is one. Tickets complete in about the
    /// order they were taken (group commits are FIFO), so it resumes where it stopped: each
    /// ticket is read about once while it is outstanding, not on every turn.
    fn verdict(&self, w: &mut Waiting, now: Instant) -> Option<Response> {
        while let Some(t) = w.tickets.get(w.done) {
            match t.try_get() {
                None => break,
                Some(Err(e)) => return Some(self.refusal(&e)),
                Some(Ok(_)) => w.done += 1,
            }
        }
        if w.done == w.tickets.len() {
            return Some(Response::json(
                200,
                &json!({ "accepted": w.events, "duplicates": w.duplicates }),
            ));
        }
        (now >= w.deadline).then(|| {
            Response::unavailable(
                "the events were not durable in time; post them again (repeats are not delivered twice)",
                self.limits.retry_after,
            )
        })
    }

    /// Reads completed tickets: settles dedup entries, answers requests whose tickets are done.
    fn settle_tickets(&mut self) {
        if !self.control.tickets_done.swap(false, Ordering::AcqRel) {
            return;
        }
        let dedup = &mut self.dedup;
        self.unresolved.retain(|(id, t)| match t.try_get() {
            None => true,
            Some(r) => {
                dedup.settle(id, t, r.is_ok());
                false
            }
        });
        self.answer_waiting(Instant::now());
    }

    fn answer_waiting(&mut self, now: Instant) {
        let mut ready = Vec::new();
        let tokens: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Waiting(_)))
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            let Some(c) = self.conns.get_mut(&token) else {
                continue;
            };
            let State::Waiting(mut w) = std::mem::replace(&mut c.state, State::Reading) else {
                continue;
            };
            let verdict = self.verdict(&mut w, now);
            let Some(c) = self.conns.get_mut(&token) else {
                continue;
            };
            match verdict {
                Some(r) => ready.push((token, r, w)),
                None => c.state = State::Waiting(w),
            }
        }
        for (token, r, w) in ready {
            if r.status == 200 {
                self.counters.events_accepted += w.events;
                self.counters.events_duplicate += w.duplicates;
            }
            self.counters.waiting -= 1;
            self.respond(token, w.route, r, w.keep_alive);
            self.advance(token);
        }
    }

    /// Closes connections past their deadline; answers ingest requests past theirs.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                conn_deadline(&c.state, c.rbuf.is_empty(), c.since, &self.limits)
                    .is_some_and(|d| now >= d)
            })
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            let idle = self
                .conns
                .get(&t)
                .is_some_and(|c| c.rbuf.is_empty() && matches!(c.state, State::Reading));
            if !idle {
                self.counters.connections_timed_out += 1;
            }
            self.close(t);
        }
        self.answer_waiting(now);
    }
}

fn route_name(path: &str) -> &'static str {
    match path {
        "/v1/events" => "events",
        "/v1/registry" => "registry",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        "/debug/vars" => "debug_vars",
        "/v1/endpoints" => "endpoints",
        "/" => "status_page",
        "/v1/status" => "status",
        "/v1/dead-letters" | "/v1/dead-letters/replay" => "dead_letters",
        p if p.starts_with("/v1/endpoints/") => "endpoint_switch",
        _ => "other",
    }
}

fn unauthorized() -> Response {
    let mut r = Response::error(401, "a bearer token is required");
    r.extra.push(("www-authenticate", "Bearer".into()));
    r
}

fn not_allowed(allow: &'static str) -> Response {
    let mut r = Response::error(405, "method not allowed");
    r.extra.push(("allow", allow.into()));
    r
}

/// Whether the request carries one of `tokens` as `Authorization: Bearer TOKEN`. Compares
/// every byte of every token, so the time taken does not say how much of a guess was right.
impl Loop {
    /// A POST refused from its head alone: no (right) bearer token for an ingest or admin
    /// route, or no such route. `None`: read its body.
    fn refuse_early(&self, head: &Request) -> Option<Response> {
        if head.method != "POST" {
            return None;
        }
        let p = head.path.as_str();
        let admin = p.starts_with("/v1/endpoints/") || p == "/v1/dead-letters/replay";
        let ingest = p == "/v1/events" || p == "/v1/registry";
        if ingest && !self.tokens.is_empty() && !authorized(head, &self.tokens) {
            return Some(unauthorized());
        }
        if admin && !self.admin_tokens.is_empty() && !authorized(head, &self.admin_tokens) {
            return Some(unauthorized());
        }
        if ingest || admin {
            return None;
        }
        const GET_ROUTES: [&str; 8] = [
            "/",
            "/v1/status",
            "/healthz",
            "/readyz",
            "/metrics",
            "/debug/vars",
            "/v1/endpoints",
            "/v1/dead-letters",
        ];
        Some(if GET_ROUTES.contains(&p) {
            not_allowed("GET")
        } else {
            Response::error(404, "no such route")
        })
    }
}

/// A body declared larger than this is not read for a request refused from its head.
const EARLY_BODY: usize = 64 * 1024;

/// The `Content-Length` a head declares (0 if none or bad: `parse` refuses those).
fn declared_length(head: &Request) -> usize {
    head.header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn authorized(req: &Request, tokens: &[String]) -> bool {
    let Some(given) = req.header("authorization").and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    }) else {
        return false;
    };
    let given = given.trim().as_bytes();
    let mut ok = false;
    for t in tokens {
        let t = t.as_bytes();
        let mut diff = (t.len() != given.len()) as u8;
        for (i, b) in t.iter().enumerate() {
            diff |= b ^ given.get(i).copied().unwrap_or(0);
        }
        ok |= diff == 0;
    }
    ok
}

/// Reads until `WouldBlock`, EOF, or the read-ahead limit (then `paused`).
fn read(c: &mut Conn, limits: &Limits) {
    let cap = limits.max_header_bytes + limits.max_body_bytes + 4096;
    let mut chunk = [0u8; 16 << 10];
    c.paused = false;
    loop {
        if c.rbuf.len() >= cap {
            c.paused = true;
            return;
        }
        let room = (cap - c.rbuf.len()).min(chunk.len());
        match c.stream.read(&mut chunk[..room]) {
            Ok(0) => {
                c.eof = true;
                return;
            }
            Ok(n) => {
                if c.rbuf.is_empty() && matches!(c.state, State::Reading) {
                    c.since = Instant::now(); // the request's first byte
                }
                c.rbuf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                c.eof = true;
                c.close_after = true;
                return;
            }
        }
    }
}

/// Writes what it can; `Ok(true)` once everything is out.
fn flush(c: &mut Conn) -> io::Result<bool> {
    while c.written < c.wbuf.len() {
        match c.stream.write(&c.wbuf[c.written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    c.wbuf.clear();
    c.written = 0;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_by_phase() {
        let l = Limits {
            read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let t0 = Instant::now();
        assert_eq!(
            conn_deadline(&State::Reading, true, t0, &l),
            Some(t0 + Duration::from_secs(30)),
            "idle keep-alive"
        );
        assert_eq!(
            conn_deadline(&State::Reading, false, t0, &l),
            Some(t0 + Duration::from_secs(2)),
            "a request under way must arrive whole in read_timeout"
        );
        assert_eq!(
            conn_deadline(&State::Writing, false, t0, &l),
            Some(t0 + Duration::from_secs(2))
        );
        let w = Waiting {
            tickets: Vec::new(),
            done: 0,
            events: 0,
            duplicates: 0,
            deadline: t0,
            keep_alive: true,
            route: "events",
        };
        assert_eq!(conn_deadline(&State::Waiting(w), false, t0, &l), None);
    }

    fn req(auth: Option<&str>) -> Request {
        Request {
            method: "POST".into(),
            path: "/v1/events".into(),
            query: String::new(),
            headers: auth
                .map(|a| vec![("authorization".to_string(), a.to_string())])
                .unwrap_or_default(),
            body: Vec::new(),
            keep_alive: true,
        }
    }

    #[test]
    fn bearer_tokens() {
        let tokens = vec!["s3cret".to_string(), "other".to_string()];
        assert!(authorized(&req(Some("Bearer s3cret")), &tokens));
        assert!(authorized(&req(Some("Bearer other")), &tokens));
        assert!(!authorized(&req(Some("Bearer s3cre")), &tokens));
        assert!(!authorized(&req(Some("Bearer s3cretx")), &tokens));
        assert!(!authorized(&req(Some("Basic s3cret")), &tokens));
        assert!(!authorized(&req(None), &tokens));
    }
}
