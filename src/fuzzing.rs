//! Not a public API: thin wrappers over crate-private parsers, for the cargo-fuzz targets in
//! `fuzz/` and `tests/fuzz_regressions.rs`. Only built with the `fuzzing` feature, hidden from
//! the docs, and free to change or vanish in any release.
//!
//! Everything else the targets fuzz is public already (`parse_retry_after`, the envelope,
//! `RawEvent`, `LogStore`); what is here is what they could not reach otherwise.

use crate::{Error, RawEvent};

/// The store's record encoding of `event`, appended to `out` (`RawEvent::encode_record`).
pub fn encode_record(event: &RawEvent, out: &mut Vec<u8>) {
    event.encode_record(out);
}

/// Decodes a stored record (`RawEvent::decode_record`): bytes from disk, so any input.
pub fn decode_record(bytes: &[u8]) -> Result<RawEvent, Error> {
    RawEvent::decode_record(bytes)
}

/// `RawEvent::from_parts`: an event with metadata kept apart from its JSON (how the
/// dead-letter file and the record codec rebuild one).
pub fn raw_event_from_parts(
    id: String,
    kind: Option<String>,
    action: Option<String>,
    media_type: Option<String>,
    json: String,
) -> Result<RawEvent, Error> {
    RawEvent::from_parts(id, kind, action, media_type, json)
}

/// `EndpointConfig::validate`: every check an endpoint's settings get before anything starts
/// (what `hookwire send --resume` applies to the settings it read back from `send.json`).
pub fn validate_endpoint_config(config: &crate::endpoint::EndpointConfig) -> Result<(), Error> {
    config.validate().map(drop)
}
