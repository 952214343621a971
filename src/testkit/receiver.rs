//! A loopback webhook receiver with a fault plan: the other end of every delivery test,
//! benchmark, and (later) the CLI.
//!
//! [`Receiver::start`] binds `127.0.0.1:0` and serves HTTP/1.1 with keep-alive, one thread per
//! connection (see `conn.rs` for what it parses and refuses). For each request it scans the
//! `{"events":[...]}` envelope for each event's id (`scan.rs`; with `strict_json`, it also
//! parses the whole body), checks the Standard Webhooks signature when it was given secrets,
//! and then follows its [`ReceiverConfig`]'s fault plan: a script of replies, a failing
//! window, hangs, dropped connections, slow reads, delays. The ids it receives are kept in
//! `arrivals.rs`.
//!
//! Its contract is on [`Receiver`], where rustdoc shows it (this module is private).
//!
//! Its clock is real time: `fail_for` windows and `first_2xx_after_fault` use `Instant`.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};
use serde::de::IgnoredAny;

use super::arrivals::Arrivals;
use super::conn::{Conn, Framing, Incoming, Request};
use super::plan::{Fault, ReceiverConfig, Reply};
use super::scan::{NotEnvelope, event_ids};
use super::tls::{Stream, server_config};
use crate::http::verify;
use crate::policy::Wakeup;

use super::server::Server;

/// What a [`Receiver`] has seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Connections accepted.
    pub connections: u64,
    /// Requests read (answered or not).
    pub requests: u64,
    /// Events received: in requests answered 2xx.
    pub events: u64,
    /// Received events whose id had not been received before.
    pub distinct: u64,
    /// Received events whose id had been received before.
    pub duplicates: u64,
    /// Requests refused for a missing or invalid signature.
    pub bad_signatures: u64,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Time from the first request to the first 2xx answer that followed a fault (any
    /// non-2xx answer, hang or dropped connection): how long the outage lasted as the sender
    /// saw it. `None` until there was a fault and then a 2xx.
    pub first_2xx_after_fault: Option<Duration>,
}

struct State {
    stats: ReceiverStats,
    arrivals: Arrivals,
    /// The smallest `distinct` count a [`Receiver::wait_for_distinct`] waits for (`u64::MAX`
    /// when none does): arrivals below it wake nobody, so a waiter is not woken per request.
    wake_at: u64,
    script: VecDeque<Reply>,
    first_request: Option<Instant>,
    faulted: bool,
}

impl State {
    /// Brings `distinct` and `duplicates` up to date with the ids received.
    fn classify(&mut self) {
        let c = self.arrivals.classify();
        self.stats.distinct += c.first;
        self.stats.duplicates += c.repeats;
    }
}

impl Default for State {
    fn default() -> Self {
        State {
            stats: ReceiverStats::default(),
            arrivals: Arrivals::default(),
            wake_at: u64::MAX,
            script: VecDeque::new(),
            first_request: None,
            faulted: false,
        }
    }
}

struct Shared {
    config: ReceiverConfig,
    /// Set when serving HTTPS.
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Mutex<State>,
    changed: Condvar,
    stop: Arc<Wakeup>,
}

