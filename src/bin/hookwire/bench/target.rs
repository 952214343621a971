//! Where the HTTP scenarios deliver: the test kit receiver in this process, or a receiver
//! given with `--target URL` (the Go peer's `-mode receiver`), read through its `/stats` and
//! zeroed with `/reset`.

use std::time::{Duration, Instant};

use hookwire::Error;
use hookwire::testkit::{Receiver, ReceiverConfig, ReceiverStats};
use serde_json::Value;

use super::failed;
use super::progress::Progress;

/// A receiver to deliver to.
pub(crate) enum Target {
    /// The test kit receiver, started in this process.
    Local(Receiver),
    /// A receiver in another process, by its base URL (`http://127.0.0.1:18080`).
    Remote {
        /// The base URL, without a trailing `/`.
        base: String,
        /// The agent for `/stats` and `/reset`.
        agent: ureq::Agent,
    },
}

/// What a receiver counted, in the peer's terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counted {
    /// Distinct event ids answered 2xx.
    pub(crate) unique: u64,
    /// Event ids answered 2xx more than once.
    pub(crate) duplicates: u64,
    /// TCP connections accepted.
    pub(crate) connections: u64,
    /// Delivery requests read.
    pub(crate) requests: u64,
    /// Requests answered 2xx.
    pub(crate) accepted_requests: u64,
    /// Requests answered otherwise (or refused).
    pub(crate) non2xx: u64,
    /// For the Go receiver: first 2xx minus the end of its `-fail-first` window, in ms.
    pub(crate) first_2xx_after_outage_ms: Option<f64>,
    /// For the Go receiver: its `-fail-first` window, in ms (0 when it has none).
    pub(crate) fail_first_ms: f64,
    /// For the Go receiver: CPU it used (user + system), in seconds.
    pub(crate) cpu_s: Option<f64>,
}

impl Counted {
    /// From the test kit's counters. `outage` is the `fail_for` window the receiver was given.
    pub(crate) fn from_testkit(s: &ReceiverStats, outage: Option<Duration>) -> Self {
        let ok: u64 = s.statuses.range(200..300).map(|(_, n)| n).sum();
        let all: u64 = s.statuses.values().sum();
        Counted {
            unique: s.distinct,
            duplicates: s.duplicates,
            connections: s.connections,
            requests: s.requests,
            accepted_requests: ok,
            non2xx: all - ok,
            first_2xx_after_outage_ms: outage.and_then(|w| {
                s.first_2xx_after_fault
                    .map(|d| (d.as_secs_f64() - w.as_secs_f64()) * 1e3)
            }),
            fail_first_ms: outage.map_or(0.0, |w| w.as_secs_f64() * 1e3),
            cpu_s: None,
        }
    }

    /// From the Go receiver's `/stats` JSON (README: "Stats fields").
    pub(crate) fn from_go_stats(v: &Value) -> Result<Self, Error> {
        let int = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| failed(format!("receiver /stats has no integer `{k}`: {v}")))
        };
        let float = |k: &str| v.get(k).and_then(Value::as_f64);
        let after = float("first_2xx_after_outage_ms").filter(|ms| *ms >= 0.0);
        let cpu = match (float("cpu_user_s"), float("cpu_sys_s")) {
            (Some(u), Some(s)) => Some(u + s),
            _ => None,
        };
        Ok(Counted {
            unique: int("unique_ids")?,
            duplicates: int("duplicates")?,
            connections: int("connections")?,
            requests: int("requests")?,
            accepted_requests: int("accepted_requests")?,
            non2xx: int("rejected_requests")? + int("parse_errors").unwrap_or(0),
            first_2xx_after_outage_ms: after,
            fail_first_ms: float("fail_first_ms").unwrap_or(0.0),
            cpu_s: cpu,
        })
    }
}

impl Target {
    /// `--target URL` if given, else a test kit receiver with `config` in this process.
    pub(crate) fn open(target: Option<&str>, config: ReceiverConfig) -> Result<Target, Error> {
        match target {
            None => Ok(Target::Local(Receiver::start(config)?)),
            Some(url) => {
                let base = url.trim_end_matches('/').to_owned();
                if !base.starts_with("http://") {
                    return Err(Error::config(
                        "--target",
                        format!("{url:?} is not an http:// URL"),
                    ));
                }
                let config = ureq::Agent::config_builder()
                    .proxy(None)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build();
                let t = Target::Remote {
                    base,
                    agent: ureq::Agent::new_with_config(config),
                };
                t.reset()?;
                Ok(t)
            }
        }
    }

    /// The URL events are posted to.
    pub(crate) fn delivery_url(&self) -> String {
        match self {
            Target::Local(r) => r.url(),
            Target::Remote { base, .. } => format!("{base}/events"),
        }
    }

    /// Zeroes a remote receiver's counters (a local one is started fresh instead).
    pub(crate) fn reset(&self) -> Result<(), Error> {
        if let Target::Remote { base, agent } = self {
            agent
                .post(format!("{base}/reset"))
                .send_empty()
                .map_err(|e| failed(format!("POST {base}/reset: {e}")))?;
        }
        Ok(())
    }

    /// What the receiver counted so far. `outage` is the local receiver's `fail_for` window.
    pub(crate) fn counted(&self, outage: Option<Duration>) -> Result<Counted, Error> {
        match self {
            Target::Local(r) => Ok(Counted::from_testkit(&r.stats(), outage)),
            Target::Remote { base, agent } => {
                let text = agent
                    .get(format!("{base}/stats"))
                    .call()
                    .and_then(|mut r| r.body_mut().read_to_string())
                    .map_err(|e| failed(format!("GET {base}/stats: {e}")))?;
                let v: Value = serde_json::from_str(&text)?;
                Counted::from_go_stats(&v)
            }
        }
    }

