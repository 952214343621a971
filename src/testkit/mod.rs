//! A loopback webhook receiver with fault injection, shared by tests, benches and the CLI.

mod arrivals;
mod conn;
mod plan;
mod receiver;
mod scan;
mod tls;

pub use plan::{ReceiverConfig, Reply};
pub use receiver::*;
