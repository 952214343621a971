//! Not a public API: thin wrappers over crate-private parsers, for the cargo-fuzz targets in
//! `fuzz/` and `tests/fuzz_regressions.rs`. Only built with the `fuzzing` feature, hidden from
//! the docs, and free to change or vanish in any release.
//!
//! Everything else the targets fuzz is public already (`parse_retry_after`, the envelope,
//! `RawEvent`, `LogStore`); what is here is what they could not reach otherwise.

use crate::{Error, RawEvent};

/// The store's record encoding of `event`, appended to `out` (`RawEvent::encode_record`).
pub fn encode_record(event: &RawEvent, out: &mut Vec<u8>) {
    event.encode_record(out);
}

/// Decodes a stored record (`RawEvent::decode_record`): bytes from disk, so any input.
pub fn decode_record(bytes: &[u8]) -> Result<RawEvent, Error> {
    RawEvent::decode_record(bytes)
}

/// `RawEvent::from_parts`: an event with metadata kept apart from its JSON (how the
/// dead-letter file and the record codec rebuild one).
pub fn raw_event_from_parts(
    id: String,
    kind: Option<String>,
    action: Option<String>,
    media_type: Option<String>,
    json: String,
) -> Result<RawEvent, Error> {
    RawEvent::from_parts(id, kind, action, media_type, json)
}

/// `EndpointConfig::validate`: every check an endpoint's settings get before anything starts
/// (what `hookwire send --resume` applies to the settings it read back from `send.json`).
pub fn validate_endpoint_config(config: &crate::endpoint::EndpointConfig) -> Result<(), Error> {
    config.validate().map(drop)
}

/// What the engine's HTTP response reader (`http::response::ResponseReader`, socket-free)
/// makes of `chunks`, the bytes of one answer to a `POST` as they arrived, fed in order, then
/// an end of stream if `eof`: `Ok(Some((status, reusable, complete)))` once it has answered,
/// `Ok(None)` when it wants more, or its error in words. It never holds more bytes than its
/// bound between calls: that is asserted after every chunk.
pub fn read_response(chunks: &[&[u8]], eof: bool) -> Result<Option<(u16, bool, bool)>, String> {
    use crate::http::response::{Fed, MAX_HEAD, ResponseReader};
    let mut head = Vec::new();
    let call = crate::http::request::RequestHead {
        path: "/hook",
        host: "fuzz.test",
        authorization: None,
        headers: &[("content-type", "application/json")],
        body_len: 2,
    }
    .write(&mut head)
    .map_err(|e| e.to_string())?;
    let mut reader = ResponseReader::new(call);
    for (i, chunk) in chunks.iter().enumerate() {
        match reader.feed(chunk) {
            Ok(Fed::More) => assert!(
                reader.buffered() <= MAX_HEAD,
                "held {} bytes, past the bound",
                reader.buffered()
            ),
            Ok(Fed::Done(a)) => {
                // Bytes in a later read are what the connection does with them: it stops
                // reusing a stream that sent more than the answer (`Conn`).
                let more = chunks[i + 1..].iter().any(|c| !c.is_empty());
                return Ok(Some((a.status, a.reusable && !more, a.complete)));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    if eof {
        return match reader.eof() {
            Ok(a) => Ok(Some((a.status, a.reusable, a.complete))),
            Err(e) => Err(e.to_string()),
        };
    }
    Ok(None)
}

/// What `hookwire serve`'s request framing (`serve::http::parse`) made of a buffer.
#[cfg(feature = "serve")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeParsed {
    /// It wants more bytes.
    Incomplete,
    /// One whole request, taking the first `consumed` bytes.
    Complete {
        /// The method.
        method: String,
        /// The path (no query).
        path: String,
        /// How many headers it had.
        headers: usize,
        /// Its body.
        body: Vec<u8>,
        /// Bytes of the buffer it took.
        consumed: usize,
    },
    /// Refused with this status (the connection is closed after it).
    Refused(u16),
}

/// `hookwire serve`'s request framing over `buf`, under these limits.
#[cfg(feature = "serve")]
pub fn serve_parse_request(
    buf: &[u8],
    max_header_bytes: usize,
    max_headers: usize,
    max_body_bytes: usize,
) -> ServeParsed {
    use crate::serve::http::{Parse, parse};
    let limits = crate::serve::Limits {
        max_header_bytes,
        max_headers,
        max_body_bytes,
        ..crate::serve::Limits::default()
    };
    match parse(buf, &limits) {
        Parse::Incomplete { .. } => ServeParsed::Incomplete,
        Parse::Refuse(r) => {
            assert!(r.close, "a refusal must close the connection");
            ServeParsed::Refused(r.status)
        }
        Parse::Complete(r, consumed) => ServeParsed::Complete {
            method: r.method,
            path: r.path,
            headers: r.headers.len(),
            body: r.body,
            consumed,
        },
        Parse::Head(_) => unreachable!("parse never returns a head alone"),
    }
}

/// `hookwire serve`'s `/v1/events` body parser (`registry = false`) or `/v1/registry`'s.
#[cfg(feature = "serve")]
pub fn serve_parse_body(body: &[u8], registry: bool) -> Result<Vec<RawEvent>, String> {
    let parsed = if registry {
        crate::serve::ingest::parse_registry(body)
    } else {
        crate::serve::ingest::parse_events(body)
    };
    parsed.map_err(|e| e.0)
}
