//! recovery::*: a fresh runtime invocation must classify what it finds on
//! disk without orphaning, duplicating or wrongly trusting anything.

use super::{
    impostor_problem, judge, live_box, replace_with_impostor, state_problem, state_problem_with,
};
use crate::adapter::{Operation, Status};
use crate::catalog::{NotStaged, Verdict};
use crate::scene::{FileKind, ImpostorKind, Scene};

pub(crate) fn adopts_live_box(s: &mut Scene<'_>) -> Verdict {
    let a = live_box(s, "alpha")?;
    let b = live_box(s, "beta")?;
    let before = s.census()?;
    let mut problems = Vec::new();
    for id in ["alpha", "beta"] {
        problems.extend(state_problem(s, id, &[Status::Running])?);
    }
    let list = s.op(Operation::List, None, &[])?;
    for id in ["alpha", "beta"] {
        if !list.stdout.contains(id) {
            problems.push(format!("list does not name {id}: {}", list.summary()));
        }
    }
    s.op(Operation::Recover, None, &[])?;
    for id in ["alpha", "beta"] {
        problems.extend(state_problem(s, id, &[Status::Running])?);
    }
    let after = s.census()?;
    let mut transient_carriers = Vec::new();
    for (id, pid) in [("alpha", a), ("beta", b)] {
        if after.get(pid).is_none() {
            problems.push(format!("{id}'s process {pid} is gone after recovery"));
        }
        // Processes naming the box, other than the box's own children (a
        // shim's child between fork and exec still carries the shim's argv).
        let carriers = |c: &crate::scene::Census| {
            c.procs
                .iter()
                .filter(|p| p.cmdline.iter().any(|x| x == id) && p.state != 'Z' && p.ppid != pid)
                .count()
        };
        if carriers(&after) > carriers(&before) {
            // A CLI's child between its fork and exec carries the CLI's
            // argv, the box id with it, for a moment: only one that stays
            // is a second supervisor.
            let settled = doppel_harness::poll::until(
                super::SETTLE_DEADLINE,
                std::time::Duration::from_millis(2),
                || {
                    let now = s.census()?;
                    Ok::<_, crate::catalog::NotStaged>(if carriers(&now) > carriers(&before) {
                        std::ops::ControlFlow::Continue(now)
                    } else {
                        std::ops::ControlFlow::Break(now)
                    })
                },
            )?;
            if let Err(now) = settled {
                problems.push(format!(
                    "a second process carrying {id} appeared and stayed ({} before, {} after)",
                    carriers(&before),
                    carriers(&now)
                ));
            } else {
                transient_carriers.push(id);
            }
        }
    }
    // Orphans reaped meanwhile: a box's process, or one killed by a
    // signal, is the defect; a process of the CLI that ended by itself is
    // only noted, even when it carried a box id (a child between fork and
    // exec carries its CLI's argv; init records the argv it last saw). A
    // second supervisor that stays is the carriers check above.
    let (bad, transient): (Vec<_>, Vec<_>) = after.orphans
        [before.orphans.len().min(after.orphans.len())..]
        .iter()
        .partition(|o| o.pid == a || o.pid == b || !o.status.starts_with("Exited("));
    if !bad.is_empty() {
        problems.push(format!(
            "init reaped orphans during recovery: {}",
            bad.iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut notes = Vec::new();
    if !transient_carriers.is_empty() {
        notes.push(format!(
            "noted, not judged: a short-lived process carrying {} (a runtime command's child between fork and exec) went away by itself",
            transient_carriers.join(" and ")
        ));
    }
    if !transient.is_empty() {
        notes.push(format!(
            "noted, not judged: short-lived processes of the runtime's commands that exited by themselves and were reaped by init: {}",
            transient
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !notes.is_empty() {
        s.staging = Some(notes.join("; "));
    }
    judge(
        "live boxes are adopted as they are: still running, no second shim, nothing orphaned",
        problems,
        s,
    )
}

pub(crate) fn unverifiable_not_orphaned(s: &mut Scene<'_>) -> Verdict {
    let pid = live_box(s, "legacy")?;
    s.write_legacy_identity("legacy", pid)?;
    let rec = s.op(Operation::Recover, None, &[])?;
    let mut problems = Vec::new();
    let dir = s.declared_path(FileKind::BoxDir, "legacy")?;
    if !s.exists(&dir) {
        problems.push(format!("recover deleted {dir}: {}", rec.summary()));
    }
    if s.census()?.get(pid).is_none() {
        problems.push(format!(
            "the box's process {pid} is gone after recover: {}",
            rec.summary()
        ));
    }
    problems.extend(state_problem(s, "legacy", &[Status::Unknown])?);
    judge(
        "an unverifiable box is kept as unknown, not deleted, not signalled",
        problems,
        s,
    )
}

pub(crate) fn legacy_record_read(s: &mut Scene<'_>) -> Verdict {
    let pid = live_box(s, "old")?;
    let imp = replace_with_impostor(s, pid, ImpostorKind::Unrelated)?;
    s.write_legacy_identity("old", imp.pid)?;
    let mut problems = Vec::new();
    problems.extend(state_problem_with(
        s,
        "old",
        &[Status::Unknown, Status::Stopped],
        Some(&imp),
    )?);
    s.kill("old", "KILL")?;
    problems.extend(impostor_problem(s, &imp)?);
    judge(
        "a legacy record is read (state answers) but not trusted: not running, never signalled",
        problems,
        s,
    )
}

pub(crate) fn crash_evidence_kept(s: &mut Scene<'_>) -> Verdict {
    let exit = s.path(FileKind::Exit, "crashy");
    let previous = s.path(FileKind::ExitPrevious, "crashy");
    let pointers = s.state_reports_exits();
    if (exit.is_none() || previous.is_none()) && !pointers {
        // Not reached: the case needs AdapterNeed::ExitEvidence.
        return Err(NotStaged(
            "adapter declares neither files.exit + files.exit_previous nor state.exit_code + state.previous_exit_code".into(),
        ).into());
    }
    const EXPECTED: &str =
        "exit status reported, and the previous exit kept when the box runs again";
    let run = s.must_run_box("crashy", &["/bin/sh", "-c", "exit 7"])?;
    s.prove_box("crashy", &run, &[Status::Running, Status::Stopped])?;
    let mut problems = Vec::new();
    // The payload exits at once: a box that never reports stopped is the
    // runtime's failure, not a scene the harness could not set.
    if let Err(why) = s.await_status("crashy", &[Status::Stopped])? {
        problems.push(format!("after the payload exited 7: {why}"));
        return judge(EXPECTED, problems, s);
    }
    let (_, st) = s.state("crashy")?;
    if pointers {
        let code = st.as_ref().and_then(|st| st.exit_code);
        if code != Some(7) {
            problems.push(format!(
                "state reports exit code {code:?} after the payload exited 7"
            ));
        }
    }
    let first = match &exit {
        Some(exit) => match s.read(exit).ok() {
            Some(b) => Some(b),
            None => {
                problems.push(format!(
                    "no exit record at {exit} after the payload exited 7"
                ));
                None
            }
        },
        None => None,
    };
    // Starting a stopped box again is what the case asks of the runtime.
    let restart = s.op(Operation::Start, Some("crashy"), &[])?;
    if !restart.success() {
        problems.push(format!(
            "start of the stopped box failed: {}",
            restart.summary()
        ));
        return judge(EXPECTED, problems, s);
    }
    if let Err(why) = s.await_status("crashy", &[Status::Stopped])? {
        problems.push(format!("after the restarted payload exited 7: {why}"));
        return judge(EXPECTED, problems, s);
    }
    if pointers {
        let (_, st) = s.state("crashy")?;
        let prev = st.as_ref().and_then(|st| st.previous_exit_code);
        if prev != Some(7) {
            problems.push(format!(
                "after a restart, state reports previous exit code {prev:?}, expected 7"
            ));
        }
    }
    if let (Some(previous), Some(first)) = (&previous, &first) {
        match s.read(previous).ok() {
            Some(p) if p == *first => {}
            Some(p) => problems.push(format!(
                "{previous} does not hold the first exit record: {:?}",
                String::from_utf8_lossy(&p)
            )),
            None => problems.push(format!("no previous exit at {previous} after a restart")),
        }
    }
    judge(EXPECTED, problems, s)
}

pub(crate) fn reboot_detected(s: &mut Scene<'_>) -> Verdict {
    let pid = live_box(s, "preboot")?;
    s.rewrite_identity("preboot", |rec| {
        rec.boot_id("00000000-dead-beef-0000-000000000000")
    })?;
    let mut problems = Vec::new();
    problems.extend(state_problem(s, "preboot", &[Status::Stopped])?);
    s.kill("preboot", "KILL")?;
    s.op(Operation::Recover, None, &[])?;
    if s.census()?.get(pid).is_none() {
        problems.push(format!(
            "process {pid}, named by a record from another boot, was killed"
        ));
    }
    judge(
        "a record from another boot is treated as dead without touching the PID",
        problems,
        s,
    )
}
