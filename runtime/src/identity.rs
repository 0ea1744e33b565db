//! Process identity: the `shim.pid` record codec (v2 and legacy v1), the
//! writer the shim runs on itself between fork and exec, and verification of
//! a record against the live process through a pidfd.
//!
//! Record v2 is four lines: pid, start time (clock ticks since boot,
//! `/proc/PID/stat` field 22), boot id (`/proc/sys/kernel/random/boot_id`),
//! pidfs inode of the process (0 when the kernel has no pidfs). v1 (legacy)
//! is a lone pid: it is read, reported as `legacy`, and never signalled.
//!
//! Verification (strongest first): the boot id must match (a record from
//! another boot is dead without touching the pid); `pidfd_open(pid)` pins the
//! process; its pidfs inode must equal the recorded one (pidfs inodes are not
//! reused while the machine is up, so this alone tells a recycled pid, even
//! one started in the same clock tick, and /proc is then not read). Without
//! pidfs (kernels before 6.9) the check is start time + boot id + exact
//! `argv[1] == box id`, which is weaker: an impostor born in the same tick
//! with the same argv passes. Either way the pidfd is checked to be still
//! alive *after* the /proc reads, so they described the pinned process, and
//! every signal goes through that same pidfd.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::process::PidfdFlags;

use crate::fsread;
use crate::ids::BoxId;
use crate::pid::{Pid, PidError};

/// `PID_FS_MAGIC` from linux/magic.h: the filesystem type of pidfds on 6.9+.
pub const PIDFS_MAGIC: i64 = 0x5049_4446;

/// Start time of a process in clock ticks since boot (stat field 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StartTime(pub u64);

/// A boot id: 36 ASCII characters, lowercase hex and dashes (a UUID).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BootId([u8; 36]);

impl BootId {
    /// Parses a boot id (surrounding whitespace ignored).
    pub fn parse(s: &[u8]) -> Result<Self, RecordError> {
        let s = s.trim_ascii();
        let ok = s.len() == 36
            && s.iter().enumerate().all(|(i, &b)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    b == b'-'
                } else {
                    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
                }
            });
        if !ok {
            return Err(RecordError::BadBootId);
        }
        let mut a = [0u8; 36];
        a.copy_from_slice(s);
        Ok(BootId(a))
    }

    /// This boot's id.
    pub fn current() -> Result<Self, IdentityError> {
        let path = PathBuf::from("/proc/sys/kernel/random/boot_id");
        let bytes =
            fsread::read_proc(&path, 64).map_err(|source| IdentityError::Host { source })?;
        BootId::parse(&bytes).map_err(|source| IdentityError::Corrupt { path, source })
    }

    /// The 36 ASCII bytes.
    pub fn as_bytes(&self) -> &[u8; 36] {
        &self.0
    }
}

impl fmt::Debug for BootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootId({self})")
    }
}

impl fmt::Display for BootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always ASCII by construction.
        f.write_str(std::str::from_utf8(&self.0).unwrap_or("?"))
    }
}

/// A v2 identity record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordV2 {
    /// The process.
    pub pid: Pid,
    /// Its start time.
    pub start_time: StartTime,
    /// The boot it was recorded in.
    pub boot_id: BootId,
    /// Its pidfs inode, 0 when the kernel had no pidfs.
    pub pidfs_ino: u64,
}

/// A parsed `shim.pid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityRecord {
    /// Current format.
    V2(RecordV2),
    /// Legacy: a lone pid, unverifiable.
    V1 {
        /// The recorded pid.
        pid: Pid,
    },
}

impl IdentityRecord {
    /// The recorded pid.
    pub fn pid(&self) -> Pid {
        match self {
            IdentityRecord::V2(r) => r.pid,
            IdentityRecord::V1 { pid } => *pid,
        }
    }
}

