//! The PostgreSQL scale-out scenarios (issue 12): `hookwire serve` nodes sharing the machine's
//! database, as child processes of this binary (`serve --config F --node nI`), fed over
//! plain keep-alive HTTP and delivering to the test kit's receivers in this process.
//!
//! The database is `HOOKWIRE_PG_URL` (default `host=127.0.0.1 port=5432 user=root
//! dbname=test`, as the tests use). Each run has a schema of its own
//! (`hookwire_bench_<id>_<pid>`), which the nodes create and migrate and which is dropped with
//! everything in it when the run ends, failed or not. Without a database the scenarios fail at
//! once and say so.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookwire::Error;
use hookwire::testkit::{Receiver, ReceiverConfig};

use super::durable::DataDir;
use super::serve::{Client, ndjson, percentiles};
use super::{Ctx, Values, failed};

/// Client connections posting (one request at a time each).
const CONNS: u64 = 16;
/// Events per request, and per delivery batch.
const PER: u64 = 100;
/// The lease of every node.
const LEASE_MS: u64 = 2000;

/// The database's connection string.
fn pg_url() -> String {
    std::env::var("HOOKWIRE_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=root dbname=test".into())
}

/// The 1-minute load average now (`/proc/loadavg`), reported beside every figure: the
/// machine is shared, and a figure taken under load says so.
fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A schema of the run's own: the nodes create it; dropped (cascade) when this is dropped.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    /// Checks that the database answers and picks a fresh name (any leftover of an earlier
    /// run with the same name is dropped first).
    fn new(id: &str) -> Result<Schema, Error> {
        let url = pg_url();
        let mut c = postgres::Client::connect(&url, postgres::NoTls).map_err(|e| {
            failed(format!(
                "no PostgreSQL at {url:?} ({e}): the pg_* scenarios need one \
                 (set HOOKWIRE_PG_URL)"
            ))
        })?;
        let name = format!("hookwire_bench_{id}_{}", std::process::id());
        c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
            .map_err(|e| failed(format!("{url}: {e}")))?;
        Ok(Schema { url, name })
    }

    /// One `bigint` from `sql` (`{s}` stands for the quoted schema).
    fn scalar(&self, sql: &str) -> Result<i64, Error> {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls)
            .map_err(|e| failed(e.to_string()))?;
        let sql = sql.replace("{s}", &format!("\"{}\"", self.name));
        c.query_one(&sql, &[])
            .map(|r| r.get(0))
            .map_err(|e| failed(format!("{sql}: {e}")))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let r = postgres::Client::connect(&self.url, postgres::NoTls).and_then(|mut c| {
            c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name))
        });
        if let Err(e) = r {
            eprintln!(
                "hookwire bench: could not drop schema {} ({e}): drop it by hand",
                self.name
            );
        }
    }
}

