//! Glue to doppel-harness: opening a world, running commands in it,
//! impostors that log the signals they receive, census, machine
//! capabilities. The rest of the suite sees only the types defined here.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalog::{MachineNeed, NotStaged};

use doppel_harness::command::WorldCommand;
use doppel_harness::ids::{Pid, Signal};
use doppel_harness::impostor as himp;
use doppel_harness::proto::ExitStatus;
use doppel_harness::world as hw;

/// Why the harness could not do something.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// The harness refused or failed.
    #[error(transparent)]
    Harness(#[from] hw::WorldError),
    /// An impostor could not be placed.
    #[error(transparent)]
    Impostor(#[from] himp::ImpostorError),
    /// A command with no argv.
    #[error("cannot run an empty argv")]
    EmptyArgv,
    /// A process outlived SIGKILL past the deadline.
    #[error("pid {pid} is still running {ms} ms after SIGKILL")]
    SurvivedKill {
        /// The world PID.
        pid: i32,
        /// How long the harness waited.
        ms: u128,
    },
    /// A pid is not a valid process ID.
    #[error(transparent)]
    Pid(#[from] doppel_harness::ids::InvalidPid),
    /// The world's private dirs could not be made.
    #[error("cannot set up the world's private dirs: {0}")]
    Setup(String),
}

/// What this machine can stage.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    missing: Vec<(MachineNeed, String)>,
    lines: Vec<String>,
}

impl Machine {
    /// Detects this machine's capabilities (through doppel-harness).
    pub fn detect() -> Machine {
        let caps = doppel_harness::Capabilities::detect();
        let mut m = Machine::default();
        m.lines.push(format!(
            "running as {}",
            if caps.root {
                "root (worlds need no user namespace)"
            } else {
                "an unprivileged user (worlds need a user namespace)"
            }
        ));
        for (name, c) in caps.list() {
            let what = match name {
                "pidfs" => {
                    " (without it runtimes fall back to weaker identity checks; no case is disabled)"
                }
                "cgroup2" => {
                    " (refbox then kills payloads by PDEATHSIG + process group; no case is disabled)"
                }
                "per_ns_pid_max" => " (only the wraparound benchmark needs it)",
                "netns" => {
                    " (worlds then share the host's network: runtimes that bind abstract sockets or ports named after a box may collide in parallel worlds; no case is disabled)"
                }
                _ => "",
            };
            m.lines.push(match c.reason() {
                None => format!("{name}: available"),
                Some(r) => format!("{name}: missing: {r}{what}"),
            });
        }
        // Helper scenes make a cgroup2 dir of their own under the mount,
        // which works where the harness's own cgroup has no cgroup.kill.
        m.lines.push(match crate::cgroup::CgroupDir::create() {
            Ok(d) => format!(
                "cgroup2 dirs for helper scenes: available (under {})",
                d.path()
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            Err(why) => format!(
                "cgroup2 dirs for helper scenes: missing: {why} (helper cases run the helper's fallback)"
            ),
        });
        if let Err(why) = caps.worlds() {
            m.missing.push((MachineNeed::World, why));
        }
        if let (Some(a), Some(b)) = (caps.set_tid.reason(), caps.ns_last_pid.reason()) {
            m.missing.push((
                MachineNeed::PidPlacement,
                format!("clone3 set_tid: {a}; ns_last_pid: {b}"),
            ));
        }
        m
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
    /// Signals world processes sent to init (PID 1) since the world opened,
    /// with their senders (catchable ones only: a KILL to PID 1 from inside
    /// the world is dropped by the kernel without a trace).
    pub init_signals: Vec<doppel_harness::proto::InitSignal>,
}

impl Census {
    /// The process at `pid`, if it is there and not a zombie.
    pub fn get(&self, pid: i32) -> Option<&Proc> {
        self.procs.iter().find(|p| p.pid == pid && p.state != 'Z')
    }

    /// Whether `pid` is in the census at all, zombies included.
    pub fn has(&self, pid: i32) -> bool {
        self.procs.iter().any(|p| p.pid == pid)
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
        out.extend(
            self.init_signals
                .iter()
                .map(|s| format!("census: world init (pid 1) received {s}")),
        );
        out
    }
}

/// What kind of impostor to place (the harness's own kinds).
pub use doppel_harness::impostor::ImpostorKind;

/// A placed impostor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impostor {
    /// Its world PID.
    pub pid: i32,
    /// Its start time.
    pub start_time: u64,
    inner: himp::Impostor,
}

/// What happened to an impostor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImpostorReport {
    /// Still running.
    pub alive: bool,
    /// Signals it received (catchable ones; SIGKILL shows as `alive == false`).
    pub signals: Vec<i32>,
}

/// A file the harness plants (the harness's own kinds).
pub use doppel_harness::plant::Plant;

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
    inner: hw::World,
    dir: String,
}

