//! The engine's multicast ring: each event is written once, and up to [`MAX_CONSUMERS`]
//! consumers (endpoints) read it in place, each at its own cursor.
//!
//! # Shape
//!
//! A power-of-two array of slots. A slot holds a sequence stamp, a routing mask and the value.
//! Position `p` lives in slot `p % capacity`; its stamp is `p + 1` once `p` is published.
//!
//! - **Producers** (any thread) claim the next position with a compare-and-swap on `head` that
//!   is only attempted when the slot is free: every registered consumer's cursor is past the
//!   position the slot last held, and that position was published. So a full ring is reported
//!   without side effects ([`Full`] gives the value back) and no position is ever claimed and
//!   left unpublished. The producer then writes the value and mask and stores the stamp
//!   (Release). This is the LMAX multi-producer scheme with a conditional claim.
//! - **Gating**: the minimum over the registered cursors is cached in one atomic and recomputed
//!   only when the cache says the ring is full. A recompute stores its result only while it
//!   holds a small try-lock that [`Ring::register`] also takes, so a recompute that missed a new
//!   cursor can never overwrite the lowered cache after the registration.
//! - **Consumers** (one thread each) read `stamp` (Acquire); when it is `p + 1` they read the
//!   slot in place. They stop at the first unpublished position (producers may publish out of
//!   order) and release what they have read by storing their cursor (Release).
//!
//! # Registration
//!
//! A consumer that registers while producers run must never read a slot that was lapped before
//! producers could see its cursor. [`Ring::register`] therefore: marks the index registered,
//! stores a conservative cursor (the head it read) and lowers the cache, and only then reads the
//! head again with a read-modify-write, which is the consumer's start. Every later RMW on the
//! head is in that RMW's release sequence, so a producer whose head load comes after it sees
//! the cursor; a producer whose head load came before it claims at most that start position,
//! and so overwrites only positions before it. The loom models `register_while_publishing`,
//! `register_beside_a_running_consumer` and `register_while_the_gate_is_recomputed` check this
//! (each fails if the RMW, the cache lowering or the gate's lock is left out).

use std::fmt;

use crossbeam_utils::CachePadded;

use self::sync::{Arc, AtomicBool, AtomicU64, Ordering, ValueCell};

/// How many consumers one ring can carry: a routing mask is one `u64`.
pub(crate) const MAX_CONSUMERS: usize = 64;

/// Set in `head` by [`Ring::seal`]: no claim succeeds after it.
const SEALED: u64 = 1 << 63;

/// The `gating` index [`Full`] carries when the ring is sealed rather than full.
pub(crate) const SEALED_GATING: usize = usize::MAX;

/// A cursor value meaning "no consumer here": it never gates a producer.
const UNREGISTERED: u64 = u64::MAX;

/// One position's storage: its stamp and its value.
struct Slot<T> {
    /// `p + 1` once position `p` is published here; 0 before the first lap.
    stamp: AtomicU64,
    /// The routing mask and value of the position last published here.
    cell: ValueCell<T>,
}

/// The cached gating minimum and what guards it.
struct Gate {
    /// A lower bound of the registered cursors as of the last recompute (or `UNREGISTERED`).
    cached_min: AtomicU64,
    /// Held while a recompute stores `cached_min` or a registration lowers it.
    lock: AtomicBool,
    /// Bit `i` is set while consumer `i` is registered.
    registered: AtomicU64,
}

/// A bounded multicast ring shared by many producers and up to [`MAX_CONSUMERS`] consumers.
///
/// Producers call [`try_publish`](Ring::try_publish); each consumer is a [`Consumer`] handle from
/// [`register`](Ring::register), owned by one thread.
pub(crate) struct Ring<T> {
    /// The next position a producer will claim.
    head: CachePadded<AtomicU64>,
    /// The gating cache, its lock and the registered set.
    gate: CachePadded<Gate>,
    /// One cursor per consumer index: the next position it has not released.
    cursors: Box<[CachePadded<AtomicU64>]>,
    /// The slots; `slots.len()` is a power of two.
    slots: Box<[Slot<T>]>,
}

// SAFETY: a `Ring` moves values of `T` in from producer threads and drops them on whichever
// thread reuses a slot or drops the ring, so `T: Send` is needed and enough to send it.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: shared access hands out `&T` to consumer threads (so `T: Sync`) and moves `T` between
// threads (so `T: Send`). Every slot access follows the stamp/cursor protocol: a producer writes
// a slot only after it claimed a position whose slot no registered cursor still needs, and a
// consumer reads it only after seeing its stamp (Acquire) and while its own cursor gates it.
unsafe impl<T: Send + Sync> Sync for Ring<T> {}

/// What [`Ring::try_publish`] gives back when the ring is full.
pub(crate) struct Full<T> {
    /// The value that was not published.
    pub value: T,
    /// The index of a consumer whose cursor holds the slot that would be reused.
    pub gating: usize,
}

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Full")
            .field("gating", &self.gating)
            .finish_non_exhaustive()
    }
}

