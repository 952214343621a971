//! The server's HTTP/1.1 framing, without sockets: find one request in the bytes read so far
//! (under the head, header-count and body limits), and encode a response.
//!
//! What it promises: a request is handed on only when its head and whole body are in; a head
//! past `max_header_bytes` or with more than `max_headers` headers is refused with 431, a
//! body declared past `max_body_bytes` with 413 before any of it is read, a body without a
//! `Content-Length` with 411, and `Transfer-Encoding` (chunked bodies) with 501: this server
//! reads only bodies whose length it knows up front. Every refusal closes the connection,
//! since the rest of the stream cannot be framed.

use super::config::Limits;

/// One request, head and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The query string (after `?`), empty without one.
    pub query: String,
    /// Header names lowercased, values as sent (invalid UTF-8 replaced).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the connection stays open after the response (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
}

impl Request {
    /// The value of query parameter `name` (not percent-decoded: names and numbers only).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the bytes read so far hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parse {
    /// Not a whole request yet. `expect_continue`: the head is in and asked for
    /// `100 Continue` before the body.
    Incomplete { expect_continue: bool },
    /// A whole request, and how many bytes of the buffer it took.
    Complete(Request, usize),
    /// A request this server refuses; the connection is closed after the answer.
    Refuse(Response),
    /// From [`parse_head`]: the head is in (the body may not be).
    Head(Request),
}

/// Looks for one whole request at the start of `buf`.
pub(crate) fn parse(buf: &[u8], limits: &Limits) -> Parse {
    parse_inner(buf, limits, false)
}

/// The request's head alone (body empty), once it is all in and acceptable as framing:
/// `Parse::Head`; else what [`parse`] says. Lets the server refuse a request (a missing
/// token, an unknown route) before it sends `100 Continue` or holds the body.
pub(crate) fn parse_head(buf: &[u8], limits: &Limits) -> Parse {
    parse_inner(buf, limits, true)
}

