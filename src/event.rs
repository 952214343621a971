//! What a webhook event must tell hookwire about itself.
//!
//! The sink toolkit is generic over any event type `E`; only the parts that speak HTTP or
//! match on metadata need more, and they ask for it through [`Event`]: a stable id (the
//! Standard Webhooks `webhook-id`, and what receivers dedupe on), optional metadata for
//! matchers, and `Serialize` for the JSON envelope. [`RawEvent`] is the ready-made event for
//! payloads that are already JSON (NDJSON input, `publish_raw`).

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::Error;

/// An event that can be delivered to a webhook.
///
/// `id` must be stable for the life of the event (retries and restarts send the same id) and
/// unique enough for receivers to dedupe on. The metadata methods feed the
/// [matchers](crate::sink::Matcher); return `None` for what the event does not have.
///
/// ```
/// use std::borrow::Cow;
/// #[derive(serde::Serialize)]
/// struct Push { id: String, repository: String }
///
/// impl hookwire::Event for Push {
///     fn id(&self) -> Cow<'_, str> { Cow::Borrowed(&self.id) }
///     fn action(&self) -> Option<&str> { Some("push") }
/// }
/// ```
pub trait Event: Serialize + Send + Sync {
    /// The event's stable, unique id.
    fn id(&self) -> Cow<'_, str>;
    /// The event's type (Standard Webhooks' `type`), if it has one.
    fn kind(&self) -> Option<&str> {
        None
    }
    /// The event's action (docker distribution's `action`: `push`, `pull`, `delete`...).
    fn action(&self) -> Option<&str> {
        None
    }
    /// The media type of the event's target (docker distribution's `target.mediaType`).
    fn media_type(&self) -> Option<&str> {
        None
    }
    /// The repository of the event's target (docker distribution's `target.repository`),
    /// what an endpoint's `repositories` filter matches.
    fn repository(&self) -> Option<&str> {
        None
    }
}

impl<T: Event + ?Sized> Event for Arc<T> {
    fn id(&self) -> Cow<'_, str> {
        (**self).id()
    }
    fn kind(&self) -> Option<&str> {
        (**self).kind()
    }
    fn action(&self) -> Option<&str> {
        (**self).action()
    }
    fn media_type(&self) -> Option<&str> {
        (**self).media_type()
    }
    fn repository(&self) -> Option<&str> {
        (**self).repository()
    }
}

impl<T: Event + ?Sized> Event for &T {
    fn id(&self) -> Cow<'_, str> {
        (**self).id()
    }
    fn kind(&self) -> Option<&str> {
        (**self).kind()
    }
    fn action(&self) -> Option<&str> {
        (**self).action()
    }
    fn media_type(&self) -> Option<&str> {
        (**self).media_type()
    }
    fn repository(&self) -> Option<&str> {
        (**self).repository()
    }
}

/// An event whose payload is already JSON. Cheap to clone (one `Arc`).
///
/// It serializes as its payload, byte for byte, so an envelope of raw events is the payloads
/// joined into `{"events":[...]}` without re-encoding.
#[derive(Clone, Debug)]
pub struct RawEvent(Arc<RawInner>);

#[derive(Debug)]
struct RawInner {
    id: String,
    kind: Option<String>,
    action: Option<String>,
    media_type: Option<String>,
    /// `target.repository`: known after `parse`; found in the JSON on first use otherwise
    /// (read back from the log, only routing asks, and only for endpoints that filter by it).
    repository: OnceLock<Option<String>>,
    json: Box<RawValue>,
}

/// The fields [`RawEvent::parse`] looks for; borrowed, so parsing allocates only what it keeps.
#[derive(serde::Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    id: Option<IdField<'a>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    action: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    target: Option<Target<'a>>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum IdField<'a> {
    Str(#[serde(borrow)] Cow<'a, str>),
    Num(serde_json::Number),
}

#[derive(serde::Deserialize)]
struct Target<'a> {
    #[serde(borrow, default, rename = "mediaType")]
    media_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    repository: Option<Cow<'a, str>>,
}

/// `target.repository` alone, for events that were not parsed with [`Probe`].
#[derive(serde::Deserialize)]
struct RepositoryProbe<'a> {
    #[serde(borrow, default)]
    target: Option<Target<'a>>,
}

impl RawEvent {
    /// Wraps a JSON document under the given id. Fails with [`Error::Encode`] if `json` is not
    /// valid JSON or `id` is empty.
    pub fn new(id: impl Into<String>, json: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        if id.is_empty() {
            return Err(Error::Encode {
                message: "event id is empty".into(),
            });
        }
        let json = RawValue::from_string(json.into())?;
        Ok(RawEvent(Arc::new(RawInner {
            id,
            kind: None,
            action: None,
            media_type: None,
            repository: OnceLock::new(),
            json,
        })))
    }

