//! The one error type every hookwire sink returns.
//!
//! Errors are values with context: each variant carries what a person needs to act on it
//! (which capacity was full, which status came back, which config field is wrong), and
//! `Display` renders that for humans. The enum is `#[non_exhaustive]` so new failure kinds can
//! be added without breaking matches downstream.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Everything that can go wrong when writing to or closing a [`Sink`](crate::Sink), or when
/// building one from configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The sink was closed; it accepts no more events.
    Closed,
    /// A bounded buffer was full and its overflow policy is `Reject`.
    Full {
        /// The buffer's capacity, in events.
        capacity: usize,
    },
    /// An operation did not finish in time.
    Timeout {
        /// What was being waited for ("queue space", "request", "connect", ...).
        waiting_for: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The webhook answered with a status that is not 2xx.
    Status {
        /// The HTTP status code.
        code: u16,
        /// The delay asked for by a `Retry-After` header, if one came with the answer.
        retry_after: Option<Duration>,
    },
    /// The request got no answer: the connection could not be made, was reset, or broke.
    Io {
        /// The kind of I/O failure.
        kind: io::ErrorKind,
        /// The underlying error, rendered.
        message: String,
        /// The underlying error itself, when there was one (what [`std::error::Error::source`]
        /// returns).
        source: Option<Arc<io::Error>>,
    },
    /// An event or envelope could not be encoded or decoded.
    Encode {
        /// What went wrong.
        message: String,
    },
    /// A configuration value was rejected when the sink was built.
    Config {
        /// The field (or option) that was rejected.
        field: &'static str,
        /// Why, in words a person can act on.
        reason: String,
    },
    /// The endpoint is disabled (it answered `410 Gone`, it failed for longer than allowed, or
    /// it was disabled by hand) and takes no events until it is enabled again.
    Disabled {
        /// Why it was disabled.
        reason: String,
    },
    /// `close` could not deliver every buffered event by its deadline; these were dropped and
    /// counted (reason `shutdown`).
    Undelivered {
        /// How many events were not delivered.
        count: u64,
    },
    /// A [`Broadcaster`](crate::sink::Broadcaster) delivered the event to some of its sinks but
    /// not all; the others still have it, so retrying the broadcast would duplicate it.
    Broadcast {
        /// How many sinks failed.
        failed: usize,
        /// How many sinks were written to.
        total: usize,
        /// The first failure.
        first: Box<Error>,
    },
    /// User code (a sink, a serializer) panicked; the panic was caught and the event counted.
    Panicked {
        /// What panicked.
        what: &'static str,
    },
    /// The durable store is full: appending would pass its disk quota. Nothing was written;
    /// delivering (and so acknowledging) old events frees room.
    Quota {
        /// The quota, in bytes.
        quota: u64,
        /// Bytes in use.
        used: u64,
    },
    /// The durable store failed (a file could not be read, written or synced). What was not
    /// committed before the failure is not durable.
    Storage {
        /// What was being done ("append", "fdatasync", "open", ...).
        op: &'static str,
        /// The file or directory.
        path: String,
        /// The underlying error, rendered.
        message: String,
        /// The underlying I/O error itself, when there was one (what
        /// [`std::error::Error::source`] returns).
        source: Option<Arc<io::Error>>,
    },
    /// No slot is left for another endpoint: a dispatcher routes at most `limit` endpoints
    /// (a ring entry's mask has one bit each), and a durable store keeps at most `limit`
    /// durable endpoints per data directory (a record's mask has one bit each). A durable
    /// endpoint keeps its slot until it is forgotten ([`crate::store::forget_endpoint`],
    /// `hookwire forget`).
    TooManyEndpoints {
        /// The most there may be.
        limit: usize,
        /// Whether the durable store's slots are the ones used up (else the dispatcher's).
        durable: bool,
    },
    /// The durable store's dead letters have reached their cap (`StoreConfig::
    /// dead_letter_bytes`): nothing was written. Replaying dead letters frees room.
    DeadLettersFull {
        /// The cap, in bytes.
        cap: u64,
        /// Bytes in use.
        used: u64,
        /// Bytes the refused letters needed.
        needed: u64,
    },
    /// An error from a user-supplied sink, matcher or callback.
    Other(Arc<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Wraps any error from user code (a custom sink, say) as [`Error::Other`].
    pub fn other(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Other(Arc::new(err))
    }

    /// Builds an [`Error::Config`] for `field`.
    pub fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Config {
            field,
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Storage`] for `op` on `path`. An `io::Error` is kept as the
    /// error's [`source`](std::error::Error::source); anything else is kept as words.
    pub(crate) fn storage(
        op: &'static str,
        path: &std::path::Path,
        e: impl fmt::Display + 'static,
    ) -> Self {
        let message = e.to_string();
        let any: Box<dyn std::any::Any> = Box::new(e);
        Error::Storage {
            op,
            path: path.display().to_string(),
            message,
            source: any.downcast::<io::Error>().ok().map(|e| Arc::new(*e)),
        }
    }

    /// A copy of `e` to keep as a source where only a reference is at hand (`io::Error` is
    /// not `Clone`): the OS error code when there is one, else the kind and the words.
    pub(crate) fn io_source(e: &io::Error) -> Option<Arc<io::Error>> {
        Some(Arc::new(match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), e.to_string()),
        }))
    }

    /// True for `Error::Closed`: the sink is gone and writing again is pointless.
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => f.write_str("sink is closed"),
            Error::Full { capacity } => {
                write!(
                    f,
                    "queue is full ({capacity} events) and its policy is to reject"
                )
            }
            Error::Timeout { waiting_for, after } => {
                write!(f, "timed out after {after:?} waiting for {waiting_for}")
            }
            Error::Status {
                code,
                retry_after: Some(d),
            } => write!(f, "endpoint answered HTTP {code} (Retry-After {d:?})"),
            Error::Status { code, .. } => write!(f, "endpoint answered HTTP {code}"),
            Error::Io { kind, message, .. } => write!(f, "I/O error ({kind:?}): {message}"),
            Error::Encode { message } => write!(f, "encoding failed: {message}"),
            Error::Config { field, reason } => write!(f, "invalid config `{field}`: {reason}"),
            Error::Disabled { reason } => write!(f, "endpoint is disabled: {reason}"),
            Error::Undelivered { count } => {
                write!(
                    f,
                    "closed with {count} events undelivered (counted as dropped)"
                )
            }
            Error::Broadcast {
                failed,
                total,
                first,
            } => write!(
                f,
                "{failed} of {total} sinks failed (the others have the event): {first}"
            ),
            Error::Panicked { what } => write!(f, "{what} panicked (caught; event counted)"),
            Error::Quota { quota, used } => write!(
                f,
                "durable store is full: {used} of {quota} bytes used (deliver or raise the quota)"
            ),
            Error::Storage {
                op, path, message, ..
            } => {
                write!(f, "durable store: {op} {path} failed: {message}")
            }
            Error::TooManyEndpoints {
                limit,
                durable: true,
            } => write!(
                f,
                "too many durable endpoints: all {limit} slots of the data directory are taken \
                 (forget one: `hookwire forget`, or store::forget_endpoint)"
            ),
            Error::TooManyEndpoints { limit, .. } => {
                write!(f, "too many endpoints: a dispatcher holds at most {limit}")
            }
            Error::DeadLettersFull { cap, used, needed } => write!(
                f,
                "the dead letters are full: {used} of {cap} bytes used, {needed} more needed \
                 (replay them, or raise the cap)"
            ),
            Error::Other(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Broadcast { first, .. } => Some(first.as_ref()),
            Error::Other(e) => Some(e.as_ref()),
            Error::Io {
                source: Some(e), ..
            }
            | Error::Storage {
                source: Some(e), ..
            } => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::TimedOut {
            return Error::Timeout {
                waiting_for: "I/O",
                after: Duration::ZERO,
            };
        }
        Error::Io {
            kind: e.kind(),
            message: e.to_string(),
            source: Some(Arc::new(e)),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Encode {
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_context() {
        let e = Error::Full { capacity: 8 };
        assert!(e.to_string().contains("8 events"));
        let e = Error::config("capacity", "must be at least 1");
        assert_eq!(
            e.to_string(),
            "invalid config `capacity`: must be at least 1"
        );
        let e = Error::Status {
            code: 503,
            retry_after: Some(Duration::from_secs(2)),
        };
        assert!(e.to_string().contains("503") && e.to_string().contains("2s"));
    }

    #[test]
    fn io_timeouts_become_timeouts() {
        let e: Error = io::Error::new(io::ErrorKind::TimedOut, "slow").into();
        assert!(matches!(e, Error::Timeout { .. }));
        let e: Error = io::Error::new(io::ErrorKind::ConnectionRefused, "no").into();
        assert!(matches!(
            e,
            Error::Io {
                kind: io::ErrorKind::ConnectionRefused,
                ..
            }
        ));
    }

    #[test]
    fn io_and_storage_errors_keep_their_source() {
        use std::error::Error as _;
        let e: Error = io::Error::new(io::ErrorKind::ConnectionRefused, "refused here").into();
        let source = e.source().expect("Io keeps its source");
        assert_eq!(source.to_string(), "refused here");
        let io = source.downcast_ref::<io::Error>().unwrap();
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);

        let path = std::path::Path::new("/d/log");
        let e = Error::storage("fdatasync", path, io::Error::from_raw_os_error(28));
        let io = e
            .source()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .unwrap();
        assert_eq!(io.raw_os_error(), Some(28));
        assert!(e.to_string().contains("fdatasync /d/log"), "{e}");
        // Words alone have no source.
        assert!(
            Error::storage("open", path, "bad header")
                .source()
                .is_none()
        );
    }
}
