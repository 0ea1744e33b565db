//! spawn / spawn_at / wait / signal / run inside a world.

mod common;

use common::{Need, open_world, world_main};
use doppel_harness::{ExitStatus, Pid, RemoteError, Signal, WorldCommand, WorldError};
use std::time::Duration;

fn run_captures_output_and_status() {
    let w = open_world();
    let exit = w
        .run(
            &WorldCommand::new("/bin/sh")
                .args(["-c", "echo out; echo err >&2; read x; echo got $x; exit 3"])
                .stdin("hello\n"),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(exit.status, ExitStatus::Exited(3));
    assert_eq!(exit.stdout.bytes, b"out\ngot hello\n");
    assert_eq!(exit.stderr.bytes, b"err\n");
    assert!(!exit.stdout.truncated);
}

fn processes_see_world_pids() {
    let w = open_world();
    let exit = w
        .run(
            &WorldCommand::new("/bin/sh").args(["-c", "echo $$; echo $PPID"]),
            Duration::from_secs(10),
        )
        .unwrap();
    let out = String::from_utf8(exit.stdout.bytes).unwrap();
    let mut lines = out.lines();
    let pid: i32 = lines.next().unwrap().parse().unwrap();
    assert_eq!(pid, exit.pid.get());
    assert_eq!(lines.next(), Some("1"), "parent is the world's init");
}

fn spawn_at_hits_the_exact_pid_200_times() {
    let w = open_world();
    let cmd = WorldCommand::new("/bin/true");
    for i in 0..200 {
        let want = Pid::new(1000 + i * 37).unwrap();
        let s = w.spawn_at(want, &cmd).unwrap();
        assert_eq!(s.pid, want, "attempt {i}");
        let exit = w.wait(s.pid, Duration::from_secs(10)).unwrap();
        assert_eq!(exit.status, ExitStatus::Exited(0));
    }
}

fn spawn_at_a_taken_pid_is_a_typed_error() {
    let w = open_world();
    let sleeper = w
        .spawn(&WorldCommand::new("/bin/sleep").arg("1000"))
        .unwrap();
    let err = w
        .spawn_at(sleeper.pid, &WorldCommand::new("/bin/true"))
        .unwrap_err();
    assert!(
        matches!(err, WorldError::Remote(RemoteError::PidTaken { pid }) if pid == sleeper.pid),
        "{err:?}"
    );
    let err = w
        .spawn_at(Pid::INIT, &WorldCommand::new("/bin/true"))
        .unwrap_err();
    assert!(
        matches!(err, WorldError::Remote(RemoteError::PidTaken { .. })),
        "{err:?}"
    );
}

fn spawn_at_out_of_range_is_a_typed_error() {
    let w = open_world();
    let max = w.pid_max();
    for bad in [max, max + 1, i32::MAX] {
        let err = w
            .spawn_at(Pid::new(bad).unwrap(), &WorldCommand::new("/bin/true"))
            .unwrap_err();
        assert!(
            matches!(err, WorldError::Remote(RemoteError::PidOutOfRange { pid, pid_max }) if pid == bad && pid_max == max),
            "{err:?}"
        );
    }
    // The world still works afterwards.
    let s = w
        .spawn_at(Pid::new(max - 1).unwrap(), &WorldCommand::new("/bin/true"))
        .unwrap();
    assert_eq!(s.pid.get(), max - 1);
}

fn wait_reports_timeout_then_kill_on_timeout() {
    let w = open_world();
    let s = w
        .spawn(&WorldCommand::new("/bin/sleep").arg("1000"))
        .unwrap();
    let err = w.wait(s.pid, Duration::from_millis(50)).unwrap_err();
    assert!(
        matches!(err, WorldError::Remote(RemoteError::WaitTimedOut { .. })),
        "{err:?}"
    );
    assert!(w.is_running(s.pid, Some(s.start_time)));
    let exit = w.wait_or_kill(s.pid, Duration::from_millis(50)).unwrap();
    assert!(exit.killed_on_timeout);
    assert_eq!(exit.status, ExitStatus::Signaled(Signal::KILL));
}

fn signal_reaches_world_process() {
    let w = open_world();
    let s = w
        .spawn(&WorldCommand::new("/bin/sleep").arg("1000"))
        .unwrap();
    w.signal(s.pid, Signal::TERM).unwrap();
    let exit = w.wait(s.pid, Duration::from_secs(10)).unwrap();
    assert_eq!(exit.status, ExitStatus::Signaled(Signal::TERM));
}

fn exec_failure_and_missing_program_are_typed() {
    let w = open_world();
    let err = w
        .spawn(&WorldCommand::new("/nonexistent/prog"))
        .unwrap_err();
    assert!(
        matches!(err, WorldError::Remote(RemoteError::ExecFailed { errno, .. }) if errno == libc_enoent()),
        "{err:?}"
    );
    let err = w
        .spawn(&WorldCommand::new("no-such-program-doppel"))
        .unwrap_err();
    assert!(
        matches!(err, WorldError::Remote(RemoteError::ProgramNotFound { .. })),
        "{err:?}"
    );
}

fn libc_enoent() -> i32 {
    2
}

fn ns_last_pid_fallback_hits_the_exact_pid_200_times() {
    let w = doppel_harness::World::open(doppel_harness::WorldOptions {
        force_ns_last_pid: true,
        ..common::options()
    })
    .unwrap();
    assert!(!w.uses_set_tid());
    let cmd = WorldCommand::new("/bin/true");
    for i in 0..200 {
        let want = Pid::new(2000 + i * 41).unwrap();
        let s = w.spawn_at(want, &cmd).unwrap();
        assert_eq!(s.pid, want, "attempt {i}");
        w.wait(s.pid, Duration::from_secs(10)).unwrap();
    }
    let sleeper = w
        .spawn(&WorldCommand::new("/bin/sleep").arg("1000"))
        .unwrap();
    let err = w.spawn_at(sleeper.pid, &cmd).unwrap_err();
    assert!(
        matches!(err, WorldError::Remote(RemoteError::PidTaken { .. })),
        "{err:?}"
    );
}

fn wraparound_placement_reaches_a_recycled_pid() {
    let w = doppel_harness::World::open(doppel_harness::WorldOptions {
        pid_max: Some(1000),
        ..common::options()
    })
    .unwrap();
    assert_eq!(w.pid_max(), 1000);
    // A victim is born and dies; its PID must come round again.
    let victim = w.spawn(&WorldCommand::new("/bin/true")).unwrap();
    w.wait(victim.pid, Duration::from_secs(10)).unwrap();
    let target = Pid::new(400).unwrap();
    let placed = w
        .place_by_wraparound(target, &WorldCommand::new("/bin/sleep").arg("1000"), None)
        .unwrap();
    assert_eq!(placed.spawned.pid, target);
    assert!(placed.forks > 300, "forks: {}", placed.forks);
    // Below 300 the kernel never comes back after a wrap: typed NotStaged.
    let err = w
        .place_by_wraparound(
            Pid::new(100).unwrap(),
            &WorldCommand::new("/bin/true"),
            Some(3000),
        )
        .unwrap_err();
    assert!(
        matches!(err, WorldError::Remote(RemoteError::NotStaged { .. })),
        "{err:?}"
    );
}

fn death_by_a_realtime_signal_is_reported_and_reaping_goes_on() {
    let w = open_world();
    let rt = Signal::new(35).unwrap();
    let s = w
        .spawn(&WorldCommand::new("/bin/sleep").arg("1000"))
        .unwrap();
    w.signal(s.pid, rt).unwrap();
    let exit = w.wait(s.pid, Duration::from_secs(10)).unwrap();
    assert_eq!(exit.status, ExitStatus::Signaled(rt));
    // An orphan killed the same way is still reaped and recorded.
    let d = w.daemon().unwrap();
    w.signal(d.pid, rt).unwrap();
    let again = w
        .run(&WorldCommand::new("/bin/true"), Duration::from_secs(10))
        .unwrap();
    assert!(again.status.success());
    let status = common::poll_census(
        &w,
        "orphan killed by a real-time signal reaped and recorded",
        |c| {
            c.reaped_orphans()
                .iter()
                .find(|o| o.pid == d.pid)
                .map(|o| o.status)
        },
    );
    assert_eq!(status, ExitStatus::Signaled(rt));
}

fn signal_to_a_missing_process_is_typed() {
    let w = open_world();
    let err = w
        .signal(Pid::new(w.pid_max() - 1).unwrap(), Signal::TERM)
        .unwrap_err();
    assert!(
        matches!(err, WorldError::Remote(RemoteError::NoSuchProcess { .. })),
        "{err:?}"
    );
}

fn status_field(w: &doppel_harness::World, pid: Pid, key: &str) -> String {
    let text = std::fs::read_to_string(w.host_root().join(format!("proc/{pid}/status"))).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap()
        .trim()
        .to_string()
}

fn world_processes_get_a_clean_signal_state() {
    let w = open_world();
    let s = w
        .spawn(&WorldCommand::new("/bin/sleep").arg("1000"))
        .unwrap();
    // init blocks SIGCHLD and Rust ignores SIGPIPE: neither may leak.
    assert_eq!(status_field(&w, s.pid, "SigBlk:"), "0000000000000000");
    assert_eq!(status_field(&w, s.pid, "SigIgn:"), "0000000000000000");
}

fn setsid_env_and_cwd_are_applied() {
    let w = open_world();
    let s = w
        .spawn(&WorldCommand::new("/bin/sleep").arg("1000").setsid(true))
        .unwrap();
    let stat = std::fs::read_to_string(w.host_root().join(format!("proc/{}/stat", s.pid))).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    let session: i32 = after.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(session, s.pid.get(), "session leader");

    let exit = w
        .run(
            &WorldCommand::new("/usr/bin/env")
                .env_clear()
                .env("A", "1")
                .env("B", "2"),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(exit.stdout.bytes, b"A=1\nB=2\n");

    let exit = w
        .run(
            &WorldCommand::new("/bin/sh")
                .args(["-c", "pwd; echo ${DOPPEL_TEST_X-unset}"])
                .current_dir("/tmp")
                .env("DOPPEL_TEST_X", "x")
                .env_remove("DOPPEL_TEST_X"),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(exit.stdout.bytes, b"/tmp\nunset\n");
}

fn ready_fd_waits_for_the_line_and_times_out_typed() {
    let w = open_world();
    let s = w
        .spawn(
            &WorldCommand::new("/bin/sh")
                .args(["-c", "echo \"up $DOPPEL_READY_FD\" >&3; exec sleep 1000"])
                .ready_fd(true),
        )
        .unwrap();
    assert_eq!(s.ready_line.as_deref(), Some("up 3"));
    let err = w
        .spawn(
            &WorldCommand::new("/bin/sleep")
                .arg("1000")
                .ready_fd(true)
                .ready_timeout(Duration::from_millis(50)),
        )
        .unwrap_err();
    let WorldError::Remote(RemoteError::ReadyTimeout { pid, .. }) = err else {
        panic!("{err:?}")
    };
    assert!(
        w.proc_stat(pid).is_err(),
        "the silent process was killed and reaped"
    );
    // EOF without a line also ends the wait.
    let s = w
        .spawn(
            &WorldCommand::new("/bin/sh")
                .args(["-c", "exec 3>&-; exec sleep 1000"])
                .ready_fd(true),
        )
        .unwrap();
    assert_eq!(s.ready_line, None);
}

fn absurd_durations_do_not_panic() {
    let w = open_world();
    let s = w
        .spawn(&WorldCommand::new("/bin/sh").args(["-c", "exit 5"]))
        .unwrap();
    let exit = w.wait(s.pid, Duration::MAX).unwrap();
    assert_eq!(exit.status, ExitStatus::Exited(5));
    let out = w
        .crash(
            &WorldCommand::new("/bin/true"),
            Duration::MAX,
            Duration::MAX,
        )
        .unwrap();
    assert!(
        matches!(out, doppel_harness::CrashOutcome::ExitedFirst(_)),
        "{out:?}"
    );
    let s = w
        .spawn(
            &WorldCommand::new("/bin/sh")
                .args(["-c", "echo r >&3"])
                .ready_fd(true)
                .ready_timeout(Duration::MAX),
        )
        .unwrap();
    assert_eq!(s.ready_line.as_deref(), Some("r"));
}

fn captured_output_is_capped_and_says_so() {
    let w = open_world();
    let exit = w
        .run(
            &WorldCommand::new("/bin/sh").args(["-c", "head -c 1100000 /dev/zero; echo small >&2"]),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(exit.stdout.bytes.len(), doppel_harness::init::OUTPUT_CAP);
    assert!(exit.stdout.truncated);
    assert_eq!(exit.stderr.bytes, b"small\n");
    assert!(!exit.stderr.truncated);
}

fn one_world_serves_many_threads() {
    let w = open_world();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let w = &w;
            scope.spawn(move || {
                for i in 0..50 {
                    let pid = Pid::new(3000 + t * 1000 + i).unwrap();
                    let s = w.spawn_at(pid, &WorldCommand::new("/bin/true")).unwrap();
                    assert_eq!(s.pid, pid);
                    w.wait(pid, Duration::from_secs(10)).unwrap();
                }
            });
        }
    });
}

fn a_pid_held_by_a_live_group_is_taken_in_both_placement_modes() {
    for force_ns_last_pid in [false, true] {
        let w = doppel_harness::World::open(doppel_harness::WorldOptions {
            force_ns_last_pid,
            ..common::options()
        })
        .unwrap();
        let leader = w
            .spawn(
                &WorldCommand::new("/bin/sh")
                    .args([
                        "-c",
                        "sleep 1000 & echo ready >&3; exec 3>&-; exec sleep 1000",
                    ])
                    .setsid(true)
                    .ready_fd(true),
            )
            .unwrap();
        w.signal(leader.pid, Signal::KILL).unwrap();
        w.wait(leader.pid, Duration::from_secs(10)).unwrap();
        // The leader is gone, its PID still names the session of `sleep`.
        let marker = w.world_path("ran").unwrap();
        let cmd =
            WorldCommand::new("/bin/sh").args(["-c", &format!("echo ran > {}", marker.display())]);
        let err = w.spawn_at(leader.pid, &cmd).unwrap_err();
        assert!(
            matches!(err, WorldError::Remote(RemoteError::PidTaken { pid }) if pid == leader.pid),
            "ns_last_pid={force_ns_last_pid}: {err:?}"
        );
        // Misplaced attempts are held before exec and killed (best-effort
        // check: without the hold they are usually killed mid-exec anyway).
        let c = w.census().unwrap();
        assert!(
            !w.host_path("ran").unwrap().exists(),
            "ns_last_pid={force_ns_last_pid}"
        );
        assert!(
            c.processes()
                .iter()
                .all(|p| !p.argv.iter().any(|a| a.contains("echo ran")))
        );
    }
}

world_main!(
    Need::Worlds => [
        run_captures_output_and_status,
        processes_see_world_pids,
        spawn_at_hits_the_exact_pid_200_times,
        spawn_at_a_taken_pid_is_a_typed_error,
        spawn_at_out_of_range_is_a_typed_error,
        wait_reports_timeout_then_kill_on_timeout,
        signal_reaches_world_process,
        exec_failure_and_missing_program_are_typed,
        death_by_a_realtime_signal_is_reported_and_reaping_goes_on,
        signal_to_a_missing_process_is_typed,
        world_processes_get_a_clean_signal_state,
        setsid_env_and_cwd_are_applied,
        ready_fd_waits_for_the_line_and_times_out_typed,
        absurd_durations_do_not_panic,
        captured_output_is_capped_and_says_so,
        one_world_serves_many_threads,
        a_pid_held_by_a_live_group_is_taken_in_both_placement_modes,
    ],
    Need::NsLastPid => [
        ns_last_pid_fallback_hits_the_exact_pid_200_times,
    ],
    Need::PerNsPidMax => [
        wraparound_placement_reaches_a_recycled_pid,
    ],
);
