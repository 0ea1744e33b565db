//! refbox's optional daemon: `refbox daemon`, `daemon-status`,
//! `daemon-stop`.
//!
//! No box needs it. Each box is supervised by its own shim, which is no
//! daemon's child, so a daemon that crashes orphans nothing and one that
//! starts adopts what it finds (a recovery pass, the same as `refbox
//! recover`). What it shows is how a daemon keeps its *own* pid, which is
//! where supervisors keep getting PID reuse wrong:
//!
//! - one daemon per root, by an exclusive `flock` on `{root}/.daemon.lock`
//!   held for the daemon's whole life and released by the kernel when it
//!   dies: a lost pid record cannot let a second daemon start, and a stale
//!   one cannot keep a new one from starting;
//! - its pid written as a v2 identity record (`{root}/.daemon.pid`: pid,
//!   start time, boot id, pidfs inode) and verified like a shim's (through a
//!   pidfd, by the `verify_daemon` strategy) before anything trusts or signals it:
//!   a process that reuses the pid is someone else, never "the daemon".

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FlockOperation, Mode, OFlags};

use super::{Runtime, RuntimeError};
use crate::fsread;
use crate::identity::{
    self, AbsentReason, IdentityRecord, ProcessIdentity, RecordError, RecordV2, StartTime,
    VerifiedProcess, VerifyRequest,
};
use crate::ids::BoxId;
use crate::pid::Pid;

/// The daemon's identity record, beneath the root (a dot name: `list`
/// skips it).
pub const DAEMON_RECORD: &str = ".daemon.pid";
/// The lock the daemon holds for its life, beneath the root.
pub const DAEMON_LOCK: &str = ".daemon.lock";
/// The daemon's `argv[1]` (`refbox daemon --root DIR`): what verification
/// compares without pidfs, as it compares a shim's box id.
pub const DAEMON_WORD: &str = "daemon";
/// How long `daemon-stop` waits for the daemon to exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Why a daemon command failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon holds the lock.
    #[error("a daemon already serves this root: {lock} is locked{}", pid_note(*.pid))]
    AlreadyRunning {
        /// The lock file.
        lock: PathBuf,
        /// The running daemon's verified pid, when its record says.
        pid: Option<Pid>,
    },
    /// The lock file could not be opened or locked.
    #[error("{path}: cannot take the daemon's lock")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The daemon's own identity could not be read.
    #[error("cannot read this process's own identity ({what})")]
    SelfIdentity {
        /// What could not be read.
        what: String,
    },
    /// The record could not be written.
    #[error("{path}: cannot record the daemon")]
    Record {
        /// The record.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::fswrite::WriteError,
    },
    /// The record could not be read.
    #[error("{path}: unreadable daemon record")]
    Read {
        /// The record.
        path: PathBuf,
        /// Why.
        #[source]
        source: fsread::ReadError,
    },
    /// The record is malformed.
    #[error("{path}: malformed daemon record")]
    Corrupt {
        /// The record.
        path: PathBuf,
        /// Why.
        #[source]
        source: RecordError,
    },
    /// The recorded pid cannot be verified.
    #[error("daemon pid {pid} cannot be verified ({reason}); refusing to signal it")]
    Unverifiable {
        /// The recorded pid.
        pid: Pid,
        /// Why.
        reason: String,
    },
    /// SIGTERM could not be sent.
    #[error("cannot signal the daemon (pid {pid})")]
    Signal {
        /// The daemon.
        pid: Pid,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The daemon outlived SIGTERM.
    #[error("the daemon (pid {pid}) did not exit within {} s of SIGTERM", STOP_DEADLINE.as_secs())]
    StopTimeout {
        /// The daemon.
        pid: Pid,
    },
}

fn pid_note(pid: Option<Pid>) -> String {
    pid.map_or_else(String::new, |p| format!(" (pid {p})"))
}

/// What the daemon record says about a live daemon.
#[derive(Debug)]
pub enum DaemonStatus {
    /// The recorded daemon is alive, verified and pinned.
    Running(VerifiedProcess),
    /// No daemon: no record, or the recorded process is gone or is
    /// someone else now.
    Stopped {
        /// The recorded pid, if there was a record.
        pid: Option<Pid>,
        /// Why it is not the daemon.
        reason: AbsentReason,
    },
}

/// The running daemon's hold on its root: the lock, and the record it
/// wrote. Dropping it releases the lock; [`DaemonGuard::release`] removes
/// the record too.
#[derive(Debug)]
pub struct DaemonGuard {
    _lock: Option<OwnedFd>,
    record: Vec<u8>,
    pid: Pid,
}

