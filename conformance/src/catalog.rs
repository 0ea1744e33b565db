//! The case catalog's vocabulary: a [`Case`] (id, level, what it needs, the
//! scene and the judgement) and its [`Outcome`]. The cases themselves live in
//! [`crate::cases`]; this module decides nothing about any runtime.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::adapter::{Adapter, Operation, RuntimeCapability};
use crate::scene::Scene;

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

/// What a case body returns.
pub type Verdict = Result<Outcome, NotStaged>;

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
    /// Flaws proven to make this case fail: flawbox flaw names
    /// (`FLAWBOX_FLAW`), or `naive` for the pid-file runtime in
    /// tests/naive. Checked by tests/world_outcomes.rs.
    pub caught_by: &'static [&'static str],
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
        if ops.is_empty() && caps.is_empty() {
            return None;
        }
        let missing = ops.into_iter().chain(caps).collect::<Vec<_>>().join(", ");
        Some(format!(
            "adapter {} does not declare {missing}",
            adapter.name
        ))
    }
}
