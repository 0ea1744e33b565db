//! ids::*: box ids are matched exactly, never as substrings.

use super::{impostor_problem, judge, live_box, state_problem};
use crate::adapter::Status;
use crate::catalog::{NotStaged, Verdict};
use crate::scene::{ImpostorKind, Scene};

pub(crate) fn prefix_collision(s: &mut Scene<'_>) -> Verdict {
    let one = live_box(s, "box-1")?;
    let ten = live_box(s, "box-10")?;
    let mut problems = Vec::new();
    let check =
        |s: &mut Scene<'_>, after: &str, problems: &mut Vec<String>| -> Result<(), NotStaged> {
            if s.census()?.get(ten).is_none() {
                problems.push(format!("box-10's process {ten} is gone after {after}"));
            }
            if let Some(p) = state_problem(s, "box-10", &[Status::Running])? {
                problems.push(format!("after {after}: {p}"));
            }
            Ok(())
        };
    let argv = s
        .census()?
        .get(one)
        .map(|p| p.cmdline.clone())
        .ok_or_else(|| NotStaged(format!("box-1's process {one} is not in the census")))?;
    let k = s.kill("box-1", "KILL")?;
    // box-1 not going away (or box-10 going instead) is the runtime's
    // doing: judge box-10 and go on; placing the impostor below SIGKILLs
    // whatever still holds box-1's pid.
    if let Err(why) = s.await_gone(one)? {
        problems.push(format!(
            "kill box-1 KILL did not end box-1's process: {why} ({})",
            k.summary()
        ));
    }
    check(s, "kill box-1", &mut problems)?;
    s.kill("box-1", "KILL")?;
    check(s, "kill box-1 after its death", &mut problems)?;
    // box-1's PID now taken by a process whose argv names box-10 where
    // box-1's named box-1: an id matched by substring takes it for box-1.
    let imp = s.impostor_at(
        one,
        ImpostorKind::PrefixId {
            argv,
            victim_id: "box-1".into(),
            suffix: "0".into(),
        },
    )?;
    s.kill("box-1", "KILL")?;
    s.delete("box-1", true)?;
    if let Some(p) = impostor_problem(s, &imp)? {
        problems.push(format!(
            "after kill/delete box-1 with a box-10 process at its pid: {p}"
        ));
    }
    check(s, "delete --force box-1", &mut problems)?;
    s.kill("box-1", "KILL")?;
    check(s, "kill box-1 after its deletion", &mut problems)?;
    judge("operations on box-1 never touch box-10", problems, s)
}

pub(crate) fn argv_exact(s: &mut Scene<'_>) -> Verdict {
    let pid = live_box(s, "b-7")?;
    let census = s.census()?;
    let p = census
        .get(pid)
        .ok_or_else(|| NotStaged(format!("recorded pid {pid} is not in the census")))?;
    let problems = if p.cmdline.iter().any(|a| a == "b-7") {
        vec![]
    } else {
        vec![format!(
            "the recorded process {pid} has argv {:?}: b-7 is not an exact element",
            p.cmdline
        )]
    };
    judge(
        "the box id is an exact argv element of the box's process",
        problems,
        s,
    )
}
