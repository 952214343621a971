//! `RawEvent::parse` (NDJSON lines, `publish_raw`) and `RawEvent::new`: the id and metadata
//! taken from a JSON text.
//!
//! Invariants: never panics, fails only with `Error::Encode`; an accepted text is a JSON
//! object, kept byte for byte (less surrounding whitespace) and serialized back verbatim; its
//! id is the non-empty `id` string or number, and `type`, `action`, `target.mediaType` are the
//! object's. `new(id, json)` accepts exactly a non-empty id and a valid JSON text.

use hookwire::{Error, Event, RawEvent};
use serde_json::Value;
use serde_json::value::RawValue;

const JSON_WS: [char; 4] = [' ', '\t', '\n', '\r'];

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match RawEvent::parse(text) {
        Ok(e) => {
            assert_eq!(e.json(), text.trim_matches(JSON_WS));
            assert_eq!(serde_json::to_string(&e).unwrap(), e.json());
            assert!(!e.id().is_empty());
            assert!(
                e.json().starts_with('{'),
                "accepted a JSON text that is not an object: {text:?}"
            );
            if let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(text) {
                let id = match doc.get("id") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    other => panic!("accepted id {other:?} in {text:?}"),
                };
                assert_eq!(e.id(), id);
                let field = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
                assert_eq!(e.kind().map(str::to_owned), field(doc.get("type")));
                assert_eq!(e.action().map(str::to_owned), field(doc.get("action")));
                let media = doc.get("target").and_then(|t| t.get("mediaType"));
                assert_eq!(e.media_type().map(str::to_owned), field(media));
            }
        }
        Err(e) => assert!(matches!(e, Error::Encode { .. }), "{e:?}"),
    }

    let (id, json) = text.split_once('\n').unwrap_or((text, ""));
    let valid = serde_json::from_str::<&RawValue>(json).is_ok();
    match RawEvent::new(id, json) {
        Ok(e) => {
            assert!(!id.is_empty() && valid);
            assert_eq!(e.id(), id);
            assert_eq!(e.json(), json.trim_matches(JSON_WS));
            assert_eq!((e.kind(), e.action(), e.media_type()), (None, None, None));
        }
        Err(e) => {
            assert!(id.is_empty() || !valid, "refused {id:?} {json:?}: {e}");
            assert!(matches!(e, Error::Encode { .. }), "{e:?}");
        }
    }
}
