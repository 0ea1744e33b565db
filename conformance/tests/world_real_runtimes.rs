//! The catalog against real OCI runtimes (runc, crun, youki), driven through
//! fixtures/adapters/*.toml by the `doppel` binary as a user would: the
//! outcome of every case is compared with an insta snapshot, so a change in
//! what the suite detects in a real runtime is seen in review.
//!
//! harness = false: a test whose runtime (or busybox-static, or the ability
//! to open worlds) is missing is listed as ignored with the reason, never
//! passed. Install the runtimes with `just runtimes`
//! (fixtures/install-runtimes.sh); .ci/run does.

use std::path::{Path, PathBuf};
use std::process::Command;

use doppel_conformance::report::Report;
use doppel_conformance::world::Machine;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// The runtimes whose outcome matrix is pinned (youki is ignored, with the
/// reason, where its cargo install did not happen).
const RUNTIMES: [&str; 3] = ["runc", "crun", "youki"];

/// Commands the runtimes hang on (FIFO records) are killed at this deadline;
/// a hang is a hang at 2 s as at 10 s, and the run stays under a minute.
const DEADLINE_MS: &str = "2000";

fn adapter(runtime: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/adapters")
        .join(format!("{runtime}.toml"))
}

/// Why the suite cannot run against `runtime` here, if it cannot.
fn blocker(runtime: &str, machine: &Machine) -> Option<String> {
    let missing = machine.missing_all();
    if !missing.is_empty() {
        return Some(format!(
            "this machine cannot stage worlds: {}",
            missing.join("; ")
        ));
    }
    let version = Command::new(runtime).arg("--version").output();
    if !version.is_ok_and(|o| o.status.success()) {
        return Some(format!(
            "{runtime} is not installed (run `just runtimes` or fixtures/install-runtimes.sh as root)"
        ));
    }
    if let Err(e) =
        doppel_fixtures::bundle::check_busybox(Path::new(doppel_fixtures::bundle::BUSYBOX))
    {
        return Some(format!("no rootfs for OCI bundles: {e}"));
    }
    None
}

/// `case: outcome` per line, in catalog order: what the snapshot pins.
fn matrix(r: &Report) -> String {
    let width = r.cases.iter().map(|c| c.id.len()).max().unwrap_or(0);
    r.cases
        .iter()
        .map(|c| {
            format!(
                "{:<width$} {:<6} {}\n",
                c.id,
                c.level.to_string(),
                c.outcome.word()
            )
        })
        .collect()
}

fn outcomes_match_snapshot(runtime: &'static str) -> Result<Completion, Failed> {
    if let Some(why) = blocker(runtime, &Machine::detect()) {
        return Ok(Completion::ignored_with(why));
    }
    let out_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = out_dir.path().join("report.json");
    let run = Command::new(env!("CARGO_BIN_EXE_doppel"))
        .arg("run")
        .arg("--adapter")
        .arg(adapter(runtime))
        .args(["--format", "json", "-o"])
        .arg(&out)
        .env("DOPPEL_COMMAND_DEADLINE_MS", DEADLINE_MS)
        .output()
        .map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&out).map_err(|e| {
        format!(
            "doppel run wrote no report ({e}); stderr: {}",
            String::from_utf8_lossy(&run.stderr)
        )
    })?;
    let report: Report = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if report.runtime.name != runtime {
        return Err(format!("the report is about {:?}", report.runtime.name).into());
    }
    // A failing case prints its evidence, so a changed cell can be judged
    // from the test output alone.
    for c in &report.cases {
        if let doppel_conformance::catalog::Outcome::Fail(f) = &c.outcome {
            eprintln!("{runtime} {} FAIL: {}", c.id, f.observed);
        }
    }
    let matrix = matrix(&report);
    let result = std::panic::catch_unwind(|| {
        insta::with_settings!({
            description => format!("doppel run --adapter fixtures/adapters/{runtime}.toml ({})",
                report.runtime.version.as_deref().unwrap_or("version unknown")),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("{runtime}_outcomes"), matrix);
        });
    });
    match result {
        Ok(()) => Ok(Completion::Completed),
        Err(_) => Err(format!(
            "{runtime}: the outcome matrix differs from the snapshot:\n{matrix}"
        )
        .into()),
    }
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let machine = Machine::detect();
    let trials = RUNTIMES
        .into_iter()
        .map(|rt| {
            let why = blocker(rt, &machine);
            if let Some(why) = &why {
                eprintln!("{rt}_outcomes_match_snapshot ignored: {why}");
            }
            Trial::ignorable_test(format!("{rt}_outcomes_match_snapshot"), move || {
                outcomes_match_snapshot(rt)
            })
            .with_ignored_flag(why.is_some())
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
