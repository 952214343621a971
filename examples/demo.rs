//! hookwire's main job on an embedded default: no server to set up.
//!
//! Starts two loopback webhook receivers from the test kit (one healthy, one that answers
//! `503 Retry-After: 0` to its first requests), fans events out to an endpoint for each through
//! a `Broadcaster`, closes (which drains), and prints the endpoints' stats as distribution's
//! expvar JSON on stdout. Progress goes to stderr.
//!
//! ```text
//! cargo run --release --example demo [EVENTS]
//! ```

use std::sync::Arc;
use std::time::Instant;

use hookwire::endpoint::{Endpoint, EndpointConfig};
use hookwire::sink::Broadcaster;
use hookwire::stats::render_expvar;
use hookwire::testkit::{Receiver, ReceiverConfig, Reply};
use hookwire::{RawEvent, Sink};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let events: u64 = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| format!("EVENTS must be a number, got {n:?}"))?,
        None => 2_000,
    };
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let healthy = Receiver::start(ReceiverConfig::default().secrets(vec![secret.parse()?]))?;
    let flaky = Receiver::start(ReceiverConfig::default().statuses(vec![
        Reply::status(503).retry_after("0"),
        Reply::status(503).retry_after("0"),
        Reply::status(500),
    ]))?;

    let mut audit = EndpointConfig::new("audit", healthy.url());
    audit.secrets = vec![secret.to_string()];
    let audit = Arc::new(Endpoint::<RawEvent>::new(audit)?);
    let mut mirror = EndpointConfig::new("mirror", flaky.url());
    mirror.ignored_actions = vec!["pull".to_string()];
    let mirror = Arc::new(Endpoint::<RawEvent>::new(mirror)?);

    let fanout = Broadcaster::new(vec![
        audit.clone() as Arc<dyn Sink<RawEvent>>,
        mirror.clone() as Arc<dyn Sink<RawEvent>>,
    ]);
    let start = Instant::now();
    for i in 0..events {
        let action = if i % 4 == 3 { "pull" } else { "push" };
        let json = format!(
            r#"{{"id":"evt-{i}","timestamp":"2026-11-22T00:00:00Z","action":"{action}","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"demo/app","tag":"v{i}"}}}}"#
        );
        fanout.write(RawEvent::parse(json)?)?;
    }
    let written = start.elapsed();
    fanout.close()?;
    let drained = start.elapsed();
    eprintln!(
        "demo: {events} events written in {written:?}, all delivered by {drained:?}; \
         audit receiver counted {} (signatures checked), mirror {} after {} refusals",
        healthy.stats().distinct,
        flaky.stats().distinct,
        flaky
            .stats()
            .statuses
            .iter()
            .filter(|(c, _)| **c >= 500)
            .map(|(_, n)| n)
            .sum::<u64>(),
    );
    let doc = render_expvar(&[audit.snapshot(), mirror.snapshot()]);
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
