//! The `hookwire serve` scenarios (issue 11): ingest over HTTP with a 2xx only once the events
//! are durable, and a registry-shaped stream relayed to three endpoints.
//!
//! The server is the library's (`hookwire::serve::Server`) in this process, on a fresh data
//! directory; the clients are plain blocking HTTP/1.1 keep-alive connections on threads of
//! their own (one request at a time per connection, as a registry or a notifier sends).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hookwire::Error;
use hookwire::config::BatchConfig;
use hookwire::serve::{ServeConfig, Server, service_endpoint};
use hookwire::testkit::{Receiver, ReceiverConfig};

use super::durable::DataDir;
use super::rss::vm_kb;
use super::{Ctx, Values, failed};

/// One keep-alive connection that posts and reads each answer before the next request.
pub(super) struct Client {
    out: TcpStream,
    rd: BufReader<TcpStream>,
    head: Vec<u8>,
}

impl Client {
    pub(super) fn connect(addr: SocketAddr) -> Result<Client, Error> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Client {
            rd: BufReader::new(s.try_clone()?),
            out: s,
            head: Vec::with_capacity(256),
        })
    }

    /// POSTs `body` to `path`; returns the status.
    pub(super) fn post(&mut self, path: &str, ctype: &str, body: &[u8]) -> Result<u16, Error> {
        self.head.clear();
        write!(
            self.head,
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        self.out.write_all(&self.head)?;
        self.out.write_all(body)?;
        let mut line = String::new();
        self.rd.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| failed(format!("bad status line {line:?}")))?;
        let mut len = 0usize;
        loop {
            line.clear();
            if self.rd.read_line(&mut line)? == 0 {
                return Err(failed("the server closed the connection"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut sink = vec![0; len];
        self.rd.read_exact(&mut sink)?;
        Ok(status)
    }
}

/// A server on a fresh directory, delivering to `urls` (durable endpoints, batches of 100).
fn server(dir: &DataDir, urls: &[String]) -> Result<Server, Error> {
    let mut config = ServeConfig::new("127.0.0.1:0".parse().expect("an address"), &dir.0);
    config.limits.quota_bytes = 8 << 30;
    config.limits.dedup_window = 100_000;
    for (i, url) in urls.iter().enumerate() {
        let mut e = service_endpoint(format!("ep{i}"), url.clone());
        e.allow_private = true; // the receivers are on loopback
        e.batch = BatchConfig::events(100);
        config.add_endpoint(e).map_err(|e| failed(e.to_string()))?;
    }
    Server::start(config)
}

/// NDJSON of events `from..from+n` (about 120 bytes each).
pub(super) fn ndjson(from: u64, n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n as usize * 128);
    for k in from..from + n {
        let _ = writeln!(
            out,
            r#"{{"id":"evt-{k}","action":"push","target":{{"repository":"library/app","tag":"v{k}"}}}}"#
        );
    }
    out
}

/// Microsecond latencies -> (p50, p99) in microseconds.
pub(super) fn percentiles(mut us: Vec<u64>) -> (u64, u64) {
    us.sort_unstable();
    let at = |q: f64| {
        us.get(((us.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    (at(0.50), at(0.99))
}

/// Where and what the clients post.
#[derive(Clone, Copy)]
struct Load {
    addr: SocketAddr,
    path: &'static str,
    ctype: &'static str,
    /// Connections (one thread each).
    conns: u64,
    /// Requests per connection.
    per_conn: u64,
    /// Events per request (for the progress line).
    events_per_request: u64,
}

/// Runs `load.conns` client threads that each post `load.per_conn` bodies made by
/// `body(conn, i)`; returns (seconds, latencies in us, non-2xx answers).
fn drive(
    load: Load,
    body: impl Fn(u64, u64) -> Vec<u8> + Send + Sync + 'static,
    progress: &super::progress::Progress,
) -> Result<(f64, Vec<u64>, u64), Error> {
    let Load {
        addr,
        path,
        ctype,
        conns,
        per_conn,
        events_per_request,
    } = load;
    let body = Arc::new(body);
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            let body = body.clone();
            let done = done.clone();
            std::thread::spawn(move || -> Result<(Vec<u64>, u64), Error> {
                let mut client = Client::connect(addr)?;
                let mut lat = Vec::with_capacity(per_conn as usize);
                let mut bad = 0;
                for i in 0..per_conn {
                    let b = body(c, i);
                    let t = Instant::now();
                    let status = client.post(path, ctype, &b)?;
                    lat.push(t.elapsed().as_micros() as u64);
                    if !(200..300).contains(&status) {
                        bad += 1;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok((lat, bad))
            })
        })
        .collect();
    while handles.iter().any(|h| !h.is_finished()) {
        progress.set(done.load(Ordering::Relaxed) * events_per_request);
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = t0.elapsed().as_secs_f64();
    let (mut all, mut bad) = (Vec::new(), 0);
    for h in handles {
        let (lat, b) = h.join().map_err(|_| failed("a client thread panicked"))??;
        all.extend(lat);
        bad += b;
    }
    Ok((secs, all, bad))
}

/// `serve_ingest_batch`: 100-event NDJSON bodies over 16 keep-alive connections to a durable
/// endpoint; each answer only once its events are fsynced (the engine's group commit, across
/// connections: with one request at a time per connection, the rate is bounded by
/// connections x 100 / commit latency). The endpoint's receiver never answers, so the figure
/// is ingest, not delivery.
pub(crate) fn ingest_batch(ctx: &Ctx, id: &str) -> Result<Values, Error> {
    const CONNS: u64 = 16;
    const PER: u64 = 100;
    let requests = ctx.count(5_000); // 500k events (50k quick)
    let per_conn = requests / CONNS;
    let rx = Receiver::start(ReceiverConfig::default().hang())?;
    let dir = DataDir::new(id);
    let srv = server(&dir, &[rx.url()])?;
    let progress = ctx.progress(id, "events", per_conn * CONNS * PER);
    let load = Load {
        addr: srv.local_addr(),
        path: "/v1/events",
        ctype: "application/x-ndjson",
        conns: CONNS,
        per_conn,
        events_per_request: PER,
    };
    let (secs, lat, bad) = drive(
        load,
        move |c, i| ndjson((c * per_conn + i) * PER, PER),
        &progress,
    )?;
    drop(progress);
    let events = per_conn * CONNS * PER;
    let published = srv.dispatcher().stats().published;
    let (p50, p99) = percentiles(lat);
    let _ = std::mem::ManuallyDrop::new(srv); // no drain: the receiver never answers
    let _ = std::mem::ManuallyDrop::new(rx);
    if bad > 0 || published != events {
        return Err(failed(format!(
            "{bad} requests refused; {published} of {events} events published"
        )));
    }
    let mut v = Values::default();
    v.put("events_per_s", events as f64 / secs)
        .put("request_p50_us", p50 as f64)
        .put("request_p99_us", p99 as f64)
        .put("connections", CONNS as f64)
        .put("events", events as f64);
    Ok(v)
}

/// `serve_ingest_1`: one event per request on 16 keep-alive connections, each answered once
/// durable; beside it, the same client against the test kit's receiver (which answers at
/// once, durably nothing): the loopback ceiling of this client on this machine.
pub(crate) fn ingest_1(ctx: &Ctx, id: &str) -> Result<Values, Error> {
    const CONNS: u64 = 16;
    let requests = ctx.count(100_000);
    let per_conn = requests / CONNS;
    let rx = Receiver::start(ReceiverConfig::default().hang())?;
    let dir = DataDir::new(id);
    let srv = server(&dir, &[rx.url()])?;
    let progress = ctx.progress(id, "requests", per_conn * CONNS);
    let body = move |c: u64, i: u64| ndjson(c * per_conn + i, 1);
    let load = Load {
        addr: srv.local_addr(),
        path: "/v1/events",
        ctype: "application/json",
        conns: CONNS,
        per_conn,
        events_per_request: 1,
    };
    let (secs, lat, bad) = drive(load, body, &progress)?;
    drop(progress);
    let published = srv.dispatcher().stats().published;
    let _ = std::mem::ManuallyDrop::new(srv);
    let _ = std::mem::ManuallyDrop::new(rx);
    let events = per_conn * CONNS;
    if bad > 0 || published != events {
        return Err(failed(format!(
            "{bad} requests refused; {published} of {events} events published"
        )));
    }
    let (p50, p99) = percentiles(lat);

    // The ceiling: the same client, the same events (in the envelope the test kit's receiver
    // reads), a receiver that answers at once and stores nothing.
    let ceiling = Receiver::start(ReceiverConfig::default())?;
    let body = move |c: u64, i: u64| {
        let k = c * per_conn + i;
        format!(r#"{{"events":[{{"id":"evt-{k}","action":"push"}}]}}"#).into_bytes()
    };
    let progress = ctx.progress(&format!("{id} ceiling"), "requests", per_conn * CONNS);
    let load = Load {
        addr: ceiling.addr(),
        path: "/",
        ..load
    };
    let (c_secs, c_lat, c_bad) = drive(load, body, &progress)?;
    drop(progress);
    if c_bad > 0 {
        return Err(failed("the loopback receiver refused requests"));
    }
    let (c_p50, c_p99) = percentiles(c_lat);
    let mut v = Values::default();
    v.put("events_per_s", events as f64 / secs)
        .put("p50_ms", p50 as f64 / 1e3)
        .put("p99_ms", p99 as f64 / 1e3)
        .put("ceiling_per_s", events as f64 / c_secs)
        .put("ceiling_p99_ms", c_p99 as f64 / 1e3)
        .put("ceiling_p50_ms", c_p50 as f64 / 1e3)
        .put("events", events as f64);
    Ok(v)
}

/// One event in docker distribution's v1 envelope, indented as a registry sends it.
fn registry_body(k: u64) -> Vec<u8> {
    format!(
        "{{\n   \"events\": [\n      {{\n         \"id\": \"reg-{k}\",\n         \"timestamp\": \"2026-12-02T03:12:20.206154693Z\",\n         \"action\": \"push\",\n         \"target\": {{\n            \"mediaType\": \"application/vnd.docker.distribution.manifest.v2+json\",\n            \"size\": 438,\n            \"digest\": \"sha256:{k:064x}\",\n            \"length\": 438,\n            \"repository\": \"library/app\",\n            \"url\": \"http://registry:5000/v2/library/app/manifests/sha256:{k:064x}\",\n            \"tag\": \"v{k}\"\n         }},\n         \"request\": {{\n            \"id\": \"req-{k}\",\n            \"addr\": \"10.0.0.7:54368\",\n            \"host\": \"registry:5000\",\n            \"method\": \"PUT\",\n            \"useragent\": \"docker/27.0\"\n         }},\n         \"actor\": {{}},\n         \"source\": {{\n            \"addr\": \"registry:5000\",\n            \"instanceID\": \"9f8b69df-a569-4aab-afa0-56f32c181407\"\n         }}\n      }}\n   ]\n}}\n"
    )
    .into_bytes()
}

/// `serve_registry`: a registry-shaped stream (distribution's v1 envelope, one event per
/// request, 4 connections) relayed to 3 durable endpoints, one of which fails every request
/// (503). Nothing may be lost: both healthy receivers get every event; the failing endpoint
/// keeps its backlog on disk (pending), not in memory. Reports the rate and the RSS at the end.
pub(crate) fn registry(ctx: &Ctx, id: &str) -> Result<Values, Error> {
    const CONNS: u64 = 4;
    let requests = ctx.count(1_000_000);
    let per_conn = requests / CONNS;
    let events = per_conn * CONNS;
    let a = Receiver::start(ReceiverConfig::default())?;
    let b = Receiver::start(ReceiverConfig::default())?;
    let down =
        Receiver::start(ReceiverConfig::default().fail_for(Duration::from_secs(86_400), 503))?;
    let dir = DataDir::new(id);
    let srv = server(&dir, &[a.url(), b.url(), down.url()])?;
    let rss_start = vm_kb("VmRSS").unwrap_or(0);
    let progress = ctx.progress(id, "events", events);
    let load = Load {
        addr: srv.local_addr(),
        path: "/v1/registry",
        ctype: "application/vnd.docker.distribution.events.v1+json",
        conns: CONNS,
        per_conn,
        events_per_request: 1,
    };
    let (secs, lat, bad) = drive(load, move |c, i| registry_body(c * per_conn + i), &progress)?;
    drop(progress);
    let deadline = Instant::now() + Duration::from_secs(300);
    while (a.stats().distinct < events || b.stats().distinct < events) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let relayed_s = secs.max(0.0);
    let rss_end = vm_kb("VmRSS").unwrap_or(0);
    let snaps = srv.dispatcher().snapshot();
    let lost = 2 * events - a.stats().distinct.min(events) - b.stats().distinct.min(events);
    let failing_pending = snaps
        .get(2)
        .map_or(0, |s| s.metrics.pending + s.metrics.unread);
    let _ = std::mem::ManuallyDrop::new(srv);
    let (p50, p99) = percentiles(lat);
    if bad > 0 || lost > 0 {
        return Err(failed(format!(
            "{bad} requests refused, {lost} deliveries missing"
        )));
    }
    let mut v = Values::default();
    v.put("ingest_per_s", events as f64 / relayed_s)
        .put("p50_ms", p50 as f64 / 1e3)
        .put("p99_ms", p99 as f64 / 1e3)
        .put("lost", lost as f64)
        .put(
            "duplicates",
            (a.stats().duplicates + b.stats().duplicates) as f64,
        )
        .put("failing_pending", failing_pending as f64)
        .put("rss_start_kb", rss_start as f64)
        .put("rss_end_kb", rss_end as f64)
        .put("events", events as f64);
    Ok(v)
}
