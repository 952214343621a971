//! Webhook delivery over HTTP: the JSON envelope, Standard Webhooks signing, and the blocking
//! [`HttpSink`].

mod envelope;
mod signing;
mod sink;

pub use envelope::*;
pub use signing::*;
pub use sink::*;
