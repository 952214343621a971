//! Reading one HTTP/1.1 response from byte slices, within fixed bounds: the protocol half of
//! a [`Conn`](super::conn::Conn), with no socket in it, so it can be tested and fuzzed alone.
//!
//! A [`ResponseReader`] takes the request's `ureq-proto` call (waiting for the response) and
//! is fed the bytes as they arrive ([`ResponseReader::feed`]), then told when the peer closes
//! ([`ResponseReader::eof`]). It answers "more, please", the finished [`Answer`], or a typed
//! [`ResponseError`]. `ureq-proto` decides what HTTP/1.1 means (status line, headers, 1xx
//! answers, `Content-Length`, chunked and close-delimited bodies, whether the connection may
//! be reused); this module decides how much of a response is worth holding, and makes sure
//! every byte is looked at a bounded number of times, however the bytes are split.
//!
//! Bounds (a server can send anything, at any pace, for as long as it likes):
//! - **Held bytes**: only bytes the protocol cannot consume yet are kept (a head not yet
//!   complete, a chunked-body line not yet ended), and never more than [`MAX_HEAD`] of a head
//!   or [`MAX_LINE`] of a line: past that the response fails (`HeadTooLarge`,
//!   `LineTooLong`). So the buffer never holds more than `MAX_HEAD` plus the slice being fed.
//! - **Head**: every head together (1xx answers included) at most [`MAX_HEAD`] bytes, at most
//!   128 headers (`ureq-proto`'s limit; more is `Malformed`).
//! - **Body**: at most [`MAX_RESPONSE_BODY`] decoded bytes and `MAX_RESPONSE_BODY +
//!   MAX_FRAMING` raw bytes are read. Past either the answer is reported at once with
//!   `complete: false`: the status counts, the connection cannot be reused.
//! - **Work**: a head is parsed only once a blank line has arrived (the search for it goes
//!   over each new byte once), and a chunked-body line is handed to `ureq-proto` again only
//!   once a new `\n` has arrived; bytes left over are moved at most once. Feeding a response
//!   one byte at a time costs time linear in its length, not quadratic.

use std::fmt;
use std::io;
use std::mem;

use ureq_proto::BodyMode;
use ureq_proto::client::state::{Cleanup, RecvBody, RecvResponse};
use ureq_proto::client::{Call, RecvBodyResult, RecvResponseResult};

use crate::Error;

/// Every response head together (1xx answers included) may be at most this long.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// At most this much response body is read; a longer one costs the connection.
pub(crate) const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// Raw (chunk-framed) body bytes allowed beyond [`MAX_RESPONSE_BODY`] for chunk headers.
pub(crate) const MAX_FRAMING: usize = 16 * 1024;
/// A chunked body's framing line (chunk size, chunk end, trailer field) may be at most this
/// long. `ureq-proto` itself refuses chunk-size lines over 20 bytes once they end; this bounds
/// one that never ends.
pub(crate) const MAX_LINE: usize = 8 * 1024;

/// Raw body bytes read at most.
const MAX_RAW: usize = MAX_RESPONSE_BODY + MAX_FRAMING;

/// Decoded body bytes go here, to be thrown away: the engine only needs the status.
const SCRATCH: usize = 4 * 1024;

/// Why a response could not be read. Each is a failed attempt (the connection is unusable);
/// [`Error::from`] turns it into `Error::Io` for the retry strategy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResponseError {
    /// The response heads (1xx answers included) passed `limit` bytes without ending.
    HeadTooLarge {
        /// [`MAX_HEAD`].
        limit: usize,
    },
    /// A chunked body's framing line (chunk size, chunk end, trailer) passed `limit` bytes
    /// without ending.
    LineTooLong {
        /// [`MAX_LINE`].
        limit: usize,
    },
    /// Not HTTP/1.1 as `ureq-proto` reads it (more than 128 headers, a bad chunk size, an
    /// unasked-for `101 Switching Protocols`, ...), or bytes fed after the answer.
    Malformed(String),
    /// The peer closed before the response was complete.
    Truncated,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::HeadTooLarge { limit } => {
                write!(f, "bad HTTP response: the head passed {limit} bytes")
            }
            ResponseError::LineTooLong { limit } => write!(
                f,
                "bad HTTP response: a chunked-body line passed {limit} bytes without ending"
            ),
            ResponseError::Malformed(what) => write!(f, "bad HTTP response: {what}"),
            ResponseError::Truncated => {
                f.write_str("the server closed the connection before the response was complete")
            }
        }
    }
}

