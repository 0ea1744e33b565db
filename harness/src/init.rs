//! Owns `doppel-init`: the program that becomes PID 1 of a world.
//!
//! Started by [`crate::world::World::open`] as `doppel-init --control-fd 3
//! --workdir DIR`. It runs in two processes:
//!
//! * the **stub** (the harness's child): creates a user namespace when not
//!   root, unshares the PID and mount namespaces, forks, closes its copy of the
//!   control socket and waits for its child;
//! * **init** (the stub's child, PID 1 of the new PID namespace): mounts a
//!   private /proc and a tmpfs on the work dir, sends `Ready`, then serves
//!   requests ([`crate::proto::Request`]) and reaps every child, recording the
//!   orphans it did not spawn and every catchable signal a world process
//!   sends it (with the sender, from the signalfd's siginfo), so that a
//!   runtime signalling PID 1 is seen although init survives it. EOF on the control socket ends init, and with
//!   it (kernel rule for a PID namespace's init) every process of the world.
//!
//! `doppel-init --probe` instead tries the namespace steps in a throwaway
//! child and prints a [`ProbeReport`] as JSON (see [`crate::caps`]).
//!
//! Depends on: `sys` (fork/clone3/exec), `proto`, `procfs`, `ids`.

use crate::ids::{Pid, Signal, StartTime};
use crate::procfs::{self, parse_stat, split_nul};
use crate::proto::{
    BadRequestReason, Captured, EnvSpec, ExitReport, ExitStatus, InitSignal, OnTimeout,
    ProcessRecord, ReapedOrphan, RemoteError, Request, Response, SpawnSpec, SpawnedReport,
    read_frame, write_frame,
};
use crate::sys;
use nix::sys::signal::{SigmaskHow, Signal as NixSignal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `argv[1]` that makes [`dispatch`] run doppel-init in the current executable.
pub const INIT_DISPATCH_ARG: &str = "__doppel-init";
/// `argv[1]` that makes [`dispatch`] run the impostor in the current executable.
pub const IMPOSTOR_DISPATCH_ARG: &str = "__doppel-impostor";
/// Bytes of captured stdout/stderr returned per stream.
pub const OUTPUT_CAP: usize = 1 << 20;
/// Name of init's private directory under the work dir (stdio files).
pub const PRIVATE_DIR: &str = ".doppel-init";

static DISPATCHED: AtomicBool = AtomicBool::new(false);

/// Lets any executable serve as doppel-init and doppel-impostor.
///
/// Call it first thing in `main` (before spawning threads). If the process was
/// started as init or as an impostor it runs that role and exits; otherwise it
/// returns and records that the current executable can be re-executed in those
/// roles, which [`crate::locate`] then prefers over looking for sibling
/// binaries. Useful for `harness = false` test and bench targets.
pub fn dispatch() {
    if std::env::var_os(crate::impostor::MODE_ENV).is_some() {
        std::process::exit(crate::impostor::run_from_env());
    }
    let mut args = std::env::args_os();
    let _argv0 = args.next();
    match args.next() {
        Some(a) if a == INIT_DISPATCH_ARG => std::process::exit(main(args)),
        Some(a) if a == IMPOSTOR_DISPATCH_ARG => std::process::exit(crate::impostor::main(args)),
        _ => DISPATCHED.store(true, Ordering::Relaxed),
    }
}

/// True when [`dispatch`] ran in this process and returned.
pub fn dispatched() -> bool {
    DISPATCHED.load(Ordering::Relaxed)
}

/// Parsed command line of doppel-init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitMode {
    /// Start a world.
    World(WorldArgs),
    /// Print a [`ProbeReport`].
    Probe,
}

/// Arguments of a world's init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldArgs {
    /// The inherited control socket.
    pub control_fd: i32,
    /// The work dir (a tmpfs is mounted on it inside the world).
    pub workdir: PathBuf,
    /// `umount -l /sys/fs/cgroup/unified` inside the world.
    pub unmount_cgroup_unified: bool,
    /// Set the world's pid_max (kernel 6.14+ only).
    pub pid_max: Option<i32>,
    /// Place PIDs with ns_last_pid even where clone3 set_tid works.
    pub no_set_tid: bool,
    /// Share the host's network namespace instead of a new one with only
    /// loopback (`--host-network`).
    pub host_network: bool,
}

/// A bad doppel-init command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitArgsError {
    /// An argument doppel-init does not know.
    #[error("unknown argument {arg:?}")]
    Unknown {
        /// The argument.
        arg: String,
    },
    /// An option without its value, or a value that does not parse.
    #[error("option {option} needs a valid value")]
    BadValue {
        /// The option.
        option: &'static str,
    },
    /// `--control-fd` or `--workdir` missing.
    #[error("missing {option}")]
    Missing {
        /// The option.
        option: &'static str,
    },
}

/// Parses doppel-init's arguments (without argv\[0\]).
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<InitMode, InitArgsError> {
    let mut control_fd = None;
    let mut workdir = None;
    let mut unmount = false;
    let mut pid_max = None;
    let mut host_network = false;
    let mut no_set_tid = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let a = a.to_string_lossy().into_owned();
        match a.as_str() {
            "--probe" => return Ok(InitMode::Probe),
            "--control-fd" => {
                control_fd = Some(
                    it.next()
                        .and_then(|v| v.to_str().and_then(|s| s.parse().ok()))
                        .ok_or(InitArgsError::BadValue {
                            option: "--control-fd",
                        })?,
                )
            }
            "--workdir" => {
                workdir = Some(PathBuf::from(it.next().ok_or(InitArgsError::BadValue {
                    option: "--workdir",
                })?))
            }
            "--pid-max" => {
                pid_max = Some(
                    it.next()
                        .and_then(|v| v.to_str().and_then(|s| s.parse().ok()))
                        .ok_or(InitArgsError::BadValue {
                            option: "--pid-max",
                        })?,
                )
            }
            "--unmount-cgroup-unified" => unmount = true,
            "--no-set-tid" => no_set_tid = true,
            "--host-network" => host_network = true,
            _ => return Err(InitArgsError::Unknown { arg: a }),
        }
    }
    Ok(InitMode::World(WorldArgs {
        control_fd: control_fd.ok_or(InitArgsError::Missing {
            option: "--control-fd",
        })?,
        workdir: workdir.ok_or(InitArgsError::Missing {
            option: "--workdir",
        })?,
        unmount_cgroup_unified: unmount,
        pid_max,
        no_set_tid,
        host_network,
    }))
}