/// Why record bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not ASCII text.
    #[error("not ASCII text")]
    NotText,
    /// Neither 1 (v1) nor 4 (v2) lines.
    #[error("{lines} lines: expected 1 (v1: pid) or 4 (v2: pid, start time, boot id, pidfs inode)")]
    BadLineCount {
        /// How many lines there were.
        lines: usize,
    },
    /// A number field is not a decimal number.
    #[error("line {line}: not a decimal number")]
    BadNumber {
        /// 1-based line number.
        line: usize,
    },
    /// The pid is out of range (0, negative, 1, huge).
    #[error("line 1: {0}")]
    BadPid(#[source] PidError),
    /// The boot id is not a UUID.
    #[error("boot id is not a lowercase UUID")]
    BadBootId,
}

fn parse_u64(line: &[u8], lineno: usize) -> Result<u64, RecordError> {
    if line.is_empty() || line.len() > 20 || !line.iter().all(u8::is_ascii_digit) {
        return Err(RecordError::BadNumber { line: lineno });
    }
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RecordError::BadNumber { line: lineno })
}

fn parse_pid(line: &[u8]) -> Result<Pid, RecordError> {
    let neg = line.first() == Some(&b'-');
    let digits = if neg { &line[1..] } else { line };
    let v = parse_u64(digits, 1)?;
    let v = if neg {
        -(v.min(i64::MAX as u64) as i64)
    } else {
        v.min(i64::MAX as u64) as i64
    };
    Pid::new(v).map_err(RecordError::BadPid)
}

/// Parses `shim.pid` bytes. Never panics.
pub fn parse_record(bytes: &[u8]) -> Result<IdentityRecord, RecordError> {
    if !bytes.is_ascii() {
        return Err(RecordError::NotText);
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    match lines.as_slice() {
        [pid] => Ok(IdentityRecord::V1 {
            pid: parse_pid(pid.trim_ascii())?,
        }),
        [pid, start, boot, ino] => Ok(IdentityRecord::V2(RecordV2 {
            pid: parse_pid(pid)?,
            start_time: StartTime(parse_u64(start, 2)?),
            boot_id: BootId::parse(boot)?,
            pidfs_ino: parse_u64(ino, 4)?,
        })),
        other => Err(RecordError::BadLineCount { lines: other.len() }),
    }
}

/// Maximum length of a formatted v2 record.
pub const RECORD_MAX: usize = 8 + 21 + 37 + 21;

/// Formats a v2 record into `buf` without allocating (the child side runs
/// between fork and exec). Returns the length.
pub fn format_v2_into(r: &RecordV2, buf: &mut [u8; RECORD_MAX]) -> usize {
    let mut n = 0;
    n += itoa(r.pid.get() as u64, &mut buf[n..]);
    buf[n] = b'\n';
    n += 1;
    n += itoa(r.start_time.0, &mut buf[n..]);
    buf[n] = b'\n';
    n += 1;
    buf[n..n + 36].copy_from_slice(&r.boot_id.0);
    n += 36;
    buf[n] = b'\n';
    n += 1;
    n += itoa(r.pidfs_ino, &mut buf[n..]);
    buf[n] = b'\n';
    n + 1
}

/// Formats a record (v2 or v1).
pub fn format_record(r: &IdentityRecord) -> Vec<u8> {
    match r {
        IdentityRecord::V2(v2) => {
            let mut buf = [0u8; RECORD_MAX];
            let n = format_v2_into(v2, &mut buf);
            buf[..n].to_vec()
        }
        IdentityRecord::V1 { pid } => format!("{pid}\n").into_bytes(),
    }
}

/// Writes `v` in decimal at the start of `out`; returns the length.
fn itoa(mut v: u64, out: &mut [u8]) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    out[..len].copy_from_slice(&tmp[i..]);
    len
}

