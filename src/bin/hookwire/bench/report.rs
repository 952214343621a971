//! Medians over repetitions, and their two renderings: a table for people and one flat JSON
//! object with the Go peer's keys (`<id>.<key>`, `<id>.runs_ok`, and a `meta` object).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{BenchArgs, Spec};

/// What one run of a scenario reported: key -> value.
pub(crate) type Run = BTreeMap<String, f64>;

/// One figure over the runs that reported it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stat {
    /// The key after `<id>.`.
    pub(crate) key: String,
    /// The table's label.
    pub(crate) label: String,
    /// Decimals in the table.
    pub(crate) prec: usize,
    /// `(median, min, max)`, or `None` if no successful run reported it.
    pub(crate) value: Option<(f64, f64, f64)>,
    /// Not one of the spec's figures: in the JSON only, not in the table.
    pub(crate) extra: bool,
}

/// One scenario's medians.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// The scenario.
    pub(crate) spec: &'static Spec,
    /// Runs attempted.
    pub(crate) runs: usize,
    /// Runs that reported a result.
    pub(crate) ok: usize,
    /// The spec's figures first, in its order, then any other key a run reported, by name.
    pub(crate) stats: Vec<Stat>,
}

/// The median (the mean of the middle two for an even count). `NaN` for no values.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn stat(key: &str, label: &str, prec: usize, extra: bool, runs: &[&Run]) -> Stat {
    let vs: Vec<f64> = runs.iter().filter_map(|r| r.get(key).copied()).collect();
    let value = (!vs.is_empty()).then(|| {
        let lo = vs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = vs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (median(&vs), lo, hi)
    });
    Stat {
        key: key.to_owned(),
        label: label.to_owned(),
        prec,
        value,
        extra,
    }
}

/// Medians per scenario; `runs[i]` are the runs of `specs[i]` (`None` = failed).
pub(crate) fn summarize(specs: &[&'static Spec], runs: &[Vec<Option<Run>>]) -> Vec<Row> {
    specs
        .iter()
        .zip(runs)
        .map(|(spec, rs)| {
            let ok: Vec<&Run> = rs.iter().flatten().collect();
            let mut stats: Vec<Stat> = spec
                .metrics
                .iter()
                .map(|m| stat(m.key, m.label, m.prec, false, &ok))
                .collect();
            let extra: std::collections::BTreeSet<&String> = ok
                .iter()
                .flat_map(|r| r.keys())
                .filter(|k| spec.metrics.iter().all(|m| m.key != k.as_str()))
                .collect();
            stats.extend(extra.into_iter().map(|k| stat(k, k, 3, true, &ok)));
            Row {
                spec,
                runs: rs.len(),
                ok: ok.len(),
                stats,
            }
        })
        .collect()
}

/// `1234567.891` with `prec` 0 -> `1,234,568`; non-finite -> `NA`.
pub(crate) fn fmt_num(v: f64, prec: usize) -> String {
    if !v.is_finite() {
        return "NA".into();
    }
    let s = format!("{:.*}", prec, v.abs());
    let (int, frac) = s.split_at(s.find('.').unwrap_or(s.len()));
    let mut out = String::new();
    if v < 0.0 && s.bytes().any(|b| b.is_ascii_digit() && b != b'0') {
        out.push('-');
    }
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out + frac
}

/// A JSON number as the peer writes it: whole numbers without decimals, others with 3;
/// non-finite or missing as `null`.
pub(crate) fn json_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v == v.trunc() && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) if v.is_finite() => format!("{v:.3}"),
        _ => "null".into(),
    }
}

/// The Markdown table of medians (the spec's figures; the JSON has every key).
pub(crate) fn table(rows: &[Row]) -> String {
    let mut t = String::from("| scenario id | what | metric | median | min .. max | runs ok |\n");
    t.push_str("|---|---|---|---:|---:|---:|\n");
    for row in rows {
        for (i, s) in row.stats.iter().filter(|s| !s.extra).enumerate() {
            let (id, desc, ok) = if i == 0 {
                (
                    row.spec.id,
                    row.spec.desc,
                    format!("{}/{}", row.ok, row.runs),
                )
            } else {
                ("", "", String::new())
            };
            let (med, range) = match s.value {
                Some((m, lo, hi)) => (
                    fmt_num(m, s.prec),
                    format!("{} .. {}", fmt_num(lo, s.prec), fmt_num(hi, s.prec)),
                ),
                None => ("NA".into(), String::new()),
            };
            let _ = writeln!(
                t,
                "| {id} | {desc} | {} | {med} | {range} | {ok} |",
                s.label
            );
        }
    }
    t
}

/// Where the HTTP scenarios delivered, in words.
pub(crate) fn receiver_note(target: Option<&str>) -> String {
    match target {
        Some(t) => format!("--target {t} (a separate process)"),
        None => "hookwire's testkit receiver, inside each scenario's own process".into(),
    }
}

