//! docker distribution's JSON envelope: `{"events":[...]}`.
//!
//! Every request hookwire sends carries its events in this envelope, one event per request for
//! distribution compatibility or many in a batch. Encoding appends compact JSON into a buffer
//! the caller reuses, so steady-state delivery allocates nothing here; decoding (for the test
//! kit's receiver) borrows each event from the body as a [`RawValue`] without re-parsing it.
//!
//! Compared with distribution (`notifications/http.go` and `event.go`):
//! - distribution encodes with `json.MarshalIndent(envelope, "", "   ")`; hookwire writes
//!   compact JSON. Both are the same JSON document, and receivers parse it either way; compact
//!   is smaller and is what gets signed byte for byte.
//! - distribution's `Envelope` has `json:"events,omitempty"`, so an empty envelope is `{}`;
//!   hookwire writes `{"events":[]}` so a receiver always finds the array. (It never sends an
//!   empty envelope in practice.)
//! - distribution v3 labels the body `application/vnd.docker.distribution.events.v2+json`
//!   (v2 of the event structs); older registries used `...v1+json`. [`MediaType`] offers both.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::Error;

/// The `Content-Type` an envelope is sent with.
///
/// It names the version of distribution's event structs; hookwire's events are whatever the
/// host serializes, so this is a label for receivers that dispatch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MediaType {
    /// `application/vnd.docker.distribution.events.v1+json` (registry 2.x).
    V1,
    /// `application/vnd.docker.distribution.events.v2+json` (distribution v3, the default).
    #[default]
    V2,
}

impl MediaType {
    /// The full media type string.
    pub const fn as_str(self) -> &'static str {
        match self {
            MediaType::V1 => "application/vnd.docker.distribution.events.v1+json",
            MediaType::V2 => "application/vnd.docker.distribution.events.v2+json",
        }
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MediaType {
    type Err = Error;

    /// Accepts `v1`, `v2` (any case) or the full media type strings.
    fn from_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        for m in [MediaType::V1, MediaType::V2] {
            if s.eq_ignore_ascii_case(m.as_str()) {
                return Ok(m);
            }
        }
        if s.eq_ignore_ascii_case("v1") {
            Ok(MediaType::V1)
        } else if s.eq_ignore_ascii_case("v2") {
            Ok(MediaType::V2)
        } else {
            Err(Error::config(
                "media_type",
                format!(
                    "{s:?} is not v1, v2, {:?} or {:?}",
                    MediaType::V1.as_str(),
                    MediaType::V2.as_str()
                ),
            ))
        }
    }
}

const HEAD: &[u8] = br#"{"events":["#;
const TAIL: &[u8] = b"]}";

