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
    // A created box (payload not started) and a stopped one (payload done).
    let created = s.op(Operation::Create, Some("created"), SLEEPER)?;
    if !created.success() {
        return Err(NotStaged(format!("create failed: {}", created.summary())));
    }
    s.must_run_box("stopped", &["/bin/true"])?;
    s.wait_status("stopped", &[Status::Stopped])?;

    let mut problems = Vec::new();
    for id in ["created", "stopped"] {
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
    }
    // The created box must still be created: kill did not start it.
    if let (_, Some(st)) = s.state("created")? {
        if st.status == Some(Status::Running) {
            let pid = super::reported_pid(s, st.pid, None)?;
            problems.push(format!(
                "kill on the created box started its payload: state says running{pid}"
            ));
        }
    }
    judge(
        "kill on a box that is not running starts no process",
        problems,
        s,
    )
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
