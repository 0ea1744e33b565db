//! Impostors of every kind, and same-tick staging.

mod common;

use common::{Need, open_world, world_main};
use doppel_harness::impostor::{ImpostorKind, Placement};
use doppel_harness::locate::{LocateError, PathProblem};
use doppel_harness::proto::BadRequestReason;
use doppel_harness::{
    ImpostorError, Pid, RemoteError, Signal, StartTime, WorldCommand, WorldError,
};
use std::time::Duration;

fn unrelated_impostor_logs_signals_and_survives() {
    let w = open_world();
    let imp = w
        .impostor(&ImpostorKind::Unrelated, Placement::Anywhere)
        .unwrap();
    assert!(imp.is_alive(&w));
    w.signal(imp.pid, Signal::TERM).unwrap();
    w.signal(imp.pid, Signal::USR1).unwrap();
    // Signals are logged by the handler; wait on the log (bounded), no sleeps.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while std::time::Instant::now() < deadline {
        got = imp.signals_received().unwrap();
        if got.len() >= 2 {
            break;
        }
        // Census is a round trip to init: it paces the loop without sleeping.
        let _ = w.census().unwrap();
    }
    assert_eq!(got, vec![Signal::TERM, Signal::USR1]);
    assert!(imp.is_alive(&w), "impostor survives SIGTERM");
}

fn same_argv_impostor_has_the_victims_cmdline() {
    let w = open_world();
    let argv: Vec<String> = [
        "/usr/bin/refbox-shim",
        "--box",
        "box-1",
        "--state",
        "/run/refbox",
    ]
    .map(String::from)
    .to_vec();
    let imp = w
        .impostor(
            &ImpostorKind::SameArgv { argv: argv.clone() },
            Placement::At(Pid::new(4321).unwrap()),
        )
        .unwrap();
    assert_eq!(imp.pid.get(), 4321);
    let census = w.census().unwrap();
    assert_eq!(census.process(imp.pid).unwrap().argv, argv);
}

fn prefix_id_impostor_carries_the_longer_id() {
    let w = open_world();
    let argv: Vec<String> = ["shim", "--id", "box-1", "/run/box-1/state"]
        .map(String::from)
        .to_vec();
    let imp = w
        .impostor(
            &ImpostorKind::PrefixId {
                argv,
                victim_id: "box-1".into(),
                suffix: "0".into(),
            },
            Placement::Anywhere,
        )
        .unwrap();
    let census = w.census().unwrap();
    assert_eq!(
        census.process(imp.pid).unwrap().argv,
        ["shim", "--id", "box-10", "/run/box-10/state"]
    );
}

fn same_exe_impostor_runs_the_given_executable() {
    let w = open_world();
    let exe = std::fs::canonicalize("/bin/sleep")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let imp = w
        .impostor(
            &ImpostorKind::SameExe {
                exe: exe.clone(),
                argv: vec!["sleep".into(), "1000".into()],
            },
            Placement::Anywhere,
        )
        .unwrap();
    let census = w.census().unwrap();
    assert_eq!(
        census.process(imp.pid).unwrap().exe.as_deref(),
        Some(exe.as_str())
    );
    assert!(imp.signals_log.is_none());
}

fn replacing_a_victim_takes_its_pid() {
    let w = open_world();
    let victim = w
        .spawn(&WorldCommand::new("/bin/sleep").arg("1000"))
        .unwrap();
    let imp = w
        .impostor(
            &ImpostorKind::Unrelated,
            Placement::Replacing {
                victim: victim.pid,
                timeout: Duration::from_secs(10),
            },
        )
        .unwrap();
    assert_eq!(imp.pid, victim.pid);
    assert_eq!(imp.victim_start, Some(victim.start_time));
    assert!(imp.is_alive(&w));
}

fn replacing_an_orphaned_daemon_takes_its_pid() {
    let w = open_world();
    let daemon = w.daemon().unwrap();
    let imp = w
        .impostor(
            &ImpostorKind::Unrelated,
            Placement::Replacing {
                victim: daemon.pid,
                timeout: Duration::from_secs(10),
            },
        )
        .unwrap();
    assert_eq!(imp.pid, daemon.pid);
    let census = w.census().unwrap();
    assert!(census.reaped_orphans().iter().any(|o| o.pid == daemon.pid));
}

