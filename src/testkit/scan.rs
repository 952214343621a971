//! The receiver's envelope scan: each event's id from a `{"events":[...]}` body in one pass,
//! without building a JSON tree.
//!
//! A full parse (serde_json deserializing every event to find its id) made the test kit
//! receiver, not the sender, the limit of batch benchmarks (docs/benchmarks.md). This scan
//! walks the body once, token by token, through strings a word at a time (`memchr2` for long
//! ones) and through runs of spaces eight at a time, and decodes only what the receiver acts
//! on: the envelope's keys, the `events` array, and the top-level `"id"` of each event. It
//! allocates only the list of ids (those without escapes borrow from the body).
//!
//! What it checks (anything else is [`NotEnvelope`]): the body is one object, with exactly one
//! `"events"` member, an array; the structure is JSON's (strings terminated, objects of
//! `"key": value` members, brackets matched, commas between items, nothing after the end);
//! and each id it returns is a valid JSON string (escapes decoded) or number. What it does not
//! check: the text of the numbers, literals and strings it skips (their escapes, control
//! characters, UTF-8), so a body can pass the scan and still not be JSON. The receiver's
//! `strict_json` option adds a full parse for tests that want that checked.
//!
//! Ids follow the receiver's rules: a non-empty string (decoded), or a number (as
//! serde_json's `Number` displays it); anything else (absent, empty, `null`, a boolean, an
//! object, an array, or an `"id"` given twice in one event) is no id, and the receiver falls
//! back to the `webhook-id` header. The tests check these ids against serde_json's reading of
//! the same bodies.

use std::borrow::Cow;

/// The body is not an envelope the receiver can read (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NotEnvelope;

/// Each event's id, in order: `None` for an event without a usable id. Ids without escapes
/// borrow from `body`.
pub(super) fn event_ids(body: &[u8]) -> Result<Vec<Option<Cow<'_, str>>>, NotEnvelope> {
    let mut s = Scanner {
        b: body,
        i: 0,
        stack: Vec::new(),
    };
    s.ws();
    s.expect(b'{')?;
    s.ws();
    let mut events = None;
    if !s.eat(b'}') {
        loop {
            let key = s.string()?;
            s.ws();
            s.expect(b':')?;
            s.ws();
            if key.is(b"events")? {
                if events.is_some() {
                    return Err(NotEnvelope);
                }
                events = Some(s.events()?);
            } else {
                s.skip_value()?;
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return Err(NotEnvelope),
            }
        }
    }
    s.ws();
    if s.i != body.len() {
        return Err(NotEnvelope);
    }
    events.ok_or(NotEnvelope)
}

/// A string token: the bytes between its quotes, undecoded.
#[derive(Clone, Copy)]
struct Str<'a> {
    /// The token with its quotes.
    quoted: &'a [u8],
    /// Whether it holds a backslash (then it must be decoded to be read).
    escaped: bool,
}

impl<'a> Str<'a> {
    fn raw(&self) -> &'a [u8] {
        &self.quoted[1..self.quoted.len() - 1]
    }

    /// Decodes the string: borrowed when it has no escapes. Invalid UTF-8 or escapes are
    /// [`NotEnvelope`].
    fn decode(&self) -> Result<Cow<'a, str>, NotEnvelope> {
        if self.escaped {
            // Rare (ids and keys are plain ASCII in practice): serde_json decodes escapes.
            serde_json::from_slice::<String>(self.quoted)
                .map(Cow::Owned)
                .map_err(|_| NotEnvelope)
        } else {
            std::str::from_utf8(self.raw())
                .map(Cow::Borrowed)
                .map_err(|_| NotEnvelope)
        }
    }

    /// Whether the string is `name` (an ASCII key).
    fn is(&self, name: &[u8]) -> Result<bool, NotEnvelope> {
        if self.escaped {
            Ok(self.decode()?.as_bytes() == name)
        } else {
            Ok(self.raw() == name)
        }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// The closing bracket of each container [`Scanner::skip_value`] is inside.
    stack: Vec<u8>,
}

