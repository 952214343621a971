//! One non-blocking HTTP/1.1 client connection for a worker's mio loop.
//!
//! A [`Conn`] is one TCP connection (plus TLS for `https`) carrying at most one request at a
//! time, kept alive between requests. It never blocks and never sleeps: the loop calls
//! [`Conn::on_event`] when the socket's token fires, and [`Conn::on_timer`] when
//! [`Conn::deadline`] has passed. The socket is edge-triggered, so every call reads and writes
//! until the kernel says `WouldBlock`.
//!
//! The HTTP/1.1 rules (request framing, response head parsing, `Content-Length`, chunked and
//! close-delimited bodies, 1xx answers, and whether the connection may be reused) come from
//! `ureq-proto`, ureq's Sans-IO core: it works over byte buffers, which is what a
//! non-blocking loop has. Its `Call` is prepared and written into a reused head buffer when a
//! request starts; the body is written straight from the caller's `Vec` (the call is told with
//! `consume_direct_write`), so the call reaches `RecvResponse` at once and the bytes drain to
//! the socket at the socket's pace. Response bytes are fed to it as they arrive.
//!
//! TLS is `rustls::ClientConnection` over the same socket (`read_tls`/`write_tls`); the
//! handshake is driven by the same events, and counts against the connect timeout.
//!
//! Bounds: a response head over 64 KiB is an error; a response body over 64 KiB is not read
//! past that point: the status is still reported, but the connection is not reused. The request
//! timeout covers everything from [`Conn::start`] to the last byte of the response, connecting
//! included if the request was queued while connecting.

use std::io;
use std::mem;
use std::time::{Duration, Instant};

use mio::{Registry, Token};
use ureq_proto::BodyMode;
use ureq_proto::client::state::{Cleanup, RecvBody, RecvResponse};
use ureq_proto::client::{Call, RecvBodyResult, RecvResponseResult};

use super::request::RequestHead;
use super::target::Target;
use super::transport::{Got, Transport};
use crate::Error;

/// A response head larger than this is refused.
const MAX_HEAD: usize = 64 * 1024;
/// At most this much response body is read; a longer one costs the connection.
pub(crate) const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// Raw (chunk-framed) body bytes allowed beyond [`MAX_RESPONSE_BODY`] for chunk headers.
const MAX_FRAMING: usize = 16 * 1024;
/// One socket read.
const CHUNK: usize = 16 * 1024;

/// How long each stage of a connection's life may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// From [`Conn::connect`] until TCP is connected and, for `https`, the TLS handshake is
    /// done (all resolved addresses together).
    pub connect: Duration,
    /// From [`Conn::start`] until the last byte of the response.
    pub request: Duration,
    /// How long a kept-alive connection may sit unused before it counts as dead.
    pub idle: Duration,
}

/// What came back for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// The HTTP status code (never 1xx: informational answers are skipped).
    pub status: u16,
    /// The `Retry-After` header's raw value, if one was sent (and was visible ASCII).
    pub retry_after: Option<String>,
    /// Whether the connection can carry another request: false after `Connection: close`,
    /// an HTTP/1.0 answer without keep-alive, a body over the bound or delimited by closing,
    /// an answer that came before the request was fully sent, or a peer that closed.
    pub keep_alive: bool,
}

/// The outcome of driving a connection.
#[derive(Debug)]
pub(crate) enum Progress {
    /// Nothing finished; wait for the next event or deadline.
    Pending,
    /// The pending request got its whole response.
    Done(Response),
    /// The pending request failed; the connection is dead.
    Failed(Error),
}

/// The protocol state of the request in flight.
enum Phase {
    Head(Call<RecvResponse>),
    Body(Call<RecvBody>),
    /// Only while moving between the two.
    Gone,
}

/// The request in flight.
struct Exchange {
    phase: Phase,
    deadline: Instant,
    /// Any response byte (plaintext) arrived.
    got_byte: bool,
    status: u16,
    retry_after: Option<String>,
    /// Body bytes after decoding, and the raw bytes they came in.
    body: usize,
    raw: usize,
}

