//! The `exit` file: how the payload ended, written by the shim when it does.
//! An older `exit` is moved to `exit.previous` first, so a restart keeps the
//! crash evidence of the run before.

use serde::{Deserialize, Serialize};

/// The current exit record version.
pub const EXIT_VERSION: u32 = 1;

/// How a payload ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExitRecord {
    /// Format version.
    pub version: u32,
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Terminating signal, when it was killed.
    pub signal: Option<i32>,
    /// When the shim saw it end, ms since the Unix epoch.
    pub time_unix_ms: u64,
    /// Why it ended when the shim knows better than a status (e.g. exec failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ExitRecord {
    /// The shell convention: the code, or 128 + signal.
    pub fn shell_code(&self) -> u8 {
        match (self.code, self.signal) {
            (Some(c), _) => c as u8,
            (None, Some(s)) => (128 + s) as u8,
            _ => 1,
        }
    }
}

/// Why exit bytes are not a valid record.
#[derive(Debug, thiserror::Error)]
pub enum ExitError {
    /// Not JSON of the expected shape.
    #[error("not a valid exit record")]
    Json(#[source] serde_json::Error),
    /// Unknown version.
    #[error("unsupported exit record version {0}")]
    Version(u32),
}

/// Parses an exit record. Never panics.
pub fn parse_exit(bytes: &[u8]) -> Result<ExitRecord, ExitError> {
    let rec: ExitRecord = serde_json::from_slice(bytes).map_err(ExitError::Json)?;
    if rec.version != EXIT_VERSION {
        return Err(ExitError::Version(rec.version));
    }
    Ok(rec)
}

/// Formats an exit record.
pub fn format_exit(rec: &ExitRecord) -> Vec<u8> {
    let mut v = serde_json::to_vec(rec).expect("ExitRecord always serializes");
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(code in any::<Option<i32>>(), signal in any::<Option<i32>>(), t in any::<u64>(), note in proptest::option::of(".*")) {
            let r = ExitRecord { version: EXIT_VERSION, code, signal, time_unix_ms: t, note };
            prop_assert_eq!(parse_exit(&format_exit(&r)).unwrap(), r);
        }

        #[test]
        fn any_bytes_ok_or_err(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_exit(&bytes);
        }
    }
}
