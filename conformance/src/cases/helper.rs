//! helper::* and crash::helper_killed: a runtime's privileged helper,
//! started in the world from the adapter's `[helper]` commands. With a
//! writable cgroup2 the helper gets a cgroup dir the scene owns
//! (`{cgroup_root}`); without one, its fallback (`serve_fallback`) is what
//! is tested, and the report says so.

use std::ops::ControlFlow;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::Duration;

use crate::adapter::{Status, Vars};
use crate::catalog::{Halt, NotStaged, Verdict};
use crate::scene::{ImpostorKind, Run, Scene};

use super::{SLEEPER, impostor_problem, judge};

/// How long a helper may take to create its socket.
const SOCKET_DEADLINE: Duration = Duration::from_secs(10);

/// A helper the scene started.
#[derive(Debug)]
struct Helper {
    pid: i32,
    socket: String,
}

/// Starts the adapter's helper (cgroup mode when this machine can, else
/// the fallback) and waits until its socket (a new one) exists.
fn start_helper(s: &mut Scene<'_>) -> Result<Helper, Halt> {
    let h =
        s.adapter().helper.as_ref().ok_or_else(|| {
            NotStaged("adapter declares capability `helper` but no [helper]".into())
        })?;
    let socket = s.outside_path("helper/helper.sock");
    let (t, cg) = match s.cgroup_root() {
        Ok(cg) => (&h.serve, Some(cg)),
        Err(why) => match &h.serve_fallback {
            Some(t) => {
                s.staging = Some(format!(
                    "helper fallback (no cgroup): {why}; the helper authorizes by its weaker rule"
                ));
                (t, None)
            }
            None => {
                return Err(NotStaged(format!(
                    "no writable cgroup2 ({why}) and the adapter declares no helper.serve_fallback"
                ))
                .into());
            }
        },
    };
    if cg.is_some() && s.staging.is_none() {
        s.staging = Some("helper with box cgroups under a cgroup2 dir the scene owns".into());
    }
    let argv = s.expand_template(
        t,
        &Vars {
            helper_socket: Some(&socket),
            cgroup_root: cg.as_deref(),
            ..Vars::default()
        },
    )?;
    let host = s.host_path_of(&socket)?;
    let old = std::fs::symlink_metadata(&host).ok().map(|m| m.ino());
    let pid = s.spawn_background(&argv)?;
    let ready = doppel_harness::poll::until(SOCKET_DEADLINE, Duration::from_millis(2), || {
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_socket() && Some(m.ino()) != old => {
                return Ok(ControlFlow::Break(()));
            }
            _ => {}
        }
        // Gone: exit 0 is a server that says it served and did not, the
        // runtime's failure; anything else is a helper that could not
        // start here (not staged).
        if let Some(end) = s.background_exit(pid)? {
            let (code, stderr) = (end.code, String::from_utf8_lossy(&end.stderr));
            let how = match (end.code, end.signal) {
                (Some(c), _) => format!("exited {c}"),
                (_, Some(sig)) => format!("was killed by signal {sig}"),
                _ => "ended".to_string(),
            };
            let what = format!(
                "the helper (`{}`, pid {pid}) {how} without creating its socket {socket}; stderr {:?}",
                argv.join(" "),
                stderr.trim()
            );
            if code == Some(0) {
                return Err(s.no_scene(format!("the helper serving on {socket}"), what));
            }
            return Err(NotStaged(what).into());
        }
        Ok::<_, Halt>(ControlFlow::Continue(()))
    })?;
    if ready.is_err() {
        return Err(NotStaged(format!(
            "the helper (`{}`, pid {pid}) did not create its socket {socket} within {} s",
            argv.join(" "),
            SOCKET_DEADLINE.as_secs()
        ))
        .into());
    }
    Ok(Helper { pid, socket })
}

fn helper_cmd(
    s: &mut Scene<'_>,
    h: &Helper,
    which: fn(&crate::adapter::HelperCommands) -> &crate::adapter::Template,
    id: &str,
    pid: Option<i32>,
    signal: Option<&str>,
) -> Result<Run, NotStaged> {
    let t = which(
        s.adapter()
            .helper
            .as_ref()
            .expect("checked by start_helper"),
    );
    let payload: Vec<String> = SLEEPER.iter().map(|p| p.to_string()).collect();
    let pid = pid.map(|p| p.to_string());
    let argv = s.expand_template(
        t,
        &Vars {
            helper_socket: Some(&h.socket),
            id: Some(id),
            pid: pid.as_deref(),
            signal,
            payload: Some(&payload),
            ..Vars::default()
        },
    )?;
    s.exec_argv(argv, &[])
}

/// A box run through the helper; returns its recorded pid.
fn helper_box(s: &mut Scene<'_>, h: &Helper, id: &str) -> Result<i32, Halt> {
    let r = helper_cmd(s, h, |c| &c.run, id, None, None)?;
    if !r.success() {
        return Err(NotStaged(format!(
            "the runtime could not run box {id} through its helper: {}",
            r.summary()
        ))
        .into());
    }
    s.prove_running(id, &r)
}

fn signal(s: &mut Scene<'_>, h: &Helper, id: &str, pid: i32, sig: &str) -> Result<Run, NotStaged> {
    helper_cmd(s, h, |c| &c.signal, id, Some(pid), Some(sig))
}

