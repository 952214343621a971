//! The status page in a real browser: Debian's `chromium`, headless, loads it from a running
//! HTTP server over a live dispatcher, runs its script (which refreshes from the JSON API),
//! and the test checks the DOM it rendered against the API's figures. A screenshot is saved
//! to `target/status-page.png` for a person to look at.
//!
//! Without chromium the test says SKIPPED and why, unless `HOOKWIRE_REQUIRE_CHROMIUM=1` (set
//! by `.ci/run`, which installs it).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hookwire::endpoint::EndpointConfig;
use hookwire::engine::Dispatcher;
use hookwire::stats::render_status_page;
use hookwire::testkit::{Receiver, ReceiverConfig, Reply};

use common::event;

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

/// Serves `/` (the page) and `/v1/endpoints` (the snapshots as JSON) from `d`, one request
/// per connection, on a thread that lives as long as the test process.
fn serve(d: Arc<Dispatcher>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let (ctype, body) = match path {
                "/v1/endpoints" => (
                    "application/json",
                    serde_json::to_string(&d.snapshot()).unwrap(),
                ),
                _ => (
                    "text/html; charset=utf-8",
                    render_status_page(&d.snapshot(), "/v1/endpoints"),
                ),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
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
    let ok = Receiver::start(ReceiverConfig::default()).unwrap();
    let gone =
        Receiver::start(ReceiverConfig::default().statuses(vec![Reply::status(410)])).unwrap();
    let d = Arc::new(Dispatcher::builder().workers(1).build().unwrap());
    d.add_endpoint(EndpointConfig::new("audit", ok.url()))
        .unwrap();
    d.add_endpoint(EndpointConfig::new("legacy", gone.url()))
        .unwrap();
    for i in 0..25 {
        d.publish_raw(event(i)).unwrap();
    }
    common::eventually("audit has every event and legacy is disabled", || {
        let s = d.snapshot();
        s[0].metrics.delivered == 25 && s[1].metrics.disabled
    });
    let url = serve(d.clone());

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
    let api: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&d.snapshot()).unwrap()).unwrap();
    for ep in api.as_array().unwrap() {
        let name = ep["name"].as_str().unwrap();
        let m = &ep["metrics"];
        assert_eq!(
            cell(&dom, name, "delivered"),
            m["delivered"].as_u64().unwrap()
        );
        assert_eq!(cell(&dom, name, "pending"), m["pending"].as_u64().unwrap());
        let failed = m["failures"].as_u64().unwrap() + m["errors"].as_u64().unwrap();
        assert_eq!(cell(&dom, name, "failed"), failed, "{name}");
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
    let _ = Arc::try_unwrap(d).map(|d| d.shutdown(Duration::from_secs(1)));
}