/// Extracts the start time (field 22) from `/proc/PID/stat` contents. The
/// command name (field 2) may contain spaces and parentheses, so fields are
/// counted after the *last* `)`. No allocation.
pub fn parse_stat_start_time(stat: &[u8]) -> Option<StartTime> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    // After ")" come fields 3 (state), 4, ...; field 22 is the 20th of them.
    let field = stat[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(19)?;
    let field = field.trim_ascii_end();
    if field.is_empty() || field.len() > 20 || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for &d in field {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(StartTime(v))
}

/// What the parent prepares for the child to record its own identity before
/// exec. Everything allocated here, by the parent; the child only makes
/// syscalls.
#[derive(Debug)]
pub struct ChildRecordWriter {
    tmp: CString,
    dest: CString,
    boot_id: BootId,
    use_pidfs: bool,
}

impl ChildRecordWriter {
    /// Prepares a writer of `dest` (via `tmp`, created O_EXCL then renamed).
    pub fn new(tmp: PathBuf, dest: PathBuf, boot_id: BootId, use_pidfs: bool) -> io::Result<Self> {
        use std::os::unix::ffi::OsStringExt;
        let c = |p: PathBuf| CString::new(p.into_os_string().into_vec()).map_err(io::Error::other);
        Ok(ChildRecordWriter {
            tmp: c(tmp)?,
            dest: c(dest)?,
            boot_id,
            use_pidfs,
        })
    }

    /// Runs in the child between fork and exec: async-signal-safe (raw
    /// syscalls through rustix, stack buffers, no allocation, no locks).
    pub fn write_in_child(&self) -> io::Result<()> {
        let raw_pid = rustix::process::getpid();
        let pid = Pid::new(i64::from(raw_pid.as_raw_nonzero().get()))
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let pidfs_ino = if self.use_pidfs {
            let fd = rustix::process::pidfd_open(raw_pid, PidfdFlags::empty())?;
            rustix::fs::fstat(&fd)?.st_ino
        } else {
            0
        };
        let mut stat = [0u8; 1024];
        let fd = rustix::fs::open(
            c"/proc/self/stat",
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut len = 0;
        while len < stat.len() {
            let n = rustix::io::read(&fd, &mut stat[len..])?;
            if n == 0 {
                break;
            }
            len += n;
        }
        drop(fd);
        let start_time = parse_stat_start_time(&stat[..len])
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut buf = [0u8; RECORD_MAX];
        let n = format_v2_into(
            &RecordV2 {
                pid,
                start_time,
                boot_id: self.boot_id,
                pidfs_ino,
            },
            &mut buf,
        );
        let fd = rustix::fs::open(
            self.tmp.as_c_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let mut off = 0;
        while off < n {
            off += rustix::io::write(&fd, &buf[off..n])?;
        }
        rustix::fs::fsync(&fd)?;
        drop(fd);
        rustix::fs::rename(self.tmp.as_c_str(), self.dest.as_c_str())?;
        Ok(())
    }
}

// f_type is i64 on x86_64 but narrower elsewhere.
#[allow(clippy::unnecessary_cast)]
fn is_pidfs(s: &rustix::fs::StatFs) -> bool {
    s.f_type as i64 == PIDFS_MAGIC
}

/// Facts about this machine that verification compares against.
#[derive(Debug, Clone, Copy)]
pub struct HostFacts {
    /// This boot's id.
    pub boot_id: BootId,
    /// Whether pidfds live on pidfs (kernel 6.9+), so their inodes identify
    /// processes.
    pub pidfs: bool,
}

impl HostFacts {
    /// Detects the boot id and pidfs support.
    pub fn detect() -> Result<Self, IdentityError> {
        let boot_id = BootId::current()?;
        let pidfs = rustix::process::pidfd_open(rustix::process::getpid(), PidfdFlags::empty())
            .and_then(rustix::fs::fstatfs)
            .map(|s| is_pidfs(&s))
            .unwrap_or(false);
        Ok(HostFacts { boot_id, pidfs })
    }
}

/// A process whose identity was verified, pinned by its pidfd.
#[derive(Debug)]
pub struct VerifiedProcess {
    /// Its pid.
    pub pid: Pid,
    /// The pidfd that was verified; signals go through it. `None` only in
    /// fixture strategies that verify without a pidfd.
    pub pidfd: Option<OwnedFd>,
}

/// Why no live process matches a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbsentReason {
    /// There is no `shim.pid`.
    NoRecord,
    /// Recorded in another boot: the pid was not looked at.
    OtherBoot {
        /// The recorded boot id.
        recorded: BootId,
    },
    /// No process has the pid (or it has exited).
    Dead,
    /// A different process holds the pid now.
    Recycled {
        /// Which check told them apart.
        evidence: String,
    },
}

impl fmt::Display for AbsentReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbsentReason::NoRecord => f.write_str("no identity record"),
            AbsentReason::OtherBoot { recorded } => {
                write!(f, "recorded in another boot ({recorded}); pid not examined")
            }
            AbsentReason::Dead => f.write_str("process is gone"),
            AbsentReason::Recycled { evidence } => write!(f, "pid recycled: {evidence}"),
        }
    }
}

