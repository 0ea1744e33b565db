//! Owns impostors: processes placed where a runtime expects its own process
//! (same PID, and optionally same exe, argv or start time), plus the
//! `doppel-impostor` program itself (a sleeper that logs every catchable
//! signal and survives it; a zombie factory; an orphan maker; a daemon).
//!
//! The program is configured through the environment (`DOPPEL_IMPOSTOR_MODE`,
//! `DOPPEL_IMPOSTOR_LOG`), never argv, so its argv is free to imitate a
//! victim's (`SameArgv`, `PrefixId`).
//!
//! Depends on: `world`, `command`, `sys` (fork, signal handlers), `ids`.

use crate::command::WorldCommand;
use crate::ids::{Pid, Signal, StartTime};
use crate::world::{SameTickStaged, World, WorldError};
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Environment variable selecting the impostor's mode (see [`Mode`]).
pub const MODE_ENV: &str = "DOPPEL_IMPOSTOR_MODE";
/// Environment variable naming the file the impostor appends signal names to.
pub const LOG_ENV: &str = "DOPPEL_IMPOSTOR_LOG";
/// Work-dir subdirectory holding impostor signal logs.
pub const LOG_DIR: &str = ".doppel-impostors";

/// What the impostor program does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Log signals, keep running. Ready line: `ready`.
    Sleep,
    /// Fork N children that exit at once and are never reaped, then sleep.
    /// Ready line: `ready <pid>...`.
    Zombies(u32),
    /// Fork a child that exits with the code, wait until it is a zombie,
    /// then exit so init inherits and reaps it. Ready line: `ready <pid>`.
    Orphan(i32),
    /// Double-fork a session leader that sleeps; the intermediate exits.
    /// Ready line (from the daemon): `ready <pid>`.
    Daemon,
}

impl Mode {
    /// Parses `sleep`, `zombies:N`, `orphan:CODE`, `daemon`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s.split_once(':') {
            None if s == "sleep" => Some(Mode::Sleep),
            None if s == "daemon" => Some(Mode::Daemon),
            Some(("zombies", n)) => n.parse().ok().map(Mode::Zombies),
            Some(("orphan", c)) => c.parse().ok().map(Mode::Orphan),
            _ => None,
        }
    }

    /// The `DOPPEL_IMPOSTOR_MODE` value.
    pub fn as_env(self) -> String {
        match self {
            Mode::Sleep => "sleep".into(),
            Mode::Daemon => "daemon".into(),
            Mode::Zombies(n) => format!("zombies:{n}"),
            Mode::Orphan(c) => format!("orphan:{c}"),
        }
    }
}

/// Signals the sleeper catches: the recordable ones, plus SYS and TRAP
/// (an impostor should report even those; it never faults for real).
fn caught() -> Vec<i32> {
    let mut v = crate::ids::RECORDABLE_SIGNALS.to_vec();
    v.extend([libc::SIGSYS, libc::SIGTRAP]);
    v
}

fn ready(line: &str) {
    let Some(fd) = std::env::var("DOPPEL_READY_FD")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    if let Ok(owned) = crate::sys::take_inherited_fd(fd) {
        let mut f = std::fs::File::from(owned);
        let _ = writeln!(f, "{line}");
    }
}

fn install_logger(log: Option<&std::fs::File>) {
    if let Some(f) = log {
        let _ = crate::sys::install_signal_logger(f.as_raw_fd(), &caught());
    }
}

fn sleep_forever() -> ! {
    loop {
        crate::sys::pause();
    }
}

fn wait_zombie(pid: i32) {
    let _ = nix::sys::wait::waitid(
        nix::sys::wait::Id::Pid(nix::unistd::Pid::from_raw(pid)),
        nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
    );
}

/// Runs the impostor configured by the environment; returns an exit code.
/// Must run in a fresh single-threaded process (it forks).
pub fn run_from_env() -> i32 {
    let mode = std::env::var(MODE_ENV)
        .ok()
        .and_then(|m| Mode::parse(&m))
        .unwrap_or(Mode::Sleep);
    let log = std::env::var_os(LOG_ENV).and_then(|p| {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(p)
            .ok()
    });
    run(mode, log)
}

