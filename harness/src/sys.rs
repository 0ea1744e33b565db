//! Owns every `unsafe` block of the crate: fork/clone3 (with `set_tid`), the
//! code that runs between fork and exec, the harness's `pre_exec` fd move, and
//! the impostor's signal-logging handler. Each block says why it is sound.
//! Everything else in the crate uses safe `rustix`/`nix` wrappers.

use std::ffi::{CStr, CString, c_char, c_int};
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicI32, Ordering};

/// An errno value from a failed call.
pub type Errno = i32;

fn last_errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Everything the child needs between fork and exec, allocated up front so the
/// child itself only makes raw system calls.
#[derive(Debug)]
pub struct ChildPlan {
    program: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    _env: Vec<CString>,
    env_ptrs: Vec<*const c_char>,
    cwd: Option<CString>,
    fds: Vec<(RawFd, RawFd)>,
    setsid: bool,
    exec_err_fd: RawFd,
    go_fd: Option<RawFd>,
}

impl ChildPlan {
    /// Builds a plan. `fds` are `(source, target)` pairs applied with dup2 in
    /// order (sources must not collide with earlier targets); `exec_err_fd` is
    /// the CLOEXEC write end of a pipe that receives the errno if exec fails.
    pub fn new(
        program: CString,
        argv: Vec<CString>,
        env: Vec<CString>,
        cwd: Option<CString>,
        fds: Vec<(RawFd, RawFd)>,
        setsid: bool,
        exec_err_fd: RawFd,
    ) -> ChildPlan {
        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut env_ptrs: Vec<*const c_char> = env.iter().map(|a| a.as_ptr()).collect();
        env_ptrs.push(std::ptr::null());
        ChildPlan {
            program,
            _argv: argv,
            argv_ptrs,
            _env: env,
            env_ptrs,
            cwd,
            fds,
            setsid,
            exec_err_fd,
            go_fd: None,
        }
    }

    /// Makes the child wait, before anything else, for one byte on `go_fd`
    /// (the read end of a pipe): the parent can check the child's PID and
    /// kill it before it runs any of the program.
    pub fn wait_for_go(mut self, go_fd: RawFd) -> ChildPlan {
        self.go_fd = Some(go_fd);
        self
    }
}

/// `struct clone_args` of clone3(2), version 2 (with `set_tid`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// fork(2)-like clone3: returns 0 in the child, the child's PID in the parent.
/// With `set_tid`, the child gets exactly that PID in the caller's innermost
/// PID namespace (`EEXIST` when taken; needs CAP_SYS_ADMIN over the ns).
///
/// Only call from a single-threaded process (doppel-init, probes): the child
/// is a copy of the calling thread only.
fn clone3_fork(set_tid: Option<i32>) -> Result<i32, Errno> {
    let tid: [libc::pid_t; 1] = [set_tid.unwrap_or(0)];
    let mut args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if set_tid.is_some() {
        args.set_tid = tid.as_ptr() as u64;
        args.set_tid_size = 1;
    }
    // SAFETY: clone3 with no CLONE_VM and stack = 0 behaves like fork(2): the
    // child gets a copy-on-write copy of this (single-threaded) process and
    // returns 0 from the syscall on its own copy of the stack. `args` and `tid`
    // outlive the call and the size passed matches the struct.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r as i32)
    }
}

/// clone3 when a PID is requested; plain fork(2) otherwise, so worlds still
/// work where clone3 is missing or filtered (Docker's default seccomp profile
/// answers ENOSYS to clone3).
fn fork_maybe_at(set_tid: Option<i32>) -> Result<i32, Errno> {
    static CLONE3_MISSING: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);
    if set_tid.is_some() {
        return clone3_fork(set_tid);
    }
    // clone3 is the cheaper fork (no atfork handlers); it matters for the
    // wraparound loop's tens of thousands of forks.
    if !CLONE3_MISSING.load(Ordering::Relaxed) {
        match clone3_fork(None) {
            Err(libc::ENOSYS) | Err(libc::EPERM) => CLONE3_MISSING.store(true, Ordering::Relaxed),
            r => return r,
        }
    }
    // SAFETY: callers are single-threaded (doppel-init, probes), so the child
    // may run the plan or exit; see `clone3_fork`.
    let r = unsafe { libc::fork() };
    if r < 0 { Err(last_errno()) } else { Ok(r) }
}

