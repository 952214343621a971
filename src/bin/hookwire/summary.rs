//! What `hookwire send` prints when it is done, and the exit code it implies.
//!
//! The summary opens with one result per endpoint (`results`): with several endpoints the
//! totals are sums (an event sent to two endpoints is delivered twice), so 200 `delivered`
//! for 100 events may hide an endpoint that got nothing; its own line cannot. An endpoint
//! that did not deliver everything is also named once on stderr, with why (its last error,
//! or why it was disabled).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use hookwire::stats::{DropReason, EndpointSnapshot};
use hookwire::store::{Damage, Recovery};
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
    /// The first line not read because a signal stopped the reading.
    pub(crate) unread_from_line: Option<u64>,
    /// Why the input could not be read to its end, if it could not.
    pub(crate) input_error: Option<String>,
}

/// One endpoint's outcome, in the words a person checks first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct EndpointResult {
    /// The endpoint's name.
    pub(crate) name: String,
    /// Whether it delivered every event it took (and, in memory mode, every one accepted).
    pub(crate) ok: bool,
    /// Events it took.
    pub(crate) events: u64,
    /// Of those, delivered.
    pub(crate) delivered: u64,
    /// Given up on.
    pub(crate) dead_lettered: u64,
    /// Dropped, all reasons together (by reason in its `endpoints` entry).
    pub(crate) dropped: u64,
    /// Undecided when `send` stopped.
    pub(crate) pending: u64,
    /// Why it was disabled (410 Gone, failing too long), and since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) disabled: Option<String>,
    /// Why it failed for good.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) failed: Option<String>,
    /// Its last failed attempt's error (connection refused, a TLS error, a status, where a
    /// redirect pointed), even if later attempts succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_error: Option<String>,
}

impl EndpointResult {
    fn new(ep: &EndpointSnapshot, accepted: u64) -> Self {
        let m = &ep.metrics;
        EndpointResult {
            name: ep.name.clone(),
            ok: m.events >= accepted && m.delivered == m.events && m.pending == 0,
            events: m.events,
            delivered: m.delivered,
            dead_lettered: m.dead_lettered,
            dropped: m.dropped.values().sum(),
            pending: m.pending,
            disabled: ep.health.disabled.clone(),
            failed: ep.health.failed.clone(),
            last_error: ep.health.last_error.clone(),
        }
    }

