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

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
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

/// The paths of one box's files, built in one reused buffer: each file's
/// full path (for errors and for strategies that open by path) and, as a
/// suffix of the same bytes, its path relative to the root (what is opened
/// beneath the root's fd). `list` over many boxes used to spend more
/// instructions joining and stripping paths than reading the files.
#[derive(Debug)]
pub struct BoxPaths {
    /// `<root>/<id>/`, then the file name of the last [`BoxPaths::file`].
    buf: Vec<u8>,
    /// Where `<id>` starts in `buf`.
    rel_start: usize,
    /// Where the file name starts in `buf` (after `<root>/<id>/`).
    name_start: usize,
}

impl BoxPaths {
    /// The paths of box `id` under `root`.
    pub fn new(root: &Path, id: &BoxId) -> Self {
        let root = root.as_os_str().as_bytes();
        let mut buf = Vec::with_capacity(root.len() + id.as_str().len() + 16);
        buf.extend_from_slice(root);
        if !buf.ends_with(b"/") {
            buf.push(b'/');
        }
        let rel_start = buf.len();
        buf.extend_from_slice(id.as_str().as_bytes());
        buf.push(b'/');
        let name_start = buf.len();
        BoxPaths {
            buf,
            rel_start,
            name_start,
        }
    }

    /// `<root>/<id>` and `<id>`: the box dir, full and relative to the root.
    pub fn dir(&self) -> (&Path, &Path) {
        let dir = &self.buf[..self.name_start - 1];
        (as_path(dir), as_path(&dir[self.rel_start..]))
    }

    /// `<root>/<id>/<name>` and `<id>/<name>`.
    pub fn file(&mut self, name: &str) -> (&Path, &Path) {
        self.buf.truncate(self.name_start);
        self.buf.extend_from_slice(name.as_bytes());
        (as_path(&self.buf), as_path(&self.buf[self.rel_start..]))
    }
}

fn as_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_paths_are_full_and_relative_views_of_one_buffer() {
        let id = BoxId::new("box-1").unwrap();
        for root in ["/run/refbox", "/run/refbox/", "rel/root"] {
            let mut p = BoxPaths::new(Path::new(root), &id);
            let root = root.trim_end_matches('/');
            assert_eq!(
                p.dir(),
                (Path::new(&format!("{root}/box-1")), Path::new("box-1"))
            );
            let (full, rel) = p.file(STATE);
            assert_eq!(full, Path::new(&format!("{root}/box-1/state.json")));
            assert_eq!(rel, Path::new("box-1/state.json"));
            // A shorter name after a longer one: nothing of the old is left.
            let (full, rel) = p.file(EXIT);
            assert_eq!(full, Path::new(&format!("{root}/box-1/exit")));
            assert_eq!(rel, Path::new("box-1/exit"));
            assert_eq!(full, Layout::new(Path::new(root)).box_dir(&id).join(EXIT));
        }
    }
}