/// A running loopback webhook receiver: HTTP/1.1 on `127.0.0.1`, keep-alive, one thread per
/// connection, a fault plan from its [`ReceiverConfig`]. What it promises:
/// - **An event counts as received only when it was answered 2xx**, and is then recorded in
///   arrival order ([`Receiver::ids`]) and deduplicated by id ([`ReceiverStats`]: `distinct`
///   and `duplicates`), so a test can check "nothing lost, nothing doubled". It is recorded
///   before the answer is written, so a sender that has the answer finds it in every count.
///   (Telling repeats apart happens after the answer is written, off the sender's path;
///   [`Receiver::stats`] and [`Receiver::wait_for_distinct`] finish it before they read.)
/// - **Waiting is event-driven**: [`Receiver::wait_for_distinct`] sleeps on a condition
///   variable, never polls.
/// - **Shutdown never hangs**: [`Receiver::shutdown`] (and `Drop`) stop accepting, shut down
///   every open socket (hung ones included; the receiver keeps a handle to each for this),
///   cut every delay and hang short, and join the threads.
pub struct Receiver {
    shared: Arc<Shared>,
    server: Server,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Binds `127.0.0.1:0` and starts serving. Fails if the config is invalid (a status
    /// outside 100..=599, a zero slow-read chunk, a TLS certificate or key that does not
    /// parse) or the socket cannot be bound.
    pub fn start(config: ReceiverConfig) -> io::Result<Receiver> {
        config.validate()?;
        let tls = match &config.tls {
            Some((chain, key)) => Some(server_config(chain, key)?),
            None => None,
        };
        let stop = Arc::new(Wakeup::new());
        let state = State {
            script: config.script.iter().cloned().collect(),
            ..State::default()
        };
        let shared = Arc::new(Shared {
            config,
            tls,
            state: Mutex::new(state),
            changed: Condvar::new(),
            stop: stop.clone(),
        });
        let s = shared.clone();
        let server = Server::start(
            "hookwire-receiver",
            "hookwire-receiver-conn",
            stop,
            move |c| {
                s.state.lock().stats.connections += 1;
                serve(c, &s);
            },
        )?;
        Ok(Receiver { shared, server })
    }

    /// The URL to post to: `http://127.0.0.1:PORT/`, or `https://` when serving TLS.
    pub fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/", self.server.addr())
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// A copy of the counters.
    pub fn stats(&self) -> ReceiverStats {
        let mut st = self.shared.state.lock();
        st.classify();
        st.stats.clone()
    }

    /// The ids of received events, in arrival order, duplicates included.
    pub fn ids(&self) -> Vec<String> {
        self.shared.state.lock().arrivals.to_vec()
    }

    /// Waits until at least `n` distinct events were received, or `timeout` passed. Returns
    /// whether they were.
    pub fn wait_for_distinct(&self, n: u64, timeout: Duration) -> bool {
        // An absurd timeout is capped rather than overflowing the deadline.
        let deadline = Instant::now() + timeout.min(Duration::from_secs(365 * 24 * 3600));
        let mut st = self.shared.state.lock();
        st.classify();
        while st.stats.distinct < n {
            st.wake_at = st.wake_at.min(n);
            if self
                .shared
                .changed
                .wait_until(&mut st, deadline)
                .timed_out()
            {
                st.classify();
                return st.stats.distinct >= n;
            }
        }
        true
    }

    /// Stops serving: closes the listener and every connection, cuts hangs and delays short,
    /// and joins the threads. Idempotent; also done on drop.
    pub fn shutdown(&self) {
        self.server.shutdown();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the fault plan decided for one request.
enum Answer {
    Status(u16, Vec<(&'static str, String)>, Duration, Framing),
    Hang,
    Drop,
}

fn serve(stream: TcpStream, shared: &Shared) {
    let cfg = &shared.config;
    let Ok(stream) = Stream::new(stream, shared.tls.as_ref()) else {
        return;
    };
    let mut conn = Conn::new(stream, cfg.slow_read, cfg.max_body, &shared.stop);
    loop {
        let req = match conn.read_request() {
            Incoming::Request(req) => req,
            Incoming::Closed => return,
            Incoming::Refuse(status) => {
                shared.record_refusal(status);
                let close = Framing {
                    chunked: false,
                    close: true,
                };
                let _ = conn.respond(status, &[], 0, close);
                return;
            }
        };
        let (answer, ids) = shared.decide(&req, conn.body(&req));
        match answer {
            Answer::Hang => {
                while !shared.stop.wait_for(Duration::from_secs(3600)) {}
                return;
            }
            Answer::Drop => {
                conn.abort();
                return;
            }
            Answer::Status(status, headers, delay, mut framing) => {
                if !delay.is_zero() && shared.stop.wait_for(delay) {
                    return;
                }
                shared.record_answer(status, ids);
                framing.close |= req.close;
                conn.consume(&req);
                let sent = conn.respond(status, &headers, cfg.response_body, framing);
                shared.classify();
                if sent.is_err() || framing.close {
                    return;
                }
            }
        }
    }
}

/// The id an event without a usable id of its own is counted under: the request's
/// `webhook-id`, suffixed `#i` (its index) when the request carries more than one event.
fn fallback_id(webhook_id: Option<&str>, index: usize, count: usize) -> String {
    let base = webhook_id.unwrap_or("");
    if count > 1 {
        format!("{base}#{index}")
    } else {
        base.to_owned()
    }
}

impl Shared {
    /// Counts the request and applies, in order: envelope decoding (400), the signature
    /// (401), then the fault plan. Returns the answer and the ids it would receive: each
    /// event's own (see `scan.rs`), else [`fallback_id`].
    fn decide<'b>(&self, req: &Request, body: &'b [u8]) -> (Answer, Vec<Cow<'b, str>>) {
        // Reading and verifying the body are the costly part: done before taking the lock.
        let found = event_ids(body).and_then(|ids| {
            let strict = self.config.strict_json;
            if strict && serde_json::from_slice::<IgnoredAny>(body).is_err() {
                return Err(NotEnvelope);
            }
            Ok(ids)
        });
        let signed = found.is_err() || self.config.secrets.is_empty() || self.signed(req, body);

        let now = Instant::now();
        let mut st = self.state.lock();
        st.stats.requests += 1;
        let first = *st.first_request.get_or_insert(now);
        let refuse = |status| {
            let answer = Answer::Status(status, Vec::new(), self.config.delay, Framing::default());
            (answer, Vec::new())
        };
        let Ok(found) = found else {
            return refuse(400);
        };
        if !signed {
            st.stats.bad_signatures += 1;
            return refuse(401);
        }
        match self.config.fault {
            Fault::Hang => {
                st.faulted = true;
                return (Answer::Hang, Vec::new());
            }
            Fault::DropConnection => {
                st.faulted = true;
                return (Answer::Drop, Vec::new());
            }
            Fault::None => {}
        }
        let (status, headers, delay, framing) = if let Some(r) = st.script.pop_front() {
            let framing = Framing {
                chunked: r.chunked,
                close: r.close,
            };
            let headers = [("retry-after", r.retry_after), ("location", r.location)]
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect();
            (r.status, headers, r.delay, framing)
        } else {
            let status = match self.config.fail_for {
                Some((d, status)) if now.duration_since(first) < d => status,
                _ => 200,
            };
            (status, Vec::new(), Duration::ZERO, Framing::default())
        };
        let ids = if (200..300).contains(&status) {
            let wid = req.webhook_id.as_deref();
            let n = found.len();
            found
                .into_iter()
                .enumerate()
                .map(|(i, id)| id.unwrap_or_else(|| Cow::Owned(fallback_id(wid, i, n))))
                .collect()
        } else {
            Vec::new()
        };
        let delay = self.config.delay.saturating_add(delay);
        (Answer::Status(status, headers, delay, framing), ids)
    }

    /// Whether the request carries a valid Standard Webhooks signature of `body`.
    fn signed(&self, req: &Request, body: &[u8]) -> bool {
        match (
            &req.webhook_id,
            &req.webhook_timestamp,
            &req.webhook_signature,
        ) {
            (Some(id), Some(ts), Some(sig)) => verify(
                &self.config.secrets,
                id,
                ts,
                sig,
                body,
                SystemTime::now(),
                self.config.tolerance,
            )
            .is_ok(),
            _ => false,
        }
    }

    /// Records an answer about to be sent; a 2xx receives `ids`.
    fn record_answer(&self, status: u16, ids: Vec<Cow<'_, str>>) {
        let mut st = self.state.lock();
        *st.stats.statuses.entry(status).or_default() += 1;
        if !(200..300).contains(&status) {
            st.faulted = true;
            return;
        }
        if st.faulted && st.stats.first_2xx_after_fault.is_none() {
            st.stats.first_2xx_after_fault = st.first_request.map(|t| t.elapsed());
        }
        st.stats.events += ids.len() as u64;
        for id in &ids {
            st.arrivals.push(id);
        }
    }

    /// Counts the ids [`Shared::record_answer`] appended as distinct or duplicates, and wakes
    /// the waiters whose count is reached. Called after the answer is sent, so the sender
    /// does not wait for it; every reader of the counts classifies first, so none sees them
    /// short.
    fn classify(&self) {
        let mut st = self.state.lock();
        st.classify();
        // Every waiter wakes, and those still short of their count set `wake_at` again.
        let wake = st.stats.distinct >= st.wake_at;
        if wake {
            st.wake_at = u64::MAX;
        }
        drop(st);
        if wake {
            self.changed.notify_all();
        }
    }

    /// Records a request refused before it could be read whole.
    fn record_refusal(&self, status: u16) {
        let mut st = self.state.lock();
        st.stats.requests += 1;
        st.first_request.get_or_insert_with(Instant::now);
        st.faulted = true;
        *st.stats.statuses.entry(status).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Secret;
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::sync::mpsc;
    use std::thread;

    /// A safety net only: every test finishes far sooner unless the build is broken.
    const SAFETY: Duration = Duration::from_secs(5);

    fn connect(r: &Receiver) -> TcpStream {
        let s = TcpStream::connect(r.addr()).unwrap();
        s.set_read_timeout(Some(SAFETY)).unwrap();
        s
    }

    fn send(s: &mut TcpStream, body: &str, headers: &str) {
        let req = format!(
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n{headers}\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
    }

    /// Reads one answer: its status and headers (lower-cased names), body skipped. `None` if
    /// the connection closed first.
    fn answer(s: &mut TcpStream) -> Option<(u16, HashMap<String, String>)> {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => buf.push(byte[0]),
                _ => return None,
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&buf).unwrap();
        let map: HashMap<String, String> = resp
            .headers
            .iter()
            .map(|h| {
                let v = String::from_utf8_lossy(h.value).into_owned();
                (h.name.to_ascii_lowercase(), v)
            })
            .collect();
        let len: usize = map["content-length"].parse().unwrap();
        let mut body = vec![0; len];
        s.read_exact(&mut body).unwrap();
        Some((resp.code.unwrap(), map))
    }

    fn status(s: &mut TcpStream, body: &str, headers: &str) -> u16 {
        send(s, body, headers);
        answer(s).expect("an answer").0
    }

    #[test]
    fn receives_events_over_one_kept_alive_connection() {
        let r = Receiver::start(ReceiverConfig::new()).unwrap();
        assert!(r.url().starts_with("http://127.0.0.1:") && r.url().ends_with('/'));
        let mut c = connect(&r);
        assert_eq!(
            status(&mut c, r#"{"events":[{"id":"a"},{"id":7}]}"#, ""),
            200
        );
        assert_eq!(status(&mut c, r#"{"events":[{"id":"a"}]}"#, ""), 200);
        let st = r.stats();
        assert_eq!(st.connections, 1);
        assert_eq!(st.requests, 2);
        assert_eq!((st.events, st.distinct, st.duplicates), (3, 2, 1));
        assert_eq!(st.statuses, BTreeMap::from([(200, 2)]));
        assert_eq!(st.first_2xx_after_fault, None);
        assert_eq!(r.ids(), ["a", "7", "a"]);
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let r = Receiver::start(ReceiverConfig::new().statuses(vec![Reply::status(500)])).unwrap();
        let mut c = connect(&r);
        send(&mut c, r#"{"events":[{"id":"1"}]}"#, "");
        send(&mut c, r#"{"events":[{"id":"2"}]}"#, "");
        assert_eq!(answer(&mut c).unwrap().0, 500);
        assert_eq!(answer(&mut c).unwrap().0, 200);
        assert_eq!(r.ids(), ["2"]);
    }

    #[test]
    fn ids_fall_back_to_the_webhook_id_header() {
        let r = Receiver::start(ReceiverConfig::new()).unwrap();
        let mut c = connect(&r);
        let h = "webhook-id: w1\r\n";
        assert_eq!(status(&mut c, r#"{"events":[{"x":1}]}"#, h), 200);
        assert_eq!(
            status(&mut c, r#"{"events":[{"id":""},5.5,{"id":"k"},["x"]]}"#, h),
            200
        );
        // An event that is not an object has no id of its own either (an array's first
        // item is not its id, as serde's struct decoding once made it).
        assert_eq!(r.ids(), ["w1", "w1#0", "w1#1", "k", "w1#3"]);
    }

    #[test]
    fn strict_json_also_refuses_bodies_that_are_not_json() {
        // Envelopes whose structure is sound but whose skipped text is not JSON.
        let not_json = [
            r#"{"events":[{"id":"a","n":01}]}"#,
            r#"{"events":[{"id":"b","s":"\q"}]}"#,
            "{\"events\":[{\"id\":\"c\",\"s\":\"tab\there\"}]}",
            r#"{"events":[{"id":"d","t":tru}]}"#,
        ];
        let lax = Receiver::start(ReceiverConfig::new()).unwrap();
        let strict = Receiver::start(ReceiverConfig::new().strict_json(true)).unwrap();
        let (mut l, mut s) = (connect(&lax), connect(&strict));
        for body in not_json {
            assert_eq!(status(&mut l, body, ""), 200, "{body}");
            assert_eq!(status(&mut s, body, ""), 400, "{body}");
        }
        assert_eq!(lax.ids(), ["a", "b", "c", "d"]);
        // Both read a valid envelope the same way, and refuse one that is not an envelope.
        let valid = r#"{"events":[{"id":"x","n":1.5e3},{"id":2}]}"#;
        assert_eq!(status(&mut l, valid, ""), 200);
        assert_eq!(status(&mut s, valid, ""), 200);
        assert_eq!(strict.ids(), ["x", "2"]);
        assert_eq!(status(&mut l, r#"{"events":[{"id":"x"}"#, ""), 400);
        assert_eq!(status(&mut s, r#"{"events":[{"id":"x"}"#, ""), 400);
        assert_eq!(
            strict.stats().statuses,
            BTreeMap::from([(200, 1), (400, 5)])
        );
    }

    #[test]
    fn script_is_consumed_then_200_and_only_2xx_receives() {
        let cfg = ReceiverConfig::new().statuses(vec![
            Reply::status(503).retry_after("7"),
            500.into(),
            Reply::status(202),
        ]);
        let r = Receiver::start(cfg).unwrap();
        let mut c = connect(&r);
        let body = r#"{"events":[{"id":"e"}]}"#;
        send(&mut c, body, "");
        let (code, headers) = answer(&mut c).unwrap();
        assert_eq!(code, 503);
        assert_eq!(headers["retry-after"], "7");
        assert_eq!(status(&mut c, body, ""), 500);
        assert_eq!(r.stats().events, 0);
        assert_eq!(status(&mut c, body, ""), 202);
        assert_eq!(status(&mut c, body, ""), 200);
        let st = r.stats();
        assert_eq!((st.events, st.distinct, st.duplicates), (2, 1, 1));
        assert_eq!(
            st.statuses,
            BTreeMap::from([(200, 1), (202, 1), (500, 1), (503, 1)])
        );
        assert!(st.first_2xx_after_fault.is_some());
    }

    #[test]
    fn fail_for_answers_the_status_within_the_window() {
        let r = Receiver::start(ReceiverConfig::new().fail_for(Duration::from_secs(3600), 502))
            .unwrap();
        let mut c = connect(&r);
        for _ in 0..3 {
            assert_eq!(status(&mut c, r#"{"events":[]}"#, ""), 502);
        }
        // A window that has certainly ended by the second request (sleep only ever
        // oversleeps), so this does not depend on timing.
        let r =
            Receiver::start(ReceiverConfig::new().fail_for(Duration::from_millis(1), 502)).unwrap();
        let mut c = connect(&r);
        assert_eq!(status(&mut c, r#"{"events":[{"id":1}]}"#, ""), 502);
        thread::sleep(Duration::from_millis(5));
        assert_eq!(status(&mut c, r#"{"events":[{"id":1}]}"#, ""), 200);
        let after = r.stats().first_2xx_after_fault.unwrap();
        assert!(after >= Duration::from_millis(5), "{after:?}");
    }

    #[test]
    fn bad_requests_are_refused_and_counted() {
        let r = Receiver::start(ReceiverConfig::new().max_body(64)).unwrap();
        let mut c = connect(&r);
        assert_eq!(status(&mut c, r#"{"nope":1}"#, ""), 400);
        assert_eq!(status(&mut c, "[]", ""), 400);
        // Still the same connection: a 400 on a well-framed request keeps it.
        assert_eq!(status(&mut c, r#"{"events":[]}"#, ""), 200);

        let mut c = connect(&r);
        send(&mut c, &"x".repeat(65), "");
        let (code, headers) = answer(&mut c).unwrap();
        assert_eq!((code, headers["connection"].as_str()), (413, "close"));
        assert!(answer(&mut c).is_none(), "closed after 413");

        let mut c = connect(&r);
        c.write_all(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(answer(&mut c).unwrap().0, 411);
        let st = r.stats();
        assert_eq!(st.requests, 5);
        assert_eq!(
            st.statuses,
            BTreeMap::from([(200, 1), (400, 2), (411, 1), (413, 1)])
        );
    }

    #[test]
    fn connection_close_is_honoured() {
        let r = Receiver::start(ReceiverConfig::new()).unwrap();
        let mut c = connect(&r);
        send(&mut c, r#"{"events":[]}"#, "connection: close\r\n");
        let (code, headers) = answer(&mut c).unwrap();
        assert_eq!((code, headers["connection"].as_str()), (200, "close"));
        assert!(answer(&mut c).is_none());
    }

    #[test]
    fn drop_connection_reads_then_closes_without_answering() {
        let r = Receiver::start(ReceiverConfig::new().drop_connection()).unwrap();
        let mut c = connect(&r);
        send(&mut c, r#"{"events":[{"id":"a"}]}"#, "");
        assert!(answer(&mut c).is_none());
        let st = r.stats();
        assert_eq!((st.requests, st.events), (1, 0));
        assert!(st.statuses.is_empty());
    }

    /// Runs `f` on another thread and fails if it does not finish within the safety net.
    fn finishes(f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        rx.recv_timeout(SAFETY).expect("finished without hanging");
    }

    #[test]
    fn shutdown_releases_hung_and_delayed_connections() {
        // (config, whether the request is read whole before the fault bites)
        for (cfg, read_whole) in [
            (ReceiverConfig::new().hang(), true),
            (ReceiverConfig::new().delay(Duration::from_secs(3600)), true),
            (
                ReceiverConfig::new().slow_read(1, Duration::from_secs(3600)),
                false,
            ),
        ] {
            let r = Receiver::start(cfg).unwrap();
            let mut c = connect(&r);
            send(&mut c, r#"{"events":[{"id":"a"}]}"#, "");
            // An idle second connection must not hold shutdown up either.
            let _idle = connect(&r);
            let st = Arc::clone(&r.shared);
            finishes(move || {
                loop {
                    let s = st.state.lock().stats.clone();
                    if s.connections == 2 && (!read_whole || s.requests == 1) {
                        break;
                    }
                    drop(s);
                    thread::yield_now();
                }
            });
            finishes(move || drop(r));
            assert!(answer(&mut c).is_none(), "nothing was answered");
        }
    }

    #[test]
    fn slow_read_still_reads_everything() {
        let r =
            Receiver::start(ReceiverConfig::new().slow_read(7, Duration::from_micros(50))).unwrap();
        let mut c = connect(&r);
        assert_eq!(
            status(&mut c, r#"{"events":[{"id":"a"},{"id":"b"}]}"#, ""),
            200
        );
        assert_eq!(r.ids(), ["a", "b"]);
    }

    #[test]
    fn signatures_are_checked_when_secrets_are_set() {
        let secret = Secret::from_bytes([3u8; 32]).unwrap();
        let r = Receiver::start(ReceiverConfig::new().secrets(vec![secret.clone()])).unwrap();
        let body = r#"{"events":[{"id":"a"}]}"#;
        let ts = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let sig = crate::http::Signer::new(vec![secret])
            .unwrap()
            .sign("m1", ts, body.as_bytes());
        let good =
            format!("webhook-id: m1\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {sig}\r\n");
        let mut c = connect(&r);
        assert_eq!(status(&mut c, body, &good), 200);
        assert_eq!(status(&mut c, body, ""), 401);
        assert_eq!(status(&mut c, r#"{"events":[{"id":"b"}]}"#, &good), 401);
        let st = r.stats();
        assert_eq!((st.events, st.bad_signatures), (1, 2));
    }

    #[test]
    fn wait_for_distinct_wakes_on_arrival_and_times_out() {
        let r = Arc::new(Receiver::start(ReceiverConfig::new()).unwrap());
        assert!(!r.wait_for_distinct(1, Duration::from_millis(1)));
        assert!(r.wait_for_distinct(0, Duration::ZERO));
        let (tx, rx) = mpsc::channel();
        let r2 = r.clone();
        thread::spawn(move || tx.send(r2.wait_for_distinct(2, SAFETY)).unwrap());
        let mut c = connect(&r);
        assert_eq!(
            status(&mut c, r#"{"events":[{"id":"a"},{"id":"a"}]}"#, ""),
            200
        );
        assert_eq!(status(&mut c, r#"{"events":[{"id":"b"}]}"#, ""), 200);
        assert!(rx.recv_timeout(SAFETY).unwrap());
    }

    #[test]
    fn readers_count_ids_the_connection_has_not_classified_yet() {
        // What a connection thread has recorded before answering, ahead of its classify().
        let r = Receiver::start(ReceiverConfig::new()).unwrap();
        let ids = ["a", "b", "a"].map(Cow::Borrowed).to_vec();
        r.shared.record_answer(200, ids);
        assert!(r.wait_for_distinct(2, Duration::ZERO));
        r.shared.record_answer(200, vec![Cow::Borrowed("b")]);
        let st = r.stats();
        assert_eq!((st.events, st.distinct, st.duplicates), (4, 2, 2));
        assert_eq!(r.ids(), ["a", "b", "a", "b"]);
    }

    #[test]
    fn waiters_for_different_counts_each_wake() {
        let r = Arc::new(Receiver::start(ReceiverConfig::new()).unwrap());
        let waiter = |n| {
            let (tx, rx) = mpsc::channel();
            let r = r.clone();
            thread::spawn(move || tx.send(r.wait_for_distinct(n, SAFETY)).unwrap());
            rx
        };
        let (three, one) = (waiter(3), waiter(1));
        let mut c = connect(&r);
        assert_eq!(status(&mut c, r#"{"events":[{"id":"a"}]}"#, ""), 200);
        assert!(one.recv_timeout(SAFETY).unwrap());
        // The waiter for 3 was woken too (or not yet asleep): it waits on, for its own count.
        assert!(three.try_recv().is_err());
        assert_eq!(
            status(&mut c, r#"{"events":[{"id":"b"},{"id":"c"}]}"#, ""),
            200
        );
        assert!(three.recv_timeout(SAFETY).unwrap());
    }

    #[test]
    fn chunked_and_closing_replies() {
        let script = vec![Reply::status(200).chunked(), Reply::status(202).close()];
        let r =
            Receiver::start(ReceiverConfig::new().statuses(script).response_body(5000)).unwrap();
        let mut c = connect(&r);
        send(&mut c, r#"{"events":[{"id":"a"}]}"#, "");
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n0\r\n\r\n") {
            assert_eq!(c.read(&mut byte).unwrap(), 1, "closed mid-answer");
            raw.push(byte[0]);
        }
        let text = String::from_utf8(raw).unwrap();
        let (head, mut rest) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("transfer-encoding: chunked") && !head.contains("content-length"));
        let mut total = 0;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            if size == 0 {
                break;
            }
            assert!(size <= 4096);
            assert!(after[..size].bytes().all(|b| b == b'x'));
            assert_eq!(&after[size..size + 2], "\r\n");
            total += size;
            rest = &after[size + 2..];
        }
        assert_eq!(total, 5000);

        // Same connection: the chunked answer kept it. This one closes it.
        send(&mut c, r#"{"events":[{"id":"b"}]}"#, "");
        let (code, headers) = answer(&mut c).unwrap();
        assert_eq!((code, headers["connection"].as_str()), (202, "close"));
        assert!(answer(&mut c).is_none(), "closed after the answer");
        assert_eq!(r.stats().connections, 1);
        assert_eq!(r.ids(), ["a", "b"]);
    }

    #[test]
    fn invalid_configs_are_refused() {
        for cfg in [
            ReceiverConfig::new().statuses(vec![Reply::status(99)]),
            ReceiverConfig::new().fail_for(Duration::from_secs(1), 600),
            ReceiverConfig::new().statuses(vec![Reply::status(503).retry_after("1\r\nx: y")]),
            ReceiverConfig::new().slow_read(0, Duration::ZERO),
            ReceiverConfig::new().tls("not pem", "not pem"),
            ReceiverConfig::new().tls("", ""),
        ] {
            let err = Receiver::start(cfg).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }
}