/// What a record says about the live process.
#[derive(Debug)]
pub enum ProcessIdentity {
    /// The recorded process is alive and pinned.
    Verified(VerifiedProcess),
    /// The record cannot be verified (legacy lone pid, or verification not
    /// permitted): never signalled, never declared dead.
    Legacy {
        /// The recorded pid.
        pid: Pid,
        /// Why it cannot be verified.
        reason: String,
    },
    /// No live process matches the record.
    Absent {
        /// The recorded pid, if there was a record.
        pid: Option<Pid>,
        /// Why.
        reason: AbsentReason,
    },
}

/// What a verification strategy is asked.
#[derive(Debug)]
pub struct VerifyRequest<'a> {
    /// The box whose shim the record names.
    pub id: &'a BoxId,
    /// The record.
    pub record: &'a IdentityRecord,
    /// This machine.
    pub host: &'a HostFacts,
}

/// Errors reading identity-related host facts or records.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A host file could not be read.
    #[error("cannot read host facts")]
    Host {
        /// The read error (names the file).
        #[source]
        source: fsread::ReadError,
    },
    /// A record or host file is malformed.
    #[error("{path}: malformed identity record")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: RecordError,
    },
}

/// refbox's verification: boot id, pidfd, pidfs inode, start time (and
/// exact argv without pidfs), then liveness of the pidfd after the reads.
pub fn verify_with_pidfd(req: &VerifyRequest<'_>) -> ProcessIdentity {
    let rec = match req.record {
        IdentityRecord::V1 { pid } => {
            return ProcessIdentity::Legacy {
                pid: *pid,
                reason: "legacy v1 record (lone pid): cannot be verified, never signalled".into(),
            };
        }
        IdentityRecord::V2(r) => r,
    };
    let pid = rec.pid;
    let absent = |reason| ProcessIdentity::Absent {
        pid: Some(pid),
        reason,
    };
    if rec.boot_id != req.host.boot_id {
        return absent(AbsentReason::OtherBoot {
            recorded: rec.boot_id,
        });
    }
    let pidfd = match rustix::process::pidfd_open(pid.to_rustix(), PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return absent(AbsentReason::Dead),
        // The number now belongs to a non-leader thread: the shim was a
        // thread-group leader, so this is someone else.
        Err(rustix::io::Errno::INVAL) => {
            return absent(AbsentReason::Recycled {
                evidence: "the pid is now a thread of another process".into(),
            });
        }
        Err(e) => {
            return ProcessIdentity::Legacy {
                pid,
                reason: format!("pidfd_open failed: {e}"),
            };
        }
    };
    let use_inode = req.host.pidfs && rec.pidfs_ino != 0;
    if use_inode {
        match rustix::fs::fstat(&pidfd) {
            Ok(st) if st.st_ino == rec.pidfs_ino => {}
            Ok(st) => {
                return absent(AbsentReason::Recycled {
                    evidence: format!(
                        "pidfs inode {} is not the recorded {}",
                        st.st_ino, rec.pidfs_ino
                    ),
                });
            }
            Err(e) => {
                return ProcessIdentity::Legacy {
                    pid,
                    reason: format!("fstat(pidfd) failed: {e}"),
                };
            }
        }
    }
    if use_inode {
        // The pidfs inode matched: it names this very process for the whole
        // boot (never reused), so start time and argv cannot tell anything
        // more, and /proc (≈ 2/3 of a verification's cost) is not read.
        return alive_or_dead(pid, pidfd);
    }
    // The pidfd pins a live process: a /proc read that fails now says
    // nothing about identity (EACCES under hidepid, a race with exit), so it
    // is dead only if the pidfd says so, else unverifiable — never "dead"
    // on a guess, which would have recovery mark a live box stopped.
    let unreadable = |path: &Path, e: &dyn std::fmt::Display, pidfd: &OwnedFd| {
        if pidfd_exited(pidfd) {
            absent(AbsentReason::Dead)
        } else {
            ProcessIdentity::Legacy {
                pid,
                reason: format!("{}: cannot read: {e}", path.display()),
            }
        }
    };
    let stat_path = PathBuf::from(format!("/proc/{pid}/stat"));
    let found = match fsread::read_proc(&stat_path, 4096) {
        Ok(b) => parse_stat_start_time(&b),
        Err(e) => return unreadable(&stat_path, &e, &pidfd),
    };
    match found {
        Some(st) if st == rec.start_time => {}
        Some(st) => {
            return absent(AbsentReason::Recycled {
                evidence: format!(
                    "start time {} is not the recorded {}",
                    st.0, rec.start_time.0
                ),
            });
        }
        None => {
            return ProcessIdentity::Legacy {
                pid,
                reason: format!("{}: unparsable", stat_path.display()),
            };
        }
    }
    // Fallback without pidfs: the shim's argv names its box exactly.
    let cmdline_path = PathBuf::from(format!("/proc/{pid}/cmdline"));
    let cmdline = match fsread::read_proc(&cmdline_path, 4096) {
        Ok(b) => b,
        Err(e) => return unreadable(&cmdline_path, &e, &pidfd),
    };
    // A zombie's cmdline is empty: it is dead, not someone else.
    if cmdline.is_empty() && pidfd_exited(&pidfd) {
        return absent(AbsentReason::Dead);
    }
    if cmdline.split(|&b| b == 0).nth(1) != Some(req.id.as_str().as_bytes()) {
        return absent(AbsentReason::Recycled {
            evidence: format!("argv[1] is not exactly {:?}", req.id.as_str()),
        });
    }
    // The reads above described the pinned process only if it is still alive.
    alive_or_dead(pid, pidfd)
}

