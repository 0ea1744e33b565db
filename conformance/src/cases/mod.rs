//! The case catalog of DESIGN.md, one module per area. Each case sets its
//! scene in a fresh world through [`Scene`], drives the runtime only through
//! the adapter, and judges by evidence (census, the impostor's signal log,
//! file contents), never by the runtime's exit code alone.

use crate::adapter::{Operation as Op, RuntimeCapability as Cap, Status};
use crate::catalog::{
    AdapterNeed as N, Case, Caught as C, Halt, Level, MachineNeed as M, NotStaged, Outcome, Verdict,
};
use crate::scene::{Impostor, ImpostorKind, Run, Scene};
use doppel_fixtures::flaw::Flaw as F;

mod crash;
mod daemon;
mod files;
mod helper;
mod identity;
mod ids;
mod recovery;
mod secrets;
mod sentinels;
mod stop;
mod zombies;

/// Every case, in report order.
pub static ALL: &[Case] = &[
    Case {
        id: "identity::recycled_pid_not_alive",
        level: Level::Must,
        scene: "box process killed, impostor placed at its PID (different tick)",
        holds: "state reports stopped; impostor untouched",
        machine: &[M::World, M::PidPlacement],
        needs: &[N::RecordedPid],
        ops: &[Op::Run, Op::State],
        caps: &[],
        caught_by: &[C::Flaw(F::Kill0Liveness), C::Naive, C::Flaw(F::DoNothing)],
        run: identity::recycled_pid_not_alive,
    },
    Case {
        id: "identity::same_tick_impostor",
        level: Level::Should,
        scene: "impostor at the PID with the victim's start time (record rewrite)",
        holds: "state reports stopped; kill and delete --force leave the impostor alive and unsignalled",
        machine: &[M::World, M::PidPlacement],
        needs: &[N::IdentityStartTime],
        ops: &[Op::Run, Op::State, Op::Kill, Op::DeleteForce],
        caps: &[],
        caught_by: &[
            C::Flaw(F::StartTimeOnly),
            C::Flaw(F::Kill0Liveness),
            C::Flaw(F::DoNothing),
        ],
        run: identity::same_tick_impostor,
    },
    Case {
        id: "identity::same_exe_impostor",
        level: Level::Must,
        scene: "impostor running the runtime's own shim executable with the box's argv",
        holds: "state reports stopped; kill leaves the impostor alive and unsignalled",
        machine: &[M::World, M::PidPlacement],
        needs: &[N::RecordedPid],
        ops: &[Op::Run, Op::State, Op::Kill],
        caps: &[],
        caught_by: &[
            C::Flaw(F::Kill0Liveness),
            C::Flaw(F::SubstringId),
            C::Naive,
            C::Flaw(F::DoNothing),
        ],
        run: identity::same_exe_impostor,
    },
    Case {
        id: "stop::never_signals_foreign",
        level: Level::Must,
        scene: "impostor at the recorded PID",
        holds: "kill TERM, kill KILL and delete --force deliver no signal to the impostor",
        machine: &[M::World, M::PidPlacement],
        needs: &[N::RecordedPid],
        ops: &[Op::Run, Op::Kill, Op::DeleteForce],
        caps: &[],
        caught_by: &[C::Flaw(F::Kill0Liveness), C::Naive, C::Flaw(F::DoNothing)],
        run: stop::never_signals_foreign,
    },
    Case {
        id: "stop::never_spawns",
        level: Level::Must,
        scene: "boxes that are not running: created (where the runtime has create), stopped (payload done), killed (payload ended by kill KILL)",
        holds: "kill starts no process and does not start or restart the box",
        machine: &[M::World],
        needs: &[N::RecordedPid],
        ops: &[Op::Run, Op::State, Op::Kill],
        caps: &[],
        caught_by: &[
            C::Flaw(F::StopSpawns),
            C::Flaw(F::RespawnOnKill),
            C::RunOnly(F::RespawnOnKill),
            C::Flaw(F::DoNothing),
            C::Flaw(F::KillIgnored),
        ],
        run: stop::never_spawns,
    },
    Case {
        id: "stop::signal_targets_sane",
        level: Level::Must,
        scene: "garbage pids (0, -1, 1, huge) written into the identity record",
        holds: "kill signals nothing (every process of the world survives, init receives no signal) and fails or says not running",
        machine: &[M::World],
        needs: &[N::IdentityRecord],
        ops: &[Op::Run, Op::Kill],
        caps: &[],
        caught_by: &[C::Naive, C::Flaw(F::DoNothing)],
        run: stop::signal_targets_sane,
    },
    Case {
        id: "stop::signal_delivered",
        level: Level::Must,
        scene: "a live box whose payload handles TERM and USR1, marking each signal it receives",
        holds: "kill TERM and kill USR1 each deliver exactly that signal, once, to the box's process, and exit 0; the box keeps running",
        machine: &[M::World],
        needs: &[N::RecordedPid],
        ops: &[Op::Run, Op::Kill],
        caps: &[],
        caught_by: &[
            C::Flaw(F::WrongSignal),
            C::Flaw(F::KillIgnored),
            C::Flaw(F::ExtraSignal),
            C::Flaw(F::DoNothing),
        ],
        run: stop::signal_delivered,
    },
    Case {
        id: "recovery::adopts_live_box",
        level: Level::Must,
        scene: "two live boxes, fresh runtime invocations",
        holds: "still running after state/list/recover; no second shim; nothing orphaned",
        machine: &[M::World],
        needs: &[N::RecordedPid],
        ops: &[Op::Run, Op::State, Op::List, Op::Recover],
        caps: &[],
        caught_by: &[C::Flaw(F::TrustsNothing), C::Flaw(F::DoNothing)],
        run: recovery::adopts_live_box,
    },
    Case {
        id: "recovery::unverifiable_not_orphaned",
        level: Level::Must,
        scene: "live box whose identity record is rewritten to the legacy format",
        holds: "recover keeps the box (not deleted, not running-trusted) and does not signal its process",
        machine: &[M::World],
        needs: &[N::LegacyRecord, N::BoxDir],
        ops: &[Op::Run, Op::State, Op::Recover],
        caps: &[],
        caught_by: &[
            C::Flaw(F::Kill0Liveness),
            C::Flaw(F::StartTimeOnly),
            C::Naive,
            C::Flaw(F::DoNothing),
        ],
        run: recovery::unverifiable_not_orphaned,
    },
    Case {
        id: "recovery::legacy_record_read",
        level: Level::Must,
        scene: "legacy record naming an impostor at the box's old PID",
        holds: "state understands it (answers, not running); kill does not signal the impostor",
        machine: &[M::World, M::PidPlacement],
        needs: &[N::LegacyRecord],
        ops: &[Op::Run, Op::State, Op::Kill],
        caps: &[],
        caught_by: &[C::Flaw(F::Kill0Liveness), C::Naive, C::Flaw(F::DoNothing)],
        run: recovery::legacy_record_read,
    },
    Case {
        id: "recovery::crash_evidence_kept",
        level: Level::Must,
        scene: "payload exits 7; the box is started again and exits 7 again",
        holds: "state reports stopped with code 7; after the restart the first exit is kept as the previous exit",
        machine: &[M::World],
        needs: &[N::ExitEvidence],
        ops: &[Op::Run, Op::Start, Op::State],
        caps: &[],
        caught_by: &[C::Flaw(F::DropsCrashEvidence), C::Flaw(F::DoNothing)],
        run: recovery::crash_evidence_kept,
    },
    Case {
        id: "recovery::reboot_detected",
        level: Level::Must,
        scene: "live box whose identity record names another boot_id",
        holds: "state treats it as not running; state, kill and recover never signal the PID",
        machine: &[M::World],
        needs: &[N::IdentityBootId],
        ops: &[Op::Run, Op::State, Op::Kill, Op::Recover],
        caps: &[],
        caught_by: &[
            C::Flaw(F::Kill0Liveness),
            C::Flaw(F::StartTimeOnly),
            C::Flaw(F::DoNothing),
        ],
        run: recovery::reboot_detected,
    },
    Case {
        id: "daemon::killed_with_live_boxes",
        level: Level::Must,
        scene: "the runtime's daemon SIGKILLed while two boxes run, then started again",
        holds: "each live box runs once, its process unchanged, reported running with its pid; none orphaned",
        machine: &[M::World],
        needs: &[N::Supervisor, N::RecordedPid],
        ops: &[Op::Run, Op::State],
        caps: &[],
        caught_by: &[C::Flaw(F::DaemonForgetsBoxes), C::Flaw(F::DoNothing)],
        run: daemon::killed_with_live_boxes,
    },
    Case {
        id: "daemon::recorded_pid_reused",
        level: Level::Must,
        scene: "the daemon dies and an impostor takes the pid its pid file names",
        holds: "stop signals nothing; start brings up a new daemon; a box runs under it",
        machine: &[M::World, M::PidPlacement],
        needs: &[N::SupervisorPidFile],
        ops: &[Op::Run, Op::State],
        caps: &[],
        caught_by: &[
            C::Flaw(F::PidfileGuard),
            C::Flaw(F::DaemonPidTrusted),
            C::Flaw(F::DoNothing),
        ],
        run: daemon::recorded_pid_reused,
    },
    Case {
        id: "daemon::record_lost",
        level: Level::Must,
        scene: "the daemon's pid file removed while it runs a box; the daemon started again",
        holds: "no second daemon beside the first; the box runs once and is reported running",
        machine: &[M::World],
        needs: &[N::SupervisorPidFile, N::RecordedPid],
        ops: &[Op::Run, Op::State],
        caps: &[],
        caught_by: &[
            C::Flaw(F::PidfileGuard),
            C::Flaw(F::DaemonForgetsBoxes),
            C::Flaw(F::DoNothing),
        ],
        run: daemon::record_lost,
    },
    Case {
        id: "ids::prefix_collision",
        level: Level::Must,
        scene: "boxes box-1 and box-10 both live",
        holds: "kill/delete box-1, and kill box-1 again after its death, leave box-10 untouched",
        machine: &[M::World],
        needs: &[N::RecordedPid],
        ops: &[Op::Run, Op::State, Op::Kill, Op::DeleteForce],
        caps: &[],
        caught_by: &[C::Flaw(F::SubstringId), C::Naive, C::Flaw(F::DoNothing)],
        run: ids::prefix_collision,
    },
    Case {
        id: "ids::argv_exact",
        level: Level::Must,
        scene: "a live box of a runtime whose recorded process is its own shim; the shim's argv read from /proc",
        holds: "the box id is an exact argv element",
        machine: &[M::World],
        needs: &[N::RecordedPid],
        ops: &[Op::Run],
        caps: &[Cap::Shim],
        caught_by: &[C::Flaw(F::RecordsPayloadPid), C::Flaw(F::DoNothing)],
        run: ids::argv_exact,
    },
    Case {
        id: "files::oversized_record",
        level: Level::Must,
        scene: "sparse 1 GiB+1 then 1 TiB state record planted",
        holds: "state/list/recover answer, peak RSS < 16 MiB above baseline; healthy box listed; the file left in place",
        machine: &[M::World],
        needs: &[N::StateFile, N::RecordedPid],
        ops: &[Op::Run, Op::State, Op::List, Op::Recover],
        caps: &[],
        caught_by: &[C::Flaw(F::UncappedRead), C::Naive, C::Flaw(F::DoNothing)],
        run: files::oversized_record,
    },
    Case {
        id: "files::fifo_record",
        level: Level::Must,
        scene: "FIFO with no writer planted as a state record",
        holds: "state/list/recover answer instead of hanging; the FIFO left in place",
        machine: &[M::World],
        needs: &[N::StateFile, N::RecordedPid],
        ops: &[Op::Run, Op::State, Op::List, Op::Recover],
        caps: &[],
        caught_by: &[C::Flaw(F::UncappedRead), C::Naive, C::Flaw(F::DoNothing)],
        run: files::fifo_record,
    },
    Case {
        id: "files::symlink_record",
        level: Level::Must,
        scene: "state and identity records symlinked to copies of a live box's records outside the root",
        holds: "not followed: the box is not running, the live box is not signalled, outside files unchanged",
        machine: &[M::World],
        needs: &[N::StateOrIdentityFile, N::RecordedPid],
        ops: &[Op::Run, Op::State, Op::List, Op::Recover, Op::DeleteForce],
        caps: &[],
        caught_by: &[C::Naive, C::Flaw(F::FollowsSymlinks), C::Flaw(F::DoNothing)],
        run: files::symlink_record,
    },
    Case {
        id: "files::garbage_record",
        level: Level::Must,
        scene: "random bytes, empty file, truncated record",
        holds: "an error (non-zero exit, or an error in the answer) naming the file; no panic; never running",
        machine: &[M::World],
        needs: &[N::StateFile, N::RecordedPid],
        ops: &[Op::Run, Op::State],
        caps: &[],
        caught_by: &[C::Naive, C::Flaw(F::DoNothing)],
        run: files::garbage_record,
    },
    Case {
        id: "files::bad_record_isolated",
        level: Level::Must,
        scene: "two healthy boxes plus one box dir holding each plant kind in turn",
        holds: "every healthy box still listed and recovered; the bad one named",
        machine: &[M::World],
        needs: &[N::StateFile, N::RecordedPid],
        ops: &[Op::Run, Op::List, Op::Recover],
        caps: &[],
        caught_by: &[C::Flaw(F::UncappedRead), C::Naive, C::Flaw(F::DoNothing)],
        run: files::bad_record_isolated,
    },
    Case {
        id: "files::private_dirs",
        level: Level::Must,
        scene: "runtime creates a box (its dir and the entries in it watched for a chmod after creation); roots inside world-writable, group-writable and foreign-owned parents",
        holds: "box dirs 0700 and files 0600 from birth (no group/other bits, no mode set afterwards); each such parent refused",
        machine: &[M::World],
        needs: &[N::BoxDir, N::RecordedPid],
        ops: &[Op::Run],
        caps: &[],
        caught_by: &[
            C::Flaw(F::OpenModes),
            C::Flaw(F::ChmodAfterCreate),
            C::Naive,
            C::Flaw(F::DoNothing),
        ],
        run: files::private_dirs,
    },
    Case {
        id: "sentinels::stale_log_cleanup",
        level: Level::Must,
        scene: "log sentinels: dead owner, recycled pid, live owner, oversized, legacy v1 (lone pid) with a dead and a live owner",
        holds: "dead/recycled (v1 and v2) removed with a reason; live (v1 and v2) kept; oversized left alone",
        machine: &[M::World, M::PidPlacement],
        needs: &[N::Sentinel, N::RecordedPid],
        ops: &[Op::Run, Op::Cleanup],
        caps: &[Cap::LogSentinels],
        caught_by: &[C::Naive, C::Flaw(F::DoNothing)],
        run: sentinels::stale_log_cleanup,
    },
    Case {
        id: "errors::unrunnable_payload_fails",
        level: Level::Must,
        scene: "a box run with a payload that runs, then 3 with a payload that does not exist",
        holds: "each run fails (non-zero exit); no such box reports running",
        machine: &[M::World],
        needs: &[N::RecordedPid],
        ops: &[Op::Run],
        caps: &[],
        caught_by: &[C::Flaw(F::HidesRunFailure), C::Flaw(F::DoNothing)],
        run: stop::unrunnable_payload_fails,
    },
    Case {
        id: "zombies::none_after_failures",
        level: Level::Must,
        scene: "a live box (the runtime makes boxes), then 8 box creations whose payload cannot start, 8 whose payload exits at once",
        holds: "no zombie left in the world",
        machine: &[M::World],
        needs: &[N::RecordedPid],
        ops: &[Op::Run],
        caps: &[],
        caught_by: &[C::Flaw(F::ZombieLeak), C::Flaw(F::DoNothing)],
        run: zombies::none_after_failures,
    },
    Case {
        id: "zombies::reaper_scoped",
        level: Level::Must,
        scene: "library mode: an embedder's child exits unreaped while the runtime's reaper reaps the shims of boxes it kills",
        holds: "the embedder's own wait gets the child's real exit code; no zombie left",
        machine: &[M::World],
        needs: &[],
        ops: &[],
        caps: &[Cap::Daemon],
        caught_by: &[C::Flaw(F::WaitpidAny), C::Flaw(F::DoNothing)],
        run: zombies::reaper_scoped,
    },
    Case {
        id: "crash::runtime_killed_mid_op",
        level: Level::Must,
        scene: "runtime CLI SIGKILLed mid-way at 50 swept delays per operation (every one the adapter has of create, start, run, kill, delete of a stopped box, delete --force of a running one; delays it outlives do not count), and at each failpoint the adapter declares; each operation first shown to do its job uninterrupted",
        holds: "after each crash: no orphan process, every record readable (old or new, never half-written), state says something true, delete --force leaves no process, box dir or cgroup; no record is rewritten in place",
        machine: &[M::World],
        needs: &[N::RecordedPid],
        ops: &[Op::State, Op::DeleteForce],
        caps: &[],
        caught_by: &[
            C::Flaw(F::InPlaceWrites),
            C::RunOnly(F::InPlaceWrites),
            C::Flaw(F::DoNothing),
            C::Flaw(F::KillIgnored),
        ],
        run: crash::runtime_killed_mid_op,
    },
    Case {
        id: "crash::helper_killed",
        level: Level::Must,
        scene: "privileged helper SIGKILLed with two boxes running (run through it), then started again",
        holds: "boxes killed or re-adopted, none orphaned: state says something true, delete --force through the new helper leaves no process",
        machine: &[M::World],
        needs: &[N::HelperCommands, N::RecordedPid],
        ops: &[Op::State],
        caps: &[Cap::Helper],
        caught_by: &[C::Flaw(F::HelperForgetsBoxes), C::Flaw(F::DoNothing)],
        run: helper::helper_killed,
    },
    Case {
        id: "helper::signal_allowlist",
        level: Level::Must,
        scene: "request STOP, CONT, RT signals, numeric, 0 from the helper for a box's own process",
        holds: "refused with an error, the process untouched; TERM is sent",
        machine: &[M::World],
        needs: &[N::HelperCommands, N::RecordedPid],
        ops: &[Op::State],
        caps: &[Cap::Helper],
        caught_by: &[C::Flaw(F::HelperAnySignal), C::Flaw(F::DoNothing)],
        run: helper::signal_allowlist,
    },
    Case {
        id: "helper::cgroup_authorization",
        level: Level::Must,
        scene: "ask the helper to signal a PID outside the box's cgroup: a process with the box's exact cmdline, and an unrelated one",
        holds: "refused, neither signalled; the box's own process is served",
        machine: &[M::World],
        needs: &[N::HelperCommands, N::RecordedPid],
        ops: &[Op::State],
        caps: &[Cap::Helper],
        caught_by: &[C::Flaw(F::HelperCmdlineAuth), C::Flaw(F::DoNothing)],
        run: helper::cgroup_authorization,
    },
    Case {
        id: "secrets::not_in_proc",
        level: Level::Must,
        scene: "box created with a secret, its payload copying stdin to a file",
        holds: "the payload receives the secret; it appears in no process's cmdline or environ",
        machine: &[M::World],
        needs: &[],
        ops: &[Op::RunSecret],
        caps: &[Cap::SecretsStdin],
        caught_by: &[C::Flaw(F::SecretsInArgv), C::Flaw(F::DoNothing)],
        run: secrets::not_in_proc,
    },
];

