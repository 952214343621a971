//! hookwire delivers events from a host program to webhook endpoints: fast, bounded, and
//! without losing them.
//!
//! (Crate docs with a runnable example are written once the endpoint lands.)

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
mod event;

pub mod http;
pub mod policy;
pub mod sink;
pub mod stats;
pub mod testkit;

pub use error::Error;
pub use event::{Event, RawEvent};
pub use sink::Sink;
