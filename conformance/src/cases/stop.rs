//! stop::*: stopping must signal only the box, never spawn, never aim at
//! nonsense PIDs.

use super::{SLEEPER, impostor_problem, judge, live_box, replace_with_impostor};
use crate::adapter::{Operation, Status};
use crate::catalog::{NotStaged, Verdict};
use crate::scene::{ImpostorKind, Scene};

pub(crate) fn never_signals_foreign(s: &mut Scene<'_>) -> Verdict {
    let pid = live_box(s, "victim")?;
    let imp = replace_with_impostor(s, pid, ImpostorKind::Unrelated)?;
    s.kill("victim", "TERM")?;
    s.kill("victim", "KILL")?;
    s.delete("victim", true)?;
    let problems = impostor_problem(s, &imp)?.into_iter().collect();
    judge(
        "kill TERM, kill KILL and delete --force deliver nothing to the process now at the recorded PID",
        problems,
        s,
    )
}

pub(crate) fn never_spawns(s: &mut Scene<'_>) -> Verdict {
    // Boxes that are not running, in every way this runtime can make one:
    // created (payload not started) when it has `create`; stopped (payload
    // done); killed (payload ended by `kill KILL`). A run-only CLI gets the
    // last two, so a `kill` that restarts a stopped box is caught there too.
    let mut boxes = Vec::new();
    if s.adapter().has(Operation::Create) {
        let created = s.op(Operation::Create, Some("created"), SLEEPER)?;
        if !created.success() {
            return Err(NotStaged(format!("create failed: {}", created.summary())).into());
        }
        s.prove_box("created", &created, &[Status::Created])?;
        boxes.push(("created", Status::Created));
    }
    let run = s.must_run_box("stopped", &["/bin/true"])?;
    s.prove_box("stopped", &run, &[Status::Stopped])?;
    boxes.push(("stopped", Status::Stopped));
    live_box(s, "killed")?;
    let k = s.kill("killed", "KILL")?;
    if !k.success() {
        return Err(NotStaged(format!(
            "kill KILL of a running box failed: {}",
            k.summary()
        ))
        .into());
    }
    s.prove_box("killed", &k, &[Status::Stopped])?;
    boxes.push(("killed", Status::Stopped));
    s.staging = Some(format!(
        "boxes not running: {}",
        boxes
            .iter()
            .map(|(id, st)| format!("{id} ({st})"))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let mut problems = Vec::new();
    for (id, was) in boxes {
        let before = s.census()?;
        let orphans_before = before.orphans.len();
        let run = s.kill(id, "TERM")?;
        let after = s.census()?;
        let new: Vec<String> = after
            .procs
            .iter()
            .filter(|p| !before.has(p.pid))
            .map(|p| format!("pid {} {:?}", p.pid, p.cmdline))
            .collect();
        // Orphans reaped during the kill that were not there before it (the
        // box's own shim may end, which is no spawn).
        let reaped: Vec<String> = after.orphans[orphans_before.min(after.orphans.len())..]
            .iter()
            .filter(|o| !before.has(o.pid))
            .map(|o| o.to_string())
            .collect();
        if !new.is_empty() {
            problems.push(format!(
                "kill on the {id} box left new process(es): {} ({})",
                new.join(", "),
                run.summary()
            ));
        }
        if !reaped.is_empty() {
            problems.push(format!(
                "kill on the {id} box spawned process(es) that init reaped: {}",
                reaped.join(", ")
            ));
        }
        // Still what it was: kill did not start (or restart) it.
        if let Some(pid) = says_running(s, id)? {
            problems.push(format!(
                "kill on the {id} box ({was}) started its payload: state says running{pid}"
            ));
        }
    }
    judge(
        "kill on a box that is not running starts no process",
        problems,
        s,
    )
}

/// `Some(" with pid N (…)")` when `state` says box `id` is running.
fn says_running(s: &mut Scene<'_>, id: &str) -> Result<Option<String>, NotStaged> {
    match s.state(id)? {
        (_, Some(st)) if st.status == Some(Status::Running) => {
            Ok(Some(super::reported_pid(s, st.pid, None)?))
        }
        _ => Ok(None),
    }
}

pub(crate) fn signal_targets_sane(s: &mut Scene<'_>) -> Verdict {
    let mut problems = Vec::new();
    // A bystander that a kill(-1) or kill(0) would hit.
    let bystander = s.spawn_bystander()?;
    for (i, garbage) in ["0", "-1", "1", "4194305"].into_iter().enumerate() {
        let id = format!("garbage{i}");
        let real = live_box(s, &id)?;
        s.rewrite_identity(&id, |rec| rec.pid(garbage))?;
        let before = s.census()?;
        // TERM first: the world's init takes it and records the sender, so
        // a runtime that signals pid 1 is caught even though init survives
        // (a KILL to a PID namespace's init from inside is dropped without
        // a trace). KILL then makes anything else it hits disappear.
        for signal in ["TERM", "KILL"] {
            let run = s.kill(&id, signal)?;
            if run.success() && run.stderr.trim().is_empty() {
                problems.push(format!(
                    "kill {signal} with recorded pid {garbage} exited 0 saying nothing (expected a clear error or 'not running')"
                ));
            }
            if run.crashed() {
                problems.push(format!(
                    "kill {signal} with recorded pid {garbage} crashed: {}",
                    run.summary()
                ));
            }
        }
        let after = s.census()?;
        let gone: Vec<String> = before
            .procs
            .iter()
            .filter(|p| p.state != 'Z' && after.get(p.pid).is_none() && p.pid != real)
            .map(|p| format!("pid {} {:?}", p.pid, p.cmdline))
            .collect();
        if !gone.is_empty() {
            problems.push(format!(
                "kill with recorded pid {garbage} killed {}",
                gone.join(", ")
            ));
        }
        if after.get(real).is_none() {
            problems.push(format!(
                "kill with recorded pid {garbage} killed pid {real}, which the record no longer names"
            ));
        }
        let seen = before.init_signals.len().min(after.init_signals.len());
        for sig in &after.init_signals[seen..] {
            problems.push(format!(
                "kill with recorded pid {garbage}: world init (pid 1) received {sig}"
            ));
        }
    }
    problems.extend(impostor_problem(s, &bystander)?);
    judge(
        "a garbage recorded pid is never signalled: every process of the world survives, init receives no signal, and kill answers clearly",
        problems,
        s,
    )
}

/// A payload that handles signals marks each one it receives by starting
/// `sleep MARK+N` (N the signal's number; `sleep MARK` once its handlers
/// are set), each marker ignoring every signal a kill of the whole box
/// group could send, so the census counts deliveries.
const MARK: u32 = 3_100_000;

/// The signals `signal_delivered` asks for, with their numbers (the same on
/// every Linux architecture the suite runs on).
const CATCHABLE: [(&str, u32); 2] = [("TERM", 15), ("USR1", 10)];

/// The signal-marking payload (POSIX sh: runs under dash and busybox ash).
fn marking_payload() -> String {
    let traps: String = [
        ("TERM", 15),
        ("USR1", 10),
        ("USR2", 12),
        ("HUP", 1),
        ("INT", 2),
    ]
    .iter()
    .map(|(name, n)| format!("trap 'mark {}' {name}; ", MARK + n))
    .collect();
    format!(
        "mark() {{ ( trap '' TERM USR1 USR2 HUP INT QUIT; exec /bin/sleep \"$1\" ) & }}; \
         {traps}mark {MARK}; while :; do /bin/sleep 1000 & wait; done"
    )
}

/// How many markers of each kind (`N` of `sleep MARK+N`) run in the world.
fn markers(s: &mut Scene<'_>) -> Result<std::collections::BTreeMap<u32, usize>, NotStaged> {
    let mut out = std::collections::BTreeMap::new();
    for p in s.census()?.procs.iter().filter(|p| p.state != 'Z') {
        let [argv0, secs] = p.cmdline.as_slice() else {
            continue;
        };
        if !argv0.ends_with("sleep") {
            continue;
        }
        if let Some(n) = secs.parse::<u32>().ok().and_then(|v| v.checked_sub(MARK)) {
            if n < 65 {
                *out.entry(n).or_insert(0) += 1;
            }
        }
    }
    Ok(out)
}

/// How long a delivered signal may take to show as a marker.
const MARK_DEADLINE: std::time::Duration = super::SIGNAL_MARK_DEADLINE;

/// Polls the markers until `done` holds (deadline [`MARK_DEADLINE`]); the
/// last count either way.
fn await_markers(
    s: &mut Scene<'_>,
    done: impl Fn(&std::collections::BTreeMap<u32, usize>) -> bool,
) -> Result<(bool, std::collections::BTreeMap<u32, usize>), NotStaged> {
    let m = doppel_harness::poll::until(MARK_DEADLINE, doppel_harness::poll::STEP, || {
        let m = markers(s)?;
        Ok::<_, NotStaged>(if done(&m) {
            std::ops::ControlFlow::Break(m)
        } else {
            std::ops::ControlFlow::Continue(m)
        })
    })?;
    Ok(match m {
        Ok(m) => (true, m),
        Err(m) => (false, m),
    })
}

pub(crate) fn signal_delivered(s: &mut Scene<'_>) -> Verdict {
    let script = marking_payload();
    let run = s.must_run_box("sig", &["/bin/sh", "-c", &script])?;
    s.prove_running("sig", &run)?;
    let (ready, _) = await_markers(s, |m| m.contains_key(&0))?;
    if !ready {
        return Err(NotStaged(format!(
            "the payload never set its signal handlers (no `sleep {MARK}` within {} s)",
            MARK_DEADLINE.as_secs()
        ))
        .into());
    }
    let mut problems = Vec::new();
    for (name, n) in CATCHABLE {
        let k = s.kill("sig", name)?;
        if !k.success() {
            problems.push(format!("kill sig {name} reported failure: {}", k.summary()));
        }
        let (got, m) = await_markers(s, |m| m.contains_key(&n))?;
        if !got {
            let other: Vec<String> = m
                .keys()
                .filter(|k| **k != 0)
                .map(|k| format!("signal {k}"))
                .collect();
            problems.push(format!(
                "the box's process did not receive SIG{name} within {} s of `kill sig {name}`{}",
                MARK_DEADLINE.as_secs(),
                if other.is_empty() {
                    String::new()
                } else {
                    format!(" (it received {})", other.join(", "))
                }
            ));
            // A box that ended cannot receive the next signal.
            if super::state_problem(s, "sig", &[Status::Running])?.is_some() {
                break;
            }
        }
    }
    // Every signal asked for, once; nothing else.
    let m = markers(s)?;
    for (n, count) in &m {
        let name = CATCHABLE
            .iter()
            .find(|(_, k)| k == n)
            .map(|(name, _)| *name);
        match name {
            Some(name) if *count > 1 => problems.push(format!(
                "SIG{name} was delivered {count} times for one kill"
            )),
            None if *n != 0 => problems.push(format!(
                "the box's process received signal {n}, which nobody asked for ({count}×)"
            )),
            _ => {}
        }
    }
    // Handled signals leave the box running; a KILL sent instead ends it.
    if let Some(p) = super::state_problem(s, "sig", &[Status::Running])? {
        problems.push(format!(
            "after kill TERM and kill USR1, which it handles: {p}"
        ));
    }
    judge(
        "kill ID TERM and kill ID USR1 each deliver exactly that signal, once, to the box's process, and report success",
        problems,
        s,
    )
}

/// How many boxes with an unrunnable payload `unrunnable_payload_fails` runs.
const UNRUNNABLE: usize = 3;

pub(crate) fn unrunnable_payload_fails(s: &mut Scene<'_>) -> Verdict {
    // A runtime that cannot run any box fails every run: that proves
    // nothing about unrunnable payloads. It must run a good one first.
    let run = s.must_run_box("runnable", SLEEPER)?;
    s.prove_box("runnable", &run, &[Status::Running])?;
    let mut problems = Vec::new();
    for i in 0..UNRUNNABLE {
        let id = format!("noexec{i}");
        let r = s.run_box(&id, &["/nonexistent/doppel-payload"])?;
        if r.success() {
            problems.push(format!(
                "run {id} with a payload that does not exist exited 0: {}",
                r.summary()
            ));
        }
        if !s.adapter().has(Operation::State) {
            continue;
        }
        if let Some(pid) = says_running(s, &id)? {
            problems.push(format!(
                "state says box {id}, whose payload does not exist, is running{pid}"
            ));
        }
    }
    judge(
        "run of a payload that cannot be executed fails (non-zero exit) and no box reports running",
        problems,
        s,
    )
}
