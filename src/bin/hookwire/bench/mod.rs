//! `hookwire bench`: the Go peer's scenarios (`shared/peers/go`), measured on hookwire's
//! engine, with the same ids, counts, meanings and JSON keys.
//!
//! The runner re-executes this binary once per scenario and repetition (the hidden
//! `bench-child` subcommand), so that every scenario has its own process: its peak RSS is its
//! own, a scenario that dies does not take the others with it, and each has a deadline after
//! which it is killed. The child prints one `RESULT {json}` line; the runner takes the medians
//! over `--reps` and prints a table, or with `--json` one object of flat `<id>.<key>` keys.

mod ceiling;
mod child;
mod cpu;
mod durable;
mod event;
mod fanout;
mod http;
mod pg;
mod progress;
mod report;
mod rss;
mod serve;
mod specs;
mod target;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use hookwire::Error;

use progress::Progress;
pub(crate) use specs::{SPECS, Spec};

/// Options of `hookwire bench`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// Which scenarios: an id (`fanout_N4`), a regular expression (`^(http|loopback)`), or
    /// `all` (every scenario: several minutes). See --list.
    #[arg(long, value_name = "ID|REGEX|all", required_unless_present = "list")]
    pub(crate) scenario: Option<String>,
    /// Print one JSON object (`meta` plus flat `<id>.<key>` medians) instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Deliver the HTTP scenarios to this receiver (e.g. the Go peer's `-mode receiver`)
    /// instead of the test kit receiver started inside the scenario's process.
    #[arg(long, value_name = "URL")]
    pub(crate) target: Option<String>,
    /// Repetitions of every scenario (interleaved); the output shows medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) reps: u32,
    /// Divide every event and request count by 10 (CI smoke runs).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Draw the progress line on stderr even when it is not a terminal.
    #[arg(long)]
    pub(crate) progress: bool,
    /// Kill a scenario run that takes longer than this, at most 1d (a bare number: seconds).
    #[arg(long, value_name = "DURATION", default_value = "10m",
          value_parser = crate::duration::secs_to_a_day_arg)]
    pub(crate) limit: u64,
    /// List the scenarios and exit.
    #[arg(long)]
    pub(crate) list: bool,
}

/// Options of the hidden `bench-child` subcommand: one scenario, in this process.
#[derive(Debug, Clone, Args)]
pub(crate) struct ChildArgs {
    /// The scenario id (exact).
    #[arg(long)]
    pub(crate) scenario: String,
    /// Divide the counts by 10.
    #[arg(long)]
    pub(crate) quick: bool,
    /// The receiver for HTTP scenarios.
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// Draw the progress line.
    #[arg(long)]
    pub(crate) progress: bool,
}

/// A scenario's figures, in the order it reports them.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Values(pub(crate) Vec<(&'static str, f64)>);

impl Values {
    /// Adds (or replaces) `key`.
    pub(crate) fn put(&mut self, key: &'static str, value: f64) -> &mut Self {
        self.0.retain(|(k, _)| *k != key);
        self.0.push((key, value));
        self
    }

    /// The value of `key`.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<f64> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The one line a child prints: `RESULT {"key":value,...}` (non-finite values as null).
    pub(crate) fn result_line(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .0
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Number::from_f64(*v).into()))
            .collect();
        format!("RESULT {}", serde_json::Value::Object(map))
    }
}

/// What a scenario needs from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// Counts divided by 10.
    pub(crate) quick: bool,
    /// `--target`, for the HTTP scenarios.
    pub(crate) target: Option<String>,
    /// Draw progress.
    pub(crate) progress: bool,
}

impl Ctx {
    /// `n`, or a tenth of it (at least 1) with `--quick`.
    pub(crate) fn count(&self, n: u64) -> u64 {
        if self.quick { (n / 10).max(1) } else { n }
    }

    /// A progress line for `total` units.
    pub(crate) fn progress(&self, label: &str, unit: &'static str, total: u64) -> Progress {
        Progress::start(label, unit, total, self.progress)
    }
}

/// A scenario that ran but did not get the result it must (lost events, a receiver that
/// cannot be read), as an [`Error`].
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// An [`Error`] saying what went wrong in a scenario.
pub(crate) fn failed(message: impl Into<String>) -> Error {
    Error::other(Failure(message.into()))
}