fn run(mode: Mode, log: Option<std::fs::File>) -> i32 {
    match mode {
        Mode::Sleep => {
            // Handlers first, then ready: whoever waits for the ready line
            // may signal at once.
            install_logger(log.as_ref());
            ready("ready");
            sleep_forever()
        }
        Mode::Zombies(n) => {
            let mut pids = Vec::new();
            for _ in 0..n {
                match crate::sys::fork() {
                    Ok(crate::sys::Forked::Child) => crate::sys::exit_now(0),
                    Ok(crate::sys::Forked::Parent(p)) => pids.push(p),
                    Err(_) => return 1,
                }
            }
            for &p in &pids {
                wait_zombie(p);
            }
            install_logger(log.as_ref());
            let list: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
            ready(&format!("ready {}", list.join(" ")));
            sleep_forever()
        }
        Mode::Orphan(code) => match crate::sys::fork() {
            Ok(crate::sys::Forked::Child) => crate::sys::exit_now(code),
            Ok(crate::sys::Forked::Parent(p)) => {
                wait_zombie(p);
                ready(&format!("ready {p}"));
                0
            }
            Err(_) => 1,
        },
        Mode::Daemon => match crate::sys::fork() {
            Ok(crate::sys::Forked::Child) => {
                let _ = nix::unistd::setsid();
                match crate::sys::fork() {
                    Ok(crate::sys::Forked::Child) => {
                        install_logger(log.as_ref());
                        ready(&format!("ready {}", std::process::id()));
                        sleep_forever()
                    }
                    _ => crate::sys::exit_now(0),
                }
            }
            Ok(crate::sys::Forked::Parent(p)) => {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(p), None);
                0
            }
            Err(_) => 1,
        },
    }
}

/// `doppel-impostor [--log PATH] [sleep|zombies:N|orphan:CODE|daemon]`
/// (argv form, for manual use; worlds use the environment form).
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    if std::env::var_os(MODE_ENV).is_some() {
        return run_from_env();
    }
    let mut mode = Mode::Sleep;
    let mut log = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy().into_owned();
        if a == "--log" {
            log = it.next().map(PathBuf::from);
        } else if let Some(m) = Mode::parse(&a) {
            mode = m;
        } else {
            eprintln!("doppel-impostor: unknown argument {a:?}");
            return 2;
        }
    }
    let log = log.and_then(|p| {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .ok()
    });
    run(mode, log)
}

/// What the impostor imitates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImpostorKind {
    /// The doppel-impostor sleeper with its own argv.
    Unrelated,
    /// Runs the victim's executable (`exe`, a world path) with `argv`; the
    /// caller picks an argv that keeps it alive. `/proc/PID/exe` is verified.
    /// No signal log (it is not our program).
    SameExe {
        /// The executable.
        exe: String,
        /// Full argv (argv\[0\] included).
        argv: Vec<String>,
    },
    /// The sleeper with exactly the victim's argv (`/proc/PID/cmdline` equal).
    SameArgv {
        /// The victim's argv.
        argv: Vec<String>,
    },
    /// The sleeper with the victim's argv where `victim_id` is extended to
    /// `victim_id` + `suffix` (e.g. `box-1` → `box-10`).
    PrefixId {
        /// The victim's argv.
        argv: Vec<String>,
        /// The victim's ID as it appears in argv.
        victim_id: String,
        /// What is appended to make a longer ID with the same prefix.
        suffix: String,
    },
}

/// Where to put an impostor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Wherever the kernel puts it.
    Anywhere,
    /// At this free PID.
    At(Pid),
    /// SIGKILL this victim, wait (up to the timeout) for its PID to be free,
    /// take it.
    Replacing {
        /// The victim.
        victim: Pid,
        /// How long to wait for the PID.
        timeout: Duration,
    },
}

