//! Helpers shared by the integration tests (each test crate uses a part of them).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hookwire::RawEvent;
use hookwire::stats::Metrics;

pub mod cluster;
pub mod proxy;
pub mod recorder;
pub mod registry;
pub mod serve_child;

/// A small event with id `e{i}` and action `push`.
pub fn event(i: usize) -> RawEvent {
    RawEvent::parse(format!(r#"{{"id":"e{i}","action":"push","n":{i}}}"#)).unwrap()
}

/// `e0 .. e{n-1}`.
pub fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("e{i}")).collect()
}

/// Polls `f` until it holds; fails the test after 10 s (a safety net, not a timing assertion).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The identity holds, and once quiet nothing pending hides outside the queue and the wire.
pub fn assert_quiet_and_balanced(m: &Metrics) {
    assert!(m.balanced(), "identity broken: {m:?}");
    assert_eq!(m.pending, m.queued + m.in_flight, "{m:?}");
}

/// What a run of the `hookwire` binary printed.
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `hookwire ARGS` with `input` on stdin; kills it (and fails the test) after `limit`.
pub fn hookwire(args: &[&str], input: String, limit: Duration) -> Out {
    hookwire_env(args, &[], input, limit)
}

/// [`hookwire`] with environment variables set for the child.
pub fn hookwire_env(args: &[&str], env: &[(&str, &str)], input: String, limit: Duration) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookwire"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hookwire");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes()); // the child may exit before reading it all
    });
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read_all(Box::new(child.stdout.take().unwrap()));
    let err = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hookwire {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    writer.join().unwrap();
    Out {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A fresh data directory for one test (removed when dropped).
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory under the system's temp dir, named after `name`.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "hookwire-test-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp dir")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A run of `hookwire ARGS` that had to be refused: exit 2, a message naming `flag`, no
/// panic, nothing on stdout.
pub fn assert_refused(args: &[&str], out: &Out, flag: &str) {
    assert_eq!(out.code, Some(2), "{args:?}: stderr: {}", out.stderr);
    assert!(
        out.stderr.contains(flag),
        "{args:?}: the message does not name {flag}: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

/// A CA, and a server certificate it signed for 127.0.0.1: (CA PEM, chain PEM, key PEM).
pub fn test_pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "hookwire engine test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.pem(), key.serialize_pem())
}

/// A `hookwire` that runs while the test talks to it: stdin stays open until
/// [`close_stdin`](Live::close_stdin); stdout and stderr are collected. Killed (SIGKILL) and
/// reaped when dropped, so a failing test leaves no process behind.
pub struct Live {
    child: std::process::Child,
    pub stdin: Option<std::process::ChildStdin>,
    out: Option<std::thread::JoinHandle<String>>,
    err: Option<std::thread::JoinHandle<String>>,
    /// stderr so far, line by line (the collector thread fills it as it reads).
    err_lines: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Live {
    /// Starts `hookwire ARGS`.
    pub fn start(args: &[&str]) -> Live {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookwire"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hookwire");
        let mut stdout = child.stdout.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err_lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let seen = err_lines.clone();
        let stderr = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut s = seen.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
            seen.lock().unwrap().clone()
        });
        Live {
            stdin: child.stdin.take(),
            child,
            out: Some(out),
            err: Some(err),
            err_lines,
        }
    }

    /// Writes `text` to its stdin and flushes it.
    pub fn write(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(text.as_bytes()).expect("write to hookwire");
        stdin.flush().unwrap();
    }

    /// Closes its stdin (the end of the input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.err_lines.lock().unwrap().clone()
    }

    /// Sends it a signal by its process id (`INT`, `TERM`), with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for it to exit (failing the test after `limit`) and returns what it printed.
    pub fn finish(mut self, limit: Duration) -> Out {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "hookwire did not finish within {limit:?}; stderr: {}",
                self.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        self.stdin = None;
        Out {
            code: status.code(),
            stdout: self.out.take().unwrap().join().unwrap(),
            stderr: self.err.take().unwrap().join().unwrap(),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
