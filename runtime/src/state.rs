//! `state.json`: the versioned record of what a box is (id, payload, phase).
//! Pure codec here; files are written atomically by [`crate::fswrite`] and
//! read with caps by [`crate::fsread`]. Liveness is never stored: it is
//! derived each time from the identity record.

use serde::{Deserialize, Serialize};

use crate::ids::BoxId;

/// The current `state.json` version. v2 added [`BoxRecord::earlier_exits`];
/// v1 records (without it) are read as if it were `true`.
pub const STATE_VERSION: u32 = 2;

/// The oldest `state.json` version this refbox reads.
pub const OLDEST_STATE_VERSION: u32 = 1;

/// What the box's owner last asked for (not whether it is alive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Created: the shim waits for `start`.
    Created,
    /// Started: the shim runs the payload.
    Started,
    /// Marked stopped by `recover` (or after a failed start).
    Stopped,
}

/// The content of `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxRecord {
    /// Format version, [`STATE_VERSION`].
    pub version: u32,
    /// The box id (must equal its directory name).
    pub id: BoxId,
    /// Lifecycle phase.
    pub phase: Phase,
    /// Payload argv.
    pub argv: Vec<String>,
    /// Payload environment (non-secret, from `--env-file`).
    pub env: Vec<(String, String)>,
    /// Creation time, ms since the Unix epoch.
    pub created_unix_ms: u64,
    /// Whether an `exit` record may be left from a payload run before the
    /// current shim's: `false` for a new box, set when a shim is launched
    /// for a box that has one (a restart). While the current shim is
    /// verified alive and this is `false`, the box has no `exit` to read
    /// (the shim writes it just before it ends), so `list` skips the look:
    /// a failed open is ≈ 1/4 of what a box costs on tmpfs, which keeps no
    /// negative dentries. Absent from v1 records, read as `true`.
    #[serde(default = "unknown_means_maybe")]
    pub earlier_exits: bool,
}

fn unknown_means_maybe() -> bool {
    true
}

/// Why `state.json` bytes are not a valid record.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not JSON of the expected shape.
    #[error("not a valid state record")]
    Json(#[source] serde_json::Error),
    /// A version this refbox does not know.
    #[error(
        "unsupported state version {0} (this refbox reads {OLDEST_STATE_VERSION} to {STATE_VERSION})"
    )]
    Version(u32),
    /// The record names another box than its directory.
    #[error("records id {found:?} but lives in the dir of {expected:?}")]
    IdMismatch {
        /// The dir name.
        expected: String,
        /// The id inside.
        found: String,
    },
}

#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

/// Parses `state.json` bytes for box `id`. Never panics. One pass over the
/// bytes when they are a current record; only bytes that do not parse are
/// looked at again, for a version this refbox does not know (which may have
/// another shape), so that is what the error says.
pub fn parse_state(bytes: &[u8], id: &BoxId) -> Result<BoxRecord, StateError> {
    let rec: BoxRecord = match serde_json::from_slice(bytes) {
        Ok(rec) => rec,
        Err(e) => {
            return Err(match serde_json::from_slice::<VersionProbe>(bytes) {
                Ok(probe) if !(OLDEST_STATE_VERSION..=STATE_VERSION).contains(&probe.version) => {
                    StateError::Version(probe.version)
                }
                _ => StateError::Json(e),
            });
        }
    };
    if !(OLDEST_STATE_VERSION..=STATE_VERSION).contains(&rec.version) {
        return Err(StateError::Version(rec.version));
    }
    if &rec.id != id {
        return Err(StateError::IdMismatch {
            expected: id.to_string(),
            found: rec.id.to_string(),
        });
    }
    Ok(rec)
}

/// Formats a record as pretty JSON.
pub fn format_state(rec: &BoxRecord) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(rec).expect("BoxRecord always serializes");
    v.push(b'\n');
    v
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn phase() -> impl Strategy<Value = Phase> {
        prop_oneof![
            Just(Phase::Created),
            Just(Phase::Started),
            Just(Phase::Stopped)
        ]
    }

    proptest! {
        #[test]
        fn round_trips(id in "[a-z0-9][a-z0-9_.-]{0,20}", ph in phase(),
                       argv in proptest::collection::vec(".*", 0..4),
                       env in proptest::collection::vec(("[A-Z_]{1,8}", ".*"), 0..3),
                       t in any::<u64>()) {
            let rec = BoxRecord { version: STATE_VERSION, id: BoxId::new(&id).unwrap(), phase: ph, argv, env, created_unix_ms: t, earlier_exits: t % 2 == 0 };
            prop_assert_eq!(parse_state(&format_state(&rec), &rec.id).unwrap(), rec);
        }

        #[test]
        fn any_bytes_ok_or_err(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_state(&bytes, &BoxId::new("b").unwrap());
        }
    }

    #[test]
    fn a_v1_record_is_read_and_may_have_earlier_exits() {
        // As refbox wrote it before v2.
        let v1 = br#"{"version":1,"id":"a","phase":"started","argv":["sleep","9"],"env":[],"created_unix_ms":5}"#;
        let rec = parse_state(v1, &BoxId::new("a").unwrap()).unwrap();
        assert_eq!(rec.version, 1);
        assert!(rec.earlier_exits, "unknown must mean: look for an exit");
        assert_eq!(rec.argv, ["sleep", "9"]);
    }

    #[test]
    fn rejects_other_version_and_id() {
        let id = BoxId::new("a").unwrap();
        assert!(matches!(
            parse_state(br#"{"version":9}"#, &id),
            Err(StateError::Version(9))
        ));
        // A record of the current shape under another version number.
        let v9 =
            br#"{"version":9,"id":"a","phase":"created","argv":[],"env":[],"created_unix_ms":0}"#;
        assert!(matches!(parse_state(v9, &id), Err(StateError::Version(9))));
        assert!(matches!(
            parse_state(br#"{"version":1}"#, &id),
            Err(StateError::Json(_))
        ));
        let rec = BoxRecord {
            version: 1,
            id: BoxId::new("b").unwrap(),
            phase: Phase::Created,
            argv: vec![],
            env: vec![],
            created_unix_ms: 0,
            earlier_exits: false,
        };
        assert!(matches!(
            parse_state(&format_state(&rec), &id),
            Err(StateError::IdMismatch { .. })
        ));
    }
}