/// The world-private dirs behind [`PRIVATE_ENV`].
const PRIVATE_DIRS: [&str; 5] = [
    "home/.config",
    "home/.local/share",
    "home/.local/state",
    "home/.cache",
    "run-user",
];

/// Environment variables naming world-private dirs, relative to the
/// world's dir.
const PRIVATE_ENV: [(&str, &str); 6] = [
    ("HOME", "home"),
    ("XDG_CONFIG_HOME", "home/.config"),
    ("XDG_DATA_HOME", "home/.local/share"),
    ("XDG_STATE_HOME", "home/.local/state"),
    ("XDG_CACHE_HOME", "home/.cache"),
    ("XDG_RUNTIME_DIR", "run-user"),
];

/// How long the harness may wait for a killed process's PID to come free.
const PID_FREE_DEADLINE: Duration = Duration::from_secs(5);

impl World {
    /// Opens a world.
    pub fn open() -> Result<World, WorldError> {
        Self::open_with(crate::adapter::WorldSetup::default())
    }

    /// Opens a world set up as an adapter's `[world]` table asks.
    pub fn open_with(setup: crate::adapter::WorldSetup) -> Result<World, WorldError> {
        let inner = hw::World::open(hw::WorldOptions {
            unmount_cgroup_unified: setup.unmount_cgroup_unified,
            ..hw::WorldOptions::default()
        })?;
        let dir = inner.root().display().to_string();
        // Beneath the work dir's fd (the harness's path): never through a
        // host path, which a signal's exit path that just removed the work
        // dir would have this `mkdir -p` make again, and leave behind.
        for d in PRIVATE_DIRS {
            inner
                .create_dir_all(d)
                .map_err(|e| WorldError::Setup(format!("{dir}/{d}: {e}")))?;
        }
        Ok(World { inner, dir })
    }

    /// HOME and the XDG base dirs every command in the world gets, inside
    /// the world's dir: a runtime or supervisor under test never reads or
    /// writes the machine's own (`~/.pm2`, `$XDG_RUNTIME_DIR/...`).
    fn private_env(&self) -> Vec<(String, String)> {
        PRIVATE_ENV
            .iter()
            .map(|(k, d)| {
                (
                    k.to_string(),
                    format!("{}/{d}", self.dir.trim_end_matches('/')),
                )
            })
            .collect()
    }

    /// The world's private writable directory (world path).
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// Host path of a world path. Inside the world's dir, no component
    /// below it may be a symlink (a runtime under test that turned a box
    /// dir into a link to `/etc` must not make the suite write there):
    /// that is an error naming the component, never a silent fallback.
    pub fn host_path(&self, world_path: &str) -> Result<PathBuf, NotStaged> {
        match self.rel(world_path) {
            Some("") => Ok(self.inner.host_root_dir()),
            Some(r) => self.inner.host_path(r).map_err(|e| {
                NotStaged(format!(
                    "{world_path}: refusing a host path through the world: {e}"
                ))
            }),
            None => Ok(self
                .inner
                .host_root()
                .join(world_path.trim_start_matches('/'))),
        }
    }

