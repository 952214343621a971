//! Faults of a `hookwire serve` cluster (issue 12): real processes on the machine's
//! PostgreSQL (a schema per run, dropped), loopback receivers.
//!
//! - A node paused (SIGSTOP) past its lease is fenced: once resumed it sends nothing, and
//!   after the other node took the endpoint over the two never interleave.
//! - The database unreachable for a while (a TCP proxy the test cuts): health and ingest say
//!   503, nothing acknowledged is lost, and everything comes back when it is restored.
//!
//! Every wait is a safety net, not a timing assertion. Without a database the tests say
//! SKIPPED (`.ci/run` sets `HOOKWIRE_REQUIRE_PG=1`, so there they cannot skip).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::TempDir;
use common::cluster::{Schema, holders, http, node, pg_url, wait_until, write_config};
use common::proxy::Proxy;
use common::recorder::Recorder;
use hookwire::testkit::{Receiver, ReceiverConfig};

const LEASE_MS: u64 = 2000;
const LEASE: Duration = Duration::from_millis(LEASE_MS);

/// Four nodes and their database on a small machine: one test at a time, so a pause or a cut
/// is the only fault each sees.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// One post of one event, as the test saw it.
#[derive(Debug, Clone)]
struct Posted {
    id: String,
    /// Which node it went to (index).
    node: usize,
    sent: Instant,
    answered: Instant,
    /// `None`: no answer (unreachable, or no answer within 5 s).
    status: Option<u16>,
    body: String,
}

/// Posts events `e0`, `e1`, ... one per request, in order, and keeps what each got.
#[derive(Default)]
struct Poster {
    next: usize,
    log: Vec<Posted>,
}

impl Poster {
    /// Posts event `id` to node `i` at `addr`.
    fn post_id(&mut self, i: usize, addr: SocketAddr, id: String) -> &Posted {
        let body = format!("{{\"id\":\"{id}\",\"action\":\"push\"}}\n");
        let sent = Instant::now();
        let answer = http(addr, "POST", "/v1/events", body.as_bytes());
        self.log.push(Posted {
            id,
            node: i,
            sent,
            answered: Instant::now(),
            status: answer.as_ref().map(|a| a.0),
            body: answer.map(|a| a.1).unwrap_or_default(),
        });
        self.log.last().unwrap()
    }

    /// Posts the next event to node `i` at `addr`.
    fn post(&mut self, i: usize, addr: SocketAddr) -> &Posted {
        let id = format!("e{}", self.next);
        self.next += 1;
        self.post_id(i, addr, id)
    }

