//! `hookwire serve` as a library: a relay service that takes events over HTTP, makes them
//! durable, and fans them out to the configured endpoints with the [engine](crate::engine).
//!
//! The service is a thin driver of the library: its [configuration](ServeConfig) becomes a
//! [`Dispatcher`](crate::engine::Dispatcher) with durable endpoints, and its ingest routes
//! become [`publish_with_ticket`](crate::engine::Dispatcher::publish_with_ticket) calls whose
//! tickets are awaited without blocking the HTTP loop. See `docs/serve.md`.
//!
//! ```
//! use std::io::{Read, Write};
//! use hookwire::serve::{ServeConfig, Server};
//! use hookwire::testkit::{Receiver, ReceiverConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let receiver = Receiver::start(ReceiverConfig::default())?;
//! let dir = std::env::temp_dir().join(format!("hookwire-serve-doc-{}", std::process::id()));
//! let config = ServeConfig::parse(&format!(
//!     "listen = \"127.0.0.1:0\"\ndata_dir = {dir:?}\n\n\
//!      [[endpoint]]\nname = \"audit\"\nurl = \"{}\"\nallow_private = true\n",
//!     receiver.url()
//! ))?;
//! let server = Server::start(config)?;
//!
//! // Any HTTP client: the answer comes once the event is in the durable log.
//! let body = r#"{"id":"e1","action":"push"}"#;
//! let mut conn = std::net::TcpStream::connect(server.local_addr())?;
//! write!(conn, "POST /v1/events HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer)?;
//! assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("{\"accepted\":1,\"duplicates\":0}\n"));
//!
//! assert!(receiver.wait_for_distinct(1, std::time::Duration::from_secs(10)));
//! let report = server.shutdown();
//! assert_eq!(report.endpoints[0].metrics.delivered, 1);
//! # drop(std::fs::remove_dir_all(dir));
//! # Ok(()) }
//! ```

mod admin;
mod cluster;
mod config;
pub(crate) mod http;
pub(crate) mod ingest;
mod reload;
mod server;

pub use config::{ConfigError, DatabaseConfig, Limits, ServeConfig, service_endpoint};
pub use reload::ReloadReport;
pub use server::{Handle, Server};
