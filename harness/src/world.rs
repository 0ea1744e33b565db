//! Owns [`World`]: a PID + mount namespace (plus a user namespace when not
//! root) whose PID 1 is `doppel-init`, with a private /proc and a private
//! tmpfs work dir. A `World` talks to its init over a socketpair (see
//! [`crate::proto`]); every process it starts is forked by init, so it sees
//! world PIDs. Dropping a `World` SIGKILLs init through a pidfd; the kernel
//! then kills every process of the world before init's exit completes.
//!
//! Host-side file access to the work dir goes through [`crate::worldfs`]
//! (resolved beneath a dir fd, no symlinks followed): the world shares the
//! host's root filesystem, and a runtime under test may redirect its dirs.
//!
//! Depends on: `proto`, `command`, `locate`, `procfs`, `sys` (pre_exec),
//! `census`, `worldfs`.

use crate::census::Census;
use crate::command::WorldCommand;
use crate::ids::{Pid, Signal, StartTime};
use crate::locate::{self, Helper, LocateError, Program};
use crate::procfs::{ProcStat, parse_stat};
use crate::proto::{
    ExitReport, FrameError, OnTimeout, PROTOCOL_VERSION, RemoteError, Request, Response,
    SpawnedReport, read_frame, write_frame,
};
use crate::sys;
use crate::worldfs::{WorkDir, WorldPathError};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A process init started: its PID, start time and ready line.
pub type Spawned = SpawnedReport;
/// How a process init started ended, with its captured output.
pub type Exit = ExitReport;

/// Extra time allowed on the control channel beyond a request's own deadline.
const CONTROL_SLACK: Duration = Duration::from_secs(10);
/// Default number of same-tick attempts.
pub const DEFAULT_SAME_TICK_ATTEMPTS: u32 = 20;

/// How to open a world.
#[derive(Debug, Clone)]
pub struct WorldOptions {
    /// Path of `doppel-init` (else found by [`crate::locate`]).
    pub init_program: Option<PathBuf>,
    /// Path of `doppel-impostor` (else found by [`crate::locate`]).
    pub impostor_program: Option<PathBuf>,
    /// `umount -l /sys/fs/cgroup/unified` in the world (crun on hybrid
    /// cgroup hosts wants it gone).
    pub unmount_cgroup_unified: bool,
    /// The world's own pid_max (Linux 6.14+, where pid_max is per PID
    /// namespace; refused on older kernels, where it would be global).
    /// Without it a world gets the kernel's default for a new namespace,
    /// which need not be the host's value (4194304 on Linux 6.18 here, with
    /// the host at 32768): pass it explicitly when the number matters.
    pub pid_max: Option<i32>,
    /// Deadline for init to report Ready.
    pub open_timeout: Duration,
    /// Place PIDs through `ns_last_pid` even where clone3 `set_tid` works
    /// (to exercise the fallback).
    pub force_ns_last_pid: bool,
    /// Share the host's network namespace. By default a world gets one of
    /// its own with only loopback (up), so abstract unix sockets and ports
    /// named after box ids cannot collide between parallel worlds; where
    /// this machine cannot make one ([`crate::Capabilities::netns`]) the
    /// world shares the host's and [`World::own_network`] says so.
    pub host_network: bool,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            init_program: None,
            impostor_program: None,
            unmount_cgroup_unified: false,
            pid_max: None,
            open_timeout: Duration::from_secs(10),
            force_ns_last_pid: false,
            host_network: false,
        }
    }
}

/// A path argument that would leave the world's work dir.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("path {path:?} is not inside the world (must be relative, without `..`)")]
pub struct PathOutsideWorld {
    /// The rejected path.
    pub path: PathBuf,
}

