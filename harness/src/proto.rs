//! Owns the control protocol between the harness and `doppel-init`: the
//! message types and their framing (a little-endian `u32` length followed by
//! that many bytes of JSON). The codec is pure; the socket I/O lives in
//! `world` (harness side) and `init` (init side).
//!
//! One request is outstanding at a time; every request gets exactly one
//! response.

use crate::ids::{Pid, Signal, StartTime};
use crate::procfs::ProcStat;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// Version of this protocol. init announces it in `Ready`; the harness refuses
/// an init of another version (e.g. a stale `doppel-init` next to a fresh
/// test binary) with a clear error instead of a confusing decode failure.
/// 2: typed `BadRequest` reasons, `PidMaxNotPerNamespace`, `Unparsable`.
/// 3: `Census` carries the signals init received.
/// 4: captured output travels as a hex string, not a JSON array of numbers
///    (1 MiB of output was ~4 MB of JSON, seconds to parse in a debug build).
pub const PROTOCOL_VERSION: u32 = 4;

/// How many [`InitSignal`]s init keeps (a runtime stuck in a loop signalling
/// PID 1 must not grow init without bound); later ones are only counted.
pub const MAX_INIT_SIGNALS: usize = 1024;

/// The largest frame either side accepts (captured output is capped well below).
pub const MAX_FRAME: u32 = 64 << 20;

/// Environment for a spawned command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvSpec {
    /// Start from an empty environment instead of init's own.
    pub clear: bool,
    /// Variables removed (applied before `set`).
    pub remove: Vec<String>,
    /// Variables set, in order.
    pub set: Vec<(String, String)>,
}

/// Everything init needs to start one process in the world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnSpec {
    /// Executable: a path, or a name looked up in the command's `PATH`.
    pub program: String,
    /// Full argv, including argv\[0\].
    pub argv: Vec<String>,
    /// Environment.
    pub env: EnvSpec,
    /// Working directory (world path); init's (`/`) when `None`.
    pub cwd: Option<String>,
    /// Bytes the process reads on stdin (then EOF).
    pub stdin: Vec<u8>,
    /// Exact PID to place the process at.
    pub at_pid: Option<Pid>,
    /// Give the process fd 3 (`DOPPEL_READY_FD=3`), the write end of a pipe,
    /// and return from the spawn only after it wrote a line or closed it.
    pub ready_fd: bool,
    /// How long to wait for the ready line, in milliseconds.
    pub ready_timeout_ms: u64,
    /// Start a new session (`setsid`) in the child.
    pub setsid: bool,
    /// SIGKILL the process this many milliseconds after it started, if it is
    /// still running (crash injection).
    pub kill_after_ms: Option<u64>,
}

/// What a pending wait does when its deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnTimeout {
    /// Answer [`RemoteError::WaitTimedOut`]; the process keeps running.
    Report,
    /// SIGKILL the process, then report its exit.
    Kill,
}

/// A request from the harness to init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Start a process.
    Spawn(SpawnSpec),
    /// Wait for a process init spawned to exit.
    Wait {
        /// The process.
        pid: Pid,
        /// Deadline, in milliseconds from receipt.
        timeout_ms: u64,
        /// What to do at the deadline.
        on_timeout: OnTimeout,
    },
    /// Send a signal to a world process.
    Signal {
        /// Target (world PID).
        pid: Pid,
        /// Signal.
        signal: Signal,
    },
    /// List every process of the world and the orphans reaped so far.
    Census {
        /// Cap on the bytes of environ read per process.
        environ_cap: usize,
    },
    /// Kill-and-replace a victim within its birth tick (see `SameTickReport`).
    SameTick {
        /// The victim command.
        victim: SpawnSpec,
        /// The impostor command (placed at the victim's PID).
        impostor: SpawnSpec,
        /// Bounded retries.
        max_attempts: u32,
    },
    /// Kill `victim`, wait until its PID is free, place `impostor` there.
    Replace {
        /// The process to replace.
        victim: Pid,
        /// The impostor (its `at_pid` is ignored).
        impostor: SpawnSpec,
        /// How long to wait for the PID to become free.
        timeout_ms: u64,
    },
    /// Place a process at `spec.at_pid` by forking until the PID counter wraps.
    PlaceByWraparound {
        /// The command; `at_pid` is the target.
        spec: SpawnSpec,
        /// Give up after this many throwaway forks.
        max_forks: u64,
    },
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// Normal exit with a code.
    Exited(i32),
    /// Killed by a signal.
    Signaled(Signal),
}

