//! What the ingest routes accept, and the window of recent ids that makes a re-post harmless.
//!
//! `POST /v1/events` takes one JSON object, a JSON array of objects, or NDJSON (objects one
//! after another, any whitespace between); `POST /v1/registry` takes docker distribution's
//! envelope `{"events":[...]}`. Each event must be an object with an `id` (a non-empty string
//! or a number). A body is checked whole before anything is published: one bad event refuses
//! the request (400, naming the event), so a sender never has to guess which part went in.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::RawEvent;
use crate::engine::Ticket;

/// Why a body was refused (becomes a 400 answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadBody(pub String);

fn event(json: &RawValue, index: usize) -> Result<RawEvent, BadBody> {
    let event = RawEvent::parse(json.get().to_string())
        .map_err(|e| BadBody(format!("event {index}: {e}")))?;
    // The id goes out as the `webhook-id` header (and is signed): printable ASCII only.
    // Refused here, before anything is stored, rather than dead-lettered after a 2xx.
    let id = crate::Event::id(&event);
    if !id.bytes().all(|c| (0x20..0x7f).contains(&c)) {
        return Err(BadBody(format!(
            "event {index}: its \"id\" {id:?} is not printable ASCII, so it cannot be sent \
             as a webhook-id header"
        )));
    }
    Ok(event)
}

/// The events of a `/v1/events` body, in order.
pub(crate) fn parse_events(body: &[u8]) -> Result<Vec<RawEvent>, BadBody> {
    let text = std::str::from_utf8(body).map_err(|_| BadBody("the body is not UTF-8".into()))?;
    let mut values = Vec::new();
    for v in serde_json::Deserializer::from_str(text).into_iter::<&RawValue>() {
        let v = v.map_err(|e| BadBody(format!("event {}: {e}", values.len())))?;
        values.push(v);
    }
    if values.len() == 1 && values[0].get().starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(values[0].get())
            .map_err(|e| BadBody(format!("the array: {e}")))?;
        return items.iter().enumerate().map(|(i, v)| event(v, i)).collect();
    }
    if values.is_empty() {
        return Err(BadBody("no events in the body".into()));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, v)| event(v, i))
        .collect()
}

/// The media types a registry sends its notifications with (and plain JSON).
pub(crate) const REGISTRY_MEDIA_TYPES: [&str; 3] = [
    "application/vnd.docker.distribution.events.v1+json",
    "application/vnd.docker.distribution.events.v2+json",
    "application/json",
];

/// Whether `content_type` (parameters allowed) is one a registry sends.
pub(crate) fn registry_media_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let ct = ct.split(';').next().unwrap_or("").trim();
    REGISTRY_MEDIA_TYPES
        .iter()
        .any(|m| m.eq_ignore_ascii_case(ct))
}

/// The events of a registry's `{"events":[...]}` envelope, in order.
pub(crate) fn parse_registry(body: &[u8]) -> Result<Vec<RawEvent>, BadBody> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        events: Vec<&'a RawValue>,
    }
    let text = std::str::from_utf8(body).map_err(|_| BadBody("the body is not UTF-8".into()))?;
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        BadBody(format!(
            "not a notification envelope {{\"events\":[...]}}: {e}"
        ))
    })?;
    env.events
        .iter()
        .enumerate()
        .map(|(i, v)| event(v, i))
        .collect()
}

/// What the window knows of an id.
pub(crate) enum Seen {
    /// Not seen (or forgotten): publish it.
    New,
    /// Published and durable (or its outcome is no longer tracked): accept, do not publish.
    Done,
    /// Published, durability pending: accept once this ticket completes.
    Pending(Arc<Ticket>),
}

/// The last `capacity` ids published, each with its ticket while it is pending. Bounded:
/// the oldest id is forgotten when a new one comes in at capacity. An id whose publication
/// failed is forgotten at once, so its re-post is published again.
pub(crate) struct Dedup {
    capacity: usize,
    next: u64,
    /// id -> (generation, ticket while pending).
    map: HashMap<String, (u64, Option<Arc<Ticket>>)>,
    order: VecDeque<(String, u64)>,
}

