//! SIGINT and SIGTERM for `send`: the first one asks it to stop reading its input, deliver
//! what it can by the `--timeout` drain deadline, print the summary and exit 130 (SIGINT) or
//! 143 (SIGTERM); a second one exits at once, with the same codes.
//!
//! The handlers only store into atomics (async-signal-safe); `send` polls [`received`] while it
//! waits for input. A second signal is handled entirely in the handler (signal-hook's
//! conditional shutdown: `_exit`), so it works even while `send` is blocked.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};

/// Set by the first SIGINT or SIGTERM; arms the immediate exit on the next one.
static STOP: AtomicBool = AtomicBool::new(false);

/// The signal that arrived last (0: none).
static WHICH: AtomicUsize = AtomicUsize::new(0);

/// A signal that asks `send` to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGINT (Ctrl-C): exit code 130.
    Int,
    /// SIGTERM: exit code 143.
    Term,
}

impl Signal {
    /// Its conventional name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }

    /// 128 + the signal's number, as shells report a process a signal ended.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Signal::Int => 130,
            Signal::Term => 143,
        }
    }

    fn from_number(n: usize) -> Option<Signal> {
        match i32::try_from(n).ok()? {
            SIGINT => Some(Signal::Int),
            SIGTERM => Some(Signal::Term),
            _ => None,
        }
    }
}

/// Installs the handlers (once per process; later calls add nothing).
pub(crate) fn install() -> io::Result<()> {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    for (sig, code) in [
        (SIGINT, Signal::Int.exit_code()),
        (SIGTERM, Signal::Term.exit_code()),
    ] {
        // Order matters: the exit runs first, so it only fires when an earlier signal has
        // already set STOP.
        signal_hook::flag::register_conditional_shutdown(sig, i32::from(code), &STOP)?;
        signal_hook::flag::register_usize(sig, &WHICH, sig as usize)?;
        signal_hook::flag::register(sig, &STOP)?;
    }
    Ok(())
}

/// The stop signal received, if one was.
pub(crate) fn received() -> Option<Signal> {
    if STOP.load(Ordering::SeqCst) {
        Signal::from_number(WHICH.load(Ordering::SeqCst))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names() {
        assert_eq!(
            (Signal::Int.exit_code(), Signal::Int.name()),
            (130, "SIGINT")
        );
        assert_eq!(
            (Signal::Term.exit_code(), Signal::Term.name()),
            (143, "SIGTERM")
        );
        assert_eq!(Signal::from_number(SIGTERM as usize), Some(Signal::Term));
        assert_eq!(Signal::from_number(9), None);
    }
}
