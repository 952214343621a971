//! Two renderings of endpoint snapshots: docker distribution's expvar JSON, and the Prometheus
//! text exposition format.
//!
//! The expvar shape is distribution's, field for field
//! (`registry.notifications.endpoints[]` with `name`, `url`, the `EndpointConfig` fields and
//! `Metrics{Pending, Events, Successes, Failures, Errors, Statuses}`), so dashboards built for a
//! registry read it unchanged; hookwire's own counters ride along under `Metrics.Hookwire`.
//! Metric names for Prometheus are listed in `docs/metrics.md`.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::{EndpointSnapshot, LatencySummary};

/// `"200 OK"`, `"503 Service Unavailable"`: the status keys distribution's expvar uses.
fn status_text(code: u16) -> String {
    let reason = ureq::http::StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("");
    if reason.is_empty() {
        code.to_string()
    } else {
        format!("{code} {reason}")
    }
}

/// Renders snapshots as distribution's expvar document:
/// `{"registry":{"notifications":{"endpoints":[...]}}}`.
///
/// Durations in the config part are nanoseconds, as Go's `time.Duration` marshals; header
/// values are redacted. Where distribution leaves a Go slice or map nil, so does this: no
/// endpoints render `"endpoints": null`, and no headers or ignore lists render `null` (not
/// `[]` or `{}`); `Statuses` is always an object (distribution makes that map up front).
pub fn render_expvar(endpoints: &[EndpointSnapshot]) -> Value {
    let list: Vec<Value> = endpoints.iter().map(expvar_endpoint).collect();
    json!({ "registry": { "notifications": { "endpoints": nil_if_empty(list) } } })
}

/// A Go slice or map that was never filled marshals as `null`.
fn nil_if_empty<T: serde::Serialize>(items: Vec<T>) -> Value {
    if items.is_empty() {
        Value::Null
    } else {
        json!(items)
    }
}

fn expvar_endpoint(e: &EndpointSnapshot) -> Value {
    let c = &e.config;
    let m = &e.metrics;
    let headers: Map<String, Value> = c
        .headers
        .iter()
        .map(|h| (h.clone(), json!(["<redacted>"])))
        .collect();
    let headers = if headers.is_empty() {
        Value::Null
    } else {
        Value::Object(headers)
    };
    let statuses: Map<String, Value> = m
        .statuses
        .iter()
        .map(|(code, n)| (status_text(*code), json!(n)))
        .collect();
    json!({
        "name": e.name,
        "url": e.url,
        "Headers": headers,
        "Timeout": c.timeout.as_nanos() as u64,
        "Threshold": c.threshold,
        "Backoff": c.backoff.as_nanos() as u64,
        "IgnoredMediaTypes": nil_if_empty(c.ignored_media_types.clone()),
        "Ignore": {
            "MediaTypes": nil_if_empty(c.ignored_media_types.clone()),
            "Actions": nil_if_empty(c.ignored_actions.clone()),
        },
        "Metrics": {
            "Pending": m.pending,
            "Events": m.events,
            "Successes": m.successes,
            "Failures": m.failures,
            "Errors": m.errors,
            "Statuses": statuses,
            "Hookwire": {
                "config": c,
                "queued": m.queued,
                "in_flight": m.in_flight,
                "unread": m.unread,
                "delivered": m.delivered,
                "dropped": m.dropped,
                "dead_lettered": m.dead_lettered,
                "filtered": m.filtered,
                "retries": m.retries,
                "disabled": m.disabled,
                "rtt": m.rtt,
                "delivery_lag": m.delivery_lag,
            }
        }
    })
}

/// Escapes a Prometheus label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes one metric family: its HELP and TYPE lines, then one sample per endpoint.
fn family<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl Iterator<Item = (String, u64)> + 'a,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
}

