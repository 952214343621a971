//! `hookwire send` as a user runs it: the binary, NDJSON on stdin, the test kit receiver in
//! this process. Every run is killed after a deadline, so no test can hang.

mod common;

use std::time::Duration;

use common::{Live, Out, eventually, hookwire};

use hookwire::testkit::{Receiver, ReceiverConfig, Reply};
use serde_json::Value;

/// Runs `hookwire send ARGS` with `input` on stdin; kills it after 60 s.
fn send(args: &[&str], input: String) -> Out {
    let args: Vec<&str> = std::iter::once("send")
        .chain(args.iter().copied())
        .collect();
    hookwire(&args, input, Duration::from_secs(60))
}

fn summary(out: &Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON summary ({e}): {}\nstderr: {}",
            out.stdout, out.stderr
        )
    })
}

fn events(ids: impl IntoIterator<Item = String>) -> String {
    ids.into_iter()
        .map(|id| format!("{{\"id\":\"{id}\",\"action\":\"push\",\"n\":1}}\n"))
        .collect()
}

#[test]
fn a_clean_run_delivers_everything_and_exits_0() {
    let rx = Receiver::start(ReceiverConfig::default()).unwrap();
    let ids: Vec<String> = (0..100).map(|i| format!("evt-{i}")).collect();
    let out = send(
        &["--endpoint", &rx.url(), "--timeout", "20"],
        events(ids.clone()),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let s = summary(&out);
    assert_eq!(s["accepted"], 100);
    assert_eq!(s["delivered"], 100);
    assert_eq!(s["malformed"], 0);
    assert_eq!(s["dead_lettered"], 0);
    assert_eq!(s["pending"], 0);
    assert!(
        s["dropped"].as_object().unwrap().values().all(|v| v == 0),
        "{s}"
    );
    assert!(s["elapsed_ms"].is_u64());
    let ep = &s["endpoints"][0];
    assert_eq!(ep["name"], format!("{}", rx.addr()));
    assert_eq!(ep["metrics"]["delivered"], 100);
    let mut got = rx.ids();
    got.sort();
    let mut want = ids;
    want.sort();
    assert_eq!(got, want, "the receiver got every id exactly once");
    assert_eq!(rx.stats().duplicates, 0);
}

#[test]
fn malformed_lines_are_reported_by_number_and_fail_the_run() {
    let rx = Receiver::start(ReceiverConfig::default()).unwrap();
    let too_long = format!(r#"{{"id":"huge","pad":"{}"}}"#, "x".repeat(1 << 20));
    let input = [
        r#"{"id":"good-1"}"#,
        "{not json",
        "",
        r#"{"no_id":true}"#,
        r#"{"id":"good-2"}"#,
        r#"[1,2,3]"#,
        too_long.as_str(),
        r#"{"id":"good-3"}"#,
    ]
    .join("\n");
    let out = send(&["--endpoint", &rx.url(), "--timeout", "20"], input);
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    for n in [2, 4, 6, 7] {
        assert!(
            out.stderr.contains(&format!("line {n}: ")),
            "line {n} not reported: {}",
            out.stderr
        );
    }
    assert!(
        !out.stderr.contains("line 3:"),
        "a blank line is not malformed: {}",
        out.stderr
    );
    let s = summary(&out);
    assert!(
        out.stderr.contains("line 7: line is 1048598 bytes"),
        "{}",
        out.stderr
    );
    assert_eq!(s["malformed"], 4);
    assert_eq!(s["accepted"], 3);
    assert_eq!(s["delivered"], 3);
    let mut got = rx.ids();
    got.sort();
    assert_eq!(got, ["good-1", "good-2", "good-3"]);
}

#[test]
fn a_receiver_refusing_everything_dead_letters_and_exits_1() {
    // 400 is a permanent failure: no retries, straight to the dead letters.
    let rx = Receiver::start(ReceiverConfig::default().fail_for(Duration::from_secs(3600), 400))
        .unwrap();
    let ids: Vec<String> = (0..10).map(|i| format!("r-{i}")).collect();
    let out = send(&["--endpoint", &rx.url(), "--timeout", "20"], events(ids));
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    let s = summary(&out);
    assert_eq!(s["accepted"], 10);
    assert_eq!(s["delivered"], 0);
    assert_eq!(s["dead_lettered"], 10);
    assert_eq!(s["endpoints"][0]["metrics"]["statuses"]["400"], 10);
    assert!(rx.ids().is_empty());
}

#[test]
fn two_endpoints_each_get_every_event() {
    let (a, b) = (
        Receiver::start(ReceiverConfig::default()).unwrap(),
        Receiver::start(ReceiverConfig::default()).unwrap(),
    );
    let ids: Vec<String> = (0..20).map(|i| format!("f-{i}")).collect();
    let args = [
        "--endpoint",
        &a.url(),
        "--endpoint",
        &b.url(),
        "--batch",
        "5",
        "--timeout",
        "20",
    ];
    let out = send(&args, events(ids));
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let s = summary(&out);
    assert_eq!(
        (s["accepted"].as_u64(), s["delivered"].as_u64()),
        (Some(20), Some(40))
    );
    assert_eq!((a.stats().distinct, b.stats().distinct), (20, 20));
}

/// Runs `send` with bad options: it must exit 2 with a message naming `flag`, no panic.
fn rejects(args: &[&str], flag: &str) {
    common::assert_refused(args, &send(args, String::new()), flag);
}

#[test]
fn bad_flags_exit_2_and_name_the_flag() {
    let url = "http://127.0.0.1:9/hook";
    rejects(&[], "--endpoint");
    rejects(&["--endpoint", url, "--header", "NoColon"], "--header");
    rejects(&["--endpoint", url, "--overflow", "sideways"], "--overflow");
    rejects(&["--endpoint", url, "--batch", "lots"], "--batch");
    rejects(&["--endpoint", url, "--media-type", "v9"], "--media-type");
    rejects(
        &["--endpoint", url, "--secret", "whsec_not*base64"],
        "--secret",
    );
    rejects(&["--endpoint", url, "--frobnicate"], "--frobnicate");
    rejects(&["--endpoint", "ftp://127.0.0.1/"], "--endpoint");
    rejects(
        &["--endpoint", url, "--request-timeout", "0"],
        "--request-timeout",
    );
    rejects(&["--endpoint", url, "--name", "a", "--name", "b"], "--name");
}

#[test]
fn help_explains_the_options() {
    let out = send(&["--help"], String::new());
    assert_eq!(out.code, Some(0));
    let help = out.stdout;
    for flag in [
        "--endpoint",
        "--secret",
        "--header",
        "--overflow",
        "--timeout",
        "Exit code",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn signed_receiver() -> Receiver {
    Receiver::start(ReceiverConfig::default().secrets(vec![SECRET.parse().unwrap()])).unwrap()
}

#[test]
fn a_rejected_secret_is_never_printed() {
    let url = "http://127.0.0.1:9/hook";
    let leaky = "whsec_sup3rs3cretvalue*";
    let dir = common::TempDir::new("secret-file");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("secrets");
    std::fs::write(&file, format!("{SECRET}\n{leaky}\n")).unwrap();
    let file = file.to_str().unwrap();
    for (args, env, flag) in [
        (
            vec!["--endpoint", url, "--secret", leaky],
            vec![],
            "--secret",
        ),
        (
            vec!["--endpoint", url, "--secret", SECRET, "--secret", leaky],
            vec![],
            "--secret",
        ),
        (
            vec!["--endpoint", url, "--secret-file", file],
            vec![],
            "--secret-file",
        ),
        (
            vec!["--endpoint", url],
            vec![("HOOKWIRE_SECRET", leaky)],
            "HOOKWIRE_SECRET",
        ),
    ] {
        let mut argv = vec!["send"];
        argv.extend_from_slice(&args);
        let out = common::hookwire_env(&argv, &env, String::new(), Duration::from_secs(60));
        common::assert_refused(&argv, &out, flag);
        assert!(
            !out.stderr.contains("sup3rs3cret"),
            "{argv:?}: the secret is on stderr: {}",
            out.stderr
        );
    }
}

#[test]
fn secrets_come_from_a_file_or_the_environment() {
    let dir = common::TempDir::new("secret-ok");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("secrets");
    std::fs::write(&file, format!("\n{SECRET}\n")).unwrap();
    let file = file.to_str().unwrap();
    let from_file = signed_receiver();
    let out = send(
        &["--endpoint", &from_file.url(), "--secret-file", file],
        events(["f1".to_owned()]),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let from_env = signed_receiver();
    let out = common::hookwire_env(
        &["send", "--endpoint", &from_env.url()],
        &[("HOOKWIRE_SECRET", SECRET)],
        events(["e1".to_owned()]),
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    for rx in [&from_file, &from_env] {
        let s = rx.stats();
        assert_eq!(
            (s.distinct, s.bad_signatures),
            (1, 0),
            "signed and verified"
        );
    }
}

#[test]
fn with_signing_an_id_that_cannot_be_a_header_is_a_line_error() {
    let rx = signed_receiver();
    let input = "{\"id\":\"caf\u{e9}\"}\n{\"id\":\"ok\"}\n".to_owned();
    let out = send(&["--endpoint", &rx.url(), "--secret", SECRET], input);
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(
        out.stderr
            .contains("line 1: \"id\" \"caf\u{e9}\" cannot be signed"),
        "{}",
        out.stderr
    );
    let s = summary(&out);
    assert_eq!(
        (s["malformed"].as_u64(), s["accepted"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (s["delivered"].as_u64(), s["dead_lettered"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(rx.ids(), ["ok"]);
}

#[test]
fn round_trips_are_measured_as_they_are() {
    // Answered at once, then closed (as an HTTP/1.0 server does): each request opens a new
    // connection, and its answer is often read in the same worker turn that started it. Such
    // round trips were measured as 0 (p50 = 1 us); a loopback connect, request and answer
    // take tens of microseconds at the very least.
    let replies = (0..60).map(|_| Reply::status(200).close()).collect();
    let rx = Receiver::start(ReceiverConfig::default().statuses(replies)).unwrap();
    let ids: Vec<String> = (0..60).map(|i| format!("t-{i}")).collect();
    let out = send(&["--endpoint", &rx.url()], events(ids));
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let rtt = &summary(&out)["endpoints"][0]["metrics"]["rtt"];
    assert_eq!(rtt["count"], 60, "{rtt}");
    for p in ["p50_us", "p90_us"] {
        assert!(rtt[p].as_u64().unwrap() >= 10, "{p}: {rtt}");
    }
}

/// A loopback port nothing listens on (bound, then closed).
fn refused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    drop(l);
    url
}

#[test]
fn each_endpoint_says_why_it_did_not_deliver() {
    let ok = Receiver::start(ReceiverConfig::default()).unwrap();
    let moved = Receiver::start(
        ReceiverConfig::default().statuses(
            (0..3)
                .map(|_| Reply::status(301).location("https://new.example/hook"))
                .collect(),
        ),
    )
    .unwrap();
    let gone = Receiver::start(ReceiverConfig::default().fail_for(Duration::from_secs(3600), 410))
        .unwrap();
    let (_, chain, key) = common::test_pki();
    let tls = Receiver::start(ReceiverConfig::default().tls(chain, key)).unwrap();
    let refused = refused_url();
    let urls = [ok.url(), refused, moved.url(), gone.url(), tls.url()];
    let mut args = vec!["--max-attempts", "1", "--timeout", "3"];
    for u in &urls {
        args.extend(["--endpoint", u.as_str()]);
    }
    let out = send(&args, events((0..3).map(|i| format!("w-{i}"))));
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "one line of JSON: {}",
        out.stdout
    );
    assert!(
        out.stdout.starts_with("{\"results\":[{\"name\":"),
        "per-endpoint results come first: {}",
        out.stdout
    );
    let s = summary(&out);
    let r = s["results"].as_array().unwrap();
    assert_eq!(r.len(), 5);
    assert_eq!(
        (r[0]["ok"].as_bool(), r[0]["delivered"].as_u64()),
        (Some(true), Some(3))
    );
    assert!(r[0].get("last_error").is_none(), "{}", r[0]);
    let why = |i: usize, key: &str| r[i][key].as_str().unwrap_or_default().to_owned();
    for failed in &r[1..] {
        assert_eq!(
            (failed["ok"].as_bool(), failed["delivered"].as_u64()),
            (Some(false), Some(0))
        );
    }
    assert!(why(1, "last_error").contains("refused"), "{}", r[1]);
    assert!(
        why(2, "last_error").contains("301")
            && why(2, "last_error").contains("https://new.example/hook"),
        "{}",
        r[2]
    );
    assert!(why(3, "disabled").contains("410"), "{}", r[3]);
    assert!(
        why(3, "disabled").contains("since") && why(3, "disabled").contains("GMT"),
        "{}",
        r[3]
    );
    assert!(why(4, "last_error").contains("UnknownIssuer"), "{}", r[4]);
    // Said once on stderr, each failing endpoint on its own line.
    for (i, u) in urls.iter().enumerate().skip(1) {
        let name = u
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with(&format!("hookwire: {name}: delivered 0 of 3")))
            .collect();
        assert_eq!(lines.len(), 1, "endpoint {i}: {}", out.stderr);
    }
    assert!(
        !out.stderr.contains(&format!("hookwire: {}: ", ok.addr())),
        "{}",
        out.stderr
    );
}

#[test]
fn durations_take_units() {
    let rx = Receiver::start(ReceiverConfig::default()).unwrap();
    let args = [
        "--endpoint",
        &rx.url(),
        "--timeout",
        "1m",
        "--request-timeout",
        "2s",
        "--connect-timeout",
        "500ms",
        "--linger",
        "1ms",
        "--max-age",
        "1h",
        "--overflow",
        "block:5s",
    ];
    let out = send(&args, events((0..5).map(|i| format!("d-{i}"))));
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(summary(&out)["delivered"], 5);
    let url = rx.url();
    rejects(&["--endpoint", &url, "--timeout", "1500ms"], "--timeout");
    rejects(&["--endpoint", &url, "--linger", "soon"], "--linger");
}

#[test]
fn tls_trust_from_a_ca_file_the_system_store_or_an_explicit_insecure() {
    let (ca, chain, key) = common::test_pki();
    let dir = common::TempDir::new("ca-file");
    std::fs::create_dir_all(dir.path()).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let ca_file = ca_file.to_str().unwrap();
    let limit = Duration::from_secs(60);
    let run = |args: &[&str], env: &[(&str, &str)], id: &str| {
        let rx =
            Receiver::start(ReceiverConfig::default().tls(chain.clone(), key.clone())).unwrap();
        let url = rx.url();
        let mut argv = vec!["send", "--endpoint", url.as_str(), "--max-attempts", "1"];
        argv.extend_from_slice(args);
        let name = rx.addr().to_string();
        let argv: Vec<&str> = argv
            .into_iter()
            .map(|a| if a == "NAME" { name.as_str() } else { a })
            .collect();
        let out = common::hookwire_env(&argv, env, events([id.to_owned()]), limit);
        (out, rx.ids())
    };
    // Not trusted: the summary and stderr say why, and what to do.
    let (out, got) = run(&[], &[], "untrusted");
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(got.is_empty());
    assert!(
        out.stderr.contains("UnknownIssuer") && out.stderr.contains("--ca-file"),
        "{}",
        out.stderr
    );
    // A private CA from a file.
    let (out, got) = run(&["--ca-file", ca_file], &[], "ca-file");
    assert_eq!(
        (out.code, got),
        (Some(0), vec!["ca-file".to_owned()]),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("WARNING"), "{}", out.stderr);
    // The system store (rustls-native-certs reads SSL_CERT_FILE instead of the platform's).
    let (out, got) = run(&[], &[("SSL_CERT_FILE", ca_file)], "system");
    assert_eq!(
        (out.code, got),
        (Some(0), vec!["system".to_owned()]),
        "{}",
        out.stderr
    );
    // No verification for the endpoint named, loudly.
    let (out, got) = run(&["--insecure", "NAME"], &[], "insecure");
    assert_eq!(
        (out.code, got),
        (Some(0), vec!["insecure".to_owned()]),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("WARNING") && out.stderr.contains("NOT verified"),
        "{}",
        out.stderr
    );
    let url = "https://127.0.0.1:9/";
    rejects(
        &["--endpoint", url, "--insecure", "elsewhere:1"],
        "--insecure",
    );
    rejects(
        &["--endpoint", url, "--ca-file", "/no/such/ca.pem"],
        "--ca-file",
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    rejects(
        &["--endpoint", url, "--ca-file", junk.to_str().unwrap()],
        "--ca-file",
    );
}

/// Checks, for every endpoint, `events = delivered + dropped + dead_lettered + pending` and
/// that it took every accepted event; returns the sum of the endpoints' (delivered, dropped,
/// pending).
fn assert_accounted(s: &Value) -> (u64, u64, u64) {
    let accepted = s["accepted"].as_u64().unwrap();
    let (mut delivered, mut dropped, mut pending) = (0, 0, 0);
    for ep in s["endpoints"].as_array().unwrap() {
        let m = &ep["metrics"];
        let n = |k: &str| m[k].as_u64().unwrap();
        let d: u64 = m["dropped"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(
            n("events"),
            accepted,
            "every accepted event reached it: {s}"
        );
        assert_eq!(
            n("events"),
            n("delivered") + d + n("dead_lettered") + n("pending"),
            "{s}"
        );
        delivered += n("delivered");
        dropped += d;
        pending += n("pending");
    }
    (delivered, dropped, pending)
}

/// Issue 10, item 12: SIGINT in the middle of a run (stdin still open) stops the reading,
/// drains by --timeout, prints the summary with every accepted event accounted for (the ones
/// a hanging endpoint could not take are dropped as `shutdown`, not lost), and exits 130.
#[test]
fn sigint_stops_reading_drains_prints_the_summary_and_exits_130() {
    let ok = Receiver::start(ReceiverConfig::default()).unwrap();
    let hung = Receiver::start(ReceiverConfig::new().hang()).unwrap();
    let mut run = Live::start(&[
        "send",
        "--endpoint",
        &ok.url(),
        "--endpoint",
        &hung.url(),
        "--timeout",
        "1",
    ]);
    run.write(&events((0..100).map(|i| format!("s-{i}"))));
    // Mid-run: the input is not over (stdin stays open) and the healthy endpoint has them all.
    assert!(ok.wait_for_distinct(100, Duration::from_secs(20)));
    run.signal("INT");
    let out = run.finish(Duration::from_secs(20));
    assert_eq!(out.code, Some(130), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("SIGINT: stopped reading"),
        "{}",
        out.stderr
    );
    let s = summary(&out);
    assert_eq!(
        (s["accepted"].as_u64(), s["signal"].as_str()),
        (Some(100), Some("SIGINT"))
    );
    assert_eq!(s["unread_from_line"], 101, "{s}");
    let (delivered, dropped, pending) = assert_accounted(&s);
    assert_eq!(delivered, 100, "the healthy endpoint delivered all: {s}");
    assert_eq!(
        dropped + pending,
        100,
        "the hung endpoint's are reported: {s}"
    );
    assert_eq!(
        s["endpoints"][1]["metrics"]["dropped"]["shutdown"], 100,
        "{s}"
    );
}

/// Issue 10, item 12: a second signal while `send` drains exits at once (143 for SIGTERM).
#[test]
fn a_second_signal_exits_at_once() {
    let hung = Receiver::start(ReceiverConfig::new().hang()).unwrap();
    let mut run = Live::start(&["send", "--endpoint", &hung.url(), "--timeout", "60"]);
    run.write(&events((0..10).map(|i| format!("t-{i}"))));
    eventually("hookwire sends to the receiver", || {
        hung.stats().connections > 0
    });
    run.signal("TERM");
    eventually("the first SIGTERM is taken as a request to stop", || {
        run.stderr_so_far().contains("SIGTERM: stopped reading")
    });
    assert!(run.running(), "draining (up to --timeout 60), not dead");
    run.signal("TERM");
    // Well before the 60 s drain deadline.
    let out = run.finish(Duration::from_secs(10));
    assert_eq!(out.code, Some(143), "stderr: {}", out.stderr);
}

/// Issue 10, item 13: --timeout is a drain deadline after the input ends, so input that
/// streams for longer than --timeout (stdin open, a line now and then) is all read and
/// delivered.
#[test]
fn streaming_input_outlives_the_timeout() {
    let rx = Receiver::start(ReceiverConfig::default()).unwrap();
    let mut run = Live::start(&["send", "--endpoint", &rx.url(), "--timeout", "1"]);
    let start = std::time::Instant::now();
    for i in 0..8 {
        run.write(&events([format!("slow-{i}")]));
        // Each line is delivered while the input is still open.
        assert!(rx.wait_for_distinct(i + 1, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        start.elapsed() > Duration::from_secs(2),
        "longer than --timeout"
    );
    run.close_stdin();
    let out = run.finish(Duration::from_secs(20));
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    let s = summary(&out);
    assert_eq!(
        (s["accepted"].as_u64(), s["delivered"].as_u64()),
        (Some(8), Some(8))
    );
    assert!(s.get("unread_from_line").is_none(), "{s}");
}

/// Issue 10, item 19: an endpoint disabled by 410 Gone, with nothing else to wait for, ends
/// the run at once rather than after --timeout; what it held is reported.
#[test]
fn an_endpoint_gone_ends_the_run_at_once() {
    let gone = Receiver::start(ReceiverConfig::default().fail_for(Duration::from_secs(3600), 410))
        .unwrap();
    let ok = Receiver::start(ReceiverConfig::default()).unwrap();
    let started = std::time::Instant::now();
    let out = send(
        &[
            "--endpoint",
            &gone.url(),
            "--endpoint",
            &ok.url(),
            "--timeout",
            "40",
        ],
        events((0..20).map(|i| format!("g-{i}"))),
    );
    let took = started.elapsed();
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    assert!(
        took < Duration::from_secs(20),
        "waited for --timeout 40: {took:?}"
    );
    let s = summary(&out);
    let (delivered, dropped, _) = assert_accounted(&s);
    assert_eq!((delivered, dropped), (20, 20), "{s}");
    assert_eq!(s["endpoints"][0]["metrics"]["disabled"], true, "{s}");
    assert_eq!(s["endpoints"][0]["metrics"]["statuses"]["410"], 1, "{s}");
}

/// Issue 10, item 19: --capacity bounds what an endpoint holds, taken or still in the ring:
/// with a receiver that never answers and `--overflow reject`, exactly --capacity events are
/// taken and the rest refused (the engine's ring used to add up to its own size on top).
#[test]
fn capacity_holds_exactly() {
    let hung = Receiver::start(ReceiverConfig::new().hang()).unwrap();
    let out = send(
        &[
            "--endpoint",
            &hung.url(),
            "--capacity",
            "1000",
            "--overflow",
            "reject",
            "--timeout",
            "1",
        ],
        events((0..6000).map(|i| format!("c-{i}"))),
    );
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    let s = summary(&out);
    let m = &s["endpoints"][0]["metrics"];
    assert_eq!(s["accepted"], 1000, "{s}");
    assert_eq!(m["dropped"]["rejected"], 5000, "{s}");
    assert_eq!(m["dropped"]["shutdown"], 1000, "{s}");
    assert_eq!(s["publish_errors"], 5000, "{s}");
}

/// `hookwire send ARGS` with `input`, `RUST_LOG` set to `rust_log` (or unset).
fn send_with_log(args: &[&str], input: &str, rust_log: Option<&str>) -> Out {
    use std::io::Write;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hookwire"));
    cmd.arg("send").args(args);
    match rust_log {
        Some(v) => cmd.env("RUST_LOG", v),
        None => cmd.env_remove("RUST_LOG"),
    };
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    // Bounded: --timeout below, and a gone endpoint ends the run at once.
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Issue 10, item 10: the library's warnings reach stderr (the endpoint disabled by 410 is
/// one), and RUST_LOG filters them (`-v` levels: main.rs's unit tests).
#[test]
fn library_warnings_reach_stderr_and_rust_log_filters_them() {
    let gone = Receiver::start(ReceiverConfig::default().fail_for(Duration::from_secs(3600), 410))
        .unwrap();
    let input = events(["w-1".to_owned()]);
    let args = ["--endpoint", &gone.url(), "--timeout", "10"];
    let out = send_with_log(&args, &input, None);
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    let warning = format!("hookwire: warning: {}: disabled", gone.addr());
    assert!(out.stderr.contains(&warning), "{}", out.stderr);
    let out = send_with_log(&args, &input, Some("off"));
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    let out = send_with_log(&args, &input, Some("hookwire=error"));
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    assert!(
        !summary(&out)["endpoints"].as_array().unwrap().is_empty(),
        "the summary is unchanged"
    );
}

/// Issue 10, item 17: a progress line on stderr when it is a terminal (run under script(1),
/// which gives the command a pseudo-terminal), nothing of it when stderr is a pipe.
#[test]
fn progress_shows_on_a_terminal_and_stays_out_of_pipes() {
    let rx = Receiver::start(ReceiverConfig::default().delay(Duration::from_millis(30))).unwrap();
    let input = events((0..20).map(|i| format!("p-{i}")));
    let out = send(&["--endpoint", &rx.url(), "--timeout", "20"], input.clone());
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(
        !out.stderr.contains("delivered") && !out.stderr.contains('\x1b'),
        "a pipe gets no progress: {:?}",
        out.stderr
    );
    let script = std::path::Path::new("/usr/bin/script");
    if !script.exists() {
        eprintln!("skipped the terminal half: no /usr/bin/script to run hookwire under a pty");
        return;
    }
    let dir = common::TempDir::new("progress-tty");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, input).unwrap();
    // stdin from the file and stdout to /dev/null: only stderr is the terminal.
    let cmd = format!(
        "'{}' send --endpoint '{}' --timeout 20 < '{}' > /dev/null",
        env!("CARGO_BIN_EXE_hookwire"),
        rx.url(),
        file.display()
    );
    let tty = std::process::Command::new(script)
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert_eq!(tty.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("read ") && shown.contains("| delivered "),
        "no progress line on the terminal: {shown:?}"
    );
}

/// Issue 10, item 19: a full endpoint disabled by 410 makes no room, so with `--overflow
/// block` (the default) the rest of the input is refused for it at once (`dropped.failed`)
/// instead of each event waiting for room that cannot come.
#[test]
fn a_full_gone_endpoint_does_not_make_each_event_wait() {
    let gone = Receiver::start(ReceiverConfig::default().fail_for(Duration::from_secs(3600), 410))
        .unwrap();
    let started = std::time::Instant::now();
    let out = send(
        &[
            "--endpoint",
            &gone.url(),
            "--capacity",
            "100",
            "--timeout",
            "40",
        ],
        events((0..3000).map(|i| format!("f-{i}"))),
    );
    let took = started.elapsed();
    assert_eq!(
        out.code,
        Some(1),
        "stderr: {}",
        out.stderr.lines().last().unwrap_or("")
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    let s = summary(&out);
    let m = &s["endpoints"][0]["metrics"];
    let accepted = s["accepted"].as_u64().unwrap();
    assert_eq!(accepted, 100, "--capacity, held for good: {s}");
    assert_eq!(s["publish_errors"].as_u64(), Some(3000 - accepted), "{s}");
    assert_eq!(m["dropped"]["failed"], 2900, "{s}");
    assert!(
        out.stderr.contains("is disabled and full"),
        "{:?}",
        out.stderr.lines().take(3).collect::<Vec<_>>()
    );
}
