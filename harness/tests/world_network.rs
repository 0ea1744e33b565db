//! Worlds have a network namespace of their own, loopback up: runtimes and
//! daemons that name abstract unix sockets or ports after a box id do not
//! collide between worlds running side by side.

mod common;

use common::{Need, open_world, options, world_main};
use doppel_harness::{ExitStatus, World, WorldCommand, WorldOptions};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// Binds the abstract unix socket `name` and 127.0.0.1, then prints `bound`
/// and waits (for ever, or `hold` seconds).
fn binder(name: &str, hold: bool) -> WorldCommand {
    let script = format!(
        "import socket, sys, time\n\
         u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n\
         u.bind('\\0{name}')\n\
         t = socket.socket()\n\
         t.bind(('127.0.0.1', 0))\n\
         t.listen()\n\
         c = socket.create_connection(t.getsockname())\n\
         print('bound', flush=True)\n\
         {}",
        if hold { "time.sleep(1000)" } else { "" }
    );
    WorldCommand::new("/usr/bin/python3").args(["-c".to_string(), script])
}

/// Waits until the abstract socket `name` shows in the world's /proc/net/unix.
fn await_bound(w: &World, name: &str) {
    let deadline = Instant::now() + T;
    loop {
        let e = w
            .run(&WorldCommand::new("/bin/cat").arg("/proc/net/unix"), T)
            .expect("cat");
        if String::from_utf8_lossy(&e.stdout.bytes).contains(&format!("@{name}")) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never bound");
    }
}

fn worlds_have_their_own_loopback_and_abstract_sockets() {
    let name = format!("doppel-net-{}", std::process::id());
    let a = open_world();
    let b = open_world();
    assert!(a.own_network() && b.own_network());
    // Only loopback in a world's own namespace.
    let dev = a
        .run(&WorldCommand::new("/bin/cat").arg("/proc/net/dev"), T)
        .expect("cat");
    let text = String::from_utf8_lossy(&dev.stdout.bytes).into_owned();
    let ifaces: Vec<&str> = text
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{text}");
    // World a holds the name; world b binds it too (and 127.0.0.1: lo is up).
    a.spawn(&binder(&name, true)).expect("spawn in a");
    await_bound(&a, &name);
    let e = b.run(&binder(&name, false), T).expect("run in b");
    assert_eq!(
        e.status,
        ExitStatus::Exited(0),
        "{}",
        String::from_utf8_lossy(&e.stderr.bytes)
    );
    assert_eq!(String::from_utf8_lossy(&e.stdout.bytes).trim(), "bound");
}

fn worlds_sharing_the_host_network_collide() {
    // The same scene with host_network: the second bind fails, so the test
    // above can fail. The name is this test's own.
    let name = format!("doppel-net-shared-{}", std::process::id());
    let shared = || {
        World::open(WorldOptions {
            host_network: true,
            ..options()
        })
        .expect("open world")
    };
    let (a, b) = (shared(), shared());
    assert!(!a.own_network());
    a.spawn(&binder(&name, true)).expect("spawn in a");
    await_bound(&a, &name);
    let e = b.run(&binder(&name, false), T).expect("run in b");
    assert_ne!(e.status, ExitStatus::Exited(0));
    assert!(
        String::from_utf8_lossy(&e.stderr.bytes).contains("Address already in use"),
        "{}",
        String::from_utf8_lossy(&e.stderr.bytes)
    );
}

world_main!(
    Need::Python3 => [
        worlds_have_their_own_loopback_and_abstract_sockets,
        worlds_sharing_the_host_network_collide,
    ],
);