/// Appends the envelope holding `events` to `buf`, as compact JSON.
///
/// `buf` is not cleared first, so a caller can reuse one allocation across requests (clear it
/// yourself). On error (an event whose `Serialize` fails) `buf` is restored to its length on
/// entry, so no half-written envelope is left behind, and the error is [`Error::Encode`].
///
/// ```
/// let mut buf = Vec::new();
/// hookwire::http::encode_envelope(&[serde_json::json!({"id": "a"})], &mut buf).unwrap();
/// assert_eq!(buf, br#"{"events":[{"id":"a"}]}"#);
/// ```
pub fn encode_envelope<E: Serialize>(events: &[E], buf: &mut Vec<u8>) -> Result<(), Error> {
    let start = buf.len();
    buf.extend_from_slice(HEAD);
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        if let Err(e) = serde_json::to_writer(&mut *buf, event) {
            buf.truncate(start);
            return Err(e.into());
        }
    }
    buf.extend_from_slice(TAIL);
    Ok(())
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// Splits an envelope into its events, each borrowed from `body` as raw JSON text.
///
/// The body must be a JSON object with an `"events"` array (other members are ignored, as
/// distribution's decoder ignores them); anything else is [`Error::Encode`]. The events
/// themselves may be any JSON value: checking their shape is the caller's business.
pub fn decode_envelope(body: &[u8]) -> Result<Vec<&RawValue>, Error> {
    // serde reads a struct from a JSON array too (`[[...]]` would pass as an envelope).
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(Error::Encode {
            message: "an envelope is a JSON object".into(),
        });
    }
    let env: Envelope<'_> = serde_json::from_slice(body)?;
    Ok(env.events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_strings_round_trip() {
        assert_eq!(MediaType::default(), MediaType::V2);
        assert_eq!(
            MediaType::V1.as_str(),
            "application/vnd.docker.distribution.events.v1+json"
        );
        for m in [MediaType::V1, MediaType::V2] {
            assert_eq!(m.as_str().parse::<MediaType>().unwrap(), m);
            assert_eq!(m.to_string(), m.as_str());
        }
        assert_eq!("v1".parse::<MediaType>().unwrap(), MediaType::V1);
        assert_eq!(" V2 ".parse::<MediaType>().unwrap(), MediaType::V2);
        let err = "v3".parse::<MediaType>().unwrap_err();
        assert!(matches!(
            err,
            Error::Config {
                field: "media_type",
                ..
            }
        ));
        assert!("application/json".parse::<MediaType>().is_err());
    }

    #[test]
    fn encodes_compact_and_appends() {
        let mut buf = b"keep:".to_vec();
        let events = [serde_json::json!({"id": "a", "n": 1}), serde_json::json!(2)];
        encode_envelope(&events, &mut buf).unwrap();
        assert_eq!(buf, br#"keep:{"events":[{"id":"a","n":1},2]}"#);

        buf.clear();
        encode_envelope::<serde_json::Value>(&[], &mut buf).unwrap();
        assert_eq!(buf, br#"{"events":[]}"#);
    }

    #[test]
    fn raw_events_are_copied_verbatim() {
        let e = crate::RawEvent::parse(r#"{"id":"x", "spaced" : true}"#).unwrap();
        let mut buf = Vec::new();
        encode_envelope(&[e.clone(), e], &mut buf).unwrap();
        assert_eq!(
            buf,
            br#"{"events":[{"id":"x", "spaced" : true},{"id":"x", "spaced" : true}]}"#
        );
    }

    struct Broken;
    impl Serialize for Broken {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("cannot encode"))
        }
    }

    #[test]
    fn a_failed_encode_leaves_the_buffer_as_it_was() {
        let mut buf = b"prefix".to_vec();
        let err = encode_envelope(&[Broken], &mut buf).unwrap_err();
        assert!(matches!(err, Error::Encode { .. }), "{err:?}");
        assert_eq!(buf, b"prefix");
    }

    #[test]
    fn decode_borrows_each_event() {
        let body = br#"{"other":1,"events":[{"id":"a"}, 7 ,"s"]}"#;
        let events = decode_envelope(body).unwrap();
        let texts: Vec<&str> = events.iter().map(|r| r.get()).collect();
        assert_eq!(texts, [r#"{"id":"a"}"#, "7", r#""s""#]);
        assert!(decode_envelope(br#"{"events":[]}"#).unwrap().is_empty());
    }

    #[test]
    fn decode_round_trips_encode() {
        let events = [
            serde_json::json!({"id": "1"}),
            serde_json::json!({"id": "2"}),
        ];
        let mut buf = Vec::new();
        encode_envelope(&events, &mut buf).unwrap();
        let back: Vec<serde_json::Value> = decode_envelope(&buf)
            .unwrap()
            .iter()
            .map(|r| serde_json::from_str(r.get()).unwrap())
            .collect();
        assert_eq!(back, events);
    }

    #[test]
    fn decode_rejects_what_is_not_an_envelope() {
        for bad in [
            &b""[..],
            b"{",
            b"[]",
            b"{}",
            br#"{"events":{}}"#,
            br#"{"events":null}"#,
            br#"{"events":[1,]}"#,
            br#"{"events":[]} trailing"#,
            br#"[[{"id":"a"}]]"#, // found by fuzzing: a struct reads from an array too
        ] {
            let err = decode_envelope(bad).unwrap_err();
            assert!(matches!(err, Error::Encode { .. }), "{bad:?}: {err:?}");
        }
    }

    // The decoder sees bytes from the network: these run under plain `cargo test`, and the
    // `envelope` fuzz target (docs/fuzzing.md) goes further.
    proptest::proptest! {
        #[test]
        fn decode_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_envelope(&body);
        }

        #[test]
        fn encode_then_decode_gives_the_events_back(
            ids in proptest::collection::vec("[a-zA-Z0-9 \\\\\"\u{e9}]{0,12}", 0..16)
        ) {
            let events: Vec<serde_json::Value> =
                ids.iter().map(|id| serde_json::json!({ "id": id })).collect();
            let mut buf = Vec::new();
            encode_envelope(&events, &mut buf).unwrap();
            let back = decode_envelope(&buf).unwrap();
            proptest::prop_assert_eq!(back.len(), events.len());
            for (raw, want) in back.iter().zip(&events) {
                let got: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
                proptest::prop_assert_eq!(&got, want);
            }
        }
    }
}
