//! The wake protocol between producers and a sleeping worker.
//!
//! A worker that runs out of work sleeps in `mio::Poll::poll`; a producer that publishes an
//! event the worker must handle wakes it through the worker's one `mio::Waker`. A busy worker
//! must not be woken per event (a wake-up is a syscall), and a worker going to sleep must never
//! miss an event published meanwhile. The protocol is the classic store-then-check on both sides,
//! ordered by `SeqCst` fences:
//!
//! - **Worker**, before sleeping: [`Wake::prepare_sleep`] (`sleeping = true`, then a `SeqCst`
//!   fence), then it re-checks for work (a consumer's `get(position)`). If there is work it calls
//!   [`Wake::cancel_sleep`] and goes on; otherwise it polls (with its next timer as the timeout)
//!   and then calls [`Wake::woke`].
//! - **Producer**, after publishing: [`Wake::notify`] (a `SeqCst` fence, then a relaxed read of
//!   `sleeping`; only if it is set, a compare-exchange to false, and the one producer that made it
//!   wakes the worker).
//!
//! The two fences are ordered one way or the other: either the producer's fence comes first, and
//! the worker's re-check sees the event, or the worker's comes first, and the producer sees
//! `sleeping`. A wake that races a cancelled sleep is harmless: the waker stays signalled and the
//! worker's next poll returns at once. The loom models in `ring.rs`'s tests check both
//! properties: no event is stranded, and a worker that is not sleeping is not woken.

use std::io;

use crossbeam_utils::CachePadded;

use super::ring::sync::{AtomicBool, AtomicU64, Ordering, fence};

/// Something that wakes a worker out of its poll: `mio::Waker`, or a counting stand-in in tests
/// and loom models.
pub(crate) trait Wakes {
    /// Makes the worker's current or next poll return.
    fn wake(&self) -> io::Result<()>;
}

impl Wakes for mio::Waker {
    fn wake(&self) -> io::Result<()> {
        mio::Waker::wake(self)
    }
}

/// One worker's sleep flag, its waker, and a count of the wake-ups producers sent it.
pub(crate) struct Wake<W: Wakes = mio::Waker> {
    /// True from `prepare_sleep` until the worker cancels, wakes, or a producer claims the
    /// wake-up.
    sleeping: CachePadded<AtomicBool>,
    /// Wake-ups sent (producers that moved `sleeping` from true to false).
    wakes: AtomicU64,
    /// The routing bits of the endpoints that would take an event now, as of the last sleep:
    /// a producer whose event is for none of them does not wake the worker (an endpoint
    /// waiting on a response, say, lets its events wait in the ring).
    wants: AtomicU64,
    /// The worker's waker.
    waker: W,
}

impl<W: Wakes> Wake<W> {
    /// A worker that is awake, with its waker.
    pub fn new(waker: W) -> Self {
        Wake {
            sleeping: CachePadded::new(AtomicBool::new(false)),
            wakes: AtomicU64::new(0),
            wants: AtomicU64::new(u64::MAX),
            waker,
        }
    }

    /// Producer side, after publishing an event the worker must handle: wakes the worker if it
    /// is going to sleep or asleep. Returns whether this call woke it.
    ///
    /// Costs a fence and a shared read when the worker is awake; only one of the producers that
    /// race on a sleeping worker wakes it.
    pub fn notify(&self) -> Result<bool, crate::Error> {
        fence(Ordering::SeqCst);
        self.claim()
    }

