//! A sink made from a closure, for the last hop of a chain and for tests.
//!
//! [`FnSink`] calls its closure once per event, on the writer's thread: `write` blocks exactly
//! as long as the closure does, keeps the writer's order, and returns the closure's result.
//! It buffers nothing, so it never drops and has nothing to count: an event is either handed to
//! the closure or refused with an error. `close` only flips a flag; afterwards `write` returns
//! [`Error::Closed`] without calling the closure, and a second `close` returns `Error::Closed`.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Error;
use crate::sink::Sink;

/// A [`Sink`] that hands each event to a closure.
///
/// Contract: `write` runs the closure on the calling thread and returns what it returns; it
/// blocks as long as the closure blocks. Nothing is buffered or dropped. After `close`, `write`
/// returns [`Error::Closed`]; a write that was already inside the closure when `close` was
/// called still finishes.
///
/// ```
/// use hookwire::sink::{Sink, from_fn};
/// let sink = from_fn(|n: u32| {
///     println!("got {n}");
///     Ok(())
/// });
/// sink.write(7).unwrap();
/// sink.close().unwrap();
/// assert!(sink.write(8).unwrap_err().is_closed());
/// ```
pub struct FnSink<F> {
    f: F,
    closed: AtomicBool,
}

/// Builds a [`FnSink`] from a closure; the same as [`FnSink::new`].
pub fn from_fn<E, F>(f: F) -> FnSink<F>
where
    F: Fn(E) -> Result<(), Error> + Send + Sync,
{
    FnSink::new(f)
}

impl<F> FnSink<F> {
    /// Wraps `f`; the sink starts open.
    pub fn new(f: F) -> Self {
        FnSink {
            f,
            closed: AtomicBool::new(false),
        }
    }

    /// Whether `close` has been called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl<F> fmt::Debug for FnSink<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnSink")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<E, F> Sink<E> for FnSink<F>
where
    F: Fn(E) -> Result<(), Error> + Send + Sync,
{
    fn write(&self, event: E) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        (self.f)(event)
    }

    fn close(&self) -> Result<(), Error> {
        // `swap` makes exactly one caller the closer, even when two threads race.
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn forwards_events_and_errors_in_order() {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let sink = from_fn(move |n: u32| {
            s2.lock().push(n);
            if n == 3 {
                Err(Error::Full { capacity: 1 })
            } else {
                Ok(())
            }
        });
        for n in 1..=5 {
            let r = sink.write(n);
            assert_eq!(r.is_err(), n == 3, "event {n}: {r:?}");
        }
        assert!(matches!(sink.write(3), Err(Error::Full { capacity: 1 })));
        assert_eq!(*seen.lock(), vec![1, 2, 3, 4, 5, 3]);
    }

    #[test]
    fn closed_sink_refuses_without_calling_the_closure() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c2 = calls.clone();
        let sink = FnSink::new(move |_: ()| {
            c2.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        assert!(!sink.is_closed());
        sink.write(()).unwrap();
        sink.close().unwrap();
        assert!(sink.is_closed());
        assert!(matches!(sink.write(()), Err(Error::Closed)));
        assert!(matches!(sink.close(), Err(Error::Closed)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn only_one_of_racing_closers_wins() {
        let sink = Arc::new(from_fn(|_: u8| Ok(())));
        let wins: usize = (0..8)
            .map(|_| {
                let s = sink.clone();
                std::thread::spawn(move || Sink::<u8>::close(&*s).is_ok())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| usize::from(t.join().unwrap()))
            .sum();
        assert_eq!(wins, 1);
    }

    #[test]
    fn works_as_a_trait_object() {
        let sink: Arc<dyn Sink<String>> = Arc::new(from_fn(|s: String| {
            if s.is_empty() {
                Err(Error::config("event", "empty"))
            } else {
                Ok(())
            }
        }));
        assert!(sink.write("x".into()).is_ok());
        assert!(matches!(
            sink.write(String::new()),
            Err(Error::Config { field: "event", .. })
        ));
    }
}
