//! `RawEvent`'s record codec (the payload of every durable log record), through the hidden
//! `hookwire::fuzzing` wrappers.
//!
//! Invariants: decoding any bytes never panics; whatever decodes encodes back to the same
//! bytes, except whitespace around the JSON (a `RawValue` does not keep it, and the encoder
//! never writes it); any event encodes and decodes back to itself (id, metadata and JSON).

use arbitrary::Unstructured;
use hookwire::Event;
use hookwire::fuzzing::{decode_record, encode_record, raw_event_from_parts};

pub fn check(data: &[u8]) {
    if let Ok(event) = decode_record(data) {
        let mut out = Vec::new();
        encode_record(&event, &mut out);
        let head = out.len() - event.json().len();
        assert_eq!(
            out[..head],
            data[..head],
            "decode then encode changed the metadata"
        );
        let json = std::str::from_utf8(&data[head..]).expect("decoded JSON is UTF-8");
        assert_eq!(json.trim_matches([' ', '\t', '\n', '\r']), event.json());
    }

    let mut u = Unstructured::new(data);
    let Ok(parts) = parts(&mut u) else {
        return;
    };
    let (id, kind, action, media_type, json) = parts.clone();
    let Ok(event) = raw_event_from_parts(id, kind, action, media_type, json) else {
        return;
    };
    let mut buf = Vec::new();
    encode_record(&event, &mut buf);
    let back = decode_record(&buf).expect("an encoded event decodes");
    let (id, kind, action, media_type, _) = parts;
    assert_eq!(back.id(), id);
    assert_eq!(back.kind(), kind.as_deref());
    assert_eq!(back.action(), action.as_deref());
    assert_eq!(back.media_type(), media_type.as_deref());
    assert_eq!(back.json(), event.json());
}

type Parts = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// An event's parts; its JSON is valid more often than an arbitrary string would be.
fn parts(u: &mut Unstructured<'_>) -> arbitrary::Result<Parts> {
    let id: String = u.arbitrary()?;
    let kind = u.arbitrary()?;
    let action = u.arbitrary()?;
    let media_type = u.arbitrary()?;
    let s: String = u.arbitrary()?;
    let json = match u.int_in_range(0..=2)? {
        0 => s,
        1 => serde_json::to_string(&s).expect("a string encodes"),
        _ => format!(
            r#"{{"id":{},"n":[1,2.5,null]}}"#,
            serde_json::to_string(&s).unwrap()
        ),
    };
    Ok((id, kind, action, media_type, json))
}
