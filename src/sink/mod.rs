//! Layer 1: composable sinks, in the manner of docker/go-events.
//!
//! Everything that takes events is a [`Sink`]: a broadcaster fans out, a queue decouples the
//! writer from a slow consumer, a retrying sink retries, a filter drops what does not match, a
//! channel hands events to another thread, and an `HttpSink` posts them to a webhook. They are
//! small and compose by wrapping: a docker-distribution style endpoint is
//! `Filter -> Queue -> RetryingSink -> HttpSink`.
//!
//! Each sink's documentation states its contract first: whether `write` blocks, whether it can
//! drop (and where the drop is counted), what order it keeps, and what `close` does.

mod broadcast;
mod channel;
mod filter;
mod func;
mod pool;
mod queue;
mod retry;

pub use broadcast::*;
pub use channel::*;
pub use filter::*;
pub use func::*;
pub use queue::*;
pub use retry::*;

// Shared with the engine; re-exported where layer-1 users look for them.
pub use crate::config::Overflow;
pub use crate::policy::{
    CircuitBreaker, ConsecutiveFailures, ExponentialBackoff, RetryStrategy, Schedule, Verdict,
};

use std::sync::Arc;

use crate::Error;

/// Something that takes events, one at a time.
///
/// The contract every implementation keeps:
/// - `write` either takes responsibility for the event (returns `Ok`) or says why not (an
///   [`Error`]). A sink that drops an event it accepted counts the drop in its stats; nothing is
///   dropped silently.
/// - After `close` returns, `write` returns [`Error::Closed`]. Closing twice returns
///   `Error::Closed` too, as docker distribution's sinks do ("already closed"); go-events'
///   sinks return nil there.
/// - `close` never blocks forever: sinks that buffer drain with a deadline.
///
/// Sinks take `&self` so one sink can be shared by many threads (`Arc<dyn Sink<E>>`); those that
/// need state use interior mutability.
pub trait Sink<E>: Send + Sync {
    /// Hands one event to the sink.
    fn write(&self, event: E) -> Result<(), Error>;

    /// Flushes what the sink buffers (within its deadline), closes what it wraps, and refuses
    /// further writes.
    fn close(&self) -> Result<(), Error>;
}

impl<E, S: Sink<E> + ?Sized> Sink<E> for Arc<S> {
    fn write(&self, event: E) -> Result<(), Error> {
        (**self).write(event)
    }
    fn close(&self) -> Result<(), Error> {
        (**self).close()
    }
}

impl<E, S: Sink<E> + ?Sized> Sink<E> for Box<S> {
    fn write(&self, event: E) -> Result<(), Error> {
        (**self).write(event)
    }
    fn close(&self) -> Result<(), Error> {
        (**self).close()
    }
}
