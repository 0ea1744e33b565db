//! daemon::*: a runtime whose boxes live under a daemon of its own
//! (`[supervisor]`: a process supervisor, a container daemon) must survive
//! that daemon's death and its pid's reuse. The scene SIGKILLs the daemon,
//! and starts it again the adapter's way; boxes are counted by their
//! payload's argv (each box sleeps a number of its own), so a box running
//! twice, restarted or orphaned is seen whoever its parent is.

use std::ops::ControlFlow;
use std::time::Duration;

use super::{SETTLE_DEADLINE, impostor_problem, judge, reported_pid};
use crate::adapter::Status;
use crate::catalog::{Halt, NotStaged, Verdict};
use crate::scene::{Census, ImpostorKind, Scene};

/// A box whose payload can be counted: `/bin/sleep <arg>`.
#[derive(Debug, Clone, Copy)]
struct Counted {
    id: &'static str,
    arg: &'static str,
}

impl Counted {
    fn payload(&self) -> [&'static str; 2] {
        ["/bin/sleep", self.arg]
    }

    /// The live (not zombie) processes running this box's payload.
    fn instances(&self, c: &Census) -> Vec<i32> {
        c.procs
            .iter()
            .filter(|p| {
                p.state != 'Z'
                    && p.cmdline.len() == 2
                    && p.cmdline[0].rsplit('/').next() == Some("sleep")
                    && p.cmdline[1] == self.arg
            })
            .map(|p| p.pid)
            .collect()
    }
}

/// Runs a counted box and proves it running; returns its recorded pid and
/// its one payload process.
fn counted_box(s: &mut Scene<'_>, b: Counted) -> Result<(i32, i32), Halt> {
    let run = s.must_run_box(b.id, &b.payload())?;
    let recorded = s.prove_running(b.id, &run)?;
    // The payload may take a moment to be exec'ed after `run` returns.
    let found = doppel_harness::poll::until(
        crate::scene::STATUS_DEADLINE,
        Duration::from_millis(5),
        || {
            let c = s.census_all()?;
            let found = b.instances(&c);
            Ok::<_, NotStaged>(match found.len() {
                0 => ControlFlow::Continue(found),
                _ => ControlFlow::Break(found),
            })
        },
    )?;
    match found {
        Ok(v) if v.len() == 1 => Ok((recorded, v[0])),
        Ok(v) => Err(s.no_scene(
            format!("box {} running its payload once", b.id),
            format!("{} processes run {:?}: {v:?}", v.len(), b.payload()),
        )),
        Err(_) => Err(s.no_scene(
            format!("box {} running its payload {:?}", b.id, b.payload()),
            format!(
                "state says running (pid {recorded}) but no process runs {:?}",
                b.payload()
            ),
        )),
    }
}

/// Whether `ancestor` is `pid` or one of its ancestors in `c`.
fn is_ancestor(c: &Census, ancestor: i32, pid: i32) -> bool {
    let mut at = pid;
    for _ in 0..64 {
        if at == ancestor {
            return true;
        }
        match c.procs.iter().find(|p| p.pid == at) {
            Some(p) if p.ppid > 1 => at = p.ppid,
            _ => return false,
        }
    }
    false
}

/// Watches the world for [`SETTLE_DEADLINE`] (a daemon may start a second
/// instance a moment after it serves), showing `each` every census; the
/// last census.
fn watch(s: &mut Scene<'_>, mut each: impl FnMut(&Census)) -> Result<Census, NotStaged> {
    let last = doppel_harness::poll::until(SETTLE_DEADLINE, Duration::from_millis(20), || {
        let c = s.census_all()?;
        each(&c);
        Ok::<_, NotStaged>(ControlFlow::<(), Census>::Continue(c))
    })?;
    Ok(last.err().unwrap_or_default())
}

/// A box's payload processes while watched: the most seen at once, and
/// those at the end.
type Watched = (Vec<i32>, Vec<i32>);

/// Per box, what [`watch`] saw of its instances.
fn watch_instances(s: &mut Scene<'_>, boxes: &[Counted]) -> Result<Vec<Watched>, NotStaged> {
    let mut most: Vec<Vec<i32>> = vec![Vec::new(); boxes.len()];
    let last = watch(s, |c| {
        for (b, m) in boxes.iter().zip(most.iter_mut()) {
            let now = b.instances(c);
            if now.len() > m.len() {
                *m = now;
            }
        }
    })?;
    Ok(boxes
        .iter()
        .zip(most)
        .map(|(b, m)| (m, b.instances(&last)))
        .collect())
}