/// Errors of [`World`] operations.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// doppel-init (or doppel-impostor) was not found, or the path given
    /// for it is not an executable file.
    #[error(transparent)]
    Helper(#[from] LocateError),
    /// The host-side work dir could not be created or removed.
    #[error("work dir {path:?}")]
    Workdir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The control socketpair could not be created.
    #[error("control socketpair")]
    Socket(#[source] std::io::Error),
    /// doppel-init could not be started.
    #[error("starting {path:?}")]
    StartInit {
        /// The program.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Init reported a failure while setting up the namespaces.
    #[error("world setup failed")]
    Setup(#[source] RemoteError),
    /// The control channel failed (init died, timed out, or sent garbage).
    /// The world is unusable afterwards.
    #[error("control channel to init")]
    Control(#[source] FrameError),
    /// The doppel-init found speaks another protocol version (a stale build).
    #[error(
        "{path:?} speaks control protocol {init}, this harness {harness}: rebuild it (`cargo build --workspace`)"
    )]
    ProtocolMismatch {
        /// The init program.
        path: PathBuf,
        /// Its version.
        init: u32,
        /// Ours.
        harness: u32,
    },
    /// An earlier control failure left the channel out of step.
    #[error("world is broken by an earlier control channel failure")]
    Broken,
    /// Init answered with a response of the wrong kind.
    #[error("init sent an unexpected response to {request}")]
    UnexpectedResponse {
        /// The request kind.
        request: &'static str,
    },
    /// Init refused or failed the request (typed: PidTaken, PidOutOfRange, ...).
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The process at init's reported PID is not the stub's child, so a
    /// pidfd for that PID would not be ours to SIGKILL (it died and the PID
    /// was reused, or init reported a wrong PID).
    #[error(
        "init pid {pid} is not the child of doppel-init's stub (pid {stub}); its parent is {parent:?}"
    )]
    InitNotStubChild {
        /// The PID init reported (harness namespace).
        pid: Pid,
        /// The stub's PID.
        stub: u32,
        /// The parent found in `/proc/<pid>/stat` (`None`: unreadable, e.g. gone).
        parent: Option<i32>,
    },
    /// Init did not exit within the deadline after SIGKILL at close.
    #[error("init pid {pid} still running {waited:?} after SIGKILL")]
    InitDidNotExit {
        /// init's outer PID.
        pid: Pid,
        /// How long the harness waited.
        waited: Duration,
    },
    /// A pidfd operation on init failed.
    #[error("pidfd for init pid {pid}")]
    Pidfd {
        /// init's outer PID.
        pid: Pid,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A path argument would leave the world.
    #[error(transparent)]
    PathOutsideWorld(#[from] PathOutsideWorld),
    /// Host-side access to a world path failed or was refused (a symlinked
    /// component, a non-regular file, ...).
    #[error(transparent)]
    Path(#[from] WorldPathError),
    /// No such world process (reading its /proc entry failed).
    #[error("no process {pid} in the world")]
    NoSuchProcess {
        /// The PID.
        pid: Pid,
    },
}

impl WorldError {
    /// The typed error init reported, if this is one.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            WorldError::Remote(r) | WorldError::Setup(r) => Some(r),
            _ => None,
        }
    }
}

/// What happened to a crash-injected process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrashOutcome {
    /// Init SIGKILLed it at the delay.
    Killed(Exit),
    /// It ended on its own before the delay.
    ExitedFirst(Exit),
}

/// A same-tick staging: the impostor holds the victim's PID *and* start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SameTickStaged {
    /// The shared PID.
    pub pid: Pid,
    /// The victim's start time (equal to the impostor's).
    pub victim_start: StartTime,
    /// The impostor.
    pub impostor: Spawned,
    /// Attempts used (1-based).
    pub attempts: u32,
}

/// A replacement placed at a killed victim's PID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    /// The victim's start time before the kill, when it was readable.
    pub victim_start: Option<StartTime>,
    /// The impostor.
    pub impostor: Spawned,
}

impl Replacement {
    /// True when the impostor's start time equals the victim's (same tick).
    pub fn same_tick(&self) -> bool {
        self.victim_start == Some(self.impostor.start_time)
    }
}

/// A process placed by natural PID wraparound (the slow way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped {
    /// The placed process.
    pub spawned: Spawned,
    /// Throwaway forks it took.
    pub forks: u64,
}

