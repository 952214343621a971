//! A webhook request for [`Conn`](super::conn::Conn): its head, written with `ureq-proto`,
//! and its [`Body`], built once and shared by every attempt.

use std::ops::Deref;
use std::sync::Arc;

use ureq_proto::client::state::RecvResponse;
use ureq_proto::client::{Call, SendRequestResult};
use ureq_proto::http::{Method, Request};

use crate::Error;

/// A request body, built once and shared: cloning it (for another attempt, or for the
/// connection that writes it) copies no byte. Immutable once built.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Body(Arc<Vec<u8>>);

impl Body {
    /// How many hold these bytes (tests: who lets go when).
    #[cfg(test)]
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

impl From<Vec<u8>> for Body {
    /// Takes the buffer as it is (no copy).
    fn from(bytes: Vec<u8>) -> Self {
        Body(Arc::new(bytes))
    }
}

impl Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Body {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.0.as_slice() == other
    }
}

impl std::fmt::Debug for Body {
    /// The length and the first bytes, as text: a batch's body is 100 KB and more.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 200;
        let shown = String::from_utf8_lossy(&self.0[..self.0.len().min(SHOWN)]);
        let more = if self.0.len() > SHOWN { "..." } else { "" };
        write!(f, "Body({} bytes: {shown:?}{more})", self.0.len())
    }
}

/// Headers the connection writes itself; a caller's copy is refused.
const RESERVED: [&str; 3] = ["host", "content-length", "transfer-encoding"];

/// One `POST`'s head: what the target fixes and what the caller adds.
pub(crate) struct RequestHead<'a> {
    /// The request target (path and query).
    pub path: &'a str,
    /// The `Host` header.
    pub host: &'a str,
    /// An `Authorization` header from credentials in the URL.
    pub authorization: Option<&'a str>,
    /// The caller's headers (`Content-Type`, signatures, ...).
    pub headers: &'a [(&'a str, &'a str)],
    /// The body's length, sent as `Content-Length`.
    pub body_len: usize,
}

impl RequestHead<'_> {
    /// Writes the head into `out` (cleared first, its capacity reused) and returns the call
    /// moved past the body, waiting for the response: the body is written by the caller
    /// straight from its buffer, which the call is told with `consume_direct_write`.
    ///
    /// Errors: `Error::Config` naming `headers` for a header the connection sets itself, or
    /// one that is not valid HTTP.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<Call<RecvResponse>, Error> {
        let bad = |e: &dyn std::fmt::Display| {
            Error::config("headers", format!("not a valid request: {e}"))
        };
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.path)
            .header("host", self.host);
        if let Some(auth) = self.authorization {
            builder = builder.header("authorization", auth);
        }
        for (name, value) in self.headers {
            if RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
                return Err(Error::config(
                    "headers",
                    format!("{name} is set by the connection itself"),
                ));
            }
            builder = builder.header(*name, *value);
        }
        let request = builder
            .header("content-length", self.body_len)
            .body(())
            .map_err(|e| bad(&e))?;
        let mut call = Call::new(request).map_err(|e| bad(&e))?.proceed();
        out.clear();
        let mut used = 0;
        while !call.can_proceed() {
            if out.len() - used < 1024 {
                out.resize(used + 4096.max(out.len()), 0);
            }
            match call.write(&mut out[used..]) {
                Ok(n) => used += n,
                // A line longer than the space left: grow and try again.
                Err(ureq_proto::Error::OutputOverflow) => out.resize(out.len() * 2, 0),
                Err(e) => return Err(bad(&e)),
            }
        }
        out.truncate(used);
        match call.proceed().map_err(|e| bad(&e))? {
            Some(SendRequestResult::RecvResponse(call)) => Ok(call),
            Some(SendRequestResult::SendBody(mut call)) => {
                call.consume_direct_write(self.body_len)
                    .map_err(|e| bad(&e))?;
                call.proceed()
                    .ok_or_else(|| Error::config("headers", "the body could not be framed"))
            }
            // No `Expect` is ever sent by the connection; a caller's is refused here.
            Some(SendRequestResult::Await100(_)) | None => Err(Error::config(
                "headers",
                "Expect: 100-continue is not supported",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &[(&str, &str)], body_len: usize) -> Result<String, Error> {
        let mut out = b"old bytes".to_vec();
        let req = RequestHead {
            path: "/p?q=1",
            host: "h:81",
            authorization: None,
            headers,
            body_len,
        };
        req.write(&mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn writes_a_post_head_with_framing_last() {
        assert_eq!(
            head(&[("content-type", "application/json")], 12).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nhost: h:81\r\ncontent-type: application/json\r\n\
             content-length: 12\r\n\r\n"
        );
        // An empty body is still framed, so the server never waits for one.
        assert!(head(&[], 0).unwrap().ends_with("content-length: 0\r\n\r\n"));
    }

    #[test]
    fn long_headers_grow_the_buffer() {
        let long = "v".repeat(10_000);
        let text = head(&[("x-long", &long)], 1).unwrap();
        assert!(text.contains(&long) && text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_body_is_shared_not_copied() {
        let body = Body::from(br#"{"events":[]}"#.to_vec());
        let at = body.as_ptr();
        let attempt = body.clone();
        assert_eq!(attempt.as_ptr(), at, "the same bytes");
        assert_eq!(attempt, *br#"{"events":[]}"#);
        assert_eq!(body.holders(), 2);
        drop(attempt);
        assert_eq!(body.holders(), 1);
        assert_eq!(format!("{body:?}"), r#"Body(13 bytes: "{\"events\":[]}")"#);
    }

    #[test]
    fn expect_continue_is_refused() {
        let err = head(&[("expect", "100-continue")], 3).unwrap_err();
        assert!(matches!(
            err,
            Error::Config {
                field: "headers",
                ..
            }
        ));
    }
}
