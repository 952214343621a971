//! A scripted raw-TCP server that misbehaves in one chosen way: the other end of the tests
//! and benchmarks of the engine's HTTP client against broken or hostile receivers.
//!
//! The [`Receiver`](super::Receiver) is a well-behaved webhook receiver with a fault plan
//! made of HTTP answers (statuses, hangs, dropped connections). A [`Hostile`] server is for
//! what a receiver's *bytes* can do to a client: answers that never end, heads past any
//! bound, bytes that trickle, informational answers, a TLS handshake that never starts.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::policy::Wakeup;

use super::server::Server;

/// A request head longer than this ends the connection (the server reads requests only to
/// know when to answer).
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// One write of an endless answer.
const WRITE: usize = 64 * 1024;

/// How a [`Hostile`] server answers every request (after reading it whole).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Behaviour {
    /// `200`, `Transfer-Encoding: chunked`, then a chunk-size line that never ends
    /// (`1111...`), written as fast as the socket takes it until the client goes away.
    EndlessChunkSize,
    /// `200`, chunked, one chunk announced as `7fffffffffffffff` bytes, then its data as fast
    /// as the socket takes it, without end.
    EndlessChunkBody,
    /// `200` with `Content-Length: len` and that many bytes, written as fast as the socket
    /// takes them (the client may close early); then the next request on the connection.
    LargeBody {
        /// The body's length.
        len: u64,
    },
    /// `200` with `count` headers (`x-header-NNNNN: value`) before `content-length: 0`.
    ManyHeaders {
        /// How many headers.
        count: usize,
    },
    /// A complete `200` answer with a 2-byte body, one byte every `every`.
    Trickle {
        /// The pause before each byte.
        every: Duration,
    },
    /// `100 Continue`, then `103 Early Hints` (with a `link` header), then `201` with a
    /// 2-byte body, each written on its own.
    Informational,
    /// `200` with `connection: close` and no length: `len` body bytes, then the server
    /// closes (the end of the body).
    CloseDelimited {
        /// The body's length.
        len: usize,
    },
    /// Accepts the connection, reads whatever comes (a TLS `ClientHello` included) and never
    /// writes a byte.
    Silent,
}

/// What a [`Hostile`] server has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostileStats {
    /// Connections accepted.
    pub connections: u64,
    /// Requests read whole (the `Silent` server reads none).
    pub requests: u64,
    /// Answer bytes the kernel took from it (a client that stops reading stops this).
    pub bytes_written: u64,
}

struct Shared {
    behaviour: Behaviour,
    stop: Arc<Wakeup>,
    connections: AtomicU64,
    requests: AtomicU64,
    written: AtomicU64,
}

/// A running loopback server on `127.0.0.1` that answers every request with one
/// [`Behaviour`], one thread per connection. What it promises:
/// - **It reads each request whole** (head, and a body by `Content-Length`) before it
///   answers, so a client sees its request taken, then the answer. `Silent` reads and never
///   answers.
/// - **Endless answers end with the client**: a writer stops at the first failed write (the
///   client closed or reset the connection) and counts what the kernel took
///   ([`HostileStats::bytes_written`]), so a test can show the client stopped reading early.
/// - **Shutdown never hangs**: [`Hostile::shutdown`] (and `Drop`) stop accepting, shut down
///   every open socket (which ends blocked reads and writes), cut every trickle's pause
///   short, and join the threads.
pub struct Hostile {
    shared: Arc<Shared>,
    server: Server,
}

impl std::fmt::Debug for Hostile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hostile")
            .field("addr", &self.server.addr())
            .field("behaviour", &self.shared.behaviour)
            .finish_non_exhaustive()
    }
}

impl Hostile {
    /// Binds `127.0.0.1:0` and starts answering with `behaviour`. Fails only if the socket
    /// cannot be bound or the thread cannot start.
    pub fn start(behaviour: Behaviour) -> io::Result<Hostile> {
        let stop = Arc::new(Wakeup::new());
        let shared = Arc::new(Shared {
            behaviour,
            stop: stop.clone(),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            written: AtomicU64::new(0),
        });
        let s = shared.clone();
        let server = Server::start(
            "hookwire-hostile",
            "hookwire-hostile-conn",
            stop,
            move |c| {
                s.connections.fetch_add(1, Ordering::AcqRel);
                serve(&s, c);
            },
        )?;
        Ok(Hostile { shared, server })
    }

    /// [`Behaviour::EndlessChunkSize`]: the defect of issue 9.
    pub fn endless_chunk_size() -> io::Result<Hostile> {
        Hostile::start(Behaviour::EndlessChunkSize)
    }

