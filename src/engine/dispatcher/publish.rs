//! The host's hot path: route, apply full endpoints' overflow policies, write the event into
//! the ring once, wake a worker only if it sleeps and wants it. Also the persistence thread's
//! hand-off of committed durable events into the ring.

use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use crate::config::Overflow;
use crate::stats::DropReason;
use crate::{Error, Event, RawEvent};

use super::{Dispatcher, Inner};
use crate::engine::persist::Committed;
use crate::engine::ring::Full;
use crate::engine::routes::Routes;
use crate::engine::shared::Shared;
use crate::engine::source::Published;
use crate::engine::ticket::{Ticket, TicketCell};

impl Inner {
    /// Writes `entry` into the ring for the endpoints in `mask` and wakes the workers that
    /// sleep and want it.
    pub(super) fn enqueue(
        &self,
        entry: Published,
        mask: u64,
        routes: &Routes,
    ) -> Result<(), Error> {
        self.claim(entry, mask, routes)?;
        self.notify(routes, mask);
        Ok(())
    }

    /// Wakes the workers of the endpoints in `mask` that sleep and want events, after the
    /// entries for them are in the ring (Dekker with the workers' SeqCst stores).
    pub(super) fn notify(&self, routes: &Routes, mask: u64) {
        if mask == 0 {
            return;
        }
        fence(Ordering::SeqCst);
        for (w, bits) in routes.worker_bits.iter().enumerate() {
            if bits & mask != 0 {
                self.workers[w].wake.notify_if_wants(mask);
            }
        }
    }

    /// The persistence thread's hand-off: committed events go into the ring for the durable
    /// endpoints added now, and their workers are woken once per group. It waits while the
    /// ring is full (the events are safe in the log); once the ring is sealed (shutdown), the
    /// rest stay in the log for the next start. Returns whether all of them were handled
    /// (false once sealed).
    pub(super) fn publish_committed(&self, committed: Vec<Committed>) -> bool {
        // Pairs with the fence in `add`: see there. One table for the group is enough: the
        // protocol only needs it read after the commit point was stored.
        fence(Ordering::SeqCst);
        let routes = self.routes.load();
        let mut unannounced = 0u64;
        for c in committed {
            let mask = routes.bits_for(c.slots);
            if mask == 0 {
                continue;
            }
            let mut entry = Published {
                event: c.event,
                at: c.at,
                version: routes.version,
                seq: c.seq,
            };
            loop {
                match self.ring.try_publish(entry, mask) {
                    Ok(_) => break,
                    Err(Full { value, gating }) => {
                        if gating == crate::engine::ring::SEALED_GATING {
                            return false;
                        }
                        entry = value;
                        // Whoever waits for what is already in must not wait on the ring.
                        self.notify(&routes, std::mem::take(&mut unannounced));
                        if let Some(s) = routes.shared(gating as u32) {
                            self.workers[s.worker].wake.wake();
                        }
                        std::thread::sleep(Duration::from_micros(20));
                    }
                }
            }
            unannounced |= mask;
        }
        self.notify(&routes, unannounced);
        true
    }

    /// Writes `entry` into the ring, waiting (up to `publish_timeout`) while a worker is a
    /// whole ring behind; wakes that worker.
    fn claim(&self, mut entry: Published, mask: u64, routes: &Routes) -> Result<(), Error> {
        let inner = self;
        let mut deadline = None;
        let mut spins = 0u32;
        loop {
            match inner.ring.try_publish(entry, mask) {
                Ok(pos) => {
                    // Every eighth of a ring, look for an endpoint lagging more than half a
                    // ring behind and wake its worker, so it copies that backlog out before
                    // the ring fills up and producers have to wait.
                    let step = (inner.ring.capacity() as u64 / 8).max(1);
                    if pos.is_multiple_of(step) {
                        self.wake_laggard(routes, inner.ring.capacity() as u64 / 2);
                    }
                    return Ok(());
                }
                Err(Full { value, gating }) => {
                    if inner.closed.load(Ordering::Relaxed) {
                        return Err(Error::Closed);
                    }
                    entry = value;
                    if let Some(s) = routes.shared(gating as u32) {
                        inner.workers[s.worker].wake.wake();
                    } else {
                        for w in &inner.workers {
                            w.wake.wake();
                        }
                    }
                    let now = Instant::now();
                    let until = *deadline.get_or_insert(now + inner.publish_timeout);
                    if now >= until {
                        inner.ring_timeouts.inc();
                        return Err(Error::Timeout {
                            waiting_for: "ring space (the workers are behind)",
                            after: inner.publish_timeout,
                        });
                    }
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else if spins < 128 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                }
            }
        }
    }

    fn wake_laggard(&self, routes: &Routes, limit: u64) {
        let inner = self;
        if let Some((pos, index)) = inner.ring.min_position()
            && inner.ring.head().saturating_sub(pos) > limit
            && let Some(s) = routes.shared(index as u32)
        {
            inner.workers[s.worker].wake.wake();
        }
    }
}

