//! Layer 2: the engine. A [`Dispatcher`] delivers events to many webhook endpoints from a fixed
//! pool of worker threads, one `mio` event loop per core, without blocking the host.
//!
//! The host's `publish` writes each event once into a bounded multicast ring; each endpoint
//! reads it in place at its own cursor, inside the one worker that owns the endpoint. Delivery
//! (batching, keep-alive HTTP/1.1, TLS, retries, the breaker, timers) happens in that worker,
//! so a slow or dead endpoint costs its neighbours nothing but its share of CPU. See
//! `docs/engine.md` for the design and its invariants.
//!
//! The map: `dispatcher/` is the host's side (builder, publish, admin, durable API,
//! shutdown); `endpoint/` is one endpoint as a Sans-IO state machine; `worker.rs`,
//! `task.rs` and `driver.rs` drive it (the loop and timers; panics; sockets and hand-offs); `source.rs`, `ring.rs`, `wake.rs` and
//! `routes.rs` carry events to it; `persist.rs` (group commit), `reader.rs` (log reads) and
//! `resolver.rs` (DNS) are the threads that do what a worker must not.

mod dispatcher;
mod driver;
pub(crate) mod endpoint;
mod lease;
mod persist;
mod reader;
mod resolver;
pub(crate) mod ring;
mod routes;
mod shared;
pub(crate) mod source;
mod task;
mod ticket;
pub(crate) mod wake;
mod worker;

pub use dispatcher::{Dispatcher, DispatcherBuilder, DispatcherStats, EndpointId, ShutdownReport};
pub use lease::LeaseBoard;
pub use ticket::{OnComplete, Ticket};