    /// Posts to the nodes `to` in turn, every 20 ms, for `how_long`.
    fn for_a_while(&mut self, to: &[(usize, SocketAddr)], how_long: Duration) {
        let until = Instant::now() + how_long;
        let mut k = 0;
        while Instant::now() < until {
            let (i, addr) = to[k % to.len()];
            self.post(i, addr);
            k += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The ids acknowledged (200), in the order their acknowledgements came; an id
    /// acknowledged twice counts at its first.
    fn acked(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.log
            .iter()
            .filter(|p| p.status == Some(200) && seen.insert(p.id.clone()))
            .map(|p| p.id.clone())
            .collect()
    }
}

/// The status of `GET path` on `addr` (`None`: no answer).
fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    http(addr, "GET", path, b"").map(|a| a.0)
}

/// Issue 12: a node paused (SIGSTOP) while it delivers, for more than two leases, and then
/// resumed. The other node takes the endpoint over and delivers; the resumed node notices its
/// lease lapsed and sends nothing more (fencing); every acknowledged event arrives.
#[test]
fn a_node_paused_past_its_lease_is_fenced_when_it_resumes() {
    let _serial = one_at_a_time();
    let Some(schema) = Schema::new("a_node_paused_past_its_lease_is_fenced_when_it_resumes") else {
        return;
    };
    let dir = TempDir::new("serve-cluster-sigstop");
    // Each answer takes 50 ms: the delivering node always has a request out and a backlog
    // when it is paused, so it has something to send the moment it resumes.
    let rx = Recorder::with_delay(Duration::from_millis(50));
    // The same endpoint on both nodes; only its `x-node` header tells them apart.
    let names = ["n1", "n2"];
    let configs: Vec<_> = names
        .iter()
        .map(|n| {
            let path = dir.path().join(format!("{n}.toml"));
            let header = format!("headers = {{ \"x-node\" = \"{n}\" }}");
            write_config(
                &path,
                &pg_url(),
                &schema,
                LEASE_MS,
                &[("ep", rx.url(), &header)],
            );
            path
        })
        .collect();
    let nodes = [node(&configs[0], names[0]), node(&configs[1], names[1])];
    let addrs = [nodes[0].addr, nodes[1].addr];
    let both = [(0, addrs[0]), (1, addrs[1])];
    wait_until(Duration::from_secs(30), || {
        holders(addrs[0])?.first()?.1.clone()
    })
    .expect("ep held");

    let mut poster = Poster::default();
    poster.for_a_while(&both, Duration::from_secs(1));
    // Pause the node that delivers `ep`, while events flow.
    let owner = holders(addrs[0]).unwrap()[0].1.clone().unwrap();
    let old = names.iter().position(|n| *n == owner).unwrap();
    let new = 1 - old;
    let stopped_at = Instant::now();
    nodes[old].signal("STOP");
    eprintln!("{owner} stopped");

    // Only the other node takes posts now, until it holds the lease and has delivered.
    let deadline = Instant::now() + Duration::from_secs(30);
    let took_over = loop {
        poster.post(new, addrs[new]);
        let first = rx
            .arrivals()
            .into_iter()
            .find(|a| a.at > stopped_at && a.node.as_deref() == Some(names[new]));
        if let Some(a) = first
            && holders(addrs[new]).and_then(|h| h[0].1.clone()).as_deref() == Some(names[new])
        {
            break a.at;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not take ep over",
            names[new]
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Well past two leases, then resume the paused node; posts go to both again.
    let resume_at = stopped_at + 2 * LEASE + Duration::from_secs(1);
    poster.for_a_while(
        &[(new, addrs[new])],
        resume_at.saturating_duration_since(Instant::now()),
    );
    let resumed_at = Instant::now();
    nodes[old].signal("CONT");
    eprintln!("{owner} resumed");
    poster.for_a_while(&both, Duration::from_secs(2));

    // (a) Every acknowledged event arrives.
    let acked = poster.acked();
    let refused = poster.log.len() - acked.len();
    let all = wait_until(Duration::from_secs(30), || {
        let got = rx.ids();
        acked.iter().all(|id| got.contains(id)).then_some(())
    });
    let got = rx.ids();
    let missing: Vec<_> = acked.iter().filter(|id| !got.contains(*id)).collect();
    assert!(all.is_some(), "acknowledged but never arrived: {missing:?}");

    let arrivals = rx.arrivals();
    let from = |n: usize| {
        arrivals
            .iter()
            .filter(move |a| a.node.as_deref() == Some(names[n]))
    };
    // (b) Fencing: nothing from the paused node once it was resumed.
    let late: Vec<_> = from(old).filter(|a| a.at >= resumed_at).collect();
    assert!(
        late.is_empty(),
        "{owner} sent {} requests after it was resumed (at {:?} after the resume): {late:?}",
        late.len(),
        late.iter()
            .map(|a| a.at.duration_since(resumed_at))
            .collect::<Vec<_>>()
    );
    // (c) No interleaving: once the new holder's first request arrived, nothing from the old.
    let after: Vec<_> = from(old).filter(|a| a.at >= took_over).collect();
    assert!(
        after.is_empty(),
        "{owner} sent {} requests after {} took over: {after:?}",
        after.len(),
        names[new]
    );
    // (d) The resumed node sees the other one holding the lease.
    let seen = wait_until(Duration::from_secs(10), || {
        let o = holders(addrs[old])?[0].1.clone()?;
        (o == names[new]).then_some(o)
    });
    assert_eq!(
        seen.as_deref(),
        Some(names[new]),
        "{owner}'s /v1/endpoints: {:?}",
        holders(addrs[old])
    );
    // What the paused node held when it noticed, handed back (`dropped`: `handed_over`).
    let dropped = http(addrs[old], "GET", "/v1/endpoints", b"")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .map(|v| v["endpoints"][0]["dropped"].clone());
    eprintln!(
        "{} requests from {owner}, {} from {}; {} acknowledged, {refused} not; takeover: first \
         request from {} {:?} after the pause ({LEASE_MS} ms lease); {owner} handed back \
         {dropped:?}",
        from(old).count(),
        from(new).count(),
        names[new],
        acked.len(),
        names[new],
        took_over.duration_since(stopped_at),
    );
}

/// The database's address, from `pg_url()` (`host=` must be an IP address).
fn pg_addr() -> SocketAddr {
    let url = pg_url();
    let get = |k: &str| {
        url.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k))
            .map(str::to_string)
    };
    let host = get("host=").unwrap_or_else(|| "127.0.0.1".into());
    let port = get("port=").unwrap_or_else(|| "5432".into());
    format!("{host}:{port}")
        .parse()
        .expect("HOOKWIRE_PG_URL names the host by IP address")
}

/// `pg_url()` through `proxy`.
fn via(proxy: SocketAddr) -> String {
    let mut url = format!("host=127.0.0.1 port={}", proxy.port());
    for kv in pg_url().split_whitespace() {
        if !kv.starts_with("host=") && !kv.starts_with("port=") {
            url.push(' ');
            url.push_str(kv);
        }
    }
    url
}

/// Issue 12: the database unreachable for about 5 s (every connection to it closed, new ones
/// refused) under two nodes and two endpoints. While it is: `/healthz` turns 503 and ingest
/// answers 503, never 200. Once it is back: `/healthz` and ingest 200 again, every event
/// acknowledged arrives at both endpoints, first arrivals in acknowledged order, and an event
/// refused while it was away arrives once posted again.
#[test]
fn the_database_unreachable_for_a_while_refuses_ingest_and_loses_nothing() {
    let _serial = one_at_a_time();
    let Some(schema) =
        Schema::new("the_database_unreachable_for_a_while_refuses_ingest_and_loses_nothing")
    else {
        return;
    };
    let dir = TempDir::new("serve-cluster-db-cut");
    let proxy = Proxy::start(pg_addr());
    let rx: Vec<Receiver> = (0..2)
        .map(|_| Receiver::start(ReceiverConfig::default()).unwrap())
        .collect();
    let config = dir.path().join("node.toml");
    write_config(
        &config,
        &via(proxy.addr()),
        &schema,
        LEASE_MS,
        &[("alpha", rx[0].url(), ""), ("beta", rx[1].url(), "")],
    );
    let nodes = [node(&config, "n1"), node(&config, "n2")];
    let addrs = [nodes[0].addr, nodes[1].addr];
    let both = [(0, addrs[0]), (1, addrs[1])];
    wait_until(Duration::from_secs(30), || {
        let h = holders(addrs[0])?;
        let owners: HashSet<_> = h.iter().filter_map(|(_, o)| o.clone()).collect();
        (h.len() == 2 && owners.len() == 2).then_some(())
    })
    .expect("one endpoint per node");

    let mut poster = Poster::default();
    poster.for_a_while(&both, Duration::from_millis(1500));
    let before: Vec<_> = poster
        .log
        .iter()
        .filter(|p| p.status != Some(200))
        .collect();
    assert!(before.is_empty(), "refused before the cut: {before:?}");
    let before = poster.log.len();

    // Cut for about 5 s: posts go on, and each node's /healthz is watched.
    let cut_at = Instant::now();
    proxy.cut();
    let mut unhealthy_at: [Option<Instant>; 2] = [None, None];
    let mut k = 0;
    while Instant::now() < cut_at + Duration::from_secs(5)
        || unhealthy_at.iter().any(Option::is_none)
    {
        assert!(
            cut_at.elapsed() < Duration::from_secs(30),
            "/healthz still 200 {:?} into the cut: {unhealthy_at:?}",
            cut_at.elapsed()
        );
        let (i, addr) = both[k % 2];
        k += 1;
        poster.post(i, addr);
        for (j, &a) in addrs.iter().enumerate() {
            if unhealthy_at[j].is_none() && get(a, "/healthz") == Some(503) {
                unhealthy_at[j] = Some(Instant::now());
                assert_eq!(get(a, "/readyz"), Some(503), "node {j}'s /readyz");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let restored_at = Instant::now();
    proxy.restore();
    let during: Vec<Posted> = poster.log[before..].to_vec();

    // Back: /healthz 200 on both, then ingest 200 on both.
    let mut healthy_at: [Option<Instant>; 2] = [None, None];
    for (j, &a) in addrs.iter().enumerate() {
        healthy_at[j] = wait_until(Duration::from_secs(30), || {
            (get(a, "/healthz") == Some(200)).then(Instant::now)
        });
        assert!(healthy_at[j].is_some(), "node {j}'s /healthz stays 503");
    }
    for &(i, a) in &both {
        let ok = wait_until(Duration::from_secs(30), || {
            (poster.post(i, a).status == Some(200)).then_some(())
        });
        assert!(ok.is_some(), "node {i}'s ingest stays refused");
    }
    poster.for_a_while(&both, Duration::from_secs(1));
    // An event refused while the database was away arrives once posted again.
    let refused = during
        .iter()
        .find(|p| p.status == Some(503) && p.body.contains("unreachable"))
        .expect("an event refused for the unreachable database")
        .clone();
    let again = wait_until(Duration::from_secs(30), || {
        (poster
            .post_id(refused.node, addrs[refused.node], refused.id.clone())
            .status
            == Some(200))
        .then_some(())
    });
    assert!(again.is_some(), "{} refused after the restore", refused.id);

    // While cut: never a 200; 503s (the database is unreachable) once /healthz said so.
    let ok_while_cut: Vec<_> = during
        .iter()
        .filter(|p| p.status == Some(200) && p.answered < restored_at)
        .collect();
    assert!(ok_while_cut.is_empty(), "200 while cut: {ok_while_cut:?}");
    for p in &during {
        if unhealthy_at[p.node].is_some_and(|t| p.sent > t) && p.answered < restored_at {
            assert_eq!(p.status, Some(503), "after /healthz said 503: {p:?}");
        }
    }
    let statuses: HashMap<Option<u16>, usize> = during.iter().fold(HashMap::new(), |mut m, p| {
        *m.entry(p.status).or_default() += 1;
        m
    });

    // Every acknowledged event arrives at both endpoints, first arrivals in acknowledged
    // order.
    let acked = poster.acked();
    assert!(acked.contains(&refused.id));
    let rank: HashMap<&str, usize> = acked
        .iter()
        .enumerate()
        .map(|(k, id)| (id.as_str(), k))
        .collect();
    for (r, name) in rx.iter().zip(["alpha", "beta"]) {
        let all = wait_until(Duration::from_secs(60), || {
            let got: HashSet<String> = r.ids().into_iter().collect();
            acked.iter().all(|id| got.contains(id)).then_some(())
        });
        let got: HashSet<String> = r.ids().into_iter().collect();
        let missing: Vec<_> = acked.iter().filter(|id| !got.contains(*id)).collect();
        assert!(
            all.is_some(),
            "{name}: acknowledged, never arrived: {missing:?}"
        );
        let mut seen = HashSet::new();
        let order: Vec<usize> = r
            .ids()
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .filter_map(|id| rank.get(id.as_str()).copied())
            .collect();
        let wrong: Vec<_> = order.windows(2).filter(|w| w[0] > w[1]).collect();
        assert!(
            wrong.is_empty(),
            "{name}: first arrivals out of order: {wrong:?}"
        );
        eprintln!(
            "{name}: {} acknowledged arrived, {} duplicates",
            acked.len(),
            r.stats().duplicates
        );
    }
    eprintln!(
        "cut {:?}; /healthz 503 after {:?}; 200 again {:?} after the restore; posts while \
         cut: {statuses:?}",
        restored_at.duration_since(cut_at),
        unhealthy_at.map(|t| t.map(|t| t.duration_since(cut_at))),
        healthy_at.map(|t| t.map(|t| t.duration_since(restored_at))),
    );
}
