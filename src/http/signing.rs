//! Standard Webhooks signatures (<https://www.standardwebhooks.com>, spec v1.0.0, symmetric
//! scheme): who sent this request, and was it changed on the way?
//!
//! The sender signs `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256 under each of
//! its secrets and sends `v1,<base64 tag>` entries, space-separated, in `webhook-signature`.
//! More than one secret is how a secret is rotated without downtime: sign with the old and the
//! new one, and a receiver that knows either accepts. [`Signer`] is the sending half (used by
//! `HttpSink`), [`verify`] the receiving half (used by the test kit's receiver, and usable by
//! any host that receives hookwire's webhooks). Nothing here does I/O or reads the clock:
//! `verify` takes `now`.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::Error;

/// The header carrying the event's stable id (the receiver's idempotency key).
pub const WEBHOOK_ID: &str = "webhook-id";
/// The header carrying the attempt's time, in whole seconds since the Unix epoch.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the space-separated `v1,<base64>` signatures.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The prefix the spec gives serialized symmetric secrets.
const PREFIX: &str = "whsec_";
/// The spec asks for at least 24 random bytes; shorter keys are too weak to accept.
const MIN_KEY: usize = 24;
/// The spec's maximum (512 bits). HMAC-SHA256 hashes longer keys down to 32 bytes anyway, so
/// more buys nothing and usually means the wrong value was pasted in.
const MAX_KEY: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// A symmetric signing secret: 24 to 64 raw key bytes.
///
/// Parsed from the spec's serialization, `whsec_` followed by standard (padded) base64. A bare
/// base64 string without the prefix is accepted too, as the reference libraries accept it, so
/// secrets copied from providers that omit the prefix work. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Box<[u8]>,
}

impl Secret {
    /// A secret from raw key bytes. Fails with [`Error::Config`] (field `secret`) unless it is
    /// 24 to 64 bytes long.
    pub fn from_bytes(key: impl Into<Vec<u8>>) -> Result<Self, Error> {
        let key = key.into();
        if key.len() < MIN_KEY || key.len() > MAX_KEY {
            return Err(Error::config(
                "secret",
                format!(
                    "a signing key must be {MIN_KEY} to {MAX_KEY} bytes, this one is {}",
                    key.len()
                ),
            ));
        }
        Ok(Secret {
            key: key.into_boxed_slice(),
        })
    }

    /// The secret serialized as the spec shows it to people: `whsec_<base64>`.
    ///
    /// This exposes the key; it is for handing the secret to a receiver's configuration.
    pub fn to_whsec(&self) -> String {
        format!("{PREFIX}{}", BASE64.encode(&self.key))
    }

    fn mac(&self, msg_id: &str, timestamp: u64, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length, and ours are checked at construction.
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        // Fed in pieces so the signed content is never copied into one buffer.
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl FromStr for Secret {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let encoded = s.strip_prefix(PREFIX).unwrap_or(s);
        if encoded.is_empty() {
            return Err(Error::config("secret", "the secret is empty"));
        }
        // The error would quote the offending input, so leave it out: it is a secret.
        let key = BASE64.decode(encoded).map_err(|_| {
            Error::config(
                "secret",
                "not `whsec_` followed by standard base64 (with padding)",
            )
        })?;
        Secret::from_bytes(key)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<redacted, {} bytes>)", self.key.len())
    }
}

/// Signs outgoing webhooks with one or more secrets (more than one while rotating).
#[derive(Debug, Clone)]
pub struct Signer {
    secrets: Vec<Secret>,
}

impl Signer {
    /// A signer for `secrets`. Fails with [`Error::Config`] (field `secrets`) if there are none.
    pub fn new(secrets: Vec<Secret>) -> Result<Self, Error> {
        if secrets.is_empty() {
            return Err(Error::config(
                "secrets",
                "a signer needs at least one secret",
            ));
        }
        Ok(Signer { secrets })
    }

    /// The secrets it signs with.
    pub fn secrets(&self) -> &[Secret] {
        &self.secrets
    }

    /// The `webhook-signature` header value for one attempt: `v1,<base64 tag>` for every
    /// secret, in order, separated by single spaces.
    ///
    /// `msg_id` must not contain `.` if receivers are to be safe from the spec's splicing
    /// attack; hookwire passes the event id through unchanged, so choose ids accordingly.
    pub fn sign(&self, msg_id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut out = String::with_capacity(self.secrets.len() * 48);
        for (i, secret) in self.secrets.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str("v1,");
            let tag = secret.mac(msg_id, timestamp, body).finalize().into_bytes();
            BASE64.encode_string(tag, &mut out);
        }
        out
    }
}