/// The `meta` object: what ran, where, when.
#[derive(Debug, Clone)]
pub(crate) struct Meta(pub(crate) Vec<(&'static str, String)>);

impl Meta {
    /// Reads the machine and the options.
    pub(crate) fn collect(args: &BenchArgs) -> Self {
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Meta(vec![
            ("hookwire", env!("CARGO_PKG_VERSION").to_owned()),
            ("date", utc_date(now)),
            ("nproc", nproc.to_string()),
            ("kernel", kernel()),
            ("reps", args.reps.to_string()),
            ("quick", args.quick.to_string()),
            ("receiver", receiver_note(args.target.as_deref())),
            (
                "events",
                "pre-built RawEvents: encoding is not timed (see publish_latency_N4.encode_ns)"
                    .to_owned(),
            ),
        ])
    }
}

/// `uname -sr`, else `/proc/sys/kernel/osrelease`, else `unknown`.
fn kernel() -> String {
    let out = std::process::Command::new("uname").arg("-sr").output();
    if let Ok(o) = out
        && o.status.success()
    {
        return String::from_utf8_lossy(&o.stdout).trim().to_owned();
    }
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Walk the years, then the months: at most a few hundred steps, and plainly right.
    let mut year = 1970u64;
    let mut d = days;
    loop {
        let len = if is_leap(year) { 366 } else { 365 };
        if d < len {
            break;
        }
        d -= len;
        year += 1;
    }
    let feb = if is_leap(year) { 29 } else { 28 };
    let lens = [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut month = 0;
    while d >= lens[month] {
        d -= lens[month];
        month += 1;
    }
    format!(
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        month + 1,
        d + 1,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn is_leap(y: u64) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

/// The JSON object: `meta`, then for every scenario `<id>.runs_ok` and `<id>.<key>` medians.
pub(crate) fn json(meta: &Meta, rows: &[Row]) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut out = String::from("{\n  \"meta\": {");
    for (i, (k, v)) in meta.0.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, "{sep}\n    {}: {}", q(k), q(v));
    }
    out.push_str("\n  }");
    for row in rows {
        let _ = write!(
            out,
            ",\n  {}: {}",
            q(&format!("{}.runs_ok", row.spec.id)),
            row.ok
        );
        for s in &row.stats {
            let key = q(&format!("{}.{}", row.spec.id, s.key));
            let _ = write!(out, ",\n  {key}: {}", json_num(s.value.map(|v| v.0)));
        }
    }
    out.push_str("\n}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::SPECS;

    fn run(pairs: &[(&str, f64)]) -> Option<Run> {
        Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
    }

    fn spec(id: &str) -> &'static Spec {
        SPECS.iter().find(|s| s.id == id).unwrap()
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn numbers_format_like_the_peers() {
        assert_eq!(fmt_num(1_234_567.891, 0), "1,234,568");
        assert_eq!(fmt_num(999.5, 1), "999.5");
        assert_eq!(fmt_num(-1234.0, 0), "-1,234");
        assert_eq!(fmt_num(f64::NAN, 0), "NA");
        assert_eq!(json_num(Some(3.0)), "3");
        assert_eq!(json_num(Some(2.5)), "2.500");
        assert_eq!(json_num(None), "null");
        assert_eq!(json_num(Some(f64::INFINITY)), "null");
    }

    #[test]
    fn summary_takes_medians_of_successful_runs_and_keeps_extras() {
        let s = spec("http_1");
        let runs = vec![vec![
            run(&[("delivered_per_s", 100.0), ("lost", 0.0), ("total_s", 2.0)]),
            None,
            run(&[("delivered_per_s", 300.0), ("lost", 0.0), ("total_s", 4.0)]),
        ]];
        let rows = summarize(&[s], &runs);
        assert_eq!((rows[0].runs, rows[0].ok), (3, 2));
        let first = &rows[0].stats[0];
        assert_eq!(first.key, "delivered_per_s");
        assert_eq!(first.value, Some((200.0, 100.0, 300.0)));
        let dup = rows[0]
            .stats
            .iter()
            .find(|s| s.key == "duplicates")
            .unwrap();
        assert_eq!(
            dup.value, None,
            "a key no run reported is missing, not zero"
        );
        assert_eq!(rows[0].stats.last().unwrap().key, "total_s");

        let meta = Meta(vec![
            ("hookwire", "0.1.0".into()),
            ("kernel", "Linux \"6\"".into()),
        ]);
        let text = json(&meta, &rows);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["meta"]["kernel"], "Linux \"6\"");
        assert_eq!(v["http_1.runs_ok"], 2);
        assert_eq!(v["http_1.delivered_per_s"], 200);
        assert_eq!(v["http_1.lost"], 0);
        assert!(v["http_1.duplicates"].is_null());
        assert_eq!(v["http_1.total_s"], 3);

        let t = table(&rows);
        assert!(t.contains("| http_1 | "), "{t}");
        assert!(t.contains("| 200 | 100 .. 300 | 2/3 |"), "{t}");
        assert!(!t.contains("total_s"), "extras are for the JSON: {t}");
    }

    #[test]
    fn dates_are_utc_iso() {
        assert_eq!(utc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_date(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn meta_names_the_machine() {
        let args = BenchArgs {
            scenario: Some("all".into()),
            json: true,
            target: None,
            reps: 3,
            quick: false,
            progress: false,
            limit: 600,
            list: false,
        };
        let m = Meta::collect(&args);
        let get = |k: &str| {
            m.0.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("reps").as_deref(), Some("3"));
        assert!(get("nproc").unwrap().parse::<usize>().unwrap() >= 1);
        assert!(!get("kernel").unwrap().is_empty());
        assert!(get("receiver").unwrap().contains("testkit"));
    }
}
