//! Endpoints: adding, removing, pausing, and watching them (snapshots, `wait_idle`).

use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use crate::config::{Durability, EndpointConfig, MAX_DURATION, Overflow};
use crate::stats::EndpointSnapshot;
use crate::store::DeadLetter;
use crate::{Error, RawEvent, Sink};

use super::{Dispatcher, EndpointId};
use crate::engine::endpoint::{LogLink, Prepared};
use crate::engine::ring::Ring;
use crate::engine::routes::{Ignore, Route};
use crate::engine::shared::Shared;
use crate::engine::source::Published;
use crate::engine::task::{DeadLetterHook, Task};
use crate::engine::worker::Command;

impl Dispatcher {
    /// Adds a webhook endpoint; it receives events published from now on. Fails with
    /// [`Error::Config`] naming the bad field (the URL is parsed and its host resolved here,
    /// on the caller's thread), or [`Error::TooManyEndpoints`] when 64 endpoints are already
    /// in use (or, for a durable endpoint, when the store's 64 slots are taken by other
    /// names: see [`crate::store::forget_endpoint`]).
    ///
    /// Events it gives up on are counted (`dead_lettered`); a durable endpoint also keeps them
    /// in its store ([`dead_letters`](Self::dead_letters)). To receive a memory endpoint's,
    /// use [`add_endpoint_with_dead_letters`](Self::add_endpoint_with_dead_letters).
    pub fn add_endpoint(&self, config: EndpointConfig) -> Result<EndpointId, Error> {
        self.add_http(config, None)
    }

    /// Adds a webhook endpoint like [`add_endpoint`](Self::add_endpoint), and hands every
    /// event it gives up on to `dead_letters`, with why (its `seq` is 0: memory events have no
    /// place in a log). The sink is called on the endpoint's worker thread, so it must not
    /// block: put a bounded [`Queue`](crate::sink::Queue) in front of anything slow. What it
    /// refuses (an error or a panic) is counted in `Metrics::dead_letter_errors`.
    ///
    /// A durable endpoint keeps its dead letters in its store instead: this fails with
    /// [`Error::Config`] for one.
    pub fn add_endpoint_with_dead_letters(
        &self,
        config: EndpointConfig,
        dead_letters: impl Sink<DeadLetter> + 'static,
    ) -> Result<EndpointId, Error> {
        if config.durability == Durability::Durable {
            return Err(Error::config(
                "durability",
                "a durable endpoint keeps its dead letters in the store \
                 (Dispatcher::dead_letters); a dead-letter sink is for memory endpoints",
            ));
        }
        self.add_http(config, Some(Arc::new(dead_letters)))
    }

    fn add_http(
        &self,
        config: EndpointConfig,
        hook: Option<DeadLetterHook>,
    ) -> Result<EndpointId, Error> {
        let secrets = config.validate()?;
        let prepared = Prepared::new(&config, secrets)?;
        let url = crate::config::redact_url(&config.url);
        let ignore = Ignore {
            actions: config.ignored_actions.clone().into(),
            media_types: config.ignored_media_types.clone().into(),
            repositories: config.repositories.clone().into(),
        };
        let full = self.inner.full.clone();
        let capacity = config.capacity as u64;
        let room_min = &self.inner.room_min;
        self.add(config, url, ignore, |shared, consumer, since, link| {
            // Before the snapshot can see it (the worker updates it from then on).
            shared.set_breaker(prepared.strategy.breaker());
            let bounded = matches!(
                shared.overflow,
                Overflow::Reject | Overflow::DropNewest | Overflow::Block { .. }
            );
            if link.is_none() && bounded {
                // A memory endpoint holds nothing yet: `capacity` ring entries from its cursor
                // on (its worker moves this on as it goes).
                let until = consumer.position().saturating_add(capacity);
                shared.room_until.store(until, Ordering::Release);
                room_min.fetch_min(until, Ordering::AcqRel);
            }
            Task::http(shared, consumer, since, prepared, link, hook, full)
        })
    }

    /// Adds an in-process consumer: `f` runs on the owning worker's thread for each event, in
    /// publish order, and must not block. The event is lent in place (no copy, no clone). A
    /// panic in `f` is caught and counted as a drop (`sink_error`).
    pub fn add_consumer<F>(&self, name: &str, f: F) -> Result<EndpointId, Error>
    where
        F: FnMut(&RawEvent) + Send + 'static,
    {
        let mut config = EndpointConfig::new(name, format!("local:{name}"));
        config.overflow = Overflow::Block { timeout: None };
        config.validate()?;
        let url = config.url.clone();
        let f: Box<dyn FnMut(&RawEvent) + Send> = Box::new(f);
        self.add(
            config,
            url,
            Ignore::default(),
            |shared, consumer, since, _| Task::local(shared, consumer, since, f),
        )
    }