/// Errors of impostor operations.
#[derive(Debug, thiserror::Error)]
pub enum ImpostorError {
    /// The world refused or failed.
    #[error(transparent)]
    World(#[from] WorldError),
    /// doppel-impostor was not found when the world opened, or the path
    /// given for it is not an executable file.
    #[error(transparent)]
    Helper(#[from] crate::locate::LocateError),
    /// The SameExe impostor's `/proc/PID/exe` is not the requested one.
    #[error("impostor pid {pid} runs {actual:?}, not {expected:?}")]
    ExeMismatch {
        /// The impostor.
        pid: Pid,
        /// Requested.
        expected: String,
        /// Found.
        actual: Option<PathBuf>,
    },
    /// The signal log could not be read.
    #[error("signal log {path:?}")]
    Log {
        /// Host path of the log.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// argv was empty.
    #[error("impostor argv must not be empty")]
    EmptyArgv,
}

/// A placed impostor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impostor {
    /// World PID.
    pub pid: Pid,
    /// Its start time.
    pub start_time: StartTime,
    /// The victim's start time, when the impostor replaced a victim.
    pub victim_start: Option<StartTime>,
    /// Host path of its signal log (`None` for SameExe).
    pub signals_log: Option<PathBuf>,
}

impl Impostor {
    /// Signals the impostor caught so far, in order.
    pub fn signals_received(&self) -> Result<Vec<Signal>, ImpostorError> {
        let Some(path) = &self.signals_log else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(path).map_err(|e| ImpostorError::Log {
            path: path.clone(),
            source: e,
        })?;
        Ok(text
            .lines()
            .filter_map(|l| Signal::from_name(l).ok())
            .collect())
    }

    /// True while it runs (not a zombie, same start time).
    pub fn is_alive(&self, world: &World) -> bool {
        world.is_running(self.pid, Some(self.start_time))
    }

    /// True when the impostor has the victim's start time (same tick).
    pub fn same_tick_as_victim(&self) -> bool {
        self.victim_start == Some(self.start_time)
    }
}

/// A running zombie factory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZombieFactory {
    /// The parent that never reaps.
    pub pid: Pid,
    /// Its zombie children.
    pub zombies: Vec<Pid>,
}

/// A same-tick impostor staging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SameTickImpostor {
    /// The impostor (its `victim_start` equals its `start_time`).
    pub impostor: Impostor,
    /// Attempts used.
    pub attempts: u32,
}

fn parse_pids(line: Option<&str>) -> Vec<Pid> {
    line.unwrap_or_default()
        .split_ascii_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok().and_then(|p| Pid::new(p).ok()))
        .collect()
}

impl World {
    fn impostor_program(&self) -> Result<String, ImpostorError> {
        self.impostor_program
            .as_ref()
            .map(|p| p.path.to_string_lossy().into_owned())
            .map_err(|e| ImpostorError::Helper(e.clone()))
    }

    /// A command running doppel-impostor in `mode` with `argv`, logging
    /// signals to a fresh log; returns the command and the log's host path.
    pub fn impostor_command(
        &self,
        mode: Mode,
        argv: Option<&[String]>,
    ) -> Result<(WorldCommand, Option<PathBuf>), ImpostorError> {
        let program = self.impostor_program()?;
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let rel = PathBuf::from(LOG_DIR).join(format!("{n}.log"));
        // Through the work dir's fd: a runtime that swapped the log dir for
        // a symlink gets a typed error, not a log dir outside the world.
        self.create_dir_all(LOG_DIR).map_err(WorldError::from)?;
        let host_log = self.host_path(&rel).map_err(WorldError::from)?;
        let world_log = self.world_path(&rel).map_err(WorldError::from)?;
        let mut cmd = WorldCommand::new(program.clone());
        if let Some(argv) = argv {
            let (first, rest) = argv.split_first().ok_or(ImpostorError::EmptyArgv)?;
            cmd = cmd.arg0(first.clone()).args(rest.iter().cloned());
        }
        let cmd = cmd
            .env(MODE_ENV, mode.as_env())
            .env(LOG_ENV, world_log.to_string_lossy())
            .ready_fd(true);
        Ok((cmd, Some(host_log)))
    }

    fn kind_command(
        &self,
        kind: &ImpostorKind,
    ) -> Result<(WorldCommand, Option<PathBuf>), ImpostorError> {
        match kind {
            ImpostorKind::Unrelated => self.impostor_command(Mode::Sleep, None),
            ImpostorKind::SameArgv { argv } => self.impostor_command(Mode::Sleep, Some(argv)),
            ImpostorKind::PrefixId {
                argv,
                victim_id,
                suffix,
            } => {
                let longer = format!("{victim_id}{suffix}");
                let argv: Vec<String> =
                    argv.iter().map(|a| a.replace(victim_id, &longer)).collect();
                self.impostor_command(Mode::Sleep, Some(&argv))
            }
            ImpostorKind::SameExe { exe, argv } => {
                let (first, rest) = argv.split_first().ok_or(ImpostorError::EmptyArgv)?;
                let cmd = WorldCommand::new(exe.clone())
                    .arg0(first.clone())
                    .args(rest.iter().cloned());
                Ok((cmd, None))
            }
        }
    }

