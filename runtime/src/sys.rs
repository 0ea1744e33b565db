//! Every `unsafe` block of refbox lives here, each behind a small safe
//! wrapper with a SAFETY comment: the pre-exec hooks (code between fork and
//! exec), raw `pidfd_send_signal` for any signal number, signal masks and
//! signalfd. Everything else uses rustix's safe API.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::fs::Mode;

use crate::identity::ChildRecordWriter;

/// Sets the process umask to 077. Files and dirs are created with explicit
/// modes anyway; this only guards code paths that forget one.
pub fn set_umask_077() {
    rustix::process::umask(Mode::from_raw_mode(0o077));
}

/// What Rust's runtime start-up does before `main` that the `refbox` CLI
/// needs, for its binary that starts without it (`#![no_main]`, see
/// `src/bin/refbox.rs`): fds 0, 1 and 2 that are closed are opened on
/// `/dev/null` (else the first file refbox opens would become its stdout,
/// and a JSON document could be written into a state file), and SIGPIPE is
/// ignored (writing the shim's configuration into a pipe whose reader died
/// must be an error to report, not a silent death). Costs one `poll` and
/// one `rt_sigaction`.
pub fn prepare_cli_process() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll(2) reads and writes exactly the three pollfd structs of
    // the array we pass with its length; a zero timeout never blocks.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
    if polled >= 0 {
        for p in fds.iter().filter(|p| p.revents & libc::POLLNVAL != 0) {
            // The lowest free fd is the closed one (0, 1, 2 are checked in
            // order); it stays open for the life of the process.
            match rustix::fs::open("/dev/null", rustix::fs::OFlags::RDWR, Mode::empty()) {
                Ok(fd) if std::os::fd::AsRawFd::as_raw_fd(&fd) == p.fd => std::mem::forget(fd),
                _ => std::process::abort(),
            }
        }
    }
    // SAFETY: installs SIG_IGN (no handler code) for SIGPIPE; the previous
    // disposition is not needed. This is what Rust's start-up does too.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)` for any signal number (rustix's
/// typed `Signal` has no realtime signals, which the shim's start request uses).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: the syscall takes an fd we borrow (kept open for the call), a
    // signal number, a NULL siginfo pointer (allowed: the kernel fills in a
    // default) and flags 0. No memory is shared with the kernel.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `kill(-pgid, sig)`: signals a whole process group. refbox never uses it
/// for boxes (it signals through pidfds); it is the shim's own forwarding to
/// its payload's group, whose leader (the payload, the shim's unreaped
/// child) pins the group id. A `Pid` is ≥ 2, so this can never be
/// `kill(-1)` (everything) or `kill(0)` (the caller's own group).
pub(crate) fn kill_group(pgid: crate::pid::Pid, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let r = unsafe { libc::kill(-pgid.get(), sig) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The signal the shim waits for before starting its payload: a realtime
/// signal, so no user-visible signal (TERM, USR1, ...) is overloaded.
pub fn start_signal() -> i32 {
    libc::SIGRTMIN() + 4
}

/// The signal that asks the shim to SIGKILL its payload's whole process
/// group (grandchildren included, which PDEATHSIG alone would miss), record
/// the exit and leave. What `kill KILL` and `delete --force` send first.
pub fn group_kill_signal() -> i32 {
    libc::SIGRTMIN() + 5
}

/// Sets the process umask; returns the previous one. For the helper's
/// socket, whose mode only the umask at `bind` time decides.
pub fn set_umask(mode: u32) -> u32 {
    rustix::process::umask(Mode::from_raw_mode(mode)).bits()
}

/// Runs `writer` in the child between fork and exec: the shim records its
/// own identity before it becomes `refbox-shim`, and leaves the caller's
/// session (setsid) so the box outlives a terminal. With `cgroup_procs` (an
/// open `cgroup.procs` of the box's cgroup, kept open by the caller until
/// the spawn returns) the child first moves itself into that cgroup, so the
/// shim and its payload are in it from their first instruction.
pub fn install_identity_hook(
    cmd: &mut Command,
    writer: ChildRecordWriter,
    cgroup_procs: Option<std::os::fd::RawFd>,
) {
    // SAFETY: `pre_exec` closures run in the forked child of a possibly
    // multi-threaded parent, so they must be async-signal-safe. This one
    // calls setsid, write(2) of a static "0" to an fd the parent opened, and
    // `ChildRecordWriter::write_in_child`, which only makes raw syscalls
    // through rustix (getpid, pidfd_open, fstat, open, read, write, fsync,
    // renameat, close), formats into stack buffers, takes no locks and does
    // not allocate; its paths were allocated by the parent. The borrowed fd
    // is valid: the parent keeps it open until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = cgroup_procs {
                let fd = BorrowedFd::borrow_raw(fd);
                rustix::io::write(fd, b"0").map_err(io::Error::from)?;
            }
            rustix::process::setsid().map_err(io::Error::from)?;
            writer.write_in_child()
        });
    }
}