/// The index of the first `"` or `\\` in `s`, or `s.len()`. Strings in JSON are mostly
/// short (keys, ids): eight bytes at a time in a word, then `memchr2` for long ones.
#[inline(always)]
fn quote_or_backslash(s: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // The high bit of each byte of `w` that equals `c`; a false flag can only sit above a
    // true one, so the lowest flag is exact.
    let equal = |w: u64, c: u8| {
        let x = w ^ (ONES * u64::from(c));
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    let mut i = 0;
    while let Some(chunk) = s.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        if i >= 32 {
            return i + memchr::memchr2(b'"', b'\\', &s[i..]).unwrap_or(s.len() - i);
        }
        let w = u64::from_le_bytes(*chunk);
        let flags = equal(w, b'"') | equal(w, b'\\');
        if flags != 0 {
            return i + (flags.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + s[i..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .unwrap_or(s.len() - i)
}

/// Whether `t` is a JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(t: &[u8]) -> bool {
    let digits = |t: &[u8], i: &mut usize| {
        let start = *i;
        while t.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    let mut i = usize::from(t.first() == Some(&b'-'));
    match t.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(t, &mut i);
        }
        _ => return false,
    }
    if t.get(i) == Some(&b'.') {
        i += 1;
        if !digits(t, &mut i) {
            return false;
        }
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(t, &mut i) {
            return false;
        }
    }
    i == t.len()
}

/// Bytes a number or a literal (`true`, `false`, `null`) is made of.
fn is_scalar_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')
}

impl<'a> Scanner<'a> {
    /// Skips JSON whitespace: runs of spaces (indentation, padding) eight at a time.
    fn ws(&mut self) {
        let b = self.b;
        let mut i = self.i;
        loop {
            if b.get(i..i + 8) == Some(b"        ") {
                i += 8;
            } else if let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(i) {
                i += 1;
            } else {
                break;
            }
        }
        self.i = i;
    }

    fn peek(&self) -> Result<u8, NotEnvelope> {
        self.b.get(self.i).copied().ok_or(NotEnvelope)
    }

    fn next(&mut self) -> Result<u8, NotEnvelope> {
        let c = self.peek()?;
        self.i += 1;
        Ok(c)
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.b.get(self.i) == Some(&c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn expect(&mut self, c: u8) -> Result<(), NotEnvelope> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(NotEnvelope)
        }
    }

    /// A string token, at its opening quote.
    #[inline(always)]
    fn string(&mut self) -> Result<Str<'a>, NotEnvelope> {
        let b = self.b;
        let start = self.i;
        if b.get(start) != Some(&b'"') {
            return Err(NotEnvelope);
        }
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            i += quote_or_backslash(b.get(i..).unwrap_or_default());
            match b.get(i) {
                Some(b'"') => break,
                // The byte after a backslash is escaped, whatever it is (a quote included).
                Some(_) => {
                    escaped = true;
                    i += 2;
                }
                None => return Err(NotEnvelope),
            }
        }
        self.i = i + 1;
        Ok(Str {
            quoted: &b[start..self.i],
            escaped,
        })
    }

    /// A number or literal: its bytes, unchecked.
    fn scalar(&mut self) -> Result<&'a [u8], NotEnvelope> {
        let start = self.i;
        while self.b.get(self.i).is_some_and(|&c| is_scalar_byte(c)) {
            self.i += 1;
        }
        if self.i == start {
            return Err(NotEnvelope);
        }
        Ok(&self.b[start..self.i])
    }

    /// The `events` array, at its `[`: each element's id.
    fn events(&mut self) -> Result<Vec<Option<Cow<'a, str>>>, NotEnvelope> {
        self.expect(b'[')?;
        self.ws();
        let mut ids = Vec::new();
        if self.eat(b']') {
            return Ok(ids);
        }
        loop {
            if self.peek()? == b'{' {
                ids.push(self.event()?);
            } else {
                self.skip_value()?;
                ids.push(None);
            }
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b']' => return Ok(ids),
                _ => return Err(NotEnvelope),
            }
        }
    }

    /// One event object, at its `{`: its top-level id.
    fn event(&mut self) -> Result<Option<Cow<'a, str>>, NotEnvelope> {
        self.expect(b'{')?;
        self.ws();
        // `Some(id)` once an "id" member was seen; `twice` when it was seen again.
        let mut id: Option<Option<Cow<'a, str>>> = None;
        let mut twice = false;
        if self.eat(b'}') {
            return Ok(None);
        }
        loop {
            let key = self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            if key.is(b"id")? {
                twice |= id.is_some();
                id = Some(self.id_value()?);
            } else {
                self.skip_value()?;
            }
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b'}' => break,
                _ => return Err(NotEnvelope),
            }
        }
        // serde refuses a struct field given twice; the receiver then used no id.
        Ok(if twice { None } else { id.flatten() })
    }

    /// The value of an event's `"id"`: a non-empty string or a number is an id.
    fn id_value(&mut self) -> Result<Option<Cow<'a, str>>, NotEnvelope> {
        match self.peek()? {
            b'"' => {
                let id = self.string()?.decode()?;
                Ok((!id.is_empty()).then_some(id))
            }
            b'{' | b'[' => {
                self.skip_value()?;
                Ok(None)
            }
            _ => match self.scalar()? {
                b"true" | b"false" | b"null" => Ok(None),
                // Parsed and displayed by serde_json, so `1e3` is the same id as before. A
                // number serde_json cannot hold (`1e999`) is valid JSON but no id, as for
                // serde_json reading the event.
                text => match serde_json::from_slice::<serde_json::Number>(text) {
                    Ok(n) => Ok(Some(Cow::Owned(n.to_string()))),
                    Err(_) if is_json_number(text) => Ok(None),
                    Err(_) => Err(NotEnvelope),
                },
            },
        }
    }

    /// Skips one value (at its first byte), checking its structure but not its text.
    /// Iterative, so deep nesting costs heap (bounded by the body's length), not stack.
    fn skip_value(&mut self) -> Result<(), NotEnvelope> {
        self.stack.clear();
        'value: loop {
            match self.peek()? {
                b'"' => {
                    self.string()?;
                }
                b'{' => {
                    self.i += 1;
                    self.ws();
                    if !self.eat(b'}') {
                        self.stack.push(b'}');
                        self.member_key()?;
                        continue 'value;
                    }
                }
                b'[' => {
                    self.i += 1;
                    self.ws();
                    if !self.eat(b']') {
                        self.stack.push(b']');
                        continue 'value;
                    }
                }
                _ => {
                    self.scalar()?;
                }
            }
            // After a value: close what ends here, or go on to the next item.
            loop {
                let Some(&close) = self.stack.last() else {
                    return Ok(());
                };
                self.ws();
                match self.next()? {
                    b',' => {
                        self.ws();
                        if close == b'}' {
                            self.member_key()?;
                        }
                        continue 'value;
                    }
                    c if c == close => {
                        self.stack.pop();
                    }
                    _ => return Err(NotEnvelope),
                }
            }
        }
    }

    /// An object member's `"key":` and the whitespace after it.
    fn member_key(&mut self) -> Result<(), NotEnvelope> {
        self.string()?;
        self.ws();
        self.expect(b':')?;
        self.ws();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    /// The ids as strings, for comparing.
    fn ids(body: &str) -> Result<Vec<Option<String>>, NotEnvelope> {
        event_ids(body.as_bytes()).map(|v| v.into_iter().map(|o| o.map(Cow::into_owned)).collect())
    }

    fn some(ids: &[&str]) -> Vec<Option<String>> {
        ids.iter().map(|s| Some((*s).to_owned())).collect()
    }

    /// serde_json's reading of a body, as the receiver did it before the scan: the envelope
    /// (`decode_envelope`), then each event that is an object as a struct with an optional
    /// `id` that is a string or a number. (The receiver did not check for an object: serde
    /// reads a struct from an array too, so `["a"]` had the id `a`. Only objects have ids.)
    fn serde_ids(body: &[u8]) -> Result<Vec<Option<String>>, ()> {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            id: Option<IdValue>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum IdValue {
            Str(String),
            Num(serde_json::Number),
        }
        let events = crate::http::decode_envelope(body).map_err(|_| ())?;
        Ok(events
            .iter()
            .map(|raw| match serde_json::from_str::<Probe>(raw.get()) {
                _ if !raw.get().starts_with('{') => None,
                Ok(Probe {
                    id: Some(IdValue::Str(s)),
                }) if !s.is_empty() => Some(s),
                Ok(Probe {
                    id: Some(IdValue::Num(n)),
                }) => Some(n.to_string()),
                _ => None,
            })
            .collect())
    }

    #[test]
    fn a_number_too_large_for_an_id_is_no_id() {
        // Found by the damaged-bodies proptest: a flipped byte made `1000e00309`, valid JSON
        // that serde_json reads as no id; the scan refused the whole envelope.
        assert_eq!(ids(r#"{"events":[{"id":1000e00309}]}"#), Ok(vec![None]));
        assert_eq!(ids(r#"{"events":[{"id":10x}]}"#), Err(NotEnvelope));
        assert!(is_json_number(b"-0.5e+3") && !is_json_number(b"01") && !is_json_number(b"1."));
    }

    #[test]
    fn reads_ids_in_order() {
        assert_eq!(
            ids(r#"{"events":[{"id":"a"},{"id":7},{"x":1,"id":"c"}]}"#),
            Ok(some(&["a", "7", "c"]))
        );
        assert_eq!(ids(r#"{"events":[]}"#), Ok(vec![]));
        // Ids without escapes are borrowed from the body, not copied.
        let v = event_ids(br#"{"events":[{"id":"a"}]}"#).unwrap();
        assert!(matches!(v[0], Some(Cow::Borrowed("a"))));
    }

    #[test]
    fn escaped_quotes_and_backslashes_do_not_end_strings() {
        let body = r#"{"events":[{"note":"say \"id\": \"x\", \\","id":"a\"b\\"}]}"#;
        assert_eq!(ids(body), Ok(some(&["a\"b\\"])));
        // A key that is `"id"` only once decoded is the id key too.
        assert_eq!(ids(r#"{"events":[{"i\u0064":"k"}]}"#), Ok(some(&["k"])));
        assert_eq!(ids(r#"{"\u0065vents":[{"id":"k"}]}"#), Ok(some(&["k"])));
    }

    #[test]
    fn only_the_events_top_level_id_counts() {
        let body = r#"{"id":"envelope","events":[
            {"request":{"id":"nested"},"id":"top","list":[{"id":"deep"}]},
            {"request":{"id":"nested only"}},
            ["id","not an object"],
            "id"
        ],"more":{"events":[{"id":"no"}]}}"#;
        assert_eq!(ids(body), Ok(vec![Some("top".into()), None, None, None]));
    }

    #[test]
    fn whitespace_anywhere_between_tokens() {
        let body = " \r\n\t{ \"events\" :\n[ { \"id\" : \"a\" } ,\t{\"id\":1 }\n]\n} \n";
        assert_eq!(ids(body), Ok(some(&["a", "1"])));
        assert_eq!(ids("{ }"), Err(NotEnvelope));
        assert_eq!(ids(r#"{"events":[ ]}"#), Ok(vec![]));
    }

    #[test]
    fn unicode_escapes_in_ids_are_decoded() {
        assert_eq!(
            ids(r#"{"events":[{"id":"caf\u00e9 \ud83d\ude00 \n"},{"id":"é"}]}"#),
            Ok(some(&["café 😀 \n", "é"]))
        );
        // A lone surrogate or a bad escape is not JSON.
        assert_eq!(ids(r#"{"events":[{"id":"\ud800"}]}"#), Err(NotEnvelope));
        assert_eq!(ids(r#"{"events":[{"id":"\x"}]}"#), Err(NotEnvelope));
    }

    #[test]
    fn ids_that_are_not_strings() {
        let body = r#"{"events":[{"id":1e3},{"id":-0.5},{"id":true},{"id":null},{"id":{"id":"x"}},
            {"id":["a"]},{"id":""},{"id":"a","id":"b"},{},{"id":18446744073709551616}]}"#;
        assert_eq!(
            ids(body),
            Ok(vec![
                Some("1000.0".into()),
                Some("-0.5".into()),
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                Some("1.8446744073709552e+19".into()),
            ])
        );
        assert_eq!(serde_ids(body.as_bytes()), ids(body).map_err(|_| ()));
        // A number id is parsed, so a malformed one is caught.
        assert_eq!(ids(r#"{"events":[{"id":01}]}"#), Err(NotEnvelope));
        assert_eq!(ids(r#"{"events":[{"id":1.2.3}]}"#), Err(NotEnvelope));
    }

    #[test]
    fn truncated_bodies_are_refused() {
        let body = r#"{"events":[{"id":"a","x":{"y":[1,"z\""]}},{"id":"b"}]}"#;
        assert!(ids(body).is_ok());
        for cut in 0..body.len() {
            assert_eq!(ids(&body[..cut]), Err(NotEnvelope), "cut at {cut}");
        }
        // Ends inside an escape.
        assert_eq!(ids(r#"{"events":[{"id":"a\"#), Err(NotEnvelope));
    }

    #[test]
    fn what_is_not_an_envelope() {
        for body in [
            "",
            "[]",
            "null",
            r#"{"nope":1}"#,
            r#"{"events":{}}"#,
            r#"{"events":null}"#,
            r#"{"events":"[]"}"#,
            r#"{"events":[],"events":[]}"#,
            r#"{"events":[]} x"#,
            r#"{"events":[]}{}"#,
            r#"{"events":[1,]}"#,
            r#"{"events":[1 2]}"#,
            r#"{"events":[{"id":"a",}]}"#,
            r#"{"events":[{"id" "a"}]}"#,
            r#"{"events":[{"a":{"b":1]}]}"#,
            r#"{"events":[[}]]}"#,
            r#"{"events":[{,}]}"#,
            r#"{"events":[],}"#,
            r#"{events:[]}"#,
            r#"{"events":[{"id":"a"}]"#,
            r#"{"events":[{"id":"\u00"}]}"#,
        ] {
            assert_eq!(ids(body), Err(NotEnvelope), "{body:?}");
            assert!(serde_ids(body.as_bytes()).is_err(), "{body:?}");
        }
        // Other members are ignored, before or after the events.
        assert_eq!(
            ids(r#"{"a":[1,{"b":null}],"events":[{"id":"k"}],"z":"}"}"#),
            Ok(some(&["k"]))
        );
    }

    #[test]
    fn invalid_utf8_in_an_id_is_refused_elsewhere_it_is_not_read() {
        let mut body = br#"{"events":[{"id":"a"}]}"#.to_vec();
        body[18] = 0xff;
        assert_eq!(event_ids(&body).map(|_| ()), Err(NotEnvelope));
        // Outside the ids the text is not checked (strict_json is for that).
        let body = b"{\"events\":[{\"x\":\"\xff\",\"id\":\"a\"}]}";
        assert_eq!(event_ids(body).unwrap(), vec![Some(Cow::Borrowed("a"))]);
        assert!(serde_ids(body).is_err());
    }

    #[test]
    fn deep_nesting_costs_no_stack() {
        let n = 200_000;
        let body = format!(
            r#"{{"events":[{{"x":{}{},"id":"a"}}]}}"#,
            "[".repeat(n),
            "]".repeat(n)
        );
        assert_eq!(ids(&body), Ok(some(&["a"])));
    }

    /// JSON text with optional whitespace between tokens.
    #[derive(Debug, Clone)]
    enum Json {
        Null,
        Bool(bool),
        Num(String),
        Str(String),
        Arr(Vec<Json>),
        /// Members with distinct keys.
        Obj(Vec<(String, Json)>),
    }

    fn write_str(out: &mut String, s: &str, escape_all: bool) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c if escape_all => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04X}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    impl Json {
        fn write(&self, out: &mut String, ws: &mut impl Iterator<Item = &'static str>) {
            fn sp(out: &mut String, ws: &mut impl Iterator<Item = &'static str>) {
                out.push_str(ws.next().unwrap_or(""));
            }
            match self {
                Json::Null => out.push_str("null"),
                Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                Json::Num(n) => out.push_str(n),
                Json::Str(s) => write_str(out, s, s.len() % 3 == 0),
                Json::Arr(items) => {
                    out.push('[');
                    for (i, v) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        sp(out, ws);
                        v.write(out, ws);
                        sp(out, ws);
                    }
                    out.push(']');
                }
                Json::Obj(members) => {
                    out.push('{');
                    for (i, (k, v)) in members.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        sp(out, ws);
                        write_str(out, k, k.len() % 4 == 1);
                        sp(out, ws);
                        out.push(':');
                        sp(out, ws);
                        v.write(out, ws);
                        sp(out, ws);
                    }
                    out.push('}');
                }
            }
        }
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9-]{0,12}",
            "\\PC{0,6}",
            Just("id".to_owned()),
            Just(String::new()),
            "[\"\\\\{}\\[\\],: ]{1,6}",
        ]
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            (-1e6f64..1e6).prop_map(|f| format!("{f}")),
            (any::<i32>(), -30i32..30).prop_map(|(m, e)| format!("{m}e{e}")),
            Just("-0".to_owned()),
            Just("1E+2".to_owned()),
        ]
    }

    fn value() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::Bool),
            number().prop_map(Json::Num),
            text().prop_map(Json::Str),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Json::Arr),
                prop::collection::btree_map(text(), inner, 0..5)
                    .prop_map(|m| Json::Obj(m.into_iter().collect())),
            ]
        })
    }

    /// An event: usually an object, with or without an id of any kind, among other members
    /// (nested ones with their own `id` included).
    fn event() -> impl Strategy<Value = Json> {
        let id = prop_oneof![
            text().prop_map(Json::Str),
            number().prop_map(Json::Num),
            value(),
        ];
        let object = (
            prop::option::of(id),
            prop::collection::btree_map("[a-z]{1,3}", value(), 0..4),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(id, others, at)| {
                let mut members: Vec<(String, Json)> =
                    others.into_iter().filter(|(k, _)| k != "id").collect();
                if let Some(id) = id {
                    members.insert(at.index(members.len() + 1), ("id".to_owned(), id));
                }
                Json::Obj(members)
            });
        prop_oneof![4 => object, 1 => value()]
    }

    fn envelope() -> impl Strategy<Value = Json> {
        (
            prop::collection::vec(event(), 0..8),
            prop::collection::btree_map("[a-z]{1,3}", value(), 0..3),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(events, others, at)| {
                let mut members: Vec<(String, Json)> =
                    others.into_iter().filter(|(k, _)| k != "events").collect();
                members.insert(
                    at.index(members.len() + 1),
                    ("events".to_owned(), Json::Arr(events)),
                );
                Json::Obj(members)
            })
    }

    fn render(j: &Json, spaces: &[usize]) -> String {
        const WS: [&str; 5] = ["", " ", "\n   ", "\t", "\r\n"];
        let mut ws = spaces.iter().cycle().map(|&i| WS[i % WS.len()]);
        let mut out = String::new();
        j.write(&mut out, &mut ws);
        out
    }

    proptest! {
        #[test]
        fn ids_match_serde_json(
            env in envelope(),
            spaces in prop::collection::vec(0usize..5, 1..16),
        ) {
            let body = render(&env, &spaces);
            let want = serde_ids(body.as_bytes());
            prop_assert!(want.is_ok(), "the generator made invalid JSON: {body}");
            prop_assert_eq!(ids(&body).map_err(|_| ()), want, "{}", body);
        }

        /// Cut or corrupted bodies: whatever serde_json accepts, the scan accepts with the
        /// same ids; the scan never panics.
        #[test]
        fn damaged_bodies_never_disagree_with_serde_json(
            env in envelope(),
            cut in any::<prop::sample::Index>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        ) {
            let mut body = render(&env, &[0]).into_bytes();
            for (at, byte) in flips {
                let i = at.index(body.len());
                body[i] = byte;
            }
            let keep = cut.index(body.len() + 1);
            let body = &body[..keep.max(body.len() / 2)];
            let scanned = event_ids(body)
                .map(|v| v.into_iter().map(|o| o.map(Cow::into_owned)).collect::<Vec<_>>());
            if let Ok(want) = serde_ids(body) {
                prop_assert_eq!(scanned, Ok(want));
            }
        }
    }
}
