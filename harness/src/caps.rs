//! Owns [`Capabilities`]: what this machine lets a world do, each missing
//! capability with a reason. Namespace steps are tried for real by
//! `doppel-init --probe` in a throwaway process; pidfd, pidfs and cgroup2
//! are checked here without writing anything on the host.
//!
//! Depends on: `locate`, `init` (probe report type).

use crate::init::ProbeReport;
use crate::locate::{self, Helper};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// `statfs` magic of pidfs (pidfds have their own inodes there, Linux 6.9+).
pub const PID_FS_MAGIC: i64 = 0x5049_4446;

/// One capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Works.
    Available,
    /// Does not work, and why.
    Missing {
        /// Human-readable reason, naming the knob when one is known.
        reason: String,
    },
}

impl Capability {
    /// True when available.
    pub fn is_available(&self) -> bool {
        matches!(self, Capability::Available)
    }

    /// The reason when missing.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Capability::Available => None,
            Capability::Missing { reason } => Some(reason),
        }
    }

    fn from_result(r: Result<(), String>) -> Capability {
        match r {
            Ok(()) => Capability::Available,
            Err(reason) => Capability::Missing { reason },
        }
    }
}

/// What this machine supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Running as root (no user namespace needed).
    pub root: bool,
    /// unshare(CLONE_NEWUSER).
    pub userns: Capability,
    /// New PID + mount namespaces (in a user namespace when not root).
    pub pidns: Capability,
    /// ns_last_pid steers the next PID inside a world.
    pub ns_last_pid: Capability,
    /// clone3 with set_tid inside a world.
    pub set_tid: Capability,
    /// pidfd_open.
    pub pidfd: Capability,
    /// pidfds live on pidfs (distinct inodes; Linux 6.9+).
    pub pidfs: Capability,
    /// A writable cgroup2 directory of our own with cgroup.kill.
    pub cgroup2: Capability,
    /// That directory, when found.
    pub cgroup2_dir: Option<PathBuf>,
    /// pid_max is per PID namespace (Linux 6.14+).
    pub per_ns_pid_max: Capability,
    /// A network namespace of a world's own, loopback up; without it
    /// worlds share the host's network (see [`crate::world::WorldOptions`]).
    pub netns: Capability,
}

impl Capabilities {
    /// Detects once per process and caches the answer.
    pub fn detect() -> &'static Capabilities {
        static CAPS: OnceLock<Capabilities> = OnceLock::new();
        CAPS.get_or_init(Capabilities::detect_uncached)
    }

    /// Detects without the cache.
    pub fn detect_uncached() -> Capabilities {
        let root = nix::unistd::getuid().is_root();
        let probe = run_probe();
        let netns = match &probe {
            Ok(p) => p.netns.clone(),
            Err(e) => Err(e.clone()),
        };
        let (userns, pidns, ns_last_pid, set_tid) = match probe {
            Ok(p) => {
                let userns = match p.userns {
                    Ok(()) => Ok(()),
                    Err(e) => Err(apparmor_hint(e)),
                };
                let pidns = match p.pidns {
                    Err(e) if !root => Err(apparmor_hint(e)),
                    other => other,
                };
                (userns, pidns, p.ns_last_pid, p.set_tid)
            }
            Err(e) => (Err(e.clone()), Err(e.clone()), Err(e.clone()), Err(e)),
        };
        let (pidfd, pidfs) = detect_pidfd();
        let (cgroup2, cgroup2_dir) = detect_cgroup2();
        let per_ns_pid_max = if crate::init::pid_max_is_per_namespace() {
            Ok(())
        } else {
            Err(format!(
                "kernel {:?} < 6.14: pid_max is global, worlds cannot set their own",
                crate::init::kernel_version()
            ))
        };
        Capabilities {
            root,
            userns: Capability::from_result(userns),
            pidns: Capability::from_result(pidns),
            ns_last_pid: Capability::from_result(ns_last_pid),
            set_tid: Capability::from_result(set_tid),
            pidfd: Capability::from_result(pidfd),
            pidfs: Capability::from_result(pidfs),
            cgroup2: Capability::from_result(cgroup2),
            cgroup2_dir,
            netns: Capability::from_result(netns),
            per_ns_pid_max: Capability::from_result(per_ns_pid_max),
        }
    }

    /// `Ok` when worlds can be opened, else the reason (for skip messages).
    pub fn worlds(&self) -> Result<(), String> {
        if let Some(r) = self.pidns.reason() {
            return Err(format!("worlds need PID/mount namespaces: {r}"));
        }
        if let Some(r) = self.pidfd.reason() {
            return Err(format!("worlds need pidfds: {r}"));
        }
        Ok(())
    }

    /// Every capability by name with its state.
    pub fn list(&self) -> Vec<(&'static str, &Capability)> {
        vec![
            ("userns", &self.userns),
            ("pidns", &self.pidns),
            ("ns_last_pid", &self.ns_last_pid),
            ("set_tid", &self.set_tid),
            ("pidfd", &self.pidfd),
            ("pidfs", &self.pidfs),
            ("cgroup2", &self.cgroup2),
            ("per_ns_pid_max", &self.per_ns_pid_max),
            ("netns", &self.netns),
        ]
    }

    /// The missing ones, as (name, reason).
    pub fn missing(&self) -> Vec<(&'static str, &str)> {
        self.list()
            .into_iter()
            .filter_map(|(n, c)| c.reason().map(|r| (n, r)))
            .collect()
    }
}

