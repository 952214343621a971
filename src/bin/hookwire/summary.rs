//! What `hookwire send` prints when it is done, and the exit code it implies.

use std::collections::BTreeMap;
use std::time::Duration;

use hookwire::stats::{DropReason, EndpointSnapshot};
use serde::Serialize;

/// What reading the input did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Pumped {
    /// Events the dispatcher accepted.
    pub(crate) accepted: u64,
    /// Lines that were not events (reported on stderr).
    pub(crate) malformed: u64,
    /// Events whose publish failed (reported on stderr).
    pub(crate) publish_errors: u64,
    /// The first line not read because `--timeout` passed first.
    pub(crate) unread_from_line: Option<u64>,
    /// Why the input could not be read to its end, if it could not.
    pub(crate) input_error: Option<String>,
}

/// The JSON summary on stdout. Counts other than `accepted`, `malformed` and
/// `publish_errors` are sums over the endpoints: an event sent to two endpoints is delivered
/// twice.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    /// Events the dispatcher accepted.
    pub(crate) accepted: u64,
    /// Deliveries (answered 2xx), all endpoints together.
    pub(crate) delivered: u64,
    /// Events dropped, by reason, all endpoints together.
    pub(crate) dropped: BTreeMap<&'static str, u64>,
    /// Events given up on (retries exhausted or a permanent failure such as 400).
    pub(crate) dead_lettered: u64,
    /// Events still undecided when `send` stopped (in flight at the deadline).
    pub(crate) pending: u64,
    /// Input lines that were not events.
    pub(crate) malformed: u64,
    /// Events whose publish failed.
    pub(crate) publish_errors: u64,
    /// The first input line not read because `--timeout` passed (absent if all were read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) unread_from_line: Option<u64>,
    /// Why stdin could not be read to its end (absent if it could).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) input_error: Option<String>,
    /// Whether everything accepted had its fate before the deadline.
    pub(crate) drained: bool,
    /// From start to the end of shutdown.
    pub(crate) elapsed_ms: u64,
    /// Every endpoint's final snapshot.
    pub(crate) endpoints: Vec<EndpointSnapshot>,
}

impl Summary {
    /// Adds up the endpoints' final snapshots.
    pub(crate) fn new(
        pumped: &Pumped,
        drained: bool,
        elapsed: Duration,
        endpoints: Vec<EndpointSnapshot>,
    ) -> Self {
        let mut dropped: BTreeMap<&'static str, u64> =
            DropReason::ALL.iter().map(|r| (r.as_str(), 0)).collect();
        let (mut delivered, mut dead_lettered, mut pending) = (0, 0, 0);
        for ep in &endpoints {
            let m = &ep.metrics;
            delivered += m.delivered;
            dead_lettered += m.dead_lettered;
            pending += m.pending;
            for (reason, n) in &m.dropped {
                *dropped.entry(reason.as_str()).or_default() += n;
            }
        }
        Summary {
            accepted: pumped.accepted,
            delivered,
            dropped,
            dead_lettered,
            pending,
            malformed: pumped.malformed,
            publish_errors: pumped.publish_errors,
            unread_from_line: pumped.unread_from_line,
            input_error: pumped.input_error.clone(),
            drained,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            endpoints,
        }
    }

    /// True only if every line was an event, every event was accepted, and every endpoint
    /// delivered every accepted event (none dropped, dead-lettered or pending).
    pub(crate) fn success(&self) -> bool {
        self.malformed == 0
            && self.publish_errors == 0
            && self.unread_from_line.is_none()
            && self.input_error.is_none()
            && !self.endpoints.is_empty()
            && self.endpoints.iter().all(|ep| {
                let m = &ep.metrics;
                m.events == self.accepted && m.delivered == self.accepted && m.pending == 0
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookwire::stats::{ConfigView, Metrics};

    fn endpoint(events: u64, delivered: u64, dead: u64, dropped_oldest: u64) -> EndpointSnapshot {
        let pending = events - delivered - dead - dropped_oldest;
        let mut dropped: BTreeMap<DropReason, u64> =
            DropReason::ALL.iter().map(|r| (*r, 0)).collect();
        dropped.insert(DropReason::Oldest, dropped_oldest);
        EndpointSnapshot {
            name: "ep".into(),
            url: "http://127.0.0.1:1/".into(),
            config: ConfigView::default(),
            metrics: Metrics {
                events,
                delivered,
                dead_lettered: dead,
                pending,
                dropped,
                ..Metrics::default()
            },
        }
    }

    fn pumped(accepted: u64) -> Pumped {
        Pumped {
            accepted,
            ..Pumped::default()
        }
    }

    #[test]
    fn a_clean_run_succeeds_and_sums_endpoints() {
        let s = Summary::new(
            &pumped(10),
            true,
            Duration::from_millis(1500),
            vec![endpoint(10, 10, 0, 0), endpoint(10, 10, 0, 0)],
        );
        assert!(s.success());
        assert_eq!((s.accepted, s.delivered, s.pending), (10, 20, 0));
        assert_eq!(s.elapsed_ms, 1500);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["dropped"]["oldest"], 0);
        assert_eq!(
            v["dropped"].as_object().unwrap().len(),
            DropReason::ALL.len()
        );
        assert_eq!(v["endpoints"][1]["metrics"]["delivered"], 10);
        assert!(v.get("unread_from_line").is_none());
        assert_eq!(v["malformed"], 0);
    }

    #[test]
    fn anything_not_delivered_everywhere_fails() {
        let s = Summary::new(
            &pumped(10),
            true,
            Duration::ZERO,
            vec![endpoint(10, 10, 0, 0), endpoint(10, 7, 3, 0)],
        );
        assert!(!s.success());
        assert_eq!(s.dead_lettered, 3);
        let s = Summary::new(
            &pumped(10),
            true,
            Duration::ZERO,
            vec![endpoint(10, 8, 0, 2)],
        );
        assert!(!s.success());
        assert_eq!(s.dropped["oldest"], 2);
        let s = Summary::new(
            &pumped(10),
            false,
            Duration::ZERO,
            vec![endpoint(10, 9, 0, 0)],
        );
        assert_eq!(s.pending, 1);
        assert!(!s.success());
        assert!(!Summary::new(&pumped(0), true, Duration::ZERO, vec![]).success());
    }

    #[test]
    fn bad_input_fails_even_if_all_accepted_was_delivered() {
        for p in [
            Pumped {
                accepted: 5,
                malformed: 1,
                ..Pumped::default()
            },
            Pumped {
                accepted: 5,
                publish_errors: 1,
                ..Pumped::default()
            },
            Pumped {
                accepted: 5,
                unread_from_line: Some(9),
                ..Pumped::default()
            },
            Pumped {
                accepted: 5,
                input_error: Some("gone".into()),
                ..Pumped::default()
            },
        ] {
            let s = Summary::new(&p, true, Duration::ZERO, vec![endpoint(5, 5, 0, 0)]);
            assert!(!s.success(), "{p:?}");
        }
        let p = pumped(0);
        assert!(
            Summary::new(&p, true, Duration::ZERO, vec![endpoint(0, 0, 0, 0)]).success(),
            "empty input is fine"
        );
    }
}
