//! The outbox relay: publishes what host programs put in `S.outbox` (in their own
//! transactions, see [`insert_outbox`](super::insert_outbox)) through a dispatcher, then
//! deletes it.
//!
//! One relay at a time per schema, whichever node takes the transaction-level advisory lock
//! first, so events leave the outbox in one order. A pass takes the oldest rows (by id),
//! publishes each with a ticket, waits until every ticket is committed to the events table,
//! and only then deletes the rows and commits, so a crash in between publishes them again
//! (at least once, never lost); their ids are the events' own, so receivers that keep
//! `webhook-id`s see the repeats for what they are. The transaction is held only while the
//! engine commits a group (milliseconds), never across an HTTP request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::{PgConfig, connect, delete_outbox, fetch_outbox, quoted};
use crate::engine::Dispatcher;
use crate::{Error, RawEvent};

/// Rows one pass takes at most.
const PASS_ROWS: i64 = 500;
/// How often an idle relay looks at the outbox (a cheap index scan).
const IDLE_POLL: Duration = Duration::from_millis(200);
/// The longest a pass waits for its events to be committed.
const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// What a relay has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RelayStats {
    /// Outbox rows published and deleted.
    pub relayed: u64,
    /// Rows that were not an event hookwire can send (not a JSON object with a string
    /// `id` of visible ASCII): deleted, each logged as an error with its id and text.
    pub rejected: u64,
    /// Passes that failed (the database, or the engine refused to store): retried.
    pub failed_passes: u64,
}

struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    relayed: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    running: AtomicBool,
}

/// A thread that relays the outbox of a schema into a dispatcher (see the module docs).
/// Stops when dropped.
pub struct OutboxRelay {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl OutboxRelay {
    /// Starts relaying the outbox of `config.schema` into `dispatcher` (typically one built
    /// on a [`PgStore`](super::PgStore) of the same schema).
    pub fn start(config: &PgConfig, dispatcher: Arc<Dispatcher>) -> Result<OutboxRelay, Error> {
        config.validate()?;
        let shared = Arc::new(Shared {
            stop: Mutex::new(false),
            wake: Condvar::new(),
            relayed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            running: AtomicBool::new(true),
        });
        let s = shared.clone();
        let config = config.clone();
        let thread = std::thread::Builder::new()
            .name("hookwire-outbox".into())
            .spawn(move || run(&config, &dispatcher, &s))?;
        Ok(OutboxRelay {
            shared,
            thread: Some(thread),
        })
    }

    /// What it has done so far.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            relayed: self.shared.relayed.load(Ordering::Relaxed),
            rejected: self.shared.rejected.load(Ordering::Relaxed),
            failed_passes: self.shared.failed.load(Ordering::Relaxed),
        }
    }

    /// Stops after the pass under way.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for OutboxRelay {
    fn drop(&mut self) {
        self.halt();
    }
}

fn run(config: &PgConfig, dispatcher: &Dispatcher, shared: &Shared) {
    let mut client: Option<postgres::Client> = None;
    let mut warn = crate::engine::endpoint::warn::Throttle::new(Duration::from_secs(10));
    loop {
        if *shared.stop.lock() {
            shared.running.store(false, Ordering::Release);
            return;
        }
        let result = match &mut client {
            Some(c) => pass(config, c, dispatcher, shared),
            None => match connect(config) {
                Ok(c) => {
                    client = Some(c);
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        let idle = match result {
            Ok(n) => n == 0,
            Err(e) => {
                client = None;
                shared.failed.fetch_add(1, Ordering::Relaxed);
                if let Some(held) = warn.check(std::time::Instant::now()) {
                    log::error!(
                        "hookwire: outbox relay pass failed ({e}); retried{}",
                        crate::engine::endpoint::warn::more(held)
                    );
                }
                true
            }
        };
        if idle {
            let mut stop = shared.stop.lock();
            if !*stop {
                shared.wake.wait_for(&mut stop, IDLE_POLL);
            }
        }
    }
}

/// One pass: returns how many rows it took (0: nothing to do, or another node relays).
fn pass(
    config: &PgConfig,
    c: &mut postgres::Client,
    dispatcher: &Dispatcher,
    shared: &Shared,
) -> Result<usize, Error> {
    let at = super::location(config);
    let db = |op: &'static str| {
        let at = at.clone();
        move |e: postgres::Error| super::storage_error(op, &at, e)
    };
    let mut tx = c.transaction().map_err(db("outbox begin"))?;
    let mine: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock(hashtext($1))",
            &[&format!("hookwire-outbox:{}", quoted(&config.schema))],
        )
        .map_err(db("outbox lock"))?
        .get(0);
    if !mine {
        return Ok(0);
    }
    let rows = fetch_outbox(&mut tx, &config.schema, PASS_ROWS)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let n = rows.len();
    let mut done = Vec::with_capacity(n);
    let mut tickets = Vec::with_capacity(n);
    let mut rejected = 0u64;
    let mut refused = None;
    for (id, text) in rows {
        let event = match RawEvent::parse(text.clone()) {
            Ok(e) if crate::Event::id(&e).bytes().all(|b| b.is_ascii_graphic()) => e,
            Ok(_) | Err(_) => {
                log::error!(
                    "hookwire: outbox row {id} is not an event hookwire can send (a JSON \
                     object with a visible-ASCII string `id`); deleted: {}",
                    text.chars().take(200).collect::<String>()
                );
                rejected += 1;
                done.push(id);
                continue;
            }
        };
        match dispatcher.publish_with_ticket(event) {
            Ok(t) => tickets.push((id, t)),
            Err(e) => {
                // This row and the rest wait for the next pass (the order holds).
                refused = Some(e);
                break;
            }
        }
    }
    // Only what is committed to the events table leaves the outbox; the first failure keeps
    // its row and every later one.
    for (id, t) in tickets {
        match t.wait(COMMIT_WAIT) {
            Ok(_) => done.push(id),
            Err(e) => {
                refused.get_or_insert(e);
                break;
            }
        }
    }
    delete_outbox(&mut tx, &config.schema, &done)?;
    tx.commit().map_err(db("outbox commit"))?;
    shared.rejected.fetch_add(rejected, Ordering::Relaxed);
    shared
        .relayed
        .fetch_add(done.len() as u64 - rejected, Ordering::Relaxed);
    match refused {
        Some(e) => Err(e),
        None => Ok(n),
    }
}