/// One TCP (+TLS) connection to a [`Target`], carrying at most one request at a time.
///
/// Life: [`connect`](Conn::connect) -> (optionally [`start`](Conn::start) at once: the request
/// waits for the connection) -> [`on_event`](Conn::on_event) / [`on_timer`](Conn::on_timer)
/// until `Done` or `Failed` -> idle, and `start` again; or dead ([`is_dead`](Conn::is_dead)):
/// then [`close`](Conn::close) it. A failure is reported as `Failed` only while a request is
/// pending; a connection that dies without one (refused while warming up, closed by the peer
/// while idle, idle too long) just becomes dead.
pub(crate) struct Conn {
    io: Transport,
    token: Token,
    /// Closed, failed, or not reusable.
    dead: bool,
    timeouts: Timeouts,
    connect_deadline: Instant,
    idle_deadline: Option<Instant>,
    host_header: String,
    path: String,
    authorization: Option<String>,
    req: Option<Exchange>,
    /// The request head, and how much of it was written.
    head: Vec<u8>,
    head_sent: usize,
    /// The request body, and how much of it was written.
    body: Vec<u8>,
    body_sent: usize,
    /// Received plaintext not yet consumed by the protocol.
    inbuf: Vec<u8>,
    /// Requests answered on this connection.
    served: u64,
    stale: bool,
    /// A response completed during the current `on_event`, to return at its end.
    done: Option<Response>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("token", &self.token)
            .field("addr", &self.io.addr())
            .field("connected", &self.io.is_connected())
            .field("dead", &self.dead)
            .field("busy", &self.req.is_some())
            .field("served", &self.served)
            .finish_non_exhaustive()
    }
}

fn protocol_error(what: impl std::fmt::Display) -> Error {
    Error::Io {
        kind: io::ErrorKind::InvalidData,
        message: format!("bad HTTP response: {what}"),
    }
}

impl Conn {
    /// Starts a non-blocking connect to `target.addrs[0]` (an address that fails at once, or
    /// later, gives way to the next one) and registers the socket with `registry` under
    /// `token` for readable and writable events (mio is edge-triggered).
    ///
    /// Fails with `Error::Io` only when no address can even start connecting.
    pub fn connect(
        target: &Target,
        registry: &Registry,
        token: Token,
        timeouts: Timeouts,
        now: Instant,
    ) -> Result<Conn, Error> {
        Ok(Conn {
            io: Transport::open(target, registry, token)?,
            token,
            dead: false,
            timeouts,
            connect_deadline: now + timeouts.connect,
            idle_deadline: None,
            host_header: target.host_header.clone(),
            path: target.path_and_query.clone(),
            authorization: target.authorization.clone(),
            req: None,
            head: Vec::new(),
            head_sent: 0,
            body: Vec::new(),
            body_sent: 0,
            inbuf: Vec::new(),
            served: 0,
            stale: false,
            done: None,
        })
    }

