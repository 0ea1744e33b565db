//! The case catalog's vocabulary: a [`Case`] (id, level, what it needs, the
//! scene and the judgement) and its [`Outcome`]. The cases themselves live in
//! [`crate::cases`]; this module decides nothing about any runtime.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::adapter::{Adapter, Operation, RuntimeCapability};
use crate::scene::Scene;
pub use doppel_fixtures::flaw::Flaw;

/// How binding a case is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// A failure makes the run fail.
    Must,
    /// A failure is reported, the run still succeeds.
    Should,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
        })
    }
}

/// A property of the machine a case needs to set its scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MachineNeed {
    /// A world can be opened (user + PID + mount namespaces).
    World,
    /// A process can be placed at an exact PID.
    PidPlacement,
}

impl fmt::Display for MachineNeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MachineNeed::World => "world (user+pid+mount namespaces)",
            MachineNeed::PidPlacement => "pid placement (ns_last_pid or clone3 set_tid)",
        })
    }
}

/// A declaration in the adapter file (beyond `[commands]` and
/// `capabilities`) that a case needs to set its scene: a file template the
/// harness plants at, a record field it rewrites, a state pointer it reads.
/// Missing, the case is not applicable, decided when the catalog is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AdapterNeed {
    /// `files.box_dir`: the box's directory (modes checked, existence judged).
    BoxDir,
    /// `files.state`: the state record plants replace.
    StateFile,
    /// `files.state` or `identity.file`: records a symlink can replace.
    StateOrIdentityFile,
    /// `files.sentinel`: the log sentinel.
    Sentinel,
    /// `[identity]`: the record whose pid the harness rewrites.
    IdentityRecord,
    /// `identity.start_time`: rewritten for a same-tick scene.
    IdentityStartTime,
    /// `identity.boot_id`: rewritten for a record from another boot.
    IdentityBootId,
    /// `identity.legacy`: the previous record format.
    LegacyRecord,
    /// Where a box's pid is recorded: `[identity]`, else `state` output
    /// (`commands.state` with `state.pid`).
    RecordedPid,
    /// `[helper]`: the commands that start and drive the helper.
    HelperCommands,
    /// How a payload ended: `files.exit` + `files.exit_previous`, or
    /// `state.exit_code` + `state.previous_exit_code`.
    ExitEvidence,
    /// `[supervisor]`: the runtime's daemon, which the scene kills and
    /// starts again.
    Supervisor,
    /// `supervisor.pid_file`: where the daemon records its own pid.
    SupervisorPidFile,
}

impl AdapterNeed {
    /// The key(s) the adapter lacks for this need, if it lacks them.
    pub fn missing(self, a: &Adapter) -> Option<&'static str> {
        let files = &a.files;
        let id = a.identity.as_ref();
        let state = a.state.as_ref();
        let present = match self {
            AdapterNeed::BoxDir => files.box_dir.is_some(),
            AdapterNeed::StateFile => files.state.is_some(),
            AdapterNeed::StateOrIdentityFile => files.state.is_some() || id.is_some(),
            AdapterNeed::Sentinel => files.sentinel.is_some(),
            AdapterNeed::IdentityRecord => id.is_some(),
            AdapterNeed::IdentityStartTime => id.is_some_and(|i| i.start_time.is_some()),
            AdapterNeed::IdentityBootId => id.is_some_and(|i| i.boot_id.is_some()),
            AdapterNeed::LegacyRecord => id.is_some_and(|i| i.legacy.is_some()),
            AdapterNeed::RecordedPid => {
                id.is_some() || (a.has(Operation::State) && state.is_some_and(|s| s.pid.is_some()))
            }
            AdapterNeed::HelperCommands => a.helper.is_some(),
            AdapterNeed::Supervisor => a.supervisor.is_some(),
            AdapterNeed::SupervisorPidFile => {
                a.supervisor.as_ref().is_some_and(|s| s.pid_file.is_some())
            }
            AdapterNeed::ExitEvidence => {
                (files.exit.is_some() && files.exit_previous.is_some())
                    || state
                        .is_some_and(|s| s.exit_code.is_some() && s.previous_exit_code.is_some())
            }
        };
        (!present).then(|| self.keys())
    }

    /// The adapter key(s) that satisfy this need, as an adapter author reads them.
    pub fn keys(self) -> &'static str {
        match self {
            AdapterNeed::BoxDir => "files.box_dir",
            AdapterNeed::StateFile => "files.state",
            AdapterNeed::StateOrIdentityFile => "files.state or identity.file",
            AdapterNeed::Sentinel => "files.sentinel",
            AdapterNeed::IdentityRecord => "[identity]",
            AdapterNeed::IdentityStartTime => "identity.start_time",
            AdapterNeed::IdentityBootId => "identity.boot_id",
            AdapterNeed::LegacyRecord => "identity.legacy",
            AdapterNeed::RecordedPid => "[identity] or state.pid (with commands.state)",
            AdapterNeed::HelperCommands => "[helper]",
            AdapterNeed::Supervisor => "[supervisor]",
            AdapterNeed::SupervisorPidFile => "supervisor.pid_file",
            AdapterNeed::ExitEvidence => {
                "files.exit + files.exit_previous or state.exit_code + state.previous_exit_code"
            }
        }
    }
}

impl fmt::Display for AdapterNeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keys())
    }
}

/// Evidence that a case failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What had to hold.
    pub expected: String,
    /// What happened instead.
    pub observed: String,
    /// Supporting facts: census lines, signal logs, command outputs.
    pub evidence: Vec<String>,
}

/// The verdict on one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Everything that must hold held.
    Pass,
    /// Something that must hold did not.
    Fail(Failure),
    /// The adapter does not declare what the case needs.
    NotApplicable {
        /// Which operation or capability is missing.
        why: String,
    },
    /// The harness could not set the scene (machine capability, staging failure).
    NotStaged {
        /// Why.
        why: String,
    },
}

