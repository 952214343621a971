//! A live progress line on stderr while a scenario runs: `\r`-updated, at most 10 times a
//! second, only when asked (stderr is a terminal, or `--progress`).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(100);

/// A counter the scenario bumps, and (when enabled) a thread that draws it.
///
/// Bumping is one relaxed atomic store, cheap enough to do every few thousand events inside a
/// timed loop. Dropping the handle stops the thread and clears the line.
pub(crate) struct Progress {
    done: Arc<AtomicU64>,
    stop: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl Progress {
    /// A counter that draws nothing.
    pub(crate) fn disabled() -> Self {
        Progress {
            done: Arc::default(),
            stop: None,
        }
    }

    /// Starts drawing `label: done/total unit (rate/s)` if `enabled`.
    pub(crate) fn start(label: &str, unit: &'static str, total: u64, enabled: bool) -> Self {
        let mut p = Progress::disabled();
        if !enabled {
            return p;
        }
        let (tx, rx) = mpsc::channel::<()>();
        let done = p.done.clone();
        let label = label.to_owned();
        let spawned = std::thread::Builder::new()
            .name("hookwire-progress".into())
            .spawn(move || {
                let t0 = Instant::now();
                let mut err = std::io::stderr();
                // Redraw every tick until the handle is dropped (the channel disconnects).
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(TICK) {
                    let line = render(
                        &label,
                        unit,
                        done.load(Ordering::Relaxed),
                        total,
                        t0.elapsed(),
                    );
                    let _ = write!(err, "\r{line}\x1b[K");
                    let _ = err.flush();
                }
                let _ = write!(err, "\r\x1b[K");
                let _ = err.flush();
            });
        if let Ok(handle) = spawned {
            p.stop = Some((tx, handle));
        }
        p
    }

    /// Sets the count of units done.
    pub(crate) fn set(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
    }

    /// Adds `n` units done (from any thread).
    pub(crate) fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.stop.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

/// One progress line.
pub(crate) fn render(label: &str, unit: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    format!("{label}: {done}/{total} {unit} ({rate:.0}/s, {secs:.1} s)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_count_and_rate() {
        let line = render("fanout_N4", "events", 500, 1000, Duration::from_millis(250));
        assert_eq!(line, "fanout_N4: 500/1000 events (2000/s, 0.2 s)");
        let line = render("x", "requests", 0, 10, Duration::ZERO);
        assert_eq!(line, "x: 0/10 requests (0/s, 0.0 s)");
    }

    #[test]
    fn disabled_progress_counts_without_a_thread() {
        let p = Progress::start("x", "events", 10, false);
        assert!(p.stop.is_none());
        p.set(5);
        p.add(2);
        assert_eq!(p.done.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn enabled_progress_stops_on_drop() {
        let p = Progress::start("x", "events", 10, true);
        p.set(3);
        drop(p); // joins the drawing thread; a hang here would fail the test by timeout
    }
}
