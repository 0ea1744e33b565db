//! `refbox-shim <box_id>`: the per-box supervisor. Its identity record was
//! written before it exec'd (see [`crate::identity::ChildRecordWriter`]); its
//! cwd is the box dir; its configuration arrives as JSON on stdin.
//!
//! Life: read config → block the signals it handles and open a signalfd
//! (so none is lost) → write `log/.sentinel` → check the payload program
//! exists → print `ready` on stdout (then stdout is /dev/null) → wait for the
//! start signal (or start at once) → run the payload in its own process
//! group with PDEATHSIG=SIGKILL, plus a *group guard* in that group →
//! forward TERM/INT/HUP/QUIT/USR1/USR2/ABRT to that group (and SIGKILL it on
//! the group-kill request) → when the payload ends: SIGKILL what is left of
//! its group, reap it and the guard, write `exit` keeping the old one as
//! `exit.previous`, exit 0.
//!
//! The guard (`refbox-guard`, this executable re-run with `--guard`) is
//! what keeps the promise "if the shim dies, the payload dies with it"
//! without cgroups: PDEATHSIG reaches only the payload's first process, so
//! when the shim is SIGKILLed the guard, which polls the shim's pidfd and
//! ignores every catchable signal, SIGKILLs the whole payload group
//! (grandchildren included), itself too. It is started first and leads the
//! group the payload joins, so no payload process ever exists unguarded,
//! and as the leader it pins the group id: the kill can never reach a
//! reused group.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::event::{PollFd, PollFlags};
use rustix::process::{PidfdFlags, WaitId, WaitIdOptions};

use crate::config::ShimConfig;
use crate::exitfile::{self, ExitRecord};
use crate::fswrite;
use crate::ids::BoxId;
use crate::layout;
use crate::pid::Pid;
use crate::sentinel;
use crate::state::now_unix_ms;
use crate::sys::{self, SignalFd};

/// Signals the shim forwards to the payload's process group.
pub const FORWARDED: [i32; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGABRT,
];

