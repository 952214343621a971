//! Runs one scenario in a child process (this binary's hidden `bench-child`), with a deadline,
//! and reads its `RESULT` line.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hookwire::Error;

use super::failed;
use super::report::Run;

/// How the child is run.
#[derive(Debug, Clone)]
pub(crate) struct Opts<'a> {
    /// `--quick`.
    pub(crate) quick: bool,
    /// `--target`.
    pub(crate) target: Option<&'a str>,
    /// Whether the child draws progress (it shares our stderr).
    pub(crate) progress: bool,
    /// Kill it after this long.
    pub(crate) limit: Duration,
}

/// Runs scenario `id` in a child process of `exe` and returns what it reported.
pub(crate) fn run(exe: &Path, id: &str, opts: &Opts<'_>) -> Result<Run, Error> {
    let mut cmd = Command::new(exe);
    cmd.args(["bench-child", "--scenario", id]);
    if opts.quick {
        cmd.arg("--quick");
    }
    if let Some(t) = opts.target {
        cmd.args(["--target", t]);
    }
    if opts.progress {
        cmd.arg("--progress");
    }
    run_command(cmd, opts.limit)
}

/// Runs `cmd` (stdout read, stderr shared), kills it after `limit`, and parses its `RESULT`.
fn run_command(mut cmd: Command, limit: Duration) -> Result<Run, Error> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn()?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| failed("the child's stdout was not piped"))?;
    // Read stdout on a thread so a chatty child cannot block on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            return Err(Error::Timeout {
                waiting_for: "the scenario's process",
                after: limit,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader
        .join()
        .map_err(|_| failed("the thread reading the child's output panicked"))?;
    if !status.success() {
        return Err(failed(format!("its process ended with {status}")));
    }
    parse_result(&out)
}

/// Finds the `RESULT {json}` line in a child's output and reads its numbers (`null`s are
/// left out).
pub(crate) fn parse_result(out: &str) -> Result<Run, Error> {
    let line = out
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| failed(format!("no RESULT line in its output: {out:?}")))?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let obj = v
        .as_object()
        .ok_or_else(|| failed(format!("RESULT is not a JSON object: {line}")))?;
    let mut run = BTreeMap::new();
    for (k, v) in obj {
        if let Some(x) = v.as_f64() {
            run.insert(k.clone(), x);
        } else if !v.is_null() {
            return Err(failed(format!("RESULT key {k} is not a number: {v}")));
        }
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_last_result_line() {
        let out = "noise\nRESULT {\"a\":1}\nRESULT {\"a\":2.5,\"b\":null,\"c\":3}\n";
        let r = parse_result(out).unwrap();
        assert_eq!(r.get("a"), Some(&2.5));
        assert_eq!(r.get("b"), None);
        assert_eq!(r.get("c"), Some(&3.0));
    }

    #[test]
    fn rejects_missing_or_bad_results() {
        assert!(parse_result("nothing").is_err());
        assert!(parse_result("RESULT [1]").is_err());
        assert!(parse_result("RESULT {\"a\":\"x\"}").is_err());
        assert!(parse_result("RESULT {").is_err());
    }

    #[test]
    fn a_child_that_fails_or_overruns_is_reported() {
        let opts = Opts {
            quick: true,
            target: None,
            progress: false,
            limit: Duration::from_secs(5),
        };
        // `false` ignores its arguments and exits 1.
        let e = run(Path::new("false"), "x", &opts).unwrap_err();
        assert!(e.to_string().contains("ended with"), "{e}");
        let mut sleeper = Command::new("sleep");
        sleeper.arg("30");
        let t0 = Instant::now();
        let e = run_command(sleeper, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "killed, not waited for"
        );
        let mut echo = Command::new("echo");
        echo.arg("RESULT {\"k\":7}");
        assert_eq!(
            run_command(echo, Duration::from_secs(5)).unwrap().get("k"),
            Some(&7.0)
        );
    }
}
