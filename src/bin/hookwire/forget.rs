//! `hookwire forget --data-dir DIR --endpoint NAME`: frees a durable endpoint's slot.
//!
//! A data directory keeps at most 64 durable endpoints (by name), each holding a slot and a
//! cursor, and pinning the log, until it is forgotten: a run that stops delivering to one
//! (a new port, a new `--name`) leaves it there. `forget` opens the directory (it must not be
//! in use by a running `send`), writes what the endpoint had not delivered to the dead
//! letters (listed by `hookwire dlq list --endpoint NAME`), then removes its slot and
//! cursor, and takes it out of `DIR/send.json` so that `--resume` does not add it again.
//! It prints one JSON line per endpoint: `{"forgotten": NAME, "slot": S, "dead_lettered": N,
//! "lost": L, "undecodable": U}`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use hookwire::Error;
use hookwire::store::{self, LogStore, Store, StoreConfig};

use crate::durable::{in_use, report_recovery};
use crate::saved::Saved;

/// `hookwire forget`'s options.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
What the endpoint had not delivered goes to the dead letters (error \"the endpoint was
forgotten...\"); `hookwire dlq replay` re-queues them once an endpoint of that name is added
again. Exit code: 0 on success; 1 if the directory is in use by a running `hookwire send`,
cannot be read or written, or its dead letters are full; 2 for a bad option or an endpoint the
directory does not have (then nothing is forgotten).")]
pub(crate) struct ForgetArgs {
    /// The data directory of `hookwire send --data-dir`.
    #[arg(long = "data-dir", value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// The endpoint to forget, by name (as in the summary); may be repeated.
    #[arg(long = "endpoint", value_name = "NAME", required = true)]
    pub(crate) endpoints: Vec<String>,
    /// The most bytes DIR's dead letters may take (default 268435456, 256 MiB), as
    /// `send --dead-letter-cap`.
    #[arg(long = "dead-letter-cap", value_name = "BYTES")]
    pub(crate) dead_letter_cap: Option<u64>,
}

/// `hookwire forget`.
pub(crate) fn main(args: &ForgetArgs) -> Result<ExitCode, Error> {
    let dir = &args.data_dir;
    if !dir.is_dir() {
        return Err(Error::config(
            "--data-dir",
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mut config = StoreConfig::new(dir);
    if let Some(cap) = args.dead_letter_cap {
        config.dead_letter_bytes = cap;
    }
    let mut store = LogStore::open(config).map_err(in_use)?;
    report_recovery(dir, store.recovery(), &mut io::stderr());
    let known: Vec<String> = store.endpoints().into_iter().map(|(n, _)| n).collect();
    if let Some(unknown) = args.endpoints.iter().find(|n| !known.contains(n)) {
        return Err(Error::config(
            "--endpoint",
            format!(
                "{} has no durable endpoint named {unknown:?} (it has: {})",
                dir.display(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    let mut out = io::stdout().lock();
    for name in &args.endpoints {
        let done = store::forget_endpoint(&mut store, name)?;
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({
                "forgotten": done.endpoint,
                "slot": done.slot,
                "dead_lettered": done.dead_lettered,
                "lost": done.lost,
                "undecodable": done.undecodable,
            }),
        )?;
        writeln!(out)?;
        out.flush()?;
    }
    drop(store);
    // `--resume` must not add them again (as new endpoints, at the end of the log).
    if let Some(mut saved) = Saved::load(dir).ok().flatten() {
        let before = saved.endpoints.len();
        saved
            .endpoints
            .retain(|e| !args.endpoints.contains(&e.name));
        if saved.endpoints.len() != before {
            saved.save(dir)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
