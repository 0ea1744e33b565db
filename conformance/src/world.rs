//! Glue to doppel-harness: opening a world, running commands in it,
//! impostors that log the signals they receive, census, machine
//! capabilities. The rest of the suite sees only the types defined here.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalog::MachineNeed;

/// Environment variable that turns this binary into a signal-logging impostor.
pub const IMPOSTOR_LOG_ENV: &str = "DOPPEL_IMPOSTOR_LOG";

/// Why the harness could not do something.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// The harness refused or failed.
    #[error("harness: {0}")]
    Harness(String),
    /// A file of the world could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Host path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// What this machine can stage.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    missing: Vec<(MachineNeed, String)>,
    lines: Vec<String>,
}

impl Machine {
    /// Detects capabilities through the harness.
    pub fn detect() -> Machine {
        Machine {
            missing: vec![
                (
                    MachineNeed::World,
                    "doppel-harness in this build does not open worlds yet".into(),
                ),
                (
                    MachineNeed::PidPlacement,
                    "doppel-harness in this build does not place PIDs yet".into(),
                ),
            ],
            lines: vec![],
        }
    }

    /// Why `need` is missing, if it is.
    pub fn missing(&self, need: MachineNeed) -> Option<&str> {
        self.missing
            .iter()
            .find(|(n, _)| *n == need)
            .map(|(_, w)| w.as_str())
    }

    /// Every missing need with its reason.
    pub fn missing_all(&self) -> Vec<String> {
        self.missing
            .iter()
            .map(|(n, w)| format!("{n}: {w}"))
            .collect()
    }

    /// One line per detected capability, for `doppel doctor`.
    pub fn describe(&self) -> Vec<String> {
        self.lines.clone()
    }
}

/// One process of a census.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    /// World PID.
    pub pid: i32,
    /// Parent's world PID.
    pub ppid: i32,
    /// State letter from /proc/PID/stat (`Z` for zombies).
    pub state: char,
    /// argv.
    pub cmdline: Vec<String>,
    /// /proc/PID/exe target.
    pub exe: Option<String>,
    /// Start time (stat field 22).
    pub start_time: u64,
    /// Whether the census secret appears in its cmdline or environ.
    pub holds_secret: bool,
}

/// An orphan init reaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    /// World PID.
    pub pid: i32,
    /// argv (or comm).
    pub cmdline: Vec<String>,
    /// How it ended.
    pub status: String,
}

impl fmt::Display for Orphan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} {:?} ({})", self.pid, self.cmdline, self.status)
    }
}

/// Every process of a world at one moment, and the orphans init reaped so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Live processes and zombies (init excluded).
    pub procs: Vec<Proc>,
    /// Orphans reaped by init since the world opened, oldest first.
    pub orphans: Vec<Orphan>,
}

impl Census {
    /// The process at `pid`, if it is there and not a zombie.
    pub fn get(&self, pid: i32) -> Option<&Proc> {
        self.procs.iter().find(|p| p.pid == pid && p.state != 'Z')
    }

    /// Zombies.
    pub fn zombies(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter().filter(|p| p.state == 'Z')
    }

    /// Evidence lines.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .procs
            .iter()
            .map(|p| {
                format!(
                    "census: pid {} ppid {} {} {:?}",
                    p.pid, p.ppid, p.state, p.cmdline
                )
            })
            .collect();
        out.extend(
            self.orphans
                .iter()
                .map(|o| format!("census: reaped orphan {o}")),
        );
        out
    }
}

/// What kind of impostor to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImpostorKind {
    /// A sleeper unrelated to the runtime.
    Unrelated,
    /// Runs with the victim's executable path and argv.
    SameExe {
        /// The victim's /proc/PID/exe.
        exe: String,
        /// The victim's argv.
        argv: Vec<String>,
    },
}

/// A placed impostor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impostor {
    /// Its world PID.
    pub pid: i32,
    /// Its start time.
    pub start_time: u64,
    /// Host path of its signal log.
    pub log: PathBuf,
}

/// What happened to an impostor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImpostorReport {
    /// Still running.
    pub alive: bool,
    /// Signals it received (catchable ones; SIGKILL shows as `alive == false`).
    pub signals: Vec<i32>,
}

