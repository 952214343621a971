//! Endpoint leases: which node delivers which endpoint (filled in by the lease manager).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::PgConfig;
use crate::Error;
use crate::engine::LeaseBoard;

/// The leases this node holds, as the store's cursor saves see them: a cursor is saved only
/// for an endpoint whose lease this node holds, and only while the database still says so
/// (owner and epoch match and it has not expired), so a node that lost a lease cannot move a
/// cursor the new holder owns.
#[derive(Debug)]
pub struct Fence {
    node: String,
    held: Mutex<HashMap<String, u64>>,
}

impl Fence {
    /// An empty fence for the node called `node`.
    pub fn new(node: impl Into<String>) -> Arc<Fence> {
        Arc::new(Fence {
            node: node.into(),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The node's name (the lease owner it writes).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The epoch of this node's lease on `endpoint`, if it holds one.
    pub fn epoch(&self, endpoint: &str) -> Option<u64> {
        self.held.lock().get(endpoint).copied()
    }

    /// Records that this node holds `endpoint` at `epoch` (`None`: no longer).
    pub fn set(&self, endpoint: &str, epoch: Option<u64>) {
        let mut held = self.held.lock();
        match epoch {
            Some(e) => {
                held.insert(endpoint.to_string(), e);
            }
            None => {
                held.remove(endpoint);
            }
        }
    }
}

/// One endpoint's lease as the database has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Lease {
    /// The endpoint's name.
    pub endpoint: String,
    /// The node that holds it (`None`: free).
    pub owner: Option<String>,
    /// How many times it has been taken (a new holder takes the next epoch).
    pub epoch: u64,
    /// Milliseconds until it expires, by the database's clock (negative: expired).
    pub expires_in_ms: Option<i64>,
}

/// What the lease manager last saw of the cluster.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[non_exhaustive]
pub struct ClusterView {
    /// This node's name.
    pub node: String,
    /// The database answered the last round, in time to renew this node's leases.
    pub healthy: bool,
    /// The last error, if the last round failed.
    pub error: Option<String>,
    /// The live nodes (their heartbeat has not expired), by name.
    pub nodes: Vec<String>,
    /// Every endpoint's lease.
    pub leases: Vec<Lease>,
    /// The endpoints this node delivers now.
    pub held: Vec<String>,
}

/// How the lease manager runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseOptions {
    /// This node's name: unique among the nodes sharing the schema (a restarted node may
    /// reuse its name). Default: `<hostname>-<pid>`.
    pub node: String,
    /// How long a lease lasts without renewal. A dead node's endpoints are taken over after
    /// this (plus at most a quarter of it). Leases are renewed every quarter of it; a node
    /// that could not renew stops delivering half-way through it. Default 10 s; 1 s to 1 h.
    pub ttl: Duration,
}

impl LeaseOptions {
    /// The defaults, for the node called `node`.
    pub fn new(node: impl Into<String>) -> Self {
        LeaseOptions {
            node: node.into(),
            ttl: Duration::from_secs(10),
        }
    }

    /// A node name from this machine's host name and the process id.
    pub fn default_node() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into());
        format!("{host}-{}", std::process::id())
    }
}

struct State {
    stop: bool,
    endpoints: Vec<String>,
    view: ClusterView,
    last_ok: Option<Instant>,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
}

/// Takes, renews and gives up endpoint leases in the shared database for this node, and
/// tells the engine ([`LeaseBoard`]) and the store's cursor saves ([`Fence`]) what it holds.
///
/// One thread with one connection. Every quarter of the lease time it heartbeats this node,
/// renews the leases it holds, takes free or expired ones up to its fair share (the endpoints
/// divided by the live nodes, rounded up) and gives back what is over it (revoked here first,
/// released in the database one round later, so its requests have stopped before another
/// node may start). Between rounds it listens for the stores' commit notifications (`LISTEN`)
/// and moves the engine's view of the log forward, so idle nodes do not poll the events.
pub struct LeaseManager {
    inner: Arc<Inner>,
    ttl: Duration,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for LeaseManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseManager")
            .field("view", &self.view())
            .finish_non_exhaustive()
    }
}

