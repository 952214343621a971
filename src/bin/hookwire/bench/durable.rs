//! The durable-delivery scenarios (issue 4): group-committed publishes, recovery of a large
//! unacknowledged backlog, and memory under `Spill` while an endpoint is down.
//!
//! Each uses a fresh data directory under the system's temp dir, removed at the end (the
//! runner gives every scenario its own process, so a killed run leaves only its directory).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hookwire::endpoint::{BatchConfig, EndpointConfig};
use hookwire::engine::Dispatcher;
use hookwire::sink::Overflow;
use hookwire::store::StoreConfig;
use hookwire::testkit::{Receiver, ReceiverConfig};
use hookwire::{Error, RawEvent};

use super::rss::vm_kb;
use super::{Ctx, Values, failed};

/// A data directory for one run, removed when dropped.
pub(super) struct DataDir(pub(super) PathBuf);

impl DataDir {
    pub(super) fn new(id: &str) -> DataDir {
        let dir = std::env::temp_dir().join(format!("hookwire-bench-{id}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        DataDir(dir)
    }

    /// Bytes in the directory's files (the log's segments and the rest).
    fn bytes(&self) -> u64 {
        fn walk(p: &std::path::Path) -> u64 {
            std::fs::read_dir(p).map_or(0, |rd| {
                rd.flatten()
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => walk(&e.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
        }
        walk(&self.0)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A 512-byte event with id `k` (the issue's event size).
fn event_512(k: u64) -> RawEvent {
    let head = format!(r#"{{"id":"{k}","pad":""#);
    let pad = 512 - head.len() - 2;
    RawEvent::new(k.to_string(), format!("{head}{}\"}}", "x".repeat(pad)))
        .expect("a literal JSON object with a non-empty id")
}

fn store(dir: &DataDir, quota: u64) -> StoreConfig {
    let mut c = StoreConfig::new(&dir.0);
    c.quota_bytes = quota;
    c
}

/// A durable endpoint posting to `url`.
fn durable(url: String, capacity: usize, batch: usize) -> EndpointConfig {
    let mut c = EndpointConfig::new("durable", url).durable();
    c.capacity = capacity;
    c.batch = BatchConfig::events(batch);
    c
}

/// `durable_publish_512`: one producer publishes 512-byte events with a ticket each (never
/// waiting on one until the end), to a durable endpoint whose receiver never answers, so the
/// figure is the log's group commit, not delivery. The same run then measures memory mode
/// (a memory endpoint, `DropOldest`, same receiver) for the ratio.
pub(crate) fn publish(ctx: &Ctx, id: &str) -> Result<Values, Error> {
    let n = ctx.count(1_000_000);
    let events: Vec<RawEvent> = (0..n).map(event_512).collect();
    let receiver = Receiver::start(ReceiverConfig::default().hang())?;

    let dir = DataDir::new(id);
    let d = Dispatcher::builder()
        .store_config(store(&dir, 8 << 30))
        .build()?;
    d.add_endpoint(durable(receiver.url(), 10_000, 1))?;
    let progress = ctx.progress(id, "events", n);
    let t0 = Instant::now();
    let mut last = None;
    for (k, e) in events.iter().enumerate() {
        last = Some(d.publish_with_ticket(e.clone())?);
        if k % 4096 == 4095 {
            progress.set(k as u64 + 1);
        }
    }
    let seq = last
        .map(|t| t.wait(Duration::from_secs(120)))
        .transpose()?
        .flatten();
    let durable_s = t0.elapsed().as_secs_f64();
    drop(progress);
    if seq.is_none() {
        return Err(failed("the last event was not persisted"));
    }
    let commits = d.stats();
    let log_bytes = dir.bytes();
    let _ = std::mem::ManuallyDrop::new(d); // no drain: the receiver never answers

    let memory = Dispatcher::builder().build()?;
    let mut c = EndpointConfig::new("memory", receiver.url());
    c.capacity = 10_000;
    c.overflow = Overflow::DropOldest;
    memory.add_endpoint(c)?;
    let t0 = Instant::now();
    for e in &events {
        memory.publish_raw(e.clone())?;
    }
    let memory_s = t0.elapsed().as_secs_f64();
    let _ = std::mem::ManuallyDrop::new(memory);
    let _ = std::mem::ManuallyDrop::new(receiver);

    let durable_rate = n as f64 / durable_s;
    let memory_rate = n as f64 / memory_s;
    let mut v = Values::default();
    v.put("durable_per_s", durable_rate)
        .put("memory_per_s", memory_rate)
        .put("ratio", durable_rate / memory_rate)
        .put("log_mb", log_bytes as f64 / 1e6)
        .put("published", commits.published as f64)
        .put("n", n as f64);
    Ok(v)
}

/// `durable_recovery_1M`: 1M unacknowledged 512-byte events in the log (written by a first
/// dispatcher whose endpoint never answered), then a second dispatcher opens the directory
/// and delivers them to a healthy receiver, 100 per request. Reports how long opening took
/// (recovery), how long until the first delivery, and the rate of the whole redelivery.
pub(crate) fn recovery(ctx: &Ctx, id: &str) -> Result<Values, Error> {
    let n = ctx.count(1_000_000);
    let dir = DataDir::new(id);
    {
        let dead = Receiver::start(ReceiverConfig::default().hang())?;
        let d = Dispatcher::builder()
            .store_config(store(&dir, 8 << 30))
            .build()?;
        d.add_endpoint(durable(dead.url(), 10_000, 100))?;
        let progress = ctx.progress(id, "written", n);
        let mut last = None;
        for k in 0..n {
            last = Some(d.publish_with_ticket(event_512(k))?);
            if k % 4096 == 4095 {
                progress.set(k + 1);
            }
        }
        if let Some(t) = last {
            t.wait(Duration::from_secs(120))?;
        }
        drop(progress);
        let _ = d.shutdown(Duration::from_millis(10));
    }
    let receiver = Receiver::start(ReceiverConfig::default())?;
    let t0 = Instant::now();
    let d = Dispatcher::builder()
        .store_config(store(&dir, 8 << 30))
        .build()?;
    let open = t0.elapsed();
    let records = d.recovery().map_or(0, |r| r.records);
    d.add_endpoint(durable(receiver.url(), 10_000, 100))?;
    let progress = ctx.progress(id, "redelivered", n);
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let got = receiver.stats().distinct;
        if got > 0 && first.is_none() {
            first = Some(t0.elapsed());
        }
        progress.set(got);
        if got >= n {
            break;
        }
        if Instant::now() > deadline {
            return Err(failed(format!("only {got} of {n} redelivered")));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let total = t0.elapsed();
    drop(progress);
    let dup = receiver.stats().duplicates;
    let _ = d.shutdown(Duration::from_secs(5));
    let mut v = Values::default();
    v.put("open_ms", open.as_secs_f64() * 1e3)
        .put(
            "first_delivery_ms",
            first.unwrap_or_default().as_secs_f64() * 1e3,
        )
        .put("redelivered_per_s", n as f64 / total.as_secs_f64())
        .put("total_s", total.as_secs_f64())
        .put("records", records as f64)
        .put("duplicates", dup as f64)
        .put("n", n as f64);
    Ok(v)
}

/// `spill_rss_10M`: a durable endpoint (`Spill`, 10,000 in memory) whose receiver never
/// answers; 10M small events are published. Reports RSS after the first tenth and at the end
/// (flat means the backlog is on disk, not in memory), and the log's size.
pub(crate) fn spill(ctx: &Ctx, id: &str) -> Result<Values, Error> {
    let n = ctx.count(10_000_000);
    let dir = DataDir::new(id);
    let receiver = Receiver::start(ReceiverConfig::default().hang())?;
    let d = Dispatcher::builder()
        .store_config(store(&dir, 16 << 30))
        .build()?;
    let ep = d.add_endpoint(durable(receiver.url(), 10_000, 1))?;
    let progress = ctx.progress(id, "events", n);
    let mut rss_tenth = 0;
    let t0 = Instant::now();
    for k in 0..n {
        d.publish_raw(super::event::small(k))?;
        if k % 4096 == 4095 {
            progress.set(k + 1);
        }
        if k + 1 == n / 10 {
            rss_tenth = vm_kb("VmRSS").unwrap_or(0);
        }
    }
    let write_s = t0.elapsed().as_secs_f64();
    drop(progress);
    // Let the last group commit land and the endpoint take it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while d
        .endpoint_snapshot(ep)
        .is_some_and(|s| s.metrics.events < n)
    {
        if Instant::now() > deadline {
            return Err(failed("the log did not take every event"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    let m = d.endpoint_snapshot(ep).map(|s| s.metrics);
    let rss_end = vm_kb("VmRSS").unwrap_or(0);
    let peak = vm_kb("VmHWM").unwrap_or(0);
    let log_bytes = dir.bytes();
    let _ = std::mem::ManuallyDrop::new(d);
    let _ = std::mem::ManuallyDrop::new(receiver);
    let mut v = Values::default();
    v.put("rss_at_tenth_kb", rss_tenth as f64)
        .put("rss_end_kb", rss_end as f64)
        .put("peak_rss_kb", peak as f64)
        .put("held_in_memory", m.as_ref().map_or(0, |m| m.queued) as f64)
        .put("pending", m.as_ref().map_or(0, |m| m.pending) as f64)
        .put("log_mb", log_bytes as f64 / 1e6)
        .put("publish_per_s", n as f64 / write_s)
        .put("n", n as f64);
    Ok(v)
}