    /// The part of [`notify`](Wake::notify) after its fence: if the worker sleeps, claim the
    /// wake-up (only one racing producer gets it) and wake it.
    fn claim(&self) -> Result<bool, crate::Error> {
        // A compare-exchange rather than `swap(false)`: the same for a bool, and loom 0.7 models
        // it correctly (its `swap` can lose a concurrent store: tokio-rs/loom#254).
        if !self.sleeping.load(Ordering::Relaxed)
            || self
                .sleeping
                .compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return Ok(false);
        }
        self.wakes.fetch_add(1, Ordering::Relaxed);
        self.waker.wake()?;
        Ok(true)
    }

    /// Worker side, before sleeping: announces the sleep. The worker must then re-check for work
    /// and call [`cancel_sleep`](Wake::cancel_sleep) if it finds any, or poll and then call
    /// [`woke`](Wake::woke).
    pub fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Producer side: [`notify`](Wake::notify), but only if the event (routed to `mask`) is for
    /// an endpoint that wants events. The caller has published and issued a `SeqCst` fence.
    /// The caller's fence is the one the protocol needs, so this adds none.
    pub fn notify_if_wants(&self, mask: u64) {
        if self.wants.load(Ordering::SeqCst) & mask != 0
            && let Err(e) = self.claim()
        {
            log::error!("hookwire: waking a worker failed: {e}");
        }
    }

    /// [`notify`](Wake::notify), logging a failed wake-up (the worker's poll times out on its
    /// next timer anyway, so nothing is lost, only late).
    pub fn wake(&self) {
        if let Err(e) = self.notify() {
            log::error!("hookwire: waking a worker failed: {e}");
        }
    }

    /// Worker side, before sleeping: which endpoints want events (their routing bits), then
    /// [`prepare_sleep`](Wake::prepare_sleep).
    pub fn prepare_sleep_wanting(&self, wants: u64) {
        self.wants.store(wants, Ordering::SeqCst);
        self.prepare_sleep();
    }

    /// Worker side: the re-check found work, so it will not sleep after all.
    pub fn cancel_sleep(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Worker side, after its poll returned (woken, timed out, or I/O ready): it is awake.
    pub fn woke(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Whether the worker has announced a sleep that no producer has claimed yet.
    pub fn is_sleeping(&self) -> bool {
        self.sleeping.load(Ordering::Relaxed)
    }

    /// Wake-ups sent so far; with the number of events, this gives wake-ups per event.
    pub fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Relaxed)
    }

    /// The waker.
    #[allow(dead_code)] // used by tests
    pub fn waker(&self) -> &W {
        &self.waker
    }
}

#[cfg(all(test, not(hookwire_loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    use mio::{Events, Poll, Token};

    const WAKE: Token = Token(7);

    fn worker() -> (Poll, Wake) {
        let poll = Poll::new().expect("a mio poll");
        let waker = mio::Waker::new(poll.registry(), WAKE).expect("a mio waker");
        (poll, Wake::new(waker))
    }

    /// Polls once with `timeout`; true if the waker's token came back.
    fn woken(poll: &mut Poll, timeout: Duration) -> bool {
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(timeout)).expect("poll");
        events.iter().any(|e| e.token() == WAKE)
    }

    #[test]
    fn an_awake_worker_is_not_woken() {
        let (mut poll, wake) = worker();
        for _ in 0..100 {
            assert!(!wake.notify().unwrap());
        }
        assert_eq!(wake.wakes(), 0);
        assert!(!woken(&mut poll, Duration::ZERO), "no wake-up was sent");
    }

    #[test]
    fn a_sleeping_worker_is_woken_once() {
        let (mut poll, wake) = worker();
        wake.prepare_sleep();
        assert!(wake.is_sleeping());
        assert!(wake.notify().unwrap(), "the first producer wakes it");
        assert!(!wake.notify().unwrap(), "later ones see it awake");
        assert!(!wake.is_sleeping());
        assert!(woken(&mut poll, Duration::from_secs(5)));
        wake.woke();
        assert_eq!(wake.wakes(), 1);
        // Awake again: events published now cost no wake-up.
        assert!(!wake.notify().unwrap());
        assert_eq!(wake.wakes(), 1);
    }

    #[test]
    fn a_cancelled_sleep_takes_no_wake_up() {
        let (mut poll, wake) = worker();
        wake.prepare_sleep();
        wake.cancel_sleep(); // the re-check found work
        assert!(!wake.notify().unwrap());
        assert!(!woken(&mut poll, Duration::ZERO));
        assert_eq!(wake.wakes(), 0);
    }

    #[test]
    fn a_producer_on_another_thread_wakes_the_poll() {
        let (mut poll, wake) = worker();
        let wake = std::sync::Arc::new(wake);
        wake.prepare_sleep();
        let producer = {
            let wake = wake.clone();
            std::thread::spawn(move || wake.notify().unwrap())
        };
        // Bounded: the wake-up arrives long before the deadline, or the test fails.
        assert!(woken(&mut poll, Duration::from_secs(10)));
        wake.woke();
        assert!(producer.join().unwrap());
    }
}

/// loom models of the protocol: run with `RUSTFLAGS="--cfg hookwire_loom" cargo test --release --lib
/// engine::`.
#[cfg(all(test, hookwire_loom))]
mod loom_models {
    use super::*;
    use crate::engine::ring::sync::Arc;
    use crate::engine::ring::{Consumer, Ring};
    use loom::thread;