impl<T> Ring<T> {
    /// Makes an empty ring of `capacity` slots.
    ///
    /// `capacity` must be a power of two >= 2; the engine's builder validates it, so a bad value
    /// here is a bug in the crate and panics.
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity >= 2 && capacity.is_power_of_two(),
            "ring capacity must be a power of two >= 2, got {capacity}"
        );
        Ring {
            head: CachePadded::new(AtomicU64::new(0)),
            gate: CachePadded::new(Gate {
                cached_min: AtomicU64::new(UNREGISTERED),
                lock: AtomicBool::new(false),
                registered: AtomicU64::new(0),
            }),
            cursors: (0..MAX_CONSUMERS)
                .map(|_| CachePadded::new(AtomicU64::new(UNREGISTERED)))
                .collect(),
            slots: (0..capacity)
                .map(|_| Slot {
                    stamp: AtomicU64::new(0),
                    cell: ValueCell::new(),
                })
                .collect(),
        }
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Positions claimed so far (the next position a producer will claim).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire) & !SEALED
    }

    /// Seals the ring: every later [`try_publish`](Ring::try_publish) fails (with
    /// [`SEALED_GATING`]). Returns the final head: every position before it was claimed before
    /// the seal and will be published; none after it ever will. Claims are compare-and-swaps
    /// on the head, so a claim and the seal are ordered one way or the other.
    pub fn seal(&self) -> u64 {
        self.head.fetch_or(SEALED, Ordering::SeqCst) & !SEALED
    }

    /// Consumer `index`'s cursor, if it is registered.
    pub fn position_of(&self, index: usize) -> Option<u64> {
        let c = self.cursors.get(index)?.load(Ordering::Acquire);
        (c != UNREGISTERED).then_some(c)
    }

    /// The lowest registered cursor and its consumer's index, if any is registered.
    pub fn min_position(&self) -> Option<(u64, usize)> {
        let (min, index) = self.min_cursor();
        (index != MAX_CONSUMERS).then_some((min, index))
    }

    /// The slot that holds position `pos`.
    fn slot(&self, pos: u64) -> &Slot<T> {
        // The mask keeps the index below `slots.len()`, which fits in a usize.
        &self.slots[(pos & (self.slots.len() as u64 - 1)) as usize]
    }

    /// Claims the next position only if its slot is free (every registered consumer's cursor is
    /// past `pos - capacity`, and the previous lap's value in that slot has been published),
    /// writes `value` and `mask`, and publishes them (stamp = `pos + 1`, Release). Returns the
    /// position.
    ///
    /// It never waits on a consumer: on a full ring it returns the value with the index of a
    /// consumer that gates it, and has changed nothing. It may spin briefly for a producer of
    /// the previous lap that claimed the slot and has not yet published it.
    pub fn try_publish(&self, value: T, mask: u64) -> Result<u64, Full<T>> {
        let capacity = self.slots.len() as u64;
        let mut spins = 0u32;
        loop {
            let pos = self.head.load(Ordering::SeqCst);
            if pos & SEALED != 0 {
                return Err(Full {
                    value,
                    gating: SEALED_GATING,
                });
            }
            // The slot last held `pos - capacity`; nothing before the first lap.
            let expected_stamp = if pos >= capacity {
                let reused = pos - capacity;
                if self.gate.cached_min.load(Ordering::SeqCst) <= reused {
                    let (min, gating) = self.refresh_gate();
                    if min <= reused {
                        return Err(Full { value, gating });
                    }
                }
                reused + 1
            } else {
                0
            };
            let slot = self.slot(pos);
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp != expected_stamp {
                if stamp < expected_stamp {
                    // The previous lap's producer claimed the slot and is still writing it.
                    sync::spin(&mut spins);
                }
                // Otherwise `pos` is stale: another producer has published it already.
                continue;
            }
            if self
                .head
                .compare_exchange_weak(pos, pos + 1, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // SAFETY: this thread claimed `pos`, and only the claimer of a position writes its
            // slot. The stamp (Acquire) showed `pos - capacity` published, so its producer is
            // done; every registered consumer's cursor was past `pos - capacity` (read with
            // Acquire, directly or through the cache), so their reads of it happened before,
            // and a consumer reads a slot only at positions >= its own cursor. A consumer that
            // registered meanwhile starts after `pos - capacity` (see `register`).
            let old = unsafe { slot.cell.replace(mask, value) };
            slot.stamp.store(pos + 1, Ordering::Release);
            // The previous lap's value is dropped after publishing, so a panicking `Drop` never
            // leaves a claimed position unpublished.
            drop(old);
            return Ok(pos);
        }
    }

    /// Recomputes the minimum over the registered cursors and, when no registration or other
    /// recompute holds the gate's lock, stores it in the cache. Returns the minimum and the
    /// index of the consumer holding it (`MAX_CONSUMERS` when none is registered).
    fn refresh_gate(&self) -> (u64, usize) {
        let locked = self
            .gate
            .lock
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        let (min, gating) = self.min_cursor();
        if locked {
            self.gate.cached_min.store(min, Ordering::SeqCst);
            self.gate.lock.store(false, Ordering::Release);
        }
        (min, gating)
    }

    /// The minimum registered cursor and its index (`UNREGISTERED`, `MAX_CONSUMERS` if none).
    fn min_cursor(&self) -> (u64, usize) {
        let mut bits = self.gate.registered.load(Ordering::SeqCst);
        let (mut min, mut gating) = (UNREGISTERED, MAX_CONSUMERS);
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let cursor = self.cursors[i].load(Ordering::SeqCst);
            if cursor < min {
                (min, gating) = (cursor, i);
            }
        }
        (min, gating)
    }

    /// Registers consumer `index` (0..[`MAX_CONSUMERS`]), starting at the current head; returns
    /// its handle. The consumer sees every position from its start on.
    ///
    /// Errors with [`Error::Config`](crate::Error::Config) if `index` is out of range or already
    /// registered (a consumer is unregistered when its handle is dropped).
    ///
    /// An associated function (`Ring::register(&ring, i)`) rather than a method on `&Arc<Self>`
    /// because loom's `Arc` cannot be a method receiver.
    pub fn register(this: &Arc<Self>, index: usize) -> Result<Consumer<T>, crate::Error> {
        if index >= MAX_CONSUMERS {
            return Err(crate::Error::config(
                "consumer",
                format!("index {index} is out of range: a ring has {MAX_CONSUMERS} consumers"),
            ));
        }
        let bit = 1u64 << index;
        if this.gate.registered.fetch_or(bit, Ordering::SeqCst) & bit != 0 {
            return Err(crate::Error::config(
                "consumer",
                format!("index {index} is already registered on this ring"),
            ));
        }
        let cursor = &this.cursors[index];
        let mut spins = 0u32;
        while this
            .gate
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            sync::spin(&mut spins);
        }
        // A conservative cursor first, so producers that see it cannot lap what follows it.
        let provisional = this.head.load(Ordering::SeqCst) & !SEALED;
        cursor.store(provisional, Ordering::SeqCst);
        this.gate
            .cached_min
            .fetch_min(provisional, Ordering::SeqCst);
        this.gate.lock.store(false, Ordering::Release);
        // The start: read with an RMW, so every producer claim ordered after it in the head's
        // modification order synchronizes with it and saw the cursor; claims before it are at
        // positions <= start, which reuse slots of positions < start.
        let start = this.head.fetch_add(0, Ordering::SeqCst) & !SEALED;
        cursor.store(start, Ordering::Release);
        Ok(Consumer {
            ring: Arc::clone(this),
            index,
            position: start,
        })
    }

    /// Removes consumer `index`: it no longer gates producers.
    fn unregister(&self, index: usize) {
        self.cursors[index].store(UNREGISTERED, Ordering::Release);
        self.gate
            .registered
            .fetch_and(!(1u64 << index), Ordering::SeqCst);
    }
}