    /// Parses a JSON object and takes its metadata from the usual fields: `id` (a string or a
    /// number, required), `type`, `action` and `target.mediaType` (optional).
    ///
    /// ```
    /// let e = hookwire::RawEvent::parse(r#"{"id":"e1","action":"push","x":1}"#).unwrap();
    /// use hookwire::Event;
    /// assert_eq!(e.id(), "e1");
    /// assert_eq!(e.action(), Some("push"));
    /// assert!(hookwire::RawEvent::parse(r#"{"no_id":true}"#).is_err());
    /// ```
    pub fn parse(json: impl Into<String>) -> Result<Self, Error> {
        let json = json.into();
        // serde reads a struct from a JSON array too: `["a"]` would get the id "a".
        if !json
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{')
        {
            return Err(Error::Encode {
                message: "event is not a JSON object".into(),
            });
        }
        let probe: Probe<'_> = serde_json::from_str(&json)?;
        let id = match probe.id {
            Some(IdField::Str(s)) if !s.is_empty() => s.into_owned(),
            Some(IdField::Num(n)) => n.to_string(),
            _ => {
                return Err(Error::Encode {
                    message: "event has no \"id\" field (a non-empty string or a number)".into(),
                });
            }
        };
        let kind = probe.kind.map(Cow::into_owned);
        let action = probe.action.map(Cow::into_owned);
        let (media_type, repository) = match probe.target {
            Some(t) => (
                t.media_type.map(Cow::into_owned),
                t.repository.map(Cow::into_owned),
            ),
            None => (None, None),
        };
        let json = RawValue::from_string(json)?;
        Ok(RawEvent(Arc::new(RawInner {
            id,
            kind,
            action,
            media_type,
            repository: OnceLock::from(repository),
            json,
        })))
    }

    /// Encodes `event` (serde_json, once) into a `RawEvent` that keeps its metadata.
    pub(crate) fn encode<E: Event + ?Sized>(event: &E) -> Result<Self, Error> {
        let id = event.id();
        if id.is_empty() {
            return Err(Error::Encode {
                message: "event id is empty".into(),
            });
        }
        let json = serde_json::value::to_raw_value(event)?;
        Ok(RawEvent(Arc::new(RawInner {
            id: id.into_owned(),
            kind: event.kind().map(str::to_owned),
            action: event.action().map(str::to_owned),
            media_type: event.media_type().map(str::to_owned),
            repository: OnceLock::from(event.repository().map(str::to_owned)),
            json,
        })))
    }

    /// The payload, as the JSON text it was given.
    pub fn json(&self) -> &str {
        self.0.json.get()
    }

    /// The payload as a `RawValue`, to embed it in another JSON document without re-parsing.
    pub(crate) fn raw_json(&self) -> &RawValue {
        &self.0.json
    }

    /// Builds an event from metadata and JSON kept apart (the dead-letter file stores them
    /// side by side). Fails with [`Error::Encode`] if `json` is not valid JSON or `id` is empty.
    pub(crate) fn from_parts(
        id: String,
        kind: Option<String>,
        action: Option<String>,
        media_type: Option<String>,
        json: String,
    ) -> Result<RawEvent, Error> {
        if id.is_empty() {
            return Err(Error::Encode {
                message: "event id is empty".into(),
            });
        }
        let json = RawValue::from_string(json)?;
        Ok(RawEvent(Arc::new(RawInner {
            id,
            kind,
            action,
            media_type,
            repository: OnceLock::new(),
            json,
        })))
    }
}

/// The store's encoding of a [`RawEvent`]: its metadata, then its JSON, so a restart gets
/// back exactly the event that was published (id included, even when it is not in the JSON).
///
/// `tag u8 (1) | id, kind, action, media_type: each u32 length (u32::MAX: absent) + bytes |
/// json`.
impl RawEvent {
    const RECORD_TAG: u8 = 1;

    /// Appends the event's record encoding to `out`.
    pub(crate) fn encode_record(&self, out: &mut Vec<u8>) {
        let inner = &*self.0;
        out.push(Self::RECORD_TAG);
        let fields = [
            Some(inner.id.as_str()),
            inner.kind.as_deref(),
            inner.action.as_deref(),
            inner.media_type.as_deref(),
        ];
        for f in fields {
            match f {
                Some(s) => {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
            }
        }
        out.extend_from_slice(inner.json.get().as_bytes());
    }

    /// Decodes what [`encode_record`](Self::encode_record) wrote. The JSON is checked again (a
    /// record passed its CRC, but a store is outside the program's control).
    pub(crate) fn decode_record(bytes: &[u8]) -> Result<RawEvent, Error> {
        let bad = |what: &str| Error::Encode {
            message: format!("stored event is malformed: {what}"),
        };
        let (&tag, mut rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
        if tag != Self::RECORD_TAG {
            return Err(bad("unknown encoding"));
        }
        let mut field = || -> Result<Option<String>, Error> {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| bad("truncated"))?;
            let len = u32::from_le_bytes(*len);
            if len == u32::MAX {
                rest = tail;
                return Ok(None);
            }
            let len = len as usize;
            if tail.len() < len {
                return Err(bad("truncated"));
            }
            let s = std::str::from_utf8(&tail[..len]).map_err(|_| bad("metadata is not UTF-8"))?;
            rest = &tail[len..];
            Ok(Some(s.to_owned()))
        };
        let id = field()?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("no id"))?;
        let kind = field()?;
        let action = field()?;
        let media_type = field()?;
        let json = std::str::from_utf8(rest).map_err(|_| bad("JSON is not UTF-8"))?;
        let json = RawValue::from_string(json.to_owned())?;
        Ok(RawEvent(Arc::new(RawInner {
            id,
            kind,
            action,
            media_type,
            repository: OnceLock::new(),
            json,
        })))
    }
}

impl Serialize for RawEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.json.serialize(s)
    }
}