    /// Queues one `POST` of `body` with `headers` (name, value) on this connection, which
    /// must be idle or still connecting (the request then goes out once connected). `Host`
    /// (from the target), `Content-Length` and, for a URL with credentials, `Authorization`
    /// are added; `Content-Type` and the rest come from `headers`.
    ///
    /// Nothing is written here: call [`on_event`](Conn::on_event) right after, since an
    /// edge-triggered socket that is already writable sends no new event.
    ///
    /// Errors: `Error::Io` (`ResourceBusy`) if a request is already in flight, (`NotConnected`)
    /// if the connection is dead; `Error::Config` naming `headers` for a header that is not
    /// valid HTTP or that the connection sets itself.
    pub fn start(
        &mut self,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        now: Instant,
    ) -> Result<(), Error> {
        if self.dead {
            return Err(Error::Io {
                kind: io::ErrorKind::NotConnected,
                message: "the connection is closed".into(),
            });
        }
        if self.req.is_some() {
            return Err(Error::Io {
                kind: io::ErrorKind::ResourceBusy,
                message: "the connection already has a request in flight".into(),
            });
        }
        let request = RequestHead {
            path: &self.path,
            host: &self.host_header,
            authorization: self.authorization.as_deref(),
            headers,
            body_len: body.len(),
        };
        let call = request.write(&mut self.head)?;
        self.body = body;
        self.body_sent = 0;
        self.head_sent = 0;
        self.inbuf.clear();
        self.stale = false;
        self.idle_deadline = None;
        self.req = Some(Exchange {
            phase: Phase::Head(call),
            deadline: now + self.timeouts.request,
            got_byte: false,
            status: 0,
            retry_after: None,
            body: 0,
            raw: 0,
        });
        Ok(())
    }

    /// Drives the connection after a mio event for its token: connect completion (falling
    /// back to the next address through `registry` if this one failed), TLS handshake,
    /// writing the request until `WouldBlock`, reading until `WouldBlock`. Returns `Done` once
    /// the whole response (head and body) is read, `Failed` if the pending request failed.
    /// Spurious calls are harmless.
    pub fn on_event(&mut self, registry: &Registry, now: Instant) -> Progress {
        let result = self.drive(registry, now);
        match (self.done.take(), result) {
            (Some(resp), Ok(())) => Progress::Done(resp),
            (Some(mut resp), Err(_)) => {
                // The connection broke after the whole response arrived: the answer stands.
                self.die();
                resp.keep_alive = false;
                Progress::Done(resp)
            }
            (None, Ok(())) => Progress::Pending,
            (None, Err(e)) => self.fail(e),
        }
    }

    fn drive(&mut self, registry: &Registry, now: Instant) -> Result<(), Error> {
        if self.dead || !self.io.poll_connect(registry)? {
            return Ok(());
        }
        loop {
            let (taken, wrote) = self
                .io
                .send(&self.head[self.head_sent..], &self.body[self.body_sent..])?;
            let head_left = self.head.len() - self.head_sent;
            self.head_sent += taken.min(head_left);
            self.body_sent += taken.saturating_sub(head_left);
            let read = self.read_all(now)?;
            if self.dead {
                return Ok(());
            }
            if self.req.is_none() && self.idle_deadline.is_none() && !self.io.handshaking() {
                // Just connected (and handshaken) with nothing to send.
                self.idle_deadline = Some(now + self.timeouts.idle);
            }
            if !(wrote || read) {
                return Ok(());
            }
        }
    }

    /// Reads until `WouldBlock`, end of stream, or a dead connection, feeding the protocol.
    /// Returns whether anything was read.
    fn read_all(&mut self, now: Instant) -> Result<bool, Error> {
        let mut buf = [0u8; CHUNK];
        let mut progressed = false;
        while !self.dead {
            match self.io.read(&mut buf)? {
                Got::WouldBlock => break,
                Got::Eof => {
                    self.on_eof()?;
                    progressed = true;
                    break;
                }
                Got::Data(n) => {
                    progressed = true;
                    if self.req.is_none() {
                        // Bytes nobody asked for (a server's parting 408, say): the stream
                        // cannot be trusted for another request.
                        self.die();
                        break;
                    }
                    self.inbuf.extend_from_slice(&buf[..n]);
                    self.consume(now)?;
                }
            }
        }
        Ok(progressed)
    }

    /// The peer closed its side.
    fn on_eof(&mut self) -> Result<(), Error> {
        let Some(ex) = self.req.as_mut() else {
            self.die();
            return Ok(());
        };
        let ended = match &ex.phase {
            Phase::Body(call) => {
                matches!(call.body_mode(), BodyMode::CloseDelimited) || call.is_ended_chunked()
            }
            _ => false,
        };
        if ended {
            self.over_limit();
            return Ok(());
        }
        Err(Error::Io {
            kind: io::ErrorKind::UnexpectedEof,
            message: "the server closed the connection before the response was complete".into(),
        })
    }

