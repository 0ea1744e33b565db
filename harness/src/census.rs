//! Owns [`Census`]: a snapshot of every process in a world (read by init
//! from the world's /proc) plus the orphans init reaped, and the questions
//! tests ask of it: zombies and their parents, live orphans, processes whose
//! argv or environ leak a secret, open fds, and the signals world processes
//! sent to init (PID 1).

use crate::ids::Pid;
use crate::proto::{InitSignal, ProcessRecord, ReapedOrphan};

/// A census of a world. Build one with [`crate::World::census`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Census {
    processes: Vec<ProcessRecord>,
    reaped_orphans: Vec<ReapedOrphan>,
    init_signals: Vec<InitSignal>,
    init_signals_dropped: u64,
}

/// A zombie and its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zombie<'a> {
    /// The zombie.
    pub process: &'a ProcessRecord,
    /// Its parent, when the parent is in the census (ppid 0 = outside).
    pub parent: Option<&'a ProcessRecord>,
}

/// Where a secret was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretLocation {
    /// In argv\[index\].
    Argv(usize),
    /// In the environment variable with this name.
    Environ(String),
}

/// A process carrying a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHit {
    /// The process.
    pub pid: Pid,
    /// Where.
    pub location: SecretLocation,
}

impl Census {
    /// Wraps raw records.
    pub fn new(processes: Vec<ProcessRecord>, reaped_orphans: Vec<ReapedOrphan>) -> Census {
        Census {
            processes,
            reaped_orphans,
            init_signals: Vec::new(),
            init_signals_dropped: 0,
        }
    }

    /// Adds the signals init received (`dropped`: those past the record's cap).
    pub fn with_init_signals(mut self, signals: Vec<InitSignal>, dropped: u64) -> Census {
        self.init_signals = signals;
        self.init_signals_dropped = dropped;
        self
    }

    /// Signals world processes sent to init (PID 1) since the world opened,
    /// with their senders, in the order init took them (of the signals
    /// pending at once, the kernel hands over the lowest number first). Catchable signals only: KILL and
    /// STOP to init from inside the world are dropped by the kernel and
    /// leave no trace. A standard signal sent again while one of its kind
    /// is still pending in init is merged by the kernel into one record.
    pub fn init_signals(&self) -> &[InitSignal] {
        &self.init_signals
    }

    /// Signals init received after its record was full
    /// ([`crate::proto::MAX_INIT_SIGNALS`]).
    pub fn init_signals_dropped(&self) -> u64 {
        self.init_signals_dropped
    }

    /// Every process, by PID (init is PID 1).
    pub fn processes(&self) -> &[ProcessRecord] {
        &self.processes
    }

    /// One process.
    pub fn process(&self, pid: Pid) -> Option<&ProcessRecord> {
        self.processes.iter().find(|p| p.stat.pid == pid)
    }

    /// Orphans init reaped since the world opened (pid, status, comm, argv).
    pub fn reaped_orphans(&self) -> &[ReapedOrphan] {
        &self.reaped_orphans
    }

    /// Zombies (state `Z`) with their parents.
    pub fn zombies(&self) -> Vec<Zombie<'_>> {
        self.processes
            .iter()
            .filter(|p| p.stat.is_zombie())
            .map(|p| Zombie {
                process: p,
                parent: Pid::new(p.stat.ppid).ok().and_then(|pp| self.process(pp)),
            })
            .collect()
    }

    /// Zombies whose parent is `parent`.
    pub fn zombies_of(&self, parent: Pid) -> Vec<&ProcessRecord> {
        self.processes
            .iter()
            .filter(|p| p.stat.is_zombie() && p.stat.ppid == parent.get())
            .collect()
    }

    /// Live orphans: not zombies, parent is init, but init did not spawn them
    /// (daemons that double-forked, children of a dead parent).
    pub fn orphans(&self) -> Vec<&ProcessRecord> {
        self.processes
            .iter()
            .filter(|p| {
                p.stat.pid != Pid::INIT
                    && p.stat.ppid == 1
                    && !p.stat.is_zombie()
                    && !p.spawned_by_init
            })
            .collect()
    }

    /// Every place `secret` appears in a process's argv or environ
    /// (substring match; environ as read, capped).
    pub fn containing_secret(&self, secret: &str) -> Vec<SecretHit> {
        let mut hits = Vec::new();
        if secret.is_empty() {
            return hits;
        }
        for p in &self.processes {
            for (i, a) in p.argv.iter().enumerate() {
                if a.contains(secret) {
                    hits.push(SecretHit {
                        pid: p.stat.pid,
                        location: SecretLocation::Argv(i),
                    });
                }
            }
            for e in &p.environ {
                if e.contains(secret) {
                    let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
                    hits.push(SecretHit {
                        pid: p.stat.pid,
                        location: SecretLocation::Environ(key.to_string()),
                    });
                }
            }
        }
        hits
    }

    /// Open fds of `pid` as (number, readlink target); empty if unknown.
    pub fn open_fds(&self, pid: Pid) -> &[(i32, String)] {
        self.process(pid).map_or(&[], |p| p.fds.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::StartTime;
    use crate::procfs::ProcStat;

    fn rec(pid: i32, ppid: i32, state: char, env: &[&str], by_init: bool) -> ProcessRecord {
        ProcessRecord {
            stat: ProcStat {
                pid: Pid::new(pid).unwrap(),
                comm: "x".into(),
                state,
                ppid,
                start_time: StartTime(1),
            },
            argv: vec!["x".into(), format!("--id=p{pid}")],
            environ: env.iter().map(|s| s.to_string()).collect(),
            environ_truncated: false,
            exe: None,
            fds: vec![(0, "/dev/null".into())],
            spawned_by_init: by_init,
        }
    }

    #[test]
    fn questions() {
        let c = Census::new(
            vec![
                rec(1, 0, 'S', &[], false),
                rec(2, 1, 'S', &["TOKEN=hunter2"], true),
                rec(3, 2, 'Z', &[], false),
                rec(4, 1, 'S', &[], false),
            ],
            vec![],
        );
        let z = c.zombies();
        assert_eq!(z.len(), 1);
        assert_eq!(z[0].parent.map(|p| p.stat.pid.get()), Some(2));
        assert_eq!(c.orphans().len(), 1);
        assert_eq!(c.orphans()[0].stat.pid.get(), 4);
        let hits = c.containing_secret("hunter2");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].location, SecretLocation::Environ("TOKEN".into()));
        assert!(c.containing_secret("nothere").is_empty());
        assert_eq!(
            c.containing_secret("--id=p3")[0].location,
            SecretLocation::Argv(1)
        );
        assert_eq!(c.open_fds(Pid::new(2).unwrap()).len(), 1);
    }
}