/// Renders snapshots in the Prometheus text exposition format (version 0.0.4).
///
/// Every sample carries an `endpoint` label; names and meanings are in `docs/metrics.md`.
pub fn render_prometheus(endpoints: &[EndpointSnapshot]) -> String {
    let mut out = String::new();
    let ep = |e: &EndpointSnapshot| format!("endpoint=\"{}\"", label(&e.name));
    type Get = fn(&EndpointSnapshot) -> u64;
    let simple: [(&str, &str, &str, Get); 11] = [
        (
            "hookwire_events_total",
            "counter",
            "Events accepted by the endpoint.",
            |e| e.metrics.events,
        ),
        (
            "hookwire_delivered_total",
            "counter",
            "Events delivered (answered 2xx).",
            |e| e.metrics.delivered,
        ),
        (
            "hookwire_dead_lettered_total",
            "counter",
            "Events given up on (dead-lettered).",
            |e| e.metrics.dead_lettered,
        ),
        (
            "hookwire_filtered_total",
            "counter",
            "Events the endpoint's filter did not want.",
            |e| e.metrics.filtered,
        ),
        (
            "hookwire_retries_total",
            "counter",
            "Delivery attempts after the first.",
            |e| e.metrics.retries,
        ),
        (
            "hookwire_request_errors_total",
            "counter",
            "Requests that got no answer (I/O error or timeout).",
            |e| e.metrics.errors,
        ),
        (
            "hookwire_pending",
            "gauge",
            "Events accepted and not yet finished.",
            |e| e.metrics.pending,
        ),
        (
            "hookwire_queued",
            "gauge",
            "Events waiting in the endpoint's queue.",
            |e| e.metrics.queued,
        ),
        (
            "hookwire_in_flight",
            "gauge",
            "Events being delivered.",
            |e| e.metrics.in_flight,
        ),
        (
            "hookwire_unread",
            "gauge",
            "Ring positions the endpoint has not read yet (engine).",
            |e| e.metrics.unread,
        ),
        (
            "hookwire_disabled",
            "gauge",
            "1 if the endpoint is disabled.",
            |e| u64::from(e.metrics.disabled),
        ),
    ];
    for (name, kind, help, get) in simple {
        family(
            &mut out,
            name,
            kind,
            help,
            endpoints.iter().map(|e| (ep(e), get(e))),
        );
    }
    family(
        &mut out,
        "hookwire_dropped_total",
        "counter",
        "Events dropped, by reason.",
        endpoints.iter().flat_map(|e| {
            e.metrics
                .dropped
                .iter()
                .map(move |(r, n)| (format!("{},reason=\"{}\"", ep(e), r.as_str()), *n))
        }),
    );
    family(
        &mut out,
        "hookwire_responses_total",
        "counter",
        "Responses, by HTTP status code.",
        endpoints.iter().flat_map(|e| {
            e.metrics
                .statuses
                .iter()
                .map(move |(c, n)| (format!("{},code=\"{c}\"", ep(e)), *n))
        }),
    );
    for (name, help, get) in [
        (
            "hookwire_request_duration_seconds",
            "Request round trip.",
            (|e: &EndpointSnapshot| e.metrics.rtt) as fn(&EndpointSnapshot) -> LatencySummary,
        ),
        (
            "hookwire_delivery_lag_seconds",
            "Time from acceptance to delivery.",
            |e: &EndpointSnapshot| e.metrics.delivery_lag,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} summary");
        for e in endpoints {
            let s = get(e);
            for (q, v) in [
                ("0.5", s.p50_us),
                ("0.9", s.p90_us),
                ("0.99", s.p99_us),
                ("0.999", s.p999_us),
            ] {
                let _ = writeln!(out, "{name}{{{},quantile=\"{q}\"}} {}", ep(e), secs(v));
            }
            // The histogram keeps a mean, not an exact sum: sum = mean * count (1% error).
            let sum = s.mean_us.saturating_mul(s.count);
            let _ = writeln!(out, "{name}_sum{{{}}} {}", ep(e), secs(sum));
            let _ = writeln!(out, "{name}_count{{{}}} {}", ep(e), s.count);
        }
    }
    out
}