/// Writes the nodes' config: the database, the schema, a lease of `LEASE_MS`, and one durable
/// endpoint per `(name, url)`, batches of `PER` events.
fn write_config(
    dir: &Path,
    schema: &Schema,
    endpoints: &[(&str, String)],
) -> Result<PathBuf, Error> {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = \"{}\"\nschema = \"{}\"\nlease_ms = {LEASE_MS}\n\
         \n[limits]\ndedup_window = 100000\n",
        schema.url, schema.name
    );
    for (name, url) in endpoints {
        text.push_str(&format!(
            "\n[[endpoint]]\nname = \"{name}\"\nurl = \"{url}\"\nallow_private = true\n\
             batch = {{ max_events = {PER} }}\n"
        ));
    }
    std::fs::create_dir_all(dir)?;
    let path = dir.join("node.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A `hookwire serve` node (this binary), killed with SIGKILL when dropped.
struct Node {
    name: String,
    child: Child,
    addr: SocketAddr,
    /// What it wrote on stderr (the last 64 KiB), for failure messages.
    log: Arc<Mutex<String>>,
}

impl Node {
    /// Starts `hookwire serve --config CONFIG --node NAME` and waits for its address.
    fn start(config: &Path, name: &str) -> Result<Node, Error> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--node", name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let log = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                    s.push_str(&line);
                    s.push('\n');
                    if s.len() > 64 << 10 {
                        let cut = s.len() - (32 << 10);
                        let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                        s.drain(..cut);
                    }
                }
            });
        }
        let mut out = BufReader::new(child.stdout.take().ok_or_else(|| failed("no stdout"))?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let addr = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["listening"].as_str()?.parse().ok());
        let mut node = Node {
            name: name.to_string(),
            child,
            addr: "127.0.0.1:0".parse().expect("an address"),
            log,
        };
        let Some(addr) = addr else {
            let _ = node.child.kill();
            let _ = node.child.wait();
            std::thread::sleep(Duration::from_millis(100));
            return Err(failed(format!(
                "node {name} did not start (stdout {line:?}): {}",
                node.log()
            )));
        };
        node.addr = addr;
        // Keep draining stdout so the node never blocks on it.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut out, &mut std::io::sink());
        });
        Ok(node)
    }

    /// What the node wrote on stderr lately.
    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `kill -9` and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A GET with `Connection: close`; the body of a 200, else `None` (2 s timeouts).
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1)? == "200").then(|| body.to_string())
}

/// A POST with an empty body and `Connection: close` (the admin API); whether it was 200.
fn admin(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut out = String::new();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .is_ok()
        && s.read_to_string(&mut out).is_ok()
        && out.split(' ').nth(1) == Some("200")
}

/// Each endpoint's lease holder, as `addr`'s `/v1/endpoints` shows it.
fn holders(addr: SocketAddr) -> Option<Vec<(String, Option<String>)>> {
    let v: serde_json::Value = serde_json::from_str(&get(addr, "/v1/endpoints")?).ok()?;
    Some(
        v["endpoints"]
            .as_array()?
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or("").to_string(),
                    e["lease"]["owner"].as_str().map(str::to_string),
                )
            })
            .collect(),
    )
}

/// Waits (at most 60 s) until all `endpoints` are held and spread over `nodes` nodes (as
/// many owners as there can be); returns the holders.
fn wait_spread(
    addr: SocketAddr,
    endpoints: usize,
    nodes: usize,
) -> Result<Vec<(String, Option<String>)>, Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(h) = holders(addr) {
            let mut owners: Vec<_> = h.iter().filter_map(|(_, o)| o.clone()).collect();
            let all_held = owners.len() == endpoints && h.len() == endpoints;
            owners.sort();
            owners.dedup();
            if all_held && owners.len() == nodes.min(endpoints) {
                return Ok(h);
            }
            last = Some(h);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(failed(format!(
        "the endpoints did not spread over the {nodes} nodes within 60 s: {last:?}"
    )))
}