/// Runs in the child after fork: async-signal-safe only (no allocation, no
/// locks). Never returns.
fn exec_child(plan: &ChildPlan) -> ! {
    // SAFETY: every call below is a raw async-signal-safe system call on
    // memory owned by `plan`, which the fork copied into this process; nothing
    // allocates or takes a lock. The child only ever leaves by execve or _exit.
    unsafe {
        if let Some(go) = plan.go_fd {
            let mut byte = 0u8;
            if libc::read(go, (&mut byte as *mut u8).cast(), 1) != 1 {
                libc::_exit(127);
            }
        }
        // The raw syscall: glibc's sigprocmask will not touch its internal
        // signals (32, 33), and an inherited block of those must not leak.
        let empty: u64 = 0;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            std::mem::size_of::<u64>(),
        );
        // Dispositions survive exec when ignored (Rust ignores SIGPIPE; test
        // runners may ignore the real-time signals glibc keeps for itself,
        // which glibc's signal() refuses to touch): reset all, raw.
        for sig in 1..65 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                reset_disposition(sig);
            }
        }
        if plan.setsid {
            libc::setsid();
        }
        let mut ok = true;
        for &(src, dst) in &plan.fds {
            let r = if src == dst {
                libc::fcntl(dst, libc::F_SETFD, 0)
            } else {
                libc::dup2(src, dst)
            };
            if r < 0 {
                ok = false;
                break;
            }
        }
        if ok {
            if let Some(cwd) = &plan.cwd {
                if libc::chdir(cwd.as_ptr()) < 0 {
                    ok = false;
                }
            }
        }
        if ok {
            libc::execve(
                plan.program.as_ptr(),
                plan.argv_ptrs.as_ptr(),
                plan.env_ptrs.as_ptr(),
            );
        }
        let errno: c_int = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        libc::write(plan.exec_err_fd, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

/// The kernel's `struct sigaction` (x86_64 and aarch64 layout).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Sets `sig` to SIG_DFL with rt_sigaction(2) directly. Async-signal-safe.
fn reset_disposition(sig: c_int) {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let act = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: `act` matches the kernel's struct sigaction on this
        // architecture and outlives the call; sigsetsize is the kernel's 8.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &act as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    // SAFETY: signal() with SIG_DFL installs no handler.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// Forks (at `set_tid` when given) and execs `plan` in the child. Returns the
/// child's PID; exec errors arrive on the plan's error pipe.
/// Single-threaded callers only (doppel-init).
pub fn spawn_child(plan: &ChildPlan, set_tid: Option<i32>) -> Result<i32, Errno> {
    match fork_maybe_at(set_tid)? {
        0 => exec_child(plan),
        pid => Ok(pid),
    }
}

/// Forks (at `set_tid` when given) a child that exits at once with status 0.
/// Used by wraparound placement and capability probes.
pub fn fork_and_exit(set_tid: Option<i32>) -> Result<i32, Errno> {
    match fork_maybe_at(set_tid)? {
        0 => exit_now(0),
        pid => Ok(pid),
    }
}

/// Result of [`fork`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// In the child.
    Child,
    /// In the parent, with the child's PID.
    Parent(i32),
}

/// fork(2), for single-threaded processes (doppel-init's stub, probes, the
/// impostor binary) that run ordinary Rust code in the child.
pub fn fork() -> Result<Forked, Errno> {
    // SAFETY: callers are single-threaded fresh processes (asserted in the
    // callers' docs), so the child may keep running ordinary code: no other
    // thread can have held a lock at the time of the fork.
    let r = unsafe { libc::fork() };
    match r {
        r if r < 0 => Err(last_errno()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// `_exit(2)`: ends the process without running destructors or atexit hooks.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// Arranges for `fd` to be fd 3 of the command's child (without CLOEXEC).
pub fn command_with_fd3(cmd: &mut std::process::Command, fd: RawFd) {
    // SAFETY: the closure runs between fork and exec and only calls dup2 /
    // fcntl, which are async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
    }
}

static LOG_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn log_signal(sig: c_int) {
    let name = crate::ids::static_signal_name(sig).as_bytes();
    let mut buf = [0u8; 32];
    let n = name.len().min(24);
    buf[..n].copy_from_slice(&name[..n]);
    let mut len = n;
    if name == b"SIGRT" {
        // Real-time signals: append the number (two digits at most).
        let s = sig as u32;
        if s >= 10 {
            buf[len] = b'0' + (s / 10 % 10) as u8;
            len += 1;
        }
        buf[len] = b'0' + (s % 10) as u8;
        len += 1;
    }
    buf[len] = b'\n';
    len += 1;
    let fd = LOG_FD.load(Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; `buf` is a live stack buffer of
    // at least `len` bytes.
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), len);
    }
}

/// Installs a handler for each of `signals` that appends the signal's name and
/// a newline to `log_fd` (one write per signal, so lines never interleave).
pub fn install_signal_logger(log_fd: RawFd, signals: &[i32]) -> Result<(), Errno> {
    LOG_FD.store(log_fd, Ordering::Relaxed);
    for &sig in signals {
        // SAFETY: a zeroed sigaction is a valid starting value; we set a
        // handler with the `fn(c_int)` signature the kernel calls for
        // non-SA_SIGINFO handlers, and the handler is async-signal-safe.
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = log_signal as extern "C" fn(c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if r < 0 {
            return Err(last_errno());
        }
    }
    Ok(())
}

/// A signal set holding `signals`, real-time ones included (nix's `SigSet`
/// only names the standard signals). Numbers the C library refuses (glibc
/// keeps 32 and 33 for itself) or that are out of range are left out.
pub fn signal_set(signals: &[i32]) -> nix::sys::signal::SigSet {
    // SAFETY: sigemptyset initializes the zeroed set before any sigaddset,
    // which only sets bits in it (and refuses invalid numbers with EINVAL,
    // leaving the set as it was); `from_sigset_t_unchecked` gets the
    // initialized set, as it requires.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        nix::sys::signal::SigSet::from_sigset_t_unchecked(set)
    }
}

/// The C library's real-time signal range, `SIGRTMIN()..=SIGRTMAX()`.
pub fn realtime_signals() -> std::ops::RangeInclusive<i32> {
    libc::SIGRTMIN()..=libc::SIGRTMAX()
}

/// Blocks until a signal handler runs (`pause(2)`).
pub fn pause() {
    // SAFETY: pause has no arguments and no memory effects.
    unsafe {
        libc::pause();
    }
}

/// `sysconf(_SC_CLK_TCK)`: clock ticks per second of `/proc` start times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let r = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if r > 0 { r as u64 } else { 100 }
}