impl ExitStatus {
    /// True for `Exited(0)`.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

/// Captured output of one stream, capped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    /// The bytes (at most the cap).
    #[serde(with = "hex_bytes")]
    pub bytes: Vec<u8>,
    /// True when the stream held more than the cap.
    pub truncated: bool,
}

/// Bytes as a lowercase hex string on the wire: two characters a byte,
/// parsed without a number per byte.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    const DIGITS: &[u8; 16] = b"0123456789abcdef";

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push(DIGITS[usize::from(b >> 4)] as char);
            out.push(DIGITS[usize::from(b & 0xf)] as char);
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(D::Error::custom("not a lowercase hex digit")),
        };
        let raw = text.as_bytes();
        if raw.len() % 2 != 0 {
            return Err(D::Error::custom("odd number of hex digits"));
        }
        raw.chunks_exact(2)
            .map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?))
            .collect()
    }
}

/// The end of a process init spawned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    /// The process.
    pub pid: Pid,
    /// How it ended.
    pub status: ExitStatus,
    /// Its stdout (a file, so detached grandchildren cannot hold it open).
    pub stdout: Captured,
    /// Its stderr.
    pub stderr: Captured,
    /// True when init's crash timer (`kill_after_ms`) killed it.
    pub killed_by_timer: bool,
    /// True when the wait deadline passed and `OnTimeout::Kill` killed it.
    pub killed_on_timeout: bool,
}

/// One process in a census.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Parsed `/proc/PID/stat`.
    pub stat: ProcStat,
    /// argv from `/proc/PID/cmdline` (empty for zombies and kernel threads).
    pub argv: Vec<String>,
    /// `KEY=VALUE` entries from `/proc/PID/environ`, capped.
    pub environ: Vec<String>,
    /// True when environ was longer than the cap.
    pub environ_truncated: bool,
    /// Target of `/proc/PID/exe`, when readable.
    pub exe: Option<String>,
    /// Open fds: (number, readlink target).
    pub fds: Vec<(i32, String)>,
    /// True when init spawned this process itself.
    pub spawned_by_init: bool,
}

/// An orphan init reaped: a process it did not spawn, reparented to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReapedOrphan {
    /// Its world PID.
    pub pid: Pid,
    /// How it ended.
    pub status: ExitStatus,
    /// Its comm, read while it was a zombie.
    pub comm: String,
    /// Its argv, from init's cache (a zombie's cmdline is empty); empty if unknown.
    pub argv: Vec<String>,
    /// Its start time, read while it was a zombie.
    pub start_time: Option<StartTime>,
}

/// A signal world init (PID 1) received from a world process. init takes
/// every catchable signal through its signalfd, so a runtime that signals
/// PID 1 (a garbage pid file of `1`, say) leaves this trace; KILL and STOP
/// from inside the world cannot be caught, and the kernel drops them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitSignal {
    /// The signal.
    pub signal: Signal,
    /// The sender's world PID (`ssi_pid`); `None` when the kernel sent it
    /// or the sender is outside the world.
    pub sender: Option<Pid>,
    /// The sender's real uid (`ssi_uid`), as the world sees it.
    pub sender_uid: u32,
    /// `si_code`: `SI_USER` (0) for kill(2), `SI_QUEUE` (-1), `SI_TKILL`
    /// (-6) for tgkill, ...
    pub code: i32,
    /// The sender's argv, read when init took the signal (empty when it was
    /// already gone; a sender that exec'd since shows its new argv).
    pub sender_argv: Vec<String>,
}

impl std::fmt::Display for InitSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.signal)?;
        match self.sender {
            Some(p) => write!(f, " from pid {p}")?,
            None => f.write_str(" from outside the world or the kernel")?,
        }
        if !self.sender_argv.is_empty() {
            write!(f, " {:?}", self.sender_argv)?;
        }
        Ok(())
    }
}

/// A freshly started process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnedReport {
    /// World PID.
    pub pid: Pid,
    /// Its start time.
    pub start_time: StartTime,
    /// The ready line (without newline) when `ready_fd` was asked; `None` on EOF.
    pub ready_line: Option<String>,
}