    /// `world_path` relative to the world's dir, if it is inside it.
    fn rel<'p>(&self, world_path: &'p str) -> Option<&'p str> {
        world_path
            .strip_prefix(self.dir.as_str())
            .filter(|r| r.is_empty() || r.starts_with('/'))
            .map(|r| r.trim_start_matches('/'))
    }

    /// Reads a world file, at most `cap` bytes; inside the world's dir
    /// without following any symlink (the last component included).
    pub fn read_file(&self, world_path: &str, cap: u64) -> Result<Vec<u8>, NotStaged> {
        match self.rel(world_path) {
            Some(r) if !r.is_empty() => self
                .inner
                .read_file(r, cap)
                .map_err(|e| NotStaged(format!("{world_path}: {e}"))),
            _ => {
                let h = self.host_path(world_path)?;
                let mut out = Vec::new();
                std::fs::File::open(&h)
                    .and_then(|f| {
                        std::io::Read::read_to_end(&mut std::io::Read::take(f, cap), &mut out)
                    })
                    .map_err(|e| NotStaged(format!("{}: {e}", h.display())))?;
                Ok(out)
            }
        }
    }

    /// Writes (creates or truncates) a world file inside the world's dir,
    /// without following any symlink.
    pub fn write_file(&self, world_path: &str, bytes: &[u8]) -> Result<(), NotStaged> {
        match self.rel(world_path) {
            Some(r) if !r.is_empty() => self
                .inner
                .write_file(r, bytes)
                .map_err(|e| NotStaged(format!("{world_path}: {e}"))),
            _ => Err(NotStaged(format!(
                "{world_path}: the suite writes only inside the world's dir {}",
                self.dir
            ))),
        }
    }

    /// Removes whatever is at a world path inside the world's dir, through
    /// the harness's fd-relative path (nothing followed).
    pub fn remove(&self, world_path: &str) -> Result<(), NotStaged> {
        match self.rel(world_path) {
            Some(r) if !r.is_empty() => self
                .inner
                .remove(r)
                .map_err(|e| NotStaged(format!("{world_path}: {e}"))),
            _ => Err(NotStaged(format!(
                "{world_path}: the suite removes only inside the world's dir {}",
                self.dir
            ))),
        }
    }

    /// Plants `plant` at a world path inside the world's dir, in place of
    /// whatever is there, through the harness's fd-relative path (no
    /// component followed, so a runtime that swapped a dir for a symlink
    /// cannot redirect it).
    pub fn plant(&self, world_path: &str, plant: &Plant) -> Result<(), NotStaged> {
        match self.rel(world_path) {
            Some(r) if !r.is_empty() => self
                .inner
                .plant_replacing(r, plant)
                .map(drop)
                .map_err(NotStaged::from),
            _ => Err(NotStaged(format!(
                "{world_path}: the suite plants only inside the world's dir {}",
                self.dir
            ))),
        }
    }

    /// Runs a command to completion (killed at `deadline`).
    pub fn exec(
        &mut self,
        argv: &[String],
        env: &[(String, String)],
        stdin: &[u8],
        deadline: Duration,
    ) -> Result<Exec, WorldError> {
        let (first, rest) = argv.split_first().ok_or(WorldError::EmptyArgv)?;
        // A session (and process group) of its own: the process group is
        // not bounded by the PID namespace, so without this a runtime that
        // does kill(0, ...) would signal the harness's group on the host.
        let cmd = WorldCommand::new(first.clone())
            .args(rest.iter().cloned())
            .stdin(stdin.to_vec())
            .setsid(true);
        let cmd = self
            .private_env()
            .iter()
            .chain(env)
            .fold(cmd, |cmd, (k, v)| cmd.env(k.clone(), v.clone()));
        let e = self.inner.run(&cmd, deadline)?;
        let (code, signal) = match e.status {
            ExitStatus::Exited(c) => (Some(c), None),
            ExitStatus::Signaled(s) => (None, Some(s.get())),
        };
        Ok(Exec {
            code,
            signal,
            stdout: e.stdout.bytes,
            stderr: e.stderr.bytes,
            timed_out: e.killed_on_timeout,
        })
    }

    /// Places an impostor: replacing the process at `replace` (SIGKILLed,
    /// its PID waited free), or anywhere.
    pub fn impostor(
        &mut self,
        replace: Option<i32>,
        kind: &ImpostorKind,
    ) -> Result<Impostor, WorldError> {
        let placement = match replace {
            Some(p) => himp::Placement::Replacing {
                victim: Pid::new(p)?,
                timeout: PID_FREE_DEADLINE,
            },
            None => himp::Placement::Anywhere,
        };
        // A dead process's PID stays allocated while it still names a
        // process group or session with live members (a shim's payload in
        // the shim's group dies a moment after the shim): retry placement
        // until the deadline.
        let deadline = std::time::Instant::now() + PID_FREE_DEADLINE;
        let mut victim_start = None;
        let inner = loop {
            match self.inner.impostor(kind, placement) {
                Err(himp::ImpostorError::World(hw::WorldError::Remote(
                    doppel_harness::RemoteError::PidTaken { .. },
                ))) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e.into()),
                Ok(imp) => {
                    // A recycled PID is staged in a later tick than the
                    // victim's birth (same-tick reuse is its own scene):
                    // while the start times match, replace the impostor.
                    victim_start = victim_start.or(imp.victim_start);
                    if replace.is_some()
                        && victim_start == Some(imp.start_time)
                        && std::time::Instant::now() < deadline
                    {
                        continue;
                    }
                    break imp;
                }
            }
        };
        Ok(Impostor {
            pid: inner.pid.get(),
            start_time: inner.start_time.0,
            inner,
        })
    }

    /// Whether an impostor still runs and which signals it caught.
    pub fn impostor_report(&self, imp: &Impostor) -> Result<ImpostorReport, WorldError> {
        let signals = imp
            .inner
            .signals_received()?
            .into_iter()
            .map(|s| s.get())
            .collect();
        Ok(ImpostorReport {
            alive: imp.inner.is_alive(&self.inner),
            signals,
        })
    }

    /// Places a same-exe impostor at `replace`; when the executable does not
    /// stay up (exits at once, e.g. a shim that wants its runtime's input on
    /// stdin), places a same-argv sleeper instead. The bool says whether the
    /// fallback was taken.
    pub fn same_exe_or_argv(
        &mut self,
        replace: i32,
        exe: &str,
        argv: &[String],
    ) -> Result<(Impostor, bool), WorldError> {
        let kind = ImpostorKind::SameExe {
            exe: exe.to_string(),
            argv: argv.to_vec(),
        };
        let exited = match self.impostor(Some(replace), &kind) {
            Ok(imp) => {
                if self.impostor_exits_within(&imp, Duration::from_millis(300))? {
                    true
                } else {
                    return Ok((imp, false));
                }
            }
            Err(WorldError::Impostor(himp::ImpostorError::ExeMismatch {
                actual: None, ..
            })) => true,
            Err(e) => return Err(e),
        };
        debug_assert!(exited);
        let imp = self.impostor(
            Some(replace),
            &ImpostorKind::SameArgv {
                argv: argv.to_vec(),
            },
        )?;
        Ok((imp, true))
    }

    /// Waits up to `timeout` for an impostor to exit on its own; true if it did.
    pub fn impostor_exits_within(
        &mut self,
        imp: &Impostor,
        timeout: Duration,
    ) -> Result<bool, WorldError> {
        match self.inner.wait(imp.inner.pid, timeout) {
            Ok(_) => Ok(true),
            Err(hw::WorldError::Remote(doppel_harness::RemoteError::WaitTimedOut { .. })) => {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// How a process started by [`World::spawn`] ended: `None` while it
    /// runs. Its exit is collected (asked again, it is unknown).
    pub fn exit_of(&mut self, pid: i32) -> Result<Option<Exec>, WorldError> {
        match self.inner.wait(Pid::new(pid)?, Duration::ZERO) {
            Ok(e) => {
                let (code, signal) = match e.status {
                    ExitStatus::Exited(c) => (Some(c), None),
                    ExitStatus::Signaled(s) => (None, Some(s.get())),
                };
                Ok(Some(Exec {
                    code,
                    signal,
                    stdout: e.stdout.bytes,
                    stderr: e.stderr.bytes,
                    timed_out: false,
                }))
            }
            Err(hw::WorldError::Remote(doppel_harness::RemoteError::WaitTimedOut { .. })) => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// SIGKILLs `pid` and waits (deadline) until it is gone or a zombie.
    pub fn kill_and_wait(&mut self, pid: i32) -> Result<(), WorldError> {
        let p = Pid::new(pid)?;
        self.inner.signal(p, Signal::KILL)?;
        let gone =
            doppel_harness::poll::until(PID_FREE_DEADLINE, Duration::from_millis(2), || {
                Ok::<_, WorldError>(if self.inner.is_running(p, None) {
                    std::ops::ControlFlow::Continue(())
                } else {
                    std::ops::ControlFlow::Break(())
                })
            })?;
        gone.map_err(|()| WorldError::SurvivedKill {
            pid,
            ms: PID_FREE_DEADLINE.as_millis(),
        })
    }

    /// Starts a long-lived process (own session) and returns its world PID.
    pub fn spawn(&mut self, argv: &[String]) -> Result<i32, WorldError> {
        let (first, rest) = argv.split_first().ok_or(WorldError::EmptyArgv)?;
        let cmd = WorldCommand::new(first.clone())
            .args(rest.iter().cloned())
            .setsid(true);
        let cmd = self
            .private_env()
            .iter()
            .fold(cmd, |cmd, (k, v)| cmd.env(k.clone(), v.clone()));
        Ok(self.inner.spawn(&cmd)?.pid.get())
    }

    /// Census; `secret` marks processes whose argv or environ hold it.
    pub fn census(&mut self, secret: Option<&str>) -> Result<Census, WorldError> {
        let c = self.inner.census()?;
        let procs = c
            .processes()
            .iter()
            .filter(|p| p.stat.pid.get() != 1)
            .map(|p| Proc {
                pid: p.stat.pid.get(),
                ppid: p.stat.ppid,
                state: p.stat.state,
                cmdline: p.argv.clone(),
                exe: p.exe.clone(),
                start_time: p.stat.start_time.0,
                holds_secret: secret.is_some_and(|s| {
                    p.argv.iter().any(|a| a.contains(s)) || p.environ.iter().any(|e| e.contains(s))
                }),
            })
            .collect();
        let orphans = c
            .reaped_orphans()
            .iter()
            .map(|o| Orphan {
                pid: o.pid.get(),
                cmdline: if o.argv.is_empty() {
                    vec![o.comm.clone()]
                } else {
                    o.argv.clone()
                },
                status: format!("{:?}", o.status),
            })
            .collect();
        Ok(Census {
            procs,
            orphans,
            init_signals: c.init_signals().to_vec(),
        })
    }
}

/// Modes this binary may be re-executed in inside a world (doppel-init,
/// doppel-impostor). Returns when the process is an ordinary invocation.
pub fn dispatch_hidden_modes() {
    if let Some(out) = std::env::var_os(RUSAGE_OUT_ENV) {
        rusage_main(PathBuf::from(out));
    }
    if let Some(out) = std::env::var_os(CRASH_OUT_ENV) {
        crash_main(PathBuf::from(out));
    }
    doppel_harness::init::dispatch();
}

/// Environment variable that turns this binary into the crash wrapper: it
/// runs argv\[1..\], SIGKILLs it [`CRASH_AFTER_ENV`] µs after its exec, and
/// writes how it ended to the named file.
pub const CRASH_OUT_ENV: &str = "DOPPEL_CRASH_OUT";
/// The crash wrapper's delay in µs (`never`: only time the command).
pub const CRASH_AFTER_ENV: &str = "DOPPEL_CRASH_AFTER_US";

/// How a command run under the crash wrapper ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashEnd {
    /// The wrapper's SIGKILL ended it (it was still running at the delay).
    pub killed: bool,
    /// µs from exec to its end.
    pub elapsed_us: u64,
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal, when it was killed (by the wrapper or itself).
    pub signal: Option<i32>,
}

impl CrashEnd {
    /// Parses the wrapper's file: `killed|finished elapsed_us code|- signal|-`.
    pub fn parse(text: &str) -> Option<CrashEnd> {
        let mut it = text.split_whitespace();
        let killed = match it.next()? {
            "killed" => true,
            "finished" => false,
            _ => return None,
        };
        Some(CrashEnd {
            killed,
            elapsed_us: it.next()?.parse().ok()?,
            code: it.next()?.parse().ok(),
            signal: it.next()?.parse().ok(),
        })
    }
}

/// The crash wrapper (see [`CRASH_OUT_ENV`]). The command is our own
/// unreaped child, so its pid cannot be reused before we wait: the SIGKILL
/// can only reach it. Its children are not ours: when it dies they are
/// reparented to the world's init, as they would be after any crash.
fn crash_main(out: PathBuf) -> ! {
    use std::os::unix::process::ExitStatusExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let Some((prog, rest)) = args.split_first() else {
        std::process::exit(2);
    };
    let delay = std::env::var(CRASH_AFTER_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_micros);
    let child = std::process::Command::new(prog)
        .args(rest)
        .env_remove(CRASH_OUT_ENV)
        .env_remove(CRASH_AFTER_ENV)
        .spawn();
    let Ok(mut child) = child else {
        std::process::exit(127);
    };
    // `spawn` returns once the exec succeeded (std waits for it on a
    // close-on-exec pipe): delays count from the runtime's own start, not
    // from a fork whose duration a loaded machine stretches (a kill before
    // the exec would interrupt nothing of the runtime's).
    let start = std::time::Instant::now();
    let mut killed = false;
    if let Some(delay) = delay {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let deadline = start + delay;
        // Poll for an early end until the deadline, then kill.
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                killed = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok();
                break;
            }
            std::thread::sleep((deadline - now).min(Duration::from_micros(200)));
        }
    }
    let status = child.wait();
    let elapsed = start.elapsed().as_micros();
    let Ok(status) = status else {
        std::process::exit(1);
    };
    // It may have exited on its own just before our signal landed.
    let killed = killed && status.signal() == Some(libc_sigkill());
    let fmt = |v: Option<i32>| v.map_or("-".to_string(), |v| v.to_string());
    let _ = std::fs::write(
        &out,
        format!(
            "{} {elapsed} {} {}\n",
            if killed { "killed" } else { "finished" },
            fmt(status.code()),
            fmt(status.signal())
        ),
    );
    std::process::exit(0);
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}

/// Environment variable that turns this binary into a wrapper measuring the
/// peak RSS of the command in its argv (written to the named file).
pub const RUSAGE_OUT_ENV: &str = "DOPPEL_RUSAGE_OUT";

/// What the rusage wrapper reports about the command it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rusage {
    /// Peak resident set size, KiB.
    pub maxrss_kib: u64,
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal, when it was killed.
    pub signal: Option<i32>,
}

