//! `hookwire bench` smoke runs (`--quick`): the JSON has the peer's keys and nothing was lost.
//! Each run is killed after a deadline.

mod common;

use std::time::Duration;

use common::hookwire;

use serde_json::Value;

/// Runs `hookwire bench ARGS` and returns its exit code and stdout; kills it after 300 s.
fn bench(args: &[&str]) -> (Option<i32>, String) {
    let args: Vec<&str> = std::iter::once("bench")
        .chain(args.iter().copied())
        .collect();
    let out = hookwire(&args, String::new(), Duration::from_secs(300));
    (out.code, out.stdout)
}

fn json(args: &[&str]) -> Value {
    let (code, out) = bench(args);
    assert_eq!(
        code,
        Some(0),
        "hookwire bench {args:?} failed; stdout: {out}"
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn number(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is missing or not a number in {v}"))
}

#[test]
fn fanout_smoke_has_the_peers_keys() {
    let v = json(&[
        "--scenario",
        "fanout_N4",
        "--quick",
        "--json",
        "--limit",
        "240",
    ]);
    for k in ["hookwire", "date", "nproc", "kernel", "reps"] {
        assert!(v["meta"][k].is_string(), "meta.{k} missing: {v}");
    }
    assert_eq!(number(&v, "fanout_N4.runs_ok"), 1.0);
    assert!(number(&v, "fanout_N4.writes_per_s") > 0.0);
    let deliveries = number(&v, "fanout_N4.deliveries_per_s");
    let writes = number(&v, "fanout_N4.writes_per_s");
    assert!(
        (deliveries / writes - 4.0).abs() < 0.01,
        "4 deliveries per write: {v}"
    );
    let (peak, above, events) = (
        number(&v, "fanout_N4.peak_rss_kb"),
        number(&v, "fanout_N4.rss_above_events_kb"),
        number(&v, "fanout_N4.prebuilt_events_kb"),
    );
    assert!(peak > 0.0 && events > 0.0 && above + events <= peak, "{v}");
}

#[test]
fn http_1_smoke_loses_nothing() {
    let v = json(&[
        "--scenario",
        "http_1",
        "--quick",
        "--json",
        "--limit",
        "240",
    ]);
    assert_eq!(number(&v, "http_1.runs_ok"), 1.0);
    assert!(number(&v, "http_1.delivered_per_s") > 0.0);
    assert_eq!(number(&v, "http_1.lost"), 0.0);
    assert_eq!(number(&v, "http_1.duplicates"), 0.0);
    assert!(number(&v, "http_1.connections") >= 1.0);
    assert_eq!(number(&v, "http_1.body_bytes"), 1158.0);
    // The peak holds the benchmark's pre-built events; what came on top of them is reported
    // apart, so the events are not taken for hookwire's memory.
    let (peak, above, events) = (
        number(&v, "http_1.peak_rss_kb"),
        number(&v, "http_1.rss_above_events_kb"),
        number(&v, "http_1.prebuilt_events_kb"),
    );
    assert!(peak > 0.0 && events > 0.0, "{v}");
    assert!(above + events <= peak, "{v}");
    assert!(v["meta"]["receiver"].as_str().unwrap().contains("testkit"));
}

#[test]
fn the_ceiling_runs_without_the_engine() {
    let v = json(&[
        "--scenario",
        "loopback_ceiling_c1",
        "--quick",
        "--json",
        "--limit",
        "240",
    ]);
    assert_eq!(number(&v, "loopback_ceiling_c1.runs_ok"), 1.0);
    assert!(number(&v, "loopback_ceiling_c1.req_per_s") > 0.0);
    assert_eq!(number(&v, "loopback_ceiling_c1.connections"), 1.0);
}

#[test]
fn a_bad_scenario_is_a_usage_error() {
    let (code, out) = bench(&["--scenario", "no_such_thing"]);
    assert_eq!(code, Some(2));
    assert!(out.is_empty());
    let (code, out) = bench(&["--list", "--scenario", "^dead"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 3, "{out}");
}
