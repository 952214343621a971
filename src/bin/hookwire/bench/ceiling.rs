//! `loopback_ceiling_c1|c16`: how many requests per second this machine's loopback and the
//! receiver allow at all, with a minimal client: std `TcpStream`s, blocking, keep-alive
//! HTTP/1.1, 1 or 16 threads, each POSTing the peer's 1,158-byte envelope and reading the
//! answer. Delivery by an endpoint cannot beat this figure for the same concurrency.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hookwire::Error;
use hookwire::http::MediaType;
use hookwire::testkit::ReceiverConfig;

use super::event::peer_body;
use super::progress::Progress;
use super::target::Target;
use super::{Ctx, Values, failed};

/// Every socket read and write gives up after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest response head we read.
const MAX_HEAD: usize = 16 * 1024;

/// Splits `http://host:port/path` into a socket address, the `Host` header and the path.
pub(crate) fn parse_url(url: &str) -> Result<(SocketAddr, String, String), Error> {
    let bad = |why: &str| Error::config("--target", format!("{url:?}: {why}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("not an http:// URL"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let with_port = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| bad(&e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address"))?;
    Ok((addr, host.to_owned(), path.to_owned()))
}

/// The bytes of one POST of `body`.
pub(crate) fn request(host: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
        MediaType::V2.as_str(),
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Reads one response from `r` (bytes already read but not used are kept in `buf`). Returns
/// its status and whether the server will close the connection. Bodies must have a
/// `Content-Length` (the receivers always send one).
pub(crate) fn read_response<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<(u16, bool)> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp
            .parse(buf)
            .map_err(|e| invalid(format!("bad response: {e}")))?
        {
            httparse::Status::Complete(head) => {
                let status = resp.code.unwrap_or(0);
                let mut length = 0usize;
                let mut close = resp.version == Some(0);
                for h in resp.headers.iter() {
                    let value = std::str::from_utf8(h.value).unwrap_or("").trim();
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = value
                            .parse()
                            .map_err(|_| invalid(format!("Content-Length {value:?}")))?;
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(invalid(format!(
                            "Transfer-Encoding {value:?} is not supported"
                        )));
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close |= value.eq_ignore_ascii_case("close");
                    }
                }
                while buf.len() < head + length {
                    let k = r.read(&mut chunk)?;
                    if k == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    buf.extend_from_slice(&chunk[..k]);
                }
                buf.drain(..head + length);
                return Ok((status, close));
            }
            httparse::Status::Partial => {
                if buf.len() > MAX_HEAD {
                    return Err(invalid("response head too long".into()));
                }
                let k = r.read(&mut chunk)?;
                if k == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..k]);
            }
        }
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Sends `req` `count` times over one keep-alive connection (reconnecting if the server
/// closes it). Returns the requests not answered 2xx.
pub(crate) fn post_loop(addr: SocketAddr, req: &[u8], count: u64, progress: &Progress) -> u64 {
    let mut errors = 0;
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(1024);
    for i in 0..count {
        let result = (|| {
            let s = match conn.as_mut() {
                Some(s) => s,
                None => conn.insert(connect(addr)?),
            };
            s.write_all(req)?;
            read_response(s, &mut buf)
        })();
        match result {
            Ok((status, close)) => {
                if !(200..300).contains(&status) {
                    errors += 1;
                }
                if close {
                    conn = None;
                    buf.clear();
                }
            }
            Err(_) => {
                errors += 1;
                conn = None;
                buf.clear();
            }
        }
        if i % 256 == 255 {
            progress.add(256);
        }
    }
    errors
}

/// The scenario: `threads` clients, `n` requests in all (split evenly).
pub(crate) fn ceiling(ctx: &Ctx, id: &str, threads: u64, n: u64) -> Result<Values, Error> {
    let per = ctx.count(n) / threads;
    let total = per * threads;
    let target = Target::open(ctx.target.as_deref(), ReceiverConfig::default())?;
    let (addr, host, path) = parse_url(&target.delivery_url())?;
    let body = peer_body(0);
    let req = request(&host, &path, &body);
    let progress = ctx.progress(id, "requests", total);
    let errors = AtomicU64::new(0);
    let start = Barrier::new(threads as usize + 1);
    let elapsed = std::thread::scope(|s| {
        for _ in 0..threads {
            let (req, errors, start, progress) = (&req, &errors, &start, &progress);
            s.spawn(move || {
                start.wait();
                errors.fetch_add(post_loop(addr, req, per, progress), Ordering::Relaxed);
            });
        }
        let t0 = Instant::now();
        start.wait();
        t0
    })
    .elapsed();
    drop(progress);
    let counted = target.counted(None)?;
    let errors = errors.into_inner();
    if errors != 0 || counted.accepted_requests != total {
        return Err(failed(format!(
            "{errors} requests failed; the receiver accepted {} of {total}",
            counted.accepted_requests
        )));
    }
    let mut v = Values::default();
    v.put("req_per_s", total as f64 / elapsed.as_secs_f64())
        .put("connections", counted.connections as f64)
        .put("n", total as f64)
        .put("threads", threads as f64)
        .put("body_bytes", body.len() as f64)
        .put("total_s", elapsed.as_secs_f64());
    if let Some(cpu) = counted.cpu_s {
        v.put("receiver_cpu_s", cpu);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookwire::testkit::{Receiver, Reply};
    use std::io::Cursor;

    #[test]
    fn urls_split_into_address_host_and_path() {
        let (a, h, p) = parse_url("http://127.0.0.1:8080/events").unwrap();
        assert_eq!(
            (a.port(), h.as_str(), p.as_str()),
            (8080, "127.0.0.1:8080", "/events")
        );
        let (a, _, p) = parse_url("http://127.0.0.1").unwrap();
        assert_eq!((a.port(), p.as_str()), (80, "/"));
        assert!(parse_url("https://127.0.0.1/").is_err());
        assert!(parse_url("http:///x").is_err());
    }

    #[test]
    fn reads_pipelined_responses_and_keeps_the_rest() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 503 No\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let mut r = Cursor::new(&two[..]);
        let mut buf = Vec::new();
        assert_eq!(read_response(&mut r, &mut buf).unwrap(), (200, false));
        assert_eq!(read_response(&mut r, &mut buf).unwrap(), (503, true));
        assert!(buf.is_empty());
        let mut eof = Cursor::new(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"[..]);
        assert_eq!(
            read_response(&mut eof, &mut Vec::new()).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut chunked =
            Cursor::new(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..]);
        assert!(read_response(&mut chunked, &mut Vec::new()).is_err());
        let mut old = Cursor::new(&b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"[..]);
        assert_eq!(
            read_response(&mut old, &mut Vec::new()).unwrap(),
            (200, true)
        );
    }

    #[test]
    fn posts_over_one_kept_alive_connection() {
        let rx =
            Receiver::start(ReceiverConfig::default().statuses(vec![Reply::status(500)])).unwrap();
        let (addr, host, path) = parse_url(&rx.url()).unwrap();
        let req = request(&host, &path, &peer_body(1));
        let errors = post_loop(addr, &req, 20, &Progress::disabled());
        assert_eq!(errors, 1, "the scripted 500");
        let s = rx.stats();
        assert_eq!((s.requests, s.connections), (20, 1));
        assert_eq!(s.statuses.get(&200), Some(&19));
    }

    #[test]
    fn the_scenario_runs_against_the_testkit_receiver() {
        let ctx = Ctx {
            quick: true,
            target: None,
            progress: false,
        };
        let v = ceiling(&ctx, "loopback_ceiling_c16", 16, 320).unwrap();
        assert_eq!(v.get("n"), Some(32.0));
        assert_eq!(v.get("connections"), Some(16.0));
        assert_eq!(v.get("body_bytes"), Some(1158.0));
        assert!(v.get("req_per_s").unwrap() > 0.0);
    }
}
