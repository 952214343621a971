//! The events the scenarios publish, shaped like the Go peer's (`shared/peers/go/main.go`).
//!
//! - The fan-out and latency scenarios publish a distinct small event each (the peer's is a
//!   24-byte `*Ev`): [`small`] builds it as a [`RawEvent`] ahead of the timed loop, so JSON
//!   encoding is not part of what is measured; [`SmallEvent`] is the same event as a struct,
//!   for timing what `publish(&event)` would add.
//! - The HTTP scenarios publish docker distribution's manifest-push event. [`ManifestEvent`]
//!   has the same JSON fields, in the same order, with the same values as the peer's template;
//!   only the id differs per event (the peer's `%08x-0000-4000-8000-%012x`). The peer's body is
//!   `json.MarshalIndent(envelope, "", "   ")`: 1,158 bytes. hookwire's envelope is compact
//!   (`{"events":[` + the event's bytes + `]}`), so [`ManifestGen`] pretty-prints the event the
//!   same way and pads it with insignificant whitespace until the body is 1,158 bytes too.

use hookwire::RawEvent;
use serde::Serialize;

/// Bytes in one request body of the peer's HTTP scenarios (one event per request).
pub(crate) const PEER_BODY_BYTES: usize = 1158;

/// The bytes hookwire's compact envelope adds around one event: `{"events":[` and `]}`.
const ENVELOPE_OVERHEAD: usize = 13;

/// The peer's event id for sequence number `k`.
pub(crate) fn event_id(k: u64) -> String {
    format!("{k:08x}-0000-4000-8000-{k:012x}")
}