impl LeaseManager {
    /// Starts managing the leases of `endpoints` for this node. The first round runs before
    /// this returns (an unreachable database is an error here, not later).
    pub fn start(
        config: &PgConfig,
        options: &LeaseOptions,
        board: Arc<LeaseBoard>,
        fence: Arc<Fence>,
        endpoints: Vec<String>,
    ) -> Result<LeaseManager, Error> {
        config.validate()?;
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&options.ttl) {
            return Err(Error::config("lease", "must be 1 s to 1 h"));
        }
        if options.node.is_empty() || options.node.len() > 200 {
            return Err(Error::config("node", "must be 1 to 200 bytes"));
        }
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                stop: false,
                endpoints,
                view: ClusterView {
                    node: options.node.clone(),
                    ..ClusterView::default()
                },
                last_ok: None,
            }),
            wake: Condvar::new(),
        });
        let mut round = Round {
            config: config.clone(),
            ttl: options.ttl,
            node: options.node.clone(),
            board,
            fence,
            client: None,
            releasing: Vec::new(),
            mine: HashMap::new(),
        };
        // A node restarted under the same name: what its earlier run held is free at once
        // (its requests ended with it).
        round.release_all();
        if let Err(e) = round.run(&inner) {
            round.lost_all();
            return Err(e);
        }
        let i = inner.clone();
        let thread = std::thread::Builder::new()
            .name("hookwire-leases".into())
            .spawn(move || round.looped(&i))?;
        Ok(LeaseManager {
            inner,
            ttl: options.ttl,
            thread: Some(thread),
        })
    }

    /// What it last saw.
    pub fn view(&self) -> ClusterView {
        let mut v = self.inner.state.lock().view.clone();
        v.healthy = self.healthy();
        v
    }

    /// Whether the database answered in time to keep this node's leases: the last round
    /// succeeded less than half a lease ago.
    pub fn healthy(&self) -> bool {
        let st = self.inner.state.lock();
        st.last_ok.is_some_and(|t| t.elapsed() < self.ttl / 2)
    }

    /// The endpoints to share from now on (a reload); leases of others are given back.
    pub fn set_endpoints(&self, endpoints: Vec<String>) {
        self.inner.state.lock().endpoints = endpoints;
        self.inner.wake.notify_all();
    }

    /// Stops: gives every lease back (revoked in the engine first, then freed in the
    /// database, so another node takes them over at once) and removes this node's heartbeat.
    /// Call it once the engine has finished with the endpoints (after its shutdown).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.inner.state.lock().stop = true;
        self.inner.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LeaseManager {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The manager thread's own state.
struct Round {
    config: PgConfig,
    ttl: Duration,
    node: String,
    board: Arc<LeaseBoard>,
    fence: Arc<Fence>,
    client: Option<postgres::Client>,
    /// Revoked here last round, to free in the database this round.
    releasing: Vec<String>,
    /// What this node holds: endpoint -> epoch.
    mine: HashMap<String, u64>,
}

/// What a round's transaction found.
struct Outcome {
    held: HashMap<String, u64>,
    extra: Vec<String>,
    cursors: HashMap<String, u64>,
    leases: Vec<Lease>,
    nodes: Vec<String>,
    head: i64,
}

/// The most a wait for notifications lasts, so a stop is seen soon.
const LISTEN_SLICE: Duration = Duration::from_millis(200);

impl Round {
    fn schema(&self) -> String {
        format!("\"{}\"", self.config.schema)
    }

    fn client(&mut self) -> Result<&mut postgres::Client, Error> {
        if self.client.is_none() {
            let mut c = super::connect(&self.config)?;
            c.batch_execute(&format!("LISTEN \"hookwire_{}\"", self.config.schema))
                .map_err(|e| pg_err("listen", e))?;
            self.client = Some(c);
        }
        Ok(self.client.as_mut().expect("just set"))
    }

    fn looped(&mut self, inner: &Inner) {
        let tick = self.ttl / 4;
        let mut next = Instant::now() + tick;
        let mut warn = crate::engine::endpoint::warn::Throttle::new(Duration::from_secs(10));
        loop {
            if inner.state.lock().stop {
                self.release_all();
                return;
            }
            let now = Instant::now();
            if now >= next {
                next = now + tick;
                if let Err(e) = self.run(inner) {
                    self.client = None;
                    if let Some(held) = warn.check(now) {
                        log::error!(
                            "hookwire: lease round failed ({e}); retrying every {tick:?}{}",
                            crate::engine::endpoint::warn::more(held)
                        );
                    }
                    let mut st = inner.state.lock();
                    st.view.error = Some(e.to_string());
                    st.view.healthy = st.last_ok.is_some_and(|t| t.elapsed() < self.ttl / 2);
                }
            }
            self.listen(
                next.saturating_duration_since(Instant::now())
                    .min(LISTEN_SLICE),
            );
        }
    }

    /// Waits up to `wait` for commit notifications; moves the engine's view of the log.
    fn listen(&mut self, wait: Duration) {
        use postgres::fallible_iterator::FallibleIterator;
        let Some(c) = self.client.as_mut() else {
            std::thread::sleep(wait);
            return;
        };
        let first = c.notifications().timeout_iter(wait).next();
        let mut through = match first {
            Ok(Some(n)) => n.payload().parse().unwrap_or(0),
            Ok(None) => return,
            Err(_) => {
                self.client = None;
                return;
            }
        };
        // Take what else has come, without waiting.
        let mut notes = c.notifications();
        let mut rest = notes.iter();
        while let Ok(Some(n)) = rest.next() {
            through = through.max(n.payload().parse().unwrap_or(0));
        }
        if through > 0 {
            self.board.advance(through);
        }
    }

    /// One round: heartbeat, renew, give back, take. Updates the engine and the view.
    fn run(&mut self, inner: &Inner) -> Result<(), Error> {
        let endpoints = inner.state.lock().endpoints.clone();
        let sent = Instant::now();
        self.client()?;
        let mut c = self.client.take().expect("connected above");
        let round = self.round(&mut c, &endpoints);
        if round.is_ok() {
            self.client = Some(c);
        }
        let Outcome {
            held,
            extra,
            cursors,
            leases,
            nodes,
            head,
        } = round?;
        // The database agrees: tell the store and the engine. Delivery may go on for half a
        // lease from when this round was sent; the database keeps the lease a whole one.
        let until = sent + self.ttl / 2;
        self.releasing.clear();
        for (name, _) in self.mine.clone() {
            if !held.contains_key(&name) {
                self.fence.set(&name, None);
                self.board.revoke(&name);
                self.mine.remove(&name);
                if extra.contains(&name) {
                    self.releasing.push(name);
                }
            }
        }
        for (name, epoch) in &held {
            let Some(&resume) = cursors.get(name) else {
                continue;
            };
            self.fence.set(name, Some(*epoch));
            self.board.grant(name, *epoch, resume, until);
            self.mine.insert(name.clone(), *epoch);
        }
        self.board.advance(head.max(0) as u64);
        let mut st = inner.state.lock();
        st.last_ok = Some(sent);
        let mut mine: Vec<String> = self.mine.keys().cloned().collect();
        mine.sort();
        st.view = ClusterView {
            node: self.node.clone(),
            healthy: true,
            error: None,
            nodes,
            leases,
            held: mine,
        };
        Ok(())
    }

    /// The round's transaction: what the database says this node holds now.
    fn round(&self, c: &mut postgres::Client, endpoints: &[String]) -> Result<Outcome, Error> {
        let endpoints = endpoints.to_vec();
        let (ttl_ms, node, s) = (
            self.ttl.as_millis() as i64,
            self.node.clone(),
            self.schema(),
        );
        let mut tx = c.transaction().map_err(|e| pg_err("begin", e))?;
        tx.execute(
            &format!(
                "INSERT INTO {s}.nodes (name, started_at, expires_at) \
                 VALUES ($1, now(), now() + $2::bigint * interval '1 millisecond') \
                 ON CONFLICT (name) DO UPDATE SET expires_at = EXCLUDED.expires_at"
            ),
            &[&node, &ttl_ms],
        )
        .map_err(|e| pg_err("heartbeat", e))?;
        // Nodes gone for a day (default names carry the process id, so every restart adds
        // one): forgotten, so the table stays small.
        tx.execute(
            &format!("DELETE FROM {s}.nodes WHERE expires_at < now() - interval '1 day'"),
            &[],
        )
        .map_err(|e| pg_err("heartbeat", e))?;
        // Free what was revoked here last round (its requests have stopped since).
        if !self.releasing.is_empty() {
            tx.execute(
                &format!(
                    "UPDATE {s}.leases SET owner = NULL, expires_at = NULL \
                     WHERE owner = $1 AND endpoint = ANY($2)"
                ),
                &[&node, &self.releasing],
            )
            .map_err(|e| pg_err("release", e))?;
        }
        // Renew what this node holds and still has (an expired lease is not renewed: it
        // may have been taken over; it can be taken again, at a new epoch).
        let mine: Vec<String> = self.mine.keys().cloned().collect();
        let renewed = tx
            .query(
                &format!(
                    "UPDATE {s}.leases SET expires_at = now() + $2::bigint * interval '1 millisecond' \
                     WHERE owner = $1 AND endpoint = ANY($3) AND endpoint = ANY($4) \
                     AND expires_at > now() RETURNING endpoint, epoch"
                ),
                &[&node, &ttl_ms, &mine, &endpoints],
            )
            .map_err(|e| pg_err("renew", e))?;
        let mut held: HashMap<String, u64> = renewed
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
            .filter(|(name, epoch)| self.mine.get(name) == Some(epoch))
            .collect();
        let live: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM {s}.nodes WHERE expires_at > now()"),
                &[],
            )
            .map_err(|e| pg_err("nodes", e))?
            .get(0);
        let known: Vec<String> = tx
            .query(
                &format!("SELECT name FROM {s}.endpoints WHERE name = ANY($1)"),
                &[&endpoints],
            )
            .map_err(|e| pg_err("endpoints", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let share = known.len().div_ceil(live.max(1) as usize);
        // Over the fair share: give back the last ones by name (revoked now, freed next round).
        let mut names: Vec<String> = held.keys().cloned().collect();
        names.sort();
        let extra: Vec<String> = names.split_off(share.min(names.len()));
        for name in &extra {
            held.remove(name);
        }
        // Under it: take free or expired ones, in name order.
        if held.len() < share {
            tx.execute(
                &format!(
                    "INSERT INTO {s}.leases (endpoint) SELECT unnest($1::text[]) \
                     ON CONFLICT DO NOTHING"
                ),
                &[&known],
            )
            .map_err(|e| pg_err("leases", e))?;
            let want = (share - held.len()) as i64;
            let taken = tx
                .query(
                    &format!(
                        "UPDATE {s}.leases l SET owner = $1, epoch = l.epoch + 1, \
                         expires_at = now() + $2::bigint * interval '1 millisecond' \
                         FROM (SELECT endpoint FROM {s}.leases WHERE endpoint = ANY($3) \
                               AND (owner IS NULL OR expires_at IS NULL OR expires_at <= now()) \
                               ORDER BY endpoint LIMIT $4 FOR UPDATE SKIP LOCKED) free \
                         WHERE l.endpoint = free.endpoint RETURNING l.endpoint, l.epoch"
                    ),
                    &[&node, &ttl_ms, &known, &want],
                )
                .map_err(|e| pg_err("take", e))?;
            for r in &taken {
                held.insert(r.get(0), r.get::<_, i64>(1) as u64);
            }
        }
        let names: Vec<String> = held.keys().cloned().collect();
        let cursors: HashMap<String, u64> = tx
            .query(
                &format!("SELECT name, acked FROM {s}.endpoints WHERE name = ANY($1)"),
                &[&names],
            )
            .map_err(|e| pg_err("cursors", e))?
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect();
        let leases = tx
            .query(
                &format!(
                    "SELECT endpoint, owner, epoch, \
                     (extract(epoch FROM expires_at - now()) * 1000)::bigint \
                     FROM {s}.leases ORDER BY endpoint"
                ),
                &[],
            )
            .map_err(|e| pg_err("view", e))?
            .iter()
            .map(|r| Lease {
                endpoint: r.get(0),
                owner: r.get(1),
                epoch: r.get::<_, i64>(2) as u64,
                expires_in_ms: r.get(3),
            })
            .collect();
        let nodes = tx
            .query(
                &format!("SELECT name FROM {s}.nodes WHERE expires_at > now() ORDER BY name"),
                &[],
            )
            .map_err(|e| pg_err("view", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let head: i64 = tx
            .query_one(&format!("SELECT next_seq - 1 FROM {s}.meta"), &[])
            .map_err(|e| pg_err("head", e))?
            .get(0);
        tx.commit().map_err(|e| pg_err("commit", e))?;
        Ok(Outcome {
            held,
            extra,
            cursors,
            leases,
            nodes,
            head,
        })
    }

    /// Stops delivering everything (the engine and the store first).
    fn lost_all(&mut self) {
        for name in std::mem::take(&mut self.mine).into_keys() {
            self.fence.set(&name, None);
            self.board.revoke(&name);
        }
    }

    /// Gives every lease back and removes the heartbeat (a clean stop).
    fn release_all(&mut self) {
        self.lost_all();
        let (node, s) = (self.node.clone(), self.schema());
        let done = self.client().and_then(|c| {
            c.execute(
                &format!("UPDATE {s}.leases SET owner = NULL, expires_at = NULL WHERE owner = $1"),
                &[&node],
            )
            .and_then(|_| c.execute(&format!("DELETE FROM {s}.nodes WHERE name = $1"), &[&node]))
            .map_err(|e| pg_err("release", e))
        });
        if let Err(e) = done {
            log::warn!("hookwire: giving the leases back failed ({e}); they expire instead");
        }
    }
}

fn pg_err(op: &'static str, e: postgres::Error) -> Error {
    super::storage_error(op, "the lease manager's connection", e)
}
