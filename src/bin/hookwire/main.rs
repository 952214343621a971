//! `hookwire`: deliver NDJSON events to webhook endpoints (`send`), and measure the engine
//! on the Go peer's scenarios (`bench`).
//!
//! Exit codes: 0 success; 1 the work did not fully succeed (an event not delivered, a bad
//! input line, a failed benchmark run); 2 a usage or configuration error (the message names
//! the flag).

mod bench;
mod ndjson;
mod options;
mod send;
mod summary;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hookwire::Error;

/// Deliver events to webhook endpoints: fast, bounded, and without losing them.
#[derive(Debug, Parser)]
#[command(name = "hookwire", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Deliver NDJSON events from stdin to webhook endpoints, then print a JSON summary.
    Send(send::SendArgs),
    /// Run the Go peer's benchmark scenarios on hookwire's engine; print medians.
    Bench(bench::BenchArgs),
    /// One benchmark scenario in this process (used by `bench`).
    #[command(name = "bench-child", hide = true)]
    BenchChild(bench::ChildArgs),
}

/// The exit code for an error: 2 for configuration (a bad flag value), 1 for the rest.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Config { .. } => 2,
        _ => 1,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse(); // usage errors: message and exit code 2; --help: exit code 0
    let result = match &cli.command {
        Command::Send(args) => send::main(args),
        Command::Bench(args) => bench::main(args),
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
    }
}
