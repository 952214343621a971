//! Issue 10, item 4: `hookwire send --data-dir` on a full disk. The data directory is on a
//! 2 MiB tmpfs mounted for the test (we need root for that: without it, or without `mount`,
//! the test says so and returns). What `send` reported durable is delivered by the next
//! `--resume`, nothing it reported not durable (or did not read) ever is, and the run stops
//! at the failure with one clear error instead of one per line.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Out, TempDir, hookwire};
use hookwire::testkit::{Receiver, ReceiverConfig};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// A tmpfs of `size` mounted on a fresh directory; unmounted (and the directory removed)
/// when dropped.
struct Tmpfs {
    /// Holds the mount point.
    _parent: TempDir,
    dir: PathBuf,
}

impl Tmpfs {
    /// `None` (having said why on stderr) if it cannot be mounted here.
    fn mount(name: &str, size: &str) -> Option<Tmpfs> {
        let parent = TempDir::new(name);
        let dir = parent.path().join("fs");
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs {
                _parent: parent,
                dir,
            }),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a {size} tmpfs (needs root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount for a {size} tmpfs: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    /// Grows it to `size` (room made, as a user would before resuming).
    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount the tmpfs with size={size}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// `e{from} .. e{to-1}` as NDJSON, each about 1 KiB.
fn big_events(from: usize, to: usize) -> String {
    let pad = "x".repeat(1000);
    (from..to)
        .map(|i| format!("{{\"id\":\"e{i}\",\"action\":\"push\",\"n\":{i},\"pad\":\"{pad}\"}}\n"))
        .collect()
}

fn summary(out: &Out) -> Value {
    let last = out
        .stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output; stderr: {}", out.stderr));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"))
}

#[test]
fn a_full_disk_stops_the_run_once_and_keeps_the_durable_contract() {
    let Some(fs) = Tmpfs::mount("disk-full", "2m") else {
        return;
    };
    let dir = fs.path().join("data");
    let dir_arg = dir.to_str().unwrap();
    // Twice what fits: the disk fills about half way.
    const N: usize = 4000;
    let down = Receiver::start(ReceiverConfig::default().fail_for(Duration::from_secs(3600), 503))
        .unwrap();
    let out = hookwire(
        &[
            "send",
            "--data-dir",
            dir_arg,
            "--endpoint",
            &down.url(),
            "--timeout",
            "5",
        ],
        big_events(0, N),
        LIMIT,
    );
    let s = summary(&out);
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    // One clear error: a few lines, not one per event (main printed 15,068). The few: the
    // store's failure, the refused group, a publish that raced the failure (sometimes), where
    // reading stopped, and the endpoint's one-line report.
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(lines.len() <= 6, "stderr: {}", out.stderr);
    let full = lines
        .iter()
        .filter(|l| l.contains("No space left on device"))
        .count();
    // The failure itself, the group it refused, and at most one publish that raced it.
    assert!((1..=3).contains(&full), "stderr: {}", out.stderr);
    let error = s["storage_error"].as_str().unwrap_or_else(|| panic!("{s}"));
    assert!(error.contains("No space left on device"), "{error}");
    assert!(error.contains("rolled back"), "{error}");
    // Reading stopped at the failure: the rest of the input was not read.
    let unread = n("unread_from_line");
    assert!(unread < N as u64, "{s}");
    let durable = n("durable_through");
    assert!(durable > 500, "{s}");
    // Every event accepted was either reported durable or not durable; the durable ones
    // are kept for the resume.
    assert_eq!(durable + n("not_durable"), n("accepted"), "{s}");
    assert_eq!(n("kept"), durable, "{s}");
    assert!(
        n("accepted") + n("publish_errors") < unread,
        "nothing read after the failure was published: {s}"
    );
    down.shutdown();

    // The user makes room (the resume writes its settings and cursors), then resumes: it
    // delivers exactly what was reported durable, the first `durable` lines.
    fs.grow("4m");
    let up = Receiver::start(ReceiverConfig::default()).unwrap();
    let out = hookwire(
        &[
            "send",
            "--data-dir",
            dir_arg,
            "--resume",
            "--endpoint",
            &up.url(),
            "--timeout",
            "25",
        ],
        String::new(),
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let got: BTreeSet<String> = up.ids().into_iter().collect();
    let want: BTreeSet<String> = (0..durable).map(|i| format!("e{i}")).collect();
    let extra: Vec<&String> = got.difference(&want).take(5).collect();
    let missing: Vec<&String> = want.difference(&got).take(5).collect();
    assert!(
        extra.is_empty(),
        "{} events not reported durable were delivered, e.g. {extra:?}",
        got.difference(&want).count()
    );
    assert!(
        missing.is_empty(),
        "{} events reported durable were not delivered, e.g. {missing:?}",
        want.difference(&got).count()
    );
}