/// doppel-init's main: parses `args` (without argv\[0\]) and runs; returns the
/// process exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    match parse_args(args) {
        Ok(InitMode::Probe) => {
            let report = probe();
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            0
        }
        Ok(InitMode::World(w)) => run_stub(w),
        Err(e) => {
            eprintln!("doppel-init: {e}");
            2
        }
    }
}

fn errno_of(e: nix::Error) -> i32 {
    e as i32
}

fn sys_err(op: &str, errno: i32) -> RemoteError {
    RemoteError::Sys {
        op: op.to_string(),
        errno,
    }
}

fn io_err(op: &str, e: &std::io::Error) -> RemoteError {
    sys_err(op, e.raw_os_error().unwrap_or(libc::EIO))
}

fn setup_userns() -> Result<(), RemoteError> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| sys_err("unshare(CLONE_NEWUSER)", errno_of(e)))?;
    std::fs::write("/proc/self/setgroups", "deny")
        .map_err(|e| io_err("write /proc/self/setgroups", &e))?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"))
        .map_err(|e| io_err("write /proc/self/uid_map", &e))?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"))
        .map_err(|e| io_err("write /proc/self/gid_map", &e))?;
    Ok(())
}

fn run_stub(args: WorldArgs) -> i32 {
    sys::close_fds_except(args.control_fd);
    let fd = match sys::take_inherited_fd(args.control_fd) {
        Ok(fd) => fd,
        Err(errno) => {
            eprintln!("doppel-init: control fd {}: errno {errno}", args.control_fd);
            return 2;
        }
    };
    // World processes must never inherit the control socket.
    let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
    let mut control = UnixStream::from(fd);
    let userns = !nix::unistd::getuid().is_root();
    let setup = (|| {
        if userns {
            setup_userns()?;
        }
        nix::sched::unshare(
            nix::sched::CloneFlags::CLONE_NEWPID | nix::sched::CloneFlags::CLONE_NEWNS,
        )
        .map_err(|e| sys_err("unshare(CLONE_NEWPID|CLONE_NEWNS)", errno_of(e)))?;
        // A network namespace of the world's own, loopback up: runtimes and
        // daemons name abstract unix sockets and ports after box ids, and
        // parallel worlds must not collide on them.
        if !args.host_network {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| sys_err("unshare(CLONE_NEWNET)", errno_of(e)))?;
            sys::loopback_up().map_err(|e| sys_err("bring up lo", e))?;
        }
        Ok(())
    })();
    if let Err(e) = setup {
        let _ = write_frame(&mut control, &Response::SetupFailed(e));
        return 1;
    }
    // The stub is a fresh single-threaded process, so fork is safe here.
    match sys::fork() {
        Err(errno) => {
            let _ = write_frame(
                &mut control,
                &Response::SetupFailed(sys_err("fork init", errno)),
            );
            1
        }
        Ok(sys::Forked::Child) => {
            let code = pid1(control, &args, userns);
            sys::exit_now(code)
        }
        Ok(sys::Forked::Parent(child)) => {
            // Only init may hold the control socket, so EOF reaches it when the
            // harness goes away.
            drop(control);
            match reap(child) {
                Some(ExitStatus::Exited(c)) => c,
                Some(ExitStatus::Signaled(s)) => 128 + s.get(),
                None => 1,
            }
        }
    }
}

/// Kernel release as (major, minor), from uname.
pub fn kernel_version() -> Option<(u32, u32)> {
    let uts = rustix::system::uname();
    let rel = uts.release().to_string_lossy().into_owned();
    let mut it = rel.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// True when pid_max is per PID namespace (Linux 6.14+). On older kernels a
/// write from inside a world as real root would change the HOST's pid_max,
/// so worlds refuse to write it there.
pub fn pid_max_is_per_namespace() -> bool {
    kernel_version().is_some_and(|v| v >= (6, 14))
}

fn read_outer_pid() -> Result<Pid, RemoteError> {
    let status =
        std::fs::read("/proc/self/status").map_err(|e| io_err("read /proc/self/status", &e))?;
    let pids = procfs::parse_nspid(&status).map_err(|_| RemoteError::Unparsable {
        file: "/proc/self/status (NSpid)".into(),
    })?;
    Ok(pids[0])
}

fn mount_world(args: &WorldArgs) -> Result<(), RemoteError> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| sys_err("mount --make-rprivate /", errno_of(e)))?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| sys_err("mount proc on /proc", errno_of(e)))?;
    mount(
        Some("tmpfs"),
        &args.workdir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| sys_err("mount tmpfs on workdir", errno_of(e)))?;
    if args.unmount_cgroup_unified {
        const UNIFIED: &str = "/sys/fs/cgroup/unified";
        let mounted = || {
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .any(|l| l.split_whitespace().nth(4) == Some(UNIFIED))
        };
        if mounted() {
            // In a user namespace the inherited mount is locked and cannot be
            // unmounted; covering it with an empty tmpfs hides it just as well
            // from runtimes probing for a hybrid cgroup layout.
            if umount2(UNIFIED, MntFlags::MNT_DETACH).is_err() || mounted() {
                mount(
                    Some("tmpfs"),
                    UNIFIED,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC
                        | MsFlags::MS_RDONLY,
                    Some("size=4k"),
                )
                .map_err(|e| sys_err("hide /sys/fs/cgroup/unified", errno_of(e)))?;
            }
        }
    }
    if let Some(max) = args.pid_max {
        if !pid_max_is_per_namespace() {
            return Err(RemoteError::PidMaxNotPerNamespace {
                kernel: rustix::system::uname()
                    .release()
                    .to_string_lossy()
                    .into_owned(),
            });
        }
        std::fs::write("/proc/sys/kernel/pid_max", max.to_string())
            .map_err(|e| io_err("write world pid_max", &e))?;
    }
    Ok(())
}