/// A published position, read in place.
pub(crate) struct Entry<'a, T> {
    /// The routing mask the producer gave: bit `i` is set when consumer `i` should handle it.
    pub mask: u64,
    /// The value, borrowed from its slot (a plain `&T` outside loom models).
    pub value: sync::Ref<'a, T>,
}

/// The one handle of a registered consumer, owned by one worker thread.
///
/// Reading borrows the handle (`get(&self)`) and releasing needs it mutably
/// (`advance(&mut self)`), so no [`Entry`] can outlive the release of its slot. Dropping the
/// handle unregisters the consumer.
pub(crate) struct Consumer<T> {
    /// The ring it reads.
    ring: Arc<Ring<T>>,
    /// Its index: its cursor and its bit in routing masks.
    index: usize,
    /// Its cursor, as last stored (only this handle writes it).
    position: u64,
}

impl<T> Consumer<T> {
    /// Its index (0..[`MAX_CONSUMERS`]): its cursor and its bit in routing masks.
    #[allow(dead_code)] // used by tests and benches
    pub fn index(&self) -> usize {
        self.index
    }

    /// The next position it has not released.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The published entry at `pos`, or `None` when `pos` is not published yet (or is before
    /// [`position`](Consumer::position), where it may already be reused).
    ///
    /// Positions may be published out of order: a consumer that wants FIFO stops at the first
    /// `None`.
    pub fn get(&self, pos: u64) -> Option<Entry<'_, T>> {
        if pos < self.position {
            return None;
        }
        let slot = self.ring.slot(pos);
        if slot.stamp.load(Ordering::Acquire) != pos.wrapping_add(1) {
            return None;
        }
        // SAFETY: the stamp (Acquire) shows `pos` published, so its producer's write happened
        // before. No producer writes this slot again until it claims `pos + capacity`, which
        // needs this consumer's cursor past `pos`; the cursor is `self.position <= pos` and
        // moves only through `advance(&mut self)`, which cannot run while the returned entry
        // borrows `self`.
        let (mask, value) = unsafe { slot.cell.read() }?;
        Some(Entry { mask, value })
    }

    /// Releases every position before `to`: producers may reuse their slots. Moving backwards
    /// does nothing. `to` should not pass [`Ring::head`]; positions skipped unread are lost to
    /// this consumer.
    pub fn advance(&mut self, to: u64) {
        if to <= self.position {
            return;
        }
        debug_assert!(to <= self.ring.head(), "advanced past the head");
        self.position = to;
        self.ring.cursors[self.index].store(to, Ordering::Release);
    }

    /// How far it is behind the head, in positions.
    pub fn lag(&self) -> u64 {
        self.ring.head().saturating_sub(self.position)
    }

    /// The ring it reads.
    #[allow(dead_code)] // used by tests and benches
    pub fn ring(&self) -> &Arc<Ring<T>> {
        &self.ring
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.ring.unregister(self.index);
    }
}