impl Dedup {
    pub fn new(capacity: usize) -> Self {
        Dedup {
            capacity,
            next: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn lookup(&self, id: &str) -> Seen {
        match self.map.get(id) {
            None => Seen::New,
            Some((_, None)) => Seen::Done,
            Some((_, Some(t))) => Seen::Pending(t.clone()),
        }
    }

    /// Remembers `id`, published with `ticket`.
    pub fn insert(&mut self, id: &str, ticket: Arc<Ticket>) {
        if self.capacity == 0 {
            return;
        }
        let generation = self.next;
        self.next += 1;
        self.map.insert(id.to_string(), (generation, Some(ticket)));
        self.order.push_back((id.to_string(), generation));
        while self.map.len() > self.capacity || self.order.len() > 2 * self.capacity {
            let Some((old, g)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(gen_, _)| *gen_ == g) {
                self.map.remove(&old);
            }
        }
    }

    /// The publication of `id` with `ticket` completed: durable (`ok`) or failed (forget it).
    pub fn settle(&mut self, id: &str, ticket: &Arc<Ticket>, ok: bool) {
        let Some((_, slot)) = self.map.get_mut(id) else {
            return;
        };
        if !slot.as_ref().is_some_and(|t| Arc::ptr_eq(t, ticket)) {
            return;
        }
        if ok {
            *slot = None;
        } else {
            self.map.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    fn ids(events: &[RawEvent]) -> Vec<String> {
        events.iter().map(|e| e.id().into_owned()).collect()
    }

    #[test]
    fn one_object_an_array_or_ndjson() {
        let one = parse_events(br#"{"id":"a","x":1}"#).unwrap();
        assert_eq!(ids(&one), ["a"]);
        assert_eq!(one[0].json(), r#"{"id":"a","x":1}"#);
        let arr = parse_events(b" [ {\"id\":\"a\"}, {\"id\":2} ] ").unwrap();
        assert_eq!(ids(&arr), ["a", "2"]);
        let nd = parse_events(b"{\"id\":\"a\"}\n{\"id\":\"b\"}\r\n\n{\"id\":\"c\"}\n").unwrap();
        assert_eq!(ids(&nd), ["a", "b", "c"]);
    }

    #[test]
    fn one_bad_event_refuses_the_body_and_names_it() {
        let e = parse_events(b"{\"id\":\"a\"}\n{\"no\":1}\n").unwrap_err();
        assert!(e.0.starts_with("event 1:"), "{e:?}");
        let e = parse_events(b"{\"id\":\"a\"}\n{\"id\":").unwrap_err();
        assert!(e.0.starts_with("event 1:"), "{e:?}");
        assert!(parse_events(b"").is_err());
        assert!(parse_events(b"[1]").is_err());
        assert!(parse_events(b"[[{\"id\":1}]]").is_err());
        assert!(parse_events(b"[{\"id\":1}]\n[{\"id\":2}]").is_err());
        assert!(parse_events(b"\xff").is_err());
        // An id that cannot be a webhook-id header: refused before anything is stored.
        let e = parse_events("{\"id\":\"a\"}\n{\"id\":\"caf\u{e9}-1\"}\n".as_bytes()).unwrap_err();
        assert!(
            e.0.starts_with("event 1:") && e.0.contains("printable ASCII"),
            "{e:?}"
        );
    }

    #[test]
    fn a_registry_envelope_as_a_registry_sends_it() {
        // Indented, one event, as distribution 2.8 posts it.
        let body = br#"{
   "events": [
      {
         "id": "320678d8-ca14-430f-8bb6-4ca139cd83f7",
         "timestamp": "2016-03-09T14:44:26.402973972-08:00",
         "action": "push",
         "target": {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": 708,
            "digest": "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
            "length": 708,
            "repository": "hello-world",
            "url": "http://192.168.100.227:5000/v2/hello-world/manifests/sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf",
            "tag": "latest"
         },
         "request": { "id": "6df24a34-0959-4923-81ca-14f09767db19", "method": "PUT" },
         "actor": {},
         "source": { "addr": "xtal.local:5000", "instanceID": "a53db899-3b4b-4a62-a067-8dd013beaca4" }
      }
   ]
}"#;
        let ev = parse_registry(body).unwrap();
        assert_eq!(ids(&ev), ["320678d8-ca14-430f-8bb6-4ca139cd83f7"]);
        assert_eq!(ev[0].action(), Some("push"));
        assert_eq!(
            ev[0].media_type(),
            Some("application/vnd.docker.distribution.manifest.v2+json")
        );
        assert!(parse_registry(br#"{"events":[{"action":"push"}]}"#).is_err());
        assert!(parse_registry(br#"[{"id":"a"}]"#).is_err());
        assert!(registry_media_type(Some(
            "application/vnd.docker.distribution.events.v1+json"
        )));
        assert!(registry_media_type(Some(
            "application/vnd.docker.distribution.events.v2+json; charset=utf-8"
        )));
        assert!(!registry_media_type(Some("text/plain")));
        assert!(!registry_media_type(None));
    }

    fn ticket() -> Arc<Ticket> {
        Arc::new(Ticket {
            cell: Some(Arc::default()),
            durable: None,
        })
    }

    #[test]
    fn the_window_is_bounded_and_forgets_failures() {
        let mut d = Dedup::new(2);
        let (a, b, c) = (ticket(), ticket(), ticket());
        d.insert("a", a.clone());
        assert!(matches!(d.lookup("a"), Seen::Pending(t) if Arc::ptr_eq(&t, &a)));
        d.settle("a", &a, true);
        assert!(matches!(d.lookup("a"), Seen::Done));
        d.insert("b", b.clone());
        d.settle("b", &b, false);
        assert!(
            matches!(d.lookup("b"), Seen::New),
            "a failed publication is forgotten"
        );
        d.insert("b", b.clone());
        d.insert("c", c.clone());
        assert_eq!(d.len(), 2);
        assert!(
            matches!(d.lookup("a"), Seen::New),
            "the oldest left the window"
        );
        // A stale ticket does not settle a newer publication of the same id.
        let b2 = ticket();
        d.settle("b", &b, true);
        d.insert("b", b2.clone());
        d.settle("b", &b, false);
        assert!(matches!(d.lookup("b"), Seen::Pending(t) if Arc::ptr_eq(&t, &b2)));
        for i in 0..1000 {
            d.insert(&format!("x{i}"), ticket());
        }
        assert!(d.len() <= 2 && d.order.len() <= 4);
        let mut off = Dedup::new(0);
        off.insert("a", ticket());
        assert!(matches!(off.lookup("a"), Seen::New));
    }
}