fn read_pid_max() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768)
}

fn pid1(mut control: UnixStream, args: &WorldArgs, userns: bool) -> i32 {
    // If the stub dies, init (and so the world) goes with it.
    let _ = nix::sys::prctl::set_pdeathsig(NixSignal::SIGKILL);
    // A session (and process group) of the world's own: otherwise world
    // processes share the harness's process group, and a kill(0, ...) inside
    // the world would signal the harness on the host.
    let _ = nix::unistd::setsid();
    let setup = (|| {
        let outer = read_outer_pid()?;
        mount_world(args)?;
        let private = args.workdir.join(PRIVATE_DIR);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(|e| io_err("mkdir init private dir", &e))?;
        let pid_max = read_pid_max();
        let set_tid = !args.no_set_tid && probe_set_tid(2);
        // SIGCHLD wakes the reaper; the others are recorded (see
        // `recorded_signals`). Blocked, so none has its default action (for
        // a PID namespace's init the kernel would drop them anyway: init's
        // behaviour is unchanged), and all are read from the signalfd.
        // Children start with an empty mask (`sys::exec_child`).
        let mut caught = recorded_signals();
        caught.push(libc::SIGCHLD);
        let mask = sys::signal_set(&caught);
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(|e| sys_err("block SIGCHLD and the recorded signals", errno_of(e)))?;
        let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| sys_err("signalfd", errno_of(e)))?;
        Ok((outer, private, pid_max, set_tid, sfd))
    })();
    let (outer, private, pid_max, set_tid, sfd) = match setup {
        Ok(v) => v,
        Err(e) => {
            let _ = write_frame(&mut control, &Response::SetupFailed(e));
            return 1;
        }
    };
    let ready = Response::Ready {
        protocol: crate::proto::PROTOCOL_VERSION,
        outer_pid: outer,
        pid_max,
        userns,
        set_tid,
    };
    if write_frame(&mut control, &ready).is_err() {
        return 1;
    }
    let init = Init {
        control,
        sfd,
        private,
        pid_max,
        set_tid,
        managed: HashMap::new(),
        orphans: Vec::new(),
        cache: HashMap::new(),
        timers: Vec::new(),
        pending: None,
        seq: 0,
        signals: Vec::new(),
        signals_dropped: 0,
    };
    init.run()
}

/// Tries clone3 with set_tid at `pid` (a child that exits at once).
fn probe_set_tid(pid: i32) -> bool {
    match sys::fork_and_exit(Some(pid)) {
        Ok(child) => {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
            child == pid
        }
        Err(_) => false,
    }
}

#[derive(Debug)]
struct Managed {
    start_time: StartTime,
    files: [PathBuf; 3],
    status: Option<ExitStatus>,
    killed_by_timer: bool,
    killed_on_timeout: bool,
}

#[derive(Debug)]
struct PendingWait {
    pid: Pid,
    deadline: Instant,
    on_timeout: OnTimeout,
    timeout_ms: u64,
}

#[derive(Debug)]
struct Init {
    control: UnixStream,
    sfd: SignalFd,
    private: PathBuf,
    pid_max: i32,
    set_tid: bool,
    managed: HashMap<i32, Managed>,
    orphans: Vec<ReapedOrphan>,
    cache: HashMap<i32, (StartTime, Vec<String>)>,
    timers: Vec<(Instant, Pid, StartTime)>,
    pending: Option<PendingWait>,
    seq: u64,
    signals: Vec<InitSignal>,
    signals_dropped: u64,
}

/// The signals init takes through its signalfd and records (besides
/// SIGCHLD, which is recorded only when a process sent it): every signal a
/// runtime could aim at a PID, real-time ones included, except KILL and
/// STOP (uncatchable; the kernel drops them for a namespace's init), the
/// synchronous faults ILL, TRAP, BUS, FPE, SEGV and SYS (a real fault in
/// init must still end it, and Rust's stack-overflow report needs SEGV),
/// and glibc's internal 32 and 33.
fn recorded_signals() -> Vec<i32> {
    let mut v = crate::ids::RECORDABLE_SIGNALS.to_vec();
    v.extend(sys::realtime_signals());
    v
}

fn read_stat(pid: i32) -> Option<procfs::ProcStat> {
    let bytes = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&bytes).ok()
}

/// Reaps one specific child, blocking (callers only use it on a child that
/// exited or was SIGKILLed, so the wait is short). Raw statuses, so a death by
/// a real-time signal is reported too.
fn reap(pid: i32) -> Option<ExitStatus> {
    let p = rustix::process::Pid::from_raw(pid)?;
    loop {
        match rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, ws))) => {
                if let Some(c) = ws.exit_status() {
                    return Some(ExitStatus::Exited(c));
                }
                if let Some(s) = ws.terminating_signal() {
                    return Signal::new(s).ok().map(ExitStatus::Signaled);
                }
            }
            Ok(None) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return None,
        }
    }
}

fn kill(pid: i32, sig: NixSignal) -> Result<(), nix::Error> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
}

fn read_capped(path: &Path, cap: usize) -> Captured {
    let mut bytes = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(cap as u64 + 1).read_to_end(&mut bytes);
    }
    let truncated = bytes.len() > cap;
    bytes.truncate(cap);
    Captured { bytes, truncated }
}

fn find_in_path(program: &str, path_var: Option<&str>) -> Option<String> {
    let path_var =
        path_var.unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path_var.split(':').filter(|d| !d.is_empty()).find_map(|d| {
        let cand = format!("{d}/{program}");
        let c = CString::new(cand.clone()).ok()?;
        let md = std::fs::metadata(&cand).ok()?;
        (md.is_file() && sys::is_executable(&c)).then_some(cand)
    })
}

fn build_env(spec: &EnvSpec, ready_fd: bool) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = if spec.clear {
        Vec::new()
    } else {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    };
    env.retain(|(k, _)| k != "DOPPEL_READY_FD" && !spec.remove.contains(k));
    for (k, v) in &spec.set {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    if ready_fd {
        env.push(("DOPPEL_READY_FD".into(), "3".into()));
    }
    env
}

