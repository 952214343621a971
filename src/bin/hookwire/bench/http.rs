//! The HTTP scenarios: `http_1`, `http_outage`, `http_batch`, `isolation` and
//! `isolation_hostile`.
//!
//! Each publishes the peer's manifest-push events (built before the clock starts, 1,158-byte
//! bodies) to one endpoint and stops the clock when the receiver has counted every id: the
//! test kit receiver in this process, or `--target` (the Go receiver, read through `/stats`).
//! The endpoint keeps its defaults (timeout 1 s, threshold 10, backoff 1 s, one event per
//! request, one request in flight), except its capacity: the peer's queue is unbounded, so
//! ours is given room for every event, and no publish is refused.

use std::time::{Duration, Instant};

use hookwire::endpoint::{BatchConfig, EndpointConfig};
use hookwire::engine::Dispatcher;
use hookwire::sink::Overflow;
use hookwire::stats::Metrics;
use hookwire::testkit::{Hostile, Receiver, ReceiverConfig};
use hookwire::{Error, RawEvent};

use super::cpu::ThreadCpu;
use super::event::{ManifestGen, PEER_BODY_BYTES};
use super::rss::vm_kb;
use super::target::{Counted, Target};
use super::{Ctx, Values};

/// One delivery run.
struct Plan<'a> {
    /// The scenario id (for progress).
    id: &'a str,
    /// Events to publish.
    n: u64,
    /// Events per request.
    batch: usize,
    /// Requests in flight at once (1 keeps strict order).
    max_in_flight: usize,
    /// Worker threads (`None`: the default, one per core).
    workers: Option<usize>,
    /// Endpoints added before the measured one (`isolation`'s hanging neighbour).
    beside: Vec<EndpointConfig>,
    /// The receiver's failing window, if it has one.
    outage: Option<Duration>,
}

/// What a run measured.
struct Outcome {
    write_phase: Duration,
    elapsed: Duration,
    counted: Counted,
    metrics: Option<Metrics>,
    /// CPU time of hookwire's worker threads while delivering.
    workers_cpu: Option<Duration>,
    /// CPU time of the test kit receiver's threads while delivering (`None` with `--target`).
    receiver_cpu: Option<Duration>,
    /// RSS once the events were built, before anything was published.
    rss_with_events_kb: u64,
    /// What building the events added to RSS.
    events_kb: u64,
}

impl Outcome {
    fn lost(&self, n: u64) -> u64 {
        n.saturating_sub(self.counted.unique)
    }

    fn delivered_per_s(&self) -> f64 {
        self.counted.unique as f64 / self.elapsed.as_secs_f64()
    }
}

fn events(n: u64) -> Vec<RawEvent> {
    let g = ManifestGen::new();
    (0..n).map(|k| g.event(k)).collect()
}

/// Publishes `plan.n` events and waits for the receiver to count them all (bounded).
fn deliver(ctx: &Ctx, target: &Target, plan: Plan<'_>) -> Result<Outcome, Error> {
    let rss_before = vm_kb("VmRSS").unwrap_or(0);
    let events = events(plan.n);
    let with_events = vm_kb("VmRSS").unwrap_or(0);
    target.reset()?;
    let mut builder = Dispatcher::builder();
    if let Some(w) = plan.workers {
        builder = builder.workers(w);
    }
    let d = builder.build()?;
    for cfg in plan.beside {
        d.add_endpoint(cfg)?;
    }
    let mut cfg = EndpointConfig::new("bench", target.delivery_url());
    cfg.capacity = usize::try_from(plan.n).unwrap_or(usize::MAX).max(1);
    cfg.batch = BatchConfig::events(plan.batch);
    cfg.max_in_flight = plan.max_in_flight;
    let ep = d.add_endpoint(cfg)?;

    let requests = plan.n.div_ceil(plan.batch as u64);
    // Generous and bounded: 30 s plus 2 ms per request (the peer delivers ~2,000/s).
    let budget = Duration::from_secs(30)
        + Duration::from_millis(2) * u32::try_from(requests).unwrap_or(u32::MAX);
    let progress = ctx.progress(plan.id, "delivered", plan.n);
    let cpu0 = ThreadCpu::sample();
    let t0 = Instant::now();
    for ev in events {
        d.publish_raw(ev)?;
    }
    let write_phase = t0.elapsed();
    let (counted, seen) = target.wait_counted(plan.n, t0 + budget, plan.outage, &progress)?;
    let cpu = ThreadCpu::sample();
    drop(progress);
    let metrics = d.endpoint_snapshot(ep).map(|s| s.metrics);
    let _ = d.shutdown(Duration::from_secs(2));
    Ok(Outcome {
        write_phase,
        elapsed: seen - t0,
        counted,
        metrics,
        workers_cpu: cpu.since(&cpu0, "hookwire-worker"),
        receiver_cpu: cpu.since(&cpu0, "hookwire-receiv"),
        rss_with_events_kb: with_events,
        events_kb: with_events.saturating_sub(rss_before),
    })
}

