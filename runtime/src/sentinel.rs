//! Log sentinels: `log/.sentinel` names the process that owns a box's log
//! dir (v2: `pid\nexe\n`; v1 legacy: a lone pid). `cleanup-logs` removes a
//! log dir whose owner is dead or recycled, keeps live ones, and leaves an
//! oversized or unreadable sentinel alone. The decision is a pure function of
//! the sentinel and what /proc says, so it is tested without processes.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::fsread;
use crate::pid::Pid;

/// A parsed sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sentinel {
    /// Current format: owner pid and its executable path.
    V2 {
        /// Owner pid.
        pid: Pid,
        /// Owner executable (as `/proc/PID/exe` read when written).
        exe: Vec<u8>,
    },
    /// Legacy: a lone pid.
    V1 {
        /// Owner pid.
        pid: Pid,
    },
}

impl Sentinel {
    /// The owner pid.
    pub fn pid(&self) -> Pid {
        match self {
            Sentinel::V2 { pid, .. } | Sentinel::V1 { pid } => *pid,
        }
    }
}

/// Why sentinel bytes are malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SentinelError {
    /// Neither `pid` nor `pid\nexe`.
    #[error("expected `pid` (v1) or `pid\\nexe` (v2)")]
    BadFormat,
    /// The pid is not a valid target.
    #[error("bad pid")]
    BadPid(#[source] crate::pid::PidError),
}

/// Parses a sentinel. Never panics.
pub fn parse_sentinel(bytes: &[u8]) -> Result<Sentinel, SentinelError> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let (pid_line, exe) = match body.iter().position(|&b| b == b'\n') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let text = std::str::from_utf8(pid_line.trim_ascii()).map_err(|_| SentinelError::BadFormat)?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return Err(SentinelError::BadFormat);
    }
    let raw: i64 = text.parse().map_err(|_| SentinelError::BadFormat)?;
    let pid = Pid::new(raw).map_err(SentinelError::BadPid)?;
    match exe {
        None => Ok(Sentinel::V1 { pid }),
        Some(e) if e.is_empty() || e.contains(&b'\n') || e.contains(&0) => {
            Err(SentinelError::BadFormat)
        }
        Some(e) => Ok(Sentinel::V2 {
            pid,
            exe: e.to_vec(),
        }),
    }
}

/// Formats a v2 sentinel.
pub fn format_sentinel(pid: Pid, exe: &[u8]) -> Vec<u8> {
    let mut v = format!("{pid}\n").into_bytes();
    v.extend_from_slice(exe);
    v.push(b'\n');
    v
}

/// What /proc says about the sentinel's pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerProbe {
    /// No such process.
    Gone,
    /// Alive; its exe link (None when it cannot be read).
    Alive(Option<Vec<u8>>),
}

/// Whether to remove a log dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Owner dead or recycled: remove, with the reason.
    Remove(String),
    /// Owner live or unverifiable: keep, with the reason.
    Keep(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Remove(r) | Verdict::Keep(r) => f.write_str(r),
        }
    }
}

/// Strips the " (deleted)" suffix the kernel appends to an unlinked exe.
pub fn strip_deleted(exe: &[u8]) -> &[u8] {
    exe.strip_suffix(b" (deleted)").unwrap_or(exe)
}

/// The cleanup decision.
pub fn judge(s: &Sentinel, probe: &OwnerProbe) -> Verdict {
    let pid = s.pid();
    match (s, probe) {
        (_, OwnerProbe::Gone) => Verdict::Remove(format!("owner-dead pid={pid}")),
        (Sentinel::V1 { .. }, OwnerProbe::Alive(_)) => Verdict::Keep(format!(
            "legacy-sentinel pid={pid} alive: unverifiable, kept"
        )),
        (Sentinel::V2 { .. }, OwnerProbe::Alive(None)) => Verdict::Keep(format!(
            "owner-unverifiable pid={pid}: exe unreadable, kept"
        )),
        (Sentinel::V2 { exe, .. }, OwnerProbe::Alive(Some(now))) => {
            if strip_deleted(now) == strip_deleted(exe) {
                Verdict::Keep(format!("owner-alive pid={pid}"))
            } else {
                Verdict::Remove(format!(
                    "owner-recycled pid={pid} exe={} (recorded {})",
                    String::from_utf8_lossy(now),
                    String::from_utf8_lossy(exe)
                ))
            }
        }
    }
}

