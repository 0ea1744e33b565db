//! The runtime's own daemon in a scene (`[supervisor]`): started before a
//! case's first command, found by its pid file (or as the process `start`
//! started), SIGKILLed and started again by the `daemon::*` cases.
//!
//! The census a case sees leaves the daemon out ([`Scene::census`]): it is
//! the runtime's, not a box's leftover. Everything else it starts (a
//! supervisor's per-service processes, the boxes) is judged as ever.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use doppel_harness::poll;

use crate::adapter::{SupervisorCommands, Vars};
use crate::catalog::{Halt, NotStaged};
use crate::scene::{Run, Scene};
use crate::world::Exec;

/// How long a daemon may take, from `start`, until it serves.
pub const READY_DEADLINE: Duration = Duration::from_secs(10);
/// How often `ready` is asked meanwhile.
const READY_STEP: Duration = Duration::from_millis(20);
/// How long after `ready` first says yes the daemon's pid may take to
/// show.
const PID_GRACE: Duration = Duration::from_secs(1);
/// The most of a pid file the suite reads.
const PID_FILE_CAP: u64 = 4096;

/// The daemon a scene started and believes running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Daemon {
    /// Its pid (from the pid file, or the process `start` started).
    pub pid: i32,
    /// Its start time (stat field 22): a process that reuses the pid is
    /// not the daemon.
    pub start_time: u64,
}

/// A scene's daemon bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct Daemons {
    /// `supervisor.setup` ran in this world.
    setup_done: bool,
    /// The daemon now running, as the scene last saw it start.
    pub(crate) current: Option<Daemon>,
}

impl Daemons {
    /// Whether `(pid, start_time)` is the scene's daemon.
    pub(crate) fn is_daemon(&self, pid: i32, start_time: u64) -> bool {
        self.current
            .is_some_and(|d| d.pid == pid && d.start_time == start_time)
    }
}

/// The first decimal number in a pid file (pm2, supervisord and refbox
/// write it alone or on the first line).
pub fn pid_in(text: &str) -> Option<i32> {
    let digits: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok().filter(|p| *p > 0)
}