/// A world. See the module docs.
#[derive(Debug)]
pub struct World {
    control: Mutex<UnixStream>,
    broken: AtomicBool,
    stub: Option<Child>,
    stub_pidfd: Option<OwnedFd>,
    init_pidfd: Option<OwnedFd>,
    init_outer: Pid,
    pid_max: i32,
    userns: bool,
    set_tid: bool,
    own_network: bool,
    pid_ns_inode: u64,
    workdir: PathBuf,
    host_root: PathBuf,
    files: WorkDir,
    pub(crate) impostor_program: Result<Program, LocateError>,
    pub(crate) seq: std::sync::atomic::AtomicU64,
}

/// Milliseconds of `d`, saturating (a `Duration::MAX` deadline is fine).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The name prefix of a world's work dir on the host (in the temp dir):
/// `doppel-world-<pid of the process that opened it>-<8 hex digits>`.
pub const WORKDIR_PREFIX: &str = "doppel-world-";

/// The pid in a world work dir's name, if `name` is one.
fn workdir_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(WORKDIR_PREFIX)?;
    let (pid, hex) = rest.split_once('-')?;
    (hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(())?;
    pid.parse().ok()
}

/// Removes the (empty) world work dirs that processes matching `whose`
/// (given the pid in the name) left in the temp dir; returns those removed.
/// On the host a work dir is always empty (the world's tmpfs is mounted in
/// the world's own mount namespace), so only empty dirs are removed.
fn remove_workdirs(whose: impl Fn(u32) -> bool) -> Vec<PathBuf> {
    let base = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&base) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(workdir_owner)
                .is_some_and(&whose)
        })
        .map(|e| e.path())
        .filter(|p| std::fs::remove_dir(p).is_ok())
        .collect()
}

/// Held while a work dir is made; `true` once this process is about to
/// exit without dropping its worlds (no world opens after that).
static WORKDIRS: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

/// For a process about to exit without dropping its worlds (a signal
/// handler's path; the worlds' inits end when this process's control
/// sockets close): waits for a work dir being made, refuses every later
/// [`World::open`], and removes the work dirs of the worlds this process
/// opened. Returns those removed. The lock stays held until the process
/// exits, so no thread makes a dir between this and the exit.
pub fn close_for_exit() -> Vec<PathBuf> {
    let mut closing = WORKDIRS.lock().unwrap_or_else(|p| p.into_inner());
    *closing = true;
    let me = std::process::id();
    let removed = remove_workdirs(|pid| pid == me);
    std::mem::forget(closing);
    removed
}

/// Removes the work dirs that processes which are gone left behind (one
/// SIGKILLed while its worlds were open); a dir whose pid is alive (its
/// owner, or a process that took the pid since) is left alone.
pub fn remove_stale_workdirs() -> Vec<PathBuf> {
    let me = std::process::id();
    remove_workdirs(|pid| pid != me && !Path::new(&format!("/proc/{pid}")).exists())
}

fn make_workdir() -> Result<PathBuf, WorldError> {
    // Canonical, so that the work dir can later be opened without following
    // any symlink (see `WorkDir::open`) even where $TMPDIR is one.
    let base = std::env::temp_dir();
    let base = std::fs::canonicalize(&base).map_err(|e| WorldError::Workdir {
        path: base,
        source: e,
    })?;
    let mut last_err = None;
    for _ in 0..16 {
        let name = format!(
            "{WORKDIR_PREFIX}{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let p = base.join(name);
        // Under the lock: a `close_for_exit` (a process exiting on a
        // signal) sees every dir made, and none is made after it.
        let closing = WORKDIRS.lock().unwrap_or_else(|p| p.into_inner());
        if *closing {
            return Err(WorldError::Workdir {
                path: p,
                source: std::io::Error::other("the process is exiting"),
            });
        }
        match std::fs::DirBuilder::new().mode(0o755).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(WorldError::Workdir { path: p, source: e }),
        }
    }
    Err(WorldError::Workdir {
        path: base,
        source: last_err.unwrap_or_else(|| std::io::Error::other("no free name")),
    })
}

/// Polls `fd` readable (a pidfd: the process exited) until `deadline`.
fn wait_readable(fd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(Instant::now);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    let p = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).map_err(Into::into)
}

