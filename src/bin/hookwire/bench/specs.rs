//! The scenarios: ids, what each measures, and the keys each reports (the Go peer's keys, in
//! its order, for the scenarios both have).

/// One reported figure of a scenario, and how the table shows it.
#[derive(Debug)]
pub(crate) struct Metric {
    /// The JSON key after `<id>.`.
    pub(crate) key: &'static str,
    /// The table's label.
    pub(crate) label: &'static str,
    /// Decimals in the table.
    pub(crate) prec: usize,
}

const fn m(key: &'static str, label: &'static str, prec: usize) -> Metric {
    Metric { key, label, prec }
}

/// A scenario: its id, what it measures, and its keys (the peer's, in the peer's order).
#[derive(Debug)]
pub(crate) struct Spec {
    /// The id, also the JSON key prefix.
    pub(crate) id: &'static str,
    /// What it measures, in a few words.
    pub(crate) desc: &'static str,
    /// What it reports.
    pub(crate) metrics: &'static [Metric],
}

const RSS: Metric = m("peak_rss_kb", "peak RSS kB (VmHWM of its process)", 0);
// Scenarios that build all their events before publishing: the process's peak holds them
// (hundreds of MB for 500k events), which is the benchmark's memory, not hookwire's. The
// peer's key stays, labelled so, beside what came on top of the events and what they took.
const RSS_ABOVE: Metric = m(
    "rss_above_events_kb",
    "peak RSS above the pre-built events kB (hookwire + in-process receiver)",
    0,
);
const RSS_WHOLE: Metric = m(
    "peak_rss_kb",
    "peak RSS kB, whole process (pre-built events included)",
    0,
);
const RSS_EVENTS: Metric = m(
    "prebuilt_events_kb",
    "pre-built events kB (the benchmark's input, not hookwire)",
    0,
);
const FANOUT: &[Metric] = &[
    m(
        "writes_per_s",
        "writes/s (until every consumer counted all)",
        0,
    ),
    m("deliveries_per_s", "deliveries/s", 0),
    RSS_WHOLE,
    RSS_ABOVE,
    RSS_EVENTS,
];
const HTTP_1: &[Metric] = &[
    m(
        "delivered_per_s",
        "delivered/s (until the receiver counted all)",
        0,
    ),
    m("lost", "lost", 0),
    m("duplicates", "duplicates", 0),
    m("connections", "TCP connections opened", 0),
    m("body_bytes", "body bytes", 0),
    m(
        "receiver_cpu_s",
        "receiver CPU s (its threads, or --target's process)",
        2,
    ),
    m("workers_cpu_s", "hookwire workers' CPU s", 2),
    RSS_WHOLE,
    RSS_ABOVE,
    RSS_EVENTS,
];
const DEAD: &[Metric] = &[
    RSS,
    m("queued", "events held (sum over endpoints)", 0),
    m("write_phase_s", "write phase s", 2),
];
const CEILING: &[Metric] = &[
    m("req_per_s", "requests/s", 0),
    m("connections", "TCP connections", 0),
    m("receiver_cpu_s", "receiver CPU s (--target only)", 2),
];

const PG_E2E: &[Metric] = &[
    m("delivered_per_s", "deliveries/s, all endpoints", 0),
    m("events_per_s", "events/s delivered to every endpoint", 0),
    m("ep0_per_s", "ep0 events/s", 0),
    m("ep1_per_s", "ep1 events/s", 0),
    m("ep2_per_s", "ep2 events/s", 0),
    m("ingest_per_s", "events/s acknowledged while delivering", 0),
    m("ingest_p99_ms", "ingest p99 ms", 1),
    m(
        "drain_after_last_post_s",
        "last delivery after last ack, s",
        2,
    ),
    m(
        "drain_per_s",
        "then preloaded with endpoints disabled: drain deliveries/s",
        0,
    ),
    m("lost", "lost", 0),
    m("duplicates", "duplicates", 0),
    m("load1", "1-min load average at start", 2),
];

