//! `ResponseReader` fed byte slices: no socket, no thread, no clock.

use proptest::prelude::*;

use super::*;
use crate::http::request::RequestHead;

/// A reader for the answer to a `POST` with a 2-byte body.
fn reader() -> ResponseReader {
    let mut head = Vec::new();
    let call = RequestHead {
        path: "/hook",
        host: "example.test",
        authorization: None,
        headers: &[("content-type", "application/json")],
        body_len: 2,
    }
    .write(&mut head)
    .unwrap();
    ResponseReader::new(call)
}

/// Feeds `bytes` in pieces of `step` until an outcome, checking the held-bytes bound after
/// every call. `None`: every byte was taken and more is wanted.
fn feed_by(
    r: &mut ResponseReader,
    bytes: &[u8],
    step: usize,
) -> Option<Result<Answer, ResponseError>> {
    for piece in bytes.chunks(step.max(1)) {
        let fed = r.feed(piece);
        assert!(r.buffered() <= MAX_HEAD, "{r:?}");
        match fed {
            Ok(Fed::More) => {}
            Ok(Fed::Done(a)) => return Some(Ok(a)),
            Err(e) => return Some(Err(e)),
        }
    }
    None
}

fn answer(bytes: &[u8], step: usize) -> Answer {
    let mut r = reader();
    match feed_by(&mut r, bytes, step) {
        Some(Ok(a)) => a,
        other => panic!("expected an answer, got {other:?} ({r:?})"),
    }
}