/// The process's peak RSS, and how much of it came on top of the pre-built events (the
/// engine, its rings and connections, and the in-process receiver), in kB.
fn peak_rss_above(o: &Outcome) -> (u64, u64) {
    let peak = vm_kb("VmHWM").unwrap_or(0);
    (peak, peak.saturating_sub(o.rss_with_events_kb))
}

/// The keys every HTTP scenario reports.
fn common(v: &mut Values, n: u64, o: &Outcome) {
    v.put("delivered_per_s", o.delivered_per_s())
        .put("lost", o.lost(n) as f64)
        .put("duplicates", o.counted.duplicates as f64)
        .put("connections", o.counted.connections as f64)
        .put("requests", o.counted.requests as f64)
        .put("answered_non2xx", o.counted.non2xx as f64)
        .put("delivered", o.counted.unique as f64)
        .put("n", n as f64)
        .put("total_s", o.elapsed.as_secs_f64())
        .put("write_phase_s", o.write_phase.as_secs_f64())
        .put("peak_rss_kb", peak_rss_above(o).0 as f64)
        .put("rss_above_events_kb", peak_rss_above(o).1 as f64)
        .put("prebuilt_events_kb", o.events_kb as f64);
    if let Some(cpu) = o.counted.cpu_s.or(o.receiver_cpu.map(|d| d.as_secs_f64())) {
        v.put("receiver_cpu_s", cpu);
    }
    if let Some(cpu) = o.workers_cpu {
        v.put("workers_cpu_s", cpu.as_secs_f64());
    }
    if let Some(m) = &o.metrics {
        v.put("ep_successes", m.successes as f64)
            .put("ep_failures", m.failures as f64)
            .put("ep_errors", m.errors as f64)
            .put("ep_retries", m.retries as f64);
    }
}

/// `http_1`: 50,000 events, one per request, to a healthy receiver.
pub(crate) fn http_1(ctx: &Ctx) -> Result<Values, Error> {
    let n = ctx.count(50_000);
    let target = Target::open(ctx.target.as_deref(), ReceiverConfig::default())?;
    let o = deliver(
        ctx,
        &target,
        Plan {
            id: "http_1",
            n,
            batch: 1,
            max_in_flight: 1,
            workers: None,
            beside: Vec::new(),
            outage: None,
        },
    )?;
    let mut v = Values::default();
    common(&mut v, n, &o);
    v.put("body_bytes", PEER_BODY_BYTES as f64);
    Ok(v)
}

