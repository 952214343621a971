//! Several `hookwire serve` nodes sharing the machine's PostgreSQL (issue 12): a schema per
//! test run (dropped when done), the nodes' config file, and a plain HTTP client.
//!
//! The database is `HOOKWIRE_PG_URL` (default `host=127.0.0.1 port=5432 user=root
//! dbname=test`). Without one the tests say SKIPPED, unless `HOOKWIRE_REQUIRE_PG=1` (set by
//! `.ci/run`), where they fail.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::serve_child::ServeChild;

/// The database's connection string.
pub fn pg_url() -> String {
    std::env::var("HOOKWIRE_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=root dbname=test".into())
}

/// A schema of its own, dropped (with everything in it) when this is dropped.
pub struct Schema {
    pub name: String,
}

impl Schema {
    /// A fresh schema name, or `None` (SKIPPED printed) when there is no database and it is
    /// not required.
    pub fn new(test: &str) -> Option<Schema> {
        static N: AtomicU32 = AtomicU32::new(0);
        match postgres::Client::connect(&pg_url(), postgres::NoTls) {
            Ok(_) => {}
            Err(e) => {
                assert!(
                    std::env::var("HOOKWIRE_REQUIRE_PG").as_deref() != Ok("1"),
                    "HOOKWIRE_REQUIRE_PG=1 but PostgreSQL is unreachable at {}: {e}",
                    pg_url()
                );
                eprintln!("SKIPPED {test}: no PostgreSQL at {} ({e})", pg_url());
                return None;
            }
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Some(Schema {
            name: format!(
                "hookwire_it_{}_{}_{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ),
        })
    }

    /// Runs `sql` in the database (tests that read hookwire's tables).
    pub fn query(&self, sql: &str) -> Vec<postgres::Row> {
        let mut c = postgres::Client::connect(&pg_url(), postgres::NoTls).unwrap();
        c.query(&sql.replace("{schema}", &format!("\"{}\"", self.name)), &[])
            .unwrap()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&pg_url(), postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
        }
    }
}

/// Writes a node config: `database_url` (default `pg_url()`), the schema, a lease of
/// `lease_ms`, and one durable endpoint per `(name, url, extra TOML lines)`.
pub fn write_config(
    path: &std::path::Path,
    database_url: &str,
    schema: &Schema,
    lease_ms: u64,
    endpoints: &[(&str, String, &str)],
) {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\ndatabase_url = \"{database_url}\"\nschema = \"{}\"\nlease_ms = {lease_ms}\n",
        schema.name
    );
    for (name, url, extra) in endpoints {
        text.push_str(&format!(
            "\n[[endpoint]]\nname = \"{name}\"\nurl = \"{url}\"\nallow_private = true\n{extra}\n"
        ));
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Starts a node: `hookwire serve --config CONFIG --node NAME`.
pub fn node(config: &std::path::Path, name: &str) -> ServeChild {
    ServeChild::start(&["--config", config.to_str().unwrap(), "--node", name])
}

/// One request with `Connection: close`: `(status, body)`, or `None` if the node cannot be
/// reached or closed without answering (5 s timeouts, a safety net).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// Posts events `ids` as NDJSON; the status, or `None` (unreachable).
pub fn post(addr: SocketAddr, ids: &[String]) -> Option<u16> {
    let mut body = Vec::new();
    for id in ids {
        body.extend_from_slice(format!("{{\"id\":\"{id}\",\"action\":\"push\"}}\n").as_bytes());
    }
    http(addr, "POST", "/v1/events", &body).map(|(s, _)| s)
}

/// Each endpoint's lease holder as `addr`'s `/v1/endpoints` shows it.
pub fn holders(addr: SocketAddr) -> Option<Vec<(String, Option<String>)>> {
    let (status, body) = http(addr, "GET", "/v1/endpoints", b"")?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        v["endpoints"]
            .as_array()?
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or("").to_string(),
                    e["lease"]["owner"].as_str().map(str::to_string),
                )
            })
            .collect(),
    )
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `limit` (a safety net).
pub fn wait_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
