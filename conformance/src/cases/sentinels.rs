//! sentinels::*: stale log directories are cleaned by owner identity, never
//! by a bare pid.

use super::{judge, live_box, replace_with_impostor};
use crate::adapter::Operation;
use crate::catalog::{NotStaged, Verdict};
use crate::scene::{FileKind, ImpostorKind, Plant, Scene};

pub(crate) fn stale_log_cleanup(s: &mut Scene<'_>) -> Verdict {
    let sentinel = |s: &Scene<'_>, id: &str| {
        s.path(FileKind::Sentinel, id)
            .ok_or_else(|| NotStaged("adapter declares no files.sentinel".into()))
    };
    // live: a running box; dead: its process killed; recycled: killed and an
    // unrelated process placed at its pid; oversized: a sparse sentinel.
    live_box(s, "live")?;
    let dead = live_box(s, "dead")?;
    let recycled = live_box(s, "recycled")?;
    live_box(s, "oversized")?;
    for id in ["live", "dead", "recycled", "oversized"] {
        let p = sentinel(s, id)?;
        if !s.exists(&p) {
            return Err(NotStaged(format!("the runtime wrote no sentinel at {p}")));
        }
    }
    s.kill_process(dead)?;
    let imp = replace_with_impostor(s, recycled, ImpostorKind::Unrelated)?;
    let big = sentinel(s, "oversized")?;
    s.plant(&big, Plant::Oversized { bytes: 1 << 40 })?;
    let big_fp = s.fingerprint(&big)?;
    let run = s.op(Operation::Cleanup, None, &[])?;
    let mut problems = Vec::new();
    if run.crashed() || run.timed_out {
        problems.push(format!("cleanup: {}", run.summary()));
    }
    for id in ["dead", "recycled"] {
        let p = sentinel(s, id)?;
        if s.exists(&p) {
            problems.push(format!(
                "the sentinel of {id} (owner {id}) is still there: {p}"
            ));
        }
        if !run.stdout.contains(id) && !run.stderr.contains(id) {
            problems.push(format!(
                "cleanup gave no reason for {id}: {}",
                run.summary()
            ));
        }
    }
    let live_p = sentinel(s, "live")?;
    if !s.exists(&live_p) {
        problems.push(format!("the live box's sentinel {live_p} was removed"));
    }
    if s.fingerprint(&big)? != big_fp {
        problems.push(format!(
            "the oversized sentinel {big} was changed or removed"
        ));
    }
    if let Some(p) = super::impostor_problem(s, &imp)? {
        problems.push(p);
    }
    judge(
        "dead and recycled owners' logs removed with a reason, live kept, oversized left alone",
        problems,
        s,
    )
}