impl Dispatcher {
    /// Encodes `event` once (`serde_json`, on this thread) and publishes it. See
    /// [`publish_raw`](Self::publish_raw) for what can go wrong.
    pub fn publish<E: Event>(&self, event: &E) -> Result<(), Error> {
        self.publish_raw(RawEvent::encode(event)?)
    }

    /// Publishes an already-encoded event; its bytes are shared by every endpoint it reaches.
    /// For durable endpoints it is queued for the log's next group commit (and delivered once
    /// committed); this call does not wait for the commit (see
    /// [`publish_durable`](Self::publish_durable)).
    ///
    /// Errors: [`Error::Closed`] after shutdown; [`Error::Full`] when every endpoint that
    /// wanted it is full with policy `Reject`; [`Error::Timeout`] when the wait for a `Block`
    /// endpoint, for ring space, or for room in the log's intake ran out; [`Error::Quota`]
    /// when the durable store is full; [`Error::Broadcast`] when some endpoints took it and
    /// others refused. Each refusal is counted by its endpoint.
    pub fn publish_raw(&self, event: RawEvent) -> Result<(), Error> {
        self.publish_inner(event, false).map(|_| ())
    }

    /// Publishes like [`publish_raw`](Self::publish_raw) and returns a [`Ticket`] that
    /// completes once the event is in the durable log (at once if no durable endpoint wanted
    /// it). Holding many tickets and waiting on the last is how a producer gets group-commit
    /// throughput with a durability guarantee.
    pub fn publish_with_ticket(&self, event: RawEvent) -> Result<Ticket, Error> {
        let cell = self.publish_inner(event, true)?;
        Ok(Ticket {
            cell,
            durable: self.inner.durable.clone(),
        })
    }

    /// Publishes and waits until the event is in the durable log: once this returns
    /// `Ok(Some(seq))`, a crash no longer loses it. `Ok(None)` means no durable endpoint
    /// wanted it. Waits at most the publish timeout or 30 s, whichever is longer.
    pub fn publish_durable(&self, event: RawEvent) -> Result<Option<u64>, Error> {
        let ticket = self.publish_with_ticket(event)?;
        ticket.wait(self.inner.publish_timeout.max(Duration::from_secs(30)))
    }

