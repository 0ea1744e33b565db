//! Owns the embedder's side of library (daemon) mode: a process that runs a
//! [`Runtime`] in-process also has children of its own (hooks, helpers, a
//! shell), and the runtime's reaper must never take their exit statuses.
//!
//! [`reaper_probe`] is that situation on purpose, in a fixed order that makes
//! a `waitpid(-1)` reaper steal deterministically: boxes are started (their
//! shims are this process's children, registered with the scoped reaper);
//! the embedder's own child exits and is left unreaped; the boxes are killed,
//! so the reaper wakes and reaps while the child's status is pending; only
//! then does the embedder wait for its child itself. `refbox reaper-probe`
//! prints the report; the suite's `zombies::reaper_scoped` judges it.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;

use crate::ids::BoxId;
use crate::runtime::{CreateOptions, Runtime, RuntimeError};

/// How long the probe waits for its child to exit, and for the reaper.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the probe does.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The exit code the embedder's child exits with (`/bin/sh -c 'exit N'`).
    pub child_exit: u8,
    /// Boxes started and force-deleted while the child's status is pending.
    pub boxes: usize,
    /// The boxes' payload (a long-lived program).
    pub payload: Vec<String>,
}

/// What the embedder's own wait saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildReport {
    /// The child's pid.
    pub pid: u32,
    /// The code it was told to exit with.
    pub expected: u8,
    /// The exit code the embedder's wait returned, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Why the wait failed (e.g. ECHILD: someone else reaped it).
    pub error: Option<String>,
}

/// The probe's report (`refbox reaper-probe` prints it as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// The embedder's child and what its wait saw.
    pub child: ChildReport,
    /// Boxes started and force-deleted.
    pub boxes: usize,
    /// Shims the runtime's reaper reaped while the child's status was
    /// pending (0 means the reaper never ran: the probe proved nothing).
    pub reaped: usize,
    /// Whether the embedder got the real exit code.
    pub kept: bool,
}

/// The probe could not set its scene.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The embedder's child could not be spawned.
    #[error("cannot spawn the embedder's child `/bin/sh -c 'exit {code}'`")]
    Spawn {
        /// Its exit code.
        code: u8,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The child did not exit in time.
    #[error("the embedder's child (pid {pid}) did not exit within {timeout:?}")]
    ChildHung {
        /// Its pid.
        pid: u32,
        /// How long the probe waited.
        timeout: Duration,
    },
    /// A pidfd for the child could not be opened.
    #[error("pid {pid}: cannot open a pidfd for the embedder's child")]
    Pidfd {
        /// The child's pid.
        pid: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A box operation failed.
    #[error("box {id}")]
    Box {
        /// The box.
        id: BoxId,
        /// The error.
        #[source]
        source: RuntimeError,
    },
    /// The reaper did not reap the killed boxes' shims in time.
    #[error("the reaper left {left} shim(s) unreaped after {timeout:?}")]
    ReaperHung {
        /// Shims still registered.
        left: usize,
        /// How long the probe waited.
        timeout: Duration,
    },
}

/// Runs the probe on `rt` (see the module docs for the order of events).
pub fn reaper_probe(rt: &Runtime, opts: &ProbeOptions) -> Result<ProbeReport, ProbeError> {
    let ids: Vec<BoxId> = (0..opts.boxes)
        .map(|i| {
            BoxId::new(&format!("probe-{}-{i}", std::process::id()))
                .expect("probe ids are in the BoxId charset")
        })
        .collect();
    let boxed = |id: &BoxId| {
        let id = id.clone();
        move |source| ProbeError::Box { id, source }
    };
    for id in &ids {
        rt.create(&CreateOptions {
            id: id.clone(),
            argv: opts.payload.clone(),
            env: Vec::new(),
            secret: None,
        })
        .map_err(boxed(id))?;
        rt.start(id, None).map_err(boxed(id))?;
    }
    let code = opts.child_exit;
    let mut child = Command::new("/bin/sh")
        .args(["-c", &format!("exit {code}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|source| ProbeError::Spawn { code, source })?;
    let pid = child.id();
    let raw = rustix::process::Pid::from_raw(pid as i32).expect("a child pid is > 0");
    let pidfd =
        rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).map_err(|e| {
            ProbeError::Pidfd {
                pid,
                source: e.into(),
            }
        })?;
    // Readable once it has exited; it stays a zombie until someone waits.
    if !crate::identity::wait_pidfd(&pidfd, PROBE_TIMEOUT) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ProbeError::ChildHung {
            pid,
            timeout: PROBE_TIMEOUT,
        });
    }
    let before = rt.registered_children().len();
    for id in &ids {
        rt.delete(id, true).map_err(boxed(id))?;
    }
    if !rt.wait_reaped(PROBE_TIMEOUT) {
        return Err(ProbeError::ReaperHung {
            left: rt.registered_children().len(),
            timeout: PROBE_TIMEOUT,
        });
    }
    let reaped = before.saturating_sub(rt.registered_children().len());
    let report = match child.wait() {
        Ok(status) => ChildReport {
            pid,
            expected: code,
            code: status.code(),
            signal: status.signal(),
            error: None,
        },
        Err(e) => ChildReport {
            pid,
            expected: code,
            code: None,
            signal: None,
            error: Some(e.to_string()),
        },
    };
    Ok(ProbeReport {
        kept: report.code == Some(i32::from(code)),
        child: report,
        boxes: opts.boxes,
        reaped,
    })
}
