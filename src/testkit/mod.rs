//! A loopback webhook receiver with fault injection, shared by tests, benches and the CLI.

mod conn;
mod receiver;

pub use receiver::*;
