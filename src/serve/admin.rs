//! The read-only routes: health, readiness, metrics, the expvar dump and the endpoint list.
//! All of them render [`EndpointSnapshot`]s (atomics read by the engine's `snapshot`), plus the
//! server's own counters, which live in the loop thread and need no locks.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::stats::{EndpointSnapshot, render_expvar, render_prometheus};

/// The HTTP server's own counters (owned by the loop thread).
#[derive(Debug, Default, Clone)]
pub(crate) struct ServerCounters {
    /// Requests answered, by route and status.
    pub requests: BTreeMap<(&'static str, u16), u64>,
    /// Events in 2xx-answered ingest requests (repeats included).
    pub events_accepted: u64,
    /// Of those, events not published again because their id was in the window.
    pub events_duplicate: u64,
    /// Events published to the engine.
    pub events_published: u64,
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections refused at the connection limit.
    pub connections_refused: u64,
    /// Connections closed because a request did not arrive (or a response was not read) in
    /// time.
    pub connections_timed_out: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Ingest requests waiting for durability now.
    pub waiting: u64,
    /// Ids in the dedup window now.
    pub dedup_ids: u64,
}

/// `/healthz`: the queues, per endpoint and in total.
pub(crate) fn healthz(snaps: &[EndpointSnapshot], stopping: bool) -> Value {
    let endpoints: Vec<Value> = snaps
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "state": state(s),
                "queued": s.metrics.queued,
                "unread": s.metrics.unread,
                "pending": s.metrics.pending,
            })
        })
        .collect();
    let pending: u64 = snaps
        .iter()
        .map(|s| s.metrics.pending + s.metrics.unread)
        .sum();
    json!({
        "status": if stopping { "stopping" } else { "ok" },
        "pending": pending,
        "endpoints": endpoints,
    })
}

/// `active`, `disabled` or `failed`.
pub(crate) fn state(s: &EndpointSnapshot) -> &'static str {
    if s.health.failed.is_some() {
        "failed"
    } else if s.metrics.disabled {
        "disabled"
    } else {
        "active"
    }
}

/// `/v1/endpoints`.
pub(crate) fn endpoints(snaps: &[EndpointSnapshot]) -> Value {
    let list: Vec<Value> = snaps
        .iter()
        .map(|s| {
            let m = &s.metrics;
            json!({
                "name": s.name,
                "url": s.url,
                "state": state(s),
                "breaker": s.health.breaker,
                "disabled_reason": s.health.disabled,
                "failed": s.health.failed,
                "last_error": s.health.last_error,
                "queue_depth": m.queued + m.unread,
                "in_flight": m.in_flight,
                "pending": m.pending,
                "delivered": m.delivered,
                "dead_lettered": m.dead_lettered,
                "dropped": m.dropped_total(),
                "retries": m.retries,
                "lag_ms": { "p50": m.delivery_lag.p50_us / 1000, "p99": m.delivery_lag.p99_us / 1000 },
                "rtt_ms": { "p50": m.rtt.p50_us / 1000, "p99": m.rtt.p99_us / 1000 },
            })
        })
        .collect();
    json!({ "endpoints": list })
}

/// With a database: each endpoint of `/v1/endpoints` gets its `lease` (owner, epoch, expiry),
/// and the document the cluster as this node sees it.
pub(crate) fn add_leases(body: &mut Value, cluster: Value) {
    if let Some(list) = body["endpoints"].as_array_mut() {
        for e in list {
            let lease = cluster["leases"]
                .as_array()
                .and_then(|l| l.iter().find(|l| l["endpoint"] == e["name"]))
                .cloned()
                .unwrap_or(Value::Null);
            e["lease"] = lease;
        }
    }
    body["cluster"] = cluster;
}

/// `/debug/vars`: distribution's expvar document, with the server's counters under `serve`.
pub(crate) fn expvar(snaps: &[EndpointSnapshot], c: &ServerCounters) -> Value {
    let mut v = render_expvar(snaps);
    let requests: BTreeMap<String, u64> = c
        .requests
        .iter()
        .map(|((route, code), n)| (format!("{route} {code}"), *n))
        .collect();
    if let Value::Object(map) = &mut v {
        map.insert(
            "serve".into(),
            json!({
                "requests": requests,
                "events_accepted": c.events_accepted,
                "events_duplicate": c.events_duplicate,
                "events_published": c.events_published,
                "connections_accepted": c.connections_accepted,
                "connections_refused": c.connections_refused,
                "connections_timed_out": c.connections_timed_out,
                "connections_open": c.connections_open,
                "waiting_requests": c.waiting,
                "dedup_ids": c.dedup_ids,
            }),
        );
    }
    v
}

/// `/metrics`: the engine's metrics, then the server's (`hookwire_serve_*`).
pub(crate) fn prometheus(snaps: &[EndpointSnapshot], c: &ServerCounters) -> String {
    let mut out = render_prometheus(snaps);
    out.push_str("# HELP hookwire_serve_requests_total HTTP requests answered, by route and status.\n# TYPE hookwire_serve_requests_total counter\n");
    for ((route, code), n) in &c.requests {
        let _ = writeln!(
            out,
            "hookwire_serve_requests_total{{route=\"{route}\",code=\"{code}\"}} {n}"
        );
    }
    let counters = [
        (
            "events_accepted_total",
            "Events in ingest requests answered 2xx (repeats included).",
            c.events_accepted,
        ),
        (
            "events_duplicate_total",
            "Events accepted but not published again: their id was in the dedup window.",
            c.events_duplicate,
        ),
        (
            "events_published_total",
            "Events published to the engine.",
            c.events_published,
        ),
        (
            "connections_accepted_total",
            "Connections accepted.",
            c.connections_accepted,
        ),
        (
            "connections_refused_total",
            "Connections refused at the connection limit.",
            c.connections_refused,
        ),
        (
            "connections_timed_out_total",
            "Connections closed for a request or response that did not move in time.",
            c.connections_timed_out,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP hookwire_serve_{name} {help}\n# TYPE hookwire_serve_{name} counter\nhookwire_serve_{name} {v}"
        );
    }
    let gauges = [
        ("connections_open", "Connections open.", c.connections_open),
        (
            "waiting_requests",
            "Ingest requests waiting for their events to be durable.",
            c.waiting,
        ),
        ("dedup_ids", "Ids in the dedup window.", c.dedup_ids),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(
            out,
            "# HELP hookwire_serve_{name} {help}\n# TYPE hookwire_serve_{name} gauge\nhookwire_serve_{name} {v}"
        );
    }
    out
}
