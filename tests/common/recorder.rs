//! A loopback webhook receiver that records who sent each request and when: HTTP/1.1 with
//! keep-alive, `Content-Length` bodies, every request answered `200`. For each request it
//! keeps the moment it had been read whole, its `x-node` header, and the ids of the events in
//! its `{"events":[...]}` body (the test kit's `Receiver` does not expose headers). It may
//! wait a while before each answer, so a sender always has a request out and more to send.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// When it had been read whole.
    pub at: Instant,
    /// Its `x-node` header, if any.
    pub node: Option<String>,
    /// The ids of the events in its body, in order.
    pub ids: Vec<String>,
}

struct Inner {
    arrivals: Mutex<Vec<Arrival>>,
    stop: AtomicBool,
    /// How long it waits before each answer.
    delay: Duration,
    conns: Mutex<Vec<TcpStream>>,
}

/// A running recorder on `127.0.0.1`; its sockets are shut down when it is dropped.
pub struct Recorder {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Recorder {
    /// Binds `127.0.0.1:0` and starts answering at once.
    pub fn start() -> Recorder {
        Recorder::with_delay(Duration::ZERO)
    }

    /// Binds `127.0.0.1:0` and starts answering, each request `delay` after it was read.
    pub fn with_delay(delay: Duration) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            arrivals: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            delay,
            conns: Mutex::new(Vec::new()),
        });
        let i = inner.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                if i.stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(s) = s else { continue };
                if let Ok(c) = s.try_clone() {
                    i.conns.lock().unwrap().push(c);
                }
                let i = i.clone();
                std::thread::spawn(move || serve(s, &i));
            }
        });
        Recorder { addr, inner }
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.inner.arrivals.lock().unwrap().clone()
    }

    /// The distinct event ids received so far.
    pub fn ids(&self) -> std::collections::HashSet<String> {
        self.arrivals()
            .into_iter()
            .flat_map(|a| a.ids)
            .collect::<std::collections::HashSet<_>>()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        for c in self.inner.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Answers the requests of one connection until it closes or is malformed.
fn serve(s: TcpStream, inner: &Inner) {
    let mut out = match s.try_clone() {
        Ok(o) => o,
        Err(_) => return,
    };
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            return;
        }
        let (mut len, mut node, mut close) = (0usize, None, false);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((k, v)) = h.split_once(':') else {
                return;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "content-length" => len = v.parse().unwrap_or(0),
                "x-node" => node = Some(v.to_string()),
                "connection" => close = v.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let at = Instant::now();
        inner.arrivals.lock().unwrap().push(Arrival {
            at,
            node,
            ids: event_ids(&body),
        });
        std::thread::sleep(inner.delay);
        if out
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
            || close
        {
            return;
        }
    }
}

/// The `id` of each event of a `{"events":[...]}` body (strings, or numbers as text).
fn event_ids(body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    v["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| match &e["id"] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}