/// The payload of a long-lived box.
pub(crate) const SLEEPER: &[&str] = &["/bin/sleep", "1000"];

/// Starts a box that keeps running and returns its recorded pid, once the
/// box is proven to be there ([`Scene::prove_running`]).
pub(crate) fn live_box(s: &mut Scene<'_>, id: &str) -> Result<i32, Halt> {
    let run = s.must_run_box(id, SLEEPER)?;
    s.prove_running(id, &run)
}

/// `Some(problem)` when the impostor was signalled or is gone.
pub(crate) fn impostor_problem(
    s: &mut Scene<'_>,
    imp: &Impostor,
) -> Result<Option<String>, NotStaged> {
    let r = s.impostor_report(imp)?;
    Ok(if !r.signals.is_empty() {
        Some(format!(
            "impostor at pid {} received signal(s) {:?}",
            imp.pid, r.signals
        ))
    } else if !r.alive {
        // How it ended, from init's record of what it reaped: a runtime
        // author needs "killed by signal 9", not just "gone".
        let end = s
            .census()?
            .orphans
            .iter()
            .rev()
            .find(|o| o.pid == imp.pid)
            .map(|o| o.status.clone());
        Some(match end {
            Some(how) => format!("impostor at pid {} is gone ({how})", imp.pid),
            None => format!("impostor at pid {} is gone", imp.pid),
        })
    } else {
        None
    })
}

