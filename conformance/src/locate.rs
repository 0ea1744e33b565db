//! Finding the default subject: refbox's binaries built from this workspace.

use std::path::{Path, PathBuf};

/// Environment variable naming the directory holding `refbox` and `refbox-shim`.
pub const REFBOX_DIR_ENV: &str = "DOPPEL_REFBOX_DIR";

/// The binaries the default subject needs.
pub const REFBOX_BINARIES: [&str; 2] = ["refbox", "refbox-shim"];

/// refbox's binaries were not found.
#[derive(Debug, thiserror::Error)]
#[error(
    "refbox binaries ({}) not found in {}; run `cargo build --workspace` first, or set {REFBOX_DIR_ENV}",
    REFBOX_BINARIES.join(", "),
    searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")
)]
pub struct RefboxNotFound {
    /// Directories looked in.
    pub searched: Vec<PathBuf>,
}

fn has_all(dir: &Path) -> bool {
    REFBOX_BINARIES.iter().all(|b| dir.join(b).is_file())
}

/// Candidate directories, in order: `$DOPPEL_REFBOX_DIR`, the directory of
/// the running executable, and its parent when that is cargo's `deps/`.
pub fn candidates() -> Vec<PathBuf> {
    if let Some(d) = std::env::var_os(REFBOX_DIR_ENV) {
        return vec![PathBuf::from(d)];
    }
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        if dir.file_name().is_some_and(|n| n == "deps") {
            if let Some(p) = dir.parent() {
                out.push(p.to_path_buf());
            }
        }
        out.push(dir);
    }
    out
}

/// The directory holding refbox's binaries.
pub fn refbox_dir() -> Result<PathBuf, RefboxNotFound> {
    let searched = candidates();
    searched
        .iter()
        .find(|d| has_all(d))
        .cloned()
        .ok_or(RefboxNotFound { searched })
}