    fn verify_exe(&self, kind: &ImpostorKind, pid: Pid) -> Result<(), ImpostorError> {
        if let ImpostorKind::SameExe { exe, .. } = kind {
            let link = self.host_root().join(format!("proc/{pid}/exe"));
            let actual = std::fs::read_link(link).ok();
            let want = std::fs::canonicalize(exe).unwrap_or_else(|_| PathBuf::from(exe));
            if actual.as_deref() != Some(want.as_path()) {
                return Err(ImpostorError::ExeMismatch {
                    pid,
                    expected: exe.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Places an impostor of `kind` at `placement`. For the sleeper kinds
    /// the call returns after it installed its signal handlers.
    pub fn impostor(
        &self,
        kind: &ImpostorKind,
        placement: Placement,
    ) -> Result<Impostor, ImpostorError> {
        let (cmd, log) = self.kind_command(kind)?;
        let (spawned, victim_start) = match placement {
            Placement::Anywhere => (self.spawn(&cmd)?, None),
            Placement::At(pid) => (self.spawn_at(pid, &cmd)?, None),
            Placement::Replacing { victim, timeout } => {
                let r = self.replace(victim, &cmd, timeout)?;
                (r.impostor, r.victim_start)
            }
        };
        self.verify_exe(kind, spawned.pid)?;
        Ok(Impostor {
            pid: spawned.pid,
            start_time: spawned.start_time,
            victim_start,
            signals_log: log,
        })
    }

    /// Stages a SameTick impostor: `victim` is started and killed by init and
    /// an impostor of `kind` takes its PID within the victim's birth tick
    /// (verified; retried up to `max_attempts`, else `NotStaged`).
    pub fn same_tick_impostor(
        &self,
        victim: &WorldCommand,
        kind: &ImpostorKind,
        max_attempts: u32,
    ) -> Result<SameTickImpostor, ImpostorError> {
        let (cmd, log) = self.kind_command(kind)?;
        let SameTickStaged {
            pid,
            victim_start,
            impostor,
            attempts,
        } = self.stage_same_tick(victim, &cmd, max_attempts)?;
        self.verify_exe(kind, pid)?;
        Ok(SameTickImpostor {
            impostor: Impostor {
                pid,
                start_time: impostor.start_time,
                victim_start: Some(victim_start),
                signals_log: log,
            },
            attempts,
        })
    }

    /// Starts a process with `n` zombie children it never reaps.
    pub fn zombie_factory(&self, n: u32) -> Result<ZombieFactory, ImpostorError> {
        let (cmd, _) = self.impostor_command(Mode::Zombies(n), None)?;
        let s = self.spawn(&cmd)?;
        Ok(ZombieFactory {
            pid: s.pid,
            zombies: parse_pids(s.ready_line.as_deref()),
        })
    }

    /// Makes an orphan: a process whose parent exits while it is a zombie, so
    /// init inherits and reaps it. Returns the orphan's PID once its parent
    /// is gone (init has then recorded it; see `Census::reaped_orphans`).
    pub fn make_orphan(&self, exit_code: i32) -> Result<Pid, ImpostorError> {
        let (cmd, _) = self.impostor_command(Mode::Orphan(exit_code), None)?;
        let s = self.spawn(&cmd)?;
        self.wait_or_kill(s.pid, Duration::from_secs(10))?;
        parse_pids(s.ready_line.as_deref())
            .first()
            .copied()
            .ok_or(ImpostorError::World(WorldError::UnexpectedResponse {
                request: "orphan ready line",
            }))
    }

    /// Starts a double-forked daemon (a sleeper in its own session whose
    /// parent exited); returns its PID.
    pub fn daemon(&self) -> Result<Impostor, ImpostorError> {
        let (cmd, log) = self.impostor_command(Mode::Daemon, None)?;
        let s = self.spawn(&cmd)?;
        let pid =
            parse_pids(s.ready_line.as_deref())
                .first()
                .copied()
                .ok_or(ImpostorError::World(WorldError::UnexpectedResponse {
                    request: "daemon ready line",
                }))?;
        let start_time = self.proc_stat(pid)?.start_time;
        Ok(Impostor {
            pid,
            start_time,
            victim_start: None,
            signals_log: log,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip() {
        for m in [Mode::Sleep, Mode::Daemon, Mode::Zombies(3), Mode::Orphan(7)] {
            assert_eq!(Mode::parse(&m.as_env()), Some(m));
        }
        assert_eq!(Mode::parse("zombies:x"), None);
        assert_eq!(Mode::parse("nope"), None);
    }

    #[test]
    fn ready_line_pids() {
        let v = parse_pids(Some("ready 5 6 x 7"));
        assert_eq!(v.iter().map(|p| p.get()).collect::<Vec<_>>(), vec![5, 6, 7]);
        assert!(parse_pids(None).is_empty());
    }
}
