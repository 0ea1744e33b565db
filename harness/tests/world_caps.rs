//! Capability detection.

use doppel_harness::Capabilities;

#[test]
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

#[test]
fn root_machine_can_open_worlds() {
    let caps = Capabilities::detect();
    if !caps.root {
        eprintln!("SKIPPED: not root; worlds depend on user namespaces here");
        return;
    }
    assert!(caps.pidns.is_available(), "{:?}", caps.pidns);
    assert!(caps.ns_last_pid.is_available(), "{:?}", caps.ns_last_pid);
    assert!(caps.set_tid.is_available(), "{:?}", caps.set_tid);
    assert!(caps.worlds().is_ok());
}
