//! Fan-out: one event, every sink.
//!
//! [`Broadcaster`] writes each event to each of its sinks in turn, on the writer's thread, so
//! `write` blocks until every sink's `write` has returned: one slow sink slows every write.
//! Put each slow sink behind its own [`Queue`](crate::sink::Queue) and the broadcaster only
//! waits for the queues (which, with `DropNewest` or `DropOldest`, never wait); that is how a
//! hanging endpoint is kept from stalling the others. The broadcaster itself buffers and drops
//! nothing: a sink that fails is reported in the write's error, and the drop (if any) is
//! counted by that sink.
//!
//! Sinks can be added and removed while writes are in flight. The list is copy-on-write: a
//! `write` reads the current list through an `ArcSwap` (no lock, and no reference count of its
//! own in the common case: arc-swap lends the snapshot through a per-thread slot) and writes to
//! it, so `add`/`remove` never wait for a slow sink; a sink added during a write
//! gets the next event, and one removed during a write may still get the current one. A sink
//! whose `write` returns [`Error::Closed`] is removed. `close` closes every sink; afterwards
//! `write` and `add` return `Error::Closed`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::Error;
use crate::sink::Sink;
use crate::stats::Counter;

/// Names a sink inside one [`Broadcaster`], for [`Broadcaster::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SinkId(u64);

/// A broadcaster's counters.
#[derive(Debug, Default)]
pub struct BroadcastStats {
    /// Events written (writes refused because the broadcaster was closed are not counted).
    pub writes: Counter,
    /// Sink writes that failed with an error other than `Closed`.
    pub sink_errors: Counter,
    /// Sinks removed because their `write` returned `Closed`.
    pub removed_closed: Counter,
    /// Events no sink took, because there was none (or every one had closed). Such a write
    /// returns `Ok` while the broadcaster is open (an empty fan-out is not an error), and
    /// `Err(Closed)` if it was closed meanwhile.
    pub unrouted: Counter,
}

type Entry<E> = (SinkId, Arc<dyn Sink<E>>);

/// A [`Sink`] that writes every event to every one of its sinks.
///
/// Contract:
/// - `write` gives a clone of the event to each sink, in the order they were added, and
///   blocks until all have returned. It returns `Ok` if none failed.
/// - A sink that returns [`Error::Closed`] is removed (counted in
///   [`BroadcastStats::removed_closed`]) and is not a failure.
/// - Any other sink error does not stop the others: every sink still gets the event, and
///   `write` returns [`Error::Broadcast`] with how many failed, out of how many, and the first
///   error. **Retrying that write would deliver the event again to the sinks that took it.**
/// - `close` closes every sink and returns [`Error::Broadcast`] if any close failed (a sink
///   already closed is not a failure); later writes return [`Error::Closed`].
///
/// ```
/// use std::sync::Arc;
/// use hookwire::sink::{Broadcaster, Overflow, Queue, Sink, from_fn};
///
/// let audit = Arc::new(from_fn(|e: String| { println!("audit: {e}"); Ok(()) }));
/// // A slow webhook behind its own queue: the broadcaster never waits for it.
/// let webhook = Queue::new(from_fn(|_: String| Ok(())), 256, Overflow::DropOldest)?;
/// let b = Broadcaster::new(vec![audit]);
/// let id = b.add(Arc::new(webhook))?;
/// b.write("push".to_string())?;
/// assert!(b.remove(id));
/// assert_eq!(b.len(), 1);
/// b.close()?;
/// assert!(b.write("late".to_string()).unwrap_err().is_closed());
/// # Ok::<(), hookwire::Error>(())
/// ```
pub struct Broadcaster<E> {
    /// The current list, replaced whole (under `edit`) by `add`, `remove` and `close`.
    sinks: ArcSwap<Vec<Entry<E>>>,
    /// Serializes the list's editors (never taken by `write`).
    edit: Mutex<()>,
    next_id: AtomicU64,
    closed: AtomicBool,
    stats: Arc<BroadcastStats>,
}

/// The sink's address, to recognise the same `Arc` added twice (vtables may differ).
fn addr<E>(s: &Arc<dyn Sink<E>>) -> *const () {
    Arc::as_ptr(s).cast::<()>()
}

