//! hookwire delivers events from a host program to webhook endpoints: fast, bounded, and
//! without losing them.
//!
//! It carries three proven designs into one library: docker/go-events' composable sinks,
//! docker distribution's webhook endpoints and their counters, and Clair's persisted, locked,
//! marked-sent notifications (the engine's durable endpoints, over [`store`]), and fixes
//! where they fall short: queues are bounded with
//! counted overflow, a slow sink does not stall its neighbours, the breaker is a real state
//! machine, requests are signed (Standard Webhooks), and latency is recorded.
//!
//! # Example
//!
//! An endpoint delivering to the test kit's loopback receiver (feature `testkit`), which
//! fails the first request:
//!
//! ```
//! use hookwire::endpoint::{Endpoint, EndpointConfig};
//! use hookwire::testkit::{Receiver, ReceiverConfig, Reply};
//! use hookwire::{RawEvent, Sink};
//!
//! # fn main() -> Result<(), hookwire::Error> {
//! let receiver = Receiver::start(ReceiverConfig::default().statuses(vec![Reply::status(503)]))
//!     .expect("bind a loopback port");
//! let mut config = EndpointConfig::new("audit", receiver.url());
//! config.secrets = vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()];
//! let endpoint = Endpoint::<RawEvent>::new(config)?;
//!
//! for i in 0..3 {
//!     endpoint.write(RawEvent::parse(format!(r#"{{"id":"evt-{i}","action":"push"}}"#))?)?;
//! }
//! endpoint.close()?; // drains the queue (within its deadline) first
//!
//! let m = endpoint.snapshot().metrics;
//! assert_eq!((m.events, m.delivered, m.retries, m.pending), (3, 3, 1, 0));
//! assert_eq!(receiver.ids(), ["evt-0", "evt-1", "evt-2"]);
//! let json = hookwire::stats::render_expvar(&[endpoint.snapshot()]);
//! assert_eq!(json["registry"]["notifications"]["endpoints"][0]["Metrics"]["Events"], 3);
//! # Ok(()) }
//! ```
//!
//! # Map
//!
//! - [`Sink`] and the toolkit in [`sink`]: [`Broadcaster`](sink::Broadcaster),
//!   [`Queue`](sink::Queue), [`RetryingSink`](sink::RetryingSink), [`Filter`](sink::Filter),
//!   [`Channel`](sink::Channel), [`FnSink`](sink::FnSink).
//! - [`policy`]: the pure core (backoff, retry decisions, circuit breaker, classification,
//!   clocks), shared by every layer.
//! - [`http`]: the `{"events":[...]}` envelope, Standard Webhooks signing, and
//!   [`HttpSink`](http::HttpSink).
//! - [`endpoint`]: docker distribution's endpoint, filter -> queue -> retry -> HTTP.
//! - [`stats`]: counters, snapshots, expvar JSON and Prometheus text.
//! - [`engine`]: the per-core dispatcher (memory and durable endpoints).
//! - [`store`]: the durable log behind durable endpoints (segments, cursors, dead letters).
//! - `testkit` (feature `testkit`): a loopback webhook receiver with fault injection, for
//!   tests.
//!
//! Every event an endpoint accepts is accounted for:
//! `events = delivered + dropped (by reason) + dead_lettered + pending` in every snapshot.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
mod event;

pub mod config;
pub mod endpoint;
pub mod engine;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod policy;
#[cfg(feature = "serve")]
pub mod serve;
pub mod sink;
pub mod stats;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::Error;
pub use event::{Event, RawEvent};
pub use sink::Sink;