impl World {
    /// Opens a world (see the module docs). Fails with a typed error when
    /// doppel-init is missing or a namespace step is refused.
    pub fn open(opts: WorldOptions) -> Result<World, WorldError> {
        let init = locate::find(Helper::Init, opts.init_program.as_deref())?;
        let impostor_program = locate::find(Helper::Impostor, opts.impostor_program.as_deref());
        let workdir = make_workdir()?;
        match Self::start(&opts, &init, workdir.clone(), impostor_program) {
            Ok(w) => Ok(w),
            Err(e) => {
                let _ = std::fs::remove_dir(&workdir);
                Err(e)
            }
        }
    }

    fn start(
        opts: &WorldOptions,
        init: &Program,
        workdir: PathBuf,
        impostor_program: Result<Program, LocateError>,
    ) -> Result<World, WorldError> {
        let (mut ours, theirs) = UnixStream::pair().map_err(WorldError::Socket)?;
        let mut cmd = Command::new(&init.path);
        cmd.args(&init.prefix_args)
            .arg("--control-fd")
            .arg("3")
            .arg("--workdir")
            .arg(&workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if opts.unmount_cgroup_unified {
            cmd.arg("--unmount-cgroup-unified");
        }
        if opts.force_ns_last_pid {
            cmd.arg("--no-set-tid");
        }
        let own_network = !opts.host_network && crate::Capabilities::detect().netns.is_available();
        if !own_network {
            cmd.arg("--host-network");
        }
        if let Some(m) = opts.pid_max {
            cmd.arg("--pid-max").arg(m.to_string());
        }
        sys::command_with_fd3(&mut cmd, theirs.as_raw_fd());
        let mut stub = cmd.spawn().map_err(|e| WorldError::StartInit {
            path: init.path.clone(),
            source: e,
        })?;
        drop(theirs);
        let stub_pidfd = pidfd_open(stub.id() as i32).ok();
        let fail = |stub: &mut Child, e: WorldError| {
            let _ = stub.kill();
            let _ = stub.wait();
            e
        };
        if let Err(e) = ours.set_read_timeout(Some(opts.open_timeout)) {
            return Err(fail(&mut stub, WorldError::Socket(e)));
        }
        let ready = match read_frame::<Response>(&mut ours) {
            Ok(r) => r,
            Err(e) => return Err(fail(&mut stub, WorldError::Control(e))),
        };
        let (outer, pid_max, userns, set_tid) = match ready {
            Response::Ready {
                protocol,
                outer_pid,
                pid_max,
                userns,
                set_tid,
            } => {
                if protocol != PROTOCOL_VERSION {
                    return Err(fail(
                        &mut stub,
                        WorldError::ProtocolMismatch {
                            path: init.path.clone(),
                            init: protocol,
                            harness: PROTOCOL_VERSION,
                        },
                    ));
                }
                (outer_pid, pid_max, userns, set_tid)
            }
            Response::SetupFailed(e) => return Err(fail(&mut stub, WorldError::Setup(e))),
            _ => {
                return Err(fail(
                    &mut stub,
                    WorldError::UnexpectedResponse { request: "open" },
                ));
            }
        };
        let init_pidfd = match pidfd_open(outer.get()) {
            Ok(fd) => fd,
            Err(e) => {
                return Err(fail(
                    &mut stub,
                    WorldError::Pidfd {
                        pid: outer,
                        source: e,
                    },
                ));
            }
        };
        // The pidfd is for our init only if its parent is still our stub
        // (which cannot exit, and so cannot let the PID be reused, before
        // init does).
        let parent = std::fs::read(format!("/proc/{outer}/stat"))
            .ok()
            .and_then(|b| parse_stat(&b).ok())
            .map(|s| s.ppid);
        if parent != Some(stub.id() as i32) {
            let stub_pid = stub.id();
            return Err(fail(
                &mut stub,
                WorldError::InitNotStubChild {
                    pid: outer,
                    stub: stub_pid,
                    parent,
                },
            ));
        }
        let host_root = PathBuf::from(format!("/proc/{outer}/root"));
        // Opened now, before any world process runs: nothing in the world can
        // have redirected the path yet.
        let files = match WorkDir::open(&host_root, &workdir) {
            Ok(f) => f,
            Err(e) => {
                return Err(fail(
                    &mut stub,
                    WorldError::Workdir {
                        path: workdir,
                        source: e,
                    },
                ));
            }
        };
        let pid_ns_inode = std::fs::metadata(format!("/proc/{outer}/ns/pid"))
            .map(|m| m.ino())
            .unwrap_or(0);
        Ok(World {
            control: Mutex::new(ours),
            broken: AtomicBool::new(false),
            stub: Some(stub),
            stub_pidfd,
            init_pidfd: Some(init_pidfd),
            init_outer: outer,
            pid_max,
            userns,
            set_tid,
            own_network,
            pid_ns_inode,
            host_root,
            files,
            workdir,
            impostor_program,
            seq: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Sends one request and reads its response. `Failed` becomes
    /// [`WorldError::Remote`].
    pub(crate) fn request(&self, req: &Request, budget: Duration) -> Result<Response, WorldError> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(WorldError::Broken);
        }
        let mut s = self
            .control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let r = (|| {
            s.set_read_timeout(Some(budget.saturating_add(CONTROL_SLACK)))
                .map_err(|e| WorldError::Control(FrameError::Io(e)))?;
            write_frame(&mut *s, req).map_err(WorldError::Control)?;
            read_frame::<Response>(&mut *s).map_err(WorldError::Control)
        })();
        match r {
            Ok(Response::Failed(e)) => Err(WorldError::Remote(e)),
            Ok(r) => Ok(r),
            Err(e) => {
                self.broken.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Starts `cmd` in the world; returns once it exec'd (and, with
    /// `ready_fd`, signalled ready).
    pub fn spawn(&self, cmd: &WorldCommand) -> Result<Spawned, WorldError> {
        self.spawn_spec(cmd.to_spec(None, None))
    }

    /// Starts `cmd` at exactly `pid` (clone3 `set_tid`, else `ns_last_pid`),
    /// verified. Typed errors: `PidTaken`, `PidOutOfRange` (valid PIDs are
    /// `2..pid_max`). With `set_tid` the kernel's PID counter does not move.
    pub fn spawn_at(&self, pid: Pid, cmd: &WorldCommand) -> Result<Spawned, WorldError> {
        self.spawn_spec(cmd.to_spec(Some(pid), None))
    }

    fn spawn_spec(&self, spec: crate::proto::SpawnSpec) -> Result<Spawned, WorldError> {
        let budget = if spec.ready_fd {
            Duration::from_millis(spec.ready_timeout_ms)
        } else {
            Duration::ZERO
        };
        match self.request(&Request::Spawn(spec), budget)? {
            Response::Spawned(s) => Ok(s),
            _ => Err(WorldError::UnexpectedResponse { request: "spawn" }),
        }
    }

    fn wait_with(&self, pid: Pid, timeout: Duration, on: OnTimeout) -> Result<Exit, WorldError> {
        let req = Request::Wait {
            pid,
            timeout_ms: millis(timeout),
            on_timeout: on,
        };
        match self.request(&req, timeout)? {
            Response::Exited(e) => Ok(e),
            _ => Err(WorldError::UnexpectedResponse { request: "wait" }),
        }
    }

    /// Waits up to `timeout` for a process init spawned to exit. At the
    /// deadline: `Remote(WaitTimedOut)`, and the process keeps running.
    pub fn wait(&self, pid: Pid, timeout: Duration) -> Result<Exit, WorldError> {
        self.wait_with(pid, timeout, OnTimeout::Report)
    }

    /// Like [`World::wait`], but SIGKILLs the process at the deadline and
    /// reports its end (`killed_on_timeout` set).
    pub fn wait_or_kill(&self, pid: Pid, timeout: Duration) -> Result<Exit, WorldError> {
        self.wait_with(pid, timeout, OnTimeout::Kill)
    }

    /// Spawns `cmd` and waits for it (killing it at `timeout`).
    pub fn run(&self, cmd: &WorldCommand, timeout: Duration) -> Result<Exit, WorldError> {
        let s = self.spawn(cmd)?;
        self.wait_or_kill(s.pid, timeout)
    }

    /// Crash injection: runs `cmd` and has init SIGKILL it `after` its start,
    /// then waits (up to `after + timeout`) and says which came first.
    pub fn crash(
        &self,
        cmd: &WorldCommand,
        after: Duration,
        timeout: Duration,
    ) -> Result<CrashOutcome, WorldError> {
        let s = self.spawn_spec(cmd.to_spec(None, Some(after)))?;
        let exit = self.wait_or_kill(s.pid, after.saturating_add(timeout))?;
        Ok(if exit.killed_by_timer {
            CrashOutcome::Killed(exit)
        } else {
            CrashOutcome::ExitedFirst(exit)
        })
    }

    /// Sends `signal` to world process `pid`.
    pub fn signal(&self, pid: Pid, signal: Signal) -> Result<(), WorldError> {
        match self.request(&Request::Signal { pid, signal }, Duration::ZERO)? {
            Response::Signaled => Ok(()),
            _ => Err(WorldError::UnexpectedResponse { request: "signal" }),
        }
    }

    /// Lists every process of the world (read by init from its /proc), the
    /// orphans init reaped so far and the signals world processes sent to
    /// init. Environ is capped at 64 KiB a process.
    pub fn census(&self) -> Result<Census, WorldError> {
        match self.request(
            &Request::Census {
                environ_cap: 64 << 10,
            },
            Duration::from_secs(5),
        )? {
            Response::Census {
                processes,
                reaped_orphans,
                init_signals,
                init_signals_dropped,
            } => Ok(Census::new(processes, reaped_orphans)
                .with_init_signals(init_signals, init_signals_dropped)),
            _ => Err(WorldError::UnexpectedResponse { request: "census" }),
        }
    }

    /// Same-tick staging, all inside init in one request: spawn `victim`,
    /// SIGKILL and reap it, place `impostor` at its PID, compare start times;
    /// retried up to `max_attempts`, else `Remote(NotStaged)`.
    pub fn stage_same_tick(
        &self,
        victim: &WorldCommand,
        impostor: &WorldCommand,
        max_attempts: u32,
    ) -> Result<SameTickStaged, WorldError> {
        let req = Request::SameTick {
            victim: victim.to_spec(None, None),
            impostor: impostor.to_spec(None, None),
            max_attempts,
        };
        let per = impostor
            .to_spec(None, None)
            .ready_timeout_ms
            .max(victim.to_spec(None, None).ready_timeout_ms);
        let budget = Duration::from_millis(per.saturating_mul(u64::from(max_attempts) * 2));
        match self.request(&req, budget)? {
            Response::SameTickStaged {
                pid,
                victim_start,
                impostor,
                attempts,
            } => Ok(SameTickStaged {
                pid,
                victim_start,
                impostor,
                attempts,
            }),
            _ => Err(WorldError::UnexpectedResponse {
                request: "same tick",
            }),
        }
    }

    /// Kills `victim` (any world process), waits up to `timeout` for its PID
    /// to be free, and places `impostor` there. Reports both start times.
    pub fn replace(
        &self,
        victim: Pid,
        impostor: &WorldCommand,
        timeout: Duration,
    ) -> Result<Replacement, WorldError> {
        let req = Request::Replace {
            victim,
            impostor: impostor.to_spec(None, None),
            timeout_ms: millis(timeout),
        };
        let budget = timeout.saturating_add(Duration::from_millis(
            impostor.to_spec(None, None).ready_timeout_ms,
        ));
        match self.request(&req, budget)? {
            Response::Replaced {
                victim_start,
                impostor,
            } => Ok(Replacement {
                victim_start,
                impostor,
            }),
            _ => Err(WorldError::UnexpectedResponse { request: "replace" }),
        }
    }

    /// Places `cmd` at `pid` the slow way: fork-and-exit until the PID
    /// counter comes round (for benchmarks; `spawn_at` is the fast way).
    /// Gives up (`Remote(NotStaged)`) after `max_forks` (default 2 × pid_max).
    ///
    /// The kernel's PID counter only moves on ordinary forks: a victim placed
    /// with [`World::spawn_at`] leaves it where it was, so a later wraparound
    /// may reach the victim's PID without going round. To measure a full
    /// round, have the victim born by the counter (place it with this method,
    /// or spawn it normally), then let it die. After a wrap the kernel
    /// restarts at 300, so PIDs below 300 are never reached again.
    pub fn place_by_wraparound(
        &self,
        pid: Pid,
        cmd: &WorldCommand,
        max_forks: Option<u64>,
    ) -> Result<Wrapped, WorldError> {
        let max_forks = max_forks.unwrap_or(2 * self.pid_max.max(0) as u64);
        let req = Request::PlaceByWraparound {
            spec: cmd.to_spec(Some(pid), None),
            max_forks,
        };
        // Generous: ~1 ms per fork is far slower than any machine we run on.
        let budget = Duration::from_millis(max_forks);
        match self.request(&req, budget)? {
            Response::Wrapped { spawned, forks } => Ok(Wrapped { spawned, forks }),
            _ => Err(WorldError::UnexpectedResponse {
                request: "wraparound",
            }),
        }
    }

    /// Reads `/proc/PID/stat` of a world process (from outside, through
    /// init's root), without a round trip to init.
    pub fn proc_stat(&self, pid: Pid) -> Result<ProcStat, WorldError> {
        let path = self.host_root.join(format!("proc/{pid}/stat"));
        std::fs::read(path)
            .ok()
            .and_then(|b| parse_stat(&b).ok())
            .ok_or(WorldError::NoSuchProcess { pid })
    }

    /// True when `pid` is alive (not a zombie) and, if given, still has
    /// `start_time` (so a reused PID does not count).
    pub fn is_running(&self, pid: Pid, start_time: Option<StartTime>) -> bool {
        self.proc_stat(pid)
            .is_ok_and(|s| !s.is_zombie() && start_time.is_none_or(|t| t == s.start_time))
    }

    /// The world's work dir as a path *inside* the world (a private tmpfs).
    pub fn root(&self) -> &Path {
        &self.workdir
    }

    /// Where a path relative to [`World::root`] is reachable from the host
    /// (through `/proc/<init>/root`). Absolute or `..` paths are refused, and
    /// so is a path whose existing parent directories include a symlink or a
    /// non-directory ([`WorldPathError::Redirected`]); the final component
    /// may be anything (a planted symlink, say).
    ///
    /// The check is made now: a world process can still swap a directory
    /// for a symlink before the caller uses the path. To write, or to read
    /// what a runtime controls, use [`World::write_file`],
    /// [`World::read_file`], [`World::create_dir_all`] or
    /// [`World::plant`], which act through directory fds and never follow.
    pub fn host_path(&self, rel: impl AsRef<Path>) -> Result<PathBuf, WorldPathError> {
        let rel = rel.as_ref();
        self.files.check_parents(rel)?;
        Ok(self.host_root_dir().join(rel))
    }

    /// Writes `bytes` to `rel` (relative to [`World::root`]), creating or
    /// truncating it. The parent must exist; no symlink is followed, the
    /// final component included, and a non-regular file there is refused.
    pub fn write_file(&self, rel: impl AsRef<Path>, bytes: &[u8]) -> Result<(), WorldPathError> {
        self.files.write(rel.as_ref(), bytes)
    }

    /// Reads the regular file `rel` (relative to [`World::root`]), at most
    /// `cap` bytes, without following any symlink and without blocking on
    /// a FIFO.
    pub fn read_file(&self, rel: impl AsRef<Path>, cap: u64) -> Result<Vec<u8>, WorldPathError> {
        self.files.read(rel.as_ref(), cap)
    }

    /// Removes whatever is at `rel` (relative to [`World::root`]) beneath
    /// its parent's fd, nothing followed (a lost record: a daemon's pid
    /// file, a box's state). Nothing there is fine.
    pub fn remove(&self, rel: impl AsRef<Path>) -> Result<(), WorldPathError> {
        let p = self.files.parent(rel.as_ref(), false)?;
        self.files.remove(&p)
    }

    /// `mkdir -p` of `rel` (relative to [`World::root`]), refusing to go
    /// through a symlink.
    pub fn create_dir_all(&self, rel: impl AsRef<Path>) -> Result<(), WorldPathError> {
        self.files.create_dir_all(rel.as_ref()).map(drop)
    }

    /// The work dir, held open by fd (for plants).
    pub(crate) fn files(&self) -> &WorkDir {
        &self.files
    }

    /// The world-inner absolute path of `rel` (checked like [`World::host_path`]).
    pub fn world_path(&self, rel: impl AsRef<Path>) -> Result<PathBuf, PathOutsideWorld> {
        let rel = rel.as_ref();
        check_relative(rel)?;
        Ok(self.workdir.join(rel))
    }

    /// Host path of the work dir.
    pub fn host_root_dir(&self) -> PathBuf {
        let inner = self.workdir.strip_prefix("/").unwrap_or(&self.workdir);
        self.host_root.join(inner)
    }

    /// Host path of the world's root directory (`/proc/<init>/root`), for
    /// reaching world paths outside the work dir (e.g. its /proc).
    pub fn host_root(&self) -> &Path {
        &self.host_root
    }

    /// The world's pid_max (PIDs are `2..pid_max`).
    pub fn pid_max(&self) -> i32 {
        self.pid_max
    }

    /// init's PID as seen from the harness.
    pub fn init_outer_pid(&self) -> Pid {
        self.init_outer
    }

    /// Inode of the world's PID namespace (`/proc/<init>/ns/pid`).
    pub fn pid_ns_inode(&self) -> u64 {
        self.pid_ns_inode
    }

    /// True when the world runs in its own user namespace (harness not root).
    pub fn in_user_namespace(&self) -> bool {
        self.userns
    }

    /// True when the world has a network namespace of its own (loopback
    /// only), false when it shares the host's (see
    /// [`WorldOptions::host_network`]).
    pub fn own_network(&self) -> bool {
        self.own_network
    }

    /// True when init places PIDs with clone3 `set_tid` (else `ns_last_pid`).
    pub fn uses_set_tid(&self) -> bool {
        self.set_tid
    }

    /// Closes the world: SIGKILL init (the kernel kills everything in it),
    /// wait for it and the stub, remove the work dir. Drop does the same and
    /// ignores errors.
    pub fn close(mut self) -> Result<(), WorldError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), WorldError> {
        let mut first_err = None;
        if let Some(pidfd) = self.init_pidfd.take() {
            let _ = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
            let waited = Duration::from_secs(10);
            if !wait_readable(&pidfd, waited) {
                first_err.get_or_insert(WorldError::InitDidNotExit {
                    pid: self.init_outer,
                    waited,
                });
            }
        }
        if let Some(mut stub) = self.stub.take() {
            let exited = self
                .stub_pidfd
                .take()
                .is_none_or(|fd| wait_readable(&fd, Duration::from_secs(10)));
            if !exited {
                let _ = stub.kill();
            }
            let _ = stub.wait();
        }
        if self.workdir.as_os_str().is_empty() {
            return first_err.map_or(Ok(()), Err);
        }
        let wd = std::mem::take(&mut self.workdir);
        // On the host the tmpfs was never mounted: the dir is empty.
        if let Err(e) = std::fs::remove_dir(&wd) {
            if e.kind() != std::io::ErrorKind::NotFound {
                let _ = std::fs::remove_dir_all(&wd);
                first_err.get_or_insert(WorldError::Workdir {
                    path: wd,
                    source: e,
                });
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Checks that `rel` is relative and has no `..` (nor root/prefix) component.
pub fn check_relative(rel: &Path) -> Result<(), PathOutsideWorld> {
    let ok = !rel.as_os_str().is_empty()
        && rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(())
    } else {
        Err(PathOutsideWorld {
            path: rel.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdir_names_give_their_owner() {
        assert_eq!(workdir_owner("doppel-world-4242-0badf00d"), Some(4242));
        assert_eq!(workdir_owner("doppel-world-4242-0badf00"), None);
        assert_eq!(workdir_owner("doppel-world-x-0badf00d"), None);
        assert_eq!(workdir_owner("doppel-world-4242-0badf00g"), None);
        assert_eq!(workdir_owner("other-4242-0badf00d"), None);
    }

    #[test]
    fn relative_paths_only() {
        assert!(check_relative(Path::new("a/b")).is_ok());
        assert!(check_relative(Path::new("./a")).is_ok());
        assert!(check_relative(Path::new("/etc/passwd")).is_err());
        assert!(check_relative(Path::new("a/../../x")).is_err());
        assert!(check_relative(Path::new("..")).is_err());
        assert!(check_relative(Path::new("")).is_err());
    }
}