/// `now + d`, or ten years from now when `d` is absurdly long (an
/// `Instant` overflow would panic, and init must not).
fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(Duration::from_secs(10 * 365 * 86_400)))
        .unwrap_or(now)
}

fn bad(reason: BadRequestReason) -> RemoteError {
    RemoteError::BadRequest { reason }
}

impl Init {
    fn run(mut self) -> i32 {
        loop {
            let timeout = self.next_deadline().map(|d| {
                let left = d.saturating_duration_since(Instant::now());
                rustix::event::Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: i64::from(left.subsec_nanos()),
                }
            });
            let (control_ready, sig_ready) = {
                let mut fds = [
                    rustix::event::PollFd::new(&self.control, rustix::event::PollFlags::IN),
                    rustix::event::PollFd::new(&self.sfd, rustix::event::PollFlags::IN),
                ];
                match rustix::event::poll(&mut fds, timeout.as_ref()) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => return 1,
                }
                (!fds[0].revents().is_empty(), !fds[1].revents().is_empty())
            };
            if sig_ready {
                self.drain_signals();
            }
            self.reap_all();
            self.fire_timers();
            if self.check_pending().is_err() {
                return 1;
            }
            if control_ready {
                let req: Request = match read_frame(&mut self.control) {
                    Ok(r) => r,
                    // EOF (harness gone) or garbage: end the world.
                    Err(_) => return 0,
                };
                let resp = self.handle(req);
                if let Some(resp) = resp {
                    if write_frame(&mut self.control, &resp).is_err() {
                        return 1;
                    }
                }
                if self.check_pending().is_err() {
                    return 1;
                }
            }
        }
    }

    /// Reads every pending signal off the signalfd, recording those a world
    /// process sent to init. SIGCHLD from the kernel (a child changed state)
    /// only wakes the reaper, which runs after this.
    fn drain_signals(&mut self) {
        while let Ok(Some(info)) = self.sfd.read_signal() {
            let signo = info.ssi_signo as i32;
            let code = info.ssi_code;
            // CLD_* codes are positive: the kernel's child notifications.
            if signo == libc::SIGCHLD && code > 0 {
                continue;
            }
            let sender = Pid::new(info.ssi_pid as i32).ok();
            // init itself: the kernel's SIGPIPE / SIGXFSZ for init's own
            // writes name the writer as sender. Not a world process's doing.
            if sender == Some(Pid::INIT) {
                continue;
            }
            let Ok(signal) = Signal::new(signo) else {
                continue;
            };
            if self.signals.len() >= crate::proto::MAX_INIT_SIGNALS {
                self.signals_dropped += 1;
                continue;
            }
            // Read now: a `kill` command is usually gone by the next census.
            let sender_argv = sender
                .and_then(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
                .map(|b| split_nul(&b))
                .unwrap_or_default();
            self.signals.push(InitSignal {
                signal,
                sender,
                sender_uid: info.ssi_uid,
                code,
                sender_argv,
            });
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let t = self.timers.iter().map(|t| t.0).min();
        let p = self.pending.as_ref().map(|p| p.deadline);
        match (t, p) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reaps every exited child: managed ones keep their status for a later
    /// Wait; the others are recorded as reaped orphans.
    fn reap_all(&mut self) {
        loop {
            let pid = match sys::peek_exited_child() {
                Ok(Some(pid)) => pid,
                Ok(None) | Err(_) => return,
            };
            // Peeked with WNOWAIT: the zombie's /proc entry is still there.
            let stat = read_stat(pid);
            let status = reap(pid);
            let Some(status) = status else { continue };
            let managed = self.managed.get_mut(&pid).filter(|m| {
                m.status.is_none() && stat.as_ref().is_none_or(|s| s.start_time == m.start_time)
            });
            if let Some(m) = managed {
                m.status = Some(status);
                continue;
            }
            let Ok(p) = Pid::new(pid) else { continue };
            let start_time = stat.as_ref().map(|s| s.start_time);
            let argv = match (self.cache.get(&pid), start_time) {
                (Some((st, argv)), Some(t)) if *st == t => argv.clone(),
                _ => Vec::new(),
            };
            self.orphans.push(ReapedOrphan {
                pid: p,
                status,
                comm: stat.map(|s| s.comm).unwrap_or_default(),
                argv,
                start_time,
            });
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) = self.timers.drain(..).partition(|t| t.0 <= now);
        self.timers = keep;
        for (_, pid, start) in due {
            if let Some(m) = self.managed.get_mut(&pid.get()) {
                if m.status.is_none()
                    && m.start_time == start
                    && kill(pid.get(), NixSignal::SIGKILL).is_ok()
                {
                    m.killed_by_timer = true;
                }
            }
        }
    }

    fn exit_report(&mut self, pid: Pid) -> Option<ExitReport> {
        let m = self.managed.get(&pid.get())?;
        let status = m.status?;
        let m = self.managed.remove(&pid.get())?;
        let report = ExitReport {
            pid,
            status,
            stdout: read_capped(&m.files[1], OUTPUT_CAP),
            stderr: read_capped(&m.files[2], OUTPUT_CAP),
            killed_by_timer: m.killed_by_timer,
            killed_on_timeout: m.killed_on_timeout,
        };
        for f in &m.files {
            let _ = std::fs::remove_file(f);
        }
        Some(report)
    }

    /// Answers the pending wait if its process exited or its deadline passed.
    fn check_pending(&mut self) -> Result<(), ()> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        if let Some(r) = self.exit_report(p.pid) {
            return write_frame(&mut self.control, &Response::Exited(r)).map_err(|_| ());
        }
        if Instant::now() < p.deadline {
            self.pending = Some(p);
            return Ok(());
        }
        match p.on_timeout {
            OnTimeout::Report => write_frame(
                &mut self.control,
                &Response::Failed(RemoteError::WaitTimedOut {
                    pid: p.pid,
                    timeout_ms: p.timeout_ms,
                }),
            )
            .map_err(|_| ()),
            OnTimeout::Kill => {
                if let Some(m) = self.managed.get_mut(&p.pid.get()) {
                    m.killed_on_timeout = true;
                }
                let _ = kill(p.pid.get(), NixSignal::SIGKILL);
                // A SIGKILLed process ends promptly; give it a grace deadline.
                self.pending = Some(PendingWait {
                    deadline: Instant::now() + Duration::from_secs(10),
                    on_timeout: OnTimeout::Report,
                    ..p
                });
                Ok(())
            }
        }
    }

    /// Handles one request; `None` when the answer is deferred (pending wait).
    fn handle(&mut self, req: Request) -> Option<Response> {
        let r = match req {
            Request::Spawn(spec) => {
                let at = spec.at_pid;
                self.spawn(&spec, at).map(Response::Spawned)
            }
            Request::Wait {
                pid,
                timeout_ms,
                on_timeout,
            } => {
                if !self.managed.contains_key(&pid.get()) {
                    Err(RemoteError::NoSuchProcess { pid })
                } else {
                    self.pending = Some(PendingWait {
                        pid,
                        deadline: deadline_after(Duration::from_millis(timeout_ms)),
                        on_timeout,
                        timeout_ms,
                    });
                    return None;
                }
            }
            Request::Signal { pid, signal } => sys::kill(pid.get(), signal.get())
                .map_err(|e| match e {
                    libc::ESRCH => RemoteError::NoSuchProcess { pid },
                    e => sys_err("kill", e),
                })
                .map(|()| Response::Signaled),
            Request::Census { environ_cap } => Ok(self.census(environ_cap)),
            Request::SameTick {
                victim,
                impostor,
                max_attempts,
            } => self.same_tick(&victim, &impostor, max_attempts),
            Request::Replace {
                victim,
                impostor,
                timeout_ms,
            } => self.replace(victim, &impostor, timeout_ms),
            Request::PlaceByWraparound { spec, max_forks } => self.wraparound(&spec, max_forks),
        };
        Some(r.unwrap_or_else(Response::Failed))
    }

    fn check_range(&self, pid: Pid) -> Result<(), RemoteError> {
        if pid.get() >= self.pid_max {
            return Err(RemoteError::PidOutOfRange {
                pid: pid.get(),
                pid_max: self.pid_max,
            });
        }
        if pid.get() == 1 {
            return Err(RemoteError::PidTaken { pid });
        }
        Ok(())
    }

    /// Starts a process; returns once it has exec'd (and, with `ready_fd`,
    /// written its ready line or closed the fd).
    fn spawn(&mut self, spec: &SpawnSpec, at: Option<Pid>) -> Result<SpawnedReport, RemoteError> {
        if let Some(p) = at {
            self.check_range(p)?;
        }
        if spec.argv.is_empty() {
            return Err(bad(BadRequestReason::EmptyArgv));
        }
        let env = build_env(&spec.env, spec.ready_fd);
        let program = if spec.program.contains('/') {
            spec.program.clone()
        } else {
            let path_var = env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.as_str());
            find_in_path(&spec.program, path_var).ok_or_else(|| RemoteError::ProgramNotFound {
                program: spec.program.clone(),
            })?
        };
        let to_c = |s: &str| CString::new(s).map_err(|_| bad(BadRequestReason::NulInString));
        let c_program = to_c(&program)?;
        let c_argv = spec
            .argv
            .iter()
            .map(|a| to_c(a))
            .collect::<Result<Vec<_>, _>>()?;
        let c_env = env
            .iter()
            .map(|(k, v)| to_c(&format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()?;
        let c_cwd = spec.cwd.as_deref().map(to_c).transpose()?;

        self.seq += 1;
        let base = self.private.join(self.seq.to_string());
        let files = [
            base.with_extension("in"),
            base.with_extension("out"),
            base.with_extension("err"),
        ];
        std::fs::write(&files[0], &spec.stdin).map_err(|e| io_err("write stdin file", &e))?;
        let stdin = std::fs::File::open(&files[0]).map_err(|e| io_err("open stdin file", &e))?;
        let open_out = |p: &Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(p)
                .map_err(|e| io_err("open output file", &e))
        };
        let stdout = open_out(&files[1])?;
        let stderr = open_out(&files[2])?;
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| sys_err("pipe2", errno_of(e)))?;
        let ready = if spec.ready_fd {
            Some(
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| sys_err("pipe2", errno_of(e)))?,
            )
        } else {
            None
        };
        let mut fds = vec![
            (stdin.as_raw_fd(), 0),
            (stdout.as_raw_fd(), 1),
            (stderr.as_raw_fd(), 2),
        ];
        if let Some((_, w)) = &ready {
            fds.push((w.as_raw_fd(), 3));
        }
        let mut plan = sys::ChildPlan::new(
            c_program,
            c_argv,
            c_env,
            c_cwd,
            fds,
            spec.setsid,
            err_w.as_raw_fd(),
        );
        // Through ns_last_pid the PID is only known after the fork: hold the
        // child before exec until it is verified, so a misplaced child never
        // runs any of the program.
        let go = if at.is_some() && !self.set_tid {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| sys_err("pipe2", errno_of(e)))?;
            plan = plan.wait_for_go(r.as_raw_fd());
            Some((r, w))
        } else {
            None
        };
        let pid = self.fork_at(&plan, at)?;
        if let Some((_, w)) = &go {
            std::fs::File::from(w.try_clone().map_err(|e| io_err("dup go pipe", &e))?)
                .write_all(b"g")
                .map_err(|e| io_err("write go pipe", &e))?;
        }
        drop(go);
        drop(plan);
        drop(err_w);
        drop((stdin, stdout, stderr));
        let ready_r = ready.map(|(r, w)| {
            drop(w);
            r
        });
        let mut err_bytes = Vec::new();
        let _ = std::fs::File::from(err_r).read_to_end(&mut err_bytes);
        if err_bytes.len() >= 4 {
            let errno =
                i32::from_ne_bytes([err_bytes[0], err_bytes[1], err_bytes[2], err_bytes[3]]);
            reap(pid.get());
            for f in &files {
                let _ = std::fs::remove_file(f);
            }
            return Err(RemoteError::ExecFailed {
                program: spec.program.clone(),
                errno,
            });
        }
        let start_time = read_stat(pid.get())
            .map(|s| s.start_time)
            .ok_or_else(|| sys_err("read stat of new process", libc::ESRCH))?;
        self.managed.insert(
            pid.get(),
            Managed {
                start_time,
                files,
                status: None,
                killed_by_timer: false,
                killed_on_timeout: false,
            },
        );
        self.cache
            .insert(pid.get(), (start_time, spec.argv.clone()));
        if let Some(ms) = spec.kill_after_ms {
            self.timers
                .push((deadline_after(Duration::from_millis(ms)), pid, start_time));
        }
        let mut ready_line = None;
        if let Some(r) = ready_r {
            match read_ready_line(r, Duration::from_millis(spec.ready_timeout_ms)) {
                ReadyOutcome::Line(l) => ready_line = Some(l),
                ReadyOutcome::Eof => {}
                ReadyOutcome::Timeout => {
                    let _ = kill(pid.get(), NixSignal::SIGKILL);
                    reap(pid.get());
                    self.forget(pid);
                    return Err(RemoteError::ReadyTimeout {
                        pid,
                        timeout_ms: spec.ready_timeout_ms,
                    });
                }
            }
        }
        Ok(SpawnedReport {
            pid,
            start_time,
            ready_line,
        })
    }

    fn forget(&mut self, pid: Pid) {
        if let Some(m) = self.managed.remove(&pid.get()) {
            for f in &m.files {
                let _ = std::fs::remove_file(f);
            }
        }
    }

    /// Forks `plan`, at an exact PID when asked: clone3 set_tid when the
    /// kernel allows it, else ns_last_pid (serialized: init is one thread).
    fn fork_at(&mut self, plan: &sys::ChildPlan, at: Option<Pid>) -> Result<Pid, RemoteError> {
        let to_pid = |raw: i32| Pid::new(raw).map_err(|_| sys_err("fork returned", libc::EINVAL));
        let Some(want) = at else {
            return sys::spawn_child(plan, None)
                .map_err(|e| sys_err("fork", e))
                .and_then(to_pid);
        };
        if self.set_tid {
            return match sys::spawn_child(plan, Some(want.get())) {
                Ok(p) if p == want.get() => to_pid(p),
                Ok(p) => {
                    let _ = kill(p, NixSignal::SIGKILL);
                    reap(p);
                    Err(RemoteError::PidMismatch {
                        wanted: want,
                        got: to_pid(p)?,
                    })
                }
                Err(libc::EEXIST) => Err(RemoteError::PidTaken { pid: want }),
                Err(e) => Err(sys_err("clone3 set_tid", e)),
            };
        }
        if Path::new(&format!("/proc/{want}")).exists() {
            return Err(RemoteError::PidTaken { pid: want });
        }
        // Another world process may fork between the write and our fork;
        // the kernel also skips a PID that still names a process group or
        // session. Retry a little, then call the PID taken.
        for _ in 0..3 {
            std::fs::write("/proc/sys/kernel/ns_last_pid", (want.get() - 1).to_string())
                .map_err(|e| io_err("write ns_last_pid", &e))?;
            let got = sys::spawn_child(plan, None).map_err(|e| sys_err("fork", e))?;
            if got == want.get() {
                return Ok(want);
            }
            let _ = kill(got, NixSignal::SIGKILL);
            reap(got);
        }
        Err(RemoteError::PidTaken { pid: want })
    }

    fn census(&mut self, environ_cap: usize) -> Response {
        let mut processes = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return self.census_response(processes);
        };
        for ent in dir.flatten() {
            let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Some(stat) = read_stat(pid) else { continue };
            let base = PathBuf::from(format!("/proc/{pid}"));
            let argv = std::fs::read(base.join("cmdline"))
                .map(|b| split_nul(&b))
                .unwrap_or_default();
            let mut env_bytes = Vec::new();
            if let Ok(f) = std::fs::File::open(base.join("environ")) {
                let _ = f.take(environ_cap as u64 + 1).read_to_end(&mut env_bytes);
            }
            let environ_truncated = env_bytes.len() > environ_cap;
            env_bytes.truncate(environ_cap);
            let exe = std::fs::read_link(base.join("exe"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned());
            let mut fds: Vec<(i32, String)> = std::fs::read_dir(base.join("fd"))
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| {
                            let n = e.file_name().to_str()?.parse().ok()?;
                            let t = std::fs::read_link(e.path()).ok()?;
                            Some((n, t.to_string_lossy().into_owned()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            fds.sort();
            let spawned_by_init = self
                .managed
                .get(&pid)
                .is_some_and(|m| m.start_time == stat.start_time);
            if !argv.is_empty() {
                self.cache.insert(pid, (stat.start_time, argv.clone()));
            }
            processes.push(ProcessRecord {
                stat,
                argv,
                environ: split_nul(&env_bytes),
                environ_truncated,
                exe,
                fds,
                spawned_by_init,
            });
        }
        processes.sort_by_key(|p| p.stat.pid);
        self.census_response(processes)
    }

    /// The census answer. Signals are not drained here (that would eat a
    /// SIGCHLD the loop must see to reap): a signal a process sent before
    /// it exited was queued before its exit and drained by the loop before
    /// any Wait on it was answered.
    fn census_response(&self, processes: Vec<ProcessRecord>) -> Response {
        Response::Census {
            processes,
            reaped_orphans: self.orphans.clone(),
            init_signals: self.signals.clone(),
            init_signals_dropped: self.signals_dropped,
        }
    }

    fn kill_and_reap(&mut self, pid: Pid) {
        let _ = kill(pid.get(), NixSignal::SIGKILL);
        reap(pid.get());
        self.forget(pid);
    }

    fn same_tick(
        &mut self,
        victim: &SpawnSpec,
        impostor: &SpawnSpec,
        max_attempts: u32,
    ) -> Result<Response, RemoteError> {
        if max_attempts == 0 {
            return Err(bad(BadRequestReason::ZeroAttempts));
        }
        let mut last = String::new();
        for attempt in 1..=max_attempts {
            let v = self.spawn(victim, None)?;
            self.kill_and_reap(v.pid);
            let imp = match self.spawn(impostor, Some(v.pid)) {
                Ok(i) => i,
                Err(RemoteError::PidTaken { .. }) => {
                    last = format!("pid {} was taken again before the impostor", v.pid);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if imp.start_time == v.start_time {
                return Ok(Response::SameTickStaged {
                    pid: v.pid,
                    victim_start: v.start_time,
                    impostor: imp,
                    attempts: attempt,
                });
            }
            last = format!(
                "start times differ ({} vs {}): a clock tick passed between victim and impostor",
                v.start_time.0, imp.start_time.0
            );
            self.kill_and_reap(imp.pid);
        }
        Err(RemoteError::NotStaged {
            reason: last,
            attempts: max_attempts,
        })
    }

    fn replace(
        &mut self,
        victim: Pid,
        impostor: &SpawnSpec,
        timeout_ms: u64,
    ) -> Result<Response, RemoteError> {
        self.check_range(victim)?;
        let victim_start = read_stat(victim.get()).map(|s| s.start_time);
        if victim_start.is_some() {
            match kill(victim.get(), NixSignal::SIGKILL) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(e) => return Err(sys_err("kill victim", errno_of(e))),
            }
        }
        if self.managed.contains_key(&victim.get()) {
            reap(victim.get());
            self.forget(victim);
        }
        // A victim that is not init's child is reaped by its parent, or by
        // init once orphaned: wait (polling the SIGCHLD fd) until it is gone.
        let deadline = deadline_after(Duration::from_millis(timeout_ms));
        let proc_path = format!("/proc/{victim}");
        while Path::new(&proc_path).exists() {
            if Instant::now() >= deadline {
                return Err(RemoteError::PidTaken { pid: victim });
            }
            self.reap_all();
            if !Path::new(&proc_path).exists() {
                break;
            }
            let mut fds = [rustix::event::PollFd::new(
                &self.sfd,
                rustix::event::PollFlags::IN,
            )];
            let ts = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            };
            let _ = rustix::event::poll(&mut fds, Some(&ts));
            self.drain_signals();
        }
        // A dead process's PID stays allocated while it names the process
        // group or session of live processes: retry until the deadline.
        let imp = loop {
            match self.spawn(impostor, Some(victim)) {
                Err(RemoteError::PidTaken { .. }) if Instant::now() < deadline => {
                    let mut fds = [rustix::event::PollFd::new(
                        &self.sfd,
                        rustix::event::PollFlags::IN,
                    )];
                    let ts = rustix::event::Timespec {
                        tv_sec: 0,
                        tv_nsec: 1_000_000,
                    };
                    let _ = rustix::event::poll(&mut fds, Some(&ts));
                    self.drain_signals();
                    self.reap_all();
                }
                r => break r?,
            }
        };
        Ok(Response::Replaced {
            victim_start,
            impostor: imp,
        })
    }

    fn wraparound(&mut self, spec: &SpawnSpec, max_forks: u64) -> Result<Response, RemoteError> {
        let target = spec
            .at_pid
            .ok_or_else(|| bad(BadRequestReason::NoTargetPid))?;
        self.check_range(target)?;
        if Path::new(&format!("/proc/{target}")).exists() {
            return Err(RemoteError::PidTaken { pid: target });
        }
        let mut last: i32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| RemoteError::Unparsable {
                file: "/proc/sys/kernel/ns_last_pid".into(),
            })?;
        let mut forks = 0u64;
        loop {
            if last == target.get() - 1 {
                let s = self.spawn(spec, None)?;
                if s.pid == target {
                    return Ok(Response::Wrapped { spawned: s, forks });
                }
                // Someone else took the slot: discard and go around again.
                last = s.pid.get();
                self.kill_and_reap(s.pid);
                continue;
            }
            if forks >= max_forks {
                return Err(RemoteError::NotStaged {
                    reason: format!(
                        "pid {target} not reached after {forks} forks (after a wrap the kernel restarts at 300)"
                    ),
                    attempts: u32::try_from(forks).unwrap_or(u32::MAX),
                });
            }
            let p = sys::fork_and_exit(None).map_err(|e| sys_err("fork", e))?;
            reap(p);
            forks += 1;
            last = p;
        }
    }
}

enum ReadyOutcome {
    Line(String),
    Eof,
    Timeout,
}

fn read_ready_line(fd: OwnedFd, timeout: Duration) -> ReadyOutcome {
    let deadline = deadline_after(timeout);
    let mut buf = Vec::new();
    let mut file = std::fs::File::from(fd);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return ReadyOutcome::Timeout;
        }
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [rustix::event::PollFd::new(
            &file,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) => return ReadyOutcome::Timeout,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return ReadyOutcome::Eof,
        }
        let mut chunk = [0u8; 256];
        match file.read(&mut chunk) {
            Ok(0) | Err(_) => {
                return if buf.is_empty() {
                    ReadyOutcome::Eof
                } else {
                    ReadyOutcome::Line(String::from_utf8_lossy(&buf).into_owned())
                };
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    buf.truncate(i);
                    return ReadyOutcome::Line(String::from_utf8_lossy(&buf).into_owned());
                }
            }
        }
    }
}

