//! `hookwire dlq list|replay`: the dead letters of a data directory, offline.
//!
//! Both open the directory's store themselves (no dispatcher). `list` opens it read-only
//! (`LogStore::open_read_only`): it takes no lock and changes nothing, so it also works while
//! a `send --data-dir` on it is running. `replay` changes the log, so it needs the directory
//! to itself and refuses, with exit code 1, while a `send` holds it; it re-queues the
//! selected events in the log for their endpoints, and the next `send --resume` delivers
//! them. What opening found (damage in the log, lost or repaired cursor files) is said on
//! stderr.

use std::borrow::Cow;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use hookwire::store::{self, DeadLetter, DeadLetterFilter, LogStore, Store, StoreConfig};
use hookwire::{Error, Event, RawEvent};
use serde::Serialize;

use crate::durable::{in_use, report_recovery};

/// `hookwire dlq`'s subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// Print the dead letters as NDJSON, oldest first: endpoint, seq, published_ms, failed_ms,
    /// status, error, attempts, id and the event itself.
    List(DlqArgs),
    /// Re-queue the dead letters for their endpoints (removing them from the dead letters),
    /// and print {"replayed": N}. `hookwire send --data-dir DIR --resume` then delivers them.
    Replay(DlqArgs),
}

/// Which dead letters: every filter given must match.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
`list` only reads the directory (no lock, nothing written), so it works while a `hookwire
send --data-dir` runs on it; `replay` needs the directory to itself.
Exit code: 0 on success; 1 if the data directory cannot be read, or (replay) is in use by a
running `hookwire send --data-dir`; 2 for a bad option.")]
pub(crate) struct DlqArgs {
    /// The data directory of `hookwire send --data-dir`.
    #[arg(long = "data-dir", value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// Only this endpoint's (its name, as in the summary).
    #[arg(long, value_name = "NAME")]
    pub(crate) endpoint: Option<String>,
    /// Only these sequence numbers: A..B (inclusive), A.., ..B, or one number.
    #[arg(long, value_name = "A..B", value_parser = seq_range_arg)]
    pub(crate) seq: Option<(u64, u64)>,
    /// Only those given up at or after this time (ms since the Unix epoch).
    #[arg(long, value_name = "MS")]
    pub(crate) since: Option<u64>,
    /// Only those given up at or before this time (ms since the Unix epoch).
    #[arg(long, value_name = "MS")]
    pub(crate) until: Option<u64>,
}

/// `--seq`, for clap.
fn seq_range_arg(s: &str) -> Result<(u64, u64), String> {
    parse_seq_range(s).ok_or_else(|| format!("{s:?} is not A..B, A.., ..B or a number"))
}

/// `A..B`, `A..`, `..B` or `N`: an inclusive range of sequence numbers.
fn parse_seq_range(s: &str) -> Option<(u64, u64)> {
    let num = |t: &str| t.trim().parse::<u64>().ok();
    let (a, b) = match s.split_once("..") {
        None => {
            let n = num(s)?;
            (n, n)
        }
        Some((a, b)) => (
            if a.trim().is_empty() { Some(0) } else { num(a) }?,
            if b.trim().is_empty() {
                Some(u64::MAX)
            } else {
                num(b)
            }?,
        ),
    };
    (a <= b).then_some((a, b))
}

impl DlqArgs {
    /// The filter these options select.
    fn filter(&self) -> Result<DeadLetterFilter, Error> {
        let mut f = DeadLetterFilter::all();
        f.endpoint.clone_from(&self.endpoint);
        f.seqs = self.seq;
        if self.since.is_some() || self.until.is_some() {
            let (a, b) = (self.since.unwrap_or(0), self.until.unwrap_or(u64::MAX));
            if a > b {
                return Err(Error::config("--since", "is after --until"));
            }
            f.failed_ms = Some((a, b));
        }
        Ok(f)
    }
}

/// One dead letter as `dlq list` prints it.
#[derive(Serialize)]
struct Listed<'a> {
    endpoint: &'a str,
    seq: u64,
    published_ms: u64,
    failed_ms: u64,
    status: Option<u16>,
    error: &'a str,
    attempts: u32,
    id: Cow<'a, str>,
    /// The event's JSON, inline.
    event: &'a RawEvent,
}

