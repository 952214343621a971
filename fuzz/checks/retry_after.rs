//! `policy::parse_retry_after`: a `Retry-After` value, from any server.
//!
//! Input: 4 bytes of `now` (seconds since 1970, little-endian), then the header value.
//! Invariants: never panics; surrounding whitespace never matters; delay-seconds give exactly
//! that many seconds (saturating, never more); an HTTP-date gives exactly the wait until that
//! date (zero for one in the past), so `now + wait` written back as a date gives the same wait.

use std::time::{Duration, UNIX_EPOCH};

use hookwire::policy::parse_retry_after;

pub fn check(data: &[u8]) {
    let (head, value) = data.split_at(data.len().min(4));
    let mut secs = [0u8; 4];
    secs[..head.len()].copy_from_slice(head);
    let now = UNIX_EPOCH + Duration::from_secs(u32::from_le_bytes(secs).into());
    let Ok(value) = std::str::from_utf8(value) else {
        return; // callers hand over the header as text (`HeaderValue::to_str`)
    };
    let got = parse_retry_after(value, now);
    assert_eq!(parse_retry_after(&format!(" \t{value}\t "), now), got);

    let trimmed = value.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let want = trimmed.parse::<u64>().unwrap_or(u64::MAX);
        assert_eq!(got, Some(Duration::from_secs(want)), "{value:?}");
        return;
    }
    let date = httpdate::parse_http_date(trimmed).ok();
    let Some(wait) = got else {
        assert_eq!(date, None, "{value:?} is a date but gave no wait");
        return;
    };
    let date = date.unwrap_or_else(|| panic!("{value:?} is neither seconds nor a date: {wait:?}"));
    let want = date.duration_since(now).unwrap_or(Duration::ZERO);
    assert_eq!(wait, want, "{value:?}");
    let at = now + wait;
    assert_eq!(
        parse_retry_after(&httpdate::fmt_http_date(at), now),
        Some(wait),
        "{value:?}"
    );
}