impl DaemonGuard {
    /// The daemon's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

/// What a daemon-exclusivity strategy is given.
#[derive(Debug)]
pub struct DaemonLockRequest<'a> {
    /// The root, held open.
    pub root: BorrowedFd<'a>,
    /// The root's path, for errors.
    pub root_path: &'a Path,
    /// The pid the daemon record names now, unverified (`None`: no record,
    /// or not a record).
    pub recorded: Option<Pid>,
}

/// A daemon-exclusivity strategy's answer.
#[derive(Debug)]
pub enum Exclusive {
    /// This process may serve; the fd (a lock) is held for its life.
    Held(Option<OwnedFd>),
    /// Another daemon serves this root.
    Busy,
}

/// A daemon-exclusivity strategy ([`crate::Strategies::daemon_exclusive`]).
pub type DaemonExclusiveFn = fn(&DaemonLockRequest<'_>) -> Result<Exclusive, DaemonError>;

/// refbox's exclusivity: an exclusive `flock` on [`DAEMON_LOCK`], taken
/// without waiting and held for the daemon's life. The kernel drops it when
/// the daemon dies, however it dies; no pid is looked at, so neither a
/// reused pid nor a lost record can fool it.
pub fn daemon_lock(req: &DaemonLockRequest<'_>) -> Result<Exclusive, DaemonError> {
    let path = req.root_path.join(DAEMON_LOCK);
    let lock = rustix::fs::openat(
        req.root,
        DAEMON_LOCK,
        OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| DaemonError::Lock {
        path: path.clone(),
        source: e.into(),
    })?;
    match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Exclusive::Held(Some(lock))),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(Exclusive::Busy),
        Err(e) => Err(DaemonError::Lock {
            path,
            source: e.into(),
        }),
    }
}

impl Runtime {
    fn daemon_path(&self, name: &str) -> PathBuf {
        self.layout.root().join(name)
    }

    /// `refbox daemon`, its first half: takes the root's daemon lock
    /// (refused while another daemon holds it), then records this process
    /// as the daemon.
    pub fn daemon_begin(&self) -> Result<DaemonGuard, RuntimeError> {
        let record_path = self.daemon_path(DAEMON_RECORD);
        let recorded = self
            .read_in((&record_path, DAEMON_RECORD.as_ref()), fsread::RECORD_CAP)
            .ok()
            .and_then(|b| (self.strategies.parse_identity)(&b).ok())
            .map(|r| r.pid());
        let lock = match (self.strategies.daemon_exclusive)(&DaemonLockRequest {
            root: self.root_fd.as_fd(),
            root_path: self.layout.root(),
            recorded,
        })? {
            Exclusive::Held(lock) => lock,
            Exclusive::Busy => {
                let pid = match self.daemon_status() {
                    Ok(DaemonStatus::Running(p)) => Some(p.pid),
                    _ => None,
                };
                return Err(DaemonError::AlreadyRunning {
                    lock: self.daemon_path(DAEMON_LOCK),
                    pid,
                }
                .into());
            }
        };
        let me = own_record(self.host()?.pidfs, self.host()?.boot_id)?;
        let record = identity::format_record(&IdentityRecord::V2(me));
        // Whatever record is there is stale: its daemon held no lock.
        (self.strategies.write_file)(self.layout.root(), DAEMON_RECORD, &record).map_err(
            |source| DaemonError::Record {
                path: self.daemon_path(DAEMON_RECORD),
                source,
            },
        )?;
        Ok(DaemonGuard {
            _lock: lock,
            record,
            pid: me.pid,
        })
    }

    /// The end of a daemon's life: its record is removed if it is still
    /// its own, then the lock is released.
    pub fn daemon_end(&self, guard: DaemonGuard) {
        let path = self.daemon_path(DAEMON_RECORD);
        if self
            .read_in((&path, DAEMON_RECORD.as_ref()), fsread::RECORD_CAP)
            .is_ok_and(|b| b == guard.record)
        {
            let _ = rustix::fs::unlinkat(
                self.root_fd.as_fd(),
                DAEMON_RECORD,
                rustix::fs::AtFlags::empty(),
            );
        }
    }