    /// A waker that counts wake-ups, standing in for `mio::Waker`.
    struct CountingWaker(AtomicU64);

    impl Wakes for CountingWaker {
        fn wake(&self) -> io::Result<()> {
            self.0.fetch_add(1, Ordering::Release);
            Ok(())
        }
    }

    /// Explores every interleaving with at most `preemptions` forced switches.
    fn model(preemptions: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = preemptions;
        }
        builder.check(f);
    }

    /// Reads and releases everything published at the cursor; returns how many.
    fn drain(c: &mut Consumer<u64>) -> u64 {
        let start = c.position();
        let mut pos = start;
        while c.get(pos).is_some() {
            pos += 1;
        }
        c.advance(pos);
        pos - start
    }

    /// A producer publishes two events (notifying after each) while the worker drains, goes to
    /// sleep, re-checks and polls. Whenever the worker decides to sleep with an event still
    /// unread, a wake-up for it has been or will be sent: after the producer is done, a worker
    /// that found nothing on its re-check must have a wake-up pending. And no more wake-ups are
    /// sent than sleeps announced.
    #[test]
    fn no_event_is_stranded() {
        stranding_model(|w| w.notify().map(drop).unwrap(), |w| w.prepare_sleep());
    }

    /// The same with the dispatcher's calls: the worker announces which endpoints want events
    /// (bit 0 does) and the producer fences, then wakes only if the event is for one of them.
    #[test]
    fn no_event_is_stranded_when_waking_only_for_wanted_events() {
        stranding_model(
            |w| {
                fence(Ordering::SeqCst);
                w.notify_if_wants(1);
            },
            |w| w.prepare_sleep_wanting(1),
        );
    }

    type TestWake = Wake<CountingWaker>;

    fn stranding_model(notify: fn(&TestWake), sleep: fn(&TestWake)) {
        model(None, move || {
            let ring = Arc::new(Ring::new(4));
            let mut c = Ring::register(&ring, 0).unwrap();
            let wake = Arc::new(Wake::new(CountingWaker(AtomicU64::new(0))));
            let producer = {
                let (ring, wake) = (ring.clone(), wake.clone());
                thread::spawn(move || {
                    for i in 0..2 {
                        ring.try_publish(i, 1).unwrap();
                        notify(&wake);
                    }
                })
            };
            let (mut seen, mut sleeps, mut tokens_used) = (0, 0, 0);
            let mut producer = Some(producer);
            while seen < 2 {
                seen += drain(&mut c);
                if seen == 2 {
                    break;
                }
                sleep(&wake);
                sleeps += 1;
                let more = drain(&mut c);
                if more > 0 {
                    seen += more;
                    wake.cancel_sleep();
                    continue;
                }
                // Poll: it returns only on a wake-up. A wake-up may still be on its way, so
                // wait for the producer to finish (this is where the real worker blocks);
                // then one must be there.
                if wake.waker().0.load(Ordering::Acquire) == tokens_used
                    && let Some(p) = producer.take()
                {
                    p.join().unwrap();
                }
                let tokens = wake.waker().0.load(Ordering::Acquire);
                assert!(
                    tokens > tokens_used,
                    "stranded: asleep with an unread event"
                );
                tokens_used = tokens;
                wake.woke();
            }
            if let Some(p) = producer.take() {
                p.join().unwrap();
            }
            assert!(
                wake.wakes() <= sleeps,
                "{} wakes for {sleeps} sleeps",
                wake.wakes()
            );
            assert_eq!(wake.wakes(), wake.waker().0.load(Ordering::Relaxed));
        });
    }

    /// A worker that never goes to sleep (it is busy) is never woken, however many events are
    /// published.
    #[test]
    fn a_busy_worker_is_not_woken() {
        model(None, || {
            let ring = Arc::new(Ring::new(4));
            let mut c = Ring::register(&ring, 0).unwrap();
            let wake = Arc::new(Wake::new(CountingWaker(AtomicU64::new(0))));
            let producer = {
                let (ring, wake) = (ring.clone(), wake.clone());
                thread::spawn(move || {
                    for i in 0..3 {
                        ring.try_publish(i, 1).unwrap();
                        assert!(!wake.notify().unwrap());
                    }
                })
            };
            let mut seen = drain(&mut c);
            producer.join().unwrap();
            seen += drain(&mut c);
            assert_eq!(seen, 3);
            assert_eq!(wake.wakes(), 0);
        });
    }
}