/// The daemon SIGKILLed while two boxes run, then started again: each box
/// still runs once, its process unchanged, and is reported running with a
/// pid that is that process (or its supervisor).
pub(crate) fn killed_with_live_boxes(s: &mut Scene<'_>) -> Verdict {
    const BOXES: [Counted; 2] = [
        Counted {
            id: "alpha",
            arg: "2000001",
        },
        Counted {
            id: "beta",
            arg: "2000002",
        },
    ];
    const EXPECTED: &str = "after the daemon is SIGKILLed and started again, every live box runs once, unrestarted, and is reported running with its pid";
    let mut boxes = Vec::new();
    for b in BOXES {
        let (recorded, payload) = counted_box(s, b)?;
        boxes.push((b, recorded, payload));
    }
    let daemon = s.kill_daemon()?;
    let after_kill = s.census_all()?;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let survived: Vec<bool> = boxes
        .iter()
        .map(|(_, _, p)| after_kill.get(*p).is_some())
        .collect();
    for ((b, _, p), alive) in boxes.iter().zip(&survived) {
        if !alive {
            notes.push(format!(
                "box {}'s payload (pid {p}) ended with the daemon (pid {})",
                b.id, daemon.pid
            ));
        }
    }
    // It started before in this world: a daemon that cannot start again
    // after its crash is the runtime's failure, not the scene's.
    match s.start_daemon() {
        Ok(_) => {}
        Err(Halt::NotStaged(NotStaged(why))) => {
            problems.push(format!(
                "the daemon does not start again after SIGKILL: {why}"
            ));
            return judge(EXPECTED, problems, s);
        }
        Err(h) => return Err(h),
    }
    for ((b, _, payload), alive) in boxes.iter().zip(&survived) {
        if *alive {
            if let Err(why) = s.await_status(b.id, &[Status::Running])? {
                problems.push(format!(
                    "box {} still runs (payload pid {payload}) but after the daemon's restart: {why}",
                    b.id
                ));
            }
        }
    }
    let watched = watch_instances(s, &BOXES)?;
    for (((b, recorded, payload), alive), (most, last)) in boxes.iter().zip(&survived).zip(watched)
    {
        let (b, recorded, payload) = (*b, *recorded, *payload);
        if most.len() > 1 {
            problems.push(format!(
                "box {} ran {} times after the daemon's restart: pids {most:?} run {:?}",
                b.id,
                most.len(),
                b.payload()
            ));
        }
        if *alive && !last.contains(&payload) {
            problems.push(format!(
                "box {}'s payload (pid {payload}), alive when the daemon died, is gone after its restart (now {last:?}): restarted, or killed",
                b.id
            ));
        }
        let (run, st) = s.state(b.id)?;
        let c = s.census_all()?;
        // A `state` that gives no pid (exit codes) leaves the record's.
        let mut st = st.map(|st| (st.status, st.pid));
        if let Some((Some(Status::Running), pid @ None)) = &mut st {
            *pid = s.recorded_pid(b.id).ok().map(i64::from);
        }
        match st {
            Some((Some(Status::Running), Some(pid))) => {
                let pid = i32::try_from(pid).unwrap_or(0);
                let tracked = last.iter().any(|p| is_ancestor(&c, pid, *p));
                if !tracked {
                    problems.push(format!(
                        "state {} says running{}, which is not its payload {last:?} nor a parent of it (the box's process is untracked: orphaned)",
                        b.id,
                        reported_pid(s, Some(i64::from(pid)), None)?
                    ));
                }
                if *alive && pid != recorded && !is_ancestor(&c, pid, payload) {
                    problems.push(format!(
                        "box {} was pid {recorded} before the daemon died, {pid} after",
                        b.id
                    ));
                }
            }
            Some((Some(Status::Running), None)) => problems.push(format!(
                "state {} says running but neither it nor a record names a pid: {}",
                b.id,
                run.summary()
            )),
            Some((st, _)) if *alive => problems.push(format!(
                "state {} says {st:?} while its payload (pid {payload}) still runs: {}",
                b.id,
                run.summary()
            )),
            _ => {}
        }
    }
    if !notes.is_empty() {
        s.staging = Some(format!("noted: {}", notes.join("; ")));
    }
    judge(EXPECTED, problems, s)
}

/// The daemon dies and an impostor takes the pid its pid file names. The
/// next start brings up a new daemon (not "already running"), under which
/// a box runs; then that daemon dies the same way and the runtime's `stop`
/// sends the impostor at its pid nothing.
pub(crate) fn recorded_pid_reused(s: &mut Scene<'_>) -> Verdict {
    const EXPECTED: &str = "with the daemon's recorded pid reused: start brings up a new daemon under which boxes run, stop signals nothing";
    let mut problems = Vec::new();
    let first = impostor_at_daemon(s)?;
    match s.start_daemon() {
        Ok(nd) if nd.pid == first.pid && nd.start_time == first.start_time => {
            problems.push(format!(
                "start left no new daemon: the pid file still names the impostor (pid {})",
                first.pid
            ));
        }
        Ok(_) => {
            let run = s.run_box("gamma", super::SLEEPER)?;
            if !run.success() {
                problems.push(format!(
                    "no box runs under the new daemon: {}",
                    run.summary()
                ));
            } else if let Err(why) = s.await_status("gamma", &[Status::Running])? {
                problems.push(format!("a box run under the new daemon: {why}"));
            }
        }
        Err(Halt::NotStaged(NotStaged(why))) => problems.push(format!(
            "no new daemon starts while an impostor holds the old one's recorded pid {}: {why}",
            first.pid
        )),
        Err(h) => return Err(h),
    }
    if let Some(p) = impostor_problem(s, &first)? {
        problems.push(format!("{p} (the first daemon's pid)"));
    }
    // Only a daemon that came up can die again; its box goes first, the
    // runtime's way (a box left in the daemon's session would keep its pid
    // from reuse).
    if problems.is_empty()
        && s.adapter()
            .supervisor
            .as_ref()
            .is_some_and(|sv| sv.stop.is_some())
    {
        let del = s.delete("gamma", true)?;
        if !del.success() {
            return Err(
                NotStaged(format!("delete --force gamma failed: {}", del.summary())).into(),
            );
        }
        super::settle_live(s, &[first.pid])?;
        let second = impostor_at_daemon(s)?;
        if let Some(stop) = s.stop_daemon()? {
            if let Some(p) = impostor_problem(s, &second)? {
                problems.push(format!("after `{}`: {p}", stop.argv.join(" ")));
            }
        }
    }
    judge(EXPECTED, problems, s)
}

