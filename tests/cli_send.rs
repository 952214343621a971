//! `hookwire send` as a user runs it: the binary, NDJSON on stdin, the test kit receiver in
//! this process. Every run is killed after a deadline, so no test can hang.

mod common;

use std::time::Duration;

use common::{Out, hookwire};

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
