//! The on-disk layout under a root:
//!
//! ```text
//! <root>/                    0700, owned by the runtime's uid
//!   <box_id>/                0700
//!     state.json             versioned box record (atomic writes)
//!     shim.pid               identity record of the shim, written by itself before exec
//!     exit, exit.previous    how the last two payload runs ended
//!     log/                   0700
//!       .sentinel            `pid\nexe` of the log's owner (the shim)
//!       output               payload stdout + stderr
//! ```

use std::path::{Path, PathBuf};

use crate::ids::BoxId;

/// `state.json`.
pub const STATE: &str = "state.json";
/// The shim's identity record.
pub const IDENTITY: &str = "shim.pid";
/// How the last payload ended.
pub const EXIT: &str = "exit";
/// How the payload before that ended.
pub const EXIT_PREVIOUS: &str = "exit.previous";
/// The log dir.
pub const LOG_DIR: &str = "log";
/// The log sentinel, inside the log dir.
pub const SENTINEL: &str = ".sentinel";
/// Payload output, inside the log dir.
pub const OUTPUT: &str = "output";

/// The default root: `$XDG_RUNTIME_DIR/refbox`, or `/run/refbox` as root,
/// else `/tmp/refbox-<uid>`.
pub fn default_root() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("refbox");
    }
    let uid = rustix::process::getuid().as_raw();
    if uid == 0 {
        PathBuf::from("/run/refbox")
    } else {
        PathBuf::from(format!("/tmp/refbox-{uid}"))
    }
}

/// Paths of one root.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root`.
    pub fn new(root: &Path) -> Self {
        Layout {
            root: root.to_path_buf(),
        }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<id>`.
    pub fn box_dir(&self, id: &BoxId) -> PathBuf {
        self.root.join(id.as_str())
    }

    /// `<root>/<id>/log`.
    pub fn log_dir(&self, id: &BoxId) -> PathBuf {
        self.box_dir(id).join(LOG_DIR)
    }
}