/// The concurrency primitives the ring and the wake protocol use: std's, or loom's in test
/// builds under `--cfg hookwire_loom` (loom is a dev-dependency), so the same code can be model-checked.
pub(crate) mod sync {
    #[cfg(all(hookwire_loom, test))]
    pub(crate) use loom::sync::Arc;
    #[cfg(all(hookwire_loom, test))]
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
    #[cfg(not(all(hookwire_loom, test)))]
    pub(crate) use std::sync::Arc;
    #[cfg(not(all(hookwire_loom, test)))]
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

    /// Waits a little before a retry: a few CPU spin hints, then yielding the thread (loom:
    /// always a yield, so the model can switch threads).
    pub(crate) fn spin(step: &mut u32) {
        #[cfg(all(hookwire_loom, test))]
        {
            let _ = step;
            loom::thread::yield_now();
        }
        #[cfg(not(all(hookwire_loom, test)))]
        {
            if *step < 6 {
                for _ in 0..(1u32 << *step) {
                    std::hint::spin_loop();
                }
                *step += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// A shared borrow of a slot's value: `&'a T`.
    #[cfg(not(all(hookwire_loom, test)))]
    pub(crate) type Ref<'a, T> = &'a T;

    /// A shared borrow of a slot's value that keeps loom's read tracking alive while it lives,
    /// so a producer writing the slot meanwhile is reported as a data race.
    #[cfg(all(hookwire_loom, test))]
    pub(crate) struct Ref<'a, T> {
        /// loom's tracked read access to the cell.
        guard: loom::cell::ConstPtr<Option<(u64, T)>>,
        /// Borrows the consumer like `&'a T` does.
        _borrow: std::marker::PhantomData<&'a T>,
    }

    #[cfg(all(hookwire_loom, test))]
    impl<T> std::ops::Deref for Ref<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: `ValueCell::read` made this guard only for a cell holding a value, under
            // its caller's promise that no writer runs while the borrow lives (which loom checks).
            match unsafe { self.guard.deref() } {
                Some((_, value)) => value,
                None => unreachable!("a Ref is only made for a filled cell"),
            }
        }
    }

    /// A slot's mask and value: an `UnsafeCell` (std's or loom's) accessed by the ring's protocol.
    pub(crate) struct ValueCell<T> {
        /// `None` until the slot's first publish.
        #[cfg(not(all(hookwire_loom, test)))]
        inner: std::cell::UnsafeCell<Option<(u64, T)>>,
        /// `None` until the slot's first publish.
        #[cfg(all(hookwire_loom, test))]
        inner: loom::cell::UnsafeCell<Option<(u64, T)>>,
    }

    impl<T> ValueCell<T> {
        /// An empty cell.
        pub(crate) fn new() -> Self {
            ValueCell {
                inner: Default::default(),
            }
        }

        /// Stores `mask` and `value`, returning what the cell held.
        ///
        /// # Safety
        /// The caller has exclusive access: no other thread reads or writes the cell meanwhile.
        pub(crate) unsafe fn replace(&self, mask: u64, value: T) -> Option<(u64, T)> {
            #[cfg(not(all(hookwire_loom, test)))]
            {
                // SAFETY: exclusive access, promised by the caller.
                unsafe { (*self.inner.get()).replace((mask, value)) }
            }
            #[cfg(all(hookwire_loom, test))]
            {
                // SAFETY: exclusive access, promised by the caller (and checked by loom).
                self.inner
                    .with_mut(|p| unsafe { (*p).replace((mask, value)) })
            }
        }

        /// The mask and a borrow of the value, if the cell holds one.
        ///
        /// # Safety
        /// No thread writes the cell while the returned borrow lives, and the last write
        /// happened before this call.
        pub(crate) unsafe fn read(&self) -> Option<(u64, Ref<'_, T>)> {
            #[cfg(not(all(hookwire_loom, test)))]
            {
                // SAFETY: no concurrent writer, promised by the caller.
                let held = unsafe { &*self.inner.get() };
                held.as_ref().map(|(mask, value)| (*mask, value))
            }
            #[cfg(all(hookwire_loom, test))]
            {
                let guard = self.inner.get();
                // SAFETY: no concurrent writer, promised by the caller (and checked by loom).
                let mask = unsafe { guard.deref() }.as_ref().map(|(mask, _)| *mask)?;
                Some((
                    mask,
                    Ref {
                        guard,
                        _borrow: std::marker::PhantomData,
                    },
                ))
            }
        }
    }
}