impl<E> Broadcaster<E> {
    /// A broadcaster over `sinks` (the same `Arc` listed twice is kept once).
    pub fn new(sinks: Vec<Arc<dyn Sink<E>>>) -> Self {
        let b = Broadcaster {
            sinks: ArcSwap::from_pointee(Vec::with_capacity(sinks.len())),
            edit: Mutex::new(()),
            next_id: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            stats: Arc::default(),
        };
        for s in sinks {
            // Cannot fail: nobody can have closed it yet.
            let _ = b.add(s);
        }
        b
    }

    /// Adds a sink; it gets every event written after `add` returns. Adding a sink that is
    /// already there returns its id and changes nothing. Fails with [`Error::Closed`] after
    /// `close` (the sink is neither kept nor closed).
    pub fn add(&self, sink: Arc<dyn Sink<E>>) -> Result<SinkId, Error> {
        let _edit = self.edit.lock();
        // Checked under the lock that `close` takes after setting the flag, so a sink is
        // either refused here or in the list that `close` closes.
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let list = self.sinks.load();
        if let Some((id, _)) = list.iter().find(|(_, s)| addr(s) == addr(&sink)) {
            return Ok(*id);
        }
        let id = SinkId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut next = Vec::with_capacity(list.len() + 1);
        next.extend(list.iter().cloned());
        next.push((id, sink));
        self.sinks.store(Arc::new(next));
        Ok(id)
    }

    /// Removes a sink without closing it. Returns whether it was there. A write already in
    /// progress may still hand it the current event.
    pub fn remove(&self, id: SinkId) -> bool {
        self.remove_all(&[id]) > 0
    }

    fn remove_all(&self, ids: &[SinkId]) -> usize {
        let _edit = self.edit.lock();
        let list = self.sinks.load();
        let keep: Vec<Entry<E>> = list
            .iter()
            .filter(|(id, _)| !ids.contains(id))
            .cloned()
            .collect();
        let removed = list.len() - keep.len();
        if removed > 0 {
            self.sinks.store(Arc::new(keep));
        }
        removed
    }

    /// How many sinks it writes to.
    pub fn len(&self) -> usize {
        self.sinks.load().len()
    }

    /// Whether it has no sinks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The broadcaster's counters.
    pub fn stats(&self) -> Arc<BroadcastStats> {
        self.stats.clone()
    }
}

impl<E> fmt::Debug for Broadcaster<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broadcaster")
            .field("sinks", &self.len())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .field("stats", &self.stats)
            .finish()
    }
}