    /// [`Behaviour::EndlessChunkBody`].
    pub fn endless_chunk_body() -> io::Result<Hostile> {
        Hostile::start(Behaviour::EndlessChunkBody)
    }

    /// [`Behaviour::LargeBody`] of `len` bytes.
    pub fn large_body(len: u64) -> io::Result<Hostile> {
        Hostile::start(Behaviour::LargeBody { len })
    }

    /// [`Behaviour::ManyHeaders`]: `count` headers.
    pub fn many_headers(count: usize) -> io::Result<Hostile> {
        Hostile::start(Behaviour::ManyHeaders { count })
    }

    /// [`Behaviour::Trickle`]: one byte every `every`.
    pub fn trickle(every: Duration) -> io::Result<Hostile> {
        Hostile::start(Behaviour::Trickle { every })
    }

    /// [`Behaviour::Informational`]: `100` and `103` before the answer.
    pub fn informational() -> io::Result<Hostile> {
        Hostile::start(Behaviour::Informational)
    }

    /// [`Behaviour::CloseDelimited`]: a body of `len` bytes ended by closing.
    pub fn close_delimited(len: usize) -> io::Result<Hostile> {
        Hostile::start(Behaviour::CloseDelimited { len })
    }

    /// [`Behaviour::Silent`]: accepts, never answers (a stalled TLS handshake, for `https`).
    pub fn silent() -> io::Result<Hostile> {
        Hostile::start(Behaviour::Silent)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT/hook` (for a TLS client of a `Silent` server, use
    /// [`addr`](Hostile::addr) with `https://`).
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.server.addr())
    }

    /// What it has done so far.
    pub fn stats(&self) -> HostileStats {
        HostileStats {
            connections: self.shared.connections.load(Ordering::Acquire),
            requests: self.shared.requests.load(Ordering::Acquire),
            bytes_written: self.shared.written.load(Ordering::Acquire),
        }
    }

    /// Stops accepting, shuts every open connection down and joins the threads. Idempotent.
    pub fn shutdown(&self) {
        self.server.shutdown();
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serves one connection until the client leaves, the behaviour ends it, or shutdown.
fn serve(shared: &Shared, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    if shared.behaviour == Behaviour::Silent {
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        return;
    }
    let mut requests = RequestReader::default();
    while requests.next(&mut stream) {
        shared.requests.fetch_add(1, Ordering::AcqRel);
        let mut out = Writer {
            stream: &mut stream,
            written: &shared.written,
        };
        if answer(shared, &mut out).is_err() || shared.stop.is_set() {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Counts what the kernel takes.
struct Writer<'a> {
    stream: &'a mut TcpStream,
    written: &'a AtomicU64,
}

impl Writer<'_> {
    fn put(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = self.stream.write(bytes)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.written.fetch_add(n as u64, Ordering::AcqRel);
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Writes `fill` again and again until a write fails (the client left, or shutdown).
    fn forever(&mut self, fill: u8) -> io::Result<()> {
        let block = vec![fill; WRITE];
        loop {
            self.put(&block)?;
        }
    }
}

/// Answers one request. `Err` ends the connection.
fn answer(shared: &Shared, out: &mut Writer<'_>) -> io::Result<()> {
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    match &shared.behaviour {
        Behaviour::EndlessChunkSize => {
            out.put(CHUNKED)?;
            out.forever(b'1')
        }
        Behaviour::EndlessChunkBody => {
            out.put(CHUNKED)?;
            out.put(b"7fffffffffffffff\r\n")?;
            out.forever(b'x')
        }
        Behaviour::LargeBody { len } => {
            out.put(format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n").as_bytes())?;
            let block = vec![b'b'; WRITE];
            let mut left = *len;
            while left > 0 {
                let n = left.min(WRITE as u64) as usize;
                out.put(&block[..n])?;
                left -= n as u64;
            }
            Ok(())
        }
        Behaviour::ManyHeaders { count } => {
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..*count {
                head.extend_from_slice(format!("x-header-{i:05}: value\r\n").as_bytes());
            }
            head.extend_from_slice(b"content-length: 0\r\n\r\n");
            out.put(&head)
        }
        Behaviour::Trickle { every } => {
            for b in b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok" {
                if shared.stop.wait_for(*every) {
                    return Err(io::ErrorKind::Interrupted.into());
                }
                out.put(&[*b])?;
            }
            Ok(())
        }
        Behaviour::Informational => {
            for part in [
                &b"HTTP/1.1 100 Continue\r\n\r\n"[..],
                b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n",
                b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
            ] {
                out.put(part)?;
                out.stream.flush()?;
            }
            Ok(())
        }
        Behaviour::CloseDelimited { len } => {
            out.put(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")?;
            out.put(&vec![b'c'; *len])?;
            // The body ends with the connection.
            Err(io::ErrorKind::ConnectionAborted.into())
        }
        Behaviour::Silent => Ok(()),
    }
}

/// Reads requests off a connection: a head up to its blank line, then `Content-Length`
/// bytes of body. Bytes past one request stay for the next.
#[derive(Default)]
struct RequestReader {
    buf: Vec<u8>,
}

impl RequestReader {
    /// Reads one whole request; false if the connection ended first (or sent a head over
    /// the bound, or an unreadable length).
    fn next(&mut self, stream: &mut TcpStream) -> bool {
        let mut scanned: usize = 0;
        let head_end = loop {
            if let Some(i) = find(&self.buf[scanned.saturating_sub(3)..], b"\r\n\r\n") {
                break scanned.saturating_sub(3) + i + 4;
            }
            scanned = self.buf.len();
            if scanned > MAX_REQUEST_HEAD || !self.fill(stream) {
                return false;
            }
        };
        let Ok(head) = std::str::from_utf8(&self.buf[..head_end]) else {
            return false;
        };
        let len = head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>())
        });
        let len = match len {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return false,
        };
        while self.buf.len() < head_end + len {
            if !self.fill(stream) {
                return false;
            }
        }
        self.buf.drain(..head_end + len);
        true
    }

    fn fill(&mut self, stream: &mut TcpStream) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAFETY: Duration = Duration::from_secs(5);

    fn post(h: &Hostile) -> TcpStream {
        let mut s = TcpStream::connect(h.addr()).unwrap();
        s.set_read_timeout(Some(SAFETY)).unwrap();
        s.write_all(b"POST /hook HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            .unwrap();
        s
    }

    fn read_some(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        s.read_exact(&mut out).unwrap();
        out
    }

    fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn endless_answers_keep_coming_and_stop_with_the_client() {
        let h = Hostile::endless_chunk_size().unwrap();
        let mut s = post(&h);
        let got = read_some(&mut s, 200_000);
        let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(got.starts_with(head));
        assert!(got[head.len()..].iter().all(|&b| b == b'1'));
        drop(s);
        // The writer ends at its next failed write; shutdown joins it.
        h.shutdown();
        let st = h.stats();
        assert_eq!((st.connections, st.requests), (1, 1));
        assert!(st.bytes_written >= 200_000);

        let h = Hostile::endless_chunk_body().unwrap();
        let mut s = post(&h);
        let got = read_some(&mut s, 100_000);
        assert!(got.ends_with(&[b'x'; 1000]));
    }

    #[test]
    fn finite_answers_keep_the_connection() {
        let h = Hostile::informational().unwrap();
        let mut s = post(&h);
        let want = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\
            link: </style.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(read_some(&mut s, want.len()), want);
        s.write_all(b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
        assert_eq!(read_some(&mut s, want.len()), want);
        assert_eq!(h.stats().requests, 2);

        let h = Hostile::many_headers(3).unwrap();
        let mut s = post(&h);
        let want = "HTTP/1.1 200 OK\r\nx-header-00000: value\r\nx-header-00001: value\r\n\
            x-header-00002: value\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(read_some(&mut s, want.len()), want.as_bytes());

        let h = Hostile::large_body(300_000).unwrap();
        let mut s = post(&h);
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 300000\r\n\r\n";
        let got = read_some(&mut s, head.len() + 300_000);
        assert!(got.starts_with(head));
    }

    #[test]
    fn close_delimited_trickle_and_silent() {
        let h = Hostile::close_delimited(5).unwrap();
        let mut s = post(&h);
        assert_eq!(
            read_to_end(&mut s),
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nccccc"
        );

        let h = Hostile::trickle(Duration::from_millis(1)).unwrap();
        let mut s = post(&h);
        let want = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(read_some(&mut s, want.len()), want);
        h.shutdown(); // joins the writer, so its count is final
        assert_eq!(h.stats().bytes_written, want.len() as u64);

        let mut one = [0u8; 64];

        let h = Hostile::silent().unwrap();
        let mut s = post(&h);
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let err = s.read(&mut one).unwrap_err();
        assert!(matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        assert_eq!(h.stats().requests, 0);
        // Shutdown ends the reader blocked on the silent connection.
        h.shutdown();
        assert_eq!(s.read(&mut one).unwrap(), 0);
    }
}
