//! What happens to an event that arrives when its queue (or engine endpoint) is full.

use std::time::Duration;

#[allow(unused_imports)] // for the doc links
use crate::{Error, stats::DropReason};

/// What a write (or `publish`) does when the queue is full: a layer-1
/// [`Queue`](crate::sink::Queue)'s policy, and an engine endpoint's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// Wait for room; with a timeout, give up after it with [`Error::Timeout`] (counted
    /// [`DropReason::BlockTimeout`]). A `close` during the wait gives [`Error::Closed`] (counted
    /// [`DropReason::Shutdown`]).
    Block {
        /// How long to wait at most; `None` waits until there is room or the queue closes.
        timeout: Option<Duration>,
    },
    /// Discard the incoming event; `write` returns `Ok` (counted [`DropReason::Newest`]).
    DropNewest,
    /// Evict the oldest queued event to make room (counted [`DropReason::Oldest`]).
    DropOldest,
    /// Refuse with [`Error::Full`] (counted [`DropReason::Rejected`]).
    Reject,
    /// Keep the backlog on disk (engine endpoints with
    /// [`Durability::Durable`](crate::endpoint::Durability) only): the endpoint reads its
    /// events back from the durable log, so memory stays bounded however long it is down. The
    /// bound is the store's disk quota; past it, `publish` fails with
    /// [`Error::Quota`](crate::Error::Quota). An in-memory queue cannot spill: it refuses this
    /// policy with [`Error::Config`].
    Spill,
}
