//! Shared helpers for the world tests.
#![allow(dead_code, unused_macros, unused_imports)]

use doppel_harness::{Capabilities, World, WorldOptions};

/// Returns early (with the reason on stderr) when worlds cannot be opened here.
macro_rules! skip_without_worlds {
    () => {
        if let Err(reason) = doppel_harness::Capabilities::detect().worlds() {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
}
pub(crate) use skip_without_worlds;

/// Opens a world with the test build's helper binaries.
pub fn open_world() -> World {
    World::open(options()).expect("open world")
}

/// Options pointing at this build's doppel-init and doppel-impostor.
pub fn options() -> WorldOptions {
    WorldOptions {
        init_program: Some(env!("CARGO_BIN_EXE_doppel-init").into()),
        impostor_program: Some(env!("CARGO_BIN_EXE_doppel-impostor").into()),
        ..WorldOptions::default()
    }
}

/// Capabilities of this machine.
pub fn caps() -> &'static Capabilities {
    Capabilities::detect()
}
