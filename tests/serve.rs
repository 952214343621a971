//! `hookwire serve`, end to end: the library server in this process, and the binary as a
//! child process where a crash or a signal is needed. Loopback only, every wait bounded.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::TempDir;
use common::serve_child::ServeChild;
use hookwire::serve::{ServeConfig, Server, service_endpoint};
use hookwire::testkit::{Receiver, ReceiverConfig, Reply};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// An HTTP/1.1 answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A keep-alive client connection with a 10 s read timeout (a safety net).
struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            stream: BufReader::new(s),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).unwrap();
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: test\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if method == "POST" {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut all = head.into_bytes();
        all.extend_from_slice(body);
        self.send_raw(&all);
        self.answer().expect("an answer")
    }

    /// Reads one answer; `None` if the server closed the connection first.
    fn answer(&mut self) -> Option<Answer> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let status = line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.stream.read_line(&mut h).ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':')?;
            headers.push((k.trim().to_lowercase(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        self.stream.read_exact(&mut body).ok()?;
        Some(Answer {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        })
    }

    /// Whether the server closed the connection (EOF or reset) within the read timeout.
    fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn ndjson(ids: impl IntoIterator<Item = String>) -> Vec<u8> {
    let mut out = String::new();
    for id in ids {
        out.push_str(&format!("{{\"id\":\"{id}\",\"action\":\"push\"}}\n"));
    }
    out.into_bytes()
}

/// Every record's payload in the log under `dir`, read without taking the directory's lock.
fn payloads_on_disk(dir: &std::path::Path) -> String {
    use hookwire::store::{LogStore, Store};
    let store = LogStore::open_read_only(dir).unwrap();
    let mut reader = store.reader().unwrap();
    let mut out = String::new();
    reader
        .read(
            store.first_seq(),
            store.durable_through(),
            u64::MAX,
            1 << 20,
            &mut |r| {
                out.push_str(&String::from_utf8_lossy(r.payload));
            },
        )
        .unwrap();
    out
}

fn config(dir: &TempDir, receiver: &Receiver) -> ServeConfig {
    let mut c = ServeConfig::new("127.0.0.1:0".parse().unwrap(), dir.path());
    let mut e = service_endpoint("down", receiver.url());
    e.allow_private = true; // the receiver is on loopback
    e.secrets = vec![SECRET.into()];
    c.add_endpoint(e).unwrap();
    c
}

fn signed_receiver() -> Receiver {
    Receiver::start(ReceiverConfig::new().secrets(vec![SECRET.parse().unwrap()])).unwrap()
}

#[test]
fn ndjson_is_acknowledged_then_delivered_in_order_and_signed() {
    let dir = TempDir::new("serve-ndjson");
    let rx = signed_receiver();
    let server = Server::start(config(&dir, &rx)).unwrap();
    let mut c = Client::connect(server.local_addr());
    let ids: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
    // Two requests on one keep-alive connection: NDJSON, then a JSON array.
    let a = c.request(
        "POST",
        "/v1/events",
        &[],
        &ndjson(ids[..60].iter().cloned()),
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["accepted"], 60);
    // The answer came after the commit: every event is already in the log's files.
    let on_disk = payloads_on_disk(dir.path());
    for id in &ids[..60] {
        assert!(
            on_disk.contains(&format!("\"id\":\"{id}\"")),
            "{id} not on disk at the 2xx"
        );
    }
    let arr = serde_json::to_vec(
        &ids[60..]
            .iter()
            .map(|id| serde_json::json!({ "id": id }))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let a = c.request("POST", "/v1/events", &[], &arr);
    assert_eq!((a.status, a.json()["accepted"].as_u64()), (200, Some(40)));
    assert!(rx.wait_for_distinct(100, Duration::from_secs(10)));
    assert_eq!(rx.ids(), ids, "delivered in the order posted");
    let st = rx.stats();
    assert_eq!((st.bad_signatures, st.duplicates), (0, 0));
    // The admin routes see it.
    let e = c.request("GET", "/v1/endpoints", &[], b"");
    assert_eq!(e.status, 200);
    assert_eq!(e.json()["endpoints"][0]["name"], "down");
    assert_eq!(e.json()["endpoints"][0]["state"], "active");
    let m = c.request("GET", "/metrics", &[], b"");
    assert!(
        m.body.contains("hookwire_serve_events_accepted_total 100"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("hookwire_serve_requests_total{route=\"events\",code=\"200\"} 2")
    );
    let h = c.request("GET", "/healthz", &[], b"");
    assert_eq!((h.status, h.json()["status"].as_str()), (200, Some("ok")));
    assert!(h.json()["endpoints"][0]["pending"].is_u64());
    let v = c.request("GET", "/debug/vars", &[], b"");
    assert_eq!(v.json()["serve"]["events_published"], 100);
    assert!(v.json()["registry"]["notifications"]["endpoints"].is_array());
    assert_eq!(c.request("GET", "/readyz", &[], b"").status, 200);
    let report = server.shutdown();
    assert!(report.drained);
}

#[test]
fn many_connections_at_once_are_each_acknowledged_and_delivered_once_in_their_order() {
    let dir = TempDir::new("serve-concurrent");
    let rx = signed_receiver();
    let server = Server::start(config(&dir, &rx)).unwrap();
    let addr = server.local_addr();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut sent = Vec::new();
                for r in 0..25 {
                    let ids: Vec<String> = (0..4).map(|i| format!("c{t}-{r}-{i}")).collect();
                    let a = c.request("POST", "/v1/events", &[], &ndjson(ids.iter().cloned()));
                    assert_eq!(a.status, 200, "{a:?}");
                    sent.extend(ids);
                }
                sent
            })
        })
        .collect();
    let sent: Vec<Vec<String>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(rx.wait_for_distinct(800, Duration::from_secs(20)));
    let got = rx.ids();
    assert_eq!(got.len(), 800, "each once");
    for (t, mine) in sent.iter().enumerate() {
        let prefix = format!("c{t}-");
        let seen: Vec<&String> = got.iter().filter(|id| id.starts_with(&prefix)).collect();
        assert_eq!(
            seen,
            mine.iter().collect::<Vec<_>>(),
            "connection {t}'s order"
        );
    }
    let m = &server.shutdown().endpoints[0].metrics;
    assert!(m.balanced() && m.delivered == 800, "{m:?}");
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let dir = TempDir::new("serve-continue");
    let rx = signed_receiver();
    let server = Server::start(config(&dir, &rx)).unwrap();
    let mut c = Client::connect(server.local_addr());
    let body = ndjson(["e1".to_string()]);
    c.send_raw(
        format!(
            "POST /v1/events HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.answer().unwrap().status, 100);
    c.send_raw(&body);
    let a = c.answer().unwrap();
    assert_eq!((a.status, a.json()["accepted"].as_u64()), (200, Some(1)));
}

#[test]
fn dead_letters_are_listed_and_replayed_and_endpoints_switched_by_the_admin_api() {
    let dir = TempDir::new("serve-admin");
    let rx = Receiver::start(
        ReceiverConfig::new()
            .secrets(vec![SECRET.parse().unwrap()])
            .statuses(vec![Reply::status(400); 3]),
    )
    .unwrap();
    let mut cfg = config(&dir, &rx);
    cfg.admin_tokens = vec!["adm".into()];
    let server = Server::start(cfg).unwrap();
    let mut c = Client::connect(server.local_addr());
    let auth = [("authorization", "Bearer adm")];
    let ids: Vec<String> = (0..3).map(|i| format!("d{i}")).collect();
    assert_eq!(
        c.request("POST", "/v1/events", &[], &ndjson(ids.clone()))
            .status,
        200
    );
    common::eventually("three dead letters", || {
        c.request("GET", "/v1/endpoints", &auth, b"").json()["endpoints"][0]["dead_lettered"] == 3
    });
    assert_eq!(c.request("GET", "/v1/dead-letters", &[], b"").status, 401);
    // Dead letters reach the store at the persistence thread's next turn.
    common::eventually("three dead letters stored", || {
        c.request("GET", "/v1/dead-letters?endpoint=down", &auth, b"")
            .json()["total"]
            == 3
    });
    let list = c
        .request("GET", "/v1/dead-letters?endpoint=down", &auth, b"")
        .json();
    let listed: Vec<&str> = list["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["d0", "d1", "d2"]);
    assert_eq!(list["dead_letters"][0]["status"], 400);
    assert_eq!(list["dead_letters"][0]["event"]["id"], "d0");
    let seq0 = list["dead_letters"][0]["seq"].as_u64().unwrap();
    assert_eq!(
        c.request("GET", "/v1/dead-letters?seq=5", &auth, b"")
            .status,
        400,
        "a bad range is refused"
    );
    // Disable, replay the first one only: it waits; enable: it arrives.
    let a = c.request("POST", "/v1/endpoints/down/disable", &auth, b"");
    assert_eq!(a.status, 200, "{a:?}");
    // The worker takes the command at its next turn.
    common::eventually("the endpoint is disabled", || {
        c.request("GET", "/v1/endpoints", &auth, b"").json()["endpoints"][0]["state"] == "disabled"
    });
    let path = format!("/v1/dead-letters/replay?endpoint=down&seq={seq0}..{seq0}");
    let a = c.request("POST", &path, &auth, b"");
    assert_eq!(
        (a.status, a.json()["replayed"].as_u64()),
        (200, Some(1)),
        "{a:?}"
    );
    assert_eq!(rx.stats().events, 0);
    assert_eq!(
        c.request("POST", "/v1/endpoints/down/enable", &auth, b"")
            .status,
        200
    );
    assert!(rx.wait_for_distinct(1, Duration::from_secs(10)));
    assert_eq!(rx.ids(), ["d0"]);
    assert_eq!(
        c.request("POST", "/v1/endpoints/nope/enable", &auth, b"")
            .status,
        404
    );
    assert_eq!(
        c.request("POST", "/v1/endpoints/down/enable", &[], b"")
            .status,
        401
    );
}

#[test]
fn a_registry_envelope_is_relayed_with_its_ids() {
    let dir = TempDir::new("serve-registry");
    let rx = signed_receiver();
    let server = Server::start(config(&dir, &rx)).unwrap();
    let mut c = Client::connect(server.local_addr());
    let body = br#"{
   "events": [
      {
         "id": "asdf-asdf-asdf-asdf-0",
         "timestamp": "2006-01-02T15:04:05Z",
         "action": "push",
         "target": {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
            "repository": "library/test",
            "tag": "latest"
         },
         "request": { "id": "asdfasdf", "method": "PUT" },
         "source": { "addr": "reg.example.com:5000", "instanceID": "x" }
      }
   ]
}"#;
    for v in ["v1", "v2"] {
        let ct = format!("application/vnd.docker.distribution.events.{v}+json");
        let a = c.request("POST", "/v1/registry", &[("content-type", &ct)], body);
        assert_eq!(
            (a.status, a.json()["accepted"].as_u64()),
            (200, Some(1)),
            "{a:?}"
        );
    }
    let a = c.request(
        "POST",
        "/v1/registry",
        &[("content-type", "text/plain")],
        body,
    );
    assert_eq!(a.status, 415);
    assert!(rx.wait_for_distinct(1, Duration::from_secs(10)));
    // The second post of the same event id was accepted, and not delivered twice.
    assert_eq!(rx.ids(), ["asdf-asdf-asdf-asdf-0"]);
    let report = server.shutdown();
    assert_eq!(report.endpoints[0].metrics.delivered, 1);
}

#[test]
fn repeated_ids_are_accepted_and_delivered_once() {
    let dir = TempDir::new("serve-dedup");
    let rx = signed_receiver();
    let server = Server::start(config(&dir, &rx)).unwrap();
    let mut c = Client::connect(server.local_addr());
    let first = c.request(
        "POST",
        "/v1/events",
        &[],
        &ndjson(["a", "b", "a"].map(String::from)),
    );
    assert_eq!(first.json()["accepted"], 3);
    assert_eq!(first.json()["duplicates"], 1);
    let again = c.request(
        "POST",
        "/v1/events",
        &[],
        &ndjson(["b", "c"].map(String::from)),
    );
    assert_eq!(
        (again.status, again.json()["duplicates"].as_u64()),
        (200, Some(1))
    );
    assert!(rx.wait_for_distinct(3, Duration::from_secs(10)));
    let report = server.shutdown();
    assert_eq!(rx.ids(), ["a", "b", "c"]);
    assert_eq!(report.endpoints[0].metrics.events, 3);
}

#[test]
fn limits_auth_and_framing_are_enforced() {
    let dir = TempDir::new("serve-limits");
    let rx = signed_receiver();
    let mut cfg = config(&dir, &rx);
    cfg.tokens = vec!["tok".into()];
    cfg.limits.max_body_bytes = 1000;
    cfg.limits.max_header_bytes = 512;
    let server = Server::start(cfg).unwrap();
    let addr = server.local_addr();
    let body = ndjson(["x".to_string()]);
    // 401 without a token, or with a wrong one; the connection stays usable.
    let mut c = Client::connect(addr);
    let a = c.request("POST", "/v1/events", &[], &body);
    assert_eq!(
        (a.status, a.header("www-authenticate")),
        (401, Some("Bearer"))
    );
    let a = c.request(
        "POST",
        "/v1/events",
        &[("authorization", "Bearer nope")],
        &body,
    );
    assert_eq!(a.status, 401);
    let a = c.request(
        "POST",
        "/v1/events",
        &[("authorization", "Bearer tok")],
        &body,
    );
    assert_eq!(a.status, 200);
    // 413 from the declared length, before the body is sent.
    let mut c = Client::connect(addr);
    c.send_raw(
        b"POST /v1/events HTTP/1.1\r\nauthorization: Bearer tok\r\ncontent-length: 1001\r\n\r\n",
    );
    let a = c.answer().unwrap();
    assert_eq!(a.status, 413);
    assert!(c.closed_by_server());
    // Refused from the head alone, before a 100 Continue and without reading the body: a
    // missing token, a route that takes no POST, no such route.
    let mut cfg2 = config(&TempDir::new("serve-early"), &rx);
    cfg2.tokens = vec!["tok".into()];
    let big = Server::start(cfg2).unwrap();
    for (head, status) in [
        (
            "POST /v1/events HTTP/1.1\r\ncontent-length: 5000000\r\nexpect: 100-continue\r\n\r\n",
            401,
        ),
        (
            "POST /v1/events HTTP/1.1\r\ncontent-length: 5000000\r\n\r\n",
            401,
        ),
        (
            "POST /healthz HTTP/1.1\r\ncontent-length: 5000000\r\n\r\n",
            405,
        ),
        (
            "POST /nowhere HTTP/1.1\r\ncontent-length: 5000000\r\n\r\n",
            404,
        ),
    ] {
        let mut c = Client::connect(big.local_addr());
        c.send_raw(head.as_bytes());
        let a = c.answer().unwrap();
        assert_eq!(a.status, status, "{head:?}: {a:?}");
        assert!(c.closed_by_server(), "{head:?}");
    }
    drop(big);
    // 431 for a head past the limit.
    let mut c = Client::connect(addr);
    let big = "a".repeat(600);
    let a = c.request("GET", "/healthz", &[("x-big", &big)], b"");
    assert_eq!(a.status, 431);
    assert!(c.closed_by_server());
    // Chunked bodies are refused clearly.
    let mut c = Client::connect(addr);
    c.send_raw(b"POST /v1/events HTTP/1.1\r\nauthorization: Bearer tok\r\ntransfer-encoding: chunked\r\n\r\n");
    assert_eq!(c.answer().unwrap().status, 501);
    // A bad event refuses the whole body, naming it.
    let mut c = Client::connect(addr);
    let a = c.request(
        "POST",
        "/v1/events",
        &[("authorization", "Bearer tok")],
        b"{\"id\":\"ok\"}\n{\"no_id\":1}\n",
    );
    assert_eq!(a.status, 400);
    assert!(
        a.json()["error"].as_str().unwrap().contains("event 1"),
        "{a:?}"
    );
    assert_eq!(c.request("GET", "/nowhere", &[], b"").status, 404);
    assert_eq!(c.request("GET", "/v1/events", &[], b"").status, 405);
    assert!(rx.wait_for_distinct(1, Duration::from_secs(10)));
    drop(server);
    assert_eq!(rx.ids(), ["x"], "nothing refused was delivered");
}

#[test]
fn a_request_that_does_not_arrive_in_time_is_cut_off() {
    let dir = TempDir::new("serve-slowloris");
    let rx = signed_receiver();
    let mut cfg = config(&dir, &rx);
    cfg.limits.read_timeout = Duration::from_millis(300);
    cfg.limits.max_connections = 4;
    let server = Server::start(cfg).unwrap();
    let addr = server.local_addr();
    // A slowloris client: half a head, then nothing. The server closes it.
    let started = Instant::now();
    let mut slow = Client::connect(addr);
    slow.send_raw(b"POST /v1/events HTTP/1.1\r\ncontent-len");
    assert!(slow.closed_by_server(), "a stalled request is closed");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The connection limit: the fifth connection is answered 503 and closed.
    let mut held: Vec<Client> = (0..4).map(|_| Client::connect(addr)).collect();
    // Each of the four is accepted (it was answered) and stays open (keep-alive).
    for c in &mut held {
        assert_eq!(c.request("GET", "/readyz", &[], b"").status, 200);
    }
    let mut fifth = Client::connect(addr);
    let a = fifth.answer().expect("a 503");
    assert_eq!(a.status, 503);
    assert!(a.header("retry-after").is_some());
    drop(held);
    let v = {
        let mut c = Client::connect(addr);
        // The held connections' closes may take a turn of the loop to be seen.
        let mut a = c.request("GET", "/debug/vars", &[], b"");
        for _ in 0..50 {
            if a.status == 200 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            c = Client::connect(addr);
            a = c.request("GET", "/debug/vars", &[], b"");
        }
        a.json()
    };
    assert_eq!(v["serve"]["connections_timed_out"], 1);
    assert!(v["serve"]["connections_refused"].as_u64().unwrap() >= 1);
}

#[test]
fn a_full_log_answers_503_with_retry_after_and_never_drops_what_it_acknowledged() {
    let dir = TempDir::new("serve-quota");
    // A downstream that refuses everything, so the log only grows.
    let rx =
        Receiver::start(ReceiverConfig::new().fail_for(Duration::from_secs(3600), 500)).unwrap();
    let mut cfg = config(&dir, &rx);
    cfg.limits.quota_bytes = 4096;
    cfg.limits.retry_after = 7;
    cfg.limits.drain_timeout = Duration::from_millis(200);
    let server = Server::start(cfg).unwrap();
    let mut c = Client::connect(server.local_addr());
    let pad = "p".repeat(200);
    let mut acked = 0;
    let mut refused = None;
    for i in 0..200 {
        let body = format!("{{\"id\":\"q{i}\",\"pad\":\"{pad}\"}}");
        let a = c.request("POST", "/v1/events", &[], body.as_bytes());
        match a.status {
            200 => acked += 1,
            503 => {
                refused = Some(a);
                break;
            }
            s => panic!("unexpected {s}: {a:?}"),
        }
    }
    let refused = refused.expect("the quota was reached");
    assert_eq!(refused.header("retry-after"), Some("7"));
    assert!(acked > 0);
    let snap = server.dispatcher().snapshot();
    let m = &snap[0].metrics;
    // Everything acknowledged is held (pending), nothing was dropped after acceptance.
    assert_eq!(m.delivered + m.dead_lettered, 0);
    assert!(m.events + m.unread >= acked, "{m:?}");
    drop(server);
}

#[test]
fn stopping_refuses_new_ingest_and_ends_the_loop() {
    let dir = TempDir::new("serve-stop");
    let rx = signed_receiver();
    let server = Server::start(config(&dir, &rx)).unwrap();
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    assert_eq!(
        c.request("POST", "/v1/events", &[], &ndjson(["s1".to_string()]))
            .status,
        200
    );
    let stop = server.handle();
    stop.stop();
    let report = server.wait();
    assert!(report.drained, "{report:?}");
    assert_eq!(rx.ids(), ["s1"]);
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
}

// ---- the binary ------------------------------------------------------------------------

fn post_events(addr: SocketAddr, ids: &[String]) -> Answer {
    Client::connect(addr).request("POST", "/v1/events", &[], &ndjson(ids.iter().cloned()))
}

#[test]
fn every_acknowledged_event_survives_kill_9_and_arrives_after_a_restart() {
    let dir = TempDir::new("serve-kill9");
    // First life: the downstream refuses everything, so acknowledged events are only on disk.
    let down =
        Receiver::start(ReceiverConfig::new().fail_for(Duration::from_secs(3600), 503)).unwrap();
    let mut child = ServeChild::start(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.arg(),
        "--endpoint",
        &down.url(),
        "--name",
        "hook",
        "--secret",
        SECRET,
        "--allow-private",
    ]);
    let mut acked = Vec::new();
    for batch in 0..20 {
        let ids: Vec<String> = (0..10).map(|i| format!("k{batch}-{i}")).collect();
        let a = post_events(child.addr, &ids);
        assert_eq!(a.status, 200, "{a:?}");
        acked.extend(ids);
    }
    // kill -9 right after the last 2xx: no shutdown, no flush.
    child.child.kill().unwrap();
    child.child.wait().unwrap();
    assert_eq!(
        down.stats().events,
        0,
        "nothing was delivered in the first life"
    );
    // Second life, same data dir and endpoint name, a healthy downstream.
    let up = signed_receiver();
    let _child = ServeChild::start(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.arg(),
        "--endpoint",
        &up.url(),
        "--name",
        "hook",
        "--secret",
        SECRET,
        "--allow-private",
    ]);
    assert!(
        up.wait_for_distinct(acked.len() as u64, Duration::from_secs(20)),
        "got {:?}",
        up.stats()
    );
    assert_eq!(up.ids(), acked, "every acknowledged event, in order, once");
    assert_eq!(up.stats().bad_signatures, 0);
}

