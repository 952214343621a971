//! The status page in a real browser: Debian's `chromium`, headless, loads `/` from a running
//! `hookwire serve` (the library's server), runs its script (which refreshes from
//! `/v1/status`), and the test checks the DOM it rendered against `/v1/endpoints`. A screenshot is saved
//! to `target/status-page.png` for a person to look at.
//!
//! Without chromium the test says SKIPPED and why, unless `HOOKWIRE_REQUIRE_CHROMIUM=1` (set
//! by `.ci/run`, which installs it).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use hookwire::serve::{ServeConfig, Server, service_endpoint};
use hookwire::testkit::{Receiver, ReceiverConfig, Reply};

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium_available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    let why = format!("{CHROMIUM} is missing: install Debian's chromium (.ci/run does)");
    assert!(
        std::env::var_os("HOOKWIRE_REQUIRE_CHROMIUM").is_none(),
        "{why}"
    );
    eprintln!("SKIPPED: {why}");
    false
}

/// Reads an HTTP/1.1 answer's body (`Connection: close`) for `GET path`.
fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).unwrap();
    let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    body.to_owned()
}

/// The value of `data-value` in the cell `field` of endpoint `name`'s row in `dom`.
fn cell(dom: &str, name: &str, field: &str) -> u64 {
    let row_start = dom
        .find(&format!(r#"<tr data-endpoint="{name}">"#))
        .unwrap_or_else(|| panic!("no row for {name} in {dom}"));
    let row = &dom[row_start..dom[row_start..].find("</tr>").unwrap() + row_start];
    let at = row
        .find(&format!(r#"data-field="{field}""#))
        .unwrap_or_else(|| panic!("no {field} in {row}"));
    let v = &row[at..];
    let v = &v[v.find("data-value=\"").unwrap() + 12..];
    v[..v.find('"').unwrap()].parse().unwrap()
}

#[test]
fn the_status_page_renders_what_the_api_says_in_a_real_browser() {
    if !chromium_available() {
        return;
    }
    // `hookwire serve` (the library's server) with two endpoints: one healthy, one gone.
    let dir = common::TempDir::new("status-page");
    let ok = Receiver::start(ReceiverConfig::default()).unwrap();
    let gone =
        Receiver::start(ReceiverConfig::default().statuses(vec![Reply::status(410)])).unwrap();
    let mut config = ServeConfig::new("127.0.0.1:0".parse().unwrap(), dir.path());
    for (name, url) in [("audit", ok.url()), ("legacy", gone.url())] {
        let mut e = service_endpoint(name, url);
        e.allow_private = true; // the receivers are on loopback
        config.add_endpoint(e).unwrap();
    }
    let server = Server::start(config).unwrap();
    let addr = server.local_addr();
    let body: String = (0..25)
        .map(|i| format!("{{\"id\":\"e{i}\",\"action\":\"push\"}}\n"))
        .collect();
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(
        c,
        "POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut c, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    common::eventually("audit has every event and legacy is disabled", || {
        let v: serde_json::Value = serde_json::from_str(&get(addr, "/v1/endpoints")).unwrap();
        v["endpoints"][0]["delivered"] == 25 && v["endpoints"][1]["state"] == "disabled"
    });
    let url = format!("http://{addr}/");

    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=4000",
            "--dump-dom",
            &url,
        ])
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    // The script ran and refreshed from the API (it marks the body when it has).
    assert!(
        dom.contains("data-refreshed="),
        "the script did not run: {dom}"
    );
    // What the page shows is what the admin API says (the endpoints are quiet now).
    let api: serde_json::Value = serde_json::from_str(&get(addr, "/v1/endpoints")).unwrap();
    for ep in api["endpoints"].as_array().unwrap() {
        let name = ep["name"].as_str().unwrap();
        assert_eq!(
            cell(&dom, name, "delivered"),
            ep["delivered"].as_u64().unwrap()
        );
        assert_eq!(
            cell(&dom, name, "queue_depth"),
            ep["queue_depth"].as_u64().unwrap()
        );
        let breaker = ep["breaker"].as_str().unwrap_or("-");
        assert!(
            dom.contains(&format!(r#"<td data-field="breaker">{breaker}</td>"#)),
            "{name}: {breaker}"
        );
    }
    let status: serde_json::Value = serde_json::from_str(&get(addr, "/v1/status")).unwrap();
    for ep in status.as_array().unwrap() {
        let m = &ep["metrics"];
        let failed = m["failures"].as_u64().unwrap() + m["errors"].as_u64().unwrap();
        assert_eq!(cell(&dom, ep["name"].as_str().unwrap(), "failed"), failed);
    }
    assert_eq!(cell(&dom, "audit", "delivered"), 25);
    assert!(dom.contains("disabled: "), "legacy's 410 is shown: {dom}");

    // A picture for people: the same page, screenshotted.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let status = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1100,520",
            "--virtual-time-budget=4000",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .output()
        .expect("run chromium");
    assert!(status.status.success(), "{status:?}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
    let _ = server.shutdown();
}
