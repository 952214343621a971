//! `hookwire serve` as a library: a relay service that takes events over HTTP, makes them
//! durable, and fans them out to the configured endpoints with the [engine](crate::engine).
//!
//! The service is a thin driver of the library: its [configuration](ServeConfig) becomes a
//! [`Dispatcher`](crate::engine::Dispatcher) with durable endpoints, and its ingest routes
//! become [`publish_with_ticket`](crate::engine::Dispatcher::publish_with_ticket) calls whose
//! tickets are awaited without blocking the HTTP loop. See `docs/serve.md`.

mod admin;
mod config;
pub(crate) mod http;
pub(crate) mod ingest;
mod reload;
mod server;

pub use config::{ConfigError, Limits, ServeConfig, service_endpoint};
pub use reload::ReloadReport;
pub use server::{Handle, Server};