impl std::error::Error for ResponseError {}

impl From<ResponseError> for Error {
    fn from(e: ResponseError) -> Error {
        let kind = match e {
            ResponseError::Truncated => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        Error::Io {
            kind,
            message: e.to_string(),
            source: None,
        }
    }
}

fn malformed(e: impl fmt::Display) -> ResponseError {
    ResponseError::Malformed(e.to_string())
}

/// The longest `Location` kept from a redirect, in bytes.
pub(crate) const MAX_LOCATION: usize = 512;

/// `s`, at most `max` bytes of it (at a character boundary), with `...` if it was cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A response that was read (as far as it is worth reading).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The final status (never 1xx: informational answers are skipped).
    pub status: u16,
    /// The `Retry-After` header's raw value, if one was sent (and was visible ASCII).
    pub retry_after: Option<String>,
    /// A redirect's (3xx) `Location` header, if one was sent (and was visible ASCII), cut at
    /// [`MAX_LOCATION`] bytes: redirects are not followed, but a person needs to know where.
    pub location: Option<String>,
    /// Whether the protocol lets the connection carry another request: false after
    /// `Connection: close`, an HTTP/1.0 answer without keep-alive, a close-delimited body, a
    /// body cut at its bound, or bytes after the response.
    pub reusable: bool,
    /// Whether the whole body was read (false: it was cut at [`MAX_RESPONSE_BODY`] decoded
    /// or `MAX_RESPONSE_BODY + MAX_FRAMING` raw bytes).
    pub complete: bool,
}

/// What one [`ResponseReader::feed`] gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fed {
    /// The response is not complete: feed more (or call `eof`).
    More,
    /// The response is read; the reader is finished.
    Done(Answer),
}

enum Phase {
    Head(Call<RecvResponse>),
    Body(Call<RecvBody>),
    Finished,
    /// Only while moving between states.
    Gone,
}

/// Reads one response, within the bounds in this module's header. Blocking? Never: it only
/// looks at the bytes it is given. On an error or an answer the reader is finished; feeding
/// it again is an error (`Malformed`), never a panic.
pub(crate) struct ResponseReader {
    phase: Phase,
    /// Bytes fed and not consumed yet: a partial head or a partial framing line.
    buf: Vec<u8>,
    /// Head: how much of the held bytes was searched for the blank line.
    scanned: usize,
    /// Head: the head searched so far has a byte other than CR and LF (a blank line before
    /// any does not end it: empty lines before a status line are skipped).
    content: bool,
    /// Head bytes consumed so far (1xx answers).
    head_bytes: usize,
    /// Body: the held bytes are a framing line waiting for its end, so `ureq-proto` is not
    /// asked again until a `\n` arrives.
    need_line: bool,
    status: u16,
    retry_after: Option<String>,
    location: Option<String>,
    /// Decoded body bytes, and raw body bytes consumed.
    body: usize,
    raw: usize,
    /// Bytes looked at or moved (searched, handed to `ureq-proto`, copied): the tests check
    /// that it grows linearly with what was fed.
    #[cfg(test)]
    work: usize,
}

impl fmt::Debug for ResponseReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::Head(_) => "head",
            Phase::Body(_) => "body",
            Phase::Finished => "finished",
            Phase::Gone => "gone",
        };
        f.debug_struct("ResponseReader")
            .field("phase", &phase)
            .field("buffered", &self.buf.len())
            .field("status", &self.status)
            .field("body", &self.body)
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

impl ResponseReader {
    /// A reader for the response to `call` (a request fully framed, waiting for its answer).
    pub fn new(call: Call<RecvResponse>) -> Self {
        ResponseReader {
            phase: Phase::Head(call),
            buf: Vec::new(),
            scanned: 0,
            content: false,
            head_bytes: 0,
            need_line: false,
            status: 0,
            retry_after: None,
            location: None,
            body: 0,
            raw: 0,
            #[cfg(test)]
            work: 0,
        }
    }