fn error(bytes: &[u8], step: usize) -> ResponseError {
    let mut r = reader();
    match feed_by(&mut r, bytes, step) {
        Some(Err(e)) => e,
        other => panic!("expected an error, got {other:?} ({r:?})"),
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

#[test]
fn a_whole_response_in_one_slice_or_byte_by_byte() {
    for step in [OK.len(), 7, 1] {
        assert_eq!(
            answer(OK, step),
            Answer {
                status: 200,
                retry_after: None,
                location: None,
                reusable: true,
                complete: true
            },
            "step {step}"
        );
    }
}

#[test]
fn a_redirect_keeps_its_location_and_only_a_redirect() {
    let moved = b"HTTP/1.1 301 Moved Permanently\r\nlocation: https://new.example/hook\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(
        answer(moved, 5).location.as_deref(),
        Some("https://new.example/hook")
    );
    let long = format!(
        "HTTP/1.1 308 Permanent Redirect\r\nlocation: /{}\r\ncontent-length: 0\r\n\r\n",
        "x".repeat(2000)
    );
    let kept = answer(long.as_bytes(), 64).location.unwrap();
    assert_eq!(kept.len(), MAX_LOCATION + 3, "cut, with an ellipsis");
    let ok = b"HTTP/1.1 201 Created\r\nlocation: /items/1\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(answer(ok, 7).location, None, "not a redirect");
}

#[test]
fn retry_after_and_connection_close() {
    let a = answer(
        b"HTTP/1.1 503 Busy\r\nretry-after: 7\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        5,
    );
    assert_eq!((a.status, a.retry_after.as_deref()), (503, Some("7")));
    assert!(!a.reusable && a.complete);
    // HTTP/1.0: closes unless it asks for keep-alive.
    assert!(!answer(b"HTTP/1.0 204 No Content\r\n\r\n", 3).reusable);
    let keep = b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n";
    assert!(answer(keep, 3).reusable);
}

#[test]
fn informational_answers_are_skipped() {
    let bytes = b"HTTP/1.1 100 Continue\r\n\r\n\
        HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n\
        HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok";
    for step in [bytes.len(), 10, 1] {
        let a = answer(bytes, step);
        assert_eq!(
            (a.status, a.reusable, a.complete),
            (201, true, true),
            "{step}"
        );
    }
    // Empty lines before a status line are skipped too, not taken for the end of a head.
    assert_eq!(
        answer(b"\r\n\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", 1).status,
        200
    );
}

#[test]
fn an_unasked_for_switch_of_protocols_is_refused() {
    let e = error(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
        4,
    );
    assert!(
        matches!(e, ResponseError::Malformed(ref m) if m.contains("101")),
        "{e:?}"
    );
}

#[test]
fn chunked_bodies_with_extensions_and_trailers() {
    let bytes = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: yes\r\n\r\n";
    for step in [bytes.len(), 3, 1] {
        let a = answer(bytes, step);
        assert_eq!(
            (a.status, a.reusable, a.complete),
            (200, true, true),
            "{step}"
        );
    }
}

#[test]
fn bytes_after_the_response_cost_the_connection() {
    let mut bytes = OK.to_vec();
    bytes.extend_from_slice(b"HTTP/1.1 408 x\r\n\r\n");
    let a = answer(&bytes, bytes.len());
    assert!(a.complete && !a.reusable);
    let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nX";
    assert!(!answer(chunked, chunked.len()).reusable);
    // Fed again after its answer, a reader refuses (it never panics).
    let mut r = reader();
    assert!(matches!(r.feed(OK), Ok(Fed::Done(_))));
    assert!(matches!(r.feed(b"x"), Err(ResponseError::Malformed(_))));
    assert!(matches!(r.eof(), Err(ResponseError::Malformed(_))));
}

fn length_delimited(len: usize) -> Vec<u8> {
    let mut v = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n").into_bytes();
    v.resize(v.len() + len, b'b');
    v
}

#[test]
fn a_body_over_the_bound_reports_the_status_and_is_not_read_further() {
    let fits = length_delimited(MAX_RESPONSE_BODY);
    let a = answer(&fits, 16 * 1024);
    assert!(a.complete && a.reusable);

    // 100 MB announced: the answer comes once one byte past the bound was decoded.
    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n";
    let mut r = reader();
    assert_eq!(r.feed(head), Ok(Fed::More));
    let chunk = [b'b'; 16 * 1024];
    let mut fed = 0;
    let a = loop {
        fed += chunk.len();
        assert!(
            fed <= MAX_RESPONSE_BODY + chunk.len(),
            "read past the bound"
        );
        if let Fed::Done(a) = r.feed(&chunk).unwrap() {
            break a;
        }
    };
    assert_eq!((a.status, a.reusable, a.complete), (200, false, false));
    assert_eq!(r.body, MAX_RESPONSE_BODY + 1);
}

#[test]
fn framing_overhead_is_bounded_too() {
    // One-byte chunks: the raw bound is reached before the decoded one.
    let mut bytes = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    while bytes.len() < 2 * (MAX_RESPONSE_BODY + MAX_FRAMING) {
        bytes.extend_from_slice(b"1\r\nx\r\n");
    }
    let mut r = reader();
    let Some(Ok(a)) = feed_by(&mut r, &bytes, 1000) else {
        panic!("{r:?}");
    };
    assert_eq!((a.status, a.reusable, a.complete), (200, false, false));
    assert!(r.raw <= MAX_RESPONSE_BODY + MAX_FRAMING + 1 && r.body < MAX_RESPONSE_BODY);
}

/// The defect of issue 9: a chunk-size line that never ends.
#[test]
fn an_endless_chunk_size_line_fails_within_the_line_bound_in_linear_work() {
    let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    for step in [16 * 1024, 1000, 1] {
        let mut r = reader();
        assert_eq!(r.feed(head), Ok(Fed::More));
        let ones = [b'1'; 16 * 1024];
        let mut fed = 0;
        let e = loop {
            match r.feed(&ones[..step]) {
                Ok(Fed::More) => {
                    fed += step;
                    assert!(r.buffered() <= MAX_LINE, "{r:?}");
                }
                Ok(Fed::Done(a)) => panic!("{a:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(e, ResponseError::LineTooLong { limit: MAX_LINE });
        assert!(fed <= MAX_LINE, "{fed}");
        // Each byte is searched for a line end once and copied once: linear, however split.
        let total = head.len() + fed + step;
        assert!(
            r.work <= 3 * total,
            "work {} for {total} bytes (step {step})",
            r.work
        );
        assert_eq!(r.buffered(), 0, "a failed reader holds nothing");
    }
}

#[test]
fn an_endless_head_fails_at_the_head_bound() {
    // One header line that never ends.
    let mut r = reader();
    assert_eq!(r.feed(b"HTTP/1.1 200 OK\r\nx-endless: "), Ok(Fed::More));
    let ys = [b'y'; 1000];
    let mut fed = 0;
    let e = loop {
        match r.feed(&ys) {
            Ok(Fed::More) => fed += ys.len(),
            other => break other.unwrap_err(),
        }
    };
    assert_eq!(e, ResponseError::HeadTooLarge { limit: MAX_HEAD });
    assert!(fed <= MAX_HEAD);
    assert!(r.work <= 3 * (fed + 1100), "{}", r.work);

    // 10,000 headers: past the head bound long before the last.
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..10_000 {
        many.extend_from_slice(format!("x-header-{i:05}: value\r\n").as_bytes());
    }
    many.extend_from_slice(b"content-length: 0\r\n\r\n");
    assert_eq!(
        error(&many, 16 * 1024),
        ResponseError::HeadTooLarge { limit: MAX_HEAD }
    );
    // Fewer bytes but more than 128 headers: refused by ureq-proto, as a typed error.
    let mut tiny = b"HTTP/1.1 200 OK\r\n".to_vec();
    for _ in 0..1000 {
        tiny.extend_from_slice(b"a:b\r\n");
    }
    tiny.extend_from_slice(b"\r\n");
    assert!(matches!(
        error(&tiny, tiny.len()),
        ResponseError::Malformed(_)
    ));
}

#[test]
fn endless_informational_answers_count_against_the_head_bound() {
    let mut r = reader();
    let hint = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n";
    let mut fed = 0;
    let e = loop {
        match r.feed(hint) {
            Ok(Fed::More) => fed += hint.len(),
            other => break other.unwrap_err(),
        }
    };
    assert_eq!(e, ResponseError::HeadTooLarge { limit: MAX_HEAD });
    assert!(fed <= MAX_HEAD);
}

#[test]
fn close_delimited_bodies_end_with_the_connection() {
    let mut r = reader();
    let bytes = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello";
    assert_eq!(feed_by(&mut r, bytes, 4), None);
    assert_eq!(
        r.buffered(),
        0,
        "a close-delimited body is counted, not held"
    );
    let a = r.eof().unwrap();
    assert_eq!((a.status, a.reusable, a.complete), (200, false, true));

    // Longer than the bound: answered without waiting for the end.
    let mut r = reader();
    assert_eq!(feed_by(&mut r, b"HTTP/1.1 200 OK\r\n\r\n", 100), None);
    let a = feed_by(&mut r, &[b'z'; 2 * MAX_RESPONSE_BODY], 4096)
        .unwrap()
        .unwrap();
    assert_eq!((a.status, a.reusable, a.complete), (200, false, false));
}

#[test]
fn an_early_end_of_stream_is_truncation() {
    for partial in [
        &b""[..],
        b"HTTP/1.1 200 OK\r\ncontent-",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
    ] {
        let mut r = reader();
        assert_eq!(feed_by(&mut r, partial, 3), None);
        assert_eq!(r.eof(), Err(ResponseError::Truncated));
    }
    // The last chunk came, only the final CRLF did not: the answer stands.
    let mut r = reader();
    let bytes = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n";
    assert_eq!(feed_by(&mut r, bytes, 5), None);
    let a = r.eof().unwrap();
    assert_eq!((a.status, a.reusable), (200, false));
}

#[test]
fn errors_become_io_errors_for_the_retry_strategy() {
    let e = Error::from(ResponseError::LineTooLong { limit: MAX_LINE });
    assert!(matches!(
        e,
        Error::Io { kind: io::ErrorKind::InvalidData, ref message, .. } if message.contains("8192")
    ));
    let e = Error::from(ResponseError::Truncated);
    assert!(matches!(
        e,
        Error::Io {
            kind: io::ErrorKind::UnexpectedEof,
            ..
        }
    ));
}

/// A valid response: 1xx answers, a status, headers, and a body framed one way or another.
fn valid_response() -> impl Strategy<Value = Vec<u8>> {
    (
        0usize..3,
        prop_oneof![Just(200u16), Just(204), Just(404), Just(503)],
        proptest::collection::vec("[a-z]{1,8}", 0..6),
        0usize..3000,
        0u8..3,
        1usize..700,
    )
        .prop_map(|(infos, status, headers, len, framing, chunk)| {
            let mut v = Vec::new();
            for i in 0..infos {
                let code = if i % 2 == 0 { 100 } else { 103 };
                v.extend_from_slice(format!("HTTP/1.1 {code} Info\r\n\r\n").as_bytes());
            }
            v.extend_from_slice(format!("HTTP/1.1 {status} S\r\n").as_bytes());
            for (i, h) in headers.iter().enumerate() {
                v.extend_from_slice(format!("x-{i}: {h}\r\n").as_bytes());
            }
            let body = vec![b'q'; if status == 204 { 0 } else { len }];
            match (status, framing) {
                (204, _) => v.extend_from_slice(b"\r\n"),
                (_, 0) => {
                    v.extend_from_slice(
                        format!("content-length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    v.extend_from_slice(&body);
                }
                (_, 1) => {
                    v.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                    for c in body.chunks(chunk) {
                        v.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                        v.extend_from_slice(c);
                        v.extend_from_slice(b"\r\n");
                    }
                    v.extend_from_slice(b"0\r\n\r\n");
                }
                _ => {
                    v.extend_from_slice(b"connection: close\r\n\r\n");
                    v.extend_from_slice(&body);
                }
            }
            v
        })
}

/// Feeds `bytes` cut at `cuts` (then the end of stream, if still wanted).
fn outcome(bytes: &[u8], cuts: &[usize]) -> (Result<Answer, ResponseError>, usize) {
    let mut r = reader();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    for w in points.windows(2) {
        match r.feed(&bytes[w[0]..w[1]]) {
            Ok(Fed::More) => {}
            Ok(Fed::Done(a)) => return (Ok(a), r.work),
            Err(e) => return (Err(e), r.work),
        }
        assert!(r.buffered() <= MAX_HEAD);
    }
    (r.eof(), r.work)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_nor_overfill(
        chunked in any::<bool>(),
        pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..5000), 0..24),
    ) {
        // Mostly the bytes HTTP framing is made of, so the parsers go deep.
        let pieces: Vec<Vec<u8>> = pieces
            .into_iter()
            .map(|p| p.into_iter().map(|b| match b % 16 { 0..=3 => b'1', 4 => b'\r', 5 => b'\n', 6 => b';', 7 => b':', _ => b }).collect())
            .collect();
        let mut r = reader();
        if chunked {
            let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            prop_assert_eq!(r.feed(head), Ok(Fed::More));
        }
        let mut fed = 0;
        for p in &pieces {
            fed += p.len();
            let out = r.feed(p);
            prop_assert!(r.buffered() <= MAX_HEAD, "{:?}", r);
            if chunked {
                prop_assert!(r.buffered() <= MAX_LINE, "{:?}", r);
            }
            if !matches!(out, Ok(Fed::More)) {
                prop_assert!(r.is_finished());
                break;
            }
        }
        let _ = r.eof();
        prop_assert!(r.work <= 4 * (fed + 64) + 2 * MAX_HEAD, "work {} for {}", r.work, fed);
    }

    #[test]
    fn however_a_valid_response_is_split_the_answer_is_the_same(
        bytes in valid_response(),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
    ) {
        let (whole, _) = outcome(&bytes, &[]);
        let (split, work) = outcome(&bytes, &cuts);
        let whole = whole.unwrap();
        prop_assert_eq!(&split, &Ok(whole.clone()));
        prop_assert!(whole.complete);
        prop_assert!(work <= 4 * bytes.len() + 64, "work {} for {}", work, bytes.len());
    }
}