/// SIGKILLs the scene's daemon and places an impostor at its pid, once its
/// pid file is shown to name it.
fn impostor_at_daemon(s: &mut Scene<'_>) -> Result<crate::scene::Impostor, Halt> {
    let d = s
        .daemon_alive()?
        .ok_or_else(|| NotStaged("the runtime's daemon is not running".into()))?;
    match s.daemon_recorded_pid()? {
        Some(p) if p == d.pid => {}
        other => {
            return Err(s.no_scene(
                format!("the daemon's pid file naming its pid {}", d.pid),
                format!("the pid file names {other:?}"),
            ));
        }
    }
    s.forget_daemon();
    match s.impostor_at(d.pid, ImpostorKind::Unrelated) {
        Ok(i) => Ok(i),
        // The kernel keeps a pid allocated while it names the session or
        // process group of live processes: a daemon whose children stay in
        // its session cannot have its pid reused until they end.
        Err(e) => Err(NotStaged(format!(
            "the daemon's pid {} could not be reused ({}): processes still in its session or process group keep it allocated; left: {}",
            d.pid,
            e.0,
            s.census()?.lines().join(", ")
        ))
        .into()),
    }
}

/// The daemon's pid file is lost while it runs, then the runtime is asked
/// to start its daemon again: one daemon runs afterwards (the first), and
/// the box started under it still runs once and is reported running.
pub(crate) fn record_lost(s: &mut Scene<'_>) -> Verdict {
    const EXPECTED: &str = "with the daemon's pid file lost: starting the daemon again makes no second one, and its box is still reported running";
    let b = Counted {
        id: "alpha",
        arg: "2000003",
    };
    let (_, payload) = counted_box(s, b)?;
    let d = s
        .daemon_alive()?
        .ok_or_else(|| NotStaged("the runtime's daemon is not running".into()))?;
    let file = s
        .daemon_pid_file()?
        .ok_or_else(|| NotStaged("the adapter declares no supervisor.pid_file".into()))?;
    let daemon_argv = s
        .census_all()?
        .get(d.pid)
        .map(|p| p.cmdline.clone())
        .unwrap_or_default();
    s.remove_file(&file)?;
    let mut problems = Vec::new();
    // Refused ("already running": what should happen), exit 0 with no daemon to show, or a second daemon: judged
    // by what runs, not by how the start ended.
    let _ = s.start_daemon();
    let daemons = |c: &Census| {
        c.procs
            .iter()
            .filter(|p| p.state != 'Z' && !daemon_argv.is_empty() && p.cmdline == daemon_argv)
            .map(|p| p.pid)
            .collect::<Vec<_>>()
    };
    let mut most_daemons = Vec::new();
    let mut most = Vec::new();
    let last = watch(s, |c| {
        let now = daemons(c);
        if now.len() > most_daemons.len() {
            most_daemons = now;
        }
        let now = b.instances(c);
        if now.len() > most.len() {
            most = now;
        }
    })?;
    if most_daemons.len() > 1 {
        problems.push(format!(
            "a second daemon ran beside the first (pid {}): {most_daemons:?} run {daemon_argv:?}",
            d.pid
        ));
    }
    if !daemons(&last).contains(&d.pid) {
        problems.push(format!(
            "the first daemon (pid {}) is gone after the second start (now {:?})",
            d.pid,
            daemons(&last)
        ));
    }
    // The first daemon is the scene's again (a second one's pid file may
    // have replaced the lost one).
    s.set_daemon(d);
    let last = b.instances(&last);
    if most.len() > 1 {
        problems.push(format!("box {} ran {} times: {most:?}", b.id, most.len()));
    }
    if !last.contains(&payload) {
        problems.push(format!(
            "box {}'s payload (pid {payload}) is gone (now {last:?})",
            b.id
        ));
    }
    if let Some(p) = super::state_problem(s, b.id, &[Status::Running])? {
        problems.push(p);
    }
    judge(EXPECTED, problems, s)
}