/// The PATH a payload gets when its env has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the shim gave up.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// Bad configuration on stdin.
    #[error("bad configuration on stdin")]
    Config(#[source] serde_json::Error),
    /// The payload program cannot be found or executed.
    #[error("payload program {0:?} not found or not executable")]
    NoProgram(String),
    /// An OS call failed.
    #[error("{what} failed")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Not started in its box dir.
    #[error("cwd {cwd} is not the dir of box {id}")]
    WrongDir {
        /// The box id.
        id: String,
        /// The cwd.
        cwd: PathBuf,
    },
    /// A file write failed.
    #[error(transparent)]
    Write(#[from] fswrite::WriteError),
    /// The shim is PID 1 of its namespace: its record could never be acted on.
    #[error("the shim runs as pid {pid} (a namespace's init): refusing to supervise")]
    Pid1 {
        /// Its pid.
        pid: u32,
    },
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> ShimError {
    move |source| ShimError::Io { what, source }
}

/// Runs the shim for `id` in the current dir (the box dir). Returns the
/// shim's exit code.
pub fn run(id: &BoxId) -> Result<i32, ShimError> {
    let cwd = std::env::current_dir().map_err(io_err("getcwd"))?;
    if cwd.file_name().and_then(|n| n.to_str()) != Some(id.as_str()) {
        return Err(ShimError::WrongDir {
            id: id.to_string(),
            cwd,
        });
    }
    let mut input = Vec::new();
    io::stdin()
        .lock()
        .take(8 << 20)
        .read_to_end(&mut input)
        .map_err(io_err("read stdin"))?;
    let config: ShimConfig = serde_json::from_slice(&input).map_err(ShimError::Config)?;
    drop(input);

    let start = sys::start_signal();
    let group_kill = sys::group_kill_signal();
    let mut handled = FORWARDED.to_vec();
    handled.extend([start, group_kill]);
    let sigfd = SignalFd::new(&handled).map_err(io_err("signalfd"))?;

    // As PID 1 (the init of a PID namespace) the shim would record a pid no
    // refbox command may ever signal: refuse to supervise instead.
    let me = Pid::new(i64::from(std::process::id())).map_err(|_| ShimError::Pid1 {
        pid: std::process::id(),
    })?;
    let exe = std::fs::read_link("/proc/self/exe").map_err(io_err("readlink /proc/self/exe"))?;
    let log = Path::new(layout::LOG_DIR);
    {
        use std::os::unix::ffi::OsStrExt;
        fswrite::write_atomic(
            log,
            layout::SENTINEL,
            &sentinel::format_sentinel(me, exe.as_os_str().as_bytes()),
        )?;
    }

    let program = resolve_program(&config)?;
    let mut payload = None;
    if config.start_now {
        payload = Some(spawn_payload(&program, &config, me)?);
    }
    say_ready()?;
    let mut config = Some(config);

    loop {
        let mut fds = vec![PollFd::new(&sigfd, PollFlags::IN)];
        if let Some(p) = &payload {
            fds.push(PollFd::new(&p.pidfd, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(io_err("poll")(e.into())),
        }
        let payload_done = fds.get(1).is_some_and(|f| !f.revents().is_empty());
        drop(fds);
        // Drain everything pending first: standard signals dequeue before
        // realtime ones, but a start request sent before a TERM must win.
        let mut pending = Vec::new();
        while let Some(sig) = sigfd.read().map_err(io_err("read signalfd"))? {
            pending.push(sig);
        }
        if payload.is_none() && pending.contains(&start) {
            let cfg = config.take().expect("config kept until start");
            match spawn_payload(&program, &cfg, me) {
                Ok(p) => payload = Some(p),
                Err(e) => {
                    write_exit(
                        Some(127),
                        None,
                        Some(format!("payload failed to start: {e}")),
                    )?;
                    return Ok(127);
                }
            }
        }
        for sig in pending.into_iter().filter(|&s| s != start) {
            let sig = if sig == group_kill {
                libc::SIGKILL
            } else {
                sig
            };
            match &payload {
                None => {
                    // Stopped before start: the record says so, so `state`
                    // shows why a created box is gone.
                    write_exit(
                        None,
                        Some(sig),
                        Some(format!("signal {sig} before start: the payload never ran")),
                    )?;
                    return Ok(128 + sig);
                }
                // The group is pinned by the unreaped payload leader.
                Some(p) => {
                    let _ = sys::kill_group(p.pgid(), sig);
                }
            }
        }
        if payload_done {
            let p = payload.take().expect("polled payload");
            return finish(p);
        }
    }
}

struct Payload {
    pid: Pid,
    pidfd: std::os::fd::OwnedFd,
    /// The group guard, when it could be started.
    guard: Option<Pid>,
}

impl Payload {
    /// The payload's process group: the guard's, or the payload's own when
    /// no guard could be started.
    fn pgid(&self) -> Pid {
        self.guard.unwrap_or(self.pid)
    }
}

fn say_ready() -> Result<(), ShimError> {
    let mut out = io::stdout().lock();
    out.write_all(b"ready\n")
        .and_then(|()| out.flush())
        .map_err(io_err("write ready"))?;
    drop(out);
    // From now on nobody reads our stdout: point it at /dev/null.
    let null = std::fs::File::open("/dev/null").map_err(io_err("open /dev/null"))?;
    rustix::stdio::dup2_stdout(&null).map_err(|e| io_err("dup2 stdout")(e.into()))?;
    Ok(())
}

/// Reports a failure to whoever waits for `ready` (the runtime's `create`).
pub fn say_error(msg: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "error: {msg}");
    let _ = out.flush();
}

fn payload_env(config: &ShimConfig) -> Vec<(String, String)> {
    let mut env = config.env.clone();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

/// Finds the payload program like execvp would, so a typo fails `create`.
fn resolve_program(config: &ShimConfig) -> Result<PathBuf, ShimError> {
    let name = config
        .argv
        .first()
        .ok_or_else(|| ShimError::NoProgram(String::new()))?;
    let executable =
        |p: &Path| rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok() && p.is_file();
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if executable(&p) {
            Ok(p)
        } else {
            Err(ShimError::NoProgram(name.clone()))
        };
    }
    let env = payload_env(config);
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| executable(p))
        .ok_or_else(|| ShimError::NoProgram(name.clone()))
}

fn spawn_payload(program: &Path, config: &ShimConfig, me: Pid) -> Result<Payload, ShimError> {
    use std::os::unix::process::CommandExt;
    // The guard first, leading a new group the payload then joins: there is
    // no moment at which payload processes exist unguarded.
    let guard = spawn_guard(me);
    let output = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(Path::new(layout::LOG_DIR).join(layout::OUTPUT))
            .map_err(io_err("open log/output"))?
    };
    let mut cmd = Command::new(program);
    cmd.arg0(&config.argv[0])
        .args(&config.argv[1..])
        .env_clear()
        .envs(payload_env(config))
        .stdin(if config.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::from(output.try_clone().map_err(io_err("dup log"))?))
        .stderr(Stdio::from(output));
    sys::install_payload_hook(&mut cmd, me.get(), guard);
    let mut child = cmd.spawn().map_err(io_err("spawn payload"))?;
    let pid = Pid::new(i64::from(child.id())).expect("child pid > 1");
    let pidfd = rustix::process::pidfd_open(pid.to_rustix(), PidfdFlags::empty())
        .map_err(|e| io_err("pidfd_open payload")(e.into()))?;
    if let (Some(mut stdin), Some(bytes)) = (child.stdin.take(), config.stdin.clone()) {
        // A thread, so a payload that never reads cannot block the shim.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    drop(child);
    Ok(Payload { pid, pidfd, guard })
}

/// argv\[1\] of the group guard (`refbox-shim --guard`, shown as
/// `refbox-guard`).
pub const GUARD_FLAG: &str = "--guard";

/// Starts the group guard, the leader of a new process group for the
/// payload. Best effort: without one (the exec failed) the payload leads
/// its own group, and the shim's own group kill still covers the normal
/// ends; what is lost is only the cleanup after the shim itself is
/// SIGKILLed.
fn spawn_guard(me: Pid) -> Option<Pid> {
    use std::os::unix::process::CommandExt;
    let own = rustix::process::pidfd_open(me.to_rustix(), PidfdFlags::empty()).ok()?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("refbox-guard")
        .arg(GUARD_FLAG)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    sys::install_guard_hook(&mut cmd, own.as_fd());
    let child = cmd.spawn().ok()?;
    Pid::new(i64::from(child.id())).ok()
}

/// The group guard's life: wait until the shim (pidfd at
/// [`sys::GUARD_PIDFD`]) exits, then SIGKILL the own process group — the
/// payload's — which ends the guard too. Returns (an error) only when it was
/// not started by a shim: fd 3 must be a pidfd and the guard must lead its
/// own process group (the shim's hook makes it so), so a guard run by hand
/// never kills a group it merely belongs to. (The shim may already be dead
/// when the guard gets here: its pidfd then polls readable at once.)
pub fn guard_main() -> io::Error {
    let Some(shim) = sys::take_guard_pidfd() else {
        return io::Error::new(
            io::ErrorKind::InvalidInput,
            "refbox-shim --guard is started by refbox-shim, with its pidfd at fd 3",
        );
    };
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", sys::GUARD_PIDFD))
        .unwrap_or_default();
    if !fdinfo.lines().any(|l| l.starts_with("Pid:")) {
        return io::Error::new(
            io::ErrorKind::InvalidInput,
            "fd 3 is not a pidfd: refusing to guard",
        );
    }
    if rustix::process::getpgrp() != rustix::process::getpid() {
        return io::Error::new(
            io::ErrorKind::InvalidInput,
            "not the leader of its own process group: refusing to guard",
        );
    }
    loop {
        let mut fds = [PollFd::new(&shim, PollFlags::IN)];
        match rustix::event::poll(&mut fds, None) {
            Ok(n) if n > 0 => break,
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return e.into(),
        }
    }
    let _ = rustix::process::kill_current_process_group(rustix::process::Signal::KILL);
    io::Error::other("still alive after SIGKILL of its own group")
}

fn finish(p: Payload) -> Result<i32, ShimError> {
    // Peek at the status without reaping, so the group id stays pinned while
    // we kill what is left of the group.
    rustix::process::waitid(
        WaitId::PidFd(p.pidfd.as_fd()),
        WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
    )
    .map_err(|e| io_err("waitid")(e.into()))?;
    let _ = sys::kill_group(p.pgid(), libc::SIGKILL);
    let raw = rustix::process::waitpid(
        Some(p.pid.to_rustix()),
        rustix::process::WaitOptions::empty(),
    )
    .map_err(|e| io_err("waitpid payload")(e.into()))?
    .map(|(_, s)| s.as_raw());
    // The guard was in the group and got the SIGKILL too: reap it, so no
    // zombie of ours outlives the box.
    if let Some(guard) = p.guard {
        let _ = rustix::process::waitpid(
            Some(guard.to_rustix()),
            rustix::process::WaitOptions::empty(),
        );
    }
    let st = std::process::ExitStatus::from_raw(raw.unwrap_or(0));
    write_exit(st.code(), st.signal(), None)?;
    Ok(0)
}

fn write_exit(
    code: Option<i32>,
    signal: Option<i32>,
    note: Option<String>,
) -> Result<(), ShimError> {
    let here = Path::new(".");
    let rec = ExitRecord {
        version: exitfile::EXIT_VERSION,
        code,
        signal,
        time_unix_ms: now_unix_ms(),
        note,
    };
    fswrite::write_atomic_keeping_previous(
        here,
        layout::EXIT,
        layout::EXIT_PREVIOUS,
        &exitfile::format_exit(&rec),
    )?;
    Ok(())
}