#[cfg(all(test, not(hookwire_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU8;
    use std::time::{Duration, Instant};

    /// A value that records its drops in a shared table, one counter per id.
    struct Counted {
        id: usize,
        drops: std::sync::Arc<[AtomicU8]>,
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.drops[self.id].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn drop_table(n: usize) -> std::sync::Arc<[AtomicU8]> {
        (0..n).map(|_| AtomicU8::new(0)).collect()
    }

    fn dropped(table: &[AtomicU8]) -> Vec<u8> {
        table.iter().map(|d| d.load(Ordering::Relaxed)).collect()
    }

    /// Reads every published entry at the consumer's cursor, then releases them.
    fn drain<T: Copy>(c: &mut Consumer<T>) -> Vec<(u64, T)> {
        let mut out = Vec::new();
        let mut pos = c.position();
        while let Some(e) = c.get(pos) {
            out.push((e.mask, *e.value));
            pos += 1;
        }
        c.advance(pos);
        out
    }

    #[test]
    fn one_producer_one_consumer_in_order() {
        let ring = Arc::new(Ring::new(8));
        let mut c = Ring::register(&ring, 0).unwrap();
        assert_eq!((c.index(), c.position(), c.lag()), (0, 0, 0));
        for i in 0..5u32 {
            assert_eq!(ring.try_publish(i, 1).unwrap(), u64::from(i));
        }
        assert_eq!((ring.head(), c.lag()), (5, 5));
        assert!(c.get(5).is_none(), "position 5 is not published");
        let got: Vec<u32> = drain(&mut c).into_iter().map(|(_, v)| v).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert_eq!((c.position(), c.lag()), (5, 0));
        assert!(c.get(4).is_none(), "a released position is not readable");
    }

    #[test]
    fn masks_travel_with_values() {
        let ring = Arc::new(Ring::new(4));
        let mut a = Ring::register(&ring, 0).unwrap();
        let mut b = Ring::register(&ring, 5).unwrap();
        ring.try_publish('x', 0b1).unwrap();
        ring.try_publish('y', 1 << 5).unwrap();
        ring.try_publish('z', 0b1 | 1 << 5).unwrap();
        let mine = |c: &mut Consumer<char>| -> String {
            let bit = 1u64 << c.index();
            drain(c)
                .into_iter()
                .filter(|(mask, _)| mask & bit != 0)
                .map(|(_, v)| v)
                .collect()
        };
        assert_eq!(mine(&mut a), "xz");
        assert_eq!(mine(&mut b), "yz");
    }

    #[test]
    fn wraps_around_many_laps() {
        let ring = Arc::new(Ring::new(4));
        let mut c = Ring::register(&ring, 3).unwrap();
        let mut expected = 0u64;
        for round in 0..300u64 {
            // Fill up to three positions, then read them all back.
            for k in 0..(round % 3 + 1) {
                ring.try_publish(round * 10 + k, 0).unwrap();
            }
            let mut pos = c.position();
            for k in 0..(round % 3 + 1) {
                let e = c.get(pos).expect("published");
                assert_eq!(*e.value, round * 10 + k);
                assert_eq!(pos, expected);
                pos += 1;
                expected += 1;
            }
            c.advance(pos);
        }
        assert_eq!(ring.head(), expected);
        assert!(ring.head() > 100 * 4, "many laps");
    }

    #[test]
    fn full_ring_returns_the_value_and_the_gating_consumer() {
        let ring = Arc::new(Ring::new(4));
        let mut fast = Ring::register(&ring, 3).unwrap();
        let mut slow = Ring::register(&ring, 7).unwrap();
        for i in 0..4 {
            ring.try_publish(i, u64::MAX).unwrap();
        }
        fast.advance(4);
        slow.advance(1);
        ring.try_publish(4, 0).unwrap(); // reuses position 0's slot: both are past it
        let full = ring.try_publish(5, 0).unwrap_err();
        assert_eq!((full.value, full.gating), (5, 7));
        assert_eq!(ring.head(), 5, "a failed publish claims nothing");
        assert!(format!("{full:?}").contains("gating: 7"));
        // The slow consumer still reads what it has not released.
        assert_eq!(*slow.get(1).unwrap().value, 1);
        slow.advance(5);
        for i in 5..8 {
            assert_eq!(ring.try_publish(i, 0).unwrap(), i);
        }
        // Position 8 reuses position 4's slot, which `fast` has not released.
        let full = ring.try_publish(8, 0).unwrap_err();
        assert_eq!(full.gating, 3, "now the other consumer gates");
        fast.advance(5);
        assert_eq!(ring.try_publish(8, 0).unwrap(), 8);
    }

    #[test]
    fn a_dropped_consumer_no_longer_gates() {
        let ring = Arc::new(Ring::new(2));
        let stuck = Ring::register(&ring, 0).unwrap();
        let mut live = Ring::register(&ring, 1).unwrap();
        ring.try_publish(0, 0).unwrap();
        ring.try_publish(1, 0).unwrap();
        live.advance(2);
        assert_eq!(ring.try_publish(2, 0).unwrap_err().gating, 0);
        drop(stuck);
        assert_eq!(ring.try_publish(2, 0).unwrap(), 2);
        // And with no consumer at all, producers only wait for each other.
        drop(live);
        for i in 3..20 {
            assert_eq!(ring.try_publish(i, 0).unwrap(), i);
        }
        // The index is free again; the new consumer starts at the head.
        let again = Ring::register(&ring, 0).unwrap();
        assert_eq!(again.position(), 20);
        assert!(again.get(19).is_none());
    }

    #[test]
    fn consumers_at_different_speeds_each_see_everything() {
        let ring = Arc::new(Ring::new(8));
        let mut consumers: Vec<_> = (0..3)
            .map(|i| Ring::register(&ring, i * 2).unwrap())
            .collect();
        let mut seen = vec![Vec::new(); 3];
        let mut next = 0u64;
        for step in 0..2_000u64 {
            // Publish until full (or 3 per step), then each consumer reads at its own pace.
            for _ in 0..3 {
                match ring.try_publish(next, 0) {
                    Ok(pos) => {
                        assert_eq!(pos, next);
                        next += 1;
                    }
                    Err(full) => {
                        assert_eq!(full.value, next);
                        break;
                    }
                }
            }
            for (k, c) in consumers.iter_mut().enumerate() {
                // Consumer k reads at most k + 1 entries every (k + 1) steps.
                if step % (k as u64 + 1) != 0 {
                    continue;
                }
                let mut pos = c.position();
                while pos < c.position() + k as u64 + 1 {
                    let Some(e) = c.get(pos) else { break };
                    seen[k].push(*e.value);
                    pos += 1;
                }
                c.advance(pos);
            }
        }
        for (k, c) in consumers.iter_mut().enumerate() {
            seen[k].extend(drain(c).into_iter().map(|(_, v)| v));
            assert_eq!(seen[k], (0..next).collect::<Vec<_>>(), "consumer {k}");
        }
        assert!(next > 1_000, "the ring kept moving: {next}");
    }

    #[test]
    fn values_are_dropped_exactly_once() {
        const N: usize = 50;
        let drops = drop_table(N);
        let ring = Arc::new(Ring::new(4));
        let mut c = Ring::register(&ring, 0).unwrap();
        for id in 0..N {
            let value = Counted {
                id,
                drops: drops.clone(),
            };
            ring.try_publish(value, 0).map_err(|_| "full").unwrap();
            let pos = c.position();
            assert_eq!(c.get(pos).unwrap().value.id, id);
            c.advance(pos + 1);
        }
        // Each reused slot dropped its previous value; the last lap is still held.
        let counts = dropped(&drops);
        assert!(counts[..N - 4].iter().all(|&d| d == 1), "{counts:?}");
        assert!(counts[N - 4..].iter().all(|&d| d == 0), "{counts:?}");
        // A full ring gives the value back rather than dropping it.
        let blocker = Ring::register(&ring, 1).unwrap();
        for id in 0..4 {
            let value = Counted {
                id,
                drops: drop_table(4),
            };
            ring.try_publish(value, 0).map_err(|_| "full").unwrap();
        }
        let extra = drop_table(1);
        let full = ring
            .try_publish(
                Counted {
                    id: 0,
                    drops: extra.clone(),
                },
                0,
            )
            .unwrap_err();
        assert_eq!(dropped(&extra), [0]);
        drop(full);
        assert_eq!(dropped(&extra), [1]);
        drop((c, blocker, ring));
        assert!(dropped(&drops).iter().all(|&d| d == 1));
    }

    #[test]
    fn register_rejects_bad_indexes() {
        let ring: Arc<Ring<u8>> = Arc::new(Ring::new(2));
        let err = Ring::register(&ring, MAX_CONSUMERS).err().unwrap();
        assert!(matches!(
            err,
            crate::Error::Config {
                field: "consumer",
                ..
            }
        ));
        assert!(err.to_string().contains("out of range"), "{err}");
        let first = Ring::register(&ring, 63).unwrap();
        let err = Ring::register(&ring, 63).err().unwrap();
        assert!(err.to_string().contains("already registered"), "{err}");
        drop(first);
        assert_eq!(Ring::register(&ring, 63).unwrap().index(), 63);
    }

    #[test]
    fn a_new_consumer_starts_at_the_head() {
        let ring = Arc::new(Ring::new(4));
        for i in 0..6 {
            ring.try_publish(i, 0).unwrap();
        }
        let mut c = Ring::register(&ring, 0).unwrap();
        assert_eq!((c.position(), c.lag()), (6, 0));
        assert!(c.get(5).is_none(), "before its start");
        ring.try_publish(6, 0).unwrap();
        assert_eq!(drain(&mut c), [(0, 6)]);
        // It gates from its start on: four more fill the ring.
        for i in 7..11 {
            ring.try_publish(i, 0).unwrap();
        }
        assert_eq!(ring.try_publish(11, 0).unwrap_err().gating, 0);
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn capacity_must_be_a_power_of_two() {
        let _ = Ring::<u8>::new(6);
    }

    /// 4 producers x 50k events through a ring of 64 to 3 consumers on their own threads, at
    /// different speeds: each consumer sees every event once, in each producer's order, and
    /// every value is dropped exactly once.
    #[test]
    fn stress_many_producers_many_consumers() {
        const PRODUCERS: usize = 4;
        const PER_PRODUCER: usize = 50_000;
        const TOTAL: usize = PRODUCERS * PER_PRODUCER;
        let deadline = Instant::now() + Duration::from_secs(120);
        let drops = drop_table(TOTAL);
        let ring = Arc::new(Ring::<Counted>::new(64));
        let consumers: Vec<_> = (0..3).map(|i| Ring::register(&ring, i).unwrap()).collect();

        let readers: Vec<_> = consumers
            .into_iter()
            .map(|mut c| {
                std::thread::spawn(move || {
                    let mut next_seq = [0usize; PRODUCERS];
                    let mut count = 0usize;
                    while count < TOTAL {
                        assert!(Instant::now() < deadline, "consumer {} stuck", c.index());
                        let start = c.position();
                        let mut pos = start;
                        while let Some(e) = c.get(pos) {
                            assert_eq!(e.mask, 0b111);
                            let (p, seq) = (e.value.id / PER_PRODUCER, e.value.id % PER_PRODUCER);
                            assert_eq!(seq, next_seq[p], "producer {p}'s order");
                            next_seq[p] += 1;
                            count += 1;
                            pos += 1;
                            if c.index() == 2 {
                                // The slow one.
                                for _ in 0..200 {
                                    std::hint::spin_loop();
                                }
                            }
                            if c.index() == 1 && pos - start == 8 {
                                break; // releases in small batches
                            }
                        }
                        if pos == start {
                            std::thread::yield_now();
                        }
                        c.advance(pos);
                    }
                    assert_eq!(next_seq, [PER_PRODUCER; PRODUCERS]);
                    count
                })
            })
            .collect();
        let writers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (ring, drops) = (ring.clone(), drops.clone());
                std::thread::spawn(move || {
                    let mut fulls = 0u64;
                    for seq in 0..PER_PRODUCER {
                        let mut value = Counted {
                            id: p * PER_PRODUCER + seq,
                            drops: drops.clone(),
                        };
                        loop {
                            match ring.try_publish(value, 0b111) {
                                Ok(_) => break,
                                Err(full) => {
                                    assert!(full.gating < 3);
                                    assert!(Instant::now() < deadline, "producer {p} stuck");
                                    value = full.value;
                                    fulls += 1;
                                    std::thread::yield_now();
                                }
                            }
                        }
                    }
                    fulls
                })
            })
            .collect();
        let fulls: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        for r in readers {
            assert_eq!(r.join().unwrap(), TOTAL);
        }
        assert_eq!(ring.head(), TOTAL as u64);
        assert!(fulls > 0, "the ring of 64 was full at times");
        let counts = dropped(&drops);
        assert_eq!(counts.iter().filter(|&&d| d == 1).count(), TOTAL - 64);
        drop(ring);
        assert!(dropped(&drops).iter().all(|&d| d == 1), "each dropped once");
    }
}