/// Why [`verify`] rejected a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// `webhook-timestamp` is not a whole number of seconds.
    BadTimestamp,
    /// The timestamp is further in the past than the tolerance (a possible replay).
    TooOld,
    /// The timestamp is further in the future than the tolerance.
    TooNew,
    /// The signature header holds no `v1` entry at all.
    NoSignature,
    /// No `v1` entry matches any of the secrets.
    NoMatch,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VerifyError::BadTimestamp => "webhook-timestamp is not a Unix time in seconds",
            VerifyError::TooOld => "webhook-timestamp is too old",
            VerifyError::TooNew => "webhook-timestamp is too far in the future",
            VerifyError::NoSignature => "webhook-signature has no v1 signature",
            VerifyError::NoMatch => "no signature matches a known secret",
        })
    }
}

impl std::error::Error for VerifyError {}

/// Checks a received webhook against `secrets`.
///
/// Accepts when the timestamp is within `tolerance` of `now` (either way) and ANY `v1` entry
/// of `signature_header` is ANY secret's tag over `{msg_id}.{timestamp}.{body}`. Entries with
/// other versions (`v1a`, future ones) and entries that are not valid base64 are skipped, as
/// the spec asks of receivers. Tags are compared in constant time (`Mac::verify_slice`).
/// The timestamp is signed as its decimal value, as the reference libraries do.
pub fn verify(
    secrets: &[Secret],
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let ts: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    // A clock before 1970 is broken; treat it as the epoch rather than fail.
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let tol = tolerance.as_secs();
    if now.saturating_sub(ts) > tol {
        return Err(VerifyError::TooOld);
    }
    if ts.saturating_sub(now) > tol {
        return Err(VerifyError::TooNew);
    }

    let tags: Vec<Vec<u8>> = signature_header
        .split_ascii_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, tag)| BASE64.decode(tag).ok())
        .collect();
    if tags.is_empty() {
        return Err(VerifyError::NoSignature);
    }
    for secret in secrets {
        let mac = secret.mac(msg_id, ts, body);
        if tags.iter().any(|tag| mac.clone().verify_slice(tag).is_ok()) {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The published vector from the Standard Webhooks reference libraries' tests
    // (standard-webhooks/standard-webhooks, libraries/rust/src/lib.rs, `test_sign`; the other
    // languages' libraries use the same one).
    const VECTOR_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const VECTOR_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const VECTOR_TS: u64 = 1_649_367_553;
    const VECTOR_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const VECTOR_SIG: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn other_secret() -> Secret {
        Secret::from_bytes([7u8; 32]).unwrap()
    }

    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn signs_the_published_vector() {
        let signer = Signer::new(vec![VECTOR_SECRET.parse().unwrap()]).unwrap();
        assert_eq!(signer.sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY), VECTOR_SIG);
    }

    #[test]
    fn verifies_the_published_vector() {
        let s: Secret = VECTOR_SECRET.parse().unwrap();
        let ts = VECTOR_TS.to_string();
        let ok = verify(
            std::slice::from_ref(&s),
            VECTOR_ID,
            &ts,
            VECTOR_SIG,
            VECTOR_BODY,
            at(VECTOR_TS + 10),
            FIVE_MIN,
        );
        assert_eq!(ok, Ok(()));
        // One changed byte anywhere fails.
        let bad = verify(
            std::slice::from_ref(&s),
            VECTOR_ID,
            &ts,
            VECTOR_SIG,
            br#"{"email":"test@example.com","username":"test_usex"}"#,
            at(VECTOR_TS),
            FIVE_MIN,
        );
        assert_eq!(bad, Err(VerifyError::NoMatch));
        let bad = verify(
            &[s],
            "msg_other",
            &ts,
            VECTOR_SIG,
            VECTOR_BODY,
            at(VECTOR_TS),
            FIVE_MIN,
        );
        assert_eq!(bad, Err(VerifyError::NoMatch));
    }

    #[test]
    fn rotation_signs_with_every_secret_and_any_one_verifies() {
        let old: Secret = VECTOR_SECRET.parse().unwrap();
        let new = other_secret();
        let header = Signer::new(vec![new.clone(), old.clone()]).unwrap().sign(
            VECTOR_ID,
            VECTOR_TS,
            VECTOR_BODY,
        );
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], VECTOR_SIG);
        let ts = VECTOR_TS.to_string();
        for secrets in [
            vec![old.clone()],
            vec![new.clone()],
            vec![other_secret(), old],
        ] {
            let r = verify(
                &secrets,
                VECTOR_ID,
                &ts,
                &header,
                VECTOR_BODY,
                at(VECTOR_TS),
                FIVE_MIN,
            );
            assert_eq!(r, Ok(()), "{secrets:?}");
        }
        let stranger = Secret::from_bytes([9u8; 24]).unwrap();
        let r = verify(
            &[stranger],
            VECTOR_ID,
            &ts,
            &header,
            VECTOR_BODY,
            at(VECTOR_TS),
            FIVE_MIN,
        );
        assert_eq!(r, Err(VerifyError::NoMatch));
    }

    #[test]
    fn unknown_versions_and_junk_entries_are_skipped() {
        let s: Secret = VECTOR_SECRET.parse().unwrap();
        let ts = VECTOR_TS.to_string();
        let check = |header: &str| {
            verify(
                std::slice::from_ref(&s),
                VECTOR_ID,
                &ts,
                header,
                VECTOR_BODY,
                at(VECTOR_TS),
                FIVE_MIN,
            )
        };
        let mixed = format!(
            "v1a,AAAA v2,{} garbage v1,%%% {VECTOR_SIG}",
            &VECTOR_SIG[3..]
        );
        assert_eq!(check(&mixed), Ok(()));
        assert_eq!(check(""), Err(VerifyError::NoSignature));
        assert_eq!(
            check(&format!("v1a,{}", &VECTOR_SIG[3..])),
            Err(VerifyError::NoSignature)
        );
        assert_eq!(
            check("v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU="),
            Err(VerifyError::NoMatch)
        );
        // A truncated tag must not verify (verify_slice checks the length too).
        assert_eq!(check(&VECTOR_SIG[..19]), Err(VerifyError::NoMatch));
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_rejected() {
        let s: Secret = VECTOR_SECRET.parse().unwrap();
        let check = |ts: &str, now: u64| {
            verify(
                std::slice::from_ref(&s),
                VECTOR_ID,
                ts,
                VECTOR_SIG,
                VECTOR_BODY,
                at(now),
                FIVE_MIN,
            )
        };
        let ts = VECTOR_TS.to_string();
        assert_eq!(check(&ts, VECTOR_TS + 300), Ok(()));
        assert_eq!(check(&ts, VECTOR_TS + 301), Err(VerifyError::TooOld));
        assert_eq!(check(&ts, VECTOR_TS - 300), Ok(()));
        assert_eq!(check(&ts, VECTOR_TS - 301), Err(VerifyError::TooNew));
        assert_eq!(check("", VECTOR_TS), Err(VerifyError::BadTimestamp));
        assert_eq!(check("-5", VECTOR_TS), Err(VerifyError::BadTimestamp));
        assert_eq!(check("1.5", VECTOR_TS), Err(VerifyError::BadTimestamp));
        assert_eq!(
            check("99999999999999999999999", VECTOR_TS),
            Err(VerifyError::BadTimestamp)
        );
        // A clock before the epoch saturates instead of panicking.
        let r = verify(
            std::slice::from_ref(&s),
            VECTOR_ID,
            "0",
            VECTOR_SIG,
            VECTOR_BODY,
            SystemTime::UNIX_EPOCH - Duration::from_secs(5),
            FIVE_MIN,
        );
        assert_eq!(r, Err(VerifyError::NoMatch));
    }

    #[test]
    fn secret_parsing() {
        let with: Secret = VECTOR_SECRET.parse().unwrap();
        let bare: Secret = VECTOR_SECRET.trim_start_matches("whsec_").parse().unwrap();
        assert_eq!(with, bare);
        assert_eq!(with.to_whsec(), VECTOR_SECRET);
        for bad in [
            "",
            "whsec_",
            "whsec_not base64!",
            "whsec_QUJD",             // 3 bytes: too short
            "whsec_C2FVsBQIhrscChlQ", // valid base64, but 15 bytes
        ] {
            let err = bad.parse::<Secret>().unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Config {
                        field: "secret",
                        ..
                    }
                ),
                "{bad:?}: {err:?}"
            );
        }
        let long = format!("whsec_{}", BASE64.encode([1u8; 65]));
        assert!(long.parse::<Secret>().is_err());
        let max = format!("whsec_{}", BASE64.encode([1u8; 64]));
        assert!(max.parse::<Secret>().is_ok());
    }

    #[test]
    fn debug_redacts_the_key() {
        let s: Secret = VECTOR_SECRET.parse().unwrap();
        let shown = format!("{s:?} {:?}", Signer::new(vec![s.clone()]).unwrap());
        assert!(shown.contains("redacted"), "{shown}");
        assert!(!shown.contains("C2FV"), "{shown}");
        assert!(!shown.contains("11, 97"), "{shown}");
    }

    #[test]
    fn a_signer_needs_a_secret() {
        let err = Signer::new(Vec::new()).unwrap_err();
        assert!(matches!(
            err,
            Error::Config {
                field: "secrets",
                ..
            }
        ));
    }
}