#[test]
fn sigterm_stops_accepting_drains_and_exits_0() {
    let dir = TempDir::new("serve-sigterm");
    let rx = signed_receiver();
    let mut child = ServeChild::start(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.arg(),
        "--endpoint",
        &rx.url(),
        "--secret",
        SECRET,
        "--allow-private",
    ]);
    let ids: Vec<String> = (0..30).map(|i| format!("t{i}")).collect();
    assert_eq!(post_events(child.addr, &ids).status, 200);
    let status = Command::new("kill")
        .args(["-TERM", &child.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(child.wait(Duration::from_secs(20)), Some(0));
    assert_eq!(rx.ids(), ids, "drained before exiting");
    assert!(TcpStream::connect(child.addr).is_err());
}

#[test]
fn flags_default_to_refusing_private_addresses() {
    let dir = TempDir::new("serve-ssrf");
    let rx = signed_receiver();
    // A literal loopback address is refused at start, naming the switch.
    let out = common::hookwire(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.arg(),
            "--endpoint",
            &rx.url(),
        ],
        String::new(),
        Duration::from_secs(20),
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("allow_private"), "{}", out.stderr);
    // A name that resolves to loopback is refused at connect time; the event stays durable.
    let by_name = format!("http://localhost:{}/", rx.addr().port());
    let child = ServeChild::start(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.arg(),
        "--endpoint",
        &by_name,
    ]);
    let addr = child.addr;
    assert_eq!(post_events(addr, &["p1".to_string()]).status, 200);
    common::eventually("the endpoint reports the refused address", || {
        let e = Client::connect(addr).request("GET", "/v1/endpoints", &[], b"");
        e.json()["endpoints"][0]["last_error"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    });
    assert_eq!(rx.stats().requests, 0);
}

