//! [`HttpSink`]: the end of a layer-1 chain, posting events to one webhook URL with `ureq`.
//!
//! In short: `write` blocks for one request, bounded by the configured timeout; it never drops
//! or retries (the outcome is returned, and counted in [`HttpStats`]); `close` only refuses
//! later writes. The full contract is on the type, where rustdoc shows it.

use std::cell::RefCell;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use ureq::Agent;
use ureq::http::{HeaderName, HeaderValue, Uri, header};

use super::{MediaType, Secret, Signer, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
use crate::policy::{Clock, SystemClock, parse_retry_after};
use crate::stats::{Counter, LatencyHistogram, StatusCounts};
use crate::{Error, Event, Sink, http::encode_envelope};

/// Longer than this is certainly a unit mistake (ms given as s), not a timeout.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// A thread's encode buffer is kept between requests unless it grew past this.
const KEEP_BUFFER: usize = 1 << 20;

/// Where and how an [`HttpSink`] posts.
///
/// Build it with [`HttpConfig::new`] and the setters; [`HttpSink::new`] validates it.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The webhook URL: `http` or `https`, with a host.
    pub url: String,
    /// Headers added to every request (an `Authorization`, say). A `Content-Type` here
    /// replaces the media type (for receivers that only parse `application/json`).
    pub headers: Vec<(String, String)>,
    /// The total time one request may take, connect and response included. Default 1 s.
    pub timeout: Duration,
    /// The time connecting may take; `None` (the default) means the total `timeout`, which
    /// bounds the connect in any case.
    pub connect_timeout: Option<Duration>,
    /// The `Content-Type` of the envelope. Default [`MediaType::V2`].
    pub media_type: MediaType,
    /// Signing secrets: when set, requests carry the Standard Webhooks headers, signed with
    /// every secret (more than one while rotating).
    pub secrets: Vec<Secret>,
    /// An HTTP or SOCKS proxy URL. None by default, and never taken from the environment.
    pub proxy: Option<String>,
    /// At most this much of a response body is read (and discarded). Default 64 KiB.
    pub max_response_body: usize,
    /// Whom `https://` URLs trust: the webpki roots by default, plus a private CA, or no
    /// verification (the same [`TlsOptions`](super::TlsOptions) the engine takes, with the
    /// same meaning).
    pub tls: super::TlsOptions,
}

impl HttpConfig {
    /// Defaults for posting to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        HttpConfig {
            url: url.into(),
            headers: Vec::new(),
            timeout: Duration::from_secs(1),
            connect_timeout: None,
            media_type: MediaType::default(),
            secrets: Vec::new(),
            proxy: None,
            max_response_body: 64 * 1024,
            tls: super::TlsOptions::default(),
        }
    }

    /// Adds a header sent with every request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the total request timeout.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Sets a separate, usually shorter, connect timeout.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }

    /// Sets the envelope's media type.
    pub fn media_type(mut self, m: MediaType) -> Self {
        self.media_type = m;
        self
    }

    /// Signs requests with these secrets.
    pub fn secrets(mut self, secrets: Vec<Secret>) -> Self {
        self.secrets = secrets;
        self
    }

    /// Sends through this proxy.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = Some(url.into());
        self
    }

    /// Bounds how much of a response body is read.
    pub fn max_response_body(mut self, n: usize) -> Self {
        self.max_response_body = n;
        self
    }

    /// Checks every field; the first problem found is an [`Error::Config`] naming it.
    pub fn validate(&self) -> Result<(), Error> {
        self.parse().map(drop)
    }

    fn parse(&self) -> Result<Parsed, Error> {
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e| Error::config("url", format!("{:?} is not a URL: {e}", self.url)))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(Error::config(
                    "url",
                    format!("{:?} must start with http:// or https://", self.url),
                ));
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(Error::config("url", format!("{:?} has no host", self.url)));
        }
        check_timeout("timeout", self.timeout)?;
        if let Some(d) = self.connect_timeout {
            check_timeout("connect_timeout", d)?;
        }
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Error::config("headers", format!("{name:?} is not a valid header name"))
            })?;
            if RESERVED.contains(&name.as_str()) {
                return Err(Error::config(
                    "headers",
                    format!("{name} is set by the sink itself"),
                ));
            }
            let value = HeaderValue::from_str(value).map_err(|_| {
                Error::config(
                    "headers",
                    format!("the value of {name} is not a valid header value"),
                )
            })?;
            headers.push((name, value));
        }
        let proxy =
            match &self.proxy {
                None => None,
                Some(p) => Some(ureq::Proxy::new(p).map_err(|e| {
                    Error::config("proxy", format!("{p:?} is not a proxy URL: {e}"))
                })?),
            };
        let signer = if self.secrets.is_empty() {
            None
        } else {
            Some(Signer::new(self.secrets.clone())?)
        };
        Ok(Parsed {
            uri,
            headers,
            proxy,
            signer,
        })
    }
}