impl<E: Clone + Send> Sink<E> for Broadcaster<E> {
    fn write(&self, event: E) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.stats.writes.inc();
        // The snapshot: writes go on without a lock, so add/remove never wait for a sink.
        let sinks = self.sinks.load();
        let mut failed = 0;
        let mut first = None;
        let mut gone = Vec::new();
        let mut outcome = |id: SinkId, r: Result<(), Error>| match r {
            Ok(()) => {}
            Err(Error::Closed) => gone.push(id),
            Err(e) => {
                failed += 1;
                self.stats.sink_errors.inc();
                first.get_or_insert(e);
            }
        };
        if let Some(((last_id, last), rest)) = sinks.split_last() {
            for (id, sink) in rest {
                outcome(*id, sink.write(event.clone()));
            }
            // The last sink takes the original: one clone fewer per event.
            outcome(*last_id, last.write(event));
        }
        if !gone.is_empty() {
            let n = self.remove_all(&gone);
            self.stats.removed_closed.add(n as u64);
        }
        let taken = sinks.len() - gone.len() - failed;
        match first {
            None if taken == 0 => {
                if self.closed.load(Ordering::Acquire) {
                    return Err(Error::Closed); // `close` won the race with this write
                }
                self.stats.unrouted.inc();
                Ok(())
            }
            None => Ok(()),
            Some(first) => Err(Error::Broadcast {
                failed,
                total: sinks.len(),
                first: Box::new(first),
            }),
        }
    }

    fn close(&self) -> Result<(), Error> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        let sinks = {
            let _edit = self.edit.lock();
            self.sinks.swap(Arc::default())
        };
        let mut failed = 0;
        let mut first = None;
        for (_, sink) in sinks.iter() {
            match sink.close() {
                Ok(()) | Err(Error::Closed) => {}
                Err(e) => {
                    failed += 1;
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            None => Ok(()),
            Some(first) => Err(Error::Broadcast {
                failed,
                total: sinks.len(),
                first: Box::new(first),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{Overflow, QueueBuilder, from_fn};
    use crate::stats::DropReason;
    use crossbeam_channel::{bounded, unbounded};
    use parking_lot::Mutex;
    use std::time::Duration;

    const SAFETY_NET: Duration = Duration::from_secs(10);

    /// A sink that records events and whether it was closed.
    #[derive(Default)]
    struct Rec {
        got: Mutex<Vec<u32>>,
        closed: AtomicBool,
    }

    impl Sink<u32> for Rec {
        fn write(&self, e: u32) -> Result<(), Error> {
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            self.got.lock().push(e);
            Ok(())
        }
        fn close(&self) -> Result<(), Error> {
            if self.closed.swap(true, Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            Ok(())
        }
    }

    // go-events' TestBroadcaster: ten sinks (each added twice), concurrent writers, every
    // sink gets every event; removed sinks get nothing; close closes them all.
    #[test]
    fn every_sink_gets_every_event() {
        let recs: Vec<Arc<Rec>> = (0..10).map(|_| Arc::default()).collect();
        let b = Arc::new(Broadcaster::new(Vec::new()));
        let ids: Vec<SinkId> = recs
            .iter()
            .map(|r| {
                let id = b.add(r.clone()).unwrap();
                assert_eq!(b.add(r.clone()).unwrap(), id, "adding twice is a no-op");
                id
            })
            .collect();
        assert_eq!(b.len(), 10);
        let writers: Vec<_> = (0..4u32)
            .map(|w| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        b.write(w * 1000 + i).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        for id in &ids {
            assert!(b.remove(*id));
            assert!(!b.remove(*id));
        }
        assert!(b.is_empty());
        b.write(99_999).unwrap(); // goes nowhere
        for r in &recs {
            b.add(r.clone()).unwrap();
        }
        b.close().unwrap();
        assert!(matches!(b.close(), Err(Error::Closed)));
        assert!(matches!(b.write(1), Err(Error::Closed)));
        assert!(matches!(
            b.add(Arc::new(Rec::default())),
            Err(Error::Closed)
        ));
        for r in &recs {
            let mut got = r.got.lock().clone();
            assert_eq!(got.len(), 1000);
            got.sort_unstable();
            got.dedup();
            assert_eq!(got.len(), 1000, "no duplicates");
            assert!(!got.contains(&99_999));
            assert!(r.closed.load(Ordering::SeqCst));
        }
        assert_eq!(b.stats().writes.get(), 1001);
    }

    #[test]
    fn new_keeps_one_of_each_sink() {
        let r: Arc<dyn Sink<u32>> = Arc::new(Rec::default());
        let other: Arc<dyn Sink<u32>> = Arc::new(Rec::default());
        let b = Broadcaster::new(vec![r.clone(), r, other]);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn a_closed_sink_is_removed_and_is_not_a_failure() {
        let live = Arc::new(Rec::default());
        let dead = Arc::new(Rec::default());
        dead.close().unwrap();
        let b = Broadcaster::new(vec![dead.clone(), live.clone()]);
        b.write(1).unwrap();
        b.write(2).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b.stats().removed_closed.get(), 1);
        assert_eq!(*live.got.lock(), vec![1, 2]);
        assert!(dead.got.lock().is_empty());
    }

    #[test]
    fn a_failing_sink_does_not_stop_the_others() {
        let a = Arc::new(Rec::default());
        let c = Arc::new(Rec::default());
        let failing = Arc::new(from_fn(|_: u32| Err(Error::Full { capacity: 3 })));
        let b = Broadcaster::new(vec![a.clone(), failing, c.clone()]);
        match b.write(7) {
            Err(Error::Broadcast {
                failed,
                total,
                first,
            }) => {
                assert_eq!((failed, total), (1, 3));
                assert!(matches!(*first, Error::Full { capacity: 3 }));
            }
            other => panic!("expected a broadcast error, got {other:?}"),
        }
        assert_eq!(*a.got.lock(), vec![7]);
        assert_eq!(*c.got.lock(), vec![7]);
        assert_eq!(b.len(), 3, "a failing sink stays");
        assert_eq!(b.stats().sink_errors.get(), 1);
    }

    #[test]
    fn close_reports_failed_closes() {
        let bad = Arc::new(FailClose);
        let already = Arc::new(Rec::default());
        already.close().unwrap();
        let b = Broadcaster::new(vec![bad, already, Arc::new(Rec::default())]);
        match b.close() {
            Err(Error::Broadcast { failed, total, .. }) => assert_eq!((failed, total), (1, 3)),
            other => panic!("expected a broadcast error, got {other:?}"),
        }
        assert!(b.is_empty());
    }

    struct FailClose;
    impl Sink<u32> for FailClose {
        fn write(&self, _: u32) -> Result<(), Error> {
            Ok(())
        }
        fn close(&self) -> Result<(), Error> {
            Err(Error::Undelivered { count: 2 })
        }
    }

    #[test]
    fn add_and_remove_do_not_wait_for_a_write_in_flight() {
        let (entered_tx, entered_rx) = bounded(1);
        let (gate_tx, gate_rx) = bounded::<()>(0);
        let slow = Arc::new(from_fn(move |_: u32| {
            let _ = entered_tx.send(());
            let _ = gate_rx.recv();
            Ok(())
        }));
        let b = Arc::new(Broadcaster::new(vec![slow]));
        let writer = {
            let b = b.clone();
            std::thread::spawn(move || b.write(1))
        };
        entered_rx.recv_timeout(SAFETY_NET).unwrap(); // the write is stuck in `slow`

        let late = Arc::new(Rec::default());
        let (done_tx, done_rx) = bounded(1);
        let adder = {
            let (b, late) = (b.clone(), late.clone());
            std::thread::spawn(move || {
                let id = b.add(late).unwrap();
                let extra = b.add(Arc::new(Rec::default())).unwrap();
                done_tx.send(b.remove(extra)).unwrap();
                id
            })
        };
        assert!(
            done_rx.recv_timeout(SAFETY_NET).unwrap(),
            "add/remove finished"
        );
        adder.join().unwrap();
        drop(gate_tx);
        writer.join().unwrap().unwrap();
        assert!(
            late.got.lock().is_empty(),
            "added after the write's snapshot"
        );
        b.write(2).unwrap();
        assert_eq!(*late.got.lock(), vec![2]);
    }

    /// One sink that never returns, behind a queue that drops; a fast sink beside it gets
    /// every event, and the writer never waits for the stuck one.
    #[test]
    fn a_stuck_sink_behind_a_queue_does_not_stall_the_others() {
        for overflow in [Overflow::DropNewest, Overflow::DropOldest] {
            let (gate_tx, gate_rx) = unbounded::<()>();
            let (entered_tx, entered_rx) = unbounded();
            let stuck = from_fn(move |_: u32| {
                let _ = entered_tx.send(());
                let _ = gate_rx.recv(); // blocks until the test ends
                Ok(())
            });
            let queue = Arc::new(
                QueueBuilder::new(4, overflow)
                    .close_timeout(Duration::from_millis(20))
                    .build(stuck)
                    .unwrap(),
            );
            let fast = Arc::new(Rec::default());
            let b = Broadcaster::new(vec![queue.clone(), fast.clone()]);
            b.write(0).unwrap();
            entered_rx.recv_timeout(SAFETY_NET).unwrap();
            for i in 1..1000 {
                b.write(i).unwrap();
            }
            assert_eq!(
                *fast.got.lock(),
                (0..1000).collect::<Vec<_>>(),
                "{overflow:?}"
            );
            let qs = queue.stats();
            let reason = match overflow {
                Overflow::DropNewest => DropReason::Newest,
                _ => DropReason::Oldest,
            };
            assert_eq!(qs.dropped.get(reason), 1000 - 1 - 4, "{overflow:?}");
            match b.close() {
                Err(Error::Broadcast {
                    failed: 1, first, ..
                }) => {
                    assert!(
                        // 4 queued; the stuck one stays in flight, counted when it returns.
                        matches!(*first, Error::Undelivered { count: 4 }),
                        "{first:?}"
                    );
                }
                other => panic!("expected the queue's undelivered events, got {other:?}"),
            }
            assert!(fast.closed.load(Ordering::SeqCst));
            drop(gate_tx); // let the detached worker finish
        }
    }
}
