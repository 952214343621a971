//! `send`'s progress line on stderr for long runs: what was read and what became of it,
//! redrawn a few times a second, only when stderr is a terminal (a pipe or a file gets
//! nothing, so scripts and logs see only the summary and the error lines).

use std::cell::Cell;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use hookwire::engine::Dispatcher;
use hookwire::stats::EndpointSnapshot;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the counts are looked at (a snapshot of every endpoint) and redrawn.
const EVERY: Duration = Duration::from_millis(250);

/// The progress line (hidden when stderr is not a terminal: then it costs nothing).
pub(crate) struct Meter {
    bar: ProgressBar,
    read: Cell<u64>,
    last: Cell<Option<Instant>>,
}

impl Meter {
    /// Shown if stderr is a terminal, hidden otherwise.
    pub(crate) fn for_stderr() -> Meter {
        Meter::new(std::io::stderr().is_terminal())
    }

    /// A meter drawn on stderr if `visible`.
    pub(crate) fn new(visible: bool) -> Meter {
        let bar = if visible {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed} {msg}") {
                bar.set_style(style);
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        Meter {
            bar,
            read: Cell::new(0),
            last: Cell::new(None),
        }
    }

    /// Whether it draws anything.
    pub(crate) fn is_visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// One more event read; redraws if it is time.
    pub(crate) fn read_one(&self, d: &Dispatcher) {
        self.read.set(self.read.get() + 1);
        self.tick(d);
    }

    /// Redraws with `d`'s counts if [`EVERY`] has passed since the last time.
    pub(crate) fn tick(&self, d: &Dispatcher) {
        if !self.is_visible() {
            return;
        }
        let now = Instant::now();
        if self.last.get().is_some_and(|t| now - t < EVERY) {
            return;
        }
        self.last.set(Some(now));
        self.bar
            .set_message(message(self.read.get(), &d.snapshot()));
    }

    /// Removes the line (before the summary).
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The progress line's text: events read, then the endpoints' counts added up.
pub(crate) fn message(read: u64, endpoints: &[EndpointSnapshot]) -> String {
    let (mut delivered, mut pending, mut dropped, mut dead) = (0, 0, 0, 0);
    for e in endpoints {
        let m = &e.metrics;
        delivered += m.delivered;
        pending += m.pending + m.unread;
        dropped += m.dropped_total();
        dead += m.dead_lettered;
    }
    format!(
        "read {read} | delivered {delivered} | pending {pending} | dropped {dropped} | \
         dead-lettered {dead}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_adds_up_the_endpoints() {
        let ep = |delivered, pending, unread, dead| {
            let mut s = EndpointSnapshot::default();
            s.name = "ep".into();
            s.metrics.delivered = delivered;
            s.metrics.pending = pending;
            s.metrics.unread = unread;
            s.metrics.dead_lettered = dead;
            s
        };
        assert_eq!(
            message(12, &[ep(5, 1, 2, 0), ep(3, 0, 0, 4)]),
            "read 12 | delivered 8 | pending 3 | dropped 0 | dead-lettered 4"
        );
    }

    #[test]
    fn hidden_when_asked() {
        assert!(!Meter::new(false).is_visible());
    }
}
