//! Forgetting a durable endpoint while the dispatcher runs: its backlog goes to the dead
//! letters and its store slot is freed for another endpoint.
//!
//! The store-level [`forget_endpoint`](crate::store::forget_endpoint) needs the directory to
//! itself; this one works beside the persistence thread. The backlog is read with a reader
//! of its own and written to the dead letters a chunk at a time, taking the store's lock only
//! to save the cursor after each chunk, so group commits go on meanwhile. What makes the slot
//! safe to reuse at once is `Durable::floors`: from the moment the forget starts, an event
//! still carrying the endpoint's bit (a publisher that read the routing table before the
//! endpoint was removed) is committed without it, and a new endpoint that takes the slot
//! only gets the events routed with a table it is in.

use std::time::{Duration, Instant};

use crate::Error;
use crate::config::MAX_DURATION;
use crate::store::Forgotten;
use crate::store::forget::{dead_letter_backlog, no_such_endpoint};

use super::Dispatcher;
use crate::engine::persist::Durable;

impl Dispatcher {
    /// Forgets the durable endpoint called `name`, which must not be added to this dispatcher
    /// ([`remove_endpoint`](Self::remove_endpoint) it first): every event of its backlog (from
    /// its cursor to the last committed record) is written to the dead letters, with error
    /// [`FORGOTTEN_ERROR`](crate::store::FORGOTTEN_ERROR); then its slot and cursor are
    /// removed from the store, and the slot may be given to a new endpoint at once, which
    /// never receives the old events. An event published to it that was not committed when
    /// the forget began (a publisher racing its removal) is not written for it: its ticket
    /// fails. The dead letters stay; they are replayed once an endpoint of that name is added
    /// again.
    ///
    /// Waits up to `timeout` for a removal whose deadline passed to let go of the endpoint.
    /// Fails with [`Error::Config`] without a store, if the endpoint is added (or being
    /// forgotten), or if the store does not know it; [`Error::Timeout`];
    /// [`Error::DeadLettersFull`] when the dead letters have no room for the rest of the
    /// backlog (what fitted is dead-lettered, the cursor moved past it, and the endpoint keeps
    /// its slot: forgetting it again goes on from there); [`Error::Storage`].
    pub fn forget_endpoint(&self, name: &str, timeout: Duration) -> Result<Forgotten, Error> {
        let d = self.store()?.clone();
        let deadline = Instant::now() + timeout.min(MAX_DURATION);
        {
            let mut admin = self.inner.admin.lock();
            if admin.endpoints.values().any(|s| s.name == name) {
                return Err(Error::config(
                    "name",
                    format!(
                        "{name:?} is added to this dispatcher: remove it first \
                         (Dispatcher::remove_endpoint)"
                    ),
                ));
            }
            if !admin.forgetting.insert(name.to_owned()) {
                return Err(Error::config(
                    "name",
                    format!("{name:?} is being forgotten already"),
                ));
            }
        }
        let result = forget(&d, name, deadline, timeout);
        self.inner.admin.lock().forgetting.remove(name);
        result
    }
}

fn forget(
    d: &Durable,
    name: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<Forgotten, Error> {
    // A removed endpoint leaves at the persistence thread's next turn, its cursor saved.
    let mut pause = Duration::from_micros(200);
    while d.has_member(name) {
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout {
                waiting_for: "the removed endpoint to let go of its cursor",
                after: timeout,
            });
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
    let state = d
        .store()?
        .endpoints()
        .into_iter()
        .find_map(|(n, st)| (n == name).then_some(st))
        .ok_or_else(|| no_such_endpoint(name))?;
    // From here on nothing is committed with its bit; then what is committed is its backlog.
    let slot = usize::from(state.slot);
    let floor_before = std::mem::replace(&mut d.floors.lock()[slot], u64::MAX);
    let result: Result<Forgotten, Error> = (|| {
        let (through, mut reader) = {
            let store = d.store()?;
            (store.durable_through(), store.reader()?)
        };
        let done = dead_letter_backlog(
            name,
            state,
            through,
            &mut *reader,
            &*d.letters,
            &mut |next| d.store()?.save_cursors(&[(state.slot, next)]),
        )?;
        d.store()?.forget(name)?;
        Ok(done)
    })();
    if result.is_err() {
        // Still registered (the forget can be run again): its slot is live, so its dead
        // letters can be replayed and committed with its bit (found by review: a failed
        // forget left the floor at MAX, and every replay for it failed).
        d.floors.lock()[slot] = floor_before;
    }
    let done = result?;
    Ok(done)
}

#[cfg(all(test, not(hookwire_loom)))]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::RawEvent;
    use crate::engine::ticket::Ticket;
    use crate::store::{LogStore, Store, StoreConfig};

    /// An event that raced the forget (worked out with a routing table from before it) is
    /// committed without the forgotten slot's bit, so the endpoint that takes the slot next
    /// never sees it; its ticket fails when no endpoint is left for it. Events routed with
    /// the new endpoint's table keep the bit.
    #[test]
    fn events_routed_before_a_forget_lose_the_slot_bit() {
        let dir =
            std::env::temp_dir().join(format!("hookwire-forget-floors-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = LogStore::open(StoreConfig::new(&dir)).unwrap();
        assert_eq!(store.endpoint("a").unwrap().slot, 0);
        assert_eq!(store.endpoint("b").unwrap().slot, 1);
        let d = Arc::new(Durable::new(Box::new(store)));
        let ev = |i: u64| RawEvent::parse(format!(r#"{{"id":"e{i}"}}"#)).unwrap();
        let submit = |i, slots, version| Ticket {
            cell: d
                .submit(
                    ev(i),
                    slots,
                    version,
                    Instant::now(),
                    true,
                    Duration::from_secs(5),
                )
                .unwrap(),
            durable: Some(d.clone()),
        };
        // "a" (slot 0) is forgotten; a new endpoint takes slot 0, routed from version 7.
        d.floors.lock()[0] = u64::MAX;
        let only_old = submit(1, 0b01, 5);
        let both_old = submit(2, 0b11, 5);
        d.routed(0, 7);
        let stale = submit(3, 0b01, 6);
        let new = submit(4, 0b01, 7);
        let runner = {
            let d = d.clone();
            std::thread::spawn(move || d.run(|_| true))
        };
        d.stop();
        runner.join().unwrap();
        let wait = |t: &Ticket| t.wait(Duration::from_secs(5));
        assert!(matches!(wait(&only_old), Err(Error::Config { .. })));
        assert!(matches!(wait(&stale), Err(Error::Config { .. })));
        let (s2, s4) = (
            wait(&both_old).unwrap().unwrap(),
            wait(&new).unwrap().unwrap(),
        );
        let mut got = Vec::new();
        let store = d.store().unwrap();
        store
            .reader()
            .unwrap()
            .read(1, store.durable_through(), u64::MAX, 100, &mut |r| {
                got.push((r.seq, r.mask))
            })
            .unwrap();
        assert_eq!(got, [(s2, 0b10), (s4, 0b01)]);
        drop(store);
        d.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