/// A response from init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// First message: the world is up.
    Ready {
        /// [`PROTOCOL_VERSION`] of the init binary (0 when it predates versions).
        #[serde(default)]
        protocol: u32,
        /// init's PID in the harness's PID namespace.
        outer_pid: Pid,
        /// The world's pid_max.
        pid_max: i32,
        /// True when a user namespace was created (harness not root).
        userns: bool,
        /// True when clone3 with set_tid works inside the world.
        set_tid: bool,
    },
    /// Setup failed before Ready.
    SetupFailed(RemoteError),
    /// A process was started.
    Spawned(SpawnedReport),
    /// A process exited.
    Exited(ExitReport),
    /// A signal was sent.
    Signaled,
    /// Census result.
    Census {
        /// Every process in the world's /proc, init included.
        processes: Vec<ProcessRecord>,
        /// Orphans reaped so far.
        reaped_orphans: Vec<ReapedOrphan>,
        /// Signals init received so far, in the order it took them (at most
        /// [`MAX_INIT_SIGNALS`]).
        init_signals: Vec<InitSignal>,
        /// Signals received after the record was full.
        init_signals_dropped: u64,
    },
    /// Same-tick staging succeeded.
    SameTickStaged {
        /// The victim's (and impostor's) PID.
        pid: Pid,
        /// The victim's start time.
        victim_start: StartTime,
        /// The impostor as started (same start time).
        impostor: SpawnedReport,
        /// Attempts used (1-based).
        attempts: u32,
    },
    /// A replacement was placed.
    Replaced {
        /// The victim's start time (read before the kill), if it was readable.
        victim_start: Option<StartTime>,
        /// The impostor.
        impostor: SpawnedReport,
    },
    /// Wraparound placement succeeded.
    Wrapped {
        /// The placed process.
        spawned: SpawnedReport,
        /// Throwaway forks used.
        forks: u64,
    },
    /// The request failed.
    Failed(RemoteError),
}

/// A typed failure reported by init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// Another process holds the PID.
    #[error("pid {pid} is taken")]
    PidTaken {
        /// The PID.
        pid: Pid,
    },
    /// The PID is outside 2..pid_max.
    #[error("pid {pid} is outside 2..{pid_max}")]
    PidOutOfRange {
        /// The requested PID.
        pid: i32,
        /// The world's pid_max (exclusive bound).
        pid_max: i32,
    },
    /// clone3 `set_tid` returned another PID than asked (never expected).
    #[error("asked for pid {wanted}, the kernel gave {got}")]
    PidMismatch {
        /// Requested.
        wanted: Pid,
        /// Obtained.
        got: Pid,
    },
    /// No such process in the world (or not one init spawned, for Wait).
    #[error("no process {pid} (or not one init spawned)")]
    NoSuchProcess {
        /// The PID.
        pid: Pid,
    },
    /// The program could not be executed.
    #[error("exec {program}: errno {errno}")]
    ExecFailed {
        /// Program as given.
        program: String,
        /// errno from execve.
        errno: i32,
    },
    /// The program was not found in PATH.
    #[error("{program} not found in PATH")]
    ProgramNotFound {
        /// Program as given.
        program: String,
    },
    /// The process did not write its ready line in time (it was killed).
    #[error("pid {pid} did not signal ready within {timeout_ms} ms")]
    ReadyTimeout {
        /// The process.
        pid: Pid,
        /// The deadline.
        timeout_ms: u64,
    },
    /// A wait's deadline passed (`OnTimeout::Report`).
    #[error("pid {pid} still running after {timeout_ms} ms")]
    WaitTimedOut {
        /// The process.
        pid: Pid,
        /// The deadline.
        timeout_ms: u64,
    },
    /// Staging was not possible; the reason says why.
    #[error("not staged after {attempts} attempts: {reason}")]
    NotStaged {
        /// Why.
        reason: String,
        /// Attempts used.
        attempts: u32,
    },
    /// A system call failed in init with a real errno (conditions with a
    /// meaning of their own have their own variants).
    #[error("{op}: errno {errno}")]
    Sys {
        /// The call and what it was for (e.g. `mount proc on /proc`), for
        /// people; match on `errno`, not on this text.
        op: String,
        /// errno.
        errno: i32,
    },
    /// `WorldOptions::pid_max` was asked on a kernel where pid_max is not
    /// per PID namespace (before Linux 6.14): writing it would change the
    /// host's.
    #[error("pid_max is not per PID namespace on Linux {kernel} (needs 6.14+): refused")]
    PidMaxNotPerNamespace {
        /// The kernel release.
        kernel: String,
    },
    /// A /proc file init relies on did not parse.
    #[error("{file} did not parse")]
    Unparsable {
        /// The file (world path).
        file: String,
    },
    /// A malformed request.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What was wrong.
        reason: BadRequestReason,
    },
}

/// What was wrong with a request init refused as malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BadRequestReason {
    /// A spawn with an empty argv.
    EmptyArgv,
    /// A program, argument, environment entry or cwd containing a NUL byte.
    NulInString,
    /// Same-tick staging with `max_attempts` 0.
    ZeroAttempts,
    /// Wraparound placement without a target PID (`at_pid`).
    NoTargetPid,
}