/// Headers the sink computes itself: framing, and the signature's, which a static copy would
/// contradict.
const RESERVED: [&str; 6] = [
    "content-length",
    "transfer-encoding",
    "host",
    WEBHOOK_ID,
    WEBHOOK_TIMESTAMP,
    WEBHOOK_SIGNATURE,
];

fn check_timeout(field: &'static str, d: Duration) -> Result<(), Error> {
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(Error::config(
            field,
            format!("{d:?} is not between zero and an hour"),
        ));
    }
    Ok(())
}

struct Parsed {
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    proxy: Option<ureq::Proxy>,
    signer: Option<Signer>,
}

/// What an [`HttpSink`] has done, for snapshots. Every request ends in exactly one of
/// `successes`, `failures` or `errors`.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Requests started.
    pub requests: Counter,
    /// Requests answered 2xx.
    pub successes: Counter,
    /// Requests answered with any other status.
    pub failures: Counter,
    /// Requests that got no answer (connect failure, reset, timeout, protocol error).
    pub errors: Counter,
    /// Answers by status code.
    pub statuses: StatusCounts,
    /// Round-trip time of answered requests, response body read included.
    pub rtt: LatencyHistogram,
}

/// A blocking webhook sink. What it promises:
/// - **`write` blocks** the calling thread for one HTTP request: at most the configured total
///   `timeout` (connect, send and the bounded response read included; default 1 s, as
///   distribution's). Many threads may write at once; each uses its own pooled connection.
/// - **It never drops and never retries.** Each call is one attempt whose outcome is returned:
///   `Ok` on a 2xx, [`Error::Status`] on any other answer (3xx included: redirects are not
///   followed, as Standard Webhooks recommends, where distribution counted 3xx as success),
///   [`Error::Timeout`] or [`Error::Io`] when no answer came. Retrying is the wrapping
///   `RetryingSink`'s job, so nothing here needs a drop counter; [`HttpStats`] counts outcomes.
/// - **One event per request** through [`Sink::write`] (distribution's wire shape), or many in
///   one envelope through [`HttpSink::send_batch`].
/// - **Connections are kept alive** (distribution closes them after every event): the response
///   body is read and discarded up to `max_response_body` bytes so the connection can go back
///   to the pool; a longer body only costs that connection.
/// - **`close`** only marks the sink closed (there is nothing buffered): later writes return
///   [`Error::Closed`], and closing again returns `Error::Closed` too.
///
/// It reads nothing from the environment: no proxy unless [`HttpConfig`] names one. The
/// envelope is encoded into a per-thread buffer that is reused across requests.
pub struct HttpSink {
    agent: Agent,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    content_type: Option<HeaderValue>,
    signer: Option<Signer>,
    timeout: Duration,
    connect_timeout: Duration,
    max_response_body: u64,
    clock: Arc<dyn Clock>,
    stats: Arc<HttpStats>,
    closed: AtomicBool,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink")
            .field("uri", &self.uri)
            .field("signed", &self.signer.is_some())
            .field("timeout", &self.timeout)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

thread_local! {
    // One encode buffer per thread, shared by every HttpSink the thread writes to: writes on
    // one thread never overlap, and threads never contend for it (no lock on the hot path).
    static BODY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl HttpSink {
    /// Validates `config` and builds the sink (and its connection pool).
    pub fn new(config: HttpConfig) -> Result<Self, Error> {
        let parsed = config.parse()?;
        let connect_timeout = config.connect_timeout.unwrap_or(config.timeout);
        let agent_config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(parsed.proxy)
            .timeout_global(Some(config.timeout))
            .timeout_connect(Some(connect_timeout))
            .user_agent(concat!("hookwire/", env!("CARGO_PKG_VERSION")))
            .tls_config(super::tls::ureq_config(&config.tls)?)
            .build();
        let content_type = if parsed
            .headers
            .iter()
            .any(|(n, _)| *n == header::CONTENT_TYPE)
        {
            None
        } else {
            Some(HeaderValue::from_static(config.media_type.as_str()))
        };
        Ok(HttpSink {
            agent: Agent::new_with_config(agent_config),
            uri: parsed.uri,
            headers: parsed.headers,
            content_type,
            signer: parsed.signer,
            timeout: config.timeout,
            connect_timeout,
            max_response_body: u64::try_from(config.max_response_body).unwrap_or(u64::MAX),
            clock: Arc::new(SystemClock),
            stats: Arc::default(),
            closed: AtomicBool::new(false),
        })
    }

    /// Uses `clock`'s wall time for `webhook-timestamp` and for `Retry-After` dates.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The sink's counters, shared (they keep counting after this call).
    pub fn stats(&self) -> Arc<HttpStats> {
        self.stats.clone()
    }

    /// Posts `events` in one envelope, as one attempt. Same outcomes as [`Sink::write`].
    ///
    /// With signing on, `webhook-id` is the event's id for one event and `{first id}+{n}` for
    /// n > 1: stable across retries of the same batch, which is what receivers dedupe on. An
    /// empty batch sends nothing and returns `Ok`.
    pub fn send_batch<E: Event>(&self, events: &[E]) -> Result<(), Error> {
        let Some(first) = events.first() else {
            return self.check_open();
        };
        if events.len() == 1 {
            self.send(events, &first.id())
        } else {
            self.send(events, &format!("{}+{}", first.id(), events.len()))
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn send<E: Event>(&self, events: &[E], msg_id: &str) -> Result<(), Error> {
        self.check_open()?;
        BODY.with(|cell| {
            // Busy only if an event's `Serialize` writes to a sink itself: then use a fresh
            // buffer rather than panic.
            let Ok(mut body) = cell.try_borrow_mut() else {
                let mut body = Vec::new();
                encode_envelope(events, &mut body)?;
                return self.post(&body, msg_id);
            };
            body.clear();
            let result = encode_envelope(events, &mut body).and_then(|()| self.post(&body, msg_id));
            if body.capacity() > KEEP_BUFFER {
                *body = Vec::new();
            }
            result
        })
    }

    fn post(&self, body: &[u8], msg_id: &str) -> Result<(), Error> {
        let mut req = self.agent.post(self.uri.clone());
        if let Some(ct) = &self.content_type {
            req = req.header(header::CONTENT_TYPE, ct.clone());
        }
        for (name, value) in &self.headers {
            req = req.header(name.clone(), value.clone());
        }
        if let Some(signer) = &self.signer {
            let id = HeaderValue::from_str(msg_id).map_err(|_| Error::Encode {
                message: format!("event id {msg_id:?} cannot be sent as a webhook-id header"),
            })?;
            let ts = self
                .clock
                .wall()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            req = req
                .header(WEBHOOK_ID, id)
                .header(WEBHOOK_TIMESTAMP, ts)
                .header(WEBHOOK_SIGNATURE, signer.sign(msg_id, ts, body));
        }

        self.stats.requests.inc();
        let started = Instant::now();
        let mut resp = match req.send(body) {
            Ok(resp) => resp,
            Err(e) => {
                self.stats.errors.inc();
                return Err(self.map_error(e));
            }
        };
        let code = resp.status().as_u16();
        self.stats.statuses.record(code);
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.clock.wall()));
        // The answer is in; the body only matters for keeping the connection. A body past the
        // bound, or one that breaks off, costs this connection and nothing else.
        let mut reader = resp.body_mut().as_reader().take(self.max_response_body);
        if let Err(e) = io::copy(&mut reader, &mut io::sink()) {
            log::debug!("{}: reading the response body failed: {e}", self.uri);
        }
        self.stats.rtt.record(started.elapsed());

        if (200..300).contains(&code) {
            self.stats.successes.inc();
            Ok(())
        } else {
            self.stats.failures.inc();
            Err(Error::Status { code, retry_after })
        }
    }

    fn map_error(&self, e: ureq::Error) -> Error {
        let io_err = |kind, message: String| Error::Io {
            kind,
            message,
            source: None,
        };
        match e {
            ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
                Error::Timeout {
                    waiting_for: "connect",
                    after: self.connect_timeout,
                }
            }
            ureq::Error::Timeout(_) => Error::Timeout {
                waiting_for: "request",
                after: self.timeout,
            },
            ureq::Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => Error::Timeout {
                waiting_for: "request",
                after: self.timeout,
            },
            ureq::Error::Io(e) => io_err(e.kind(), e.to_string()),
            ureq::Error::HostNotFound => io_err(
                io::ErrorKind::NotFound,
                format!("host of {} not found", self.uri),
            ),
            e @ (ureq::Error::Protocol(_) | ureq::Error::LargeResponseHeader(..)) => {
                io_err(io::ErrorKind::InvalidData, e.to_string())
            }
            e => io_err(io::ErrorKind::Other, e.to_string()),
        }
    }
}

impl<E: Event> Sink<E> for HttpSink {
    /// Posts `event` alone in an envelope (one attempt; blocks up to the timeout).
    fn write(&self, event: E) -> Result<(), Error> {
        let id = event.id();
        self.send(std::slice::from_ref(&event), &id)
    }

