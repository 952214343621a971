//! One receiver connection's HTTP/1.1: read a request (bounded), write an answer.
//!
//! Just enough of HTTP/1.1 for a webhook sender: requests framed by `Content-Length` (or with
//! no body), keep-alive and pipelining. It bounds what it buffers (64 KiB of head, the
//! configured maximum of body) and refuses what it does not speak with a status and a closed
//! connection: chunked or other transfer codings get 411, a body over the bound 413, a head
//! over the bound or with more than 64 headers 431, anything unparsable 400.
//! `Expect: 100-continue` is not answered (the sender's own wait for it runs out and it sends
//! the body anyway). Every read can be slowed down (`slow_read`); nothing here waits on
//! anything but the socket and the receiver's stop signal, so shutdown ends it.

use std::io::{self, Read, Write};
use std::time::Duration;

use super::tls::Stream;
use crate::http::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
use crate::policy::Wakeup;

/// A request head larger than this is refused (431).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
const READ_CHUNK: usize = 16 * 1024;

/// The parts of a request the receiver acts on. The body stays in the connection's buffer.
#[derive(Debug, Default)]
pub(super) struct Request {
    head_len: usize,
    body_len: usize,
    /// The client asked to close after this answer (or speaks HTTP/1.0 without keep-alive).
    pub close: bool,
    pub webhook_id: Option<String>,
    pub webhook_timestamp: Option<String>,
    pub webhook_signature: Option<String>,
}

/// What [`Conn::read_request`] found.
pub(super) enum Incoming {
    /// A whole request, body included.
    Request(Request),
    /// The peer closed (or shutdown closed the socket) between requests.
    Closed,
    /// The request cannot be served: answer this status and close.
    Refuse(u16),
}

/// How an answer is framed and whether the connection ends after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Framing {
    /// `Transfer-Encoding: chunked` instead of `Content-Length`.
    pub chunked: bool,
    /// Send `Connection: close` and end the connection.
    pub close: bool,
}

pub(super) struct Conn<'a> {
    stream: Stream,
    /// Bytes read and not yet consumed are `buf[..filled]`; the rest of `buf` is zeroed
    /// room for the next reads, kept so that reading does not zero it again each time.
    buf: Vec<u8>,
    filled: usize,
    slow: Option<(usize, Duration)>,
    max_body: usize,
    stop: &'a Wakeup,
}

impl<'a> Conn<'a> {
    pub(super) fn new(
        stream: Stream,
        slow: Option<(usize, Duration)>,
        max_body: usize,
        stop: &'a Wakeup,
    ) -> Self {
        // Answers are small and written whole; Nagle would only add latency.
        let _ = stream.tcp().set_nodelay(true);
        Conn {
            stream,
            buf: Vec::new(),
            filled: 0,
            slow,
            max_body,
            stop,
        }
    }

    /// Reads from the socket into the buffer: at most `want` bytes (at least a read chunk),
    /// or a slow-read chunk and then the pause. Returns 0 at end of stream, or when shutdown
    /// interrupts the pause.
    fn fill(&mut self, want: usize) -> io::Result<usize> {
        let want = self.slow.map_or(want.max(READ_CHUNK), |(n, _)| n);
        let end = self.filled + want;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        let n = self.stream.read(&mut self.buf[self.filled..end])?;
        self.filled += n;
        if let Some((_, pause)) = self.slow
            && n > 0
            && self.stop.wait_for(pause)
        {
            return Ok(0);
        }
        Ok(n)
    }

    /// Reads the next request, head and body.
    pub(super) fn read_request(&mut self) -> Incoming {
        let req = loop {
            match parse_head(&self.buf[..self.filled]) {
                Ok(Some(req)) => break req,
                Ok(None) if self.filled > MAX_HEAD => return Incoming::Refuse(431),
                Ok(None) => {}
                Err(status) => return Incoming::Refuse(status),
            }
            match self.fill(READ_CHUNK) {
                Ok(0) | Err(_) => return Incoming::Closed,
                Ok(_) => {}
            }
        };
        if req.body_len > self.max_body {
            return Incoming::Refuse(413);
        }
        let total = req.head_len + req.body_len;
        // The rest of the body in as few reads as the socket allows.
        while self.filled < total {
            match self.fill(total - self.filled) {
                Ok(0) | Err(_) => return Incoming::Closed,
                Ok(_) => {}
            }
        }
        Incoming::Request(req)
    }

    /// The body of `req`, which must be the request just read.
    pub(super) fn body(&self, req: &Request) -> &[u8] {
        &self.buf[req.head_len..req.head_len + req.body_len]
    }

    /// Forgets `req`, keeping any pipelined bytes after it.
    pub(super) fn consume(&mut self, req: &Request) {
        let used = req.head_len + req.body_len;
        self.buf.copy_within(used..self.filled, 0);
        self.filled -= used;
    }

