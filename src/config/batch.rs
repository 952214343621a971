//! How the engine groups an endpoint's events into requests.

use std::time::Duration;

/// How the engine groups an endpoint's events into one request.
///
/// A batch is sent when it holds `max_events` events, when adding the next event would pass
/// `max_bytes`, or when its oldest event has waited `linger`, whichever comes first. An event
/// larger than `max_bytes` still goes, alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchConfig {
    /// Most events per request (1 to 10,000). Default 1.
    pub max_events: usize,
    /// Most envelope bytes per request, roughly (at least 1 KiB). Default 1 MiB.
    pub max_bytes: usize,
    /// How long a partial batch may wait for more events. Default zero: send what is there.
    pub linger: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: 1,
            max_bytes: 1 << 20,
            linger: Duration::ZERO,
        }
    }
}

impl BatchConfig {
    /// Up to `max_events` events per request, sent as soon as there is no more to add.
    pub fn events(max_events: usize) -> Self {
        BatchConfig {
            max_events,
            ..Self::default()
        }
    }
}
