//! The engine's HTTP/1.1 response reader (`ResponseReader`): the bytes a webhook receiver
//! sends back, from anyone, heads, bodies and chunked framing included.
//!
//! Input: the first byte picks how the rest is cut into reads (1 to 64 bytes each, the same
//! size every time) and whether the peer then closes (its low bit); the rest is the response.
//!
//! Invariants: never panics; never holds more than its bound between reads (asserted inside
//! `read_response`); an answer is never a 1xx status (three digits: 600..=999 are no HTTP
//! status, but RFC 9110 has a client take them as 5xx, so they pass); and how the
//! bytes were cut into reads changes nothing: the same bytes read whole give the same outcome
//! (answer, error, or wanting more), so no state leaks between reads.

use hookwire::fuzzing::read_response;

pub fn check(data: &[u8]) {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let eof = control & 1 == 1;
    let step = usize::from(control >> 1) % 64 + 1;
    let pieces: Vec<&[u8]> = bytes.chunks(step).collect();
    let cut = read_response(&pieces, eof);
    let whole = read_response(&[bytes], eof);
    if let Ok(Some((status, _, _))) = cut {
        assert!((200..=999).contains(&status), "answered {status}");
    }
    // An error's wording may name where it stopped; whether it is one may not change.
    match (&cut, &whole) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "cut into {step}-byte reads"),
        (Err(_), Err(_)) => {}
        _ => panic!("cut into {step}-byte reads: {cut:?}, whole: {whole:?}"),
    }
}