impl Rusage {
    /// Parses the wrapper's file: `maxrss_kib code|- signal|-`.
    pub fn parse(text: &str) -> Option<Rusage> {
        let mut it = text.split_whitespace();
        let maxrss_kib = it.next()?.parse().ok()?;
        let code = it.next()?.parse().ok();
        let signal = it.next()?.parse().ok();
        Some(Rusage {
            maxrss_kib,
            code,
            signal,
        })
    }
}

/// The rusage wrapper: runs argv\[1..\], waits, records the child's peak RSS
/// and how it ended, exits like it (128 + signal when killed).
fn rusage_main(out: PathBuf) -> ! {
    use std::os::unix::process::ExitStatusExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let Some((prog, rest)) = args.split_first() else {
        std::process::exit(2);
    };
    let status = std::process::Command::new(prog)
        .args(rest)
        .env_remove(RUSAGE_OUT_ENV)
        .status();
    let Ok(status) = status else {
        std::process::exit(127);
    };
    let maxrss = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|u| u.max_rss())
        .unwrap_or(0);
    let fmt = |v: Option<i32>| v.map_or("-".to_string(), |v| v.to_string());
    let _ = std::fs::write(
        &out,
        format!("{maxrss} {} {}\n", fmt(status.code()), fmt(status.signal())),
    );
    std::process::exit(
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rusage_lines_parse() {
        assert_eq!(
            Rusage::parse("2048 0 -\n"),
            Some(Rusage {
                maxrss_kib: 2048,
                code: Some(0),
                signal: None
            })
        );
        assert_eq!(
            Rusage::parse("10 - 9"),
            Some(Rusage {
                maxrss_kib: 10,
                code: None,
                signal: Some(9)
            })
        );
        assert_eq!(Rusage::parse("garbage"), None);
        assert_eq!(Rusage::parse(""), None);
    }

    #[test]
    fn census_lookups_tell_zombies_apart() {
        let p = |pid, state| Proc {
            pid,
            ppid: 1,
            state,
            cmdline: vec![],
            exe: None,
            start_time: 0,
            holds_secret: false,
        };
        let c = Census {
            procs: vec![p(2, 'S'), p(3, 'Z')],
            ..Census::default()
        };
        assert!(c.get(2).is_some());
        assert!(c.get(3).is_none());
        assert!(c.has(3));
        assert_eq!(c.zombies().count(), 1);
    }
}