    /// One line for a person: what it delivered and why not the rest.
    fn line(&self) -> String {
        let mut out = format!(
            "{}: delivered {} of {}",
            self.name, self.delivered, self.events
        );
        let parts: Vec<String> = [
            (self.dead_lettered, "dead-lettered"),
            (self.dropped, "dropped"),
            (self.pending, "not delivered in time"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if !parts.is_empty() {
            out.push_str(&format!(" ({})", parts.join(", ")));
        }
        for (what, text) in [
            ("disabled", &self.disabled),
            ("failed", &self.failed),
            ("last error", &self.last_error),
        ] {
            if let Some(t) = text {
                out.push_str(&format!("; {what}: {t}"));
            }
        }
        if self
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("UnknownIssuer"))
        {
            out.push_str(
                " (its certificate is not signed by a CA hookwire trusts: give the CA with \
                 --ca-file)",
            );
        }
        out
    }
}

/// The JSON summary on stdout: `results` (one per endpoint) first, then the totals. Counts
/// other than `accepted`, `malformed` and `publish_errors` are sums over the endpoints: an
/// event sent to two endpoints is delivered twice.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    /// Every endpoint's outcome, in `--endpoint` order.
    pub(crate) results: Vec<EndpointResult>,
    /// Events the dispatcher accepted.
    pub(crate) accepted: u64,
    /// Events the endpoints took, all endpoints together: `delivered + dropped +
    /// dead_lettered + pending`. With `--data-dir` it includes what an earlier run left.
    pub(crate) events: u64,
    /// Deliveries (answered 2xx), all endpoints together.
    pub(crate) delivered: u64,
    /// Events dropped, by reason, all endpoints together.
    pub(crate) dropped: BTreeMap<&'static str, u64>,
    /// Events given up on (retries exhausted or a permanent failure such as 400).
    pub(crate) dead_lettered: u64,
    /// Events still undecided when `send` stopped (in flight at the deadline; with
    /// `--data-dir`, the `kept` ones).
    pub(crate) pending: u64,
    /// Events of durable endpoints not delivered when `send` stopped, kept in the data
    /// directory for `send --resume` (0 without `--data-dir`).
    pub(crate) kept: u64,
    /// Input lines that were not events.
    pub(crate) malformed: u64,
    /// Events whose publish failed.
    pub(crate) publish_errors: u64,
    /// The first input line not read because `--timeout` passed or (`--data-dir`) the
    /// durable store failed (absent if all were read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) unread_from_line: Option<u64>,
    /// Why stdin could not be read to its end (absent if it could).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) input_error: Option<String>,
    /// Whether everything accepted had its fate before the deadline.
    pub(crate) drained: bool,
    /// The signal that stopped the reading ("SIGINT" or "SIGTERM"; absent if none did).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) signal: Option<&'static str>,
    /// From start to the end of shutdown.
    pub(crate) elapsed_ms: u64,
    /// Whether delivery was durable (`--data-dir`; absent otherwise).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) durable: bool,
    /// `--data-dir` without `--resume`: the final `durable_through`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) durable_through: Option<u64>,
    /// `--data-dir` without `--resume`: events accepted that the log then failed to persist
    /// (reported on stderr).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) not_durable: Option<u64>,
    /// `--data-dir` without `--resume`: why the durable store failed (a full disk, an I/O
    /// error), if it did. Reading stopped there (`unread_from_line`); the events not reported
    /// durable are not in the log and will not be delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) storage_error: Option<String>,
    /// `--data-dir`: what opening the data directory found and repaired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) recovery: Option<Recovery>,
    /// `--data-dir`: the damaged ranges of the log this run found, at open or when an
    /// endpoint read past them (absent if none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) damage: Vec<Damage>,
    /// `--data-dir`: records in the log were lost to damage this run (an endpoint counted
    /// `dropped.corrupt`, or a damaged range was found that was not in the quarantine
    /// before). The exit code is then 3. Absent if not.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) data_damaged: bool,
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
        let (mut events, mut delivered, mut dead_lettered, mut pending) = (0, 0, 0, 0);
        for ep in &endpoints {
            let m = &ep.metrics;
            events += m.events;
            delivered += m.delivered;
            dead_lettered += m.dead_lettered;
            pending += m.pending;
            for (reason, n) in &m.dropped {
                *dropped.entry(reason.as_str()).or_default() += n;
            }
        }
        Summary {
            results: endpoints
                .iter()
                .map(|ep| EndpointResult::new(ep, pumped.accepted))
                .collect(),
            accepted: pumped.accepted,
            events,
            delivered,
            dropped,
            dead_lettered,
            pending,
            kept: 0,
            malformed: pumped.malformed,
            publish_errors: pumped.publish_errors,
            unread_from_line: pumped.unread_from_line,
            input_error: pumped.input_error.clone(),
            drained,
            signal: None,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            durable: false,
            durable_through: None,
            not_durable: None,
            storage_error: None,
            recovery: None,
            damage: Vec::new(),
            data_damaged: false,
            endpoints,
        }
    }

    /// The exit code: [`EXIT_DAMAGED`](crate::durable::EXIT_DAMAGED) (3) if data in the data
    /// directory was damaged (whatever else happened), 0 on [`success`](Summary::success), 1
    /// otherwise.
    pub(crate) fn exit_code(&self) -> u8 {
        if self.data_damaged {
            crate::durable::EXIT_DAMAGED
        } else if self.success() {
            0
        } else {
            1
        }
    }

    /// True only if every line was an event, every event was accepted (and, with
    /// `--data-dir`, persisted), and every endpoint delivered every event it took (none
    /// dropped, dead-lettered or pending), every accepted one included. With `--data-dir` an
    /// endpoint also takes what an earlier run left, so it may take more than was accepted.
    pub(crate) fn success(&self) -> bool {
        // `drained` too: a durable endpoint stopped while reading its backlog from the log
        // has events there that no counter shows yet.
        self.drained
            && self.malformed == 0
            && self.publish_errors == 0
            && self.not_durable.unwrap_or(0) == 0
            && self.storage_error.is_none()
            && self.unread_from_line.is_none()
            && self.input_error.is_none()
            && !self.results.is_empty()
            && self.results.iter().all(|r| r.ok)
    }

    /// Names every endpoint that did not deliver everything on `err`, once, with why.
    pub(crate) fn report(&self, err: &mut dyn Write) {
        for r in self.results.iter().filter(|r| !r.ok) {
            let _ = writeln!(err, "hookwire: {}", r.line());
        }
    }

    /// Writes the summary to `out` as one line of JSON, or indented for people (`pretty`).
    pub(crate) fn write(&self, out: &mut dyn Write, pretty: bool) -> io::Result<()> {
        if pretty {
            serde_json::to_writer_pretty(&mut *out, self)?;
        } else {
            serde_json::to_writer(&mut *out, self)?;
        }
        writeln!(out)?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookwire::stats::Metrics;

    fn endpoint(events: u64, delivered: u64, dead: u64, dropped_oldest: u64) -> EndpointSnapshot {
        let pending = events - delivered - dead - dropped_oldest;
        let mut dropped: BTreeMap<DropReason, u64> =
            DropReason::ALL.iter().map(|r| (*r, 0)).collect();
        dropped.insert(DropReason::Oldest, dropped_oldest);
        let mut metrics = Metrics::default();
        metrics.events = events;
        metrics.delivered = delivered;
        metrics.dead_lettered = dead;
        metrics.pending = pending;
        metrics.dropped = dropped;
        let mut snapshot = EndpointSnapshot::default();
        snapshot.name = "ep".into();
        snapshot.url = "http://127.0.0.1:1/".into();
        snapshot.metrics = metrics;
        snapshot
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
        assert_eq!(
            (v["events"].as_u64(), v["kept"].as_u64()),
            (Some(20), Some(0))
        );
        for durable_only in ["durable", "durable_through", "not_durable", "recovery"] {
            assert!(
                v.get(durable_only).is_none(),
                "{durable_only} without --data-dir"
            );
        }
    }

    #[test]
    fn a_durable_run_may_deliver_what_an_earlier_one_left() {
        // 10 read now, 5 left by an earlier run: 15 taken and delivered is a success.
        let mut s = Summary::new(
            &pumped(10),
            true,
            Duration::ZERO,
            vec![endpoint(15, 15, 0, 0)],
        );
        s.durable = true;
        s.durable_through = Some(10);
        s.not_durable = Some(0);
        s.recovery = Some(Recovery::default());
        assert!(s.success());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            (v["durable"].as_bool(), v["durable_through"].as_u64()),
            (Some(true), Some(10))
        );
        assert!(v["recovery"].is_object());
        // An event the log failed to persist fails the run.
        s.not_durable = Some(1);
        assert!(!s.success());
        // Kept for a resume is not delivered.
        let mut s = Summary::new(
            &pumped(10),
            false,
            Duration::ZERO,
            vec![endpoint(10, 4, 0, 0)],
        );
        s.kept = 6;
        assert!(!s.success());
        // A resume (nothing read) succeeds when what it took was delivered.
        let s = Summary::new(&pumped(0), true, Duration::ZERO, vec![endpoint(7, 7, 0, 0)]);
        assert!(s.success());
    }

    #[test]
    fn damaged_data_exits_3_whatever_else_happened() {
        let mut s = Summary::new(&pumped(0), true, Duration::ZERO, vec![endpoint(7, 7, 0, 0)]);
        assert_eq!(s.exit_code(), 0);
        let v = serde_json::to_value(&s).unwrap();
        assert!(
            v.get("damage").is_none() && v.get("data_damaged").is_none(),
            "{v}"
        );
        s.data_damaged = true;
        assert_eq!(
            s.exit_code(),
            3,
            "even though everything taken was delivered"
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["data_damaged"], true);
        let mut s = Summary::new(
            &pumped(10),
            false,
            Duration::ZERO,
            vec![endpoint(10, 4, 0, 0)],
        );
        assert_eq!(s.exit_code(), 1);
        s.data_damaged = true;
        assert_eq!(s.exit_code(), 3);
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
    fn results_come_first_and_name_the_endpoint_that_failed() {
        let mut bad = endpoint(10, 0, 10, 0);
        bad.name = "audit".into();
        bad.health.last_error = Some("endpoint answered HTTP 301 to https://x/".into());
        let mut gone = endpoint(10, 0, 0, 0);
        gone.name = "gone".into();
        gone.health.disabled = Some("410 Gone (since then)".into());
        let s = Summary::new(
            &pumped(10),
            false,
            Duration::ZERO,
            vec![endpoint(10, 10, 0, 0), bad, gone],
        );
        // Summed, 10 of 30 deliveries; per endpoint, one of three worked.
        assert_eq!(s.delivered, 10);
        let ok: Vec<bool> = s.results.iter().map(|r| r.ok).collect();
        assert_eq!(ok, [true, false, false]);
        let mut line = Vec::new();
        s.write(&mut line, false).unwrap();
        let line = String::from_utf8(line).unwrap();
        assert!(
            line.starts_with("{\"results\":[{\"name\":\"ep\",\"ok\":true"),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1);
        let mut pretty = Vec::new();
        s.write(&mut pretty, true).unwrap();
        assert!(String::from_utf8(pretty).unwrap().lines().count() > 20);
        let mut err = Vec::new();
        s.report(&mut err);
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "hookwire: audit: delivered 0 of 10 (10 dead-lettered); last error: endpoint \
             answered HTTP 301 to https://x/\n\
             hookwire: gone: delivered 0 of 10 (10 not delivered in time); disabled: 410 Gone \
             (since then)\n"
        );
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
