//! Ending a dispatcher by a deadline: drain, count what is left, stop the threads.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::MAX_DURATION;
use crate::stats::{DropReason, EndpointSnapshot};
use crate::{Error, Event, Sink};

use super::Dispatcher;
use crate::engine::worker::Command;

/// What [`Dispatcher::shutdown`] did.
#[derive(Debug, Clone, Serialize)]
#[must_use = "the report says what was not delivered"]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Whether everything accepted was delivered, dropped or dead-lettered before the deadline.
    pub drained: bool,
    /// Events that were still pending at the deadline (now counted as dropped, reason
    /// `shutdown`).
    pub undelivered: u64,
    /// Events of durable endpoints that were not delivered and stay in the log: the next
    /// dispatcher on the same data directory delivers them (they are not counted as dropped).
    /// A lower bound when an endpoint was stopped while reading its backlog from the log
    /// (records it had not read yet are not counted; `drained` is then false).
    pub kept: u64,
    /// Every endpoint's final snapshot.
    pub endpoints: Vec<EndpointSnapshot>,
}

impl Dispatcher {
    /// Stops taking events, delivers what it can within `timeout`, then stops the workers.
    /// What is still pending at the deadline (requests on the wire included) is counted as
    /// dropped (`shutdown`) and reported, except for durable endpoints: their events stay in
    /// the log (`kept`) for the next start. Never hangs; idempotent (a second call returns
    /// the first call's report).
    pub fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let inner = &*self.inner;
        let mut report = inner.report.lock();
        if let Some(r) = report.as_ref() {
            return r.clone();
        }
        let timeout = timeout.min(MAX_DURATION);
        let deadline = Instant::now() + timeout;
        inner.closed.store(true, Ordering::SeqCst);
        // Durable events queued before the close are committed and put in the ring first.
        if let Some(d) = &inner.durable {
            let submitted = d.submitted();
            while !d.settled_through(submitted) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        // No claim succeeds after the seal, so the workers can drain the ring to its end.
        let end = inner.ring.seal();
        let before: u64 = self.shutdown_drops();
        let drained = self.wait_idle(deadline.saturating_duration_since(Instant::now()));
        for w in &inner.workers {
            if w.commands.send(Command::Shutdown { end }).is_ok() {
                w.wake.wake();
            }
        }
        for w in &inner.workers {
            if let Some(t) = w.thread.lock().take() {
                // A worker exits promptly after Shutdown (it only counts what is left); it
                // cannot block, so joining it cannot hang.
                let _ = t.join();
            }
        }
        // The workers held the log reader's only senders: it ends after its current read.
        if let Some(t) = inner.reader_thread.lock().take() {
            let _ = t.join();
        }
        // The persistence thread finishes what is queued, saves the cursors, and stops.
        if let Some(d) = &inner.durable {
            d.stop();
            if let Some(p) = inner.persister.lock().take()
                && let Some(t) = p.lock().take()
            {
                let _ = t.join();
            }
            d.close();
        }
        let endpoints = self.snapshot();
        let undelivered = self.shutdown_drops() - before;
        let kept = {
            let admin = inner.admin.lock();
            admin
                .endpoints
                .values()
                .filter(|s| s.is_durable())
                .map(|s| s.pending())
                .sum()
        };
        // A durable endpoint stopped while reading the log leaves records not counted in `kept`.
        let reading = inner
            .admin
            .lock()
            .endpoints
            .values()
            .any(|s| s.disk.load(Ordering::Acquire));
        let r = ShutdownReport {
            drained: drained && undelivered == 0 && kept == 0 && !reading,
            undelivered,
            kept,
            endpoints,
        };
        *report = Some(r.clone());
        r
    }

    pub(super) fn shutdown_drops(&self) -> u64 {
        let admin = self.inner.admin.lock();
        admin
            .endpoints
            .values()
            .map(|s| s.dropped.get(DropReason::Shutdown))
            .sum()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.shutdown(self.inner.shutdown_timeout);
    }
}

impl<E: Event> Sink<E> for Dispatcher {
    fn write(&self, event: E) -> Result<(), Error> {
        self.publish(&event)
    }

    fn close(&self) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let report = self.shutdown(self.inner.shutdown_timeout);
        if report.undelivered == 0 {
            Ok(())
        } else {
            Err(Error::Undelivered {
                count: report.undelivered,
            })
        }
    }
}