/// A file the harness plants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plant {
    /// A sparse file of this apparent size.
    Oversized {
        /// Apparent size.
        bytes: u64,
    },
    /// A FIFO with no writer.
    Fifo,
    /// A symlink to `target`.
    Symlink {
        /// World path it points at.
        target: String,
    },
    /// A symlink to nothing.
    DanglingSymlink,
    /// A directory where a file is expected.
    Directory,
    /// Random bytes.
    Random {
        /// How many.
        bytes: usize,
    },
    /// An empty file.
    Empty,
    /// The first half of the file that was there.
    Truncated,
}

impl fmt::Display for Plant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Plant::Oversized { bytes } => write!(f, "sparse {} MiB", bytes >> 20),
            Plant::Fifo => f.write_str("FIFO"),
            Plant::Symlink { .. } => f.write_str("symlink"),
            Plant::DanglingSymlink => f.write_str("dangling symlink"),
            Plant::Directory => f.write_str("directory"),
            Plant::Random { .. } => f.write_str("random-bytes"),
            Plant::Empty => f.write_str("empty"),
            Plant::Truncated => f.write_str("truncated"),
        }
    }
}

/// How one command in the world ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal, when it was killed.
    pub signal: Option<i32>,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
    /// Killed at the deadline.
    pub timed_out: bool,
}

/// One world.
#[derive(Debug)]
pub struct World {
    _private: (),
}

impl World {
    /// Opens a world.
    pub fn open() -> Result<World, WorldError> {
        Err(WorldError::Harness(
            "doppel-harness in this build does not open worlds yet".into(),
        ))
    }

    /// A private writable directory (world path).
    pub fn dir(&self) -> &str {
        "/"
    }

    /// Host path of a world path.
    pub fn host_path(&self, world_path: &str) -> PathBuf {
        PathBuf::from(world_path)
    }

    /// Runs a command to completion (killed at `deadline`).
    pub fn exec(
        &mut self,
        _argv: &[String],
        _stdin: &[u8],
        _deadline: Duration,
    ) -> Result<Exec, WorldError> {
        Err(WorldError::Harness("no world".into()))
    }

    /// Places an impostor at `pid` (after SIGKILLing the current holder), or anywhere.
    pub fn impostor(
        &mut self,
        _replace: Option<i32>,
        _kind: &ImpostorKind,
        _log: &str,
    ) -> Result<Impostor, WorldError> {
        Err(WorldError::Harness("no world".into()))
    }

    /// SIGKILLs `pid` and waits until it is gone.
    pub fn kill_and_wait(&mut self, _pid: i32) -> Result<(), WorldError> {
        Err(WorldError::Harness("no world".into()))
    }

    /// Census; `secret` marks processes holding it.
    pub fn census(&mut self, _secret: Option<&str>) -> Result<Census, WorldError> {
        Err(WorldError::Harness("no world".into()))
    }
}

/// Modes this binary may be re-executed in inside a world. Returns when the
/// process is an ordinary invocation.
pub fn dispatch_hidden_modes() {
    if let Some(log) = std::env::var_os(IMPOSTOR_LOG_ENV) {
        impostor_main(PathBuf::from(log));
    }
}

/// The impostor: block every catchable signal, append each one received to
/// the log (one number per line), never exit on its own. SIGKILL (and
/// SIGSTOP) cannot be blocked; a SIGKILLed impostor shows up as gone.
fn impostor_main(log: PathBuf) -> ! {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    use nix::sys::signalfd::SignalFd;
    use std::io::Write;

    let mut mask = SigSet::all();
    mask.remove(Signal::SIGKILL);
    mask.remove(Signal::SIGSTOP);
    let ok = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).is_ok();
    let sfd = SignalFd::new(&mask);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log);
    // Readiness: the log exists once the mask is in place.
    let (Ok(sfd), true, Ok(file)) = (sfd, ok, file.as_mut()) else {
        std::process::exit(70);
    };
    let _ = file.write_all(b"ready\n");
    loop {
        if let Ok(Some(info)) = sfd.read_signal() {
            let _ = writeln!(file, "{}", info.ssi_signo);
        }
    }
}