fn same_tick_impostor_matches_the_victims_start_time() {
    let w = open_world();
    let victim = WorldCommand::new("/bin/sleep").arg("1000");
    let argv: Vec<String> = victim.argv().to_vec();
    let st = w
        .same_tick_impostor(&victim, &ImpostorKind::SameArgv { argv: argv.clone() }, 20)
        .unwrap();
    assert!((1..=20).contains(&st.attempts));
    let imp = &st.impostor;
    assert!(imp.same_tick_as_victim());
    assert_eq!(Some(imp.start_time), imp.victim_start);
    let stat = w.proc_stat(imp.pid).unwrap();
    assert_eq!(
        stat.start_time, imp.start_time,
        "what /proc says, not just what init said"
    );
    assert_eq!(w.census().unwrap().process(imp.pid).unwrap().argv, argv);
}

fn same_tick_staging_reports_not_staged_when_impossible() {
    let w = open_world();
    // An impostor that fails to exec can never be staged: typed error, no panic.
    let err = w
        .stage_same_tick(
            &WorldCommand::new("/bin/sleep").arg("1000"),
            &WorldCommand::new("/nonexistent"),
            3,
        )
        .unwrap_err();
    assert!(
        matches!(err, WorldError::Remote(RemoteError::ExecFailed { .. })),
        "{err:?}"
    );
    let err = w
        .stage_same_tick(
            &WorldCommand::new("/bin/true"),
            &WorldCommand::new("/bin/true"),
            0,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            WorldError::Remote(RemoteError::BadRequest {
                reason: BadRequestReason::ZeroAttempts
            })
        ),
        "{err:?}"
    );
}

