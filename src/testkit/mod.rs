//! A loopback webhook receiver with fault injection, and a scripted server that misbehaves
//! at the byte level ([`Hostile`]), shared by tests, benches and the CLI.

mod arrivals;
mod conn;
mod hostile;
mod plan;
mod receiver;
mod scan;
mod server;
mod tls;

pub use hostile::{Behaviour, Hostile, HostileStats};
pub use plan::{ReceiverConfig, Reply};
pub use receiver::*;