/// Looks the sentinel's pid up in /proc.
pub fn probe_owner(pid: Pid) -> OwnerProbe {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    match rustix::fs::readlink(dir.join("exe"), Vec::new()) {
        Ok(link) => OwnerProbe::Alive(Some(link.into_bytes())),
        Err(_) if !dir.exists() => OwnerProbe::Gone,
        Err(_) => {
            // Zombies and kernel threads have no exe; a zombie is dead.
            let stat = fsread::read_proc(&dir.join("stat"), 4096).unwrap_or_default();
            let state = stat
                .iter()
                .rposition(|&b| b == b')')
                .and_then(|i| stat.get(i + 2))
                .copied();
            match state {
                None | Some(b'Z') | Some(b'X') => OwnerProbe::Gone,
                _ => OwnerProbe::Alive(None),
            }
        }
    }
}

/// Reads and judges one sentinel file.
pub fn check(path: &Path, uid: u32) -> Result<(Sentinel, Verdict), SentinelCheckError> {
    let bytes =
        fsread::read_capped(path, fsread::RECORD_CAP, uid).map_err(SentinelCheckError::Read)?;
    let s = parse_sentinel(&bytes).map_err(|source| SentinelCheckError::Malformed {
        path: path.to_path_buf(),
        source,
    })?;
    let v = judge(&s, &probe_owner(s.pid()));
    Ok((s, v))
}

/// Why a sentinel could not be judged (it is then left alone).
#[derive(Debug, thiserror::Error)]
pub enum SentinelCheckError {
    /// Unreadable: oversized, FIFO, symlink, foreign owner, ...
    #[error("sentinel left alone")]
    Read(#[source] fsread::ReadError),
    /// Malformed.
    #[error("{path}: malformed sentinel, left alone")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: SentinelError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    fn p(n: i64) -> Pid {
        Pid::new(n).unwrap()
    }

    #[test]
    fn parse_forms() {
        assert_eq!(
            parse_sentinel(b"42\n/usr/bin/x\n").unwrap(),
            Sentinel::V2 {
                pid: p(42),
                exe: b"/usr/bin/x".to_vec()
            }
        );
        assert_eq!(
            parse_sentinel(b"42\n").unwrap(),
            Sentinel::V1 { pid: p(42) }
        );
        assert!(parse_sentinel(b"1\n").is_err());
        assert!(parse_sentinel(b"x").is_err());
    }

    #[rstest]
    #[case(Sentinel::V2 { pid: p(5), exe: b"/a".to_vec() }, OwnerProbe::Gone, true)]
    #[case(Sentinel::V2 { pid: p(5), exe: b"/a".to_vec() }, OwnerProbe::Alive(Some(b"/b".to_vec())), true)]
    #[case(Sentinel::V2 { pid: p(5), exe: b"/a".to_vec() }, OwnerProbe::Alive(Some(b"/a (deleted)".to_vec())), false)]
    #[case(Sentinel::V2 { pid: p(5), exe: b"/a".to_vec() }, OwnerProbe::Alive(Some(b"/a".to_vec())), false)]
    #[case(Sentinel::V2 { pid: p(5), exe: b"/a".to_vec() }, OwnerProbe::Alive(None), false)]
    #[case(Sentinel::V1 { pid: p(5) }, OwnerProbe::Alive(None), false)]
    #[case(Sentinel::V1 { pid: p(5) }, OwnerProbe::Gone, true)]
    fn decisions(#[case] s: Sentinel, #[case] probe: OwnerProbe, #[case] remove: bool) {
        assert_eq!(matches!(judge(&s, &probe), Verdict::Remove(_)), remove);
    }

    proptest! {
        #[test]
        fn round_trips(pid in 2i64..=4_194_304, exe in "/[a-z/ ]{1,30}") {
            let b = format_sentinel(p(pid), exe.as_bytes());
            prop_assert_eq!(parse_sentinel(&b).unwrap(), Sentinel::V2 { pid: p(pid), exe: exe.into_bytes() });
        }

        #[test]
        fn any_bytes_ok_or_err(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_sentinel(&bytes);
        }
    }
}