    /// `refbox daemon-status`: is the recorded daemon alive (verified)?
    pub fn daemon_status(&self) -> Result<DaemonStatus, RuntimeError> {
        let path = self.daemon_path(DAEMON_RECORD);
        let bytes = match self.read_in((&path, DAEMON_RECORD.as_ref()), fsread::RECORD_CAP) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Ok(DaemonStatus::Stopped {
                    pid: None,
                    reason: AbsentReason::NoRecord,
                });
            }
            Err(source) => return Err(DaemonError::Read { path, source }.into()),
        };
        let record = (self.strategies.parse_identity)(&bytes)
            .map_err(|source| DaemonError::Corrupt { path, source })?;
        let word = BoxId::new(DAEMON_WORD).expect("a valid id");
        match (self.strategies.verify_daemon)(&VerifyRequest {
            id: &word,
            record: &record,
            host: self.host()?,
        }) {
            ProcessIdentity::Verified(p) => Ok(DaemonStatus::Running(p)),
            ProcessIdentity::Absent { pid, reason } => Ok(DaemonStatus::Stopped { pid, reason }),
            ProcessIdentity::Legacy { pid, reason } => {
                Err(DaemonError::Unverifiable { pid, reason }.into())
            }
        }
    }

    /// `refbox daemon-stop`: SIGTERM to the verified daemon, then waits for
    /// it to exit. Returns the stopped daemon's pid, or `None` when none
    /// runs (a stale record is then removed, its pid never signalled).
    pub fn daemon_stop(&self) -> Result<Option<Pid>, RuntimeError> {
        match self.daemon_status()? {
            DaemonStatus::Running(p) => {
                (self.strategies.send_signal)(&p, libc::SIGTERM)
                    .map_err(|source| DaemonError::Signal { pid: p.pid, source })?;
                let exited = match &p.pidfd {
                    Some(fd) => identity::wait_pidfd(fd, STOP_DEADLINE),
                    // Fixture strategies verify without a pidfd.
                    None => wait_gone(p.pid, STOP_DEADLINE),
                };
                if !exited {
                    return Err(DaemonError::StopTimeout { pid: p.pid }.into());
                }
                Ok(Some(p.pid))
            }
            DaemonStatus::Stopped { pid, .. } => {
                if pid.is_some() && !self.daemon_lock_held() {
                    let _ = rustix::fs::unlinkat(
                        self.root_fd.as_fd(),
                        DAEMON_RECORD,
                        rustix::fs::AtFlags::empty(),
                    );
                }
                Ok(None)
            }
        }
    }

    /// Whether some daemon holds the lock now (a shared lock is tried and
    /// dropped at once; only `daemon-stop` asks, never a starting daemon's
    /// readiness poll).
    fn daemon_lock_held(&self) -> bool {
        let Ok(fd) = rustix::fs::openat(
            self.root_fd.as_fd(),
            DAEMON_LOCK,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY,
            Mode::empty(),
        ) else {
            return false;
        };
        matches!(
            rustix::fs::flock(&fd, FlockOperation::NonBlockingLockShared),
            Err(rustix::io::Errno::WOULDBLOCK)
        )
    }
}

/// This process as a v2 identity record.
fn own_record(pidfs: bool, boot_id: identity::BootId) -> Result<RecordV2, DaemonError> {
    let me = rustix::process::getpid();
    let pid =
        Pid::new(i64::from(me.as_raw_nonzero().get())).map_err(|e| DaemonError::SelfIdentity {
            what: e.to_string(),
        })?;
    let stat = fsread::read_proc(std::path::Path::new("/proc/self/stat"), 4096).map_err(|e| {
        DaemonError::SelfIdentity {
            what: format!("/proc/self/stat: {e}"),
        }
    })?;
    let start_time: StartTime =
        identity::parse_stat_start_time(&stat).ok_or_else(|| DaemonError::SelfIdentity {
            what: "/proc/self/stat: no start time".into(),
        })?;
    let pidfs_ino = if pidfs {
        rustix::process::pidfd_open(me, rustix::process::PidfdFlags::empty())
            .and_then(|fd| rustix::fs::fstat(&fd))
            .map(|st| st.st_ino)
            .map_err(|e| DaemonError::SelfIdentity {
                what: format!("pidfd_open(self): {e}"),
            })?
    } else {
        0
    };
    Ok(RecordV2 {
        pid,
        start_time,
        boot_id,
        pidfs_ino,
    })
}

/// Polls until `pid` is gone (fixture strategies only: no pidfd).
fn wait_gone(pid: Pid, deadline: Duration) -> bool {
    let end = std::time::Instant::now() + deadline;
    while std::time::Instant::now() < end {
        if rustix::process::test_kill_process(pid.to_rustix()).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}