/// The scenarios `pattern` selects: `all`, an exact id, or a regular expression.
pub(crate) fn select(pattern: &str) -> Result<Vec<&'static Spec>, Error> {
    if pattern == "all" {
        return Ok(SPECS.iter().collect());
    }
    if let Some(s) = SPECS.iter().find(|s| s.id == pattern) {
        return Ok(vec![s]);
    }
    let re = regex_lite::Regex::new(pattern).map_err(|e| {
        Error::config(
            "--scenario",
            format!("{pattern:?} is not an id or a valid regex: {e}"),
        )
    })?;
    let picked: Vec<_> = SPECS.iter().filter(|s| re.is_match(s.id)).collect();
    if picked.is_empty() {
        return Err(Error::config(
            "--scenario",
            format!("{pattern:?} matches no scenario (see --list)"),
        ));
    }
    Ok(picked)
}

/// Runs one scenario in this process (the `bench-child` subcommand).
pub(crate) fn run_scenario(id: &str, ctx: &Ctx) -> Result<Values, Error> {
    match id {
        "fanout_N1" => fanout::fanout(ctx, id, 1, 1, 2_000_000),
        "fanout_N4" => fanout::fanout(ctx, id, 4, 1, 1_000_000),
        "fanout_N16" => fanout::fanout(ctx, id, 16, 1, 400_000),
        "fanout_N4_P2" => fanout::fanout(ctx, id, 4, 2, 1_000_000),
        "publish_latency_N4" => fanout::latency(ctx, id, 4, 1_000_000),
        "http_1" => http::http_1(ctx),
        "http_outage" => http::outage(ctx),
        "http_batch" => http::batch(ctx, "http_batch", 1),
        "http_batch_inflight2" => http::batch(ctx, "http_batch_inflight2", 2),
        "isolation" => http::isolation(ctx),
        "isolation_hostile" => http::isolation_hostile(ctx),
        "dead_endpoint_rss_N1" => rss::dead_endpoints(ctx, id, 1, 1_000_000),
        "dead_endpoint_rss_N4" => rss::dead_endpoints(ctx, id, 4, 1_000_000),
        "dead_endpoint_rss_N16" => rss::dead_endpoints(ctx, id, 16, 1_000_000),
        "rss_baseline" => rss::dead_endpoints(ctx, id, 1, 1),
        "durable_publish_512" => durable::publish(ctx, id),
        "durable_recovery_1M" => durable::recovery(ctx, id),
        "spill_rss_10M" => durable::spill(ctx, id),
        "serve_ingest_batch" => serve::ingest_batch(ctx, id),
        "serve_ingest_1" => serve::ingest_1(ctx, id),
        "serve_registry" => serve::registry(ctx, id),
        "pg_ingest" => pg::ingest(ctx, id),
        "pg_e2e_1" => pg::e2e(ctx, id, 1),
        "pg_e2e_2" => pg::e2e(ctx, id, 2),
        "pg_e2e_3" => pg::e2e(ctx, id, 3),
        "pg_takeover" => pg::takeover(ctx, id),
        "loopback_ceiling_c1" => ceiling::ceiling(ctx, id, 1, 50_000),
        "loopback_ceiling_c16" => ceiling::ceiling(ctx, id, 16, 100_000),
        _ => Err(Error::config(
            "--scenario",
            format!("no scenario {id:?} (see --list)"),
        )),
    }
}

/// `hookwire bench-child`: runs one scenario and prints its `RESULT` line.
pub(crate) fn child_main(args: &ChildArgs) -> Result<ExitCode, Error> {
    let ctx = Ctx {
        quick: args.quick,
        target: args.target.clone(),
        progress: args.progress || std::io::stderr().is_terminal(),
    };
    let values = run_scenario(&args.scenario, &ctx)?;
    println!("{}", values.result_line());
    Ok(ExitCode::SUCCESS)
}