    /// Refuses further writes. Requests already under way finish normally.
    fn close(&self) -> Result<(), Error> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RawEvent;
    use crate::policy::ManualClock;
    use crate::testkit::{Receiver, ReceiverConfig, Reply};

    fn ev(id: &str) -> RawEvent {
        RawEvent::parse(format!(r#"{{"id":"{id}","action":"push"}}"#)).unwrap()
    }

    fn sink(r: &Receiver) -> HttpSink {
        HttpSink::new(HttpConfig::new(r.url())).unwrap()
    }

    fn secret(byte: u8) -> Secret {
        Secret::from_bytes([byte; 32]).unwrap()
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<HttpSink>();
        check::<Arc<HttpStats>>();
    }

    #[test]
    fn a_2xx_is_delivered_and_counted() {
        let r = Receiver::start(ReceiverConfig::new()).unwrap();
        let s = sink(&r);
        s.write(ev("a")).unwrap();
        s.write(&ev("b")).unwrap();
        assert_eq!(r.ids(), ["a", "b"]);
        let st = s.stats();
        assert_eq!(st.requests.get(), 2);
        assert_eq!(st.successes.get(), 2);
        assert_eq!(st.failures.get() + st.errors.get(), 0);
        assert_eq!(st.statuses.get(200), 2);
        assert_eq!(st.rtt.summary().count, 2);
    }

    #[test]
    fn keep_alive_reuses_one_connection() {
        let r = Receiver::start(ReceiverConfig::new()).unwrap();
        let s = sink(&r);
        for i in 0..5 {
            s.write(ev(&i.to_string())).unwrap();
        }
        let st = r.stats();
        assert_eq!((st.requests, st.distinct), (5, 5));
        assert_eq!(st.connections, 1);
    }

    #[test]
    fn other_statuses_are_errors_with_retry_after() {
        let r = Receiver::start(ReceiverConfig::new().statuses(vec![
            Reply::status(500),
            Reply::status(503).retry_after("7"),
            Reply::status(429).retry_after("Tue, 23 Feb 2021 00:01:00 GMT"),
            Reply::status(302),
        ]))
        .unwrap();
        // The manual clock's wall time is 2021-02-23T00:00:00Z: the date is 60 s away.
        let s = sink(&r).clock(Arc::new(ManualClock::new()));
        let outcomes: Vec<_> = (0..5).map(|_| s.write(ev("a"))).collect();
        let statuses: Vec<_> = outcomes
            .iter()
            .map(|o| match o {
                Err(Error::Status { code, retry_after }) => Some((*code, *retry_after)),
                Ok(()) => None,
                Err(e) => panic!("unexpected {e:?}"),
            })
            .collect();
        assert_eq!(
            statuses,
            [
                Some((500, None)),
                Some((503, Some(Duration::from_secs(7)))),
                Some((429, Some(Duration::from_secs(60)))),
                Some((302, None)), // redirects are not followed
                None,
            ]
        );
        let st = s.stats();
        assert_eq!((st.failures.get(), st.successes.get()), (4, 1));
        assert_eq!(st.statuses.get(503), 1);
        assert_eq!(r.stats().events, 1);
    }

    #[test]
    fn a_hanging_endpoint_times_out_within_the_timeout() {
        let r = Receiver::start(ReceiverConfig::new().hang()).unwrap();
        let timeout = Duration::from_millis(200);
        let s = HttpSink::new(HttpConfig::new(r.url()).timeout(timeout)).unwrap();
        let started = Instant::now();
        let err = s.write(ev("a")).unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(
                err,
                Error::Timeout {
                    waiting_for: "request",
                    after
                } if after == timeout
            ),
            "{err:?}"
        );
        // Bounded by the timeout, not by the receiver (which never answers): generous margin.
        assert!(took < Duration::from_secs(3), "took {took:?}");
        assert_eq!(s.stats().errors.get(), 1);
        assert_eq!(r.stats().requests, 1);
    }

    #[test]
    fn a_closed_port_is_an_io_error() {
        let port = {
            let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        let s = HttpSink::new(HttpConfig::new(format!("http://127.0.0.1:{port}/"))).unwrap();
        let err = s.write(ev("a")).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Io {
                    kind: io::ErrorKind::ConnectionRefused,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(s.stats().errors.get(), 1);
    }

    #[test]
    fn a_dropped_connection_is_an_io_error() {
        let r = Receiver::start(ReceiverConfig::new().drop_connection()).unwrap();
        let err = sink(&r).write(ev("a")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
    }

    #[test]
    fn signatures_verify_end_to_end() {
        let (current, old) = (secret(1), secret(2));
        let r = Receiver::start(ReceiverConfig::new().secrets(vec![old.clone()])).unwrap();
        // Rotation: signed with both, the receiver knows only the old one.
        let s =
            HttpSink::new(HttpConfig::new(r.url()).secrets(vec![current.clone(), old])).unwrap();
        s.write(ev("a")).unwrap();

        let wrong = HttpSink::new(HttpConfig::new(r.url()).secrets(vec![current.clone()])).unwrap();
        let err = wrong.write(ev("b")).unwrap_err();
        assert!(matches!(err, Error::Status { code: 401, .. }), "{err:?}");

        // The timestamp comes from the sink's clock: one from 2021 is too old to accept.
        let stale = HttpSink::new(HttpConfig::new(r.url()).secrets(vec![secret(2)]))
            .unwrap()
            .clock(Arc::new(ManualClock::new()));
        assert!(stale.write(ev("c")).is_err());

        let unsigned = sink(&r);
        assert!(unsigned.write(ev("d")).is_err());

        let st = r.stats();
        assert_eq!((st.events, st.bad_signatures), (1, 3));
        assert_eq!(r.ids(), ["a"]);
    }

    #[test]
    fn a_batch_is_one_request_with_a_stable_id() {
        let secrets = vec![secret(5)];
        let r = Receiver::start(ReceiverConfig::new().secrets(secrets.clone())).unwrap();
        let s = HttpSink::new(HttpConfig::new(r.url()).secrets(secrets)).unwrap();
        s.send_batch(&[ev("a"), ev("b"), ev("c")]).unwrap();
        assert_eq!(r.ids(), ["a", "b", "c"]);
        // Events without an "id" of their own show the request's webhook-id, `{first}+{n}`.
        let anonymous: Vec<RawEvent> = ["x", "y", "z"]
            .iter()
            .map(|id| RawEvent::new(*id, r#"{"n":1}"#).unwrap())
            .collect();
        s.send_batch(&anonymous).unwrap();
        s.send_batch(&anonymous[..1]).unwrap();
        s.send_batch::<RawEvent>(&[]).unwrap();
        assert_eq!(r.ids()[3..], ["x+3#0", "x+3#1", "x+3#2", "x"]);
        let st = r.stats();
        assert_eq!((st.requests, st.events, st.bad_signatures), (3, 7, 0));
    }

    #[test]
    fn an_oversized_response_body_does_not_break_the_sink() {
        let r = Receiver::start(ReceiverConfig::new().response_body(1 << 20)).unwrap();
        let s = HttpSink::new(HttpConfig::new(r.url()).max_response_body(1024)).unwrap();
        s.write(ev("a")).unwrap();
        s.write(ev("b")).unwrap();
        assert_eq!(r.ids(), ["a", "b"]);
        // The unread rest cost the connection, so each request opened its own.
        assert_eq!(r.stats().connections, 2);

        // A body within the bound is read to the end and the connection kept.
        let r = Receiver::start(ReceiverConfig::new().response_body(1000)).unwrap();
        let s = HttpSink::new(HttpConfig::new(r.url()).max_response_body(1024)).unwrap();
        s.write(ev("a")).unwrap();
        s.write(ev("b")).unwrap();
        assert_eq!(r.stats().connections, 1);
    }

    #[test]
    fn close_refuses_later_writes() {
        let r = Receiver::start(ReceiverConfig::new()).unwrap();
        let s = sink(&r);
        Sink::<RawEvent>::close(&s).unwrap();
        assert!(matches!(s.write(ev("a")), Err(Error::Closed)));
        assert!(matches!(s.send_batch(&[ev("a")]), Err(Error::Closed)));
        assert!(matches!(Sink::<RawEvent>::close(&s), Err(Error::Closed)));
        assert_eq!(r.stats().requests, 0);
        assert_eq!(s.stats().requests.get(), 0);
    }

    #[test]
    fn an_unencodable_id_is_refused_before_sending() {
        let r = Receiver::start(ReceiverConfig::new()).unwrap();
        let s = HttpSink::new(HttpConfig::new(r.url()).secrets(vec![secret(1)])).unwrap();
        let e = RawEvent::new("bad\nid", "{}").unwrap();
        assert!(matches!(s.write(e), Err(Error::Encode { .. })));
        assert_eq!(r.stats().requests, 0);
    }

    #[test]
    fn static_headers_and_content_type() {
        // The receiver does not report headers, so check what the sink prepared.
        let s = HttpSink::new(HttpConfig::new("http://h/").header("Authorization", "Bearer t"))
            .unwrap();
        assert_eq!(s.content_type.as_ref().unwrap(), MediaType::V2.as_str());
        assert_eq!(s.headers.len(), 1);
        let s = HttpSink::new(
            HttpConfig::new("http://h/")
                .media_type(MediaType::V1)
                .header("content-type", "application/json"),
        )
        .unwrap();
        assert!(s.content_type.is_none(), "the static header replaces it");
    }

    #[test]
    fn config_is_validated() {
        let field = |c: HttpConfig| match HttpSink::new(c) {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(field(HttpConfig::new("")), "url");
        assert_eq!(field(HttpConfig::new("not a url")), "url");
        assert_eq!(field(HttpConfig::new("ftp://h/")), "url");
        assert_eq!(field(HttpConfig::new("/relative")), "url");
        assert_eq!(field(HttpConfig::new("http:///path")), "url");
        let ok = || HttpConfig::new("https://example.com:8443/hook?x=1");
        assert!(ok().validate().is_ok());
        assert_eq!(field(ok().timeout(Duration::ZERO)), "timeout");
        assert_eq!(field(ok().timeout(Duration::from_secs(3601))), "timeout");
        assert_eq!(
            field(ok().connect_timeout(Duration::ZERO)),
            "connect_timeout"
        );
        assert_eq!(field(ok().header("bad name", "v")), "headers");
        assert_eq!(field(ok().header("x-a", "line\nbreak")), "headers");
        assert_eq!(field(ok().header("Content-Length", "5")), "headers");
        assert_eq!(field(ok().header("webhook-signature", "v1,x")), "headers");
        assert_eq!(field(ok().proxy("::nonsense::")), "proxy");
        assert!(ok().proxy("http://127.0.0.1:3128").validate().is_ok());
    }
}
