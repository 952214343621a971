//! `hookwire serve`'s request framing and ingest body parsers: bytes from any client.
//!
//! Input: the first byte picks the limits (head 256 B or 1 KiB, 2 to 17 headers, body 0 to
//! 448 bytes) and how the bytes arrive (1 to 8 bytes more per step); the rest is what a client
//! sent on one connection.
//!
//! Invariants: never panics; every refusal is 400, 411, 413, 431 or 501 and closes (asserted
//! in the wrapper); a whole request never takes more than the buffer, has at most the limit of
//! headers and a body within its limit; the answer for a prefix that held a whole request is
//! the answer for the whole buffer (what arrives later cannot change a request already
//! framed), and a prefix that was refused stays refused; past head limit + body limit bytes
//! the parser never still wants more (so the server's read-ahead bound is enough); and every
//! event the body parsers accept is a JSON object with a non-empty id, its text verbatim.

use hookwire::Event;
use hookwire::fuzzing::{ServeParsed, serve_parse_body, serve_parse_request};

pub fn check(data: &[u8]) {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let head = if control & 1 == 0 { 256 } else { 1024 };
    let headers = usize::from((control >> 1) & 15) + 2;
    let body = usize::from(control >> 5) * 64;
    let step = usize::from(control >> 5) + 1;
    let whole = serve_parse_request(bytes, head, headers, body);
    let mut framed: Option<ServeParsed> = None;
    let mut len = 0;
    while len < bytes.len() {
        len = (len + step).min(bytes.len());
        let p = serve_parse_request(&bytes[..len], head, headers, body);
        match &p {
            ServeParsed::Refused(s) => {
                assert!([400, 411, 413, 431, 501].contains(s), "refused with {s}");
            }
            ServeParsed::Complete {
                headers: h,
                body: b,
                consumed,
                ..
            } => {
                assert!(*consumed <= len && *h <= headers && b.len() <= body);
            }
            ServeParsed::Incomplete => {
                assert!(len <= head + body, "still wants more after {len} bytes");
            }
        }
        if let Some(f) = &framed {
            assert_eq!(f, &p, "a later byte changed a framed answer");
        } else if !matches!(p, ServeParsed::Incomplete) {
            assert_eq!(p, whole, "the prefix of {len} bytes and the whole disagree");
            framed = Some(p);
        }
    }
    let body_bytes = match &whole {
        ServeParsed::Complete { body, .. } => body.as_slice(),
        _ => bytes,
    };
    for registry in [false, true] {
        if let Ok(events) = serve_parse_body(body_bytes, registry) {
            for e in events {
                assert!(!e.id().is_empty());
                let v: serde_json::Value = serde_json::from_str(e.json()).expect("valid JSON");
                assert!(v.is_object());
                let text = std::str::from_utf8(body_bytes).unwrap();
                assert!(text.contains(e.json()), "not verbatim");
            }
        }
    }
}
