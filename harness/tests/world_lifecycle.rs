//! A world's lifetime: what it isolates and that nothing survives its drop.

mod common;

use common::{open_world, options, skip_without_worlds};
use doppel_harness::{World, WorldCommand};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

/// Host PIDs of every process whose PID namespace has inode `ns`.
fn processes_in_ns(ns: u64) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::metadata(format!("/proc/{pid}/ns/pid")).is_ok_and(|m| m.ino() == ns))
        .collect()
}

#[test]
fn drop_leaves_no_process_behind() {
    skip_without_worlds!();
    let w = open_world();
    let ns = w.pid_ns_inode();
    assert_ne!(ns, 0);
    let own_ns = std::fs::metadata("/proc/self/ns/pid").unwrap().ino();
    assert_ne!(ns, own_ns, "the world has its own PID namespace");
    let sleepers: Vec<_> = (0..5)
        .map(|_| {
            w.spawn(&WorldCommand::new("/bin/sleep").arg("1000"))
                .unwrap()
        })
        .collect();
    let daemon = w.daemon().unwrap();
    let census = w.census().unwrap();
    assert!(
        census.orphans().iter().any(|p| p.stat.pid == daemon.pid),
        "daemon is an orphan of init"
    );
    let inside = processes_in_ns(ns);
    // init + 5 sleepers + the daemon at least.
    assert!(inside.len() >= 7, "{inside:?}");
    let workdir = w.root().to_path_buf();
    drop(sleepers);
    drop(w);
    assert_eq!(processes_in_ns(ns), Vec::<i32>::new());
    assert!(!workdir.exists(), "work dir removed");
}

#[test]
fn explicit_close_reports_success() {
    skip_without_worlds!();
    let w = open_world();
    let ns = w.pid_ns_inode();
    w.spawn(&WorldCommand::new("/bin/sleep").arg("1000"))
        .unwrap();
    w.close().unwrap();
    assert!(processes_in_ns(ns).is_empty());
}

#[test]
fn world_has_private_proc_and_tmpfs() {
    skip_without_worlds!();
    let w = open_world();
    let root = w.root().to_string_lossy().into_owned();
    let exit = w
        .run(
            &WorldCommand::new("/bin/sh").args([
                "-c",
                &format!("ls /proc | grep -c '^[0-9]' ; echo hi > {root}/f ; stat -f -c %T {root}"),
            ]),
            Duration::from_secs(10),
        )
        .unwrap();
    let out = String::from_utf8(exit.stdout.bytes).unwrap();
    let mut lines = out.lines();
    let nprocs: usize = lines.next().unwrap().trim().parse().unwrap();
    assert!(
        nprocs <= 4,
        "the world's /proc lists only world processes: {nprocs}"
    );
    assert_eq!(lines.next(), Some("tmpfs"));
    // Reachable from the host through init's root, not at the plain path.
    assert_eq!(std::fs::read(w.host_path("f").unwrap()).unwrap(), b"hi\n");
    assert!(!w.root().join("f").exists());
}

#[test]
fn many_worlds_at_once_are_independent() {
    skip_without_worlds!();
    let worlds: Vec<World> = (0..4).map(|_| World::open(options()).unwrap()).collect();
    let pid = doppel_harness::Pid::new(777).unwrap();
    for w in &worlds {
        let s = w
            .spawn_at(pid, &WorldCommand::new("/bin/sleep").arg("1000"))
            .unwrap();
        assert_eq!(s.pid, pid, "each world has its own PID 777");
    }
    let inodes: std::collections::HashSet<u64> = worlds.iter().map(World::pid_ns_inode).collect();
    assert_eq!(inodes.len(), 4);
}
