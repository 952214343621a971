//! One non-blocking HTTP/1.1 client connection for a worker's mio loop.
//!
//! A [`Conn`] is one TCP connection (plus TLS for `https`) carrying at most one request at a
//! time, kept alive between requests. It never blocks, never sleeps and **reads no clock**:
//! the loop calls [`Conn::on_event`] when the socket's token fires, and that is all that
//! moves it. **The caller owns every deadline** (connect, request, idle; see [`Timeouts`]):
//! a connection that never finishes its handshake, a server that hangs or trickles, an idle
//! connection kept too long, all stay as they are until the caller gives up on them and
//! [`close`](Conn::close)s them. In the engine the endpoint's state machine keeps those
//! deadlines (`engine/endpoint/conns.rs`), one clock for every connection and request.
//!
//! It is the I/O half of the client: it owns the [`Transport`] (the socket, and rustls) and
//! the request's bytes. The protocol half, reading the response, is a [`ResponseReader`]
//! (`response.rs`), which sees only byte slices. The request's `ureq-proto` `Call` is
//! prepared and written into a reused head buffer when a request starts; the body is shared
//! with the caller (a [`Body`]: the caller keeps it for another attempt, and no attempt
//! copies it) and written straight from it (the call is told with `consume_direct_write`),
//! so the call waits for the response at once and the bytes drain to the socket at the
//! socket's pace. The connection holds the body only while its request is in flight.
//!
//! TLS is `rustls::ClientConnection` over the same socket (`read_tls`/`write_tls`); the
//! handshake is driven by the same events. A connection counts as established
//! ([`Conn::is_established`]) only once it is done, so the caller's connect deadline covers
//! it.
//!
//! **A bounded share of the loop.** One `on_event` moves at most [`DRIVE_BUDGET`] bytes (read
//! and written together). The socket is edge-triggered: mio reports it again only after it
//! said `WouldBlock`, so a connection that stopped at its budget says so
//! ([`Conn::wants_drive`]) and its owner calls `on_event` again on the next loop turn, after
//! the other connections, endpoints and timers had theirs. A server that sends without end
//! therefore cannot keep its worker from anything else, and the caller's request deadline
//! still comes round.
//!
//! Bounds: the response is read within the reader's bounds (64 KiB of head, 64 KiB of body,
//! 8 KiB of an unfinished chunked-body line): a head or line past its bound fails the request
//! with a typed error; a body past its bound is not read further: the status is still
//! reported, but the connection is not reused.

use std::io;
use std::time::Duration;

use mio::{Registry, Token};

use super::request::{Body, RequestHead};
use super::response::{Answer, Fed, ResponseReader};
use super::target::Target;
use super::transport::{Got, Transport};
use crate::Error;

/// One socket read.
const CHUNK: usize = 16 * 1024;
/// Bytes one [`Conn::on_event`] may move (read and written together) before it hands the
/// loop back: enough for any webhook answer and a large part of a request, small enough that
/// a worker's other endpoints and timers wait well under a millisecond for it.
pub(crate) const DRIVE_BUDGET: usize = 256 * 1024;

/// How long each stage of a connection's life may take: the deadlines a [`Conn`]'s owner
/// keeps for it (a `Conn` itself reads no clock). In the engine, the endpoint's state machine
/// keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// From [`Conn::connect`] until TCP is connected and, for `https`, the TLS handshake is
    /// done ([`Conn::is_established`]; all resolved addresses together).
    pub connect: Duration,
    /// From [`Conn::start`] until the last byte of the response.
    pub request: Duration,
    /// How long a kept-alive connection may sit unused before its owner closes it.
    pub idle: Duration,
}

/// What came back for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// The HTTP status code (never 1xx: informational answers are skipped).
    pub status: u16,
    /// The `Retry-After` header's raw value, if one was sent (and was visible ASCII).
    pub retry_after: Option<String>,
    /// A redirect's `Location`, if it sent one (see [`Answer::location`]).
    ///
    /// [`Answer::location`]: super::response::Answer::location
    pub location: Option<String>,
    /// Whether the connection can carry another request: false after `Connection: close`,
    /// an HTTP/1.0 answer without keep-alive, a body over the bound or delimited by closing,
    /// an answer that came before the request was fully sent, or a peer that closed.
    pub keep_alive: bool,
}

/// The outcome of driving a connection.
#[derive(Debug)]
pub(crate) enum Progress {
    /// Nothing finished; wait for the next event (or give up at the caller's deadline).
    Pending,
    /// The pending request got its whole response.
    Done(Response),
    /// The pending request failed; the connection is dead.
    Failed(Error),
}

/// The request in flight.
struct Exchange {
    reader: ResponseReader,
    /// Its body (shared with the caller).
    body: Body,
    /// Any response byte (plaintext) arrived.
    got_byte: bool,
}