/// `Some(problem)` unless `state` succeeded and said `want`.
pub(crate) fn state_problem(
    s: &mut Scene<'_>,
    id: &str,
    allowed: &[Status],
) -> Result<Option<String>, NotStaged> {
    state_problem_with(s, id, allowed, None)
}

/// [`state_problem`] in a scene with an impostor: a pid `state` reports is
/// named as the impostor's when it is.
pub(crate) fn state_problem_with(
    s: &mut Scene<'_>,
    id: &str,
    allowed: &[Status],
    impostor: Option<&Impostor>,
) -> Result<Option<String>, NotStaged> {
    let (run, st) = s.state(id)?;
    Ok(match st {
        Some(st) if st.status.is_some_and(|x| allowed.contains(&x)) => None,
        Some(st) => Some(format!(
            "state {id} said {:?}{} (allowed: {})",
            st.word,
            reported_pid(s, st.pid, impostor)?,
            allowed
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => Some(format!(
            "state {id} gave no parseable answer: {}",
            run.summary()
        )),
    })
}

/// ` with pid N` and whose it is, for a pid `state` reported (empty when
/// it reported none): a runtime author reading a failure needs the PID.
pub(crate) fn reported_pid(
    s: &mut Scene<'_>,
    pid: Option<i64>,
    impostor: Option<&Impostor>,
) -> Result<String, NotStaged> {
    let Some(pid) = pid else {
        return Ok(String::new());
    };
    let whose = if impostor.is_some_and(|i| i64::from(i.pid) == pid) {
        " (the impostor's)".to_string()
    } else {
        let argv = match i32::try_from(pid) {
            Ok(p) => s.census()?.get(p).map(|p| p.cmdline.clone()),
            Err(_) => None,
        };
        match argv {
            Some(argv) => format!(" ({argv:?})"),
            None => " (no such process)".to_string(),
        }
    };
    Ok(format!(" with pid {pid}{whose}"))
}

/// Builds the outcome from a list of problems.
pub(crate) fn judge(expected: &str, problems: Vec<String>, s: &mut Scene<'_>) -> Verdict {
    if problems.is_empty() {
        return Ok(Outcome::Pass);
    }
    let observed = problems.join("; ");
    let mut evidence = s.transcript();
    if let Ok(c) = s.census() {
        evidence.extend(c.lines());
    }
    Ok(Outcome::fail(expected, observed, evidence))
}

/// Places an impostor of `kind` at `pid`; the harness SIGKILLs whatever holds it.
pub(crate) fn replace_with_impostor(
    s: &mut Scene<'_>,
    pid: i32,
    kind: ImpostorKind,
) -> Result<Impostor, NotStaged> {
    s.impostor_at(pid, kind)
}

/// How long a delivered signal may take to show in the census (a payload's
/// handler starting its marker): as long as a box may take to reach a status.
pub(crate) const SIGNAL_MARK_DEADLINE: std::time::Duration = crate::scene::STATUS_DEADLINE;

/// How long processes that are being killed get to be gone.
pub(crate) const SETTLE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// The world's live processes (zombies and `keep` aside) once none is left
/// or at [`SETTLE_DEADLINE`]: a process SIGKILLed by its parent's death
/// (PDEATHSIG) or by `cgroup.kill` takes a moment to be gone.
pub(crate) fn settle_live(
    s: &mut Scene<'_>,
    keep: &[i32],
) -> Result<Vec<(i32, Vec<String>)>, NotStaged> {
    let settled =
        doppel_harness::poll::until(SETTLE_DEADLINE, std::time::Duration::from_millis(2), || {
            let left: Vec<(i32, Vec<String>)> = s
                .census()?
                .procs
                .iter()
                .filter(|p| p.state != 'Z' && !keep.contains(&p.pid))
                .map(|p| (p.pid, p.cmdline.clone()))
                .collect();
            Ok::<_, NotStaged>(if left.is_empty() {
                std::ops::ControlFlow::Break(left)
            } else {
                std::ops::ControlFlow::Continue(left)
            })
        })?;
    Ok(settled.unwrap_or_else(|left| left))
}

/// Whether a command was killed at its deadline.
pub(crate) fn hung(run: &Run) -> bool {
    run.timed_out
}