/// A distinct small event, already encoded: `{"id":"<k>","seq":<k>}` with id `k`.
pub(crate) fn small(k: u64) -> RawEvent {
    RawEvent::new(k.to_string(), format!(r#"{{"id":"{k}","seq":{k}}}"#))
        .expect("a literal JSON object with a non-empty id")
}

/// The small event as a struct: what a host would hand to `publish(&event)`.
#[derive(Debug, Serialize)]
pub(crate) struct SmallEvent {
    /// The event id.
    pub(crate) id: String,
    /// Its sequence number.
    pub(crate) seq: u64,
}

/// docker distribution's `notifications.Event`, as far as the peer fills it in.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ManifestEvent {
    id: String,
    timestamp: &'static str,
    action: &'static str,
    target: Target,
    request: Request,
    actor: Actor,
    source: Source,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    media_type: &'static str,
    size: u64,
    digest: &'static str,
    length: u64,
    repository: &'static str,
    url: &'static str,
    tag: &'static str,
}

#[derive(Debug, Clone, Serialize)]
struct Request {
    id: &'static str,
    addr: &'static str,
    host: &'static str,
    method: &'static str,
    useragent: &'static str,
}

#[derive(Debug, Clone, Serialize)]
struct Actor {
    name: &'static str,
}

#[derive(Debug, Clone, Serialize)]
struct Source {
    addr: &'static str,
    #[serde(rename = "instanceID")]
    instance_id: &'static str,
}

const DIGEST: &str = "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf";

impl ManifestEvent {
    /// The peer's template event with id [`event_id`]`(k)`.
    pub(crate) fn new(k: u64) -> Self {
        ManifestEvent {
            id: event_id(k),
            // Go's RFC 3339 rendering of time.Date(2024, 1, 2, 3, 4, 5, 6, UTC).
            timestamp: "2024-01-02T03:04:05.000000006Z",
            action: "push",
            target: Target {
                media_type: "application/vnd.docker.distribution.manifest.v2+json",
                size: 1234,
                digest: DIGEST,
                length: 1234,
                repository: "library/test",
                url: "http://example.com/v2/library/test/manifests/sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
                tag: "latest",
            },
            request: Request {
                id: "3a4d2c6e-1d7f-4c1b-9f3e-2b9d5e7f8a10",
                addr: "192.0.2.10:37452",
                host: "registry.example.com",
                method: "PUT",
                useragent: "docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.1.0 os/linux arch/amd64",
            },
            actor: Actor { name: "alice" },
            source: Source {
                addr: "registry-1:5000",
                instance_id: "c1b4f4f4-0d9b-4d3e-8a0a-8a6f9e0e5b7d",
            },
        }
    }
}

/// Serializes `value` as Go's `json.MarshalIndent(value, "", "   ")` does.
fn pretty<T: Serialize>(value: &T) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    value
        .serialize(&mut ser)
        .expect("plain structs of strings and integers serialize");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// The peer's request body for one event: `{"events": [event]}`, indented by three spaces.
pub(crate) fn peer_body(k: u64) -> Vec<u8> {
    #[derive(Serialize)]
    struct Envelope<'a> {
        events: [&'a ManifestEvent; 1],
    }
    pretty(&Envelope {
        events: [&ManifestEvent::new(k)],
    })
    .into_bytes()
}

/// Makes manifest events fast: the JSON is rendered once with a placeholder id and split
/// around it, so each event costs two copies and one parse.
pub(crate) struct ManifestGen {
    prefix: String,
    suffix: String,
}

impl ManifestGen {
    /// Renders the template.
    pub(crate) fn new() -> Self {
        let mut template = ManifestEvent::new(0);
        let marker = "@@ID@@";
        template.id = marker.to_owned();
        let text = pretty(&template);
        let (prefix, rest) = text
            .split_once(marker)
            .expect("the marker is in the rendering");
        let body = prefix.len() + event_id(0).len() + rest.len() + ENVELOPE_OVERHEAD;
        let pad = PEER_BODY_BYTES.saturating_sub(body);
        let rest = rest.strip_suffix('}').expect("an object ends with '}'");
        ManifestGen {
            prefix: prefix.to_owned(),
            suffix: format!("{rest}{}}}", " ".repeat(pad)),
        }
    }

    /// The JSON text of event `k` (the same bytes for the same `k`).
    pub(crate) fn json(&self, k: u64) -> String {
        let id = event_id(k);
        let mut s = String::with_capacity(self.prefix.len() + id.len() + self.suffix.len());
        s.push_str(&self.prefix);
        s.push_str(&id);
        s.push_str(&self.suffix);
        s
    }

    /// Event `k`, parsed (id, action and target media type taken from the JSON).
    pub(crate) fn event(&self, k: u64) -> RawEvent {
        RawEvent::parse(self.json(k)).expect("the template is a JSON object with an id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookwire::Event;

    #[test]
    fn ids_are_the_peers() {
        assert_eq!(event_id(0), "00000000-0000-4000-8000-000000000000");
        assert_eq!(event_id(49_999), "0000c34f-0000-4000-8000-00000000c34f");
        assert_eq!(event_id(u64::from(u32::MAX)).len(), 36);
    }

    #[test]
    fn peer_body_is_1158_bytes_with_the_peers_layout() {
        let body = peer_body(7);
        assert_eq!(body.len(), PEER_BODY_BYTES);
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with("{\n   \"events\": [\n      {\n         \"id\": \"00000007-"));
        assert!(text.ends_with("\n      }\n   ]\n}"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let ev = &v["events"][0];
        assert_eq!(
            ev["target"]["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(ev["request"]["useragent"].as_str().unwrap().len(), 78);
        assert_eq!(
            ev["source"]["instanceID"],
            "c1b4f4f4-0d9b-4d3e-8a0a-8a6f9e0e5b7d"
        );
        let keys: Vec<&str> = ev.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 7);
        // Byte for byte what MarshalIndent(envelope, "", "   ") gives for event 0 (checked
        // once against an independent rendering of the same fields).
        use sha2::Digest;
        let digest = sha2::Sha256::digest(peer_body(0));
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "f6d10e8ad08a840b2e2176ebdc2523682893b299948146e08202644d821b391e"
        );
    }

    #[test]
    fn generated_events_make_1158_byte_compact_envelopes() {
        let g = ManifestGen::new();
        for k in [0, 1, 49_999, 499_999] {
            let e = g.event(k);
            assert_eq!(e.id(), event_id(k));
            assert_eq!(e.action(), Some("push"));
            assert_eq!(
                e.media_type(),
                Some("application/vnd.docker.distribution.manifest.v2+json")
            );
            let mut buf = Vec::new();
            hookwire::http::encode_envelope(&[e], &mut buf).unwrap();
            assert_eq!(buf.len(), PEER_BODY_BYTES, "k = {k}");
        }
    }

    #[test]
    fn generated_event_has_the_same_fields_as_the_struct() {
        let g = ManifestGen::new();
        let from_gen: serde_json::Value = serde_json::from_str(&g.json(3)).unwrap();
        let from_struct = serde_json::to_value(ManifestEvent::new(3)).unwrap();
        assert_eq!(from_gen, from_struct);
        assert_ne!(g.json(3), g.json(4));
    }

    #[test]
    fn small_events_are_distinct() {
        let (a, b) = (small(1), small(2));
        assert_eq!(a.id(), "1");
        assert_eq!(a.json(), r#"{"id":"1","seq":1}"#);
        assert_ne!(a.json(), b.json());
        let enc = serde_json::to_string(&SmallEvent {
            id: "1".into(),
            seq: 1,
        })
        .unwrap();
        assert_eq!(enc, a.json());
    }
}