/// Every scenario, in the peer's order, then hookwire's own.
pub(crate) const SPECS: &[Spec] = &[
    Spec {
        id: "fanout_N1",
        desc: "Dispatcher -> 1 counting consumer, 1 producer (2M)",
        metrics: FANOUT,
    },
    Spec {
        id: "fanout_N4",
        desc: "Dispatcher -> 4 counting consumers, 1 producer (1M)",
        metrics: FANOUT,
    },
    Spec {
        id: "fanout_N16",
        desc: "Dispatcher -> 16 counting consumers, 1 producer (400k)",
        metrics: FANOUT,
    },
    Spec {
        id: "fanout_N4_P2",
        desc: "Dispatcher -> 4 counting consumers, 2 producers (1M)",
        metrics: FANOUT,
    },
    Spec {
        id: "publish_latency_N4",
        desc: "publish_raw latency, 4 consumers draining (1M calls)",
        metrics: &[
            m("p50_ns", "p50 ns", 0),
            m("p99_ns", "p99 ns", 0),
            m("p999_ns", "p99.9 ns", 0),
            m("max_ns", "max ns", 0),
            m("mean_ns", "mean ns", 0),
            m(
                "timer_overhead_ns",
                "Instant::now pair overhead ns (included)",
                0,
            ),
            m(
                "encode_ns",
                "serde_json encode, caller's thread, median ns (not included)",
                0,
            ),
        ],
    },
    Spec {
        id: "http_1",
        desc: "1 endpoint, defaults (1 event/request, 1 in flight) (50k)",
        metrics: HTTP_1,
    },
    Spec {
        id: "http_outage",
        desc: "same, receiver answers 500 for the first 1 s (50k)",
        metrics: &[
            m("delivered_per_s", "delivered/s overall (incl. outage)", 0),
            m(
                "first_success_after_outage_ms",
                "first success after outage end, ms",
                1,
            ),
            m("answered_non2xx", "requests answered 500", 0),
            m("lost", "lost", 0),
            m("duplicates", "duplicates", 0),
            m("total_s", "total s", 2),
        ],
    },
    Spec {
        id: "http_batch",
        desc: "1 endpoint, 100 events per request (500k)",
        metrics: &[
            m("delivered_per_s", "delivered events/s", 0),
            m("requests", "requests", 0),
            m("lost", "lost", 0),
            m("duplicates", "duplicates", 0),
            m(
                "receiver_cpu_s",
                "receiver CPU s (its threads, or --target's process)",
                2,
            ),
            m("workers_cpu_s", "hookwire workers' CPU s", 2),
            RSS_WHOLE,
            RSS_ABOVE,
            RSS_EVENTS,
        ],
    },
    Spec {
        id: "http_batch_inflight2",
        desc: "1 endpoint, 100 events per request, 2 requests in flight (500k)",
        metrics: &[
            m("delivered_per_s", "delivered events/s", 0),
            m("requests", "requests", 0),
            m("lost", "lost", 0),
            m("duplicates", "duplicates", 0),
            RSS_WHOLE,
            RSS_ABOVE,
            RSS_EVENTS,
        ],
    },
    Spec {
        id: "isolation",
        desc: "healthy endpoint beside a hanging one on 1 worker, vs alone (20k)",
        metrics: &[
            m("solo_per_s", "healthy alone, delivered/s", 0),
            m(
                "beside_hanging_per_s",
                "healthy beside a hanging one, delivered/s",
                0,
            ),
            m("ratio", "beside / alone", 3),
        ],
    },
    Spec {
        id: "isolation_hostile",
        desc: "healthy endpoint beside an endless chunk-size line on 1 worker, vs alone (20k)",
        metrics: &[
            m("solo_per_s", "healthy alone, delivered/s", 0),
            m(
                "beside_hostile_per_s",
                "healthy beside an endless answer, delivered/s",
                0,
            ),
            m("ratio", "beside / alone", 3),
        ],
    },
    Spec {
        id: "dead_endpoint_rss_N1",
        desc: "1 hanging endpoint, cap 10k DropOldest, 1M published",
        metrics: DEAD,
    },
    Spec {
        id: "dead_endpoint_rss_N4",
        desc: "4 hanging endpoints, cap 10k DropOldest, 1M published",
        metrics: DEAD,
    },
    Spec {
        id: "dead_endpoint_rss_N16",
        desc: "16 hanging endpoints, cap 10k DropOldest, 1M published",
        metrics: DEAD,
    },
    Spec {
        id: "rss_baseline",
        desc: "same process, 1 event, 1 endpoint",
        metrics: &[RSS],
    },
    Spec {
        id: "durable_publish_512",
        desc: "512-byte events to a durable endpoint, group commit, vs memory mode (1M)",
        metrics: &[
            m("durable_per_s", "durable publishes/s", 0),
            m("memory_per_s", "memory-mode publishes/s", 0),
            m("ratio", "durable / memory", 3),
            m("log_mb", "log MB", 1),
        ],
    },
    Spec {
        id: "serve_ingest_batch",
        desc: "hookwire serve: 100-event NDJSON bodies, 16 keep-alive connections, 2xx after fsync (500k)",
        metrics: &[
            m("events_per_s", "events/s acknowledged", 0),
            m("request_p50_us", "request p50 us", 0),
            m("request_p99_us", "request p99 us", 0),
        ],
    },
    Spec {
        id: "serve_ingest_1",
        desc: "hookwire serve: 1 event per request, 16 connections, 2xx after fsync (100k), vs the loopback ceiling",
        metrics: &[
            m("events_per_s", "events/s acknowledged", 0),
            m("p50_ms", "ingest p50 ms", 2),
            m("p99_ms", "ingest p99 ms", 2),
            m("ceiling_per_s", "same client, loopback receiver, /s", 0),
            m("ceiling_p99_ms", "ceiling p99 ms", 2),
        ],
    },
    Spec {
        id: "serve_registry",
        desc: "hookwire serve: registry v1 envelopes, 1 per request, relayed to 3 endpoints (1 failing) (1M)",
        metrics: &[
            m("ingest_per_s", "events/s acknowledged", 0),
            m("p99_ms", "ingest p99 ms", 2),
            m("lost", "lost", 0),
            m("duplicates", "duplicates", 0),
            m("failing_pending", "failing endpoint's backlog", 0),
            m("rss_end_kb", "RSS at the end, kB", 0),
        ],
    },
    Spec {
        id: "pg_ingest",
        desc: "hookwire serve on PostgreSQL, 1 node: 100-event bodies, 16 connections, 2xx after commit (500k)",
        metrics: &[
            m("events_per_s", "events/s committed and acknowledged", 0),
            m("request_p50_us", "request p50 us", 0),
            m("request_p99_us", "request p99 us", 0),
            m("load1", "1-min load average at start", 2),
        ],
    },
    Spec {
        id: "pg_e2e_1",
        desc: "PostgreSQL, 1 node, 3 endpoints, batches of 100: first post to last delivery (200k x 3), then a preload drained",
        metrics: PG_E2E,
    },
    Spec {
        id: "pg_e2e_2",
        desc: "PostgreSQL, 2 nodes, 3 endpoints, batches of 100: first post to last delivery (200k x 3), then a preload drained",
        metrics: PG_E2E,
    },
    Spec {
        id: "pg_e2e_3",
        desc: "PostgreSQL, 3 nodes, 3 endpoints, batches of 100: first post to last delivery (200k x 3), then a preload drained",
        metrics: PG_E2E,
    },
    Spec {
        id: "pg_takeover",
        desc: "PostgreSQL, 2 nodes, lease 2 s: kill -9 of a node, until the survivor holds and delivers its endpoint",
        metrics: &[
            m("takeover_s", "kill to survivor holding the lease, s", 2),
            m(
                "first_delivery_s",
                "kill to survivor's first delivery, s",
                2,
            ),
            m("lease_s", "lease s", 1),
            m("lost", "lost", 0),
            m("duplicates", "duplicates", 0),
            m("load1", "1-min load average at start", 2),
        ],
    },
    Spec {
        id: "durable_recovery_1M",
        desc: "reopen a log of 1M unacknowledged 512-byte events and redeliver them",
        metrics: &[
            m("open_ms", "open (recovery) ms", 1),
            m("first_delivery_ms", "first delivery ms", 1),
            m("redelivered_per_s", "redelivered events/s", 0),
            m("duplicates", "duplicates", 0),
        ],
    },
    Spec {
        id: "spill_rss_10M",
        desc: "durable endpoint down, Spill, 10M small events published",
        metrics: &[
            m("rss_at_tenth_kb", "RSS after 1/10, kB", 0),
            m("rss_end_kb", "RSS at the end, kB", 0),
            m("held_in_memory", "events held in memory", 0),
            m("log_mb", "log MB", 1),
            m("publish_per_s", "publishes/s", 0),
        ],
    },
    Spec {
        id: "loopback_ceiling_c1",
        desc: "raw keep-alive client, 1 thread (50k)",
        metrics: CEILING,
    },
    Spec {
        id: "loopback_ceiling_c16",
        desc: "raw keep-alive client, 16 threads (100k)",
        metrics: CEILING,
    },
];
