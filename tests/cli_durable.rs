//! `hookwire send --data-dir`, `--resume` and `hookwire dlq` as a user runs them: the binary,
//! NDJSON on stdin, the test kit receiver in this process. Includes the crash test: a `send`
//! killed with SIGKILL loses none of the events it reported durable.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Live, Out, TempDir, eventually, hookwire, ids};
use hookwire::testkit::{Receiver, ReceiverConfig, Reply};
use serde_json::Value;

/// The most any one run of the binary may take before the test fails.
const LIMIT: Duration = Duration::from_secs(30);

/// `e{from} .. e{to-1}` as NDJSON.
fn events(from: usize, to: usize) -> String {
    (from..to)
        .map(|i| format!("{{\"id\":\"e{i}\",\"action\":\"push\",\"n\":{i}}}\n"))
        .collect()
}

/// Runs `hookwire ARGS` with `input` on stdin.
fn run(args: &[&str], input: String) -> Out {
    hookwire(args, input, LIMIT)
}

/// stdout as NDJSON, one value per line.
fn ndjson(out: &Out) -> Vec<Value> {
    out.stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "not a JSON line ({e}): {l:?}\nstdout: {}\nstderr: {}",
                    out.stdout, out.stderr
                )
            })
        })
        .collect()
}

/// The summary: the last stdout line.
fn summary(out: &Out) -> Value {
    ndjson(out)
        .pop()
        .unwrap_or_else(|| panic!("no output; stderr: {}", out.stderr))
}

/// Checks `events = delivered + dropped + dead_lettered + pending` in a summary.
fn assert_balanced(s: &Value) {
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    let dropped: u64 = s["dropped"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        n("events"),
        n("delivered") + dropped + n("dead_lettered") + n("pending"),
        "{s}"
    );
}

fn ok_receiver() -> Receiver {
    Receiver::start(ReceiverConfig::default()).unwrap()
}

/// A running `hookwire`, killed (SIGKILL) and reaped when dropped, so a failing test leaves
/// no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `hookwire ARGS` with piped stdin and stdout, for tests that talk to it while it
/// runs.
fn spawn(args: &[&str]) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_hookwire"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hookwire");
    Running(child)
}

