//! Owns the small value types every other module passes around: [`Pid`],
//! [`StartTime`] and [`Signal`]. They exist so a world PID is never confused
//! with a count, a start time with a duration, or a signal number with a code.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A process ID inside a world (or on the host), always `>= 1`.
///
/// A `Pid` can never be `0` or negative, so it can never address a process
/// group or "every process" when used as a signal target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i32", into = "i32")]
pub struct Pid(i32);

/// Returned by [`Pid::new`] for a value that cannot be a process ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{value} is not a valid process ID (must be >= 1)")]
pub struct InvalidPid {
    /// The rejected value.
    pub value: i64,
}

impl Pid {
    /// The PID of a PID namespace's init (`doppel-init` inside a world).
    pub const INIT: Pid = Pid(1);

    /// Validates `raw` as a process ID (`>= 1`).
    pub fn new(raw: i32) -> Result<Pid, InvalidPid> {
        if raw >= 1 {
            Ok(Pid(raw))
        } else {
            Err(InvalidPid {
                value: i64::from(raw),
            })
        }
    }

    /// The raw number.
    pub fn get(self) -> i32 {
        self.0
    }
}

impl TryFrom<i32> for Pid {
    type Error = InvalidPid;
    fn try_from(v: i32) -> Result<Self, Self::Error> {
        Pid::new(v)
    }
}

impl From<Pid> for i32 {
    fn from(p: Pid) -> i32 {
        p.0
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A process start time: field 22 of `/proc/PID/stat`, in clock ticks since
/// boot (`CLK_TCK`, normally 100 per second). Fixed when the process is forked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StartTime(pub u64);

impl StartTime {
    /// Clock ticks per second of start times (`sysconf(_SC_CLK_TCK)`).
    pub fn ticks_per_second() -> u64 {
        crate::sys::clock_ticks_per_second()
    }
}

impl fmt::Display for StartTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ticks", self.0)
    }
}

/// A signal number (1..=64), with names for the classic ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i32", into = "i32")]
pub struct Signal(i32);

/// Returned by [`Signal::new`] / [`Signal::from_name`] for an unknown signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value} is not a signal (expected 1..=64 or a SIG* name)")]
pub struct InvalidSignal {
    /// The rejected number or name.
    pub value: String,
}

const NAMES: [&str; 32] = [
    "SIG0",
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

impl Signal {
    /// SIGHUP.
    pub const HUP: Signal = Signal(1);
    /// SIGINT.
    pub const INT: Signal = Signal(2);
    /// SIGKILL.
    pub const KILL: Signal = Signal(9);
    /// SIGUSR1.
    pub const USR1: Signal = Signal(10);
    /// SIGUSR2.
    pub const USR2: Signal = Signal(12);
    /// SIGTERM.
    pub const TERM: Signal = Signal(15);
    /// SIGCHLD.
    pub const CHLD: Signal = Signal(17);
    /// SIGCONT.
    pub const CONT: Signal = Signal(18);
    /// SIGSTOP.
    pub const STOP: Signal = Signal(19);

    /// Validates a raw signal number (1..=64).
    pub fn new(raw: i32) -> Result<Signal, InvalidSignal> {
        if (1..=64).contains(&raw) {
            Ok(Signal(raw))
        } else {
            Err(InvalidSignal {
                value: raw.to_string(),
            })
        }
    }

    /// Parses `SIGTERM`, `TERM` or `15`.
    pub fn from_name(name: &str) -> Result<Signal, InvalidSignal> {
        if let Ok(n) = name.parse::<i32>() {
            return Signal::new(n);
        }
        let upper = name.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        NAMES
            .iter()
            .position(|n| *n == full)
            .filter(|&i| i > 0)
            .map(|i| Signal(i as i32))
            .ok_or(InvalidSignal {
                value: name.to_string(),
            })
    }

    /// The raw number.
    pub fn get(self) -> i32 {
        self.0
    }

    /// `SIGTERM`-style name (`SIGRT<n>` for real-time signals).
    pub fn name(self) -> String {
        NAMES
            .get(self.0 as usize)
            .map(|s| (*s).to_string())
            .unwrap_or_else(|| format!("SIGRT{}", self.0))
    }
}

impl TryFrom<i32> for Signal {
    type Error = InvalidSignal;
    fn try_from(v: i32) -> Result<Self, Self::Error> {
        Signal::new(v)
    }
}

impl From<Signal> for i32 {
    fn from(s: Signal) -> i32 {
        s.0
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Static name of a classic signal, usable from a signal handler (no allocation).
pub(crate) fn static_signal_name(raw: i32) -> &'static str {
    NAMES.get(raw as usize).copied().unwrap_or("SIGRT")
}

/// Every catchable classic signal a runtime could aim at a process, except
/// the synchronous faults (ILL, TRAP, BUS, FPE, SEGV, SYS: a handler that
/// returns from one loops, and a real fault must still end the process)
/// and SIGCHLD. What doppel-init and the impostors record.
pub const RECORDABLE_SIGNALS: [i32; 22] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGABRT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGPIPE,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGSTKFLT,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGURG,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGWINCH,
    libc::SIGIO,
    libc::SIGPWR,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_rejects_zero_and_negative() {
        assert!(Pid::new(0).is_err());
        assert!(Pid::new(-1).is_err());
        assert_eq!(Pid::new(7).map(Pid::get), Ok(7));
    }

    #[test]
    fn signal_names_round_trip() {
        for raw in 1..=31 {
            let s = Signal::new(raw).unwrap();
            assert_eq!(Signal::from_name(&s.name()).unwrap(), s);
        }
        assert_eq!(Signal::from_name("term").unwrap(), Signal::TERM);
        assert!(Signal::from_name("SIGNOPE").is_err());
        assert!(Signal::new(0).is_err());
        assert!(Signal::new(65).is_err());
    }
}