fn parse_inner(buf: &[u8], limits: &Limits, head_only: bool) -> Parse {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= limits.max_header_bytes => n,
        Ok(httparse::Status::Complete(_)) => return Parse::Refuse(too_large_head()),
        Ok(httparse::Status::Partial) if buf.len() > limits.max_header_bytes => {
            return Parse::Refuse(too_large_head());
        }
        Ok(httparse::Status::Partial) => {
            return Parse::Incomplete {
                expect_continue: false,
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Parse::Refuse(too_large_head()),
        Err(e) => {
            return Parse::Refuse(Response::error(400, &format!("bad request: {e}")).closing());
        }
    };
    let method = req.method.unwrap_or_default().to_string();
    let (path, query) = req.path.unwrap_or("/").split_once('?').map_or_else(
        || (req.path.unwrap_or("/").to_string(), String::new()),
        |(p, q)| (p.to_string(), q.to_string()),
    );
    let version = req.version.unwrap_or(1);
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let has = |name: &str, token: &str| {
        headers
            .iter()
            .any(|(k, v)| k == name && v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let keep_alive = if version == 0 {
        has("connection", "keep-alive")
    } else {
        !has("connection", "close")
    };
    if headers.iter().any(|(k, _)| k == "transfer-encoding") {
        return Parse::Refuse(
            Response::error(
                501,
                "Transfer-Encoding (chunked bodies) is not supported: send a Content-Length",
            )
            .closing(),
        );
    }
    let mut length = None;
    for (k, v) in &headers {
        if k != "content-length" {
            continue;
        }
        // Digits only (RFC 9110): `usize::from_str` would take `+11`, which a proxy in front
        // may frame differently (request smuggling).
        let digits = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        match v.parse::<usize>() {
            Ok(n) if digits && length.is_none_or(|l| l == n) => length = Some(n),
            _ => {
                return Parse::Refuse(Response::error(400, "bad Content-Length").closing());
            }
        }
    }
    let body_len = match length {
        Some(n) if n > limits.max_body_bytes => {
            return Parse::Refuse(
                Response::error(
                    413,
                    &format!("the body is larger than {} bytes", limits.max_body_bytes),
                )
                .closing(),
            );
        }
        Some(n) => n,
        None if method == "POST" || method == "PUT" => {
            return Parse::Refuse(Response::error(411, "a Content-Length is required").closing());
        }
        None => 0,
    };
    if head_only || buf.len() - head_len < body_len {
        if head_only {
            return Parse::Head(Request {
                method,
                path,
                query,
                headers,
                body: Vec::new(),
                keep_alive,
            });
        }
        return Parse::Incomplete {
            expect_continue: has("expect", "100-continue"),
        };
    }
    let body = buf[head_len..head_len + body_len].to_vec();
    Parse::Complete(
        Request {
            method,
            path,
            query,
            headers,
            body,
            keep_alive,
        },
        head_len + body_len,
    )
}

fn too_large_head() -> Response {
    Response::error(431, "the request head is too large").closing()
}

/// The interim answer to `Expect: 100-continue`.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u32>,
    /// Extra headers (`WWW-Authenticate`, `Allow`).
    pub extra: Vec<(&'static str, String)>,
    /// Close the connection after it.
    pub close: bool,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec(value).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
            retry_after: None,
            extra: Vec::new(),
            close: false,
        }
    }

    /// A plain-text answer.
    pub fn text(status: u16, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            body: body.into_bytes(),
            retry_after: None,
            extra: Vec::new(),
            close: false,
        }
    }

    /// `{"error": message}`.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: &str, retry_after: u32) -> Response {
        let mut r = Response::error(503, message);
        r.retry_after = Some(retry_after);
        r
    }

    /// The same, closing the connection afterwards.
    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }

    /// Appends the encoded response to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if let Some(s) = self.retry_after {
            let _ = write!(out, "retry-after: {s}\r\n");
        }
        for (k, v) in &self.extra {
            let _ = write!(out, "{k}: {v}\r\n");
        }
        if self.close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_header_bytes: 256,
            max_headers: 4,
            max_body_bytes: 10,
            ..Limits::default()
        }
    }

    fn status(p: Parse) -> u16 {
        match p {
            Parse::Refuse(r) => {
                assert!(r.close, "a refusal closes");
                r.status
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn whole_requests_only_and_pipelining_leaves_the_rest() {
        let l = limits();
        let one = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..one.len() {
            assert!(
                matches!(parse(&one[..cut], &l), Parse::Incomplete { .. }),
                "cut at {cut}"
            );
        }
        let mut two = one.to_vec();
        two.extend_from_slice(b"GET /healthz HTTP/1.1\r\n\r\n");
        let Parse::Complete(r, n) = parse(&two, &l) else {
            panic!()
        };
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), n),
            ("POST", "/v1/events", one.len())
        );
        assert_eq!(r.body, b"hello");
        assert!(r.keep_alive);
        assert_eq!(r.header("host"), Some("x"));
        let Parse::Complete(r, _) = parse(
            b"GET /v1/dead-letters?endpoint=a&seq=1..5 HTTP/1.1\r\n\r\n",
            &l,
        ) else {
            panic!()
        };
        assert_eq!(r.path, "/v1/dead-letters");
        assert_eq!(
            (r.param("endpoint"), r.param("seq"), r.param("x")),
            (Some("a"), Some("1..5"), None)
        );
        let Parse::Complete(r, _) = parse(&two[n..], &l) else {
            panic!()
        };
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/healthz"));
    }

    #[test]
    fn limits_and_framing_refusals() {
        let l = limits();
        // The body limit is enforced from the declared length, before the body arrives.
        assert_eq!(
            status(parse(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", &l)),
            413
        );
        // A head that does not end within the limit.
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(300));
        assert_eq!(status(parse(long.as_bytes(), &l)), 431);
        // Too many headers.
        assert_eq!(
            status(parse(
                b"GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n",
                &l
            )),
            431
        );
        assert_eq!(
            status(parse(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                &l
            )),
            501
        );
        assert_eq!(status(parse(b"POST / HTTP/1.1\r\n\r\n", &l)), 411);
        assert_eq!(
            status(parse(
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                &l
            )),
            400
        );
        assert_eq!(status(parse(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n", &l)), 400);
        // Digits only: a sign is not a length (a proxy may frame it differently).
        for bad in ["+5", "-0", " ", "5 5", "0x5"] {
            let req = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\nhello");
            assert_eq!(status(parse(req.as_bytes(), &l)), 400, "{bad:?}");
        }
    }

    #[test]
    fn keep_alive_and_expect_continue() {
        let l = limits();
        let p = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &l);
        assert!(matches!(p, Parse::Complete(r, _) if !r.keep_alive));
        let p = parse(b"GET / HTTP/1.0\r\n\r\n", &l);
        assert!(matches!(p, Parse::Complete(r, _) if !r.keep_alive));
        let p = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &l);
        assert!(matches!(p, Parse::Complete(r, _) if r.keep_alive));
        let p = parse(
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            &l,
        );
        assert_eq!(
            p,
            Parse::Incomplete {
                expect_continue: true
            }
        );
    }

    #[test]
    fn responses_encode_with_length_and_retry_after() {
        let mut out = Vec::new();
        Response::unavailable("full", 2).closing().encode(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{s}");
        assert!(s.contains("retry-after: 2\r\n") && s.contains("connection: close\r\n"));
        let body = "{\"error\":\"full\"}\n";
        assert!(
            s.ends_with(&format!(
                "content-length: {}\r\nretry-after: 2\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )),
            "{s}"
        );
    }
}