    pub(super) fn add(
        &self,
        config: EndpointConfig,
        url: String,
        ignore: Ignore,
        task: impl FnOnce(
            Arc<Shared>,
            crate::engine::ring::Consumer<Published>,
            u64,
            Option<LogLink>,
        ) -> Task,
    ) -> Result<EndpointId, Error> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let durable = match (config.durability, &inner.durable) {
            (Durability::Memory, _) => None,
            (Durability::Durable, Some(d)) => Some(d),
            (Durability::Durable, None) => {
                return Err(Error::config(
                    "durability",
                    "a durable endpoint needs a dispatcher with a store \
                     (DispatcherBuilder::data_dir)",
                ));
            }
        };
        let mut admin = inner.admin.lock();
        if admin.endpoints.values().any(|s| s.name == config.name) {
            return Err(Error::config(
                "name",
                format!("{:?} is already in use", config.name),
            ));
        }
        if admin.forgetting.contains(&config.name) {
            return Err(Error::config(
                "name",
                format!(
                    "{:?} is being forgotten (Dispatcher::forget_endpoint)",
                    config.name
                ),
            ));
        }
        let admin = &mut *admin;
        let free_bits = &mut admin.free_bits;
        admin.zombies.retain(|(bit, done)| match done.try_recv() {
            Err(crossbeam_channel::TryRecvError::Empty) => true,
            _ => {
                *free_bits |= 1 << bit;
                false
            }
        });
        if admin.free_bits == 0 {
            return Err(Error::TooManyEndpoints {
                limit: 64,
                durable: false,
            });
        }
        let bit = admin.free_bits.trailing_zeros();
        let worker = (0..admin.load.len())
            .min_by_key(|&w| admin.load[w])
            .unwrap_or(0);
        let id = EndpointId(admin.next_id);
        let shared = Arc::new(Shared::new(id, bit, worker, &config, url));
        let link = match durable {
            None => None,
            Some(d) => {
                let (slot, acked, counted_from) = d.join(&shared)?;
                let _ = shared.slot.set(slot);
                let mut link = LogLink::new(d.marks.clone(), slot, acked, counted_from);
                link.shared = d.shared;
                link.gate = d.board.as_ref().map(|b| b.gate(&shared.name));
                Some(link)
            }
        };
        let leave = |e: Error| {
            if let Some(d) = durable {
                d.leave(&shared);
            }
            e
        };
        let consumer = Ring::register(&inner.ring, bit as usize).map_err(leave)?;
        let routes = inner.routes.load_full();
        let since = routes.version + 1;
        if let (Some(d), Some(&slot)) = (durable, shared.slot.get()) {
            d.routed(slot, since);
        }
        // The worker must own the endpoint before producers route to it.
        inner.workers[worker]
            .commands
            .send(Command::Add(Box::new(task(
                shared.clone(),
                consumer,
                since,
                link,
            ))))
            .map_err(|_| leave(Error::Closed))?;
        inner.workers[worker].wake.wake();
        inner.routes.store(Arc::new(routes.with(Route {
            shared: shared.clone(),
            ignore,
        })));
        // Pairs with the fence in `publish_committed`: either the persistence thread sees
        // this table (and puts what it commits into the ring for this endpoint), or the
        // endpoint, reading the log, sees what it committed before it stops reading.
        fence(Ordering::SeqCst);
        shared.routed.store(true, Ordering::Release);
        // A durable endpoint that looked before it was routed waits for this to stop reading
        // the log.
        inner.workers[worker].wake.wake();
        admin.next_id += 1;
        admin.free_bits &= !(1 << bit);
        admin.load[worker] += 1;
        admin.endpoints.insert(id, shared);
        Ok(id)
    }

    /// Removes an endpoint: it takes no new events, delivers what it holds within `timeout`
    /// (the rest is counted as dropped, `shutdown`), and returns its final snapshot. An event
    /// published while the endpoint is being removed may or may not reach it.
    pub fn remove_endpoint(
        &self,
        id: EndpointId,
        timeout: Duration,
    ) -> Result<EndpointSnapshot, Error> {
        let inner = &self.inner;
        let (shared, wait) = {
            let mut admin = inner.admin.lock();
            let shared = admin
                .endpoints
                .get(&id)
                .cloned()
                .ok_or_else(|| Error::config("id", format!("no {id} in this dispatcher")))?;
            if !admin.removing.insert(id) {
                return Err(Error::config(
                    "id",
                    format!("{id} is being removed already"),
                ));
            }
            let routes = inner.routes.load_full();
            inner.routes.store(Arc::new(routes.without(shared.bit)));
            inner.full.fetch_and(!(1 << shared.bit), Ordering::AcqRel);
            let (done, wait) = crossbeam_channel::bounded(1);
            let deadline = Instant::now() + timeout.min(MAX_DURATION);
            let w = &inner.workers[shared.worker];
            let sent = w.commands.send(Command::Remove { id, deadline, done });
            w.wake.wake();
            (shared, sent.is_ok().then_some(wait))
        };
        // Waiting without the admin lock: snapshots, adds and other removals go on.
        // The worker answers by the deadline (plus a margin for one loop turn).
        let margin = timeout
            .min(MAX_DURATION)
            .saturating_add(Duration::from_secs(1));
        let answered = wait.as_ref().is_none_or(|w| w.recv_timeout(margin).is_ok());
        let mut admin = inner.admin.lock();
        admin.removing.remove(&id);
        admin.load[shared.worker] -= 1;
        admin.endpoints.remove(&id);
        match wait {
            Some(wait) if !answered => {
                // Its worker still holds the cursor: the bit is freed once it lets go.
                admin.zombies.push((shared.bit, wait));
                drop(admin);
                Ok(self.snap(&shared))
            }
            _ => {
                admin.free_bits |= 1 << shared.bit;
                Ok(shared.snapshot(0))
            }
        }
    }

    /// Pauses delivery to an endpoint; events keep queueing (within its capacity).
    pub fn disable(&self, id: EndpointId) -> Result<(), Error> {
        self.set_disabled(id, true)
    }

    /// Resumes delivery to an endpoint (also after a 410 Gone, or after it was disabled for
    /// failing too long). The first request is a probe.
    pub fn enable(&self, id: EndpointId) -> Result<(), Error> {
        self.set_disabled(id, false)
    }

    pub(super) fn set_disabled(&self, id: EndpointId, disabled: bool) -> Result<(), Error> {
        let admin = self.inner.admin.lock();
        let shared = admin
            .endpoints
            .get(&id)
            .ok_or_else(|| Error::config("id", format!("no {id} in this dispatcher")))?;
        let w = &self.inner.workers[shared.worker];
        w.commands
            .send(Command::SetDisabled { id, disabled })
            .map_err(|_| Error::Closed)?;
        w.wake.wake();
        Ok(())
    }

    /// A snapshot of every endpoint, in the order they were added.
    pub fn snapshot(&self) -> Vec<EndpointSnapshot> {
        let admin = self.inner.admin.lock();
        admin.endpoints.values().map(|s| self.snap(s)).collect()
    }

    /// A snapshot of one endpoint.
    pub fn endpoint_snapshot(&self, id: EndpointId) -> Option<EndpointSnapshot> {
        self.inner
            .admin
            .lock()
            .endpoints
            .get(&id)
            .map(|s| self.snap(s))
    }

    pub(super) fn snap(&self, s: &Shared) -> EndpointSnapshot {
        let ring = &self.inner.ring;
        let unread = ring
            .position_of(s.bit as usize)
            .map_or(0, |p| ring.head().saturating_sub(p));
        s.snapshot(unread)
    }

    /// Waits until every event published before the call has its fate (taken by its
    /// endpoints, and nothing pending anywhere; durable events committed, and durable
    /// endpoints done reading the log), or `timeout` passes. Returns whether it got there.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout.min(MAX_DURATION);
        let submitted = self.inner.durable.as_ref().map_or(0, |d| d.submitted());
        let head = self.inner.ring.head();
        let mut pause = Duration::from_micros(50);
        loop {
            if self.is_idle(head, submitted) {
                return true;
            }
            // A worker none of whose endpoints wanted the recent events sleeps with its
            // cursors behind; a turn of its loop moves them past what is not theirs.
            for w in &self.inner.workers {
                w.wake.wake();
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    pub(super) fn is_idle(&self, head: u64, submitted: u64) -> bool {
        let persisted = self
            .inner
            .durable
            .as_ref()
            .is_none_or(|d| d.settled_through(submitted));
        // Committed events go into the ring after the commit, so look at the head again.
        let head = if self.inner.durable.is_some() {
            self.inner.ring.head().max(head)
        } else {
            head
        };
        let ring_done = self
            .inner
            .ring
            .min_position()
            .is_none_or(|(pos, _)| pos >= head);
        persisted
            && ring_done
            && self.inner.admin.lock().endpoints.values().all(|s| {
                // The gauges too: a worker counts a delivery before it lowers them, so
                // `pending` can reach 0 a moment before `in_flight` does.
                s.pending() == 0
                    && s.queued.load(Ordering::Acquire) == 0
                    && s.in_flight.load(Ordering::Acquire) == 0
                    && !s.disk.load(Ordering::Acquire)
            })
    }
}