impl Event for RawEvent {
    fn id(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.0.id)
    }
    fn kind(&self) -> Option<&str> {
        self.0.kind.as_deref()
    }
    fn action(&self) -> Option<&str> {
        self.0.action.as_deref()
    }
    fn media_type(&self) -> Option<&str> {
        self.0.media_type.as_deref()
    }
    fn repository(&self) -> Option<&str> {
        self.0
            .repository
            .get_or_init(|| {
                serde_json::from_str::<RepositoryProbe<'_>>(self.0.json.get())
                    .ok()
                    .and_then(|p| p.target)
                    .and_then(|t| t.repository)
                    .map(Cow::into_owned)
            })
            .as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_takes_metadata() {
        let e = RawEvent::parse(
            r#"{"id":42,"type":"t","action":"push","target":{"mediaType":"m","size":3}}"#,
        )
        .unwrap();
        assert_eq!(e.id(), "42");
        assert_eq!(e.kind(), Some("t"));
        assert_eq!(e.action(), Some("push"));
        assert_eq!(e.media_type(), Some("m"));
    }

    #[test]
    fn parse_rejects_bad_input() {
        assert!(RawEvent::parse("{").is_err());
        assert!(RawEvent::parse(r#"{"id":""}"#).is_err());
        assert!(RawEvent::parse(r#"{"id":{"a":1}}"#).is_err());
        assert!(RawEvent::parse("[1,2]").is_err());
        // Found by fuzzing: fields are read from an array by position unless refused.
        assert!(RawEvent::parse(r#"["abc"]"#).is_err());
        assert!(RawEvent::parse(r#" ["a","t","push",{"mediaType":"m"}]"#).is_err());
        assert!(RawEvent::parse(" \n{\"id\":\"ok\"}").is_ok());
        assert!(RawEvent::new("", "{}").is_err());
        assert!(RawEvent::new("a", "nope").is_err());
    }

    #[test]
    fn serializes_verbatim() {
        let text = r#"{"id":"x",  "keep":"spacing"}"#;
        let e = RawEvent::parse(text).unwrap();
        assert_eq!(serde_json::to_string(&e).unwrap(), text);
        assert_eq!(e.json(), text);
    }

    #[test]
    fn record_encoding_round_trips() {
        let e = RawEvent::parse(r#"{"id":"a","type":"t","target":{"mediaType":"m"}}"#).unwrap();
        let mut buf = Vec::new();
        e.encode_record(&mut buf);
        let back = RawEvent::decode_record(&buf).unwrap();
        assert_eq!(back.id(), "a");
        assert_eq!(back.kind(), Some("t"));
        assert_eq!(back.action(), None);
        assert_eq!(back.media_type(), Some("m"));
        assert_eq!(back.json(), e.json());
        let custom = RawEvent::new("not-in-json", "[1]").unwrap();
        buf.clear();
        custom.encode_record(&mut buf);
        assert_eq!(RawEvent::decode_record(&buf).unwrap().id(), "not-in-json");
        for cut in 0..buf.len() - 1 {
            // Every strict prefix is either rejected or (JSON cut short) fails its JSON check.
            assert!(
                RawEvent::decode_record(&buf[..cut]).is_err(),
                "prefix {cut}"
            );
        }
    }

    #[test]
    fn from_parts_keeps_metadata_apart_from_the_json() {
        let e = RawEvent::from_parts(
            "id-1".into(),
            Some("t".into()),
            None,
            Some("m".into()),
            r#"{"x":1}"#.into(),
        )
        .unwrap();
        assert_eq!(e.id(), "id-1");
        assert_eq!(
            (e.kind(), e.action(), e.media_type()),
            (Some("t"), None, Some("m"))
        );
        assert_eq!(e.json(), r#"{"x":1}"#);
        assert_eq!(e.raw_json().get(), r#"{"x":1}"#);
        assert!(RawEvent::from_parts(String::new(), None, None, None, "{}".into()).is_err());
        assert!(RawEvent::from_parts("a".into(), None, None, None, "{".into()).is_err());
    }

    proptest::proptest! {
        // Input lines come from users (NDJSON): parsing may fail, never panic.
        #[test]
        fn parse_never_panics(text in "\\PC{0,64}") {
            let _ = RawEvent::parse(text);
        }

        #[test]
        fn any_object_with_an_id_parses_and_keeps_its_bytes(id in "[a-z0-9]{1,10}", n in 0u32..1000) {
            let text = format!(r#"{{"id":"{id}","n":{n}}}"#);
            let e = RawEvent::parse(text.clone()).unwrap();
            proptest::prop_assert_eq!(e.id(), id.as_str());
            proptest::prop_assert_eq!(e.json(), text.as_str());
        }
    }
}