impl Scene<'_> {
    fn supervisor(&self) -> Result<&SupervisorCommands, NotStaged> {
        self.adapter()
            .supervisor
            .as_ref()
            .ok_or_else(|| NotStaged("the adapter declares no [supervisor]".into()))
    }

    /// Starts the runtime's daemon unless the one this scene started runs:
    /// called before every case (and in every sibling world), so a
    /// supervisor's boxes have their daemon from the first command on.
    pub fn ensure_daemon(&mut self) -> Result<(), Halt> {
        if self.adapter().supervisor.is_none() || self.daemons.current.is_some() {
            return Ok(());
        }
        self.start_daemon().map(drop)
    }

    /// Runs a `[supervisor]` command (`ready`, `stop`) in the world.
    fn supervisor_cmd(&mut self, t: &crate::adapter::Template) -> Result<Run, NotStaged> {
        let argv = self.expand_template(t, &Vars::default())?;
        self.exec_argv(argv, &[])
    }

    /// `supervisor.stop`, the runtime's own way to stop its daemon (`None`
    /// when the adapter declares none).
    pub fn stop_daemon(&mut self) -> Result<Option<Run>, NotStaged> {
        let Some(t) = self.supervisor()?.stop.clone() else {
            return Ok(None);
        };
        let r = self.supervisor_cmd(&t)?;
        Ok(Some(r))
    }

    /// The pid the daemon's pid file names now (`None`: no file, or no pid
    /// in it). Without `supervisor.pid_file`, the daemon the scene started.
    pub fn daemon_recorded_pid(&mut self) -> Result<Option<i32>, NotStaged> {
        match self.daemon_pid_file()? {
            Some(path) => Ok(self
                .read_capped(&path, PID_FILE_CAP)
                .ok()
                .and_then(|b| pid_in(&String::from_utf8_lossy(&b)))),
            None => Ok(self.daemons.current.map(|d| d.pid)),
        }
    }

    /// `supervisor.pid_file` expanded (world path).
    pub fn daemon_pid_file(&self) -> Result<Option<String>, NotStaged> {
        Ok(self.supervisor()?.pid_file.as_ref().map(|p| {
            crate::adapter::expand_str(
                p,
                &Vars {
                    root: Some(self.root()),
                    ..Vars::default()
                },
            )
            .unwrap_or_else(|_| p.clone())
        }))
    }

    /// The daemon the scene last started, if it still runs (same pid and
    /// start time).
    pub fn daemon_alive(&mut self) -> Result<Option<Daemon>, NotStaged> {
        let Some(d) = self.daemons.current else {
            return Ok(None);
        };
        let c = self.census_all()?;
        Ok(c.get(d.pid)
            .filter(|p| p.start_time == d.start_time)
            .map(|_| d))
    }

    /// SIGKILLs the daemon the scene started (and waits until it is gone);
    /// returns it. Its boxes are left to whatever the runtime arranged.
    pub fn kill_daemon(&mut self) -> Result<Daemon, NotStaged> {
        let d = self
            .daemon_alive()?
            .ok_or_else(|| NotStaged("the runtime's daemon is not running".into()))?;
        self.kill_process(d.pid)?;
        self.daemons.current = None;
        Ok(d)
    }

    /// Takes `d` as the daemon again (a case that knows which of two
    /// daemons is the runtime's).
    pub fn set_daemon(&mut self, d: Daemon) {
        self.daemons.current = Some(d);
    }

    /// Forgets the daemon (it was killed, or an impostor now holds its
    /// pid): the census counts that pid's process again.
    pub fn forget_daemon(&mut self) {
        self.daemons.current = None;
    }

    /// Starts the daemon (`supervisor.setup` first, once per world) and
    /// waits until it serves: `ready` exits 0 and its pid is a live process.
    /// A `start` that fails is not staged; one that exits 0 while no daemon
    /// ever serves is the runtime's failure ([`Halt::NoScene`]).
    pub fn start_daemon(&mut self) -> Result<Daemon, Halt> {
        let sv = self.supervisor()?.clone();
        if !self.daemons.setup_done {
            if let Some(t) = &sv.setup {
                let r = self.supervisor_cmd(t)?;
                if !r.success() {
                    return Err(
                        NotStaged(format!("supervisor.setup failed: {}", r.summary())).into(),
                    );
                }
            }
            self.daemons.setup_done = true;
        }
        let argv = self.expand_template(&sv.start, &Vars::default())?;
        let started = self.spawn_background(&argv)?;
        let pid_file = self.daemon_pid_file()?;
        let mut ended: Option<Exec> = None;
        let mut last_ready: Option<Run> = None;
        let mut ready_since: Option<Instant> = None;
        let keep = self.transcript_len();
        let found = poll::until(READY_DEADLINE, READY_STEP, || {
            if ended.is_none() {
                ended = self.background_exit(started)?;
            }
            if let Some(e) = &ended {
                if e.code != Some(0) {
                    return Err(Halt::from(NotStaged(format!(
                        "supervisor.start (`{}`) {}; stderr {:?}",
                        argv.join(" "),
                        match (e.code, e.signal) {
                            (Some(c), _) => format!("exited {c}"),
                            (_, Some(s)) => format!("was killed by signal {s}"),
                            _ => "ended".into(),
                        },
                        String::from_utf8_lossy(&e.stderr).trim()
                    ))));
                }
            }
            let ready = match &sv.ready {
                Some(t) => {
                    self.truncate_transcript(keep);
                    let r = self.supervisor_cmd(t)?;
                    if r.timed_out {
                        // Asking again would only hang again.
                        return Err(Halt::from(NotStaged(format!(
                            "supervisor.ready hung: {}",
                            r.summary()
                        ))));
                    }
                    let ok = r.success();
                    last_ready = Some(r);
                    ok
                }
                None => true,
            };
            if ready && ready_since.is_none() {
                ready_since = Some(Instant::now());
            }
            let pid = match &pid_file {
                Some(f) => self
                    .read_capped(f, PID_FILE_CAP)
                    .ok()
                    .and_then(|b| pid_in(&String::from_utf8_lossy(&b))),
                None => ended.is_none().then_some(started),
            };
            let live = match pid {
                Some(p) => self.census_all()?.get(p).map(|p| Daemon {
                    pid: p.pid,
                    start_time: p.start_time,
                }),
                None => None,
            };
            Ok(match (ready, live) {
                (true, Some(d)) => ControlFlow::Break(Ok(d)),
                // Serving, by its own word, with no daemon to show for it:
                // a pid file is written before a daemon answers.
                (true, None) if ready_since.is_some_and(|t| t.elapsed() >= PID_GRACE) => {
                    ControlFlow::Break(Err((pid, false)))
                }
                _ => ControlFlow::Continue((pid, live.is_some())),
            })
        })?;
        match found.and_then(|r| r) {
            Ok(d) => {
                self.daemons.current = Some(d);
                self.push_transcript(format!("the daemon serves as pid {}", d.pid));
                Ok(d)
            }
            Err((pid, alive)) => {
                let ready = last_ready.map_or_else(String::new, |r| {
                    format!("; supervisor.ready last: {}", r.summary())
                });
                let where_ = match (&pid_file, pid) {
                    (Some(f), Some(p)) if alive => format!(
                        "{f} names pid {p}, which runs, but supervisor.ready never said it serves"
                    ),
                    (Some(f), Some(p)) => format!("{f} names pid {p}, which is not running"),
                    (Some(f), None) => format!("{f} names no pid"),
                    (None, _) if ended.is_none() => format!(
                        "the process it started (pid {started}) runs, but supervisor.ready never said it serves"
                    ),
                    (None, _) => format!("the process it started (pid {started}) exited"),
                };
                let what = format!(
                    "supervisor.start (`{}`) {}, and no daemon serves: {where_}{ready}",
                    argv.join(" "),
                    if ended.is_some() {
                        "exited 0"
                    } else {
                        "still runs"
                    },
                );
                // A start that said it succeeded, with no daemon to show
                // for it, is the runtime's failure; a daemon that never
                // became ready may just not run here.
                match (&pid_file, pid, ended.is_some()) {
                    (_, None, true) | (Some(_), Some(_), true) if !alive => {
                        Err(self.no_scene("the runtime's daemon serving".into(), what))
                    }
                    _ => Err(NotStaged(what).into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pid_in;

    #[test]
    fn pid_files_are_read_like_their_writers_write_them() {
        assert_eq!(pid_in("4242\n"), Some(4242));
        assert_eq!(pid_in("  17\n123456\nboot\n"), Some(17));
        assert_eq!(pid_in(""), None);
        assert_eq!(pid_in("0\n"), None);
        assert_eq!(pid_in("pid=12"), None);
        assert_eq!(pid_in("99999999999999999999"), None);
    }
}