/// True when `path` names something executable by us (`access(X_OK)`).
pub fn is_executable(path: &CStr) -> bool {
    rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
}

/// Takes ownership of an inherited fd (e.g. the control socket at fd 3),
/// after checking it is open.
pub fn take_inherited_fd(fd: RawFd) -> Result<std::os::fd::OwnedFd, Errno> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    let r = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if r < 0 {
        return Err(last_errno());
    }
    // SAFETY: the fd is open (checked above) and was handed to this process
    // by its parent for exclusive use; nothing else in the process owns it.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Closes every fd above 2 except `keep` (fds a harness process leaked to
/// us without CLOEXEC must not reach world processes).
pub fn close_fds_except(keep: RawFd) {
    let ranges: [(u32, u32); 2] = if keep >= 3 {
        [(3, keep as u32 - 1), (keep as u32 + 1, u32::MAX)]
    } else {
        [(3, u32::MAX), (1, 0)]
    };
    for (first, last) in ranges {
        if first > last {
            continue;
        }
        // SAFETY: close_range only closes descriptors; the process is a fresh
        // single-threaded doppel-init that owns no Rust objects wrapping them
        // (the kept control fd is excluded).
        unsafe {
            libc::syscall(libc::SYS_close_range, first, last, 0u32);
        }
    }
}

/// Peeks (WNOWAIT) at one exited child: its PID, or `None` when no child has
/// exited yet. The child stays a zombie until reaped.
pub fn peek_exited_child() -> Result<Option<i32>, Errno> {
    // SAFETY: a zeroed siginfo_t is a valid output buffer for waitid, which
    // fills it in (or leaves si_pid 0 with WNOHANG when nothing is ready);
    // si_pid() reads the union member waitid sets for CLD_* codes.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if r < 0 {
            return Err(last_errno());
        }
        let pid = info.si_pid();
        Ok((pid > 0).then_some(pid))
    }
}

/// kill(2) with a raw signal number (including real-time signals, which the
/// typed wrappers of nix do not cover).
pub fn kill(pid: i32, sig: i32) -> Result<(), Errno> {
    // SAFETY: kill has no memory effects; `pid` is a positive PID chosen by
    // the caller (never 0 or -1, which would address groups).
    let r = unsafe { libc::kill(pid, sig) };
    if r < 0 { Err(last_errno()) } else { Ok(()) }
}

/// Brings up the loopback interface (`lo`) of this process's network
/// namespace (a new one starts with it down).
pub fn loopback_up() -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    let sock = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )
    .map_err(|e| e.raw_os_error())?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value (an empty
    // name, no flags).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into
    // `req`, which lives across the call; `sock` is an open socket.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(last_errno());
    }
    // SAFETY: the union's flags member is the one SIOCGIFFLAGS filled in.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(last_errno());
    }
    Ok(())
}
