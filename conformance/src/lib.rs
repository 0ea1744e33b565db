//! doppel-conformance: the conformance suite for programs that supervise
//! long-lived processes.
//!
//! Modules, in the direction of dependency:
//!
//! - [`adapter`]: the TOML adapter protocol (schema, validation, templates,
//!   state-output parsing). Depends on nothing else here.
//! - [`catalog`]: case and outcome types.
//! - [`world`]: glue to doppel-harness (worlds, impostors, plants, census).
//! - [`scene`]: one case's stage: a world plus the runtime driven through
//!   its adapter. Uses `adapter` and `world`.
//! - [`cases`]: the catalog itself; each case uses only `scene`.
//! - [`report`]: JSON/JUnit/Markdown/human output and `compare`.
//! - [`runner`]: runs cases (one world each) for `doppel run` and for the
//!   libtest protocol nextest speaks.
//! - [`bench`](mod@bench): `doppel bench`, runtimes' state/list/recovery latency side
//!   by side with N live boxes. Uses `scene`.
//! - [`cli`]: the `doppel` command line, shared by the binary and the
//!   `suite` test target.
//! - [`input`]: reading files a user gives (adapter, reports): capped,
//!   non-blocking, regular files only.
//! - [`locate`]: finds refbox's binaries, the default subject.
//! - [`progress`]: pacing of progress lines (in place on a terminal, plain
//!   lines in a log).
//! - [`cgroup`]: a test-owned cgroup2 dir per scene (for helpers' box
//!   cgroups), killed and removed when the scene ends.
//! - [`oci`]: payload mode `oci-bundle`: a bundle per box (built by
//!   doppel-fixtures) and the host cgroups real OCI runtimes leave.

pub mod adapter;
pub mod bench;
pub mod cases;
pub mod catalog;
pub mod cgroup;
pub mod cli;
pub mod input;
pub mod locate;
pub mod oci;
pub mod plot;
pub mod progress;
pub mod report;
pub mod runner;
pub mod scene;
pub mod supervisor;
pub mod world;
