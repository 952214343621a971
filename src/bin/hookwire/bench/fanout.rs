//! `fanout_N*` and `publish_latency_N4`: the Dispatcher with N in-process consumers that only
//! count, as the peer's go-events `Broadcaster` -> N `Queue`s -> counting sinks.
//!
//! Events are distinct small [`RawEvent`]s built before the clock starts (the peer allocates a
//! 24-byte `*Ev` per write), so JSON encoding is not in the timed loop; `encode_ns` reports
//! what encoding would add on the caller's thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use hookwire::engine::Dispatcher;
use hookwire::{Error, RawEvent};

use super::event::{self, ManifestEvent, SmallEvent};
use super::progress::Progress;
use super::rss::vm_kb;
use super::{Ctx, Values, failed};

/// How long the consumers may take to count everything after the last publish.
const DRAIN: Duration = Duration::from_secs(120);
/// Progress is published every this many events (one relaxed add).
const STRIDE: usize = 4096;

/// One counter per consumer, each on its own cache line.
type Counters = Vec<Arc<CachePadded<AtomicU64>>>;

/// Adds `n` consumers that count what they get. Each counts in a local and publishes it with
/// a plain store: one writer per counter, so no read-modify-write is needed.
pub(crate) fn add_counters(d: &Dispatcher, n: usize) -> Result<Counters, Error> {
    (0..n)
        .map(|i| {
            let c = Arc::new(CachePadded::new(AtomicU64::new(0)));
            let mine = c.clone();
            let mut local = 0u64;
            d.add_consumer(&format!("counter-{i}"), move |_: &RawEvent| {
                local += 1;
                mine.store(local, Ordering::Release);
            })?;
            Ok(c)
        })
        .collect()
}

fn counted(c: &Counters) -> Vec<u64> {
    c.iter().map(|c| c.load(Ordering::Acquire)).collect()
}

/// Waits until the dispatcher is idle and checks that every consumer counted `want`.
fn drain(d: &Dispatcher, c: &Counters, want: u64) -> Result<(), Error> {
    if !d.wait_idle(DRAIN) {
        return Err(Error::Timeout {
            waiting_for: "the consumers to count every event",
            after: DRAIN,
        });
    }
    let got = counted(c);
    if got.iter().any(|&n| n != want) {
        return Err(failed(format!(
            "consumers counted {got:?}, want {want} each"
        )));
    }
    Ok(())
}

/// `fanout_*`: `producers` threads publish `n` events (split evenly) to `consumers` counters.
/// The clock runs from the first publish until every consumer counted every event.
pub(crate) fn fanout(
    ctx: &Ctx,
    id: &str,
    consumers: usize,
    producers: usize,
    n: u64,
) -> Result<Values, Error> {
    let per = ctx.count(n) / producers as u64;
    let total = per * producers as u64;
    let rss_before = vm_kb("VmRSS").unwrap_or(0);
    let batches: Vec<Vec<RawEvent>> = (0..producers as u64)
        .map(|p| (p * per..(p + 1) * per).map(event::small).collect())
        .collect();
    let with_events = vm_kb("VmRSS").unwrap_or(0);
    let events_kb = with_events.saturating_sub(rss_before);

    let d = Dispatcher::builder().build()?;
    let counters = add_counters(&d, consumers)?;
    let progress = ctx.progress(id, "events", total);
    let start = Barrier::new(producers + 1);
    let (t0, write_phase) = std::thread::scope(|s| {
        let handles: Vec<_> = batches
            .into_iter()
            .map(|batch| {
                let (d, start, progress) = (&d, &start, &progress);
                s.spawn(move || publish_all(d, batch, start, progress))
            })
            .collect();
        let t0 = Instant::now();
        start.wait();
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        let write_phase = t0.elapsed();
        for r in results {
            r.map_err(|_| failed("a producer thread panicked"))??;
        }
        Ok::<_, Error>((t0, write_phase))
    })?;
    let backlog = total * consumers as u64 - counted(&counters).iter().sum::<u64>();
    drain(&d, &counters, total)?;
    let el = t0.elapsed().as_secs_f64();
    drop(progress);
    let _ = d.shutdown(Duration::from_secs(5));

    let mut v = Values::default();
    v.put("writes_per_s", total as f64 / el)
        .put("deliveries_per_s", (total * consumers as u64) as f64 / el)
        .put("peak_rss_kb", vm_kb("VmHWM").unwrap_or(0) as f64)
        .put(
            "rss_above_events_kb",
            vm_kb("VmHWM").unwrap_or(0).saturating_sub(with_events) as f64,
        )
        .put("n", total as f64)
        .put("consumers", consumers as f64)
        .put("producers", producers as f64)
        .put(
            "write_phase_writes_per_s",
            total as f64 / write_phase.as_secs_f64(),
        )
        .put("total_s", el)
        .put("backlog_at_write_end", backlog as f64)
        .put("prebuilt_events_kb", events_kb as f64);
    Ok(v)
}