/// `http_outage`: as `http_1`, but the receiver answers 500 for 1 s after the first request.
pub(crate) fn outage(ctx: &Ctx) -> Result<Values, Error> {
    let n = ctx.count(50_000);
    let window = Duration::from_secs(1);
    let target = Target::open(
        ctx.target.as_deref(),
        ReceiverConfig::default().fail_for(window, 500),
    )?;
    if ctx.target.is_some() && target.counted(None)?.fail_first_ms <= 0.0 {
        return Err(Error::config(
            "--target",
            "http_outage needs the Go receiver started with -fail-first 1s",
        ));
    }
    let outage = Some(window);
    let o = deliver(
        ctx,
        &target,
        Plan {
            id: "http_outage",
            n,
            batch: 1,
            max_in_flight: 1,
            workers: None,
            beside: Vec::new(),
            outage,
        },
    )?;
    let mut v = Values::default();
    common(&mut v, n, &o);
    v.put(
        "first_success_after_outage_ms",
        o.counted.first_2xx_after_outage_ms.unwrap_or(f64::NAN),
    );
    Ok(v)
}

/// `http_batch`: 500,000 events, 100 per request, `max_in_flight` requests at once
/// (`http_batch` is 1, the default; `http_batch_inflight2` is 2).
pub(crate) fn batch(ctx: &Ctx, id: &'static str, max_in_flight: usize) -> Result<Values, Error> {
    let n = ctx.count(500_000);
    let target = Target::open(ctx.target.as_deref(), ReceiverConfig::default())?;
    let o = deliver(
        ctx,
        &target,
        Plan {
            id,
            n,
            batch: 100,
            max_in_flight,
            workers: None,
            beside: Vec::new(),
            outage: None,
        },
    )?;
    let mut v = Values::default();
    common(&mut v, n, &o);
    Ok(v)
}

/// `isolation`: on ONE worker, a healthy endpoint's rate beside an endpoint whose receiver
/// never answers, against the same endpoint alone, in the same run.
pub(crate) fn isolation(ctx: &Ctx) -> Result<Values, Error> {
    let hanging = Receiver::start(ReceiverConfig::default().hang())?;
    beside(ctx, "isolation", "beside_hanging_per_s", &hanging.url())
}

/// `isolation_hostile`: as `isolation`, but the neighbour's server answers `200`, chunked,
/// then a chunk-size line that never ends, as fast as the socket takes it (issue 9).
pub(crate) fn isolation_hostile(ctx: &Ctx) -> Result<Values, Error> {
    let hostile = Hostile::endless_chunk_size()?;
    let mut v = beside(
        ctx,
        "isolation_hostile",
        "beside_hostile_per_s",
        &hostile.url(),
    )?;
    let st = hostile.stats();
    v.put("hostile_requests", st.requests as f64)
        .put("hostile_bytes_written", st.bytes_written as f64);
    Ok(v)
}

/// The healthy endpoint alone on one worker, then beside an endpoint delivering to
/// `neighbour` (its rate reported as `key`), and the ratio.
fn beside(ctx: &Ctx, id: &str, key: &'static str, neighbour: &str) -> Result<Values, Error> {
    let n = ctx.count(20_000);
    let alone = format!("{id} (alone)");
    let solo = {
        let target = Target::open(ctx.target.as_deref(), ReceiverConfig::default())?;
        deliver(
            ctx,
            &target,
            Plan {
                id: &alone,
                n,
                batch: 1,
                max_in_flight: 1,
                workers: Some(1),
                beside: Vec::new(),
                outage: None,
            },
        )?
    };
    let with = format!("{id} (beside)");
    let beside = {
        let mut other = EndpointConfig::new("neighbour", neighbour);
        other.overflow = Overflow::DropOldest; // bounded: 10,000 held at most
        let target = Target::open(ctx.target.as_deref(), ReceiverConfig::default())?;
        let plan = Plan {
            id: &with,
            n,
            batch: 1,
            max_in_flight: 1,
            workers: Some(1),
            beside: vec![other],
            outage: None,
        };
        deliver(ctx, &target, plan)?
    };
    let (a, b) = (solo.delivered_per_s(), beside.delivered_per_s());
    let mut v = Values::default();
    v.put("solo_per_s", a)
        .put(key, b)
        .put("ratio", b / a)
        .put("n", n as f64)
        .put("solo_lost", solo.lost(n) as f64)
        .put("beside_lost", beside.lost(n) as f64)
        .put("beside_duplicates", beside.counted.duplicates as f64);
    Ok(v)
}
