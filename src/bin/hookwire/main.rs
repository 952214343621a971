//! `hookwire`: deliver NDJSON events to webhook endpoints (`send`), and measure the engine
//! on the Go peer's scenarios (`bench`).
//!
//! Exit codes: 0 success; 1 the work did not fully succeed (an event not delivered, a bad
//! input line, a failed benchmark run); 2 a usage or configuration error (the message names
//! the flag).

mod bench;
mod dlq;
mod durable;
mod duration;
mod forget;
mod input;
mod ndjson;
mod options;
mod progress;
mod saved;
mod secrets;
mod send;
mod serve;
mod signals;
mod summary;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hookwire::Error;

/// Deliver events to webhook endpoints: fast, bounded, and without losing them.
#[derive(Debug, Parser)]
#[command(name = "hookwire", version, propagate_version = true)]
struct Cli {
    /// Log more on stderr: -v info, -vv debug, -vvv trace [default: warnings and errors].
    /// RUST_LOG (e.g. `RUST_LOG=hookwire=debug`) refines it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Deliver NDJSON events from stdin to webhook endpoints, then print a JSON summary.
    Send(send::SendArgs),
    /// List or replay the events `send --data-dir` gave up on (kept in its data directory).
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Forget durable endpoints of a data directory: their backlog goes to the dead letters
    /// and their slots (64 per directory) are freed.
    Forget(forget::ForgetArgs),
    /// Run the Go peer's benchmark scenarios on hookwire's engine; print medians.
    Bench(bench::BenchArgs),
    /// Relay events posted over HTTP to webhook endpoints, durably (a config file or flags).
    Serve(serve::ServeArgs),
    /// One benchmark scenario in this process (used by `bench`).
    #[command(name = "bench-child", hide = true)]
    BenchChild(bench::ChildArgs),
}

/// The exit code for an error: 2 for configuration (a bad flag value, too many endpoints),
/// 1 for the rest.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Config { .. } | Error::TooManyEndpoints { .. } => 2,
        _ => 1,
    }
}

/// The level logged with `verbose` `-v` flags: warnings and errors by default.
fn log_level(verbose: u8) -> log::LevelFilter {
    match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Sends the library's log records to stderr, one plain line each (`hookwire: warning:
/// ...`), at the level `-v` asks for; `rust_log` (RUST_LOG's value) refines it.
fn init_logging(verbose: u8, rust_log: Option<&str>) {
    use std::io::Write as _;
    let mut b = env_logger::Builder::new();
    b.filter_level(log_level(verbose));
    if let Some(spec) = rust_log {
        b.parse_filters(spec);
    }
    b.target(env_logger::Target::Stderr).format(|buf, record| {
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        if record.level() <= log::Level::Info {
            writeln!(buf, "hookwire: {level}: {}", record.args())
        } else {
            writeln!(
                buf,
                "hookwire: {level}: {}: {}",
                record.target(),
                record.args()
            )
        }
    });
    // Only fails if a logger is installed already (it is not: this runs once, first).
    let _ = b.try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse(); // usage errors: message and exit code 2; --help: exit code 0
    init_logging(cli.verbose, std::env::var("RUST_LOG").ok().as_deref());
    let result = match &cli.command {
        Command::Send(args) => send::main(args),
        Command::Dlq(cmd) => dlq::main(cmd),
        Command::Forget(args) => forget::main(args),
        Command::Bench(args) => bench::main(args),
        Command::Serve(args) => serve::main(args),
        Command::BenchChild(args) => bench::child_main(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hookwire: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn verbose_flags_raise_the_log_level() {
        let v = |argv: &[&str]| Cli::try_parse_from(argv).unwrap().verbose;
        assert_eq!(v(&["hookwire", "bench", "--list"]), 0);
        assert_eq!(v(&["hookwire", "-v", "bench", "--list"]), 1);
        assert_eq!(v(&["hookwire", "bench", "--list", "-vv"]), 2);
        assert_eq!(log_level(0), log::LevelFilter::Warn);
        assert_eq!(log_level(1), log::LevelFilter::Info);
        assert_eq!(log_level(2), log::LevelFilter::Debug);
        assert_eq!(log_level(9), log::LevelFilter::Trace);
    }

    #[test]
    fn config_errors_exit_2_others_1() {
        assert_eq!(exit_code(&Error::config("--batch", "x")), 2);
        assert_eq!(exit_code(&Error::Closed), 1);
    }

    #[test]
    fn subcommands_parse() {
        let cli = Cli::try_parse_from([
            "hookwire",
            "bench",
            "--scenario",
            "^http",
            "--json",
            "--quick",
        ])
        .unwrap();
        let Command::Bench(b) = cli.command else {
            panic!("not bench")
        };
        assert_eq!(
            (b.scenario.as_deref(), b.json, b.quick, b.reps),
            (Some("^http"), true, true, 1)
        );
        let e = Cli::try_parse_from(["hookwire", "bench"]).unwrap_err();
        assert!(e.to_string().contains("--scenario"), "{e}");
        assert!(Cli::try_parse_from(["hookwire", "bench", "--list"]).is_ok());
        let e = Cli::try_parse_from(["hookwire", "bench", "--scenario", "x", "--reps", "0"])
            .unwrap_err();
        assert!(e.to_string().contains("--reps"), "{e}");
        let cli = Cli::try_parse_from(["hookwire", "bench-child", "--scenario", "http_1"]).unwrap();
        assert!(matches!(cli.command, Command::BenchChild(_)));
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("send") && help.contains("bench") && !help.contains("bench-child"));
        assert!(help.contains("dlq"));
    }

    #[test]
    fn durable_flags_parse_and_depend_on_each_other() {
        let cli =
            Cli::try_parse_from(["hookwire", "send", "--data-dir", "/d", "--resume"]).unwrap();
        let Command::Send(s) = cli.command else {
            panic!("not send")
        };
        assert!(s.resume && s.endpoints.is_empty());
        assert_eq!(s.data_dir.as_deref(), Some(std::path::Path::new("/d")));
        // --resume needs --data-dir; without --resume, --endpoint is required.
        let e = Cli::try_parse_from(["hookwire", "send", "--resume", "--endpoint", "http://h/"])
            .unwrap_err();
        assert!(e.to_string().contains("--data-dir"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = Cli::try_parse_from(["hookwire", "send", "--data-dir", "/d"]).unwrap_err();
        assert!(e.to_string().contains("--endpoint"), "{e}");
        let cli = Cli::try_parse_from([
            "hookwire",
            "dlq",
            "replay",
            "--data-dir",
            "/d",
            "--endpoint",
            "audit",
            "--seq",
            "3..4",
        ])
        .unwrap();
        let Command::Dlq(dlq::DlqCommand::Replay(a)) = cli.command else {
            panic!("not dlq replay")
        };
        assert_eq!(
            (a.endpoint.as_deref(), a.seq),
            (Some("audit"), Some((3, 4)))
        );
        for bad in [
            &["hookwire", "dlq", "list"][..],
            &["hookwire", "dlq", "list", "--data-dir", "/d", "--seq", "x"][..],
            &["hookwire", "dlq", "purge", "--data-dir", "/d"][..],
        ] {
            assert_eq!(
                Cli::try_parse_from(bad).unwrap_err().exit_code(),
                2,
                "{bad:?}"
            );
        }
    }
}
