//! Payload mode `oci-bundle`: one OCI bundle per box, built in the world's
//! directory by doppel-fixtures' bundle builder, and the cleanup real OCI
//! runtimes need. Running as root, runc, crun and youki create a cgroup per
//! container on the host; the world's end kills the processes but not the
//! cgroups, so every box gets a unique `cgroupsPath`, the scene runs
//! `delete --force` on every box it created before its world ends, and
//! [`Bundles`] then removes any cgroup directory the runtime left behind
//! (empty by then: the world's end killed every process), saying so on
//! stderr.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use doppel_fixtures::bundle::{self, BundleSpec};

use crate::catalog::NotStaged;

/// Where cgroup hierarchies are mounted on the host.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long a left-over cgroup may stay busy after its world ended.
const CGROUP_RMDIR_DEADLINE: Duration = Duration::from_secs(2);

/// The bundles of one scene.
#[derive(Debug)]
pub struct Bundles {
    /// Random per scene, so concurrent worlds never share a cgroup.
    token: String,
    /// World path of the shared read-only rootfs, once built.
    rootfs: Option<String>,
    seq: usize,
    /// `(root, id)` of every box a create/run was attempted for.
    boxes: Vec<(String, String)>,
    cgroups: Vec<String>,
}

impl Default for Bundles {
    fn default() -> Self {
        Bundles {
            token: format!("{:08x}", rand::random::<u32>()),
            rootfs: None,
            seq: 0,
            boxes: Vec::new(),
            cgroups: Vec::new(),
        }
    }
}

impl Bundles {
    /// Builds a bundle for box `id` (state root `root`) whose process is
    /// `payload`, under the world directory `world_dir` (reached on the host
    /// through `host`). Returns the bundle's world path.
    pub fn build(
        &mut self,
        world_dir: &str,
        host: impl Fn(&str) -> PathBuf,
        root: &str,
        id: &str,
        payload: &[String],
    ) -> Result<String, NotStaged> {
        let base = format!("{}/oci", world_dir.trim_end_matches('/'));
        let rootfs = match &self.rootfs {
            Some(r) => r.clone(),
            None => {
                let r = format!("{base}/rootfs");
                bundle::build_rootfs(&host(&r), Path::new(bundle::BUSYBOX))?;
                self.rootfs = Some(r.clone());
                r
            }
        };
        self.seq += 1;
        let dir = format!("{base}/{}-{id}", self.seq);
        let cgroup = format!("/doppel-{}-{}-{id}", self.token, self.seq);
        let mut spec = BundleSpec::new(payload.iter().cloned(), rootfs);
        spec.cgroups_path = Some(cgroup.clone());
        bundle::write_bundle(&host(&dir), &spec)?;
        self.cgroups.push(cgroup);
        if !self.boxes.iter().any(|(r, i)| r == root && i == id) {
            self.boxes.push((root.to_string(), id.to_string()));
        }
        Ok(dir)
    }

    /// The boxes to `delete --force` before the world ends.
    pub fn boxes(&self) -> &[(String, String)] {
        &self.boxes
    }
}

impl Drop for Bundles {
    fn drop(&mut self) {
        // Declared after the world in `Scene`, so this runs once the world
        // (and every process in it) is gone.
        let leaked = remove_cgroups(Path::new(CGROUP_ROOT), &self.cgroups);
        if !leaked.is_empty() {
            eprintln!(
                "doppel: the runtime left {} cgroup dir(s) after delete --force and the world's end; removed: {}",
                leaked.len(),
                leaked
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}

/// Removes `<hierarchy>/<path>` for every hierarchy under `cgroup_root` and
/// every path; returns those that existed.
fn remove_cgroups(cgroup_root: &Path, paths: &[String]) -> Vec<PathBuf> {
    let Ok(hierarchies) = std::fs::read_dir(cgroup_root) else {
        return Vec::new();
    };
    let hierarchies: Vec<PathBuf> = hierarchies.flatten().map(|e| e.path()).collect();
    let mut found = Vec::new();
    for p in paths {
        for h in &hierarchies {
            let dir = h.join(p.trim_start_matches('/'));
            if !dir.is_dir() {
                continue;
            }
            let deadline = Instant::now() + CGROUP_RMDIR_DEADLINE;
            // A cgroup stays busy for a moment after its last task exits.
            while let Err(e) = std::fs::remove_dir(&dir) {
                if e.kind() == std::io::ErrorKind::NotFound || Instant::now() >= deadline {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        eprintln!("doppel: cannot remove cgroup {}: {e}", dir.display());
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            found.push(dir);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_dirs_are_found_and_removed() {
        let d = tempfile::tempdir().unwrap();
        for h in ["pids", "memory"] {
            std::fs::create_dir_all(d.path().join(h)).unwrap();
        }
        std::fs::create_dir(d.path().join("pids/doppel-x-1-a")).unwrap();
        let found = remove_cgroups(d.path(), &["/doppel-x-1-a".into(), "/doppel-x-2-b".into()]);
        assert_eq!(found, vec![d.path().join("pids/doppel-x-1-a")]);
        assert!(!d.path().join("pids/doppel-x-1-a").exists());
    }
}