/// The end of a verification: the pinned process is verified unless it has
/// exited (a zombie still has its pid, inode and /proc entry).
fn alive_or_dead(pid: Pid, pidfd: OwnedFd) -> ProcessIdentity {
    if pidfd_exited(&pidfd) {
        return ProcessIdentity::Absent {
            pid: Some(pid),
            reason: AbsentReason::Dead,
        };
    }
    ProcessIdentity::Verified(VerifiedProcess {
        pid,
        pidfd: Some(pidfd),
    })
}

/// Whether the process behind a pidfd has exited (a pidfd polls readable
/// then). Zombies count as exited.
pub fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut fds, Some(&zero)) {
        Ok(n) => n > 0,
        Err(_) => false,
    }
}

/// Waits until the process behind a pidfd exits, up to `timeout`. Returns
/// whether it did.
pub fn wait_pidfd(pidfd: impl AsFd, timeout: std::time::Duration) -> bool {
    use rustix::event::{PollFd, PollFlags};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOOT: &[u8] = b"17d1979e-581e-458d-9234-04fb6e30ef56";

    fn v2(pid: i64, st: u64, ino: u64) -> IdentityRecord {
        IdentityRecord::V2(RecordV2 {
            pid: Pid::new(pid).unwrap(),
            start_time: StartTime(st),
            boot_id: BootId::parse(BOOT).unwrap(),
            pidfs_ino: ino,
        })
    }

    #[test]
    fn parses_v2_and_v1() {
        let text = b"4242\n123456\n17d1979e-581e-458d-9234-04fb6e30ef56\n987\n";
        assert_eq!(parse_record(text).unwrap(), v2(4242, 123456, 987));
        assert_eq!(
            parse_record(b"4242\n").unwrap(),
            IdentityRecord::V1 {
                pid: Pid::new(4242).unwrap()
            }
        );
        assert_eq!(
            parse_record(b" 4242 ").unwrap(),
            IdentityRecord::V1 {
                pid: Pid::new(4242).unwrap()
            }
        );
    }

    #[test]
    fn rejects_garbage_pids() {
        for bad in [
            &b"0"[..],
            b"-1",
            b"1",
            b"99999999999",
            b"",
            b"abc",
            b"\xff\xfe",
        ] {
            assert!(parse_record(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stat_start_time_after_last_paren() {
        let stat = b"42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 777 1000 50 18446744073709551615\n";
        assert_eq!(parse_stat_start_time(stat), Some(StartTime(777)));
        assert_eq!(parse_stat_start_time(b"42 (x) S 1"), None);
        assert_eq!(parse_stat_start_time(b"no paren"), None);
    }

    #[test]
    fn own_stat_parses() {
        let b = std::fs::read("/proc/self/stat").unwrap();
        assert!(parse_stat_start_time(&b).is_some());
    }

    /// Kills and reaps the child it owns.
    struct ChildGuard(std::process::Child);

    impl Drop for ChildGuard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn matching_pidfs_inode_decides_without_proc() {
        let host = HostFacts::detect().unwrap();
        if !host.pidfs {
            eprintln!("ignored: this kernel has no pidfs inodes");
            return;
        }
        let child = ChildGuard(
            std::process::Command::new("sleep")
                .arg("1000")
                .spawn()
                .unwrap(),
        );
        let pid = Pid::new(i64::from(child.0.id())).unwrap();
        let fd = rustix::process::pidfd_open(pid.to_rustix(), PidfdFlags::empty()).unwrap();
        let ino = rustix::fs::fstat(&fd).unwrap().st_ino;
        let id = BoxId::new("b").unwrap();
        let verify = |start_time, pidfs_ino| {
            let record = IdentityRecord::V2(RecordV2 {
                pid,
                start_time: StartTime(start_time),
                boot_id: host.boot_id,
                pidfs_ino,
            });
            verify_with_pidfd(&VerifyRequest {
                id: &id,
                record: &record,
                host: &host,
            })
        };
        // A start time /proc would contradict: the inode alone decides, so
        // /proc was not read.
        assert!(matches!(verify(1, ino), ProcessIdentity::Verified(_)));
        assert!(matches!(
            verify(1, ino + 1),
            ProcessIdentity::Absent {
                reason: AbsentReason::Recycled { .. },
                ..
            }
        ));
    }

    proptest! {
        #[test]
        fn v2_round_trips(pid in 2i64..=4_194_304, st in any::<u64>(), ino in any::<u64>()) {
            let r = v2(pid, st, ino);
            prop_assert_eq!(parse_record(&format_record(&r)).unwrap(), r);
        }

        #[test]
        fn v1_round_trips(pid in 2i64..=4_194_304) {
            let r = IdentityRecord::V1 { pid: Pid::new(pid).unwrap() };
            prop_assert_eq!(parse_record(&format_record(&r)).unwrap(), r);
        }

        #[test]
        fn any_bytes_ok_or_err(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_record(&bytes);
            let _ = parse_stat_start_time(&bytes);
            let _ = BootId::parse(&bytes);
        }
    }
}
