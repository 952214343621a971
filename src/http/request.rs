//! Writing a webhook request's head with `ureq-proto`, for [`Conn`](super::conn::Conn).

use ureq_proto::client::state::RecvResponse;
use ureq_proto::client::{Call, SendRequestResult};
use ureq_proto::http::{Method, Request};

use crate::Error;

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