impl Outcome {
    /// Short kebab-case word for tables.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail(_) => "fail",
            Outcome::NotApplicable { .. } => "not-applicable",
            Outcome::NotStaged { .. } => "not-staged",
        }
    }

    /// Builds a failure.
    pub fn fail(
        expected: impl Into<String>,
        observed: impl Into<String>,
        evidence: Vec<String>,
    ) -> Self {
        Outcome::Fail(Failure {
            expected: expected.into(),
            observed: observed.into(),
            evidence,
        })
    }
}

/// Why a scene could not be set; `?` in a case body turns it into [`Outcome::NotStaged`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotStaged(pub String);

impl<E: std::error::Error> From<E> for NotStaged {
    fn from(e: E) -> Self {
        let mut s = e.to_string();
        let mut src = e.source();
        while let Some(inner) = src {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            src = inner.source();
        }
        NotStaged(s)
    }
}

/// Why a case body stopped before its own judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    /// The harness could not set the scene (or the runtime refused to:
    /// a command the scene needs exited non-zero): not staged.
    NotStaged(NotStaged),
    /// The runtime said it set the scene up (its command exited 0), but
    /// the scene is not there: no box, no record, nothing running. A case
    /// must never pass on a scene that does not exist, and "the runtime
    /// did nothing" is its failure, not the harness's.
    NoScene(Failure),
}

impl Halt {
    /// The outcome a halted case gets.
    pub fn outcome(self) -> Outcome {
        match self {
            Halt::NotStaged(NotStaged(why)) => Outcome::NotStaged { why },
            Halt::NoScene(f) => Outcome::Fail(f),
        }
    }
}

impl From<NotStaged> for Halt {
    fn from(e: NotStaged) -> Self {
        Halt::NotStaged(e)
    }
}

impl<E: std::error::Error> From<E> for Halt {
    fn from(e: E) -> Self {
        Halt::NotStaged(NotStaged::from(e))
    }
}

/// What a case body returns.
pub type Verdict = Result<Outcome, Halt>;

/// A runtime a case is proven to fail on: the proof that it can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Caught {
    /// flawbox with this flaw, driven by its full adapter.
    Flaw(Flaw),
    /// flawbox with this flaw, driven as a run-only CLI (its adapter
    /// without [`Caught::RUN_ONLY_DROPS`]): the shape's sweeps and scenes
    /// are shown to reach such runtimes.
    RunOnly(Flaw),
    /// The naive pid-file runtime of `conformance/tests/naive`.
    Naive,
}

impl Caught {
    /// The operations a run-only CLI lacks.
    pub const RUN_ONLY_DROPS: &'static [Operation] = &[Operation::Create, Operation::Start];

    /// `kill0-liveness`, `respawn-on-kill@run-only`, `naive`: the name
    /// tests and reports use.
    pub fn label(&self) -> String {
        match self {
            Caught::Flaw(f) => f.name().to_string(),
            Caught::RunOnly(f) => format!("{}@run-only", f.name()),
            Caught::Naive => "naive".to_string(),
        }
    }

    /// The flawbox flaw, if this is one.
    pub fn flaw(&self) -> Option<Flaw> {
        match self {
            Caught::Flaw(f) | Caught::RunOnly(f) => Some(*f),
            Caught::Naive => None,
        }
    }

    /// The operations the runtime's adapter lacks in this shape.
    pub fn dropped_ops(&self) -> &'static [Operation] {
        match self {
            Caught::RunOnly(_) => Self::RUN_ONLY_DROPS,
            _ => &[],
        }
    }
}

/// One conformance check.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// `area::case`.
    pub id: &'static str,
    /// MUST or SHOULD.
    pub level: Level,
    /// The scene the harness sets.
    pub scene: &'static str,
    /// What must hold.
    pub holds: &'static str,
    /// Machine properties needed.
    pub machine: &'static [MachineNeed],
    /// Adapter operations needed.
    pub ops: &'static [Operation],
    /// Adapter capabilities needed.
    pub caps: &'static [RuntimeCapability],
    /// Other adapter declarations needed (file templates, record fields,
    /// state pointers).
    pub needs: &'static [AdapterNeed],
    /// Runtimes proven to make this case fail (see [`Caught`]). Checked
    /// by tests/world_outcomes.rs.
    pub caught_by: &'static [Caught],
    /// The body: sets the scene in a fresh world, asks the runtime, judges.
    pub run: fn(&mut Scene<'_>) -> Verdict,
}

impl Case {
    /// The area, before `::`.
    pub fn area(&self) -> &'static str {
        self.id.split("::").next().unwrap_or(self.id)
    }

    /// Why the adapter cannot run this case, if it cannot.
    pub fn not_applicable(&self, adapter: &Adapter) -> Option<String> {
        let ops: Vec<String> = self
            .ops
            .iter()
            .filter(|op| !adapter.has(**op))
            .map(|op| format!("commands.{op}"))
            .collect();
        let caps: Vec<String> = self
            .caps
            .iter()
            .filter(|c| !adapter.declares(**c))
            .map(|c| format!("capability `{c}`"))
            .collect();
        let needs: Vec<String> = self
            .needs
            .iter()
            .filter_map(|n| n.missing(adapter).map(str::to_string))
            .collect();
        if ops.is_empty() && caps.is_empty() && needs.is_empty() {
            return None;
        }
        let missing = ops
            .into_iter()
            .chain(caps)
            .chain(needs)
            .collect::<Vec<_>>()
            .join(", ");
        Some(format!(
            "adapter {} does not declare {missing}",
            adapter.name
        ))
    }
}