/// loom models: run with `RUSTFLAGS="--cfg hookwire_loom" cargo test --release --lib engine::`.
///
/// Waiting threads make loom explore unbounded schedules (a spinning thread can be picked again
/// and again), so no thread here waits for another: producers try each value once and keep
/// what a full ring gives back, and consumers read what is there a bounded number of times,
/// then read the rest after joining the producers. Every outcome is checked.
#[cfg(all(test, hookwire_loom))]
mod loom_models {
    use super::*;
    use loom::thread;

    /// Explores every interleaving with at most `preemptions` forced thread switches (`None`:
    /// all of them), unless `LOOM_MAX_PREEMPTIONS` says otherwise.
    pub(crate) fn model(preemptions: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = preemptions;
        }
        builder.check(f);
    }

    /// Reads every published entry at the cursor and releases it, recording (position, value).
    fn drain<T: Copy>(c: &mut Consumer<T>, mask: u64, out: &mut Vec<(u64, T)>) {
        let mut pos = c.position();
        while let Some(e) = c.get(pos) {
            assert_eq!(e.mask, mask);
            out.push((pos, *e.value));
            pos += 1;
        }
        c.advance(pos);
    }

    /// Two producers and one consumer on a ring of 2 whose slots already hold a lap: every
    /// value is either read once, at the position its producer claimed, in each producer's
    /// order, or given back by a full ring; and no read overlaps a write (loom's cell tracking
    /// reports a torn read as a data race).
    #[test]
    fn two_producers_one_consumer() {
        model(None, || {
            let ring = Arc::new(Ring::new(2));
            let mut c = Ring::register(&ring, 0).unwrap();
            let mut warmup = Vec::new();
            for v in [(0u8, 0u8), (0, 1)] {
                ring.try_publish(v, 1).unwrap();
            }
            drain(&mut c, 1, &mut warmup);
            assert_eq!(warmup.len(), 2);

            let producers: Vec<_> = [(1u8, 2u8), (2, 1)]
                .into_iter()
                .map(|(p, n)| {
                    let ring = ring.clone();
                    thread::spawn(move || {
                        let mut claimed = Vec::new();
                        for seq in 0..n {
                            match ring.try_publish((p, seq), 1) {
                                Ok(pos) => claimed.push((pos, (p, seq))),
                                Err(full) => {
                                    assert_eq!((full.value, full.gating), ((p, seq), 0));
                                    break; // keeps this producer's order
                                }
                            }
                        }
                        claimed
                    })
                })
                .collect();
            let mut read = Vec::new();
            drain(&mut c, 1, &mut read);
            drain(&mut c, 1, &mut read);
            let mut claimed: Vec<_> = producers
                .into_iter()
                .flat_map(|p| p.join().unwrap())
                .collect();
            drain(&mut c, 1, &mut read);
            claimed.sort();
            assert_eq!(
                read, claimed,
                "each value at the position its producer claimed"
            );
            assert_eq!(ring.head(), 2 + claimed.len() as u64);
            assert!(claimed.len() >= 2, "two slots were free");
        });
    }

    /// With no consumer, two producers lap a ring of 2: a producer whose slot's previous lap is
    /// claimed but not yet published waits for it (the stamp check) instead of writing the slot
    /// at the same time (loom reports that as a data race), and every claim succeeds.
    #[test]
    fn producers_lap_an_ungated_ring() {
        model(None, || {
            let ring = Arc::new(Ring::new(2));
            let producers: Vec<_> = (0..2u64)
                .map(|p| {
                    let ring = ring.clone();
                    thread::spawn(move || {
                        for i in 0..2 {
                            ring.try_publish(p * 10 + i, 1).unwrap();
                        }
                    })
                })
                .collect();
            for p in producers {
                p.join().unwrap();
            }
            assert_eq!(ring.head(), 4);
            let c = Ring::register(&ring, 0).unwrap();
            assert!(c.get(3).is_none(), "before its start");
        });
    }

    /// Reads what a consumer registered at `start` can read now, then (after `finish`) the
    /// rest, checking each position holds its own value.
    fn read_from_start(c: &mut Consumer<u64>, finish: impl FnOnce()) {
        let start = c.position();
        let mut read = Vec::new();
        drain(c, 1, &mut read);
        finish();
        drain(c, 1, &mut read);
        let head = c.ring().head();
        assert!(start <= head);
        let expected: Vec<_> = (start..head).map(|p| (p, p)).collect();
        assert_eq!(
            read, expected,
            "from its start on, every position, none lapped"
        );
    }

    /// A producer laps a ring of 2 that nobody gates while a consumer registers: the consumer
    /// reads every position from its start on, each holding the value published there (value =
    /// position), and never a slot that is being overwritten.
    #[test]
    fn register_while_publishing() {
        model(None, || {
            let ring = Arc::new(Ring::new(2));
            let producer = {
                let ring = ring.clone();
                thread::spawn(move || {
                    for i in 0..4u64 {
                        match ring.try_publish(i, 1) {
                            Ok(pos) => assert_eq!(pos, i),
                            Err(full) => {
                                assert_eq!((full.value, full.gating), (i, 0));
                                break;
                            }
                        }
                    }
                })
            };
            let mut c = Ring::register(&ring, 0).unwrap();
            read_from_start(&mut c, || producer.join().unwrap());
        });
    }

    /// A registration racing a gate recompute: a producer that read the registered set before
    /// the new consumer joined must not store a cached minimum that lets another producer lap
    /// the new consumer (the gate's lock orders that store before the registration's).
    #[test]
    fn register_while_the_gate_is_recomputed() {
        model(Some(2), || {
            let ring = Arc::new(Ring::new(2));
            let mut old = Ring::register(&ring, 1).unwrap();
            for i in 0..2u64 {
                ring.try_publish(i, 1).unwrap();
            }
            drain(&mut old, 1, &mut Vec::new());
            // The cache still says 0, so the next publish recomputes it.
            let producers: Vec<_> = [1u64, 2]
                .into_iter()
                .map(|n| {
                    let ring = ring.clone();
                    thread::spawn(move || {
                        for _ in 0..n {
                            let head = ring.head();
                            if ring.try_publish(head, 1).is_err() {
                                break;
                            }
                        }
                    })
                })
                .collect();
            let reader = thread::spawn(move || {
                drain(&mut old, 1, &mut Vec::new());
                drain(&mut old, 1, &mut Vec::new());
            });
            let mut c = Ring::register(&ring, 0).unwrap();
            let start = c.position();
            let mut read = Vec::new();
            drain(&mut c, 1, &mut read);
            for p in producers {
                p.join().unwrap();
            }
            reader.join().unwrap();
            drain(&mut c, 1, &mut read);
            let positions: Vec<_> = read.iter().map(|&(pos, _)| pos).collect();
            assert_eq!(positions, (start..ring.head()).collect::<Vec<_>>());
        });
    }

    /// As above, beside a consumer that was registered first and reads on its own thread, so
    /// the gating cache is lowered, recomputed and stored while the new consumer registers.
    #[test]
    fn register_beside_a_running_consumer() {
        model(Some(3), || {
            let ring = Arc::new(Ring::new(2));
            let mut old = Ring::register(&ring, 1).unwrap();
            let producer = {
                let ring = ring.clone();
                thread::spawn(move || {
                    for i in 0..3u64 {
                        if ring.try_publish(i, 1).is_err() {
                            break;
                        }
                    }
                })
            };
            let reader = thread::spawn(move || {
                let mut read = Vec::new();
                drain(&mut old, 1, &mut read);
                drain(&mut old, 1, &mut read);
                assert!(read.iter().all(|&(pos, v)| pos == v));
            });
            let mut c = Ring::register(&ring, 0).unwrap();
            read_from_start(&mut c, || {
                producer.join().unwrap();
                reader.join().unwrap();
            });
        });
    }
}
