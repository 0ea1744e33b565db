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
use std::time::Duration;

use doppel_fixtures::bundle::{self, BundleSpec};

use crate::catalog::NotStaged;

/// Where cgroup hierarchies are mounted on the host.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long a left-over cgroup may stay busy after its world ended.
const CGROUP_RMDIR_DEADLINE: Duration = Duration::from_secs(2);

/// How long a scene waits for the runtime's own processes to leave the world
/// after `run`/`start` returned (see [`runtime_processes`]).
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(2);

/// Live processes that are not in `before` and run the runtime itself
/// (argv\[0\] or executable named like `argv0`): after `runc run -d`
/// returns, `runc init` still has to exec the payload, and crun's
/// intermediate process still has to exit (it is reaped by the world's init;
/// on a host whose PID 1 does not reap, it stays a zombie).
pub fn runtime_processes(procs: &[crate::world::Proc], argv0: &str, before: &[i32]) -> Vec<String> {
    let name = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    let runtime = name(argv0);
    procs
        .iter()
        .filter(|p| p.state != 'Z' && !before.contains(&p.pid))
        .filter(|p| {
            p.cmdline.first().is_some_and(|a| name(a) == runtime)
                || p.exe.as_deref().is_some_and(|e| name(e) == runtime)
        })
        .map(|p| format!("pid {} {:?}", p.pid, p.cmdline))
        .collect()
}

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
        host: impl Fn(&str) -> Result<PathBuf, NotStaged>,
        root: &str,
        id: &str,
        payload: &[String],
    ) -> Result<String, NotStaged> {
        let base = format!("{}/oci", world_dir.trim_end_matches('/'));
        let rootfs = match &self.rootfs {
            Some(r) => r.clone(),
            None => {
                let r = format!("{base}/rootfs");
                bundle::build_rootfs(&host(&r)?, Path::new(bundle::BUSYBOX))?;
                self.rootfs = Some(r.clone());
                r
            }
        };
        self.seq += 1;
        let dir = format!("{base}/{}-{id}", self.seq);
        let cgroup = format!("/doppel-{}-{}-{id}", self.token, self.seq);
        let mut spec = BundleSpec::new(payload.iter().cloned(), rootfs);
        spec.cgroups_path = Some(cgroup.clone());
        bundle::write_bundle(&host(&dir)?, &spec)?;
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

    /// Host dirs, in every cgroup hierarchy, of the `cgroupsPath`s given to
    /// box `id`'s bundles that exist now (left by the runtime).
    pub fn existing_cgroups_of(&self, id: &str) -> Vec<PathBuf> {
        let suffix = format!("-{id}");
        let hierarchies: Vec<PathBuf> = std::fs::read_dir(CGROUP_ROOT)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        self.cgroups
            .iter()
            .filter(|c| c.ends_with(&suffix))
            .flat_map(|c| {
                hierarchies
                    .iter()
                    .map(move |h| h.join(c.trim_start_matches('/')))
            })
            .filter(|d| d.is_dir())
            .collect()
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
            // A cgroup stays busy for a moment after its last task exits.
            let removed = doppel_harness::poll::until(
                CGROUP_RMDIR_DEADLINE,
                doppel_harness::poll::STEP,
                || {
                    Ok::<_, std::convert::Infallible>(match std::fs::remove_dir(&dir) {
                        Ok(()) => std::ops::ControlFlow::Break(()),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            std::ops::ControlFlow::Break(())
                        }
                        Err(e) => std::ops::ControlFlow::Continue(e),
                    })
                },
            );
            if let Ok(Err(e)) = removed {
                eprintln!("doppel: cannot remove cgroup {}: {e}", dir.display());
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
    fn runtime_processes_are_new_live_runtime_processes() {
        let p = |pid: i32, state: char, argv: &[&str], exe: &str| crate::world::Proc {
            pid,
            ppid: 1,
            state,
            cmdline: argv.iter().map(|s| s.to_string()).collect(),
            exe: Some(exe.to_string()),
            start_time: 0,
            holds_secret: false,
        };
        let procs = [
            p(
                3,
                'S',
                &["runc", "init"],
                "/memfd:runc_cloned:/proc/self/exe (deleted)",
            ),
            p(4, 'S', &["/bin/sleep", "1000"], "/bin/busybox"),
            p(5, 'Z', &["crun"], "/usr/bin/crun"),
            p(6, 'S', &["runc", "init"], "/usr/sbin/runc"),
        ];
        assert_eq!(
            runtime_processes(&procs, "runc", &[6]),
            vec![r#"pid 3 ["runc", "init"]"#.to_string()]
        );
        assert!(runtime_processes(&procs, "/usr/bin/crun", &[]).is_empty());
    }

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