fn apparmor_hint(e: String) -> String {
    let restricted =
        std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
            .is_ok_and(|s| s.trim() == "1");
    if restricted {
        format!(
            "{e}; kernel.apparmor_restrict_unprivileged_userns=1 blocks unprivileged user \
             namespaces (run as root, or `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`)"
        )
    } else {
        e
    }
}

fn run_probe() -> Result<ProbeReport, String> {
    let prog = locate::find(Helper::Init, None).map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(&prog.path)
        .args(&prog.prefix_args)
        .arg("--probe")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("running {:?} --probe: {e}", prog.path))?;
    let exited = rustix::process::Pid::from_raw(child.id() as i32)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
        .map(|fd| {
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            let ts = rustix::event::Timespec {
                tv_sec: Duration::from_secs(10).as_secs() as i64,
                tv_nsec: 0,
            };
            matches!(rustix::event::poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
        })
        .unwrap_or(true);
    if !exited {
        let _ = child.kill();
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for the probe: {e}"))?;
    serde_json::from_slice(&out.stdout).map_err(|e| format!("probe output unreadable: {e}"))
}

fn detect_pidfd() -> (Result<(), String>, Result<(), String>) {
    let me = rustix::process::getpid();
    match rustix::process::pidfd_open(me, rustix::process::PidfdFlags::empty()) {
        Err(e) => (
            Err(format!("pidfd_open: {e}")),
            Err("needs pidfd_open".into()),
        ),
        Ok(fd) => {
            // f_type's integer type differs between architectures.
            #[allow(clippy::useless_conversion)]
            let pidfs = match rustix::fs::fstatfs(&fd) {
                Ok(s) if i64::from(s.f_type) == PID_FS_MAGIC => Ok(()),
                Ok(s) => Err(format!(
                    "pidfd is on fs magic {:#x}, not pidfs (Linux 6.9+ needed)",
                    s.f_type
                )),
                Err(e) => Err(format!("fstatfs on pidfd: {e}")),
            };
            (Ok(()), pidfs)
        }
    }
}

/// Finds our own cgroup2 directory and checks (without writing) that it is
/// writable and has cgroup.kill.
fn detect_cgroup2() -> (Result<(), String>, Option<PathBuf>) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount = mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        (fstype == "cgroup2").then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
    });
    let Some(mount) = mount else {
        return (Err("no cgroup2 mount in /proc/self/mountinfo".into()), None);
    };
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string));
    let Some(own) = own else {
        return (
            Err("no cgroup2 entry (0::) in /proc/self/cgroup".into()),
            None,
        );
    };
    let dir = mount.join(own.trim_start_matches('/'));
    if !dir.join("cgroup.kill").exists() {
        let why = if own.trim_matches('/').is_empty() {
            format!(
                "we are in the root cgroup of the cgroup2 hierarchy at {mount:?}, which has no \
                 cgroup.kill (a delegated child cgroup is needed)"
            )
        } else {
            format!("{dir:?} has no cgroup.kill (Linux 5.14+ needed)")
        };
        return (Err(why), Some(dir));
    }
    if rustix::fs::access(&dir, rustix::fs::Access::WRITE_OK).is_err() {
        return (Err(format!("{dir:?} is not writable by us")), Some(dir));
    }
    (Ok(()), Some(dir))
}