#[test]
fn a_bad_config_file_exits_2_naming_the_line_and_field() {
    let dir = TempDir::new("serve-badconfig");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("hookwire.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\ndata_dir = \"/tmp/x\"\n\n[[endpoint]]\nurl = \"http://a/\"\nmax_in_flight = 0\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = common::hookwire(
        &["serve", "--config", path],
        String::new(),
        Duration::from_secs(20),
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("{path}:4:1: endpoint[0].max_in_flight")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"));
    assert!(out.stdout.is_empty());
    let out = common::hookwire(
        &["serve", "--listen", "127.0.0.1:0"],
        String::new(),
        Duration::from_secs(20),
    );
    assert_eq!(
        out.code,
        Some(2),
        "clap: --data-dir is required: {}",
        out.stderr
    );
    assert!(out.stderr.contains("--data-dir"));
}

fn write_config(path: &std::path::Path, dir: &TempDir, endpoints: &[(&str, String, &str)]) {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
        dir.path().join("data")
    );
    for (name, url, extra) in endpoints {
        text.push_str(&format!(
            "\n[[endpoint]]\nname = \"{name}\"\nurl = \"{url}\"\nallow_private = true\nsecrets = [\"{SECRET}\"]\n{extra}\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn endpoint_names(addr: SocketAddr) -> Vec<String> {
    let e = Client::connect(addr).request("GET", "/v1/endpoints", &[], b"");
    e.json()["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn sighup_applies_added_changed_and_removed_endpoints_and_keeps_the_config_on_a_bad_file() {
    let dir = TempDir::new("serve-sighup");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("hookwire.toml");
    // A slow downstream, so events are still queued for it when its settings change.
    let a = Receiver::start(
        ReceiverConfig::new()
            .secrets(vec![SECRET.parse().unwrap()])
            .delay(Duration::from_millis(5)),
    )
    .unwrap();
    let b = signed_receiver();
    write_config(&file, &dir, &[("a", a.url(), "")]);
    let child = ServeChild::start(&["--config", file.to_str().unwrap()]);
    let addr = child.addr;
    let first: Vec<String> = (0..40).map(|i| format!("e{i}")).collect();
    assert_eq!(post_events(addr, &first).status, 200);
    // Change a (a header), add b, while a still has events queued.
    write_config(
        &file,
        &dir,
        &[
            ("a", a.url(), "headers = { X-V = \"2\" }"),
            ("b", b.url(), ""),
        ],
    );
    child.signal("HUP");
    common::eventually("b is added", || endpoint_names(addr).len() == 2);
    let second: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    assert_eq!(post_events(addr, &second).status, 200);
    assert!(
        a.wait_for_distinct(50, Duration::from_secs(20)),
        "{:?}",
        a.stats()
    );
    assert!(b.wait_for_distinct(10, Duration::from_secs(20)));
    let mut all = first.clone();
    all.extend(second.iter().cloned());
    // Nothing lost, nothing twice, in order: the changed endpoint resumes from its own final
    // cursor, not from the one saved before its removal.
    assert_eq!(
        a.ids(),
        all,
        "a lost nothing and repeated nothing across its change"
    );
    assert_eq!(b.ids(), second, "b gets what was posted after it was added");
    assert!(child.stderr.lock().unwrap().contains("\"changed\":[\"a\"]"));
    // A bad file: refused, said why, the running configuration stays.
    std::fs::write(&file, "listen = \n").unwrap();
    child.signal("HUP");
    common::eventually("the refusal is reported", || {
        child.stderr.lock().unwrap().contains("reload refused")
    });
    assert!(child.stderr.lock().unwrap().contains("hookwire.toml:1:"));
    assert_eq!(post_events(addr, &["g0".to_string()]).status, 200);
    assert!(b.wait_for_distinct(11, Duration::from_secs(20)));
    // Remove a: only b gets what follows.
    write_config(&file, &dir, &[("b", b.url(), "")]);
    child.signal("HUP");
    common::eventually("a is removed", || endpoint_names(addr) == ["b"]);
    assert_eq!(post_events(addr, &["h0".to_string()]).status, 200);
    assert!(b.wait_for_distinct(12, Duration::from_secs(20)));
    assert!(
        a.wait_for_distinct(51, Duration::from_secs(10)),
        "g0 reached a"
    );
    assert_eq!(a.stats().distinct, 51, "a got nothing after its removal");
}

#[test]
fn endpoints_show_their_breaker() {
    let dir = TempDir::new("serve-breaker");
    let failing =
        Receiver::start(ReceiverConfig::new().fail_for(Duration::from_secs(3600), 500)).unwrap();
    let ok = signed_receiver();
    let text = format!(
        r#"listen = "127.0.0.1:0"
data_dir = {:?}

[limits]
drain_timeout_ms = 200

[[endpoint]]
name = "failing"
url = "{}"
allow_private = true
retry = {{ kind = "breaker", consecutive_failures = 2, cooldown_ms = 60000 }}

[[endpoint]]
name = "ok"
url = "{}"
allow_private = true
secrets = ["{SECRET}"]
retry = {{ kind = "breaker", consecutive_failures = 2, cooldown_ms = 60000 }}

[[endpoint]]
name = "plain"
url = "{}"
allow_private = true
secrets = ["{SECRET}"]
retry = {{ kind = "exponential", base_ms = 10, max_ms = 1000 }}
"#,
        dir.path(),
        failing.url(),
        ok.url(),
        ok.url()
    );
    let server = Server::start(ServeConfig::parse(&text).unwrap()).unwrap();
    let addr = server.local_addr();
    let ids: Vec<String> = (0..3).map(|i| format!("b{i}")).collect();
    assert_eq!(post_events(addr, &ids).status, 200);
    common::eventually("the failing endpoint's breaker opens", || {
        let e = Client::connect(addr)
            .request("GET", "/v1/endpoints", &[], b"")
            .json();
        e["endpoints"][0]["breaker"] == "open"
    });
    assert!(ok.wait_for_distinct(3, Duration::from_secs(10)));
    let e = Client::connect(addr)
        .request("GET", "/v1/endpoints", &[], b"")
        .json();
    let breakers: Vec<&serde_json::Value> = e["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["breaker"])
        .collect();
    assert_eq!(breakers[1], "closed");
    assert!(
        breakers[2].is_null(),
        "plain exponential backoff has no breaker"
    );
    drop(server);
}

#[test]
fn an_endpoint_dropped_from_the_config_is_forgotten_over_the_admin_api() {
    let dir = TempDir::new("serve-forget");
    let down =
        Receiver::start(ReceiverConfig::new().fail_for(Duration::from_secs(3600), 503)).unwrap();
    // First life: two endpoints; `old` keeps 5 undelivered events in the log.
    let mut cfg = config(&dir, &down);
    let mut old = service_endpoint("old", down.url());
    old.allow_private = true;
    cfg.add_endpoint(old).unwrap();
    cfg.limits.drain_timeout = Duration::from_millis(200);
    let server = Server::start(cfg).unwrap();
    let ids: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
    assert_eq!(post_events(server.local_addr(), &ids).status, 200);
    let _ = server.shutdown();
    // Second life without `old`: its slot is still taken until it is forgotten.
    let mut cfg = config(&dir, &down);
    cfg.limits.drain_timeout = Duration::from_millis(200);
    let server = Server::start(cfg).unwrap();
    let mut c = Client::connect(server.local_addr());
    let a = c.request("POST", "/v1/endpoints/down/forget", &[], b"");
    assert_eq!(
        a.status, 409,
        "a configured endpoint is not forgotten: {a:?}"
    );
    let a = c.request("POST", "/v1/endpoints/nobody/forget", &[], b"");
    assert_eq!(a.status, 404, "{a:?}");
    let a = c.request("POST", "/v1/endpoints/old/forget", &[], b"");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["dead_lettered"], 5, "{a:?}");
    let list = c
        .request("GET", "/v1/dead-letters?endpoint=old", &[], b"")
        .json();
    assert_eq!(list["total"], 5, "{list}");
    let a = c.request("POST", "/v1/endpoints/old/forget", &[], b"");
    assert_eq!(a.status, 404, "forgotten already: {a:?}");
    let _ = server.shutdown();
}

#[test]
fn serve_takes_its_secret_from_a_file() {
    let dir = TempDir::new("serve-secret-file");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let rx = signed_receiver();
    let data = dir.path().join("data");
    let child = ServeChild::start(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--endpoint",
        &rx.url(),
        "--secret-file",
        file.to_str().unwrap(),
        "--allow-private",
    ]);
    assert_eq!(post_events(child.addr, &["s1".to_owned()]).status, 200);
    assert!(rx.wait_for_distinct(1, Duration::from_secs(10)));
    assert_eq!(
        rx.stats().bad_signatures,
        0,
        "signed with the file's secret"
    );
}

#[test]
fn a_reload_does_not_switch_an_endpoint_between_durable_and_memory() {
    let dir = TempDir::new("serve-reload-durable");
    let rx = signed_receiver();
    let server = Server::start(config(&dir, &rx)).unwrap();
    let mut changed = config(&dir, &rx);
    changed.endpoints[0].durability = hookwire::config::Durability::Memory;
    changed.endpoints[0].overflow = hookwire::sink::Overflow::DropOldest;
    let report = server
        .handle()
        .reload(changed, Duration::from_secs(10))
        .unwrap();
    assert!(report.changed.is_empty(), "{report:?}");
    assert_eq!(report.needs_restart, ["endpoint.durable"], "{report:?}");
    // Still durable: an acknowledged event is in the log and delivered.
    assert_eq!(
        post_events(server.local_addr(), &["d1".to_owned()]).status,
        200
    );
    assert!(rx.wait_for_distinct(1, Duration::from_secs(10)));
    let _ = server.shutdown();
}