fn delete_force(s: &mut Scene<'_>, h: &Helper, id: &str) -> Result<Run, NotStaged> {
    helper_cmd(s, h, |c| &c.delete_force, id, None, None)
}

/// Signals off the allowlist, in the forms a caller could try.
const REFUSED: [&str; 12] = [
    "STOP", "SIGSTOP", "CONT", "SIGCONT", "TSTP", "RTMIN", "RTMIN+5", "34", "64", "0", "19", "9",
];

pub(crate) fn signal_allowlist(s: &mut Scene<'_>) -> Verdict {
    let h = start_helper(s)?;
    let id = "al-1";
    let pid = helper_box(s, &h, id)?;
    let mut problems = Vec::new();
    for sig in REFUSED {
        let r = signal(s, &h, id, pid, sig)?;
        if r.success() {
            problems.push(format!(
                "the helper accepted signal {sig:?} for the box's pid {pid}"
            ));
        }
        match s.census()?.get(pid) {
            None => problems.push(format!("after {sig:?}: the box's pid {pid} is gone")),
            Some(p) if p.state == 'T' => {
                problems.push(format!("after {sig:?}: the box's pid {pid} is stopped"))
            }
            Some(_) => {}
        }
        if !problems.is_empty() {
            break;
        }
    }
    // Control: the helper does send allowlisted signals.
    let r = signal(s, &h, id, pid, "TERM")?;
    if !r.success() {
        problems.push(format!(
            "the helper refused TERM for the box's own pid {pid}: {}",
            r.summary()
        ));
    }
    let _ = delete_force(s, &h, id)?;
    judge(
        "STOP, CONT, realtime, numeric and 0 refused with an error; TERM sent",
        problems,
        s,
    )
}

pub(crate) fn cgroup_authorization(s: &mut Scene<'_>) -> Verdict {
    let h = start_helper(s)?;
    let id = "au-1";
    let pid = helper_box(s, &h, id)?;
    let argv = s
        .census()?
        .get(pid)
        .map(|p| p.cmdline.clone())
        .ok_or_else(|| NotStaged(format!("the box's pid {pid} is not running")))?;
    let twin = s.impostor_anywhere(ImpostorKind::SameArgv { argv })?;
    let stranger = s.spawn_bystander()?;
    let mut problems = Vec::new();
    for (what, imp) in [
        ("same-cmdline process", &twin),
        ("unrelated process", &stranger),
    ] {
        let r = signal(s, &h, id, imp.pid, "TERM")?;
        if r.success() {
            problems.push(format!(
                "the helper accepted TERM for a {what} (pid {}) outside box {id}",
                imp.pid
            ));
        }
        if let Some(p) = impostor_problem(s, imp)? {
            problems.push(p);
        }
    }
    // Control: the box's own process is served.
    let r = signal(s, &h, id, pid, "USR1")?;
    if !r.success() {
        problems.push(format!(
            "the helper refused USR1 for the box's own pid {pid}: {}",
            r.summary()
        ));
    }
    let _ = delete_force(s, &h, id)?;
    judge(
        "a pid outside the box (same cmdline or not) is refused and unsignalled; the box's own is served",
        problems,
        s,
    )
}

pub(crate) fn helper_killed(s: &mut Scene<'_>) -> Verdict {
    let h = start_helper(s)?;
    let ids = ["hk-1", "hk-2"];
    let mut pids = Vec::new();
    for id in ids {
        pids.push(helper_box(s, &h, id)?);
    }
    s.kill_process(h.pid)?;
    let mut problems = Vec::new();
    // Killed or still theirs: what state says must be true.
    for (id, pid) in ids.iter().zip(&pids) {
        let before = s.census()?;
        let (run, st) = s.state(id)?;
        let after = s.census()?;
        let said = match st.as_ref().and_then(|o| o.pid) {
            Some(p) if p != i64::from(*pid) => format!(" (state's pid {p})"),
            _ => String::new(),
        };
        match st.as_ref().and_then(|o| o.status) {
            Some(Status::Running | Status::Created) if before.get(*pid).is_none() => {
                problems.push(format!(
                    "after the helper died, state {id} said running but its recorded pid {pid} was gone{said}"
                ))
            }
            Some(Status::Stopped) if after.get(*pid).is_some() => problems.push(format!(
                "after the helper died, state {id} said stopped but its recorded pid {pid} is alive (orphaned){said}"
            )),
            Some(_) => {}
            None => problems.push(format!(
                "after the helper died, state {id} gives no answer: {}",
                run.summary()
            )),
        }
    }
    // A new helper must be able to finish them: re-adopted, not orphaned.
    let h2 = start_helper(s)?;
    for id in ids {
        let r = delete_force(s, &h2, id)?;
        if !r.success() {
            problems.push(format!(
                "delete --force {id} through a restarted helper failed: {}",
                r.summary()
            ));
        }
    }
    let left = super::settle_live(s, &[h2.pid])?;
    if !left.is_empty() {
        problems.push(format!(
            "orphaned: still alive after delete --force of every box: {left:?}"
        ));
    }
    judge(
        "after the helper's death its boxes are killed or re-adopted: state true, a new helper deletes them, nothing left",
        problems,
        s,
    )
}
