//! Shared helpers for the world tests, and their runner: every world test
//! binary is `harness = false` and lists its tests through [`world_main!`],
//! so a test whose needs this machine lacks is *ignored* with the reason
//! (printed on stderr), never passed.
#![allow(dead_code, unused_macros, unused_imports)]

use doppel_harness::{Capabilities, World, WorldOptions};
use std::time::{Duration, Instant};

/// What a test needs beyond the code under test.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// Nothing: runs everywhere.
    Nothing,
    /// Worlds (PID + mount namespaces, a user namespace when not root).
    Worlds,
    /// Worlds and a writable `ns_last_pid` inside them.
    NsLastPid,
    /// Worlds and a per-namespace `pid_max` (Linux 6.14+).
    PerNsPidMax,
    /// Worlds, on a host that mounts cgroup2 at `/sys/fs/cgroup/unified`.
    CgroupUnified,
    /// Running as root.
    Root,
    /// Worlds, and `python3` on the host (to open sockets in a world).
    Python3,
    /// Not a test: a process another test starts (`--ignored --exact NAME`).
    HelperProcess,
}

impl Need {
    /// Why a test with this need cannot run here, if it cannot.
    pub fn missing(self) -> Option<String> {
        let caps = Capabilities::detect();
        let worlds = || caps.worlds().err();
        match self {
            Need::Nothing => None,
            Need::Worlds => worlds(),
            Need::NsLastPid => worlds().or_else(|| {
                caps.ns_last_pid
                    .reason()
                    .map(|r| format!("ns_last_pid unavailable: {r}"))
            }),
            Need::PerNsPidMax => worlds().or_else(|| {
                caps.per_ns_pid_max
                    .reason()
                    .map(|r| format!("no per-namespace pid_max: {r}"))
            }),
            Need::CgroupUnified => worlds().or_else(|| {
                let on_host = std::fs::read_to_string("/proc/self/mountinfo")
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.split_whitespace().nth(4) == Some("/sys/fs/cgroup/unified"));
                (!on_host).then(|| "no /sys/fs/cgroup/unified mount on this host".to_string())
            }),
            Need::Root => (!caps.root).then(|| "not root".to_string()),
            Need::Python3 => worlds().or_else(|| {
                (!std::path::Path::new("/usr/bin/python3").exists())
                    .then(|| "no /usr/bin/python3".to_string())
            }),
            Need::HelperProcess => Some("a helper process another test starts".to_string()),
        }
    }
}

/// Runs the listed tests through libtest-mimic (nextest drives it like any
/// libtest binary): `world_main!(Need::Worlds => [a, b], Need::Nothing => [c])`.
/// A panic fails the test; a missing need ignores it, with the reason.
macro_rules! world_main {
    ($($need:expr => [$($test:ident),* $(,)?]),* $(,)?) => {
        fn main() {
            let args = libtest_mimic::Arguments::from_args();
            let mut trials = Vec::new();
            $($(
                let missing = common::Need::missing($need);
                if let Some(why) = &missing {
                    eprintln!("ignored {}: {why}", stringify!($test));
                }
                trials.push(
                    libtest_mimic::Trial::test(stringify!($test), || {
                        $test();
                        Ok(())
                    })
                    .with_ignored_flag(missing.is_some()),
                );
            )*)*
            libtest_mimic::run(&args, trials).exit();
        }
    };
}
pub(crate) use world_main;

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

/// How long a test polls the census for something init is about to record.
pub const CENSUS_DEADLINE: Duration = Duration::from_secs(10);

/// Asks the census (one round trip to init each time, no sleeping) until
/// `found` answers `Some`, and returns that; panics naming `what` once
/// [`CENSUS_DEADLINE`] has passed.
pub fn poll_census<T>(
    w: &World,
    what: &str,
    mut found: impl FnMut(&doppel_harness::Census) -> Option<T>,
) -> T {
    let deadline = Instant::now() + CENSUS_DEADLINE;
    let mut polls = 0u64;
    loop {
        let c = w.census().expect("census");
        polls += 1;
        if let Some(t) = found(&c) {
            return t;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: not in the census after {CENSUS_DEADLINE:?} ({polls} polls); last census: {:?}",
                c.reaped_orphans()
            );
        }
    }
}
