//! Owns the pure parsers for `/proc` records the harness reads:
//! `/proc/PID/stat` and the `NSpid:` line of `/proc/PID/status`. No I/O here,
//! so every parser is property-tested on arbitrary bytes.

use crate::ids::{Pid, StartTime};
use serde::{Deserialize, Serialize};

/// The fields of `/proc/PID/stat` the harness uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcStat {
    /// Field 1.
    pub pid: Pid,
    /// Field 2 without the parentheses (may contain spaces and parentheses).
    pub comm: String,
    /// Field 3: `R`, `S`, `D`, `Z`, `T`, `t`, `X`, `I`, ...
    pub state: char,
    /// Field 4 (0 for a PID namespace's init as seen from inside).
    pub ppid: i32,
    /// Field 22.
    pub start_time: StartTime,
}

impl ProcStat {
    /// True when the process is a zombie (exited, not yet reaped).
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// Why a `/proc/PID/stat` record could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatParseError {
    /// No `(` ... `)` around the command name.
    #[error("stat record has no parenthesised comm field")]
    NoComm,
    /// The leading PID is missing or not a positive number.
    #[error("stat record has a bad pid field")]
    BadPid,
    /// Fewer fields than field 22 after the comm.
    #[error("stat record has only {found} fields, need at least 22")]
    TooShort {
        /// How many fields were present.
        found: usize,
    },
    /// A numeric field did not parse.
    #[error("stat field {field} is not a number")]
    BadNumber {
        /// 1-based field number as in proc(5).
        field: usize,
    },
}

/// Parses a `/proc/PID/stat` record. The comm field is taken between the
/// first `(` and the LAST `)`, because comm may itself contain `) (`.
pub fn parse_stat(bytes: &[u8]) -> Result<ProcStat, StatParseError> {
    let open = bytes
        .iter()
        .position(|&b| b == b'(')
        .ok_or(StatParseError::NoComm)?;
    let close = bytes
        .iter()
        .rposition(|&b| b == b')')
        .ok_or(StatParseError::NoComm)?;
    if close < open {
        return Err(StatParseError::NoComm);
    }
    let pid_text = std::str::from_utf8(&bytes[..open]).map_err(|_| StatParseError::BadPid)?;
    let pid = pid_text
        .trim()
        .parse::<i32>()
        .ok()
        .and_then(|p| Pid::new(p).ok())
        .ok_or(StatParseError::BadPid)?;
    let comm = String::from_utf8_lossy(&bytes[open + 1..close]).into_owned();
    let rest = String::from_utf8_lossy(&bytes[close + 1..]);
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state); field n is fields[n - 3].
    if fields.len() < 20 {
        return Err(StatParseError::TooShort {
            found: fields.len() + 2,
        });
    }
    let mut state_chars = fields[0].chars();
    let state = match (state_chars.next(), state_chars.next()) {
        (Some(c), None) => c,
        _ => return Err(StatParseError::BadNumber { field: 3 }),
    };
    let ppid = fields[1]
        .parse::<i32>()
        .map_err(|_| StatParseError::BadNumber { field: 4 })?;
    let start = fields[19]
        .parse::<u64>()
        .map_err(|_| StatParseError::BadNumber { field: 22 })?;
    Ok(ProcStat {
        pid,
        comm,
        state,
        ppid,
        start_time: StartTime(start),
    })
}

/// Why the `NSpid:` line could not be read from a `/proc/PID/status` record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NsPidParseError {
    /// The record has no `NSpid:` line (kernel older than 4.1).
    #[error("status record has no NSpid line")]
    Missing,
    /// The line is present but holds something other than positive numbers.
    #[error("NSpid line is malformed")]
    Malformed,
}

/// Parses the `NSpid:` line of `/proc/PID/status`: the process's PID in each
/// PID namespace, outermost (the one of the /proc mount) first.
pub fn parse_nspid(status: &[u8]) -> Result<Vec<Pid>, NsPidParseError> {
    let text = String::from_utf8_lossy(status);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .ok_or(NsPidParseError::Missing)?;
    let pids = line
        .split_ascii_whitespace()
        .map(|t| {
            t.parse::<i32>()
                .ok()
                .and_then(|p| Pid::new(p).ok())
                .ok_or(NsPidParseError::Malformed)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if pids.is_empty() {
        return Err(NsPidParseError::Malformed);
    }
    Ok(pids)
}

/// Splits a NUL-separated record (`cmdline`, `environ`) into strings,
/// dropping the trailing empty element.
pub fn split_nul(bytes: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = bytes
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    if out.last().is_some_and(String::is_empty) {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(comm: &str, start: u64) -> String {
        format!(
            "42 ({comm}) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 {start} 1000 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
        )
    }

    #[test]
    fn parses_comm_with_parens_and_spaces() {
        let s = parse_stat(record("a) (b c)", 123).as_bytes()).unwrap();
        assert_eq!(s.comm, "a) (b c)");
        assert_eq!(s.start_time, StartTime(123));
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.pid.get(), 42);
    }

    #[test]
    fn rejects_short_records() {
        assert!(matches!(
            parse_stat(b"1 (x) S 0"),
            Err(StatParseError::TooShort { .. })
        ));
        assert_eq!(parse_stat(b"1 x S"), Err(StatParseError::NoComm));
        assert_eq!(parse_stat(b"-1 (x) S"), Err(StatParseError::BadPid));
    }

    #[test]
    fn nspid_outer_first() {
        let st = b"Name:\tx\nNSpid:\t4242\t1\nPPid:\t0\n";
        let v = parse_nspid(st).unwrap();
        assert_eq!(v.iter().map(|p| p.get()).collect::<Vec<_>>(), vec![4242, 1]);
        assert_eq!(parse_nspid(b"Name: x\n"), Err(NsPidParseError::Missing));
        assert_eq!(parse_nspid(b"NSpid: x\n"), Err(NsPidParseError::Malformed));
    }

    proptest! {
        #[test]
        fn stat_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_stat(&bytes);
        }

        #[test]
        fn stat_round_trips(comm in "[ -~]{0,16}", start in any::<u64>()) {
            let s = parse_stat(record(&comm, start).as_bytes()).unwrap();
            prop_assert_eq!(s.comm, comm);
            prop_assert_eq!(s.start_time, StartTime(start));
        }

        #[test]
        fn nspid_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_nspid(&bytes);
        }

        #[test]
        fn nspid_round_trips(pids in proptest::collection::vec(1i32..i32::MAX, 1..5)) {
            let line = pids.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\t");
            let st = format!("Name:\tx\nNSpid:\t{line}\n");
            let got = parse_nspid(st.as_bytes()).unwrap();
            prop_assert_eq!(got.iter().map(|p| p.get()).collect::<Vec<_>>(), pids);
        }
    }
}
