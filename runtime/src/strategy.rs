//! The decisions a runtime can get wrong, each a public, swappable seam.
//! refbox's correct choices are [`Strategies::default`]; a fixture runtime
//! (flawbox) swaps in one naive strategy at a time and reuses everything
//! else, including the CLI (`refbox::cli::main_with`).
//!
//! Plain `fn` pointers, so each strategy is a free function a reader can
//! find by name.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::process::ExitStatus;

use crate::config::ShimConfig;
use crate::fsread::ReadError;
use crate::fswrite::WriteError;
use crate::identity::{
    IdentityRecord, ProcessIdentity, RecordError, VerifiedProcess, VerifyRequest,
};
use crate::ids::BoxId;
use crate::pid::Pid;
use crate::signal::SignalError;

/// The swappable decisions. Every field has refbox's correct choice as default.
#[derive(Debug, Clone, Copy)]
pub struct Strategies {
    /// Is the recorded process still the box's? Default
    /// [`crate::identity::verify_with_pidfd`]. Naive alternatives: `kill -0`
    /// liveness, substring match of the box id in cmdline, start time only.
    /// A strategy that accepts a process should return a pidfd for it in
    /// [`VerifiedProcess`]; without one the default `send_signal` refuses.
    pub verify: fn(&VerifyRequest<'_>) -> ProcessIdentity,
    /// Parses `shim.pid`. Default [`crate::identity::parse_record`], which
    /// refuses pids ≤ 1. Naive alternative: accept any integer.
    pub parse_identity: fn(&[u8]) -> Result<IdentityRecord, RecordError>,
    /// Reads a file under the root with a cap. Default
    /// [`crate::fsread::read_capped_in`] (beneath the open root, no symlink
    /// on the way, O_NONBLOCK, fstat checks). Naive: `std::fs::read` of
    /// the full path.
    pub read_file: fn(&crate::fsread::FileRef<'_>, u64, u32) -> Result<Vec<u8>, ReadError>,
    /// Replaces a file under the root. Default
    /// [`crate::fswrite::write_atomic`]. Naive: write in place.
    pub write_file: fn(&Path, &str, &[u8]) -> Result<(), WriteError>,
    /// Creates a private dir. Default [`crate::fswrite::create_private_dir`]
    /// (0700 from birth). Naive: create, then chmod.
    pub make_dir: fn(&Path) -> Result<(), WriteError>,
    /// Sends a signal to a verified process. Default [`signal_via_pidfd`].
    /// Naive: `kill(pid)` (gap between check and signal) or spawning kill(1).
    pub send_signal: fn(&VerifiedProcess, i32) -> io::Result<()>,
    /// Parses a user's signal. Default [`allowlisted_signal`]. Naive: any number.
    pub parse_signal: fn(&str) -> Result<i32, SignalError>,
    /// The shim's argv after `refbox-shim`. Default [`shim_args_id_only`].
    /// Naive: secrets as flags.
    pub shim_args: fn(&BoxId, &ShimConfig) -> Vec<String>,
    /// Reaps exited children among the registered ones. Default
    /// [`reap_registered`] (`waitid` on each pidfd). Naive: `waitpid(-1)`,
    /// which steals other children's statuses.
    pub reap: crate::reaper::ReapFn,
    /// Is the process the daemon record names still the daemon? Default
    /// [`crate::identity::verify_with_pidfd`], as for a shim (the daemon's
    /// `argv[1]` stands for the box id). Naive: `kill -0`.
    pub verify_daemon: fn(&VerifyRequest<'_>) -> ProcessIdentity,
    /// Makes the daemon the root's only one. Default
    /// [`crate::runtime::daemon_lock`] (an exclusive `flock` held for
    /// life). Naive: "a live process at the recorded pid means running".
    pub daemon_exclusive: crate::runtime::DaemonExclusiveFn,
}

impl Default for Strategies {
    fn default() -> Self {
        Strategies {
            verify: crate::identity::verify_with_pidfd,
            parse_identity: crate::identity::parse_record,
            read_file: crate::fsread::read_capped_in,
            write_file: crate::fswrite::write_atomic,
            make_dir: crate::fswrite::create_private_dir,
            send_signal: signal_via_pidfd,
            parse_signal: allowlisted_signal,
            shim_args: shim_args_id_only,
            reap: reap_registered,
            verify_daemon: crate::identity::verify_with_pidfd,
            daemon_exclusive: crate::runtime::daemon_lock,
        }
    }
}

/// Signals through the pidfd that was verified: no window in which the pid
/// could be recycled between check and signal. Refuses without a pidfd.
pub fn signal_via_pidfd(p: &VerifiedProcess, sig: i32) -> io::Result<()> {
    use std::os::fd::AsFd;
    match &p.pidfd {
        Some(fd) => crate::sys::pidfd_send_signal(fd.as_fd(), sig),
        None => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no verified pidfd: refusing to signal a bare pid",
        )),
    }
}

/// The allowlist parser: TERM, KILL, INT, HUP, QUIT, USR1, USR2, ABRT.
pub fn allowlisted_signal(s: &str) -> Result<i32, SignalError> {
    crate::signal::parse_signal(s).map(crate::signal::AllowedSignal::number)
}

/// The shim gets its box id as its only argument; the rest comes on stdin.
pub fn shim_args_id_only(id: &BoxId, _config: &ShimConfig) -> Vec<String> {
    vec![id.as_str().to_string()]
}

/// `waitid(P_PIDFD, WEXITED | WNOHANG)` for each registered child, never
/// `waitpid(-1)`: only the children this runtime spawned are reaped, and
/// through their pidfds, so not even a reused pid number can be mistaken
/// for one of them.
pub fn reap_registered(ready: &[(Pid, BorrowedFd<'_>)]) -> Vec<(Pid, ExitStatus)> {
    use rustix::process::{WaitId, WaitIdOptions};
    let mut out = Vec::new();
    for &(pid, fd) in ready {
        if let Ok(Some(status)) = rustix::process::waitid(
            WaitId::PidFd(fd),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        ) {
            out.push((pid, exit_status_of(&status)));
        }
    }
    out
}

/// A `waitid` status as the `ExitStatus` std builds from a wait status.
fn exit_status_of(status: &rustix::process::WaitIdStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    let raw = match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) if status.exited() => (code & 0xff) << 8,
        (_, Some(sig)) => sig | if status.dumped() { 0x80 } else { 0 },
        _ => 0,
    };
    ExitStatus::from_raw(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Reaps `child` through its pidfd with the default strategy.
    fn reap(child: &std::process::Child) -> Vec<(Pid, ExitStatus)> {
        let pid = Pid::new(i64::from(child.id())).unwrap();
        let fd = rustix::process::pidfd_open(pid.to_rustix(), rustix::process::PidfdFlags::empty())
            .unwrap();
        assert!(crate::identity::wait_pidfd(
            &fd,
            std::time::Duration::from_secs(10)
        ));
        reap_registered(&[(pid, fd.as_fd())])
    }

    #[test]
    fn reaps_through_the_pidfd_with_code_or_signal() {
        let mut exits = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 5"])
            .spawn()
            .unwrap();
        let got = reap(&exits);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.code(), Some(5));
        assert!(exits.wait().is_err(), "already reaped");

        let mut killed = std::process::Command::new("/bin/sleep")
            .arg("100")
            .spawn()
            .unwrap();
        killed.kill().unwrap();
        let got = reap(&killed);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(got[0].1.signal(), Some(libc::SIGKILL));
        // Reaped: std's own wait now finds no child.
        assert!(killed.wait().is_err());
    }
}
