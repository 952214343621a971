//! Configuration that both layers share: an endpoint's settings ([`EndpointConfig`]), how the
//! engine batches ([`BatchConfig`]), what a full queue does ([`Overflow`]), and where an
//! engine endpoint's backlog lives ([`Durability`]).
//!
//! Plain data, checked once when an endpoint is built (a bad value is an
//! [`Error::Config`](crate::Error::Config) then, never a panic later). Layer 1
//! ([`endpoint`](crate::endpoint), [`sink`](crate::sink)) and the engine
//! ([`engine`](crate::engine)) both read it; neither layer is imported by this module.

mod batch;
mod endpoint;
pub(crate) mod glob;
mod overflow;

pub use batch::BatchConfig;
pub use endpoint::{Durability, EndpointConfig, RetryConfig};
pub use overflow::Overflow;

#[cfg(test)]
pub(crate) use endpoint::strategy_seeded;
pub(crate) use endpoint::{MAX_DURATION, redact_url, strategy};
