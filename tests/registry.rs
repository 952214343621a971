//! A real docker registry (Debian's `docker-registry`, distribution 2.8.2) notifying the test
//! kit's receiver: what hookwire's tests assume a registry sends is what it sends.

mod common;

use std::time::{Duration, Instant};

use common::registry::{self, Registry};
use hookwire::testkit::{Receiver, ReceiverConfig};

#[test]
fn a_real_registry_notifies_pushes_and_deletes_in_distributions_envelope() {
    if !registry::available() {
        return;
    }
    let rx = Receiver::start(ReceiverConfig::default()).unwrap();
    let reg = Registry::start(&format!("{}v1/registry", rx.url()));
    let pushed = reg.push("library/demo", "v1");
    reg.delete("library/demo", &pushed.manifest);
    // Two blob pushes, the manifest push (with its tag), and two deletes: distribution 2.8.2
    // notifies the manifest's and the tag's.
    let deadline = Instant::now() + Duration::from_secs(20);
    while rx.ids().len() < 5 {
        assert!(Instant::now() < deadline, "got {:?}", rx.ids());
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = rx.stats();
    assert_eq!(st.duplicates, 0);
    // One event per request, each a distinct id (distribution's UUIDs).
    assert_eq!((st.requests, st.events), (5, 5), "{st:?}");
    let ids = rx.ids();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5, "{ids:?}");
}
