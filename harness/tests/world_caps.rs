//! Capability detection.

mod common;

use common::{Need, world_main};
use doppel_harness::Capabilities;

fn every_capability_is_available_or_has_a_reason() {
    let caps = Capabilities::detect_uncached();
    for (name, c) in caps.list() {
        match c.reason() {
            None => eprintln!("{name}: available"),
            Some(r) => {
                assert!(!r.trim().is_empty(), "{name} missing without a reason");
                eprintln!("{name}: MISSING: {r}");
            }
        }
    }
    // Cached detection agrees with a fresh one.
    assert_eq!(Capabilities::detect().pidns, caps.pidns);
}

fn root_machine_can_open_worlds() {
    let caps = Capabilities::detect();
    assert!(caps.pidns.is_available(), "{:?}", caps.pidns);
    assert!(caps.ns_last_pid.is_available(), "{:?}", caps.ns_last_pid);
    assert!(caps.set_tid.is_available(), "{:?}", caps.set_tid);
    assert!(caps.worlds().is_ok());
}

world_main!(
    Need::Nothing => [
        every_capability_is_available_or_has_a_reason,
    ],
    Need::Root => [
        root_machine_can_open_worlds,
    ],
);
