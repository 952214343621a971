//! `http::decode_envelope` (a request body from anyone, in the test kit's receiver) and the
//! round trip through `encode_envelope`.
//!
//! Invariants: never panics; what it accepts is a JSON object whose `events` array has
//! exactly the events returned, each borrowed verbatim from the body and itself valid JSON;
//! encoding them again and decoding that gives the same texts back.

use hookwire::http::{decode_envelope, encode_envelope};
use serde_json::Value;
use serde_json::value::RawValue;

pub fn check(data: &[u8]) {
    let Ok(events) = decode_envelope(data) else {
        return;
    };
    let body = data.as_ptr_range();
    for raw in &events {
        let text = raw.get();
        assert!(
            body.contains(&text.as_ptr()) && text.len() <= data.len(),
            "event not borrowed from the body"
        );
        serde_json::from_str::<&RawValue>(text).expect("an event is valid JSON");
    }
    // serde_json's `Value` refuses numbers out of f64's range that a RawValue keeps, so the
    // comparison is made only where both read the body.
    if let Ok(doc) = serde_json::from_slice::<Value>(data) {
        let array = doc
            .get("events")
            .and_then(Value::as_array)
            .expect("an accepted body has an events array");
        assert_eq!(array.len(), events.len());
        for (raw, want) in events.iter().zip(array) {
            if let Ok(got) = serde_json::from_str::<Value>(raw.get()) {
                assert_eq!(&got, want);
            }
        }
    }
    let mut buf = Vec::new();
    encode_envelope(&events, &mut buf).expect("raw events always encode");
    let again = decode_envelope(&buf).expect("what we encode decodes");
    let texts = |v: &[&RawValue]| v.iter().map(|r| r.get().to_owned()).collect::<Vec<_>>();
    assert_eq!(texts(&again), texts(&events));
}