    /// Bytes held between calls (never more than [`MAX_HEAD`] after a call returns).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether it has answered or failed.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished | Phase::Gone)
    }

    /// Takes the next bytes of the response. Returns `Done` once the response is read (or
    /// read as far as its bounds allow), `More` before. Bytes after the response are not
    /// consumed: the answer then says the connection is not reusable.
    ///
    /// Errors (the reader is then finished): the bounds above, and whatever `ureq-proto`
    /// refuses.
    pub fn feed(&mut self, input: &[u8]) -> Result<Fed, ResponseError> {
        if self.is_finished() {
            return Err(ResponseError::Malformed(
                "bytes after the response was read".into(),
            ));
        }
        // Most responses arrive whole: read them from `input`, copying nothing. Otherwise
        // the held bytes and the new ones are read as one slice.
        let result = if self.buf.is_empty() {
            let result = self.process(input, 0);
            if let Ok((used, Fed::More)) = result {
                self.buf.extend_from_slice(&input[used..]);
                #[cfg(test)]
                {
                    self.work += input.len() - used;
                }
            }
            result
        } else {
            let old = self.buf.len();
            let mut held = mem::take(&mut self.buf);
            held.extend_from_slice(input);
            #[cfg(test)]
            {
                self.work += input.len();
            }
            let result = self.process(&held, old);
            if let Ok((used, Fed::More)) = result {
                // Each byte is moved here at most once: what stays is a partial head or
                // line, and the next consumption takes all of it.
                held.drain(..used);
                #[cfg(test)]
                {
                    self.work += if used > 0 { held.len() } else { 0 };
                }
                self.buf = held;
            }
            result
        };
        match result {
            Ok((used, Fed::More)) => {
                self.scanned -= used.min(self.scanned);
                Ok(Fed::More)
            }
            Ok((_, done)) => {
                self.finish();
                Ok(done)
            }
            Err(e) => {
                self.finish();
                Err(e)
            }
        }
    }

    /// The peer closed its side. A close-delimited body, or a chunked one whose last chunk
    /// came, ends here (the answer is not reusable); anything else is `Truncated`.
    pub fn eof(&mut self) -> Result<Answer, ResponseError> {
        let ended = match &self.phase {
            Phase::Body(call) => {
                matches!(call.body_mode(), BodyMode::CloseDelimited) || call.is_ended_chunked()
            }
            _ => false,
        };
        let was_finished = self.is_finished();
        self.finish();
        if ended {
            Ok(self.answer(false, true))
        } else if was_finished {
            Err(ResponseError::Malformed(
                "end of stream after the response was read".into(),
            ))
        } else {
            Err(ResponseError::Truncated)
        }
    }

    fn finish(&mut self) {
        self.phase = Phase::Finished;
        self.buf = Vec::new();
        self.scanned = 0;
    }

    fn answer(&mut self, reusable: bool, complete: bool) -> Answer {
        Answer {
            status: self.status,
            retry_after: self.retry_after.take(),
            location: self.location.take(),
            reusable,
            complete,
        }
    }

    /// Reads what it can of `src`, of which `src[..old]` was seen before. Returns how much
    /// of `src` was consumed, and the outcome.
    fn process(&mut self, src: &[u8], old: usize) -> Result<(usize, Fed), ResponseError> {
        let mut pos = 0;
        loop {
            match mem::replace(&mut self.phase, Phase::Gone) {
                Phase::Head(mut call) => {
                    let Some(end) = self.find_head_end(src) else {
                        self.phase = Phase::Head(call);
                        if self.head_bytes + (src.len() - pos) > MAX_HEAD {
                            return Err(ResponseError::HeadTooLarge { limit: MAX_HEAD });
                        }
                        return Ok((pos, Fed::More));
                    };
                    if self.head_bytes + (end - pos) > MAX_HEAD {
                        return Err(ResponseError::HeadTooLarge { limit: MAX_HEAD });
                    }
                    #[cfg(test)]
                    {
                        self.work += end - pos;
                    }
                    let (used, resp) = call
                        .try_response(&src[pos..end], false)
                        .map_err(malformed)?;
                    if used > 0 {
                        pos += used;
                        self.head_bytes += used;
                        self.scanned = pos;
                        self.content = false;
                    }
                    let Some(resp) = resp else {
                        // A 1xx answer was skipped (or, if nothing was used, the blank line
                        // did not end a head after all): look for the next end.
                        self.phase = Phase::Head(call);
                        continue;
                    };
                    if resp.status().as_u16() == 101 {
                        return Err(malformed("101 Switching Protocols was not asked for"));
                    }
                    self.status = resp.status().as_u16();
                    self.retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    self.location = if (300..400).contains(&self.status) {
                        resp.headers()
                            .get("location")
                            .and_then(|v| v.to_str().ok())
                            .map(|v| cut(v, MAX_LOCATION))
                    } else {
                        None
                    };
                    let extra = pos < src.len();
                    match call.proceed() {
                        Some(RecvResponseResult::RecvBody(call)) => {
                            self.phase = Phase::Body(call);
                            self.need_line = false;
                        }
                        Some(RecvResponseResult::Redirect(call)) => {
                            return Ok((pos, self.complete(call.proceed(), extra)));
                        }
                        Some(RecvResponseResult::Cleanup(call)) => {
                            return Ok((pos, self.complete(call, extra)));
                        }
                        None => return Err(malformed("incomplete response head")),
                    }
                }
                Phase::Body(call) => return self.body(call, src, pos, old),
                Phase::Finished | Phase::Gone => {
                    return Err(malformed("the response was already read"));
                }
            }
        }
    }

    /// Searches the unsearched part of `src` for the blank line that ends a head. Returns
    /// the index just past it.
    fn find_head_end(&mut self, src: &[u8]) -> Option<usize> {
        let from = self.scanned;
        let mut i = from;
        let mut end = None;
        while i < src.len() {
            let b = src[i];
            i += 1;
            if b == b'\n' {
                // `content` guarantees a non-CR/LF byte before this line, so the look-back
                // stays inside the head.
                if self.content
                    && (src[i - 2] == b'\n' || (src[i - 2] == b'\r' && src[i - 3] == b'\n'))
                {
                    end = Some(i);
                    break;
                }
            } else if b != b'\r' {
                self.content = true;
            }
        }
        self.scanned = i;
        #[cfg(test)]
        {
            self.work += i - from;
        }
        end
    }

    /// The body phase, from `src[pos..]` (`src[..old]` was seen before).
    fn body(
        &mut self,
        mut call: Call<RecvBody>,
        src: &[u8],
        mut pos: usize,
        old: usize,
    ) -> Result<(usize, Fed), ResponseError> {
        if matches!(call.body_mode(), BodyMode::CloseDelimited) {
            // Ends when the server closes (`eof`): count it, never reuse the connection.
            self.body += src.len() - pos;
            self.raw += src.len() - pos;
            self.phase = Phase::Body(call);
            if self.body > MAX_RESPONSE_BODY {
                return Ok((src.len(), Fed::Done(self.answer(false, false))));
            }
            return Ok((src.len(), Fed::More));
        }
        let waiting = self.need_line && !src[old.max(pos)..].contains(&b'\n');
        #[cfg(test)]
        {
            self.work += src.len() - old.max(pos);
        }
        if !waiting {
            let mut scratch = [0u8; SCRATCH];
            loop {
                // Never decode more than one byte past the bound.
                // Never decode more than one byte past the bounds, nor read more than one
                // raw byte past them.
                let room = (MAX_RESPONSE_BODY + 1 - self.body).min(SCRATCH);
                let take = (MAX_RAW + 1 - self.raw).min(src.len() - pos);
                let (used, produced) = call
                    .read(&src[pos..pos + take], &mut scratch[..room])
                    .map_err(malformed)?;
                pos += used;
                self.raw += used;
                self.body += produced;
                #[cfg(test)]
                {
                    self.work += used;
                }
                if self.body > MAX_RESPONSE_BODY || self.raw > MAX_RAW {
                    return Ok((pos, Fed::Done(self.answer(false, false))));
                }
                if call.can_proceed() {
                    let extra = pos < src.len();
                    let cleanup = match call.proceed() {
                        Some(RecvBodyResult::Cleanup(c)) => c,
                        Some(RecvBodyResult::Redirect(c)) => c.proceed(),
                        None => return Err(malformed("incomplete response body")),
                    };
                    return Ok((pos, self.complete(cleanup, extra)));
                }
                if used == 0 || pos == src.len() {
                    break;
                }
            }
        }
        // What is left is a framing line without its end (the body's data is always taken).
        let held = src.len() - pos;
        #[cfg(test)]
        if !waiting {
            // `ureq-proto` searched the unfinished line for its end.
            self.work += held;
        }
        self.need_line = held > 0;
        self.phase = Phase::Body(call);
        if self.raw + held > MAX_RAW {
            // Whatever the held bytes are, the raw bound is reached.
            return Ok((pos, Fed::Done(self.answer(false, false))));
        }
        if held > MAX_LINE {
            return Err(ResponseError::LineTooLong { limit: MAX_LINE });
        }
        Ok((pos, Fed::More))
    }

    /// The whole response was read; `extra` bytes followed it.
    fn complete(&mut self, call: Call<Cleanup>, extra: bool) -> Fed {
        // Bytes after the response leave the stream in a state no next request can start
        // from.
        let reusable = !call.must_close_connection() && !extra;
        Fed::Done(self.answer(reusable, true))
    }
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
