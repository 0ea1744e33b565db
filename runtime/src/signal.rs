//! Signals refbox is willing to send on a user's behalf: an allowlist.

use std::fmt;

/// A signal from the allowlist TERM, KILL, INT, HUP, QUIT, USR1, USR2, ABRT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedSignal {
    name: &'static str,
    number: i32,
}

/// The allowlist: (name, number).
pub const ALLOWED: [(&str, i32); 8] = [
    ("TERM", libc::SIGTERM),
    ("KILL", libc::SIGKILL),
    ("INT", libc::SIGINT),
    ("HUP", libc::SIGHUP),
    ("QUIT", libc::SIGQUIT),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("ABRT", libc::SIGABRT),
];

/// A signal refused by the allowlist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signal {given:?} is not allowed (allowed: TERM, KILL, INT, HUP, QUIT, USR1, USR2, ABRT)")]
pub struct SignalError {
    /// What was asked for.
    pub given: String,
}

impl AllowedSignal {
    /// SIGTERM.
    pub const TERM: AllowedSignal = AllowedSignal {
        name: "TERM",
        number: libc::SIGTERM,
    };
    /// SIGKILL.
    pub const KILL: AllowedSignal = AllowedSignal {
        name: "KILL",
        number: libc::SIGKILL,
    };

    /// The signal's name without `SIG` (e.g. `TERM`).
    pub fn name(self) -> &'static str {
        self.name
    }

    /// The signal number.
    pub fn number(self) -> i32 {
        self.number
    }

    /// Looks a number up in the allowlist.
    pub fn from_number(n: i32) -> Option<Self> {
        ALLOWED
            .iter()
            .find(|(_, num)| *num == n)
            .map(|&(name, number)| AllowedSignal { name, number })
    }
}

impl fmt::Display for AllowedSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name)
    }
}

/// Parses `TERM`, `SIGTERM`, `sigterm` or `15`; anything off the allowlist
/// (including 0, STOP, CONT and realtime signals) is refused.
pub fn parse_signal(s: &str) -> Result<AllowedSignal, SignalError> {
    let err = || SignalError {
        given: s.to_string(),
    };
    if let Ok(n) = s.parse::<i32>() {
        return AllowedSignal::from_number(n).ok_or_else(err);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    ALLOWED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(name, number)| AllowedSignal { name, number })
        .ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("TERM", Some(libc::SIGTERM))]
    #[case("sigkill", Some(libc::SIGKILL))]
    #[case("9", Some(libc::SIGKILL))]
    #[case("0", None)]
    #[case("STOP", None)]
    #[case("CONT", None)]
    #[case("19", None)]
    #[case("34", None)]
    #[case("-9", None)]
    #[case("", None)]
    fn allowlist(#[case] s: &str, #[case] want: Option<i32>) {
        assert_eq!(parse_signal(s).ok().map(AllowedSignal::number), want);
    }
}