/// `hookwire bench`: runs the selected scenarios, `--reps` times each, one child process per
/// run, and prints the medians.
pub(crate) fn main(args: &BenchArgs) -> Result<ExitCode, Error> {
    let selected = select(args.scenario.as_deref().unwrap_or("all"))?;
    if args.list {
        for s in &selected {
            println!("{:<24} {}", s.id, s.desc);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe()?;
    let progress = args.progress || std::io::stderr().is_terminal();
    let limit = Duration::from_secs(args.limit);
    let mut runs: Vec<Vec<Option<report::Run>>> = vec![Vec::new(); selected.len()];
    for rep in 0..args.reps {
        for (i, spec) in selected.iter().enumerate() {
            let opts = child::Opts {
                quick: args.quick,
                target: args.target.as_deref(),
                progress,
                limit,
            };
            match child::run(&exe, spec.id, &opts) {
                Ok(run) => runs[i].push(Some(run)),
                Err(e) => {
                    eprintln!("hookwire bench: {} (rep {}) failed: {e}", spec.id, rep + 1);
                    runs[i].push(None);
                }
            }
        }
    }
    let rows = report::summarize(&selected, &runs);
    if args.json {
        let meta = report::Meta::collect(args);
        println!("{}", report::json(&meta, &rows));
    } else {
        print!("{}", report::table(&rows));
        println!(
            "receiver: {}",
            report::receiver_note(args.target.as_deref())
        );
    }
    let all_ok = runs.iter().flatten().all(Option::is_some);
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_by_id_regex_or_all() {
        assert_eq!(select("all").unwrap().len(), SPECS.len());
        let one = select("fanout_N4").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].id, "fanout_N4");
        let ids: Vec<_> = select("^(http|loopback)")
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(
            ids,
            [
                "http_1",
                "http_outage",
                "http_batch",
                "http_batch_inflight2",
                "loopback_ceiling_c1",
                "loopback_ceiling_c16"
            ]
        );
        let e = select("nothing_here").unwrap_err();
        assert!(e.to_string().contains("--scenario"), "{e}");
        let e = select("(").unwrap_err();
        assert!(e.to_string().contains("not an id or a valid regex"), "{e}");
    }

    #[test]
    fn every_spec_runs_and_ids_are_unique() {
        let mut ids: Vec<_> = SPECS.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), SPECS.len());
        let ctx = Ctx {
            quick: true,
            target: None,
            progress: false,
        };
        let e = run_scenario("nope", &ctx).unwrap_err();
        assert!(e.to_string().contains("no scenario"), "{e}");
    }

    #[test]
    fn peer_keys_are_present() {
        let keys = |id: &str| -> Vec<&str> {
            SPECS
                .iter()
                .find(|s| s.id == id)
                .unwrap()
                .metrics
                .iter()
                .map(|m| m.key)
                .collect()
        };
        assert_eq!(
            keys("fanout_N16"),
            [
                "writes_per_s",
                "deliveries_per_s",
                "peak_rss_kb",
                "rss_above_events_kb",
                "prebuilt_events_kb"
            ]
        );
        assert!(keys("publish_latency_N4").contains(&"p99_ns"));
        assert!(keys("http_1").contains(&"lost") && keys("http_1").contains(&"duplicates"));
        assert_eq!(keys("dead_endpoint_rss_N16")[0], "peak_rss_kb");
        assert_eq!(keys("loopback_ceiling_c1")[0], "req_per_s");
        assert_eq!(
            keys("isolation"),
            ["solo_per_s", "beside_hanging_per_s", "ratio"]
        );
        assert_eq!(
            keys("isolation_hostile"),
            ["solo_per_s", "beside_hostile_per_s", "ratio"]
        );
    }

    #[test]
    fn values_render_a_result_line() {
        let mut v = Values::default();
        v.put("a", 1.0)
            .put("b", 2.5)
            .put("a", 3.0)
            .put("c", f64::NAN);
        assert_eq!(v.get("a"), Some(3.0));
        assert_eq!(v.result_line(), r#"RESULT {"a":3.0,"b":2.5,"c":null}"#);
    }

    #[test]
    fn quick_divides_counts() {
        let ctx = Ctx {
            quick: true,
            target: None,
            progress: false,
        };
        assert_eq!((ctx.count(50_000), ctx.count(1)), (5_000, 1));
        let ctx = Ctx {
            quick: false,
            ..ctx
        };
        assert_eq!(ctx.count(50_000), 50_000);
    }
}