/// Prepares the payload child (between fork and exec): the group guard's
/// process group `group`, or a new one of its own without a guard (so the
/// shim can signal all of it), `PR_SET_PDEATHSIG(SIGKILL)` so it
/// dies with the shim, an empty signal mask (the shim blocks signals for its
/// signalfd and masks are inherited across exec), and a check that the shim
/// did not die before the death signal was armed.
pub fn install_payload_hook(cmd: &mut Command, shim_pid: i32, group: Option<crate::pid::Pid>) {
    let group = group.map(crate::pid::Pid::to_rustix);
    // SAFETY: async-signal-safe only: setpgid, prctl, getppid, sigemptyset,
    // sigprocmask; no allocation, no locks. `set` is a local on the child's
    // stack, initialised by sigemptyset before sigprocmask reads it.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setpgid(None, group).map_err(io::Error::from)?;
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(io::Error::from)?;
            if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(shim_pid) {
                // The shim died before PDEATHSIG was armed: do not outlive it.
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The fd number at which the group guard finds the shim's pidfd.
pub const GUARD_PIDFD: std::os::fd::RawFd = 3;

/// Prepares the group guard child (between fork and exec): it leads a new
/// process group, which the payload then joins (so the group id stays
/// pinned while the guard lives and its `kill(0)` reaches exactly that
/// group), gets the shim's pidfd at [`GUARD_PIDFD`] without close-on-exec,
/// and blocks every signal, so signals the shim forwards to the group do
/// not end it (only SIGKILL, which cannot be blocked, does).
pub fn install_guard_hook(cmd: &mut Command, shim_pidfd: BorrowedFd<'_>) {
    let raw = shim_pidfd.as_raw_fd();
    // SAFETY: async-signal-safe only: setpgid, dup2/fcntl on fds we own,
    // sigfillset, sigprocmask; no allocation, no locks. `raw` is the
    // parent's pidfd, kept open by the caller until spawn returns, so it is
    // open in the child too; `set` is a local on the child's stack,
    // initialised by sigfillset before sigprocmask reads it.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setpgid(None, None).map_err(io::Error::from)?;
            let src = BorrowedFd::borrow_raw(raw);
            if raw == GUARD_PIDFD {
                rustix::io::fcntl_setfd(src, rustix::io::FdFlags::empty())
                    .map_err(io::Error::from)?;
            } else {
                let mut dst = OwnedFd::from_raw_fd(GUARD_PIDFD);
                let r = rustix::io::dup2(src, &mut dst).map_err(io::Error::from);
                // Not ours to close: the fd number must stay open for exec.
                std::mem::forget(dst);
                r?;
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Takes ownership of the fd at [`GUARD_PIDFD`] if one is open there (the
/// pidfd a shim handed its group guard); `None` when nothing is.
pub fn take_guard_pidfd() -> Option<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) on a raw number touches no memory and just
    // fails (EBADF) when nothing is open there.
    let open = unsafe { libc::fcntl(GUARD_PIDFD, libc::F_GETFD) } != -1;
    // SAFETY: the fd is open (checked above), and in the guard nothing else
    // owns it: the shim's hook put it there for exactly this process, which
    // takes it once.
    open.then(|| unsafe { OwnedFd::from_raw_fd(GUARD_PIDFD) })
}

/// A signalfd for a set of signals, which are blocked for the calling thread
/// so they arrive only through the fd. Used by the single-threaded shim.
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

impl std::os::fd::AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl SignalFd {
    /// Blocks `signals` and opens a signalfd (CLOEXEC, NONBLOCK) for them.
    pub fn new(signals: &[i32]) -> io::Result<Self> {
        // SAFETY: `set` is a local sigset initialised by sigemptyset before
        // use; sigaddset/sigprocmask/signalfd only read it. signalfd returns
        // a fresh fd that we own exclusively (wrapped at once in OwnedFd).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in signals {
                if libc::sigaddset(&mut set, s) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SignalFd {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// Reads one pending signal number, or `None` when none is pending.
    pub fn read(&self) -> io::Result<Option<i32>> {
        let mut buf = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        match rustix::io::read(&self.fd, &mut buf) {
            Ok(n) if n == buf.len() => {
                // ssi_signo is the first field: a native-endian u32.
                let signo = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
                Ok(Some(signo as i32))
            }
            Ok(_) => Ok(None),
            Err(rustix::io::Errno::AGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
