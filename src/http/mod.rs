//! Webhook delivery over HTTP: the JSON envelope, Standard Webhooks signing, the blocking
//! [`HttpSink`], and the engine's non-blocking client connection (crate-internal: `Target`,
//! `Conn` and its socket-free `ResponseReader`) with its per-endpoint [`TlsOptions`].

pub(crate) mod conn;
mod envelope;
mod guard;
pub(crate) mod request;
pub(crate) mod response;
mod signing;
mod sink;
pub(crate) mod target;
mod tls;
mod transport;

pub use envelope::*;
pub use guard::non_public;
pub(crate) use request::Body;
pub use signing::*;
pub use sink::*;
pub use tls::{TlsOptions, system_roots};
