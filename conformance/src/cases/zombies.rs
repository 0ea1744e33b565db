//! zombies::*: failed creations leave no zombie behind; a runtime's reaper
//! in library (daemon) mode leaves its embedder's children alone.

use super::judge;
use crate::adapter::{Status, Vars};
use crate::catalog::{NotStaged, Verdict};
use crate::scene::Scene;

/// How many failing creations of each kind.
const N: usize = 8;

pub(crate) fn none_after_failures(s: &mut Scene<'_>) -> Verdict {
    // A runtime that makes no box leaves no zombie either: it must first
    // show it runs one (its recorded pid alive), or nothing was tested.
    super::live_box(s, "witness")?;
    let mut problems = Vec::new();
    for i in 0..N {
        // A payload that cannot be executed: the runtime's failure path.
        let id = format!("noexec{i}");
        // (That it fails is errors::unrunnable_payload_fails.)
        s.run_box(&id, &["/nonexistent/doppel-payload"])?;
        // A payload that dies at once: the box must have been started.
        let id = format!("dies{i}");
        let r = s.run_box(&id, &["/bin/sh", "-c", "exit 3"])?;
        if !r.success() {
            return Err(NotStaged(format!(
                "the runtime could not run box {id}: {}",
                r.summary()
            ))
            .into());
        }
        s.prove_box(&id, &r, &[Status::Running, Status::Stopped])?;
    }
    // A zombie may exist for the instant between its death and its parent's
    // wait; give the runtime a deadline to reap, then judge.
    problems.extend(zombies_left(s, "")?);
    judge(
        "no zombie is left after 8 runs of a payload that does not exist and 8 payloads that exit at once",
        problems,
        s,
    )
}

/// zombies::reaper_scoped: the adapter's library-mode probe runs the runtime
/// in-process under its reaper; a child of the embedder exits (a code the
/// suite picks) and stays unreaped while the runtime reaps its own killed
/// boxes; the embedder's own wait must still get that code.
pub(crate) fn reaper_scoped(s: &mut Scene<'_>) -> Verdict {
    let d = s.adapter().daemon.as_ref().ok_or_else(|| {
        NotStaged("adapter declares capability `daemon` but no [daemon] table".into())
    })?;
    // 3..=122: never 0/1/2, which a broken probe might print by accident.
    let code = 3 + rand::random::<u8>() % 120;
    let code_text = code.to_string();
    let payload: Vec<String> = super::SLEEPER.iter().map(|a| a.to_string()).collect();
    let argv = s.expand_template(
        &d.reaper_probe,
        &Vars {
            code: Some(&code_text),
            payload: Some(&payload),
            ..Vars::default()
        },
    )?;
    let run = s.exec_argv(argv, &[])?;
    let mut problems = Vec::new();
    let report = serde_json::from_str::<serde_json::Value>(&run.stdout);
    if report.is_err() && !run.success() {
        // The probe is the whole scene: one that hangs or fails without a
        // report could not set it here (as a box that cannot be run); a
        // report is judged whatever the exit code (a probe may exit 1 to
        // say its wait failed), and exit 0 without one is the runtime's
        // failure (below).
        let how = if run.timed_out { "hung" } else { "failed" };
        return Err(NotStaged(format!("the daemon probe {how}: {}", run.summary())).into());
    }
    let Ok(doc) = report else {
        problems.push(format!(
            "the daemon probe printed no JSON report: {}",
            run.summary()
        ));
        return judge(
            "the embedder's own wait gets its child's exit code",
            problems,
            s,
        );
    };
    if let Some(p) = &d.reaped {
        match doc.pointer(p).and_then(serde_json::Value::as_u64) {
            Some(0) => {
                return Err(NotStaged(format!(
                    "the runtime's reaper reaped none of its own children while the embedder's child was pending ({p} = 0): nothing was tested"
                )).into());
            }
            Some(n) => {
                s.staging = Some(format!(
                    "{n} of the runtime's own children reaped while the embedder's child (exit {code}) was pending"
                ))
            }
            None => problems.push(format!(
                "the probe's report has no count at {p}: {}",
                run.summary()
            )),
        }
    }
    let got = doc
        .pointer(&d.child_exit)
        .and_then(serde_json::Value::as_i64);
    if got != Some(i64::from(code)) {
        let what = match got {
            Some(c) => format!("exit code {c}"),
            None => "no exit code (its child was already reaped by someone else)".into(),
        };
        problems.push(format!(
            "the embedder's child exited {code}, but the embedder's own wait got {what}: {}",
            run.summary()
        ));
    }
    problems.extend(zombies_left(s, " after the probe")?);
    judge(
        "the embedder's own wait gets its child's exit code",
        problems,
        s,
    )
}

/// The zombies in the world once the runtime had a deadline to reap (one
/// may exist for the instant between a death and its parent's wait), as a
/// problem line, if any.
fn zombies_left(s: &mut Scene<'_>, when: &str) -> Result<Option<String>, NotStaged> {
    let census = s.settle_zombies()?;
    let zombies: Vec<String> = census
        .zombies()
        .map(|p| format!("pid {} {:?} (parent {})", p.pid, p.cmdline, p.ppid))
        .collect();
    Ok((!zombies.is_empty()).then(|| {
        format!(
            "{} zombie(s) left{when}: {}",
            zombies.len(),
            zombies.join(", ")
        )
    }))
}