impl<'a> From<&'a DeadLetter> for Listed<'a> {
    fn from(d: &'a DeadLetter) -> Self {
        Listed {
            endpoint: &d.endpoint,
            seq: d.seq,
            published_ms: d.published_ms,
            failed_ms: d.failed_ms,
            status: d.status,
            error: &d.error,
            attempts: d.attempts,
            id: d.event.id(),
            event: &d.event,
        }
    }
}

/// `hookwire dlq list|replay`.
pub(crate) fn main(cmd: &DlqCommand) -> Result<ExitCode, Error> {
    let (args, replay) = match cmd {
        DlqCommand::List(a) => (a, false),
        DlqCommand::Replay(a) => (a, true),
    };
    let filter = args.filter()?;
    let mut store = open(&args.data_dir, replay)?;
    let mut out = io::stdout().lock();
    if replay {
        let n = store::replay_dead_letters(&mut store, &filter)?;
        writeln!(out, "{{\"replayed\": {n}}}")?;
    } else {
        list(&store, &filter, &mut out)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Opens `dir`'s store, which must exist: to change it (`write`: locked, repaired), or
/// read-only (no lock, nothing created or changed).
fn open(dir: &Path, write: bool) -> Result<LogStore, Error> {
    if !dir.is_dir() {
        return Err(Error::config(
            "--data-dir",
            format!("{} is not a directory", dir.display()),
        ));
    }
    let store = if write {
        LogStore::open(StoreConfig::new(dir)).map_err(in_use)?
    } else {
        LogStore::open_read_only(dir)?
    };
    report_recovery(dir, store.recovery(), &mut io::stderr());
    Ok(store)
}

/// Writes the selected dead letters, one JSON object per line, as they are read (memory for
/// one, however many there are); says on stderr how many lines could not be read.
fn list(store: &dyn Store, filter: &DeadLetterFilter, out: &mut dyn Write) -> Result<(), Error> {
    let skipped = store.dead_letters().scan(filter, &mut |d| {
        serde_json::to_writer(&mut *out, &Listed::from(&d))?;
        writeln!(out)?;
        Ok(())
    })?;
    if skipped > 0 {
        eprintln!("hookwire: note: {skipped} unreadable dead-letter line(s) skipped");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_ranges_parse() {
        assert_eq!(parse_seq_range("3..9"), Some((3, 9)));
        assert_eq!(parse_seq_range("7"), Some((7, 7)));
        assert_eq!(parse_seq_range("5.."), Some((5, u64::MAX)));
        assert_eq!(parse_seq_range("..5"), Some((0, 5)));
        for bad in ["9..3", "a..b", "", "1..2..3", "-1"] {
            assert_eq!(parse_seq_range(bad), None, "{bad}");
        }
    }

    fn args(argv: &[&str]) -> DlqArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: DlqArgs,
        }
        let mut all = vec!["x", "--data-dir", "/d"];
        all.extend_from_slice(argv);
        T::try_parse_from(all).unwrap().a
    }

    #[test]
    fn options_make_the_filter() {
        let f = args(&[]).filter().unwrap();
        assert_eq!(f, DeadLetterFilter::all());
        let f = args(&["--endpoint", "audit", "--seq", "2..4", "--since", "10"])
            .filter()
            .unwrap();
        assert_eq!(f.endpoint.as_deref(), Some("audit"));
        assert_eq!(f.seqs, Some((2, 4)));
        assert_eq!(f.failed_ms, Some((10, u64::MAX)));
        assert_eq!(
            args(&["--until", "5"]).filter().unwrap().failed_ms,
            Some((0, 5))
        );
        let e = args(&["--since", "6", "--until", "5"])
            .filter()
            .unwrap_err();
        assert!(e.to_string().contains("--since"), "{e}");
    }

    #[test]
    fn a_dead_letter_lists_as_one_json_object() {
        let d = DeadLetter {
            endpoint: "audit".into(),
            seq: 3,
            published_ms: 10,
            failed_ms: 20,
            status: Some(400),
            error: "endpoint answered HTTP 400".into(),
            attempts: 1,
            event: RawEvent::parse(r#"{"id":"e1","action":"push"}"#).unwrap(),
        };
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&Listed::from(&d)).unwrap()).unwrap();
        assert_eq!(v["endpoint"], "audit");
        assert_eq!(
            (v["seq"].as_u64(), v["status"].as_u64()),
            (Some(3), Some(400))
        );
        assert_eq!(v["id"], "e1");
        assert_eq!(v["event"]["action"], "push");
    }
}
