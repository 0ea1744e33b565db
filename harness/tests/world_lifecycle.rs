//! A world's lifetime: what it isolates and that nothing survives its drop.

mod common;

use common::{Need, open_world, options, world_main};
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

fn drop_leaves_no_process_behind() {
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

fn explicit_close_reports_success() {
    let w = open_world();
    let ns = w.pid_ns_inode();
    w.spawn(&WorldCommand::new("/bin/sleep").arg("1000"))
        .unwrap();
    w.close().unwrap();
    assert!(processes_in_ns(ns).is_empty());
}

fn world_has_private_proc_and_tmpfs() {
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

fn many_worlds_at_once_are_independent() {
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

fn helper_hold_world_until_stdin_closes() {
    use std::io::{Read, Write};
    let w = open_world();
    w.spawn(&WorldCommand::new("/bin/sleep").arg("1000"))
        .unwrap();
    w.daemon().unwrap();
    println!("WORLD {} {}", w.init_outer_pid(), w.pid_ns_inode());
    std::io::stdout().flush().unwrap();
    let mut buf = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut buf);
}

/// Kills and reaps a child process when dropped.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn world_dies_with_its_harness() {
    use std::io::BufRead;
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_hold_world_until_stdin_closes",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(child);
    let stdout = guard.0.stdout.take().unwrap();
    let line = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("WORLD ").map(|(_, rest)| rest.to_string()))
        .expect("helper reports its world");
    let mut it = line.split_whitespace();
    let init_pid: i32 = it.next().unwrap().parse().unwrap();
    let ns: u64 = it.next().unwrap().parse().unwrap();
    let pidfd_of = |pid: i32| {
        rustix::process::pidfd_open(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .unwrap()
    };
    let pidfd = pidfd_of(init_pid);
    // init's parent is the stub, which reaps init and then exits: once the
    // stub is gone, init is no longer even a zombie in the namespace.
    let stat = std::fs::read(format!("/proc/{init_pid}/stat")).unwrap();
    let stub = doppel_harness::procfs::parse_stat(&stat).unwrap().ppid;
    let stub_pidfd = pidfd_of(stub);
    assert!(processes_in_ns(ns).len() >= 3);
    // The harness dies without running any destructor.
    guard.0.kill().unwrap();
    guard.0.wait().unwrap();
    let mut fds = [rustix::event::PollFd::new(
        &pidfd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::event::Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    };
    let n = rustix::event::poll(&mut fds, Some(&ts)).unwrap();
    assert_eq!(n, 1, "init exited once its harness was gone");
    let mut fds = [rustix::event::PollFd::new(
        &stub_pidfd,
        rustix::event::PollFlags::IN,
    )];
    let n = rustix::event::poll(&mut fds, Some(&ts)).unwrap();
    assert_eq!(n, 1, "the stub reaped init and exited");
    assert_eq!(processes_in_ns(ns), Vec::<i32>::new());
}

fn world_processes_are_not_in_the_harness_process_group() {
    let w = open_world();
    let s = w
        .spawn(&WorldCommand::new("/bin/sleep").arg("1000"))
        .unwrap();
    // Its host PID: the process in the world's namespace whose innermost
    // NSpid is the world PID.
    let host_pid = processes_in_ns(w.pid_ns_inode())
        .into_iter()
        .find(|hp| {
            let st = std::fs::read(format!("/proc/{hp}/status")).unwrap_or_default();
            doppel_harness::procfs::parse_nspid(&st)
                .is_ok_and(|v| v.last() == Some(&s.pid) && v.len() > 1)
        })
        .expect("host pid of the world process")
        .to_string();
    let pgid_of = |pid: &str| -> i32 {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        st[st.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_ne!(
        pgid_of(&host_pid),
        pgid_of("self"),
        "kill(0) in the world must not reach us"
    );
}

fn bad_world_options_are_typed_errors() {
    if common::caps().per_ns_pid_max.is_available() {
        let err = World::open(doppel_harness::WorldOptions {
            pid_max: Some(1),
            ..options()
        })
        .unwrap_err();
        assert!(
            matches!(err, doppel_harness::WorldError::Setup(_)),
            "{err:?}"
        );
    }
    // A program that is not doppel-init: the channel closes before Ready.
    let err = World::open(doppel_harness::WorldOptions {
        init_program: Some("/bin/true".into()),
        ..options()
    })
    .unwrap_err();
    assert!(
        matches!(err, doppel_harness::WorldError::Control(_)),
        "{err:?}"
    );
}

fn cgroup_unified_can_be_unmounted_inside_the_world_only() {
    let w = World::open(doppel_harness::WorldOptions {
        unmount_cgroup_unified: true,
        ..options()
    })
    .unwrap();
    let exit = w
        .run(
            &WorldCommand::new("/bin/sh").args(["-c", "stat -f -c %T /sys/fs/cgroup/unified"]),
            Duration::from_secs(10),
        )
        .unwrap();
    // Unmounted (root) or covered by a tmpfs (user namespace, where the
    // inherited mount is locked): either way no cgroup2 there any more.
    assert_eq!(exit.stdout.bytes, b"tmpfs\n", "gone inside the world");
    let still = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some("/sys/fs/cgroup/unified"));
    assert!(still, "still mounted on the host");
}

fn a_stale_init_is_refused_with_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    // A fake init that answers Ready without a protocol version, like one
    // built before versions existed.
    let body = br#"{"Ready":{"outer_pid":1,"pid_max":100,"userns":false,"set_tid":false}}"#;
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(body);
    let octal: String = frame.iter().map(|b| format!("\\{b:03o}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("old-init");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nprintf '{octal}' >&3\nexec cat <&3 >/dev/null\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = World::open(doppel_harness::WorldOptions {
        init_program: Some(script),
        ..options()
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            doppel_harness::WorldError::ProtocolMismatch { init: 0, .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("cargo build --workspace"), "{err}");
}

world_main!(
    Need::Worlds => [
        drop_leaves_no_process_behind,
        explicit_close_reports_success,
        world_has_private_proc_and_tmpfs,
        many_worlds_at_once_are_independent,
        world_dies_with_its_harness,
        world_processes_are_not_in_the_harness_process_group,
        bad_world_options_are_typed_errors,
    ],
    Need::HelperProcess => [
        helper_hold_world_until_stdin_closes,
    ],
    Need::CgroupUnified => [
        cgroup_unified_can_be_unmounted_inside_the_world_only,
    ],
    Need::Nothing => [
        a_stale_init_is_refused_with_a_clear_error,
    ],
);