    /// Writes an answer with `body_len` filler bytes as its body, framed as `framing` says
    /// (chunked answers come in chunks of at most 4 KiB).
    pub(super) fn respond(
        &mut self,
        status: u16,
        headers: &[(&str, String)],
        body_len: usize,
        framing: Framing,
    ) -> io::Result<()> {
        let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        if framing.chunked {
            head.push_str("transfer-encoding: chunked\r\n");
        } else {
            head.push_str(&format!("content-length: {body_len}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if framing.close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes())?;
        const FILLER: [u8; 8192] = [b'x'; 8192];
        let max = if framing.chunked { 4096 } else { FILLER.len() };
        let mut left = body_len;
        while left > 0 {
            let n = left.min(max);
            if framing.chunked {
                self.stream.write_all(format!("{n:x}\r\n").as_bytes())?;
            }
            self.stream.write_all(&FILLER[..n])?;
            if framing.chunked {
                self.stream.write_all(b"\r\n")?;
            }
            left -= n;
        }
        if framing.chunked {
            self.stream.write_all(b"0\r\n\r\n")?;
        }
        if framing.close {
            self.stream.close_notify();
        }
        self.stream.flush()
    }

    /// Closes the connection without a word (the `drop_connection` fault).
    pub(super) fn abort(&self) {
        let _ = self.stream.tcp().shutdown(std::net::Shutdown::Both);
    }
}

/// Parses a request head. `Ok(None)` means more bytes are needed; `Err` is the status to
/// refuse it with.
fn parse_head(buf: &[u8]) -> Result<Option<Request>, u16> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    };
    let mut req = Request {
        head_len,
        // HTTP/1.0 closes unless asked to keep alive; 1.1 keeps alive unless asked to close.
        close: parsed.version == Some(0),
        ..Request::default()
    };
    let mut content_length: Option<usize> = None;
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| 400u16)?.trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| 400u16)?;
            // Two different lengths is a smuggling attempt; refuse it.
            if content_length.is_some_and(|m| m != n) {
                return Err(400);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(411);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    req.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    req.close = false;
                }
            }
        } else if name.eq_ignore_ascii_case(WEBHOOK_ID) {
            req.webhook_id = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case(WEBHOOK_TIMESTAMP) {
            req.webhook_timestamp = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case(WEBHOOK_SIGNATURE) {
            req.webhook_signature = Some(value.to_owned());
        }
    }
    // No Content-Length and no transfer coding: the request has no body (RFC 9112 §6.3).
    req.body_len = content_length.unwrap_or(0);
    Ok(Some(req))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        408 => "Request Timeout",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Request>, u16> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn parses_framing_and_webhook_headers() {
        let r = head(
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nWebhook-Id: a\r\n\
             webhook-timestamp: 12\r\nwebhook-signature: v1,x\r\n\r\nhello",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body_len, 5);
        // The head ends after the blank line, before the 5-byte body.
        assert_eq!(r.head_len, 101);
        assert!(!r.close);
        assert_eq!(r.webhook_id.as_deref(), Some("a"));
        assert_eq!(r.webhook_timestamp.as_deref(), Some("12"));
        assert_eq!(r.webhook_signature.as_deref(), Some("v1,x"));
    }

    #[test]
    fn keep_alive_rules() {
        let close = |t: &str| head(t).unwrap().unwrap().close;
        assert!(close("GET / HTTP/1.0\r\n\r\n"));
        assert!(!close("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(close(
            "GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n"
        ));
        assert!(!close("GET / HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn refuses_what_it_does_not_speak() {
        assert!(head("POST / HTTP/1.1\r\nContent-Le").unwrap().is_none());
        assert_eq!(
            head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").err(),
            Some(411)
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").err(),
            Some(400)
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").err(),
            Some(400)
        );
        assert_eq!(head("NOT HTTP\r\n\r\n").err(), Some(400));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("x{i}: y\r\n"))
            .collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n")).err(),
            Some(431)
        );
        assert_eq!(head("GET / HTTP/1.1\r\n\r\n").unwrap().unwrap().body_len, 0);
    }

    proptest::proptest! {
        // The receiver reads whatever a client sends: the head parser must refuse, not panic.
        #[test]
        fn parse_head_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_head(&bytes);
        }

        #[test]
        fn a_cut_request_asks_for_more_bytes(cut in 0usize..60) {
            let full = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n";
            let cut = cut.min(full.len() - 1);
            proptest::prop_assert!(matches!(parse_head(&full[..cut]), Ok(None)));
            proptest::prop_assert!(matches!(parse_head(full), Ok(Some(_))));
        }
    }
}