/// What `doppel-init --probe` found. Each field is `Ok(())` or the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// unshare(CLONE_NEWUSER) in a throwaway child.
    pub userns: Result<(), String>,
    /// unshare(CLONE_NEWPID|CLONE_NEWNS) (after a user ns when not root).
    pub pidns: Result<(), String>,
    /// Writing ns_last_pid inside the new PID namespace steers the next fork.
    pub ns_last_pid: Result<(), String>,
    /// clone3 with set_tid inside the new PID namespace.
    pub set_tid: Result<(), String>,
    /// unshare(CLONE_NEWNET) with loopback up, after the PID namespace.
    pub netns: Result<(), String>,
}

fn errno_text(errno: i32) -> String {
    format!(
        "{} (errno {errno})",
        std::io::Error::from_raw_os_error(errno)
    )
}

/// Forks a child that runs `f` and exits with its result code; returns the
/// code (or 255 on a signal). Single-threaded callers only.
fn in_child(f: impl FnOnce() -> i32) -> Result<i32, i32> {
    match sys::fork()? {
        sys::Forked::Child => sys::exit_now(f()),
        sys::Forked::Parent(pid) => match reap(pid) {
            Some(ExitStatus::Exited(c)) => Ok(c),
            _ => Ok(255),
        },
    }
}

