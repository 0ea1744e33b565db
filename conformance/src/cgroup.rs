//! A cgroup2 dir owned by one scene, for the boxes of a runtime's helper:
//! `<cgroup2 mount>/doppel-<pid>-<random>`, created on demand. Dropping it
//! SIGKILLs every process in it (`cgroup.kill`, descendants included),
//! waits (deadline) for it to empty, and removes it and every dir under it.
//! The suite writes no other cgroup file: never one a host workload uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Set (to anything) to give scenes no cgroup, as on a machine without a
/// writable cgroup2: helpers then run their fallback.
pub const NO_CGROUP_ENV: &str = "DOPPEL_NO_CGROUP";

/// How long drop waits for a killed cgroup to empty.
const EMPTY_DEADLINE: Duration = Duration::from_secs(5);

/// A test-owned cgroup2 dir (see the module docs).
#[derive(Debug)]
pub struct CgroupDir {
    path: PathBuf,
}

/// The cgroup2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2")
            .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

impl CgroupDir {
    /// Creates a fresh dir under the cgroup2 mount; `Err` says why there
    /// is none (no cgroup2, not writable, no cgroup.kill).
    pub fn create() -> Result<CgroupDir, String> {
        let mount = cgroup2_mount().ok_or("no cgroup2 mount in /proc/self/mountinfo")?;
        let path = mount.join(format!(
            "doppel-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&path)
            .map_err(|e| format!("cannot create a cgroup under {}: {e}", mount.display()))?;
        let dir = CgroupDir { path };
        if !dir.path.join("cgroup.kill").exists() {
            return Err(format!(
                "{} has no cgroup.kill (Linux 5.14+ needed)",
                dir.path.display()
            ));
        }
        Ok(dir)
    }

    /// Its path (the same inside a world, which shares the host's cgroup mount).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|t| t.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

/// Child cgroup dirs, deepest first.
fn subdirs_deepest_first(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(subdirs_deepest_first(&e.path()));
            out.push(e.path());
        }
    }
    out
}

impl Drop for CgroupDir {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), b"1");
        let _ = doppel_harness::poll::until(EMPTY_DEADLINE, Duration::from_millis(1), || {
            Ok::<_, std::convert::Infallible>(if populated(&self.path) {
                std::ops::ControlFlow::Continue(())
            } else {
                std::ops::ControlFlow::Break(())
            })
        });
        for d in subdirs_deepest_first(&self.path) {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}