fn same_tick_success_rate_is_reported() {
    let w = open_world();
    let victim = WorldCommand::new("/bin/sleep").arg("1000");
    let mut first_try = 0;
    let mut staged = 0;
    for _ in 0..20 {
        match w.stage_same_tick(&victim, &WorldCommand::new("/bin/sleep").arg("1000"), 20) {
            Ok(s) => {
                staged += 1;
                if s.attempts == 1 {
                    first_try += 1;
                }
                assert_eq!(s.impostor.start_time, s.victim_start);
                assert_eq!(w.proc_stat(s.pid).unwrap().start_time, s.victim_start);
                w.signal(s.pid, Signal::KILL).unwrap();
                w.wait(s.pid, Duration::from_secs(10)).unwrap();
            }
            Err(WorldError::Remote(RemoteError::NotStaged { reason, attempts })) => {
                eprintln!("not staged after {attempts}: {reason}");
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    eprintln!(
        "same-tick: {staged}/20 staged, {first_try}/20 on the first attempt (tick = 1/{} s)",
        StartTime::ticks_per_second()
    );
    assert!(staged > 0);
}

fn missing_impostor_binary_is_a_typed_error() {
    let missing = std::path::PathBuf::from("/nonexistent/doppel-impostor");
    let w = doppel_harness::World::open(doppel_harness::WorldOptions {
        impostor_program: Some(missing.clone()),
        ..common::options()
    })
    .unwrap();
    // The explicit path is the only place looked at: no fallback to the
    // sibling binary (which exists in this build), and the error names it.
    match w.impostor(&ImpostorKind::Unrelated, Placement::Anywhere) {
        Err(ImpostorError::Helper(LocateError::ExplicitPath {
            name,
            path,
            problem,
        })) => {
            assert_eq!(name, "doppel-impostor");
            assert_eq!(path, missing);
            assert_eq!(problem, PathProblem::Missing);
        }
        other => panic!("expected ExplicitPath for {missing:?}, got {other:?}"),
    }
    // The world itself still works without an impostor.
    assert_eq!(w.census().unwrap().processes().len(), 1);
}

fn same_tick_is_not_staged_when_the_victim_outlives_its_tick() {
    let w = open_world();
    // The victim only reports ready after 30 ms (three ticks at CLK_TCK 100),
    // so an impostor forked after it can never share its start time.
    let ticks = StartTime::ticks_per_second();
    let age_ms = 3 * 1000 / ticks.max(1);
    let victim = WorldCommand::new("/bin/sh")
        .args([
            "-c",
            &format!(
                "sleep {}; echo ready >&3; exec sleep 1000",
                age_ms as f64 / 1000.0
            ),
        ])
        .ready_fd(true);
    let err = w
        .stage_same_tick(&victim, &WorldCommand::new("/bin/sleep").arg("1000"), 3)
        .unwrap_err();
    match err {
        WorldError::Remote(RemoteError::NotStaged { attempts, reason }) => {
            assert_eq!(attempts, 3);
            assert!(reason.contains("start times differ"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
    // Nothing of the failed attempts is left running.
    let c = w.census().unwrap();
    assert_eq!(c.processes().len(), 1, "{:?}", c.processes());
}

fn replacing_waits_while_the_pid_names_a_live_process_group() {
    let w = open_world();
    // A group leader whose member outlives it: the leader's PID stays
    // allocated (as the group's ID) until the member dies too.
    let leader = w
        .spawn(
            &WorldCommand::new("/bin/sh")
                .args([
                    "-c",
                    "sleep 0.05 & echo ready >&3; exec 3>&-; exec sleep 1000",
                ])
                .setsid(true)
                .ready_fd(true),
        )
        .unwrap();
    let imp = w
        .impostor(
            &ImpostorKind::Unrelated,
            Placement::Replacing {
                victim: leader.pid,
                timeout: Duration::from_secs(10),
            },
        )
        .unwrap();
    assert_eq!(imp.pid, leader.pid);
}

fn same_tick_staging_works_through_ns_last_pid_too() {
    let w = doppel_harness::World::open(doppel_harness::WorldOptions {
        force_ns_last_pid: true,
        ..common::options()
    })
    .unwrap();
    let victim = WorldCommand::new("/bin/sleep").arg("1000");
    let s = w.stage_same_tick(&victim, &victim, 20).unwrap();
    assert_eq!(s.impostor.pid, s.pid);
    assert_eq!(w.proc_stat(s.pid).unwrap().start_time, s.victim_start);
}

fn replacing_a_group_held_pid_works_through_ns_last_pid_too() {
    let w = doppel_harness::World::open(doppel_harness::WorldOptions {
        force_ns_last_pid: true,
        ..common::options()
    })
    .unwrap();
    let leader = w
        .spawn(
            &WorldCommand::new("/bin/sh")
                .args([
                    "-c",
                    "sleep 0.05 & echo ready >&3; exec 3>&-; exec sleep 1000",
                ])
                .setsid(true)
                .ready_fd(true),
        )
        .unwrap();
    let imp = w
        .impostor(
            &ImpostorKind::Unrelated,
            Placement::Replacing {
                victim: leader.pid,
                timeout: Duration::from_secs(10),
            },
        )
        .unwrap();
    assert_eq!(imp.pid, leader.pid);
}

world_main!(
    Need::Worlds => [
        unrelated_impostor_logs_signals_and_survives,
        same_argv_impostor_has_the_victims_cmdline,
        prefix_id_impostor_carries_the_longer_id,
        same_exe_impostor_runs_the_given_executable,
        replacing_a_victim_takes_its_pid,
        replacing_an_orphaned_daemon_takes_its_pid,
        same_tick_impostor_matches_the_victims_start_time,
        same_tick_staging_reports_not_staged_when_impossible,
        same_tick_success_rate_is_reported,
        missing_impostor_binary_is_a_typed_error,
        same_tick_is_not_staged_when_the_victim_outlives_its_tick,
        replacing_waits_while_the_pid_names_a_live_process_group,
        same_tick_staging_works_through_ns_last_pid_too,
        replacing_a_group_held_pid_works_through_ns_last_pid_too,
    ],
);