    /// Waits until the receiver has `n` distinct ids or `deadline` passes, updating
    /// `progress`. Returns the counts and when they were seen.
    pub(crate) fn wait_counted(
        &self,
        n: u64,
        deadline: Instant,
        outage: Option<Duration>,
        progress: &Progress,
    ) -> Result<(Counted, Instant), Error> {
        loop {
            if let Target::Local(r) = self {
                // Event-driven; wakes at least every 100 ms to update the progress line.
                let step = deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100));
                r.wait_for_distinct(n, step);
            }
            let seen = Instant::now();
            let c = self.counted(outage)?;
            progress.set(c.unique);
            if c.unique >= n || seen >= deadline {
                return Ok((c, seen));
            }
            if let Target::Remote { .. } = self {
                std::thread::sleep(Duration::from_millis(2)); // the peer polls as often
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn testkit_counts_map_to_the_peers_terms() {
        let s = ReceiverStats {
            connections: 2,
            requests: 10,
            events: 8,
            distinct: 7,
            duplicates: 1,
            statuses: BTreeMap::from([(200, 8), (500, 2)]),
            first_2xx_after_fault: Some(Duration::from_millis(1250)),
            ..ReceiverStats::default()
        };
        let c = Counted::from_testkit(&s, Some(Duration::from_secs(1)));
        assert_eq!((c.unique, c.duplicates, c.connections), (7, 1, 2));
        assert_eq!((c.requests, c.accepted_requests, c.non2xx), (10, 8, 2));
        let after = c.first_2xx_after_outage_ms.unwrap();
        assert!((after - 250.0).abs() < 1e-6, "{after}");
        assert_eq!(c.fail_first_ms, 1000.0);
        assert_eq!(
            Counted::from_testkit(&s, None).first_2xx_after_outage_ms,
            None
        );
    }

    #[test]
    fn go_stats_parse() {
        let v = serde_json::json!({
            "requests": 12, "accepted_requests": 10, "rejected_requests": 2, "parse_errors": 0,
            "unique_ids": 10, "duplicates": 0, "connections": 12,
            "first_2xx_after_outage_ms": 3.5, "fail_first_ms": 1000.0,
            "cpu_user_s": 1.25, "cpu_sys_s": 0.75
        });
        let c = Counted::from_go_stats(&v).unwrap();
        assert_eq!((c.unique, c.non2xx, c.connections), (10, 2, 12));
        assert_eq!(c.first_2xx_after_outage_ms, Some(3.5));
        assert_eq!(c.cpu_s, Some(2.0));
        let mut v2 = v.clone();
        v2["first_2xx_after_outage_ms"] = serde_json::json!(-1);
        assert_eq!(
            Counted::from_go_stats(&v2)
                .unwrap()
                .first_2xx_after_outage_ms,
            None
        );
        let err = Counted::from_go_stats(&serde_json::json!({"requests": 1})).unwrap_err();
        assert!(err.to_string().contains("unique_ids"), "{err}");
    }

    #[test]
    fn a_target_must_be_http() {
        let e = Target::open(Some("ftp://x"), ReceiverConfig::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("--target"), "{e}");
    }

    /// A stand-in for the Go receiver's control paths: answers `n` requests, one connection
    /// each, and returns the request lines it saw.
    fn fake_go_receiver(n: usize) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..n {
                let (mut s, _) = listener.accept().unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let mut h = String::new();
                while r.read_line(&mut h).unwrap() > 2 {
                    h.clear();
                }
                let body = if line.starts_with("GET /stats ") {
                    r#"{"requests":3,"accepted_requests":2,"rejected_requests":1,"parse_errors":0,"unique_ids":2,"duplicates":0,"connections":1,"fail_first_ms":1000,"first_2xx_after_outage_ms":12.5,"cpu_user_s":0.5,"cpu_sys_s":0.25}"#
                } else {
                    r#"{"reset":true}"#
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).unwrap();
                seen.push(line.trim().to_owned());
            }
            seen
        });
        (base, server)
    }

    #[test]
    fn a_remote_target_is_reset_then_read() {
        let (base, server) = fake_go_receiver(2);
        let t = Target::open(Some(&format!("{base}/")), ReceiverConfig::default()).unwrap();
        assert_eq!(t.delivery_url(), format!("{base}/events"));
        let c = t.counted(None).unwrap();
        assert_eq!((c.unique, c.non2xx, c.fail_first_ms), (2, 1, 1000.0));
        assert_eq!(c.first_2xx_after_outage_ms, Some(12.5));
        assert_eq!(c.cpu_s, Some(0.75));
        let seen = server.join().unwrap();
        assert_eq!(seen, ["POST /reset HTTP/1.1", "GET /stats HTTP/1.1"]);
    }

    #[test]
    fn an_unreachable_target_is_an_error_not_a_hang() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = Target::open(
            Some(&format!("http://127.0.0.1:{port}")),
            ReceiverConfig::default(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("/reset"), "{e}");
    }

    #[test]
    fn local_target_counts_nothing_at_first() {
        let t = Target::open(None, ReceiverConfig::default()).unwrap();
        assert!(t.delivery_url().starts_with("http://127.0.0.1:"));
        let p = Progress::disabled();
        let deadline = Instant::now() + Duration::from_millis(50);
        let (c, _) = t.wait_counted(1, deadline, None, &p).unwrap();
        assert_eq!(c, Counted::default());
    }
}
