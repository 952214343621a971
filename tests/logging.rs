//! What the engine writes to the log when things fail over and over: one line per kind and
//! interval, not one per event. (Its own test binary: a process has one logger.)

use std::sync::Mutex;
use std::time::Duration;

use hookwire::RawEvent;
use hookwire::config::EndpointConfig;
use hookwire::engine::Dispatcher;
use hookwire::testkit::{Receiver, ReceiverConfig};

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.level() <= log::Level::Warn {
            LINES.lock().unwrap().push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

#[test]
fn a_dead_letter_storm_writes_one_warning_per_interval() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    // Every request is refused for good: every event is given up at once.
    let rx = Receiver::start(ReceiverConfig::default().fail_for(Duration::from_secs(3600), 400))
        .unwrap();
    let d = Dispatcher::builder().workers(1).build().unwrap();
    d.add_endpoint(EndpointConfig::new("storm", rx.url()))
        .unwrap();
    for i in 0..500 {
        let e = RawEvent::parse(format!(r#"{{"id":"e{i}"}}"#)).unwrap();
        d.publish_raw(e).unwrap();
    }
    assert!(d.wait_idle(Duration::from_secs(30)));
    assert_eq!(d.snapshot()[0].metrics.dead_lettered, 500);
    let lines = LINES.lock().unwrap().clone();
    let gave_up = lines.iter().filter(|l| l.contains("gave up")).count();
    // The run takes well under the 10 s interval: the first line, perhaps one more.
    assert!((1..=2).contains(&gave_up), "{gave_up} lines: {lines:#?}");
}