fn publish_all(
    d: &Dispatcher,
    batch: Vec<RawEvent>,
    start: &Barrier,
    progress: &Progress,
) -> Result<(), Error> {
    start.wait();
    for (i, ev) in batch.into_iter().enumerate() {
        d.publish_raw(ev)?;
        if i % STRIDE == STRIDE - 1 {
            progress.add(STRIDE as u64);
        }
    }
    Ok(())
}

/// The cost of one `Instant::now()` + `elapsed()` pair, in ns (the peer's `timerOverheadNs`).
pub(crate) fn timer_overhead_ns(pairs: u64) -> f64 {
    let mut acc = Duration::ZERO;
    let t0 = Instant::now();
    for _ in 0..pairs {
        let a = Instant::now();
        acc += a.elapsed();
    }
    std::hint::black_box(acc);
    t0.elapsed().as_nanos() as f64 / pairs.max(1) as f64
}

/// The median cost of serde_json-encoding one event into a reused buffer on this thread, in
/// ns: `rounds` rounds of 100 encodes, each round timed as a whole (so the timer's cost is
/// spread over 100), the median round taken.
pub(crate) fn encode_ns<E: serde::Serialize>(
    rounds: u64,
    make: impl Fn(u64) -> E,
) -> Result<f64, Error> {
    const PER_ROUND: u64 = 100;
    let mut buf = Vec::with_capacity(4096);
    let mut per_event = Vec::with_capacity(rounds as usize);
    for r in 0..rounds {
        let events: Vec<E> = (0..PER_ROUND).map(|i| make(r * PER_ROUND + i)).collect();
        let a = Instant::now();
        for e in &events {
            buf.clear();
            serde_json::to_writer(&mut buf, e)?;
            std::hint::black_box(&buf);
        }
        per_event.push(a.elapsed().as_nanos() as f64 / PER_ROUND as f64);
    }
    Ok(super::report::median(&per_event))
}

/// `publish_latency_N4`: each `publish_raw(ev.clone())` timed, `consumers` counters draining.
pub(crate) fn latency(ctx: &Ctx, id: &str, consumers: usize, n: u64) -> Result<Values, Error> {
    let n = ctx.count(n);
    let overhead = timer_overhead_ns(ctx.count(1_000_000));
    let encode = encode_ns(ctx.count(10_000), |k| SmallEvent {
        id: k.to_string(),
        seq: k,
    })?;
    let encode_manifest = encode_ns(ctx.count(1_000), ManifestEvent::new)?;
    let events: Vec<RawEvent> = (0..n).map(event::small).collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| failed(format!("histogram: {e}")))?;

    let d = Dispatcher::builder().build()?;
    let counters = add_counters(&d, consumers)?;
    let progress = ctx.progress(id, "events", n);
    let t0 = Instant::now();
    for (i, ev) in events.iter().enumerate() {
        let a = Instant::now();
        d.publish_raw(ev.clone())?;
        let ns = a.elapsed().as_nanos();
        hist.saturating_record(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
        if i % STRIDE == STRIDE - 1 {
            progress.set(i as u64 + 1);
        }
    }
    let write_phase = t0.elapsed();
    drain(&d, &counters, n)?;
    drop(progress);
    let _ = d.shutdown(Duration::from_secs(5));

    let mut v = Values::default();
    v.put("p50_ns", hist.value_at_quantile(0.50) as f64)
        .put("p99_ns", hist.value_at_quantile(0.99) as f64)
        .put("p999_ns", hist.value_at_quantile(0.999) as f64)
        .put("max_ns", hist.max() as f64)
        .put("mean_ns", hist.mean())
        .put("timer_overhead_ns", overhead)
        .put("encode_ns", encode)
        .put("encode_manifest_ns", encode_manifest)
        .put("n", n as f64)
        .put("consumers", consumers as f64)
        .put(
            "write_phase_writes_per_s",
            n as f64 / write_phase.as_secs_f64(),
        );
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_overhead_is_small_and_positive() {
        let ns = timer_overhead_ns(10_000);
        assert!(ns > 0.0 && ns < 100_000.0, "{ns}");
    }

    #[test]
    fn encode_cost_is_measured_per_event() {
        let small = encode_ns(20, |k| SmallEvent {
            id: k.to_string(),
            seq: k,
        })
        .unwrap();
        let big = encode_ns(20, ManifestEvent::new).unwrap();
        assert!(small > 0.0 && big > 0.0);
        // A 1.1 KB event costs more to encode than a 20-byte one, by any measure.
        assert!(big > small, "small {small} ns, manifest {big} ns");
    }
}