/// Posts `per_conn` bodies of `PER` events (`evt-K`, K unique from `base` on) on each of `CONNS` keep-alive
/// connections, connection `c` to `addrs[c % len]`; returns (seconds, latencies in us,
/// non-2xx answers).
fn post_all(
    addrs: &[SocketAddr],
    base: u64,
    per_conn: u64,
    progress: &super::progress::Progress,
) -> Result<(f64, Vec<u64>, u64), Error> {
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..CONNS)
        .map(|c| {
            let addr = addrs[c as usize % addrs.len()];
            let done = done.clone();
            std::thread::spawn(move || -> Result<(Vec<u64>, u64), Error> {
                let mut client = Client::connect(addr)?;
                let mut lat = Vec::with_capacity(per_conn as usize);
                let mut bad = 0;
                for i in 0..per_conn {
                    let body = ndjson(base + (c * per_conn + i) * PER, PER);
                    let t = Instant::now();
                    let status = client.post("/v1/events", "application/x-ndjson", &body)?;
                    lat.push(t.elapsed().as_micros() as u64);
                    if !(200..300).contains(&status) {
                        bad += 1;
                    }
                    done.fetch_add(PER, Ordering::Relaxed);
                }
                Ok((lat, bad))
            })
        })
        .collect();
    while handles.iter().any(|h| !h.is_finished()) {
        progress.set(done.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(20));
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

/// `pg_ingest`: one node with a database; 100-event NDJSON bodies on 16 keep-alive
/// connections, each answered 2xx only once its events are committed in the events table.
/// The one endpoint's receiver never answers, so the figure is ingest, not delivery. Checks
/// that the events table holds every event.
pub(crate) fn ingest(ctx: &Ctx, id: &str) -> Result<Values, Error> {
    let load = load1();
    let schema = Schema::new(id)?;
    let dir = DataDir::new(id);
    let rx = Receiver::start(ReceiverConfig::default().hang())?;
    let config = write_config(&dir.0, &schema, &[("sink", rx.url())])?;
    let node = Node::start(&config, "n1")?;
    wait_spread(node.addr, 1, 1)?;
    let per_conn = ctx.count(5_000) / CONNS; // 500k events (50k quick)
    let events = per_conn * CONNS * PER;
    let progress = ctx.progress(id, "events", events);
    let (secs, lat, bad) = post_all(&[node.addr], 0, per_conn, &progress)?;
    drop(progress);
    let stored = schema.scalar("SELECT count(*) FROM {s}.events")?;
    if bad > 0 || stored != events as i64 {
        return Err(failed(format!(
            "{bad} requests refused; {stored} of {events} events in the table; node log: {}",
            node.log()
        )));
    }
    drop(node);
    rx.shutdown();
    let (p50, p99) = percentiles(lat);
    let mut v = Values::default();
    v.put("events_per_s", events as f64 / secs)
        .put("request_p50_us", p50 as f64)
        .put("request_p99_us", p99 as f64)
        .put("connections", CONNS as f64)
        .put("events", events as f64)
        .put("load1", load);
    Ok(v)
}

/// `pg_e2e_N`: `nodes` nodes share 3 endpoints (batches of 100) through the database; 16
/// keep-alive connections spread over the nodes post 100-event bodies while the nodes deliver
/// (concurrent load). Timed from the first post to the last delivery each receiver counts;
/// every event must reach every endpoint.
///
/// Then, to tell delivery's own rate from ingest's, a second phase preloads as many new
/// events with every endpoint disabled on every node (`POST /v1/endpoints/NAME/disable`),
/// enables them, and times the drain (`drain_per_s`: deliveries/s, all endpoints).
pub(crate) fn e2e(ctx: &Ctx, id: &str, nodes: usize) -> Result<Values, Error> {
    const ENDPOINTS: usize = 3;
    let load = load1();
    let schema = Schema::new(id)?;
    let dir = DataDir::new(id);
    let rx: Vec<Receiver> = (0..ENDPOINTS)
        .map(|_| Receiver::start(ReceiverConfig::default()))
        .collect::<Result<_, _>>()?;
    let names = ["ep0", "ep1", "ep2"];
    let eps: Vec<(&str, String)> = names.iter().zip(&rx).map(|(n, r)| (*n, r.url())).collect();
    let config = write_config(&dir.0, &schema, &eps)?;
    let mut ns = Vec::new();
    for i in 1..=nodes {
        ns.push(Node::start(&config, &format!("n{i}"))?);
    }
    let spread = wait_spread(ns[0].addr, ENDPOINTS, nodes)?;
    let addrs: Vec<SocketAddr> = ns.iter().map(|n| n.addr).collect();
    let per_conn = ctx.count(2_000) / CONNS; // 200k events (20k quick), to each of 3 endpoints
    let events = per_conn * CONNS * PER;
    let progress = ctx.progress(id, "events posted", events);
    let t0 = Instant::now();
    let (posted, finished) = std::thread::scope(|s| {
        let waiters: Vec<_> = rx
            .iter()
            .map(|r| {
                s.spawn(move || {
                    let ok = r.wait_for_distinct(events, Duration::from_secs(300));
                    (ok, t0.elapsed().as_secs_f64())
                })
            })
            .collect();
        let posted = post_all(&addrs, 0, per_conn, &progress);
        let post_end = t0.elapsed().as_secs_f64();
        let finished: Vec<(bool, f64)> = waiters
            .into_iter()
            .map(|w| w.join().unwrap_or((false, f64::NAN)))
            .collect();
        (posted.map(|p| (p, post_end)), finished)
    });
    drop(progress);
    let ((_, lat, bad), post_s) = posted?;
    let stats: Vec<_> = rx.iter().map(Receiver::stats).collect();
    let lost: u64 = stats.iter().map(|s| events - s.distinct.min(events)).sum();
    if bad > 0 || lost > 0 || finished.iter().any(|(ok, _)| !ok) {
        let logs: Vec<String> = ns
            .iter()
            .map(|n| format!("{}: {}", n.name, n.log()))
            .collect();
        return Err(failed(format!(
            "{bad} requests refused, {lost} deliveries missing; leases {spread:?}; logs: {}",
            logs.join(" | ")
        )));
    }
    let total_s = finished.iter().map(|(_, t)| *t).fold(0.0, f64::max);

    // Preload, then drain.
    let toggle = |what: &str| -> Result<(), Error> {
        for n in &ns {
            for name in names {
                if !admin(n.addr, &format!("/v1/endpoints/{name}/{what}")) {
                    return Err(failed(format!("{what} {name} on {} failed", n.name)));
                }
            }
        }
        Ok(())
    };
    toggle("disable")?;
    let progress = ctx.progress(&format!("{id} preload"), "events posted", events);
    let (_, _, bad) = post_all(&addrs, events, per_conn, &progress)?;
    drop(progress);
    if bad > 0 {
        return Err(failed(format!("{bad} preload requests refused")));
    }
    let t1 = Instant::now();
    toggle("enable")?;
    let drained = rx
        .iter()
        .all(|r| r.wait_for_distinct(2 * events, Duration::from_secs(300)));
    let drain_s = t1.elapsed().as_secs_f64();
    let stats: Vec<_> = rx.iter().map(Receiver::stats).collect();
    let lost: u64 = stats
        .iter()
        .map(|s| 2 * events - s.distinct.min(2 * events))
        .sum();
    let duplicates: u64 = stats.iter().map(|s| s.duplicates).sum();
    if !drained || lost > 0 {
        return Err(failed(format!(
            "{lost} deliveries missing after the preload drained"
        )));
    }
    drop(ns);
    let (_, p99) = percentiles(lat);
    let mut v = Values::default();
    v.put(
        "delivered_per_s",
        (events * ENDPOINTS as u64) as f64 / total_s,
    )
    .put("events_per_s", events as f64 / total_s);
    for (i, key) in ["ep0_per_s", "ep1_per_s", "ep2_per_s"]
        .into_iter()
        .enumerate()
    {
        v.put(key, events as f64 / finished[i].1);
    }
    v.put("ingest_per_s", events as f64 / post_s)
        .put("ingest_p99_ms", p99 as f64 / 1e3)
        .put("drain_after_last_post_s", total_s - post_s)
        .put("drain_per_s", (events * ENDPOINTS as u64) as f64 / drain_s)
        .put("lost", lost as f64)
        .put("duplicates", duplicates as f64)
        .put("nodes", nodes as f64)
        .put("events", events as f64)
        .put("load1", load);
    Ok(v)
}

/// `pg_takeover`: 2 nodes, 2 endpoints (one each), a lease of 2 s, a trickle of events (10
/// every 20 ms, posted to the node that survives). `kill -9` of the node delivering `alpha`;
/// then the survivor's `/v1/endpoints` is polled every 10 ms until it shows itself holding
/// `alpha` (the takeover), and alpha's receiver until an event posted after the kill arrives
/// (the dead node never had it: the survivor's first delivery). Nothing may be lost.
pub(crate) fn takeover(_ctx: &Ctx, id: &str) -> Result<Values, Error> {
    let load = load1();
    let schema = Schema::new(id)?;
    let dir = DataDir::new(id);
    let alpha = Receiver::start(ReceiverConfig::default())?;
    let beta = Receiver::start(ReceiverConfig::default())?;
    let config = write_config(
        &dir.0,
        &schema,
        &[("alpha", alpha.url()), ("beta", beta.url())],
    )?;
    let mut ns = vec![Node::start(&config, "n1")?, Node::start(&config, "n2")?];
    let spread = wait_spread(ns[0].addr, 2, 2)?;
    let victim_name = spread
        .iter()
        .find(|(e, _)| e == "alpha")
        .and_then(|(_, o)| o.clone())
        .ok_or_else(|| failed(format!("alpha is not held: {spread:?}")))?;
    let v = ns
        .iter()
        .position(|n| n.name == victim_name)
        .ok_or_else(|| failed(format!("alpha held by an unknown node: {spread:?}")))?;
    let survivor = ns[1 - v].addr;
    let survivor_name = ns[1 - v].name.clone();

    // The trickle: `pre-K` before the kill, `post-K` after.
    let stop = Arc::new(AtomicBool::new(false));
    let after = Arc::new(AtomicBool::new(false));
    let trickle = {
        let (stop, after) = (stop.clone(), after.clone());
        std::thread::spawn(move || -> Result<u64, Error> {
            let mut client = Client::connect(survivor)?;
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tag = if after.load(Ordering::Relaxed) {
                    "post"
                } else {
                    "pre"
                };
                let mut body = Vec::new();
                for _ in 0..10 {
                    writeln!(body, r#"{{"id":"{tag}-{k}","action":"push"}}"#)?;
                    k += 1;
                }
                let status = client.post("/v1/events", "application/x-ndjson", &body)?;
                if !(200..300).contains(&status) {
                    return Err(failed(format!("the survivor answered {status}")));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(k)
        })
    };
    // Let the victim deliver alpha for a second.
    std::thread::sleep(Duration::from_secs(1));
    let before = alpha.stats().distinct;
    if before == 0 {
        return Err(failed("alpha received nothing before the kill"));
    }
    let seen = alpha.ids().len();
    ns[v].kill();
    let killed = Instant::now();
    after.store(true, Ordering::Relaxed);
    let mut taken = None;
    let mut first = None;
    let mut scanned = seen;
    while (taken.is_none() || first.is_none()) && killed.elapsed() < Duration::from_secs(30) {
        if taken.is_none()
            && let Some(h) = holders(survivor)
            && h.iter()
                .any(|(e, o)| e == "alpha" && o.as_deref() == Some(&*survivor_name))
        {
            taken = Some(killed.elapsed().as_secs_f64());
        }
        if first.is_none() {
            let ids = alpha.ids();
            if ids[scanned..].iter().any(|i| i.starts_with("post-")) {
                first = Some(killed.elapsed().as_secs_f64());
            }
            scanned = ids.len();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let total = trickle
        .join()
        .map_err(|_| failed("the trickle thread panicked"))??;
    let (Some(taken), Some(first)) = (taken, first) else {
        return Err(failed(format!(
            "no takeover within 30 s (taken {taken:?}, first delivery {first:?}); \
             survivor log: {}",
            ns[1 - v].log()
        )));
    };
    let all = alpha.wait_for_distinct(total, Duration::from_secs(30))
        && beta.wait_for_distinct(total, Duration::from_secs(30));
    let (a, b) = (alpha.stats(), beta.stats());
    let lost = (total - a.distinct.min(total)) + (total - b.distinct.min(total));
    if !all || lost > 0 {
        return Err(failed(format!(
            "{lost} deliveries missing after the takeover"
        )));
    }
    drop(ns);
    let mut v = Values::default();
    v.put("takeover_s", taken)
        .put("first_delivery_s", first)
        .put("lease_s", LEASE_MS as f64 / 1e3)
        .put("lost", lost as f64)
        .put("duplicates", (a.duplicates + b.duplicates) as f64)
        .put("events", total as f64)
        .put("load1", load);
    Ok(v)
}
