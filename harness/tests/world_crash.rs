//! Crash injection: SIGKILL after a delay.

mod common;

use common::{Need, open_world, world_main};
use doppel_harness::{CrashOutcome, ExitStatus, Signal, WorldCommand};
use std::time::Duration;

fn crash_kills_a_running_command_at_the_delay() {
    let w = open_world();
    let out = w
        .crash(
            &WorldCommand::new("/bin/sh").args(["-c", "echo started; exec sleep 1000"]),
            Duration::from_millis(100),
            Duration::from_secs(10),
        )
        .unwrap();
    let CrashOutcome::Killed(exit) = out else {
        panic!("expected a kill: {out:?}")
    };
    assert_eq!(exit.status, ExitStatus::Signaled(Signal::KILL));
    assert!(exit.killed_by_timer);
    assert!(!exit.killed_on_timeout);
}

fn crash_reports_a_command_that_exited_first() {
    let w = open_world();
    let out = w
        .crash(
            &WorldCommand::new("/bin/sh").args(["-c", "exit 4"]),
            Duration::from_secs(30),
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(
        matches!(&out, CrashOutcome::ExitedFirst(e) if e.status == ExitStatus::Exited(4) && !e.killed_by_timer),
        "{out:?}"
    );
}

fn crash_sweep_kills_at_each_delay() {
    let w = open_world();
    for ms in [0u64, 1, 5, 20] {
        let out = w
            .crash(
                &WorldCommand::new("/bin/sleep").arg("1000"),
                Duration::from_millis(ms),
                Duration::from_secs(10),
            )
            .unwrap();
        assert!(matches!(out, CrashOutcome::Killed(_)), "{ms} ms: {out:?}");
    }
}

world_main!(
    Need::Worlds => [
        crash_kills_a_running_command_at_the_delay,
        crash_reports_a_command_that_exited_first,
        crash_sweep_kills_at_each_delay,
    ],
);
