//! `dead_endpoint_rss_N*` and `rss_baseline`: what dead endpoints cost in memory.
//!
//! N endpoints post to a test kit receiver that never answers (in this process; it holds a
//! thread per hung connection, which is small). Each endpoint holds at most 10,000 events and
//! drops the oldest beyond that (counted), where the peer's go-events `Queue`s are unbounded.
//! 1M distinct small events are published (built one by one: this scenario measures memory,
//! so the events must not all be alive at once), then 200 ms pass, then the process reads its
//! own peak RSS (`VmHWM`) and exits without draining. The runner runs it in its own process.

use std::time::{Duration, Instant};

use hookwire::Error;
use hookwire::endpoint::EndpointConfig;
use hookwire::engine::Dispatcher;
use hookwire::sink::Overflow;
use hookwire::testkit::{Receiver, ReceiverConfig};

use super::event;
use super::{Ctx, Values};

/// The value of a `kB` line of `/proc/self/status` (`VmRSS`, `VmHWM`, ...).
pub(crate) fn vm_kb(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    status_kb(&text, field)
}

/// Finds `field:   1234 kB` in the text of a `/proc/<pid>/status` file.
pub(crate) fn status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Publishes `n` events (1 for the baseline, else `ctx.count(n)`) to `endpoints` dead
/// endpoints, waits 200 ms, and reports peak RSS. Leaves the dispatcher running: the process
/// exits after printing, without draining, as the peer's does.
pub(crate) fn dead_endpoints(
    ctx: &Ctx,
    id: &str,
    endpoints: usize,
    n: u64,
) -> Result<Values, Error> {
    let n = if n == 1 { 1 } else { ctx.count(n) };
    let receiver = Receiver::start(ReceiverConfig::default().hang())?;
    let d = Dispatcher::builder().build()?;
    let mut ids = Vec::with_capacity(endpoints);
    for i in 0..endpoints {
        let mut cfg = EndpointConfig::new(format!("dead-{i}"), receiver.url());
        cfg.capacity = 10_000;
        cfg.overflow = Overflow::DropOldest;
        ids.push(d.add_endpoint(cfg)?);
    }
    let progress = ctx.progress(id, "events", n);
    let t0 = Instant::now();
    for k in 0..n {
        d.publish_raw(event::small(k))?;
        if k % 4096 == 4095 {
            progress.set(k + 1);
        }
    }
    let write_phase = t0.elapsed();
    drop(progress);
    std::thread::sleep(Duration::from_millis(200)); // the peer's pause before it reports
    let snaps = d.snapshot();
    let held: u64 = snaps.iter().map(|s| s.metrics.pending).sum();
    let dropped: u64 = snaps.iter().map(|s| s.metrics.dropped_total()).sum();
    let peak = vm_kb("VmHWM").unwrap_or(0);

    // Exit without draining: neither the dispatcher nor the receiver is shut down (their
    // threads end with the process, right after the RESULT line is printed).
    let _ = std::mem::ManuallyDrop::new(d);
    let _ = std::mem::ManuallyDrop::new(receiver);

    let mut v = Values::default();
    v.put("peak_rss_kb", peak as f64)
        .put("queued", held as f64)
        .put("write_phase_s", write_phase.as_secs_f64())
        .put("n", n as f64)
        .put("endpoints", endpoints as f64)
        .put("dropped", dropped as f64)
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
    fn reads_kb_fields() {
        let status = "Name:\thookwire\nVmPeak:\t  200 kB\nVmHWM:\t    1234 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(status_kb(status, "VmHWM"), Some(1234));
        assert_eq!(status_kb(status, "VmRSS"), Some(1000));
        assert_eq!(status_kb(status, "VmSwap"), None);
        assert_eq!(
            status_kb("Vm:\t12 kB\n", "V"),
            None,
            "the whole field name must match"
        );
        assert_eq!(status_kb("VmHWM:\tlots kB\n", "VmHWM"), None);
    }

    #[test]
    fn this_process_has_a_peak_rss() {
        let peak = vm_kb("VmHWM").unwrap();
        let now = vm_kb("VmRSS").unwrap();
        assert!(peak >= now && now > 0, "{peak} {now}");
    }
}