#[test]
fn send_with_a_data_dir_prints_durable_progress_then_the_summary() {
    let dir = TempDir::new("progress");
    let rx = ok_receiver();
    let url = rx.url();
    let out = run(
        &["send", "--data-dir", dir.arg(), "--endpoint", &url],
        events(0, 500),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let mut lines = ndjson(&out);
    let s = lines.pop().unwrap();
    let progress: Vec<u64> = lines
        .iter()
        .map(|l| {
            assert_eq!(l.as_object().unwrap().len(), 1, "{l}");
            l["durable_through"].as_u64().unwrap()
        })
        .collect();
    assert!(!progress.is_empty());
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&500));
    assert_eq!(s["durable"], true);
    assert_eq!(s["durable_through"], 500);
    assert_eq!(s["not_durable"], 0);
    assert_eq!(
        (s["accepted"].as_u64(), s["delivered"].as_u64()),
        (Some(500), Some(500))
    );
    assert_eq!(
        (s["kept"].as_u64(), s["pending"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(s["recovery"].is_object(), "{s}");
    assert_balanced(&s);
    assert_eq!(rx.ids(), ids(500), "in order, once each");
    // The settings are saved for --resume.
    let saved = std::fs::read_to_string(dir.path().join("send.json")).unwrap();
    assert!(saved.contains(&url), "{saved}");
}

#[test]
fn a_resume_with_nothing_to_do_exits_0_at_once() {
    let dir = TempDir::new("idle");
    let rx = ok_receiver();
    let out = run(
        &["send", "--data-dir", dir.arg(), "--endpoint", &rx.url()],
        events(0, 10),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let t0 = Instant::now();
    let out = run(
        &["send", "--data-dir", dir.arg(), "--resume"],
        String::new(),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "only the summary: {}",
        out.stdout
    );
    let s = summary(&out);
    assert_eq!(
        (s["events"].as_u64(), s["delivered"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(s.get("durable_through").is_none(), "{s}");
    assert_eq!(
        s["recovery"]["records"].as_u64().map(|r| r <= 10),
        Some(true),
        "{s}"
    );
    assert_eq!(rx.stats().distinct, 10, "nothing sent twice");
}

/// The crash test: `send --data-dir` is killed with SIGKILL while events pile up behind a slow
/// receiver (some delivered, most not); a `--resume` (to a new receiver, with a new URL under
/// the saved name) then delivers every event that had been reported durable.
#[test]
fn kill_9_loses_nothing_that_was_reported_durable() {
    const TOTAL: usize = 20_000;
    const ENOUGH: u64 = 2_000;
    const SOME_DELIVERED: u64 = 50;
    let dir = TempDir::new("crash");
    // About 1,000 events/s in batches of 10: far slower than stdin.
    let slow = Receiver::start(ReceiverConfig::default().delay(Duration::from_millis(10))).unwrap();
    let mut child = spawn(&[
        "send",
        "--data-dir",
        dir.arg(),
        "--endpoint",
        &slow.url(),
        "--batch",
        "10",
        "--timeout",
        "60",
    ]);
    let mut stdin = child.0.stdin.take().unwrap();
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let writer = std::thread::spawn(move || {
        for chunk in (0..TOTAL).step_by(500) {
            if stdin
                .write_all(events(chunk, chunk + 500).as_bytes())
                .is_err()
            {
                return; // killed
            }
        }
        // Keep stdin open until the kill: the send must not reach its end and stop cleanly.
        let _ = stopped.recv();
    });
    let stdout = BufReader::new(child.0.stdout.take().unwrap());
    let (tx, lines) = crossbeam_channel::unbounded::<String>();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + LIMIT;
    let mut durable = 0u64;
    let mut seen = Vec::new();
    // Until enough is durable and the slow receiver has some (so the crash comes mid-way).
    while durable < ENOUGH || slow.stats().events < SOME_DELIVERED {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!(
                "not durable_through >= {ENOUGH} and {SOME_DELIVERED} delivered within \
                 {LIMIT:?}: {seen:?}, {:?}",
                slow.stats()
            );
        }
        let Ok(line) = lines.recv_timeout(left.min(Duration::from_millis(10))) else {
            continue;
        };
        let v: Value = serde_json::from_str(&line).expect("NDJSON progress");
        let n = v["durable_through"]
            .as_u64()
            .unwrap_or_else(|| panic!("the summary came before the kill: {line}"));
        assert!(n > durable, "durable_through went from {durable} to {n}");
        durable = n;
        seen.push(line);
    }
    child.0.kill().expect("SIGKILL");
    child.0.wait().unwrap();
    drop(stop);
    writer.join().unwrap();
    reader.join().unwrap();
    let first: HashSet<String> = slow.ids().into_iter().collect();
    slow.shutdown();

    let up = ok_receiver();
    let out = run(
        &[
            "send",
            "--data-dir",
            dir.arg(),
            "--resume",
            "--endpoint",
            &up.url(),
            "--timeout",
            "25",
        ],
        String::new(),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let s = summary(&out);
    assert_balanced(&s);
    assert_eq!(s["pending"], 0, "{s}");
    assert_eq!(s["kept"], 0, "{s}");
    assert!(s["recovery"].is_object(), "{s}");
    let second: HashSet<String> = up.ids().into_iter().collect();
    let all_ids: HashSet<String> = ids(TOTAL).into_iter().collect();
    let lost: Vec<String> = ids(durable as usize)
        .into_iter()
        .filter(|id| !first.contains(id) && !second.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of the {durable} events reported durable never arrived, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(second.is_subset(&all_ids), "only events that were sent");
    assert!(
        up.stats().events >= s["delivered"].as_u64().unwrap(),
        "the receiver got every delivery the summary counts: {s}"
    );
}

#[test]
fn dead_letters_are_listed_replayed_and_resumed() {
    const K: usize = 3;
    let dir = TempDir::new("dlq");
    // The first K requests are refused for good (400), the rest accepted.
    let rx =
        Receiver::start(ReceiverConfig::default().statuses(vec![Reply::status(400); K])).unwrap();
    let out = run(
        &[
            "send",
            "--data-dir",
            dir.arg(),
            "--endpoint",
            &rx.url(),
            "--name",
            "audit",
        ],
        events(0, 5),
    );
    assert_eq!(
        out.code,
        Some(1),
        "dead letters fail the run: {}",
        out.stderr
    );
    let s = summary(&out);
    assert_eq!(
        (s["dead_lettered"].as_u64(), s["delivered"].as_u64()),
        (Some(3), Some(2))
    );
    let dlq = |cmd: &str, extra: &[&str]| {
        let mut args = vec!["dlq", cmd, "--data-dir", dir.arg()];
        args.extend_from_slice(extra);
        run(&args, String::new())
    };
    let out = dlq("list", &[]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let listed = ndjson(&out);
    assert_eq!(listed.len(), K, "{}", out.stdout);
    for (i, d) in listed.iter().enumerate() {
        assert_eq!(d["status"], 400, "{d}");
        assert_eq!(d["endpoint"], "audit", "{d}");
        assert_eq!(d["id"], format!("e{i}"), "{d}");
        assert_eq!(d["event"]["id"], format!("e{i}"), "the event inline: {d}");
        for k in ["seq", "published_ms", "failed_ms", "attempts"] {
            assert!(d[k].is_u64(), "{k}: {d}");
        }
        assert!(d["error"].is_string(), "{d}");
    }
    let seq = listed[1]["seq"].as_u64().unwrap().to_string();
    let one = dlq("list", &["--seq", &seq]);
    assert_eq!(ndjson(&one).len(), 1, "{}", one.stdout);
    assert_eq!(ndjson(&dlq("list", &["--endpoint", "other"])).len(), 0);
    let out = dlq("replay", &[]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(summary(&out), serde_json::json!({ "replayed": K }));
    assert_eq!(
        dlq("list", &[]).stdout,
        "",
        "replayed letters leave the list"
    );
    // The receiver now answers 200: the resume delivers the replayed events.
    let out = run(
        &["send", "--data-dir", dir.arg(), "--resume"],
        String::new(),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let s = summary(&out);
    assert_eq!(s["delivered"].as_u64(), Some(K as u64), "{s}");
    assert_balanced(&s);
    let mut got = rx.ids();
    got.sort();
    assert_eq!(got, ["e0", "e1", "e2", "e3", "e4"]);
}

/// Runs `hookwire ARGS` that must be refused: exit 2, a message naming `flag`, no output.
fn rejects(args: &[&str], flag: &str) {
    common::assert_refused(args, &run(args, String::new()), flag);
}

#[test]
fn usage_errors_exit_2() {
    let dir = TempDir::new("usage");
    let url = "http://127.0.0.1:9/hook";
    rejects(&["send", "--resume", "--endpoint", url], "--data-dir");
    rejects(
        &[
            "send",
            "--data-dir",
            dir.arg(),
            "--endpoint",
            url,
            "--overflow",
            "reject",
        ],
        "--overflow",
    );
    rejects(
        &["send", "--data-dir", dir.arg(), "--resume"],
        "nothing to resume",
    );
    rejects(&["dlq", "list"], "--data-dir");
    rejects(
        &["dlq", "replay", "--data-dir", dir.arg(), "--seq", "9..1"],
        "--seq",
    );
    // A signed run needs its secret again to resume (secrets are not saved).
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let out = run(
        &[
            "send",
            "--data-dir",
            dir.arg(),
            "--endpoint",
            url,
            "--secret",
            secret,
            "--timeout",
            "1",
        ],
        String::new(),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let saved = std::fs::read_to_string(dir.path().join("send.json")).unwrap();
    assert!(!saved.contains(secret), "{saved}");
    rejects(&["send", "--data-dir", dir.arg(), "--resume"], "--secret");
}

#[test]
fn help_explains_durable_delivery() {
    let out = run(&["send", "--help"], String::new());
    assert_eq!(out.code, Some(0));
    for text in [
        "--data-dir",
        "--resume",
        "durable_through",
        "send.json",
        "hookwire dlq",
    ] {
        assert!(
            out.stdout.contains(text),
            "send help lacks {text}:\n{}",
            out.stdout
        );
    }
    let out = run(&["dlq", "--help"], String::new());
    assert_eq!(out.code, Some(0));
    assert!(
        out.stdout.contains("list") && out.stdout.contains("replay"),
        "{}",
        out.stdout
    );
}

/// A receiver that answers 503 to everything: a `send` to it keeps every event in the log.
fn down_receiver() -> Receiver {
    Receiver::start(ReceiverConfig::default().fail_for(Duration::from_secs(3600), 503)).unwrap()
}

/// `hookwire send --data-dir DIR` of `n` events to an endpoint that never accepts them, named
/// `audit`: every event stays in DIR's log (one segment: segments are 64 MiB).
fn keep_events(dir: &TempDir, n: usize) {
    let down = down_receiver();
    let out = run(
        &[
            "send",
            "--data-dir",
            dir.arg(),
            "--endpoint",
            &down.url(),
            "--name",
            "audit",
            "--timeout",
            "1",
        ],
        events(0, n),
    );
    assert_eq!(out.code, Some(1), "nothing delivered: {}", out.stderr);
    let s = summary(&out);
    assert_eq!(s["kept"].as_u64(), Some(n as u64), "{s}");
}

/// The data directory's only segment file.
fn only_segment(dir: &TempDir) -> std::path::PathBuf {
    let segs: Vec<_> = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs.into_iter().next().unwrap()
}

/// Every file under `dir` with its bytes, by path.
fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                todo.push(path.clone());
                files.insert(path, Vec::new());
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Fails naming the files that differ between two [`snapshot`]s.
fn assert_unchanged(
    before: &std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
    after: &std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
) {
    let changed: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| (p, before.get(p).map(Vec::len), after.get(p).map(Vec::len)))
        .collect();
    assert!(
        changed.is_empty(),
        "a read-only command changed (path, bytes before, bytes after): {changed:?}"
    );
}

/// Issue 10, items 1 and 3: one byte flipped a quarter of the way into a 1,000-event log.
/// `dlq list` (read-only) changes no byte; `--resume` delivers every record but the damaged
/// one, reports the damage on stderr and in the summary, and exits 3.
#[test]
fn a_flipped_byte_loses_one_record_not_the_rest_and_says_so() {
    const N: usize = 1_000;
    let dir = TempDir::new("flip");
    keep_events(&dir, N);
    let seg = only_segment(&dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    let len = bytes.len();
    bytes[len / 4] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();

    let before = snapshot(dir.path());
    let out = run(&["dlq", "list", "--data-dir", dir.arg()], String::new());
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_unchanged(&before, &snapshot(dir.path()));
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len as u64);

    let up = ok_receiver();
    let out = run(
        &[
            "send",
            "--data-dir",
            dir.arg(),
            "--resume",
            "--endpoint",
            &up.url(),
        ],
        String::new(),
    );
    let s = summary(&out);
    assert_eq!(
        out.code,
        Some(3),
        "damage exits 3: {s}\nstderr: {}",
        out.stderr
    );
    assert!(s["delivered"].as_u64().unwrap() >= (N - 1) as u64, "{s}");
    assert!(up.stats().distinct >= (N - 1) as u64);
    assert!(
        out.stderr.contains("damaged") && out.stderr.contains("quarantine"),
        "stderr: {}",
        out.stderr
    );
    assert_eq!(s["dropped"]["corrupt"].as_u64(), Some(1), "{s}");
    assert_eq!(
        (s["pending"].as_u64(), s["kept"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    assert_balanced(&s);
    let damage = s["damage"]
        .as_array()
        .unwrap_or_else(|| panic!("no damage in {s}"));
    assert_eq!(damage.len(), 1, "{s}");
    assert_eq!(damage[0]["lost"].as_u64(), Some(1), "{s}");
    let copied = damage[0]["quarantined"]
        .as_str()
        .expect("a quarantine file");
    assert!(std::path::Path::new(copied).exists(), "{copied}");
    // The segment was not cut.
    assert!(std::fs::metadata(&seg).unwrap().len() >= len as u64);
}

/// Issue 10, item 3: `dlq list` opens the directory read-only, so it lists while a `send`
/// holds the directory and creates nothing in a directory without a log; `dlq replay` still
/// needs the directory to itself.
#[test]
fn dlq_list_reads_while_a_send_runs_and_replay_waits_its_turn() {
    let empty = TempDir::new("empty");
    std::fs::create_dir_all(empty.path()).unwrap();
    let out = run(&["dlq", "list", "--data-dir", empty.arg()], String::new());
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), ""),
        "{}",
        out.stderr
    );
    assert!(
        std::fs::read_dir(empty.path()).unwrap().next().is_none(),
        "dlq list created files"
    );

    let dir = TempDir::new("busy");
    let rx = ok_receiver();
    // stdin stays open: the send runs (and holds the directory) until it is closed.
    let mut child = spawn(&["send", "--data-dir", dir.arg(), "--endpoint", &rx.url()]);
    let saved = dir.path().join("send.json");
    let deadline = Instant::now() + LIMIT;
    while !saved.exists() {
        if Instant::now() > deadline || child.0.try_wait().unwrap().is_some() {
            panic!("the send did not start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let list = run(&["dlq", "list", "--data-dir", dir.arg()], String::new());
    let replay = run(&["dlq", "replay", "--data-dir", dir.arg()], String::new());
    drop(child.0.stdin.take()); // end of input: the send finishes
    let status = child.0.wait().unwrap();
    assert_eq!(
        (list.code, list.stdout.as_str()),
        (Some(0), ""),
        "{}",
        list.stderr
    );
    assert_eq!(replay.code, Some(1), "stdout: {}", replay.stdout);
    assert!(
        replay.stderr.contains("another hookwire process"),
        "{}",
        replay.stderr
    );
    assert_eq!(status.code(), Some(0));
}

/// Issue 10, item 8: with `slots.json` and `cursors.json` deleted, a resume still delivers
/// the 1,000 events in the log (redelivering, never skipping), and says what happened.
#[test]
fn lost_slot_and_cursor_files_redeliver_and_say_so() {
    const N: usize = 1_000;
    let dir = TempDir::new("lost-meta");
    keep_events(&dir, N);
    std::fs::remove_file(dir.path().join("slots.json")).unwrap();
    std::fs::remove_file(dir.path().join("cursors.json")).unwrap();
    let up = ok_receiver();
    let out = run(
        &[
            "send",
            "--data-dir",
            dir.arg(),
            "--resume",
            "--endpoint",
            &up.url(),
        ],
        String::new(),
    );
    let s = summary(&out);
    assert_eq!(
        s["delivered"].as_u64(),
        Some(N as u64),
        "{s}\nstderr: {}",
        out.stderr
    );
    assert_eq!(up.ids(), ids(N), "in order, once each");
    assert!(out.stderr.contains("slots.json"), "stderr: {}", out.stderr);
    assert_eq!(s["recovery"]["slots_lost"], true, "{s}");
    assert_eq!(
        out.code,
        Some(0),
        "everything was delivered: {}",
        out.stderr
    );
}

/// Issue 10, item 8: a cursor acknowledged past the end of the log (its last records are
/// gone) is pulled back, and the resume says so.
#[test]
fn a_cursor_past_the_end_of_the_log_is_reported() {
    let dir = TempDir::new("clamp");
    let rx = ok_receiver();
    let out = run(
        &[
            "send",
            "--data-dir",
            dir.arg(),
            "--endpoint",
            &rx.url(),
            "--name",
            "audit",
        ],
        events(0, 100),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    // Everything was delivered (the cursor is at 101); then the log loses its second half.
    let seg = only_segment(&dir);
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = run(
        &["send", "--data-dir", dir.arg(), "--resume"],
        String::new(),
    );
    assert!(
        out.stderr.contains("audit") && out.stderr.contains("cursor"),
        "stderr: {}",
        out.stderr
    );
    let s = summary(&out);
    let repairs = s["recovery"]["cursors_clamped"]
        .as_array()
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(repairs.len(), 1, "{s}");
    assert_eq!(repairs[0]["endpoint"], "audit", "{s}");
    assert_eq!(repairs[0]["saved"], 101, "{s}");
}

/// `send --data-dir` with `n` endpoints named `{prefix}{i}`, all to `url` but the last, which
/// goes to `last` (when given).
fn many(dir: &TempDir, prefix: &str, n: usize, url: &str, last: Option<&str>) -> Vec<String> {
    // --timeout is the whole run's budget: room for 64 endpoints to start on a busy machine.
    let mut args: Vec<String> = ["send", "--data-dir", dir.arg(), "--timeout", "5"]
        .map(String::from)
        .into();
    for i in 0..n {
        let u = if i + 1 == n { last.unwrap_or(url) } else { url };
        args.extend(["--endpoint".into(), u.into()]);
        args.extend(["--name".into(), format!("{prefix}{i}")]);
    }
    args
}

fn slot_names(dir: &TempDir) -> Vec<String> {
    let text = std::fs::read_to_string(dir.path().join("slots.json")).unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    v["endpoints"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Issue 10, item 6: a run with more endpoints than fit takes no slot and says why; a
/// forgotten endpoint's slot is free again and its backlog is in the dead letters; the new
/// endpoint on that slot gets none of the old records.
#[test]
fn slots_are_not_leaked_and_forget_frees_them() {
    let dir = TempDir::new("slots");
    let rx = ok_receiver();
    let url = rx.url();
    // 65 endpoints: refused before any takes a slot, with its own error (exit 2).
    let args = many(&dir, "n", 65, &url, None);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&argv, events(0, 3));
    assert_eq!(out.code, Some(2), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("too many durable endpoints") && !out.stderr.contains("queue"),
        "{}",
        out.stderr
    );
    assert_eq!(slot_names(&dir), Vec::<String>::new(), "no slot taken");

    // 64 endpoints: the last one's port refuses, so its 10 events stay in the log.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", l.local_addr().unwrap())
    };
    let args = many(&dir, "n", 64, &url, Some(&dead));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&argv, events(0, 10));
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert_eq!(summary(&out)["kept"], 10, "{}", out.stdout);
    assert_eq!(slot_names(&dir).len(), 64);

    // A 65th name does not fit: refused, nothing registered, and told what to forget.
    let out = run(
        &[
            "send",
            "--data-dir",
            dir.arg(),
            "--endpoint",
            &url,
            "--name",
            "x",
        ],
        events(100, 105),
    );
    assert_eq!(out.code, Some(2), "stderr: {}", out.stderr);
    assert!(out.stderr.contains("hookwire forget"), "{}", out.stderr);
    assert!(!slot_names(&dir).contains(&"x".to_owned()));

    // Forget the one that could not deliver: its 10 events go to the dead letters.
    let out = run(
        &["forget", "--data-dir", dir.arg(), "--endpoint", "n63"],
        String::new(),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let done = ndjson(&out);
    assert_eq!(done.len(), 1, "{}", out.stdout);
    assert_eq!(
        (
            &done[0]["forgotten"],
            &done[0]["slot"],
            &done[0]["dead_lettered"]
        ),
        (&Value::from("n63"), &Value::from(63), &Value::from(10))
    );
    assert!(!slot_names(&dir).contains(&"n63".to_owned()));
    let saved = std::fs::read_to_string(dir.path().join("send.json")).unwrap();
    assert!(!saved.contains("\"n63\""), "{saved}");
    let out = run(
        &["dlq", "list", "--data-dir", dir.arg(), "--endpoint", "n63"],
        String::new(),
    );
    assert_eq!(ndjson(&out).len(), 10, "{}", out.stdout);
    // Unknown names are a usage error, and nothing is forgotten.
    let out = run(
        &[
            "forget",
            "--data-dir",
            dir.arg(),
            "--endpoint",
            "n0",
            "--endpoint",
            "nope",
        ],
        String::new(),
    );
    assert_eq!(out.code, Some(2), "stderr: {}", out.stderr);
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
    assert!(slot_names(&dir).contains(&"n0".to_owned()));

    // Now "x" fits, takes slot 63, and gets only its own 5 events, not n63's 10.
    let before = rx.ids().len();
    let out = run(
        &[
            "send",
            "--data-dir",
            dir.arg(),
            "--endpoint",
            &url,
            "--name",
            "x",
        ],
        events(100, 105),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let s = summary(&out);
    assert_eq!(
        (&s["delivered"], &s["events"]),
        (&Value::from(5), &Value::from(5)),
        "{s}"
    );
    let got: HashSet<String> = rx.ids()[before..].iter().cloned().collect();
    let want: HashSet<String> = (100..105).map(|i| format!("e{i}")).collect();
    assert_eq!(got, want);
    let text = std::fs::read_to_string(dir.path().join("slots.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["endpoints"]["x"]["slot"], 63, "{text}");
}

/// Issue 10, item 9: the dead letters are bounded (`--dead-letter-cap`); an event given up
/// that does not fit is counted and said on stderr, never dropped unseen; `forget` with no
/// room fails and keeps the endpoint, and goes on once there is room.
#[test]
fn full_dead_letters_are_reported_and_forget_waits_for_room() {
    let dir = TempDir::new("dlq-cap");
    let refuse =
        Receiver::start(ReceiverConfig::default().fail_for(Duration::from_secs(3600), 400))
            .unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", l.local_addr().unwrap())
    };
    let out = run(
        &[
            "send",
            "--data-dir",
            dir.arg(),
            "--dead-letter-cap",
            "700",
            "--timeout",
            "4",
            "--endpoint",
            &refuse.url(),
            "--name",
            "a",
            "--endpoint",
            &dead,
            "--name",
            "b",
        ],
        events(0, 10),
    );
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    let s = summary(&out);
    assert_balanced(&s);
    let a = s["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "a")
        .unwrap_or_else(|| panic!("{s}"));
    let refused = a["metrics"]["dead_letter_errors"].as_u64().unwrap();
    assert_eq!(a["metrics"]["dead_lettered"], 10, "{a}");
    assert!(refused > 0, "{a}");
    assert!(
        out.stderr.contains(&format!(
            "endpoint a: {refused} event(s) given up could not be kept"
        )),
        "{}",
        out.stderr
    );
    let listed = run(&["dlq", "list", "--data-dir", dir.arg()], String::new());
    assert_eq!(
        ndjson(&listed).len() as u64 + refused,
        10,
        "{}",
        listed.stdout
    );
    let bytes: u64 = std::fs::read_dir(dir.path().join("dead-letters"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(bytes <= 700, "{bytes}");

    // b's 10 undelivered events do not fit: refused, b keeps its slot.
    let out = run(
        &[
            "forget",
            "--data-dir",
            dir.arg(),
            "--dead-letter-cap",
            "700",
            "--endpoint",
            "b",
        ],
        String::new(),
    );
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("dead letters are full"),
        "{}",
        out.stderr
    );
    assert!(slot_names(&dir).contains(&"b".to_owned()));
    // With room (the default cap), it goes on: all 10, none twice.
    let out = run(
        &["forget", "--data-dir", dir.arg(), "--endpoint", "b"],
        String::new(),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(!slot_names(&dir).contains(&"b".to_owned()));
    let of_b = run(
        &["dlq", "list", "--data-dir", dir.arg(), "--endpoint", "b"],
        String::new(),
    );
    let seqs: HashSet<u64> = ndjson(&of_b)
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 10, "{}", of_b.stdout);
    assert_eq!(ndjson(&of_b).len(), 10, "none twice");
}

/// Issue 10, item 12: SIGTERM stops a durable `send` whose stdin is still open: it drains by
/// --timeout, prints the summary line (every durable event is delivered or kept), exits 143,
/// and a resume delivers what was kept.
#[test]
fn sigterm_keeps_what_was_not_delivered_and_exits_143() {
    let dir = TempDir::new("sigterm");
    let down = down_receiver();
    let mut run = Live::start(&[
        "send",
        "--data-dir",
        dir.arg(),
        "--endpoint",
        &down.url(),
        "--name",
        "audit",
        "--timeout",
        "1",
    ]);
    run.write(&events(0, 50));
    eventually("the receiver is tried", || down.stats().requests > 0);
    run.signal("TERM");
    let out = run.finish(LIMIT);
    assert_eq!(out.code, Some(143), "stderr: {}", out.stderr);
    let s = summary(&out);
    assert_balanced(&s);
    assert_eq!(s["signal"], "SIGTERM", "{s}");
    assert_eq!(
        (s["accepted"].as_u64(), s["durable_through"].as_u64()),
        (Some(50), Some(50)),
        "{s}"
    );
    assert_eq!(
        (s["delivered"].as_u64(), s["kept"].as_u64()),
        (Some(0), Some(50)),
        "{s}"
    );
    let up = ok_receiver();
    let out = run_resume(&dir, &up);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(up.ids(), ids(50));
}

/// `send --data-dir DIR --resume --endpoint URL --name audit`.
fn run_resume(dir: &TempDir, to: &Receiver) -> Out {
    run(
        &[
            "send",
            "--data-dir",
            dir.arg(),
            "--resume",
            "--endpoint",
            &to.url(),
            "--name",
            "audit",
            "--timeout",
            "20",
        ],
        String::new(),
    )
}

/// Issue 10, item 7: `--resume --name a` resumes `a` alone and says on stderr that `b` is not
/// resumed now; `b` stays saved, so a later plain `--resume` delivers its backlog.
#[test]
fn a_resume_by_name_strands_no_other_endpoint() {
    let dir = TempDir::new("by-name");
    // Both answer 503 for 2 s from their first request: the first run keeps every event.
    let window = Duration::from_secs(2);
    let ra = Receiver::start(ReceiverConfig::default().fail_for(window, 503)).unwrap();
    let rb = Receiver::start(ReceiverConfig::default().fail_for(window, 503)).unwrap();
    let started = Instant::now();
    let out = run(
        &[
            "send",
            "--data-dir",
            dir.arg(),
            "--endpoint",
            &ra.url(),
            "--name",
            "a",
            "--endpoint",
            &rb.url(),
            "--name",
            "b",
            "--timeout",
            "1",
        ],
        events(0, 10),
    );
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert_eq!(summary(&out)["kept"], 20);
    // Past the receivers' window (a fault window, not a timing assertion).
    std::thread::sleep((started + window + Duration::from_millis(500)) - Instant::now());
    let resume = |extra: &[&str]| {
        let mut argv = vec![
            "send",
            "--data-dir",
            dir.arg(),
            "--resume",
            "--timeout",
            "20",
        ];
        argv.extend_from_slice(extra);
        run(&argv, String::new())
    };
    let out = resume(&["--name", "a"]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("not resumed now: endpoint(s) b"),
        "{}",
        out.stderr
    );
    let s = summary(&out);
    assert_eq!(s["endpoints"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(ra.ids(), ids(10));
    assert!(rb.ids().is_empty());
    let saved = std::fs::read_to_string(dir.path().join("send.json")).unwrap();
    assert!(saved.contains(&rb.url()), "b stays saved: {saved}");
    let out = resume(&[]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(
        rb.ids(),
        ids(10),
        "b's backlog, delivered by a plain --resume"
    );
    assert_eq!(ra.stats().distinct, 10, "nothing of a's twice");
}
