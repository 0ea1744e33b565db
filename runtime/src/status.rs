//! What refbox reports: the JSON shapes printed by `state`, `list`, `recover`
//! and `cleanup-logs`. Field names are a contract with adapters.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::exitfile::ExitRecord;

/// The OCI runtime-spec version refbox's `state` output mimics.
pub const OCI_VERSION: &str = "1.0.2";

/// A box's status as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The shim is verified alive and waits for `start`.
    Created,
    /// The shim is verified alive and supervises the payload.
    Running,
    /// No verified process: dead, recycled pid, other boot, or never started.
    Stopped,
    /// The record cannot be verified (legacy lone pid): never signalled.
    Unknown,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Unknown => "unknown",
        })
    }
}

/// How much the recorded pid is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityKind {
    /// The record matches the live process (pidfs inode, start time, boot id).
    Verified,
    /// A legacy v1 record (lone pid): cannot be verified.
    Legacy,
    /// No live process matches the record (or there is no record).
    Absent,
}

impl fmt::Display for IdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdentityKind::Verified => "verified",
            IdentityKind::Legacy => "legacy",
            IdentityKind::Absent => "absent",
        })
    }
}

/// `refbox state ID` output (also one element of `list --format json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BoxState {
    /// OCI-style version field.
    pub oci_version: &'static str,
    /// Box id.
    pub id: String,
    /// created | running | stopped | unknown.
    pub status: Status,
    /// The shim's pid as recorded (null without a record). Trust it only when
    /// `identity` is `verified`.
    pub pid: Option<i32>,
    /// verified | legacy | absent.
    pub identity: IdentityKind,
    /// Why the identity is not verified (null when verified).
    pub reason: Option<String>,
    /// The payload argv.
    pub payload: Vec<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// How the last payload ended (from the `exit` file), if it did.
    pub exit: Option<ExitRecord>,
    /// The exit before that (from `exit.previous`).
    pub exit_previous: Option<ExitRecord>,
}

/// A directory entry under the root that could not be handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryError {
    /// The box id when the entry name is a valid one.
    pub id: Option<String>,
    /// The file or dir at fault.
    pub path: PathBuf,
    /// Why (the full error chain).
    pub error: String,
}

/// `refbox list` output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListReport {
    /// Every box that could be read, sorted by id.
    pub boxes: Vec<BoxState>,
    /// Entries that could not be read; each left in place.
    pub errors: Vec<EntryError>,
}

/// What `recover` did with one box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoverAction {
    /// Verified live: adopted as is (no new shim).
    Adopted,
    /// Dead, recycled or from another boot: marked stopped, evidence kept.
    MarkedStopped,
    /// Already stopped: nothing to do.
    Stopped,
    /// Unverifiable (legacy record): kept, not signalled.
    KeptUnknown,
}

impl fmt::Display for RecoverAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecoverAction::Adopted => "adopted",
            RecoverAction::MarkedStopped => "marked-stopped",
            RecoverAction::Stopped => "stopped",
            RecoverAction::KeptUnknown => "kept-unknown",
        })
    }
}

/// One line of `recover` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveredBox {
    /// Box id.
    pub id: String,
    /// What was done.
    pub action: RecoverAction,
    /// The recorded pid, if any.
    pub pid: Option<i32>,
    /// Status after recovery.
    pub status: Status,
    /// Why (the identity reason, or "verified").
    pub detail: String,
}

/// `refbox recover` output. Corrupt entries are in `errors`, left in place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoverReport {
    /// Every box handled.
    pub boxes: Vec<RecoveredBox>,
    /// Entries that could not be read (left in place).
    pub errors: Vec<EntryError>,
}

/// What `cleanup-logs` did with one box's log dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanupAction {
    /// Owner dead or recycled: the log dir was removed.
    Removed,
    /// Owner alive (or unverifiable): kept.
    Kept,
}

impl fmt::Display for CleanupAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CleanupAction::Removed => "removed",
            CleanupAction::Kept => "kept",
        })
    }
}

/// One line of `cleanup-logs` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CleanedLog {
    /// Box id.
    pub id: String,
    /// What was done.
    pub action: CleanupAction,
    /// Structured reason, e.g. `owner-dead pid=42`.
    pub reason: String,
}

/// `refbox cleanup-logs` output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// Every box with a log dir.
    pub boxes: Vec<CleanedLog>,
    /// Sentinels or dirs that could not be read (left in place).
    pub errors: Vec<EntryError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `state` JSON shape is a contract with adapters: pin it.
    #[test]
    fn state_json_shape() {
        let s = BoxState {
            oci_version: OCI_VERSION,
            id: "box-1".into(),
            status: Status::Stopped,
            pid: Some(4242),
            identity: IdentityKind::Absent,
            reason: Some("pid recycled: pidfs inode 9 is not the recorded 7".into()),
            payload: vec!["sleep".into(), "100".into()],
            created_unix_ms: 1_700_000_000_000,
            exit: Some(ExitRecord {
                version: 1,
                code: Some(3),
                signal: None,
                time_unix_ms: 1_700_000_001_000,
                note: None,
            }),
            exit_previous: None,
        };
        insta::assert_snapshot!(serde_json::to_string_pretty(&s).unwrap());
    }

    #[test]
    fn list_and_recover_json_shape() {
        let l = ListReport {
            boxes: vec![],
            errors: vec![EntryError {
                id: Some("bad".into()),
                path: "/r/bad/shim.pid".into(),
                error: "/r/bad/shim.pid: is a FIFO, not a regular file".into(),
            }],
        };
        let r = RecoverReport {
            boxes: vec![RecoveredBox {
                id: "a".into(),
                action: RecoverAction::MarkedStopped,
                pid: Some(42),
                status: Status::Stopped,
                detail: "process is gone".into(),
            }],
            errors: vec![],
        };
        insta::assert_snapshot!(format!(
            "{}\n{}",
            serde_json::to_string_pretty(&l).unwrap(),
            serde_json::to_string_pretty(&r).unwrap()
        ));
    }
}