    /// Feeds `inbuf` to the protocol.
    fn consume(&mut self, now: Instant) -> Result<(), Error> {
        let mut out = [0u8; CHUNK];
        let Some(ex) = self.req.as_mut() else {
            return Ok(());
        };
        ex.got_byte = true;
        loop {
            match mem::replace(&mut ex.phase, Phase::Gone) {
                Phase::Head(mut call) => {
                    let (used, resp) = call
                        .try_response(&self.inbuf, false)
                        .map_err(protocol_error)?;
                    if used > MAX_HEAD {
                        return Err(protocol_error("head larger than 64 KiB"));
                    }
                    self.inbuf.drain(..used);
                    let Some(resp) = resp else {
                        ex.phase = Phase::Head(call);
                        if used > 0 {
                            continue; // a 1xx answer was skipped
                        }
                        if self.inbuf.len() > MAX_HEAD {
                            return Err(protocol_error("head larger than 64 KiB"));
                        }
                        return Ok(());
                    };
                    ex.status = resp.status().as_u16();
                    ex.retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    match call.proceed() {
                        Some(RecvResponseResult::RecvBody(call)) => ex.phase = Phase::Body(call),
                        Some(RecvResponseResult::Redirect(call)) => {
                            return self.complete(call.proceed(), now);
                        }
                        Some(RecvResponseResult::Cleanup(call)) => return self.complete(call, now),
                        None => return Err(protocol_error("incomplete response head")),
                    }
                }
                Phase::Body(mut call) => {
                    if matches!(call.body_mode(), BodyMode::CloseDelimited) {
                        // The body ends when the server closes: count it, never reuse.
                        ex.body += self.inbuf.len();
                        self.inbuf.clear();
                        ex.phase = Phase::Body(call);
                        if ex.body > MAX_RESPONSE_BODY {
                            self.over_limit();
                        }
                        return Ok(());
                    }
                    // Never decode more than one byte past the bound.
                    let room = (MAX_RESPONSE_BODY + 1)
                        .saturating_sub(ex.body)
                        .min(out.len());
                    let (used, produced) = call
                        .read(&self.inbuf, &mut out[..room])
                        .map_err(protocol_error)?;
                    self.inbuf.drain(..used);
                    ex.body += produced;
                    ex.raw += used;
                    if ex.body > MAX_RESPONSE_BODY || ex.raw > MAX_RESPONSE_BODY + MAX_FRAMING {
                        self.over_limit();
                        return Ok(());
                    }
                    if call.can_proceed() {
                        return match call.proceed() {
                            Some(RecvBodyResult::Cleanup(c)) => self.complete(c, now),
                            Some(RecvBodyResult::Redirect(c)) => self.complete(c.proceed(), now),
                            None => Err(protocol_error("incomplete response body")),
                        };
                    }
                    ex.phase = Phase::Body(call);
                    if used == 0 {
                        return Ok(());
                    }
                }
                Phase::Gone => return Err(protocol_error("internal state lost")),
            }
        }
    }

    /// The response is complete.
    fn complete(&mut self, call: Call<Cleanup>, now: Instant) -> Result<(), Error> {
        let Some(ex) = self.req.as_mut() else {
            return Ok(());
        };
        let sent_all = self.head_sent == self.head.len() && self.body_sent == self.body.len();
        let resp = Response {
            status: ex.status,
            retry_after: ex.retry_after.take(),
            // Bytes after the response, or a request not fully sent, leave the stream in a
            // state no next request can start from.
            keep_alive: !call.must_close_connection() && sent_all && self.inbuf.is_empty(),
        };
        let idle = resp.keep_alive.then(|| now + self.timeouts.idle);
        self.finish(resp, idle);
        Ok(())
    }

