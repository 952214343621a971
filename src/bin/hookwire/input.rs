//! `send`'s input: stdin is read on its own thread and handed over a channel, so that the
//! main thread never blocks on it: it prints progress while stdin is idle, and it stops
//! reading when a signal asks it to (the reader thread is left blocked in its `read`; the
//! process ends without it).
//!
//! There is no time limit on reading: input may stream for as long as it likes (`tail -f
//! log | hookwire send ...`); `--timeout` starts when the input ends (or a signal stops it).

use std::io::{self, BufRead};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::ndjson::{Line, Lines, MAX_LINE};

/// How often a stop is looked for (and `on_idle` runs) while the input is idle.
pub(crate) const POLL: Duration = Duration::from_millis(10);

/// Lines read ahead of the publisher (the reader thread blocks beyond it).
const READ_AHEAD: usize = 1024;

/// What the reader thread hands over: a line, the end, or why reading stopped.
pub(crate) type Item = io::Result<Option<(u64, Line)>>;

/// Numbered lines from a reader thread.
pub(crate) struct Input {
    rx: Receiver<Item>,
    /// The number of the last line handed out (0: none).
    last: u64,
    /// Whether reading was stopped before the input ended.
    stopped: bool,
}

impl Input {
    /// Reads stdin on a new thread; with `signed`, an id that cannot be a `webhook-id` header
    /// is a line error ([`Lines::signed`]).
    pub(crate) fn stdin(signed: bool) -> io::Result<Input> {
        Self::spawn(|| io::stdin().lock(), signed)
    }

    /// Reads what `open` returns on a new thread.
    pub(crate) fn spawn<R, F>(open: F, signed: bool) -> io::Result<Input>
    where
        R: BufRead,
        F: FnOnce() -> R + Send + 'static,
    {
        let (tx, rx) = crossbeam_channel::bounded::<Item>(READ_AHEAD);
        std::thread::Builder::new()
            .name("hookwire-stdin".into())
            .spawn(move || read_all(Lines::new(open(), MAX_LINE).signed(signed), &tx))?;
        Ok(Input {
            rx,
            last: 0,
            stopped: false,
        })
    }

    /// The next line; `Ok(None)` at the end of the input, or as soon as `stop()` holds (then
    /// [`unread_from_line`](Self::unread_from_line) says where reading stopped). Runs `on_idle` every [`POLL`] while it waits.
    pub(crate) fn next(&mut self, stop: &dyn Fn() -> bool, on_idle: &mut dyn FnMut()) -> Item {
        loop {
            if stop() {
                self.stopped = true;
                return Ok(None);
            }
            match self.rx.recv_timeout(POLL) {
                Ok(item) => {
                    if let Ok(Some((n, _))) = &item {
                        self.last = *n;
                    }
                    return item;
                }
                Err(RecvTimeoutError::Timeout) => on_idle(),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::other("the stdin reader stopped"));
                }
            }
        }
    }

    /// After reading stopped early: the first line not read, if the input had more (the next
    /// line, if one comes within [`POLL`]; else the one after the last handed out); `None` if
    /// the input had ended there.
    pub(crate) fn first_unread(&mut self) -> Option<u64> {
        if !self.stopped {
            return None; // the input ended (or failed) on its own: nothing was left unread
        }
        match self.rx.recv_timeout(POLL) {
            Ok(Ok(Some((n, _)))) => Some(n),
            // The end came next, or the reader is gone (it had ended).
            Ok(Ok(None)) | Err(RecvTimeoutError::Disconnected) => None,
            Ok(Err(_)) | Err(RecvTimeoutError::Timeout) => Some(self.last + 1),
        }
    }

    /// The first line not read, when reading was stopped.
    pub(crate) fn unread_from_line(&self) -> Option<u64> {
        self.stopped.then_some(self.last + 1)
    }
}

/// The reader thread: every line, then the end or the read error. Stops early if the
/// receiver is gone.
fn read_all<R: BufRead>(mut lines: Lines<R>, tx: &Sender<Item>) {
    loop {
        let item = lines.next_line();
        let last = !matches!(item, Ok(Some(_)));
        if tx.send(item).is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn event_id(item: Item) -> Option<u64> {
        item.unwrap().map(|(n, _)| n)
    }

    #[test]
    fn hands_over_every_line_then_the_end() {
        let mut input = Input::spawn(|| &b"{\"id\":1}\n\n{\"id\":2}\n"[..], false).unwrap();
        let never = || false;
        let mut idle = || {};
        let got: Vec<_> = std::iter::from_fn(|| event_id(input.next(&never, &mut idle))).collect();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(input.unread_from_line(), None);
        // It ended on its own: nothing is unread (no "line N: not read" after a store failure).
        assert_eq!(input.first_unread(), None);
    }

    #[test]
    fn a_stop_ends_reading_at_once_and_says_where() {
        // An input that never ends: the reader blocks after two lines.
        let (r, w) = std::io::pipe().unwrap();
        let mut w = Some(w);
        std::io::Write::write_all(w.as_mut().unwrap(), b"{\"id\":1}\n{\"id\":2}\n").unwrap();
        let mut input = Input::spawn(move || io::BufReader::new(r), false).unwrap();
        let stop = Cell::new(false);
        let idles = Cell::new(0);
        let mut on_idle = || {
            idles.set(idles.get() + 1);
            // A signal arrives while the input is idle.
            stop.set(true);
        };
        let stop_now = || stop.get();
        assert_eq!(event_id(input.next(&stop_now, &mut on_idle)), Some(1));
        assert_eq!(event_id(input.next(&stop_now, &mut on_idle)), Some(2));
        assert_eq!(event_id(input.next(&stop_now, &mut on_idle)), None);
        assert!(idles.get() >= 1);
        assert_eq!(input.unread_from_line(), Some(3));
        // Stopped with more to come: the first line not read (the reader is blocked).
        assert_eq!(input.first_unread(), Some(3));
        drop(w.take());
    }
}
