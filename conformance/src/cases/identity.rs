//! identity::*: a recorded PID now belongs to someone else.

use super::{impostor_problem, judge, live_box, replace_with_impostor, state_problem_with};
use crate::adapter::Status;
use crate::catalog::{NotStaged, Verdict};
use crate::scene::{ImpostorKind, Scene};

pub(crate) fn recycled_pid_not_alive(s: &mut Scene<'_>) -> Verdict {
    let pid = live_box(s, "victim")?;
    let imp = replace_with_impostor(s, pid, ImpostorKind::Unrelated)?;
    let mut problems = Vec::new();
    problems.extend(state_problem_with(
        s,
        "victim",
        &[Status::Stopped],
        Some(&imp),
    )?);
    problems.extend(impostor_problem(s, &imp)?);
    judge(
        "state reports the box stopped and the impostor is untouched",
        problems,
        s,
    )
}

pub(crate) fn same_tick_impostor(s: &mut Scene<'_>) -> Verdict {
    let pid = live_box(s, "victim")?;
    let imp = replace_with_impostor(s, pid, ImpostorKind::Unrelated)?;
    // Record rewrite: make the recorded start time the impostor's, so what the
    // runtime sees is exactly a reuse within the victim's birth tick.
    let start = s.start_time(imp.pid)?;
    s.rewrite_identity("victim", |rec| rec.start_time(start))?;
    s.staging = Some("record-rewrite (recorded start time set to the impostor's)".into());
    let mut problems = Vec::new();
    problems.extend(state_problem_with(
        s,
        "victim",
        &[Status::Stopped],
        Some(&imp),
    )?);
    s.kill("victim", "KILL")?;
    s.delete("victim", true)?;
    problems.extend(impostor_problem(s, &imp)?);
    judge(
        "a same-tick impostor is not taken for the box: stopped, never signalled",
        problems,
        s,
    )
}

pub(crate) fn same_exe_impostor(s: &mut Scene<'_>) -> Verdict {
    let pid = live_box(s, "victim")?;
    let census = s.census()?;
    let victim = census
        .get(pid)
        .ok_or_else(|| NotStaged(format!("recorded pid {pid} is not in the census")))?;
    let exe = victim
        .exe
        .clone()
        .ok_or_else(|| NotStaged(format!("cannot read /proc/{pid}/exe")))?;
    let argv = victim.cmdline.clone();
    let imp = s.same_exe_impostor(pid, &exe, &argv)?;
    let mut problems = Vec::new();
    problems.extend(state_problem_with(
        s,
        "victim",
        &[Status::Stopped],
        Some(&imp),
    )?);
    s.kill("victim", "KILL")?;
    problems.extend(impostor_problem(s, &imp)?);
    judge(
        "an impostor running the shim's executable with the box's argv is not taken for the box",
        problems,
        s,
    )
}