/// One TCP (+TLS) connection to a [`Target`], carrying at most one request at a time.
///
/// Life: [`connect`](Conn::connect) -> (optionally [`start`](Conn::start) at once: the request
/// waits for the connection) -> [`on_event`](Conn::on_event) until `Done` or `Failed` -> idle,
/// and `start` again; or dead ([`is_dead`](Conn::is_dead)): then [`close`](Conn::close) it.
/// A failure is reported as `Failed` only while a request is pending; a connection that dies
/// without one (refused while warming up, closed by the peer while idle) just becomes dead.
///
/// It has no timer: a stage that never ends (a handshake, an answer, an idle spell) lasts
/// until the owner, at its own deadline, closes the connection.
pub(crate) struct Conn {
    io: Transport,
    token: Token,
    /// Closed, failed, or not reusable.
    dead: bool,
    host_header: String,
    path: String,
    authorization: Option<String>,
    req: Option<Exchange>,
    /// The request head, and how much of it was written.
    head: Vec<u8>,
    head_sent: usize,
    /// How much of the request's body was written.
    body_sent: usize,
    /// Requests answered on this connection.
    served: u64,
    stale: bool,
    /// A response completed during the current `on_event`, to return at its end.
    done: Option<Response>,
    /// The last `on_event` stopped at its budget, maybe before `WouldBlock`.
    more: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("token", &self.token)
            .field("addr", &self.io.addr())
            .field("connected", &self.io.is_connected())
            .field("dead", &self.dead)
            .field("busy", &self.req.is_some())
            .field(
                "buffered",
                &self.req.as_ref().map_or(0, |r| r.reader.buffered()),
            )
            .field("served", &self.served)
            .field("wants_drive", &self.more)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Starts a non-blocking connect to `target.addrs[0]` (an address that fails at once, or
    /// later, gives way to the next one) and registers the socket with `registry` under
    /// `token` for readable and writable events (mio is edge-triggered).
    ///
    /// Fails with `Error::Io` only when no address can even start connecting. It never
    /// fails later for taking too long: the caller's connect deadline covers it, until
    /// [`is_established`](Conn::is_established).
    pub fn connect(target: &Target, registry: &Registry, token: Token) -> Result<Conn, Error> {
        Ok(Conn {
            io: Transport::open(target, registry, token)?,
            token,
            dead: false,
            host_header: target.host_header.clone(),
            path: target.path_and_query.clone(),
            authorization: target.authorization.clone(),
            req: None,
            head: Vec::new(),
            head_sent: 0,
            body_sent: 0,
            served: 0,
            stale: false,
            done: None,
            more: false,
        })
    }

    /// Queues one `POST` of `body` with `headers` (name, value) on this connection, which
    /// must be idle or still connecting (the request then goes out once connected). `Host`
    /// (from the target), `Content-Length` and, for a URL with credentials, `Authorization`
    /// are added; `Content-Type` and the rest come from `headers`. The connection holds
    /// `body` (a reference, not a copy) until the request is answered or fails.
    ///
    /// Nothing is written here: call [`on_event`](Conn::on_event) right after, since an
    /// edge-triggered socket that is already writable sends no new event. The request
    /// stays pending until its answer or a failure: its deadline is the caller's.
    ///
    /// Errors: `Error::Io` (`ResourceBusy`) if a request is already in flight, (`NotConnected`)
    /// if the connection is dead; `Error::Config` naming `headers` for a header that is not
    /// valid HTTP or that the connection sets itself.
    pub fn start(&mut self, headers: &[(&str, &str)], body: Body) -> Result<(), Error> {
        if self.dead {
            return Err(Error::Io {
                kind: io::ErrorKind::NotConnected,
                message: "the connection is closed".into(),
                source: None,
            });
        }
        if self.req.is_some() {
            return Err(Error::Io {
                kind: io::ErrorKind::ResourceBusy,
                message: "the connection already has a request in flight".into(),
                source: None,
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
        self.body_sent = 0;
        self.head_sent = 0;
        self.stale = false;
        self.req = Some(Exchange {
            reader: ResponseReader::new(call),
            body,
            got_byte: false,
        });
        Ok(())
    }

    /// Drives the connection after a mio event for its token (or again, while
    /// [`wants_drive`](Conn::wants_drive)): connect completion (falling back to the next
    /// address through `registry` if this one failed), TLS handshake, writing the request,
    /// reading the response, until the socket says `WouldBlock` or [`DRIVE_BUDGET`] bytes
    /// moved. Returns `Done` once the whole response (head and body) is read, `Failed` if the
    /// pending request failed. Spurious calls are harmless. Never blocks.
    pub fn on_event(&mut self, registry: &Registry) -> Progress {
        let result = self.drive(registry);
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

    /// Whether the last [`on_event`](Conn::on_event) stopped because its budget ran out,
    /// before the socket said `WouldBlock`: mio will not report this socket again until it
    /// has, so the owner must call `on_event` again on its next loop turn (and not sleep
    /// while any connection wants it). False once the connection is dead.
    pub fn wants_drive(&self) -> bool {
        self.more && !self.dead
    }

    fn drive(&mut self, registry: &Registry) -> Result<(), Error> {
        self.more = false;
        if self.dead || !self.io.poll_connect(registry)? {
            return Ok(());
        }
        let mut budget = DRIVE_BUDGET;
        loop {
            let head = &self.head[self.head_sent..];
            let head = &head[..head.len().min(budget)];
            let body = self
                .req
                .as_ref()
                .map_or(&[][..], |ex| &ex.body[self.body_sent..]);
            let body = &body[..body.len().min(budget - head.len())];
            let (taken, wrote) = self.io.send(head, body)?;
            let head_left = head.len();
            self.head_sent += taken.min(head_left);
            self.body_sent += taken.saturating_sub(head_left);
            budget -= taken.min(budget);
            let read = self.read_all(&mut budget)?;
            if self.dead {
                return Ok(());
            }
            if budget == 0 {
                // Maybe more to read or write, and no event will say so: come back.
                self.more = true;
                return Ok(());
            }
            if !(wrote || read) {
                return Ok(());
            }
        }
    }

    /// Reads until `WouldBlock`, end of stream, a dead connection, or the end of `budget`
    /// (which it spends), feeding the response reader. Returns whether anything was read.
    fn read_all(&mut self, budget: &mut usize) -> Result<bool, Error> {
        let mut buf = [0u8; CHUNK];
        let mut progressed = false;
        while !self.dead && *budget > 0 {
            let before = self.io.received();
            let got = self.io.read(&mut buf[..CHUNK.min(*budget)])?;
            let raw = usize::try_from(self.io.received() - before).unwrap_or(usize::MAX);
            match got {
                Got::WouldBlock => break,
                Got::Eof => {
                    self.on_eof()?;
                    progressed = true;
                    break;
                }
                Got::Again => {
                    progressed = true;
                    *budget -= raw.max(1).min(*budget);
                }
                Got::Data(n) => {
                    progressed = true;
                    *budget -= raw.max(n).min(*budget);
                    let Some(ex) = self.req.as_mut() else {
                        // Bytes nobody asked for (a server's parting 408, say): the stream
                        // cannot be trusted for another request.
                        self.die();
                        break;
                    };
                    ex.got_byte = true;
                    if let Fed::Done(answer) = ex.reader.feed(&buf[..n])? {
                        self.complete(answer);
                    }
                }
            }
        }
        Ok(progressed)
    }

    /// The peer closed its side: the end of a close-delimited body, or a broken exchange.
    fn on_eof(&mut self) -> Result<(), Error> {
        let Some(ex) = self.req.as_mut() else {
            self.die();
            return Ok(());
        };
        let answer = ex.reader.eof()?;
        self.complete(answer);
        self.die();
        Ok(())
    }

    /// The response is read (as far as its bounds allow).
    fn complete(&mut self, answer: Answer) {
        // A request not fully sent leaves the stream in a state no next request can start
        // from (the server answered early).
        let body_len = self.req.as_ref().map_or(0, |ex| ex.body.len());
        let sent_all = self.head_sent == self.head.len() && self.body_sent == body_len;
        let resp = Response {
            status: answer.status,
            retry_after: answer.retry_after,
            location: answer.location,
            keep_alive: answer.reusable && sent_all,
        };
        self.req = None;
        self.served += 1;
        if !resp.keep_alive {
            self.die();
        }
        self.done = Some(resp);
    }

    fn die(&mut self) {
        self.dead = true;
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

    /// TCP is connected and, for `https`, the handshake is done (and it has not failed).
    pub fn is_established(&self) -> bool {
        !self.dead && !self.connecting()
    }

    /// Still connecting or handshaking.
    fn connecting(&self) -> bool {
        !self.io.is_connected() || self.io.handshaking()
    }

    /// Connected (and handshaken), no request in flight, reusable. (The engine asks its
    /// endpoint's state machine instead, which knows the same.)
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        !self.dead && self.req.is_none() && !self.connecting()
    }

    /// Closed by the peer, failed, or not reusable: drop it (with [`close`](Conn::close)).
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Whether the last request failed with an I/O error before any response byte arrived,
    /// on a connection that had answered an earlier request: a kept-alive connection the
    /// server had already given up on. The caller may retry once on a fresh connection.
    /// (A request its owner gave up on at a deadline is never stale: the server may be
    /// processing it.)
    pub fn failed_stale(&self) -> bool {
        self.stale
    }

    /// Deregisters the socket and shuts it down (with a TLS `close_notify` when possible).
    /// This is how the owner ends a connection past one of its deadlines (a request in
    /// flight is then simply abandoned: the owner has already counted it failed).
    pub fn close(mut self, registry: &Registry) {
        self.io.close(registry);
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