    pub(super) fn publish_inner(
        &self,
        event: RawEvent,
        want_ticket: bool,
    ) -> Result<Option<Arc<TicketCell>>, Error> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        let routes = inner.routes.load();
        let mut mask = routes.mask_for(&event);
        if mask == 0 {
            inner.unrouted.inc();
            return Ok(None);
        }
        let wanted = mask;
        let mut first_refusal = None;
        let full = (inner.full.load(Ordering::Acquire) | self.at_capacity(&routes)) & mask;
        if full != 0 {
            mask &= !self.overflow(&routes, full, &mut first_refusal);
        }
        let mut ticket = None;
        if mask != 0 {
            let at = self.timestamp(&routes, mask);
            let durable_bits = mask & routes.durable;
            let memory_bits = mask & !routes.durable;
            let mut event = Some(event);
            if durable_bits != 0
                && let Some(d) = &inner.durable
            {
                let ev = if memory_bits != 0 {
                    event.clone()
                } else {
                    event.take()
                };
                let slots = routes.slots_for(durable_bits);
                let version = routes.version;
                let submit =
                    |ev| d.submit(ev, slots, version, at, want_ticket, inner.publish_timeout);
                match ev.map(submit) {
                    Some(Ok(t)) => ticket = t,
                    Some(Err(e)) => {
                        self.count_refusal(&routes, durable_bits, &e);
                        mask &= !durable_bits;
                        first_refusal.get_or_insert(e);
                    }
                    None => {}
                }
            }
            if memory_bits != 0
                && let Some(event) = event
            {
                let entry = Published {
                    event,
                    at,
                    version: routes.version,
                    seq: 0,
                };
                if let Err(e) = inner.enqueue(entry, memory_bits, &routes) {
                    if mask & routes.durable == 0 {
                        return Err(e);
                    }
                    // The durable endpoints have it: say so, rather than invite a retry.
                    mask &= !memory_bits;
                    first_refusal.get_or_insert(e);
                }
            }
            if mask != 0 {
                inner.published.inc();
            }
        }
        match first_refusal {
            None => Ok(ticket),
            Some(e) if mask == 0 => Err(e),
            Some(e) => Err(Error::Broadcast {
                failed: (wanted & !mask).count_ones() as usize,
                total: wanted.count_ones() as usize,
                first: Box::new(e),
            }),
        }
    }

    /// Counts a refusal by the durable log on each endpoint in `bits`.
    fn count_refusal(&self, routes: &Routes, bits: u64, e: &Error) {
        let mut b = bits;
        while b != 0 {
            let bit = b.trailing_zeros();
            b &= b - 1;
            let Some(s) = routes.shared(bit) else {
                continue;
            };
            match e {
                Error::Quota { .. } => s.dropped.inc(DropReason::Quota),
                Error::Timeout { .. } => s.dropped.inc(DropReason::BlockTimeout),
                Error::Closed => {}
                _ => {
                    // Accepted, then lost to a failed store.
                    s.taken.inc();
                    s.dropped.inc(DropReason::SinkError);
                }
            }
        }
    }

    /// When the event was published: the workers' coarse clock if every worker it goes to is
    /// awake (so the clock is fresh to within a loop turn), else the real clock.
    #[inline]
    fn timestamp(&self, routes: &Routes, mask: u64) -> Instant {
        let inner = &*self.inner;
        let awake = routes
            .worker_bits
            .iter()
            .zip(&inner.workers)
            .all(|(bits, w)| bits & mask == 0 || !w.wake.is_sleeping());
        if awake {
            inner.clock.now()
        } else {
            Instant::now()
        }
    }

    /// Applies the overflow policy of the full endpoints in `full`; returns the bits that
    /// refused the event (each counted by its endpoint).
    fn overflow(&self, routes: &Routes, full: u64, first: &mut Option<Error>) -> u64 {
        let mut refused = 0;
        let mut bits = full;
        while bits != 0 {
            let bit = bits.trailing_zeros();
            bits &= bits - 1;
            let Some(shared) = routes.shared(bit) else {
                continue;
            };
            if shared.is_failed() {
                // A failed endpoint takes nothing (see `task.rs`): refuse, and say why.
                let reason = shared.failed.lock().clone().unwrap_or_default();
                first.get_or_insert(Error::Disabled {
                    reason: format!("{} failed: {reason}", shared.name),
                });
                shared.dropped.inc(DropReason::Failed);
                refused |= 1 << bit;
                continue;
            }
            let reason = match shared.overflow {
                // Durable endpoints never set their "full" bit: their backlog is on disk.
                Overflow::DropOldest | Overflow::Spill => continue,
                Overflow::DropNewest => DropReason::Newest,
                Overflow::Reject => {
                    first.get_or_insert(Error::Full {
                        capacity: shared.view.capacity,
                    });
                    DropReason::Rejected
                }
                Overflow::Block { timeout } => {
                    let limit = timeout.unwrap_or(self.inner.publish_timeout);
                    if self.wait_not_full(shared, limit) {
                        continue;
                    }
                    if shared.disabled.load(Ordering::Acquire) {
                        // Disabled (410 Gone, failing too long, or by the host): no room
                        // comes until the host enables it, so the writer does not wait.
                        let why = shared.disabled_reason.lock().clone().unwrap_or_default();
                        first.get_or_insert(Error::Disabled {
                            reason: format!("{} is disabled and full: {why}", shared.name),
                        });
                        DropReason::Failed
                    } else {
                        first.get_or_insert(Error::Timeout {
                            waiting_for: "room in a full endpoint",
                            after: limit,
                        });
                        DropReason::BlockTimeout
                    }
                }
            };
            shared.dropped.inc(reason);
            refused |= 1 << bit;
        }
        refused
    }

    /// The bits of the memory endpoints that the next ring entry would take past their
    /// capacity (what they hold, taken or unread): their "full" bits are set (their workers
    /// clear them once there is room), and their workers woken to look. One load and a
    /// comparison unless the ring's head has reached some endpoint's `room_until`.
    fn at_capacity(&self, routes: &Routes) -> u64 {
        let inner = &*self.inner;
        let head = inner.ring.head();
        if head < inner.room_min.load(Ordering::Acquire) {
            return 0;
        }
        let (mut over, mut min) = (0u64, u64::MAX);
        for route in routes.by_bit.iter().flatten() {
            let s = &route.shared;
            let until = s.room_until.load(Ordering::Acquire);
            min = min.min(until);
            if head >= until {
                over |= 1 << s.bit;
            }
        }
        inner.room_min.store(min, Ordering::Release);
        if over != 0 {
            inner.full.fetch_or(over, Ordering::AcqRel);
            for (w, bits) in routes.worker_bits.iter().enumerate() {
                if bits & over != 0 {
                    inner.workers[w].wake.wake();
                }
            }
        }
        over
    }

    /// Waits (at most `limit`) until `shared` has room: its "full" bit clear, and the ring's
    /// head before its `room_until`. Gives up at once while it is disabled (no room comes).
    fn wait_not_full(&self, shared: &Shared, limit: Duration) -> bool {
        let deadline = Instant::now().checked_add(limit);
        let mut spins = 0u32;
        while self.inner.full.load(Ordering::Acquire) & (1 << shared.bit) != 0
            || self.inner.ring.head() >= shared.room_until.load(Ordering::Acquire)
        {
            if self.inner.closed.load(Ordering::Relaxed)
                || shared.disabled.load(Ordering::Acquire)
                || deadline.is_some_and(|d| Instant::now() >= d)
            {
                return false;
            }
            spins += 1;
            if spins < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        true
    }
}