fn secs(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::{ConfigView, DropReason, Metrics};

    fn sample() -> EndpointSnapshot {
        let mut m = Metrics {
            events: 7,
            pending: 1,
            delivered: 4,
            dead_lettered: 1,
            successes: 4,
            failures: 3,
            errors: 1,
            ..Metrics::default()
        };
        for r in DropReason::ALL {
            m.dropped.insert(r, 0);
        }
        m.dropped.insert(DropReason::Oldest, 1);
        m.statuses.insert(200, 4);
        m.statuses.insert(503, 3);
        m.rtt = LatencySummary {
            count: 2,
            mean_us: 1500,
            p50_us: 1000,
            p90_us: 2000,
            p99_us: 2000,
            p999_us: 2000,
            max_us: 2000,
        };
        EndpointSnapshot {
            health: Default::default(),
            name: "a\"b".into(),
            url: "http://127.0.0.1:1/".into(),
            config: ConfigView {
                headers: vec!["Authorization".into()],
                timeout: Duration::from_secs(1),
                threshold: 10,
                backoff: Duration::from_millis(1500),
                ..ConfigView::default()
            },
            metrics: m,
        }
    }

    #[test]
    fn expvar_has_distributions_shape() {
        let s = sample();
        assert!(s.metrics.balanced());
        let v = render_expvar(&[s]);
        let ep = &v["registry"]["notifications"]["endpoints"][0];
        assert_eq!(ep["name"], "a\"b");
        assert_eq!(ep["Timeout"], 1_000_000_000u64);
        assert_eq!(ep["Backoff"], 1_500_000_000u64);
        assert_eq!(ep["Headers"]["Authorization"][0], "<redacted>");
        let m = &ep["Metrics"];
        assert_eq!(m["Pending"], 1);
        assert_eq!(m["Events"], 7);
        assert_eq!(m["Successes"], 4);
        assert_eq!(m["Failures"], 3);
        assert_eq!(m["Errors"], 1);
        assert_eq!(m["Statuses"]["200 OK"], 4);
        assert_eq!(m["Statuses"]["503 Service Unavailable"], 3);
        assert_eq!(m["Hookwire"]["dropped"]["oldest"], 1);
        assert_eq!(m["Hookwire"]["config"]["backoff"], 1500);
        // Never set in distribution: Go's nil, JSON null.
        assert!(ep["IgnoredMediaTypes"].is_null(), "{ep}");
        assert!(ep["Ignore"]["MediaTypes"].is_null() && ep["Ignore"]["Actions"].is_null());
    }

    #[test]
    fn what_distribution_leaves_nil_is_null() {
        let none = render_expvar(&[]);
        assert_eq!(
            none.to_string(),
            r#"{"registry":{"notifications":{"endpoints":null}}}"#
        );
        let mut s = sample();
        s.config.headers.clear();
        s.config.ignored_actions = vec!["pull".into()];
        s.metrics.statuses.clear();
        let v = render_expvar(&[s]);
        let ep = &v["registry"]["notifications"]["endpoints"][0];
        assert!(ep["Headers"].is_null(), "{ep}");
        assert_eq!(ep["Ignore"]["Actions"][0], "pull");
        assert!(ep["Ignore"]["MediaTypes"].is_null());
        assert_eq!(
            ep["Metrics"]["Statuses"],
            serde_json::json!({}),
            "made up front"
        );
    }

    #[test]
    fn prometheus_text_is_well_formed() {
        let text = render_prometheus(&[sample()]);
        assert!(
            text.contains("hookwire_events_total{endpoint=\"a\\\"b\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("hookwire_dropped_total{endpoint=\"a\\\"b\",reason=\"oldest\"} 1\n"));
        assert!(text.contains("hookwire_responses_total{endpoint=\"a\\\"b\",code=\"503\"} 3\n"));
        assert!(text.contains(
            "hookwire_request_duration_seconds{endpoint=\"a\\\"b\",quantile=\"0.5\"} 0.001000\n"
        ));
        assert!(
            text.contains("hookwire_request_duration_seconds_sum{endpoint=\"a\\\"b\"} 0.003000\n")
        );
        // Every sample line belongs to a family announced by a TYPE line before it.
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split('{').next().unwrap();
                let base = name.trim_end_matches("_sum").trim_end_matches("_count");
                assert!(
                    typed.contains(name) || typed.contains(base),
                    "untyped: {line}"
                );
            }
        }
    }

    #[test]
    fn status_text_matches_go() {
        assert_eq!(status_text(200), "200 OK");
        assert_eq!(status_text(410), "410 Gone");
        assert_eq!(status_text(599), "599");
        assert_eq!(label("a\\b\n"), "a\\\\b\\n");
    }
}