impl std::fmt::Display for BadRequestReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadRequestReason::EmptyArgv => "argv is empty",
            BadRequestReason::NulInString => "a string contains a NUL byte",
            BadRequestReason::ZeroAttempts => "max_attempts must be at least 1",
            BadRequestReason::NoTargetPid => "wraparound placement needs at_pid",
        })
    }
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the {MAX_FRAME} byte limit")]
    TooLarge {
        /// Announced length.
        len: u32,
    },
    /// The payload is not the expected JSON.
    #[error("frame payload is not valid JSON for this message")]
    Json(#[source] serde_json::Error),
    /// I/O on the control socket failed.
    #[error("control socket I/O")]
    Io(#[source] std::io::Error),
    /// The peer closed the socket.
    #[error("control socket closed by peer")]
    Closed,
}

/// Encodes one message as a frame.
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these plain data types to a Vec cannot fail.
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes one frame from the front of `buf`: `Ok(None)` when more bytes are
/// needed, otherwise the message and how many bytes it used.
pub fn decode_frame<T: for<'de> Deserialize<'de>>(
    buf: &[u8],
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    let end = 4 + len as usize;
    let Some(body) = buf.get(4..end) else {
        return Ok(None);
    };
    let msg = serde_json::from_slice(body).map_err(FrameError::Json)?;
    Ok(Some((msg, end)))
}

/// Writes one frame to a stream.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode_frame(msg)).map_err(FrameError::Io)?;
    w.flush().map_err(FrameError::Io)
}

/// Reads one frame from a stream (blocking, subject to the stream's timeout).
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    if let Err(e) = r.read_exact(&mut len) {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(e)
        });
    }
    let n = u32::from_le_bytes(len);
    if n > MAX_FRAME {
        return Err(FrameError::TooLarge { len: n });
    }
    let mut body = vec![0u8; n as usize];
    r.read_exact(&mut body).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(e)
        }
    })?;
    serde_json::from_slice(&body).map_err(FrameError::Json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(argv: Vec<String>, at: Option<i32>) -> SpawnSpec {
        SpawnSpec {
            program: argv.first().cloned().unwrap_or_default(),
            argv,
            env: EnvSpec::default(),
            cwd: None,
            stdin: vec![1, 2, 3],
            at_pid: at.and_then(|p| Pid::new(p).ok()),
            ready_fd: true,
            ready_timeout_ms: 5,
            setsid: false,
            kill_after_ms: None,
        }
    }

    proptest! {
        #[test]
        fn decode_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_frame::<Request>(&bytes);
            let _ = decode_frame::<Response>(&bytes);
        }

        #[test]
        fn captured_output_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..600), truncated in any::<bool>()) {
            let c = Captured { bytes, truncated };
            let text = serde_json::to_string(&c).unwrap();
            prop_assert_eq!(serde_json::from_str::<Captured>(&text).unwrap(), c);
        }

        #[test]
        fn spawn_round_trips(argv in proptest::collection::vec(".{0,12}", 0..5), at in proptest::option::of(1i32..100000)) {
            let req = Request::Spawn(spec(argv, at));
            let frame = encode_frame(&req);
            let (back, used) = decode_frame::<Request>(&frame).unwrap().unwrap();
            prop_assert_eq!(used, frame.len());
            prop_assert_eq!(back, req);
            // A truncated frame asks for more bytes.
            prop_assert!(decode_frame::<Request>(&frame[..frame.len() - 1]).unwrap().is_none());
        }
    }

    #[test]
    fn captured_output_is_hex_on_the_wire() {
        let c = Captured {
            bytes: vec![0, 0x7f, 0xff, b'a'],
            truncated: false,
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"bytes":"007fff61","truncated":false}"#
        );
        for bad in [
            r#"{"bytes":"0","truncated":false}"#,
            r#"{"bytes":"0G","truncated":false}"#,
        ] {
            assert!(serde_json::from_str::<Captured>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn oversized_length_is_rejected() {
        let mut f = (MAX_FRAME + 1).to_le_bytes().to_vec();
        f.extend_from_slice(b"{}");
        assert!(matches!(
            decode_frame::<Request>(&f),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn pid_zero_in_json_is_rejected() {
        let body = br#"{"Signal":{"pid":0,"signal":15}}"#;
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body);
        assert!(matches!(
            decode_frame::<Request>(&f),
            Err(FrameError::Json(_))
        ));
    }
}
