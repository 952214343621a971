//! Webhook delivery over HTTP: the JSON envelope, Standard Webhooks signing, the blocking
//! [`HttpSink`], and the engine's non-blocking client connection (crate-internal: `Target`,
//! `Conn` and its socket-free `ResponseReader`) with its per-endpoint [`TlsOptions`].

// The engine that drives `Conn` lands separately; until then only tests use parts of it.
#[allow(dead_code)]
pub(crate) mod conn;
mod envelope;
mod request;
pub(crate) mod response;
mod signing;
mod sink;
#[allow(dead_code)]
pub(crate) mod target;
mod tls;
#[allow(dead_code)]
mod transport;

pub use envelope::*;
pub use signing::*;
pub use sink::*;
pub use tls::TlsOptions;