/// Runs the capability probe. Must run in a fresh single-threaded process
/// (it forks), which is why [`crate::caps`] runs `doppel-init --probe`.
pub fn probe() -> ProbeReport {
    let root = nix::unistd::getuid().is_root();
    let userns =
        match in_child(
            || match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
                Ok(()) => 0,
                Err(e) => errno_of(e),
            },
        ) {
            Ok(0) => Ok(()),
            Ok(errno) => Err(format!("unshare(CLONE_NEWUSER): {}", errno_text(errno))),
            Err(errno) => Err(format!("fork: {}", errno_text(errno))),
        };
    let mut report = ProbeReport {
        userns: userns.clone(),
        pidns: Err("not probed".into()),
        ns_last_pid: Err("not probed".into()),
        set_tid: Err("not probed".into()),
        netns: Err("not probed".into()),
    };
    if !root {
        if let Err(e) = &userns {
            let why = format!("needs a user namespace (not root), which failed: {e}");
            report.pidns = Err(why.clone());
            report.ns_last_pid = Err(why.clone());
            report.set_tid = Err(why.clone());
            report.netns = Err(why);
            return report;
        }
    }
    // Codes: 0 ok; 1xx = pidns errno; results of inner checks in a pipe.
    let Ok((r, w)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        return report;
    };
    let code = in_child(move || {
        let mut w = std::fs::File::from(w);
        let setup = (|| {
            if !root {
                setup_userns().map_err(|e| e.to_string())?;
            }
            nix::sched::unshare(
                nix::sched::CloneFlags::CLONE_NEWPID | nix::sched::CloneFlags::CLONE_NEWNS,
            )
            .map_err(|e| {
                format!(
                    "unshare(CLONE_NEWPID|CLONE_NEWNS): {}",
                    errno_text(errno_of(e))
                )
            })
        })();
        if let Err(e) = setup {
            let _ = writeln!(w, "pidns\t{e}");
            return 1;
        }
        let _ = writeln!(w, "pidns\tok");
        let net = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare(CLONE_NEWNET): {}", errno_text(errno_of(e))))
            .and_then(|()| {
                sys::loopback_up().map_err(|e| format!("bring up lo: {}", errno_text(e)))
            });
        let _ = writeln!(w, "netns\t{}", net.err().unwrap_or("ok".into()));
        in_child(|| {
            use nix::mount::{MsFlags, mount};
            let m = mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .and_then(|()| {
                mount(
                    Some("proc"),
                    "/proc",
                    Some("proc"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    None::<&str>,
                )
            });
            if let Err(e) = m {
                let why = format!("mount proc: {}", errno_text(errno_of(e)));
                let _ = writeln!(w, "ns_last_pid\t{why}");
                let _ = writeln!(w, "set_tid\t{why}");
                return 1;
            }
            let nslp = std::fs::write("/proc/sys/kernel/ns_last_pid", "99")
                .map_err(|e| format!("write ns_last_pid: {e}"))
                .and_then(|()| match sys::fork_and_exit(None) {
                    Ok(p) => {
                        reap(p);
                        if p == 100 {
                            Ok(())
                        } else {
                            Err(format!("after writing 99 the next fork got {p}, not 100"))
                        }
                    }
                    Err(e) => Err(format!("fork: {}", errno_text(e))),
                });
            let _ = writeln!(w, "ns_last_pid\t{}", nslp.err().unwrap_or("ok".into()));
            let st = match sys::fork_and_exit(Some(50)) {
                Ok(p) => {
                    reap(p);
                    if p == 50 {
                        "ok".to_string()
                    } else {
                        format!("clone3 set_tid=50 gave pid {p}")
                    }
                }
                Err(e) => format!("clone3 with set_tid: {}", errno_text(e)),
            };
            let _ = writeln!(w, "set_tid\t{st}");
            0
        })
        .unwrap_or(1)
    });
    let mut text = String::new();
    let _ = std::fs::File::from(r).read_to_string(&mut text);
    for line in text.lines() {
        let Some((k, v)) = line.split_once('\t') else {
            continue;
        };
        let val = if v == "ok" {
            Ok(())
        } else {
            Err(v.to_string())
        };
        match k {
            "pidns" => report.pidns = val,
            "ns_last_pid" => report.ns_last_pid = val,
            "set_tid" => report.set_tid = val,
            "netns" => report.netns = val,
            _ => {}
        }
    }
    if let Err(errno) = code {
        report.pidns = Err(format!("fork: {}", errno_text(errno)));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_world_args() {
        let args = [
            "--control-fd",
            "3",
            "--workdir",
            "/tmp/w",
            "--pid-max",
            "500",
        ]
        .map(OsString::from);
        assert_eq!(
            parse_args(args),
            Ok(InitMode::World(WorldArgs {
                control_fd: 3,
                workdir: "/tmp/w".into(),
                unmount_cgroup_unified: false,
                pid_max: Some(500),
                no_set_tid: false,
                host_network: false,
            }))
        );
        assert_eq!(
            parse_args(["--probe"].map(OsString::from)),
            Ok(InitMode::Probe)
        );
        assert!(matches!(
            parse_args(["--control-fd"].map(OsString::from)),
            Err(InitArgsError::BadValue { .. })
        ));
        assert!(matches!(
            parse_args(["--workdir", "/x"].map(OsString::from)),
            Err(InitArgsError::Missing { .. })
        ));
        assert!(matches!(
            parse_args(["--bogus"].map(OsString::from)),
            Err(InitArgsError::Unknown { .. })
        ));
    }

    #[test]
    fn env_building_applies_clear_remove_set() {
        let spec = EnvSpec {
            clear: true,
            remove: vec![],
            set: vec![("A".into(), "1".into()), ("A".into(), "2".into())],
        };
        assert_eq!(
            build_env(&spec, true),
            vec![
                ("A".to_string(), "2".to_string()),
                ("DOPPEL_READY_FD".to_string(), "3".to_string())
            ]
        );
    }
}
