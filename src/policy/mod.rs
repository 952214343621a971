//! The pure policy core: retry decisions and strategies, the circuit breaker, response
//! classification.
//!
//! No threads and no I/O live here. Every function takes the current time as an argument (or
//! reads an injected [`Clock`]), so the layer-1 sinks (which wait by sleeping) and the engine
//! (which waits on timers in its event loop) drive exactly the same decisions, and tests drive
//! them with a [`ManualClock`].

mod backoff;
mod breaker;
mod classify;
mod clock;
mod rate;
mod retry;
mod rng;
mod strategy;

pub use backoff::*;
pub use breaker::*;
pub use classify::*;
pub use clock::*;
pub use rate::*;
pub use retry::*;
pub use rng::*;
pub use strategy::*;
