//! CPU time of this process's threads, by thread name: which side of an HTTP scenario did
//! the work (hookwire's workers, or the test kit receiver in the same process).
//!
//! With one request in flight the sender and the receiver take turns, so the rate is set by
//! the sum of their times per request; on a shared machine the wall-clock rate also moves
//! with the other load, and these figures much less. Linux only (`/proc/self/task/*/
//! schedstat`, nanoseconds on a CPU); elsewhere the figures are left out.

use std::collections::HashMap;
use std::time::Duration;

/// Each live thread's name and CPU time so far, by thread id.
#[derive(Debug, Clone, Default)]
pub(crate) struct ThreadCpu(HashMap<u64, (String, u64)>);

impl ThreadCpu {
    /// Reads every thread of this process. Empty where `/proc` has no `schedstat`.
    pub(crate) fn sample() -> Self {
        let mut map = HashMap::new();
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return ThreadCpu(map);
        };
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let path = entry.path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let ns = std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| on_cpu_ns(&s));
            if let Some(ns) = ns {
                map.insert(tid, (name.trim_end().to_owned(), ns));
            }
        }
        ThreadCpu(map)
    }

    /// CPU time used since `before` by threads whose name starts with `prefix` (threads
    /// started since count from zero; threads that ended since are not seen). `None` when
    /// no such thread is alive.
    pub(crate) fn since(&self, before: &ThreadCpu, prefix: &str) -> Option<Duration> {
        let mut found = false;
        let mut ns = 0;
        for (tid, (name, now)) in &self.0 {
            if name.starts_with(prefix) {
                found = true;
                let then = before.0.get(tid).map_or(0, |(_, t)| *t);
                ns += now.saturating_sub(then);
            }
        }
        found.then(|| Duration::from_nanos(ns))
    }
}

/// The first field of a `schedstat` line: time spent on a CPU, in nanoseconds.
fn on_cpu_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schedstat() {
        assert_eq!(on_cpu_ns("186884 310280 2\n"), Some(186_884));
        assert_eq!(on_cpu_ns(""), None);
        assert_eq!(on_cpu_ns("x 1 2"), None);
    }

    #[test]
    fn a_busy_named_thread_is_counted() {
        let before = ThreadCpu::sample();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let t = std::thread::Builder::new()
            .name("cpu-test-spin".into())
            .spawn(move || {
                // Spin until the sample is taken: on-CPU time is what must show.
                let start = std::time::Instant::now();
                while start.elapsed() < Duration::from_millis(30) {
                    std::hint::spin_loop();
                }
                ready_tx.send(()).unwrap();
                rx.recv().unwrap();
            })
            .unwrap();
        ready_rx.recv().unwrap();
        let after = ThreadCpu::sample();
        tx.send(()).unwrap();
        t.join().unwrap();
        if after.0.is_empty() {
            return; // no schedstat here: nothing to check
        }
        let spent = after.since(&before, "cpu-test-spin").unwrap();
        assert!(spent >= Duration::from_millis(1), "{spent:?}");
        assert_eq!(after.since(&before, "no-such-thread"), None);
    }
}
