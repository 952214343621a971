//! `Conn` driven by a tiny mio loop against the test-kit receiver (plain and TLS) and against
//! scripted raw servers for byte-exact cases. Every wait is bounded.
//!
//! `Conn` has no timer: the loop here owns its deadlines, as the engine's endpoint does, so
//! a server that hangs, trickles or stalls a handshake is tested as "no outcome before X,
//! and the connection is still in the state it was left in". That the endpoint fails such a
//! request at its deadline, with which error, is tested against the endpoint's state
//! machine (`engine/endpoint/tests.rs`, an injected clock) and the whole engine
//! (`tests/hostile.rs`, the same hostile servers).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use mio::{Events, Poll};

use super::*;
use crate::http::TlsOptions;
use crate::http::response::{MAX_HEAD, MAX_RESPONSE_BODY};
use crate::testkit::{Receiver, ReceiverConfig, Reply};

/// A safety net: every test ends far sooner unless something is broken.
const SAFETY: Duration = Duration::from_secs(5);
const TOKEN: Token = Token(7);

fn body(id: &str) -> Body {
    Body::from(format!(r#"{{"events":[{{"id":"{id}"}}]}}"#).into_bytes())
}

const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

/// One endpoint's worth of event loop.
struct Lp {
    poll: Poll,
    events: Events,
}

impl Lp {
    fn new() -> Self {
        Lp {
            poll: Poll::new().unwrap(),
            events: Events::with_capacity(16),
        }
    }

    fn connect(&self, target: &Target) -> Conn {
        Conn::connect(target, self.poll.registry(), TOKEN).unwrap()
    }

    /// Waits for one event (at most until `until`), then drives `conn`, as a worker does: a
    /// connection that wants to be driven again is, without waiting.
    fn turn(&mut self, conn: &mut Conn, until: Instant) -> Progress {
        let wait = if conn.wants_drive() {
            Duration::ZERO
        } else {
            until.saturating_duration_since(Instant::now())
        };
        self.poll.poll(&mut self.events, Some(wait)).unwrap();
        if conn.wants_drive() || self.events.iter().any(|e| e.token() == TOKEN) {
            conn.on_event(self.poll.registry())
        } else {
            Progress::Pending
        }
    }

    /// Drives `conn` (a request was just started) until it is no longer pending.
    fn run(&mut self, conn: &mut Conn) -> Progress {
        let until = Instant::now() + SAFETY;
        let mut p = conn.on_event(self.poll.registry());
        while matches!(p, Progress::Pending) {
            assert!(
                Instant::now() < until,
                "no outcome before the safety deadline: {conn:?}"
            );
            p = self.turn(conn, until);
        }
        p
    }

    /// Drives `conn` for `d`, as an owner whose deadline is `d` away would, and returns what
    /// came of it before then (`Pending`: nothing did).
    fn run_for(&mut self, conn: &mut Conn, d: Duration) -> Progress {
        let until = Instant::now() + d;
        let mut p = conn.on_event(self.poll.registry());
        while matches!(p, Progress::Pending) && Instant::now() < until {
            p = self.turn(conn, until);
        }
        p
    }

    /// Drives `conn` until `done(conn)`.
    fn until(&mut self, conn: &mut Conn, done: impl Fn(&Conn) -> bool) {
        let until = Instant::now() + SAFETY;
        conn.on_event(self.poll.registry());
        while !done(conn) {
            assert!(
                Instant::now() < until,
                "not done before the safety deadline: {conn:?}"
            );
            self.turn(conn, until);
        }
    }

    /// Drives `conn` until `cond()` (something outside it, such as a server's count),
    /// returning the first outcome if one comes first.
    fn until_seen(&mut self, conn: &mut Conn, cond: impl Fn() -> bool) -> Progress {
        let until = Instant::now() + SAFETY;
        let mut p = conn.on_event(self.poll.registry());
        while matches!(p, Progress::Pending) && !cond() {
            assert!(
                Instant::now() < until,
                "not seen before the safety deadline: {conn:?}"
            );
            p = self.turn(conn, Instant::now() + Duration::from_millis(5));
        }
        p
    }

    fn post(&mut self, conn: &mut Conn, id: &str) -> Progress {
        conn.start(&JSON, body(id)).unwrap();
        self.run(conn)
    }
}

fn done(p: Progress) -> Response {
    match p {
        Progress::Done(r) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

fn failed(p: Progress) -> Error {
    match p {
        Progress::Failed(e) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn target(url: &str) -> Target {
    Target::parse(url, &TlsOptions::default()).unwrap()
}

#[test]
fn posts_and_reuses_one_connection() {
    let r = Receiver::start(ReceiverConfig::new()).unwrap();
    let mut lp = Lp::new();
    let mut conn = lp.connect(&target(&r.url()));
    // Queued while still connecting: it goes out once connected.
    for i in 0..3 {
        let resp = done(lp.post(&mut conn, &format!("e{i}")));
        assert_eq!(
            resp,
            Response {
                location: None,
                status: 200,
                retry_after: None,
                keep_alive: true
            }
        );
        assert!(conn.is_idle() && !conn.is_dead());
    }
    let st = r.stats();
    assert_eq!((st.connections, st.requests), (1, 3));
    assert_eq!(r.ids(), ["e0", "e1", "e2"]);
    conn.close(lp.poll.registry());
}

#[test]
fn the_body_is_shared_and_let_go_once_answered() {
    let r = Receiver::start(ReceiverConfig::new()).unwrap();
    let mut lp = Lp::new();
    let mut conn = lp.connect(&target(&r.url()));
    let mine = body("a");
    conn.start(&JSON, mine.clone()).unwrap();
    assert_eq!(mine.holders(), 2, "the connection holds it while in flight");
    assert_eq!(done(lp.run(&mut conn)).status, 200);
    // Answered: the caller holds the only reference again.
    assert_eq!(mine.holders(), 1);
    assert_eq!(r.ids(), ["a"]);
}

/// A request body larger than the socket buffers, so sending meets `WouldBlock`.
fn big_body(id: &str) -> Body {
    let json = format!(
        r#"{{"events":[{{"id":"{id}","pad":"{}"}}]}}"#,
        "p".repeat(4 << 20)
    );
    Body::from(json.into_bytes())
}

#[test]
fn a_large_request_body_is_sent_whole() {
    let r = Receiver::start(ReceiverConfig::new()).unwrap();
    let mut lp = Lp::new();
    let mut conn = lp.connect(&target(&r.url()));
    conn.start(&JSON, big_body("big")).unwrap();
    assert!(done(lp.run(&mut conn)).keep_alive);
    assert_eq!(done(lp.post(&mut conn, "small")).status, 200);
    assert_eq!(r.ids(), ["big", "small"]);
}

#[test]
fn chunked_response_keeps_the_connection() {
    let script = vec![Reply::status(202).chunked(), Reply::status(200).chunked()];
    let r = Receiver::start(ReceiverConfig::new().statuses(script).response_body(10_000)).unwrap();
    let mut lp = Lp::new();
    let mut conn = lp.connect(&target(&r.url()));
    let resp = done(lp.post(&mut conn, "a"));
    assert_eq!((resp.status, resp.keep_alive), (202, true));
    let resp = done(lp.post(&mut conn, "b"));
    assert_eq!((resp.status, resp.keep_alive), (200, true));
    assert_eq!(r.stats().connections, 1);
}

#[test]
fn a_large_body_reports_the_status_and_costs_the_connection() {
    for (chunked, len) in [
        (false, 100_000),
        (true, 100_000),
        (false, MAX_RESPONSE_BODY),
    ] {
        let reply = if chunked {
            Reply::status(201).chunked()
        } else {
            Reply::status(201)
        };
        let cfg = ReceiverConfig::new()
            .statuses(vec![reply])
            .response_body(len);
        let r = Receiver::start(cfg).unwrap();
        let mut lp = Lp::new();
        let mut conn = lp.connect(&target(&r.url()));
        let resp = done(lp.post(&mut conn, "a"));
        let fits = len <= MAX_RESPONSE_BODY;
        assert_eq!(
            (resp.status, resp.keep_alive),
            (201, fits),
            "{chunked} {len}"
        );
        assert_eq!((conn.is_dead(), conn.is_idle()), (!fits, fits));
    }
}

#[test]
fn retry_after_is_returned_verbatim() {
    let script = vec![Reply::status(503).retry_after("7")];
    let r = Receiver::start(ReceiverConfig::new().statuses(script)).unwrap();
    let mut lp = Lp::new();
    let mut conn = lp.connect(&target(&r.url()));
    let resp = done(lp.post(&mut conn, "a"));
    assert_eq!((resp.status, resp.retry_after.as_deref()), (503, Some("7")));
    assert!(resp.keep_alive);
}

#[test]
fn connection_close_from_the_server_means_a_new_connection() {
    let script = vec![Reply::status(200).close()];
    let r = Receiver::start(ReceiverConfig::new().statuses(script)).unwrap();
    let mut lp = Lp::new();
    let t = target(&r.url());
    let mut conn = lp.connect(&t);
    let resp = done(lp.post(&mut conn, "a"));
    assert_eq!((resp.status, resp.keep_alive), (200, false));
    assert!(conn.is_dead() && !conn.is_idle());
    let err = conn.start(&JSON, body("b")).unwrap_err();
    assert!(matches!(
        err,
        Error::Io {
            kind: io::ErrorKind::NotConnected,
            ..
        }
    ));
    conn.close(lp.poll.registry());

    let mut conn = lp.connect(&t);
    assert_eq!(done(lp.post(&mut conn, "b")).status, 200);
    assert_eq!(r.stats().connections, 2);
}

/// How long the tests below drive a connection that will not finish, standing in for its
/// owner's deadline.
const OWNER_DEADLINE: Duration = Duration::from_millis(300);

#[test]
fn a_hanging_server_leaves_the_request_pending_until_its_owner_gives_up() {
    let r = Receiver::start(ReceiverConfig::new().hang()).unwrap();
    let mut lp = Lp::new();
    let mut conn = lp.connect(&target(&r.url()));
    conn.start(&JSON, body("a")).unwrap();
    let p = lp.until_seen(&mut conn, || r.stats().requests == 1);
    assert!(matches!(p, Progress::Pending), "{p:?}");
    // The server has it. No timer of its own: nothing ends the request but an answer, or
    // the owner.
    let p = lp.run_for(&mut conn, OWNER_DEADLINE);
    assert!(matches!(p, Progress::Pending), "{p:?}");
    assert!(conn.is_established() && !conn.is_dead() && !conn.is_idle());
    assert!(!conn.failed_stale());
    // The owner's way out, past its deadline.
    conn.close(lp.poll.registry());
}

#[test]
fn one_request_at_a_time_and_an_idle_connection_stays_as_it_is() {
    let r = Receiver::start(ReceiverConfig::new().hang()).unwrap();
    let mut lp = Lp::new();
    let mut conn = lp.connect(&target(&r.url()));
    lp.until(&mut conn, Conn::is_idle);
    // Idle, however long: there is no idle timer to end it (the owner keeps one).
    let p = lp.run_for(&mut conn, OWNER_DEADLINE);
    assert!(matches!(p, Progress::Pending), "{p:?}");
    assert!(conn.is_idle() && !conn.is_dead());

    conn.start(&JSON, body("a")).unwrap();
    assert!(!conn.is_idle());
    let busy = conn.start(&JSON, body("b")).unwrap_err();
    assert!(matches!(
        busy,
        Error::Io {
            kind: io::ErrorKind::ResourceBusy,
            ..
        }
    ));
    let p = lp.until_seen(&mut conn, || r.stats().requests == 1);
    assert!(matches!(p, Progress::Pending), "{p:?}");
    let p = lp.run_for(&mut conn, Duration::from_millis(50));
    assert!(matches!(p, Progress::Pending), "{p:?}");
    assert_eq!(r.stats().requests, 1, "the refused one never went out");
}

#[test]
fn a_request_queued_while_connecting_waits_for_the_connection() {
    let r = Receiver::start(ReceiverConfig::new()).unwrap();
    let mut lp = Lp::new();
    let mut conn = lp.connect(&target(&r.url()));
    conn.start(&JSON, body("a")).unwrap();
    // Never driven, the connection stays "connecting" whatever the kernel did.
    assert!(!conn.is_established() && !conn.is_dead() && !conn.is_idle());
    assert_eq!(r.stats().requests, 0);
    assert_eq!(done(lp.run(&mut conn)).status, 200);
    assert!(conn.is_established() && conn.is_idle());
}

/// A loopback port nothing listens on.
fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn refused_connections_fail_promptly_with_an_io_error() {
    let addr = free_port();
    let mut lp = Lp::new();
    let started = Instant::now();
    let t = target(&format!("http://{addr}/"));
    let err = match Conn::connect(&t, lp.poll.registry(), TOKEN) {
        Err(e) => e,
        Ok(mut conn) => {
            conn.start(&JSON, body("a")).unwrap();
            let e = failed(lp.run(&mut conn));
            assert!(conn.is_dead() && !conn.failed_stale());
            e
        }
    };
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
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_refused_address_gives_way_to_the_next() {
    let r = Receiver::start(ReceiverConfig::new()).unwrap();
    let mut t = target(&r.url());
    t.addrs.insert(0, free_port());
    let mut lp = Lp::new();
    let mut conn = lp.connect(&t);
    assert_eq!(done(lp.post(&mut conn, "a")).status, 200);
}

/// A server that serves one connection after another from a script: for each connection,
/// the answers to write, one per request read; after them it waits for `hold` (if given)
/// and closes. Each request read (head and body) is sent on the returned channel.
fn raw_server(
    script: Vec<Vec<&'static str>>,
    hold: Option<mpsc::Receiver<()>>,
) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for answers in script {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            s.set_read_timeout(Some(SAFETY)).unwrap();
            for answer in answers {
                let Some(req) = read_request(&mut s) else {
                    return;
                };
                let _ = tx.send(req);
                let _ = s.write_all(answer.as_bytes());
            }
            if let Some(hold) = &hold {
                let _ = hold.recv_timeout(SAFETY);
            }
        }
    });
    (addr, rx)
}

fn read_request(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf.clone()).ok()?;
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0; len];
    s.read_exact(&mut body).ok()?;
    buf.extend_from_slice(&body);
    String::from_utf8(buf).ok()
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

#[test]
fn the_request_is_framed_from_the_target_and_the_callers_headers() {
    let (addr, requests) = raw_server(vec![vec![OK]], None);
    let t = target(&format!("http://user:pw@{addr}/hooks/a?x=1"));
    let mut lp = Lp::new();
    let mut conn = lp.connect(&t);
    let headers = [("content-type", "application/json"), ("webhook-id", "m1")];
    conn.start(&headers, Body::from(b"{}".to_vec())).unwrap();
    assert_eq!(done(lp.run(&mut conn)).status, 200);
    let req = requests.recv_timeout(SAFETY).unwrap();
    assert_eq!(
        req,
        format!(
            "POST /hooks/a?x=1 HTTP/1.1\r\nhost: {addr}\r\nauthorization: Basic dXNlcjpwdw==\r\n\
             content-type: application/json\r\nwebhook-id: m1\r\ncontent-length: 2\r\n\r\n{{}}"
        )
    );
}

#[test]
fn headers_the_connection_owns_or_that_are_invalid_are_refused() {
    let (addr, _) = raw_server(vec![], None);
    let lp = Lp::new();
    let mut conn = lp.connect(&target(&format!("http://{addr}/")));
    for headers in [
        [("Host", "evil")],
        [("content-length", "1")],
        [("Transfer-Encoding", "chunked")],
        [("bad name", "x")],
        [("x-ok", "bad\r\nvalue")],
    ] {
        let err = conn.start(&headers, Body::default()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Config {
                    field: "headers",
                    ..
                }
            ),
            "{headers:?}"
        );
    }
    // Nothing was queued by the refusals.
    assert!(conn.start(&JSON, Body::default()).is_ok());
}

#[test]
fn http10_close_delimited_and_informational_answers() {
    let script = vec![
        // 1xx answers are skipped; HTTP/1.0 without keep-alive is not reused.
        vec!["HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 204 No Content\r\n\r\n"],
        // A body delimited by the server closing.
        vec!["HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello"],
        // HTTP/1.0 asking for keep-alive is reused.
        vec![
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        ],
    ];
    let (addr, _) = raw_server(script, None);
    let t = target(&format!("http://{addr}/"));
    let mut lp = Lp::new();

    let mut conn = lp.connect(&t);
    let resp = done(lp.post(&mut conn, "a"));
    assert_eq!((resp.status, resp.keep_alive), (204, false));
    conn.close(lp.poll.registry());

    let mut conn = lp.connect(&t);
    let resp = done(lp.post(&mut conn, "b"));
    assert_eq!((resp.status, resp.keep_alive), (200, false));
    conn.close(lp.poll.registry());

    let mut conn = lp.connect(&t);
    assert!(done(lp.post(&mut conn, "c")).keep_alive);
    // (The server closes right after this one, so whether it stays reusable is a race.)
    assert_eq!(done(lp.post(&mut conn, "d")).status, 200);
}

#[test]
fn garbage_and_oversized_heads_are_protocol_errors() {
    let huge: &'static str = format!(
        "HTTP/1.1 200 OK\r\nx: {}\r\n\r\n",
        "y".repeat(MAX_HEAD + 10)
    )
    .leak();
    let script = vec![vec!["SMTP ready\r\n\r\n"], vec![huge]];
    let (addr, _) = raw_server(script, None);
    let t = target(&format!("http://{addr}/"));
    let mut lp = Lp::new();
    for _ in 0..2 {
        let mut conn = lp.connect(&t);
        let err = failed(lp.post(&mut conn, "a"));
        assert!(
            matches!(
                err,
                Error::Io {
                    kind: io::ErrorKind::InvalidData,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(conn.is_dead());
        conn.close(lp.poll.registry());
    }
}

#[test]
fn a_peer_closing_an_idle_connection_is_noticed() {
    let (release, hold) = mpsc::channel();
    let (addr, _) = raw_server(vec![vec![OK], vec![OK]], Some(hold));
    let t = target(&format!("http://{addr}/"));
    let mut lp = Lp::new();
    let mut conn = lp.connect(&t);
    assert!(done(lp.post(&mut conn, "a")).keep_alive);
    assert!(conn.is_idle());
    release.send(()).unwrap(); // the server closes the idle connection
    lp.until(&mut conn, Conn::is_dead);
    assert!(!conn.failed_stale());
    conn.close(lp.poll.registry());
    // The next request goes on a fresh connection.
    let mut conn = lp.connect(&t);
    assert_eq!(done(lp.post(&mut conn, "b")).status, 200);
}

#[test]
fn a_request_on_a_connection_closed_unnoticed_fails_stale() {
    let (release, hold) = mpsc::channel();
    let (addr, _) = raw_server(vec![vec![OK]], Some(hold));
    let mut lp = Lp::new();
    let mut conn = lp.connect(&target(&format!("http://{addr}/")));
    assert!(done(lp.post(&mut conn, "a")).keep_alive);
    release.send(()).unwrap();
    // Wait for the close to reach the socket without letting the conn see it.
    let until = Instant::now() + SAFETY;
    loop {
        assert!(Instant::now() < until);
        lp.poll.poll(&mut lp.events, Some(SAFETY)).unwrap();
        if lp
            .events
            .iter()
            .any(|e| e.token() == TOKEN && e.is_read_closed())
        {
            break;
        }
    }
    assert!(conn.is_idle(), "not driven, so not noticed");
    let err = failed(lp.post(&mut conn, "b"));
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(conn.failed_stale() && conn.is_dead());
}

#[test]
fn bytes_after_the_response_cost_the_connection() {
    let script = vec![vec![
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nHTTP/1.1 408 x\r\n\r\n",
    ]];
    let (addr, _) = raw_server(script, None);
    let mut lp = Lp::new();
    let mut conn = lp.connect(&target(&format!("http://{addr}/")));
    let resp = done(lp.post(&mut conn, "a"));
    assert_eq!((resp.status, resp.keep_alive), (200, false));
    assert!(conn.is_dead());
}

/// A CA, and a server certificate it signed for localhost and 127.0.0.1: (CA PEM, chain PEM,
/// key PEM).
fn test_pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "hookwire test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.pem(), key.serialize_pem())
}

#[test]
fn tls_with_a_private_ca_without_it_and_insecure() {
    let (ca, chain, key) = test_pki();
    let script = vec![Reply::status(200), Reply::status(200).chunked()];
    let cfg = ReceiverConfig::new()
        .tls(chain, key)
        .statuses(script)
        .response_body(20_000);
    let r = Receiver::start(cfg).unwrap();
    let url = r.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let mut lp = Lp::new();

    let trusted = TlsOptions {
        ca_pem: Some(ca),
        insecure: false,
        system_roots: false,
    };
    let mut conn = lp.connect(&Target::parse(&url, &trusted).unwrap());
    for id in ["a", "b", "c"] {
        let resp = done(lp.post(&mut conn, id));
        assert_eq!((resp.status, resp.keep_alive), (200, true));
    }
    conn.start(&JSON, big_body("big")).unwrap();
    assert!(done(lp.run(&mut conn)).keep_alive);
    assert_eq!(r.stats().connections, 1);
    assert_eq!(r.ids(), ["a", "b", "c", "big"]);
    conn.close(lp.poll.registry());

    // The name, not only the address, is verified (SNI "localhost").
    let by_name = url.replace("127.0.0.1", "localhost");
    let mut conn = lp.connect(&Target::parse(&by_name, &trusted).unwrap());
    assert_eq!(done(lp.post(&mut conn, "d")).status, 200);
    conn.close(lp.poll.registry());

    // Without the CA: a typed failure, before anything reached the receiver.
    let requests = r.stats().requests;
    let mut conn = lp.connect(&target(&url));
    let err = failed(lp.post(&mut conn, "e"));
    match &err {
        Error::Io {
            kind: io::ErrorKind::InvalidData,
            message,
            ..
        } => assert!(message.contains("certificate"), "{message}"),
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    assert!(conn.is_dead() && !conn.failed_stale());
    assert_eq!(r.stats().requests, requests);

    let insecure = TlsOptions {
        ca_pem: None,
        insecure: true,
        system_roots: false,
    };
    let mut conn = lp.connect(&Target::parse(&url, &insecure).unwrap());
    assert_eq!(done(lp.post(&mut conn, "f")).status, 200);
    assert_eq!(r.stats().requests, requests + 1);
}

// Hostile servers (issue 9): every one ends in a bounded outcome, promptly.

fn hostile_conn(lp: &Lp, h: &crate::testkit::Hostile) -> Conn {
    lp.connect(&target(&h.url()))
}

fn invalid_data(err: &Error) -> &str {
    match err {
        Error::Io {
            kind: io::ErrorKind::InvalidData,
            message,
            ..
        } => message,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

#[test]
fn an_endless_chunk_size_line_fails_with_a_typed_error() {
    let h = crate::testkit::Hostile::endless_chunk_size().unwrap();
    let mut lp = Lp::new();
    let mut conn = hostile_conn(&lp, &h);
    // `Conn` has no timer, so the line bound is what ends it (`post` waits at most SAFETY).
    let err = failed(lp.post(&mut conn, "a"));
    assert!(invalid_data(&err).contains("line"), "{err}");
    assert!(conn.is_dead() && !conn.failed_stale());
}

#[test]
fn an_endless_chunk_body_reports_the_status_and_costs_the_connection() {
    let h = crate::testkit::Hostile::endless_chunk_body().unwrap();
    let mut lp = Lp::new();
    let mut conn = hostile_conn(&lp, &h);
    let resp = done(lp.post(&mut conn, "a"));
    assert_eq!((resp.status, resp.keep_alive), (200, false));
    assert!(conn.is_dead());
}

#[test]
fn a_100_mb_body_is_cut_at_the_bound_without_being_transferred() {
    const LEN: u64 = 100_000_000;
    let h = crate::testkit::Hostile::large_body(LEN).unwrap();
    let mut lp = Lp::new();
    let mut conn = hostile_conn(&lp, &h);
    let resp = done(lp.post(&mut conn, "a"));
    assert_eq!((resp.status, resp.keep_alive), (200, false));
    assert!(conn.is_dead());
    conn.close(lp.poll.registry());
    // The server's writer ends at its first failed write after the close.
    h.shutdown();
    let sent = h.stats().bytes_written;
    assert!(sent < LEN / 4, "{sent} bytes went out: the client read on");
}

#[test]
fn ten_thousand_headers_pass_the_head_bound() {
    let h = crate::testkit::Hostile::many_headers(10_000).unwrap();
    let mut lp = Lp::new();
    let mut conn = hostile_conn(&lp, &h);
    let err = failed(lp.post(&mut conn, "a"));
    assert!(invalid_data(&err).contains("head passed 65536"), "{err}");
    assert!(conn.is_dead());
}

#[test]
fn informational_answers_before_the_answer_keep_the_connection() {
    let h = crate::testkit::Hostile::informational().unwrap();
    let mut lp = Lp::new();
    let mut conn = hostile_conn(&lp, &h);
    for id in ["a", "b"] {
        let resp = done(lp.post(&mut conn, id));
        assert_eq!((resp.status, resp.keep_alive), (201, true));
    }
    assert_eq!((h.stats().connections, h.stats().requests), (1, 2));
}

#[test]
fn a_close_delimited_body_ends_with_the_connection() {
    let h = crate::testkit::Hostile::close_delimited(3000).unwrap();
    let mut lp = Lp::new();
    let mut conn = hostile_conn(&lp, &h);
    let resp = done(lp.post(&mut conn, "a"));
    assert_eq!((resp.status, resp.keep_alive), (200, false));
    assert!(conn.is_dead());
}

#[test]
fn a_trickle_keeps_the_request_pending_while_its_bytes_come() {
    // 40 bytes, one per 100 ms: the whole answer would take 4 s.
    let h = crate::testkit::Hostile::trickle(Duration::from_millis(100)).unwrap();
    let mut lp = Lp::new();
    let mut conn = hostile_conn(&lp, &h);
    conn.start(&JSON, body("a")).unwrap();
    // Bytes keep coming and none of them ends the request: only its owner's deadline
    // (`tests/hostile.rs`: the engine fails it there, as "response") does.
    let p = lp.run_for(&mut conn, Duration::from_millis(500));
    assert!(matches!(p, Progress::Pending), "{p:?}");
    let ex = conn.req.as_ref().expect("still in flight");
    assert!(ex.got_byte && ex.reader.buffered() > 0, "{conn:?}");
    assert!(conn.is_established() && !conn.is_dead());
    conn.close(lp.poll.registry());
}

#[test]
fn a_stalled_tls_handshake_leaves_the_connection_unestablished() {
    let h = crate::testkit::Hostile::silent().unwrap();
    let insecure = TlsOptions {
        ca_pem: None,
        insecure: true,
        system_roots: false,
    };
    let t = Target::parse(&format!("https://{}/hook", h.addr()), &insecure).unwrap();
    let mut lp = Lp::new();
    let mut conn = lp.connect(&t);
    conn.start(&JSON, body("a")).unwrap();
    // TCP connects at once; the handshake never finishes, and the connection says so for
    // as long as its owner waits (`tests/hostile.rs`: the engine fails it at its connect
    // deadline, as "connect").
    let p = lp.until_seen(&mut conn, || h.stats().connections == 1);
    assert!(matches!(p, Progress::Pending), "{p:?}");
    let p = lp.run_for(&mut conn, OWNER_DEADLINE);
    assert!(matches!(p, Progress::Pending), "{p:?}");
    assert!(!conn.is_established() && !conn.is_dead());
    assert_eq!((h.stats().connections, h.stats().requests), (1, 0));
    conn.close(lp.poll.registry());
}

#[test]
fn one_drive_moves_at_most_its_budget_and_asks_for_another() {
    let r = Receiver::start(ReceiverConfig::new()).unwrap();
    let mut lp = Lp::new();
    let mut conn = lp.connect(&target(&r.url()));
    lp.until(&mut conn, Conn::is_idle);
    let body = big_body("big");
    let len = body.len();
    conn.start(&JSON, body).unwrap();
    let until = Instant::now() + SAFETY;
    let mut drives = 0;
    let mut budget_ends = 0;
    let mut p = Progress::Pending;
    while matches!(p, Progress::Pending) {
        assert!(
            Instant::now() < until,
            "no outcome before the safety deadline"
        );
        let before = conn.head_sent + conn.body_sent;
        p = if drives == 0 {
            conn.on_event(lp.poll.registry())
        } else {
            lp.turn(&mut conn, until)
        };
        drives += 1;
        let moved = conn.head_sent + conn.body_sent - before;
        assert!(moved <= DRIVE_BUDGET, "{moved} bytes in one drive");
        budget_ends += usize::from(conn.wants_drive());
    }
    assert_eq!(done(p).status, 200);
    assert!(
        drives > len / DRIVE_BUDGET,
        "{drives} drives for {len} bytes"
    );
    // Loopback socket buffers grow to megabytes, so some drive stops at its budget (not at
    // `WouldBlock`), and the re-drive without an event is what finishes the request.
    assert!(budget_ends > 0, "the budget never ran out");
    assert_eq!(r.ids(), ["big"]);
}

#[test]
fn the_ssrf_guard_checks_each_resolved_address_at_connect() {
    let r = Receiver::start(ReceiverConfig::new()).unwrap();
    let port = r.addr().port();
    let lp = Lp::new();
    // A name passes when the endpoint is added; what it resolves to is checked at connect.
    let by_name = Target::parse(
        &format!("http://localhost:{port}/hook"),
        &TlsOptions::default(),
    )
    .unwrap()
    .guard(false)
    .unwrap();
    assert!(by_name.addrs.iter().all(|a| a.ip().is_loopback()));
    let err = Conn::connect(&by_name, lp.poll.registry(), TOKEN).unwrap_err();
    match &err {
        Error::Io {
            kind: io::ErrorKind::PermissionDenied,
            message,
            ..
        } => assert!(
            message.contains("loopback") && message.contains("allow_private"),
            "{message}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // DNS rebinding: a name that resolved to a public address when added and to a private
    // one when resolved again (the endpoint swaps `addrs`) is refused at that connect.
    let mut rebound = Target::parse("http://93.184.215.14/hook", &TlsOptions::default())
        .unwrap()
        .guard(false)
        .unwrap();
    rebound.addrs = vec![
        "10.0.0.7:80".parse().unwrap(),
        "169.254.169.254:80".parse().unwrap(),
    ];
    let err = Conn::connect(&rebound, lp.poll.registry(), TOKEN).unwrap_err();
    assert!(err.to_string().contains("metadata"), "{err}");
    // Nothing reached the receiver; with the guard off the same target connects.
    assert_eq!(r.stats().connections, 0);
    let allowed = by_name.clone().guard(true).unwrap();
    let mut lp = Lp::new();
    let mut conn = lp.connect(&allowed);
    done(lp.post(&mut conn, "e0"));
    assert_eq!(r.ids(), ["e0"]);
    // An IP literal that can never be allowed is refused when the endpoint is added.
    let e = Target::parse(&r.url(), &TlsOptions::default())
        .unwrap()
        .guard(false)
        .unwrap_err();
    assert!(matches!(e, Error::Config { field: "url", .. }), "{e}");
}