    /// The body outgrew its bound, or ended with the connection: report the status, give up
    /// the connection.
    fn over_limit(&mut self) {
        if let Some(ex) = self.req.as_mut() {
            let resp = Response {
                status: ex.status,
                retry_after: ex.retry_after.take(),
                keep_alive: false,
            };
            self.finish(resp, None);
        }
    }

    /// Ends the exchange with `resp`: idle until `idle` if reusable, else dead.
    fn finish(&mut self, resp: Response, idle: Option<Instant>) {
        self.req = None;
        self.served += 1;
        self.inbuf.clear();
        self.idle_deadline = idle;
        if idle.is_none() {
            self.die();
        }
        self.done = Some(resp);
    }

    fn die(&mut self) {
        self.dead = true;
        self.idle_deadline = None;
        if let Some(done) = self.done.as_mut() {
            // Closed right after answering: the answer stands, the connection does not.
            done.keep_alive = false;
        }
    }

    /// The connection failed: report it for the pending request, if any.
    fn fail(&mut self, e: Error) -> Progress {
        let ex = self.req.take();
        self.die();
        match ex {
            Some(ex) => {
                self.stale = self.served > 0 && !ex.got_byte && matches!(e, Error::Io { .. });
                Progress::Failed(e)
            }
            None => Progress::Pending,
        }
    }

    /// The next deadline: connect (until connected and handshaken), request (while one is
    /// in flight), or idle (while kept alive). `None` when dead.
    pub fn deadline(&self) -> Option<Instant> {
        if self.dead {
            return None;
        }
        let request = self.req.as_ref().map(|r| r.deadline);
        if self.connecting() {
            return Some(request.map_or(self.connect_deadline, |r| r.min(self.connect_deadline)));
        }
        request.or(self.idle_deadline)
    }

    /// TCP is connected and, for `https`, the handshake is done (and it has not failed).
    pub fn is_established(&self) -> bool {
        !self.dead && !self.connecting()
    }

    /// Still connecting or handshaking.
    fn connecting(&self) -> bool {
        !self.io.is_connected() || self.io.handshaking()
    }

    /// Call when [`deadline`](Conn::deadline) has passed. A pending request fails with
    /// `Error::Timeout` (`waiting_for` "connect" while connecting or handshaking, else
    /// "response"; `after` the timeout that ran out); an idle connection past its idle
    /// deadline, or one still connecting without a request, becomes dead. Early calls change
    /// nothing.
    pub fn on_timer(&mut self, now: Instant) -> Progress {
        if self.dead {
            return Progress::Pending;
        }
        let connecting = self.connecting();
        let timeout = |waiting_for, after| Error::Timeout { waiting_for, after };
        if connecting && now >= self.connect_deadline {
            return self.fail(timeout("connect", self.timeouts.connect));
        }
        if let Some(ex) = &self.req
            && now >= ex.deadline
        {
            let what = if connecting { "connect" } else { "response" };
            return self.fail(timeout(what, self.timeouts.request));
        }
        if self.req.is_none() && self.idle_deadline.is_some_and(|d| now >= d) {
            self.die();
        }
        Progress::Pending
    }

    /// Connected (and handshaken), no request in flight, reusable.
    pub fn is_idle(&self) -> bool {
        !self.dead && self.req.is_none() && !self.connecting()
    }

    /// Closed by the peer, failed, timed out, idle too long, or not reusable: drop it (with
    /// [`close`](Conn::close)).
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Whether the last request failed with an I/O error before any response byte arrived,
    /// on a connection that had answered an earlier request: a kept-alive connection the
    /// server had already given up on. The caller may retry once on a fresh connection.
    /// (A timeout is never stale: the server may be processing the request.)
    pub fn failed_stale(&self) -> bool {
        self.stale
    }

    /// Deregisters the socket and shuts it down (with a TLS `close_notify` when possible).
    pub fn close(mut self, registry: &Registry) {
        self.io.close(registry);
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
