//! Whole-suite checks that need worlds, run through the `doppel` binary as a
//! user would: refbox passes every case; a naive pid-file runtime is caught
//! by the cases that claim to catch its mistakes (proof the cases can fail);
//! the libtest front end (what nextest runs) and `doppel run` report the same
//! outcomes. harness = false so a machine that cannot open worlds lists these
//! as ignored with the reason instead of passing them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use doppel_conformance::report::Report;
use doppel_conformance::world::Machine;
use libtest_mimic::{Arguments, Failed, Trial};

fn doppel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_doppel"))
}

fn naive_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/naive")
}

fn run_json(args: &[&str], envs: &[(&str, &str)]) -> Result<(Report, i32), Failed> {
    let out_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = out_dir.path().join("report.json");
    let mut cmd = doppel();
    cmd.arg("run")
        .args(args)
        .args(["--format", "json", "-o"])
        .arg(&out);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let status = cmd.output().map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&out).map_err(|e| {
        format!(
            "doppel run wrote no report ({e}); stderr: {}",
            String::from_utf8_lossy(&status.stderr)
        )
    })?;
    let report: Report = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok((report, status.status.code().unwrap_or(-1)))
}

fn outcomes(r: &Report) -> BTreeMap<String, String> {
    r.cases
        .iter()
        .map(|c| (c.id.clone(), c.outcome.word().to_string()))
        .collect()
}

fn refbox_passes_every_case() -> Result<(), Failed> {
    let (r, code) = run_json(&[], &[])?;
    let bad: Vec<String> = r
        .cases
        .iter()
        .filter(|c| !matches!(c.outcome.word(), "pass" | "not-applicable"))
        .map(|c| format!("{}: {:?}", c.id, c.outcome))
        .collect();
    if !bad.is_empty() || code != 0 {
        return Err(format!("exit {code}; not passed: {bad:#?}").into());
    }
    if r.summary.pass < 20 {
        return Err(format!("only {} cases passed", r.summary.pass).into());
    }
    Ok(())
}

/// Cases the naive runtime (pid file + `kill -0`, see tests/naive) must fail,
/// each with the mistake it catches.
const NAIVE_MUST_FAIL: &[(&str, &str)] = &[
    ("identity::recycled_pid_not_alive", "kill -0 liveness"),
    ("identity::same_exe_impostor", "kill -0 liveness"),
    ("stop::never_signals_foreign", "kill $(cat pid)"),
    (
        "stop::signal_targets_sane",
        "kill with an unchecked pid (0, -1)",
    ),
    (
        "recovery::unverifiable_not_orphaned",
        "legacy pid trusted as running",
    ),
    (
        "recovery::legacy_record_read",
        "legacy pid trusted and signalled",
    ),
    ("files::oversized_record", "uncapped read"),
    ("files::fifo_record", "blocking open of a FIFO"),
    ("files::symlink_record", "symlinks followed"),
    ("files::garbage_record", "no validation of the record"),
    (
        "files::bad_record_isolated",
        "one bad record stops list/recover",
    ),
    ("files::private_dirs", "default umask"),
    (
        "sentinels::stale_log_cleanup",
        "kill -0 on the sentinel pid",
    ),
];

fn naive_runtime_is_caught() -> Result<(), Failed> {
    let adapter = naive_dir().join("naive.toml");
    let bindir = naive_dir();
    let (r, code) = run_json(
        &[
            "--adapter",
            adapter.to_str().ok_or("path")?,
            "--bindir",
            bindir.to_str().ok_or("path")?,
        ],
        // Its hangs (FIFO, 1 TiB read) are caught at the deadline; keep it short.
        &[("DOPPEL_COMMAND_DEADLINE_MS", "2000")],
    )?;
    let got = outcomes(&r);
    let missed: Vec<String> = NAIVE_MUST_FAIL
        .iter()
        .filter(|(id, _)| got.get(*id).map(String::as_str) != Some("fail"))
        .map(|(id, flaw)| format!("{id} ({flaw}): {:?}", got.get(*id)))
        .collect();
    if !missed.is_empty() {
        return Err(format!("cases that did not catch the naive runtime: {missed:#?}").into());
    }
    if code != 1 {
        return Err(format!("doppel run exited {code} with MUST failures, expected 1").into());
    }
    Ok(())
}

fn libtest_and_run_agree() -> Result<(), Failed> {
    let (r, _) = run_json(&[], &[])?;
    let out = doppel()
        .args(["--include-ignored", "--test-threads", "2"])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libtest = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, verdict)) = rest.split_once(" ... ") else {
            continue;
        };
        let word = match verdict.split_whitespace().next() {
            Some("ok") => "pass",
            Some("FAILED") => "fail",
            Some("ignored,") | Some("ignored") => "not-applicable",
            other => return Err(format!("unexpected libtest verdict {other:?} in {line:?}").into()),
        };
        libtest.insert(name.trim().to_string(), word.to_string());
    }
    let run = outcomes(&r);
    if libtest != run {
        return Err(format!("libtest: {libtest:#?}\ndoppel run: {run:#?}").into());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let machine = Machine::detect();
    let blocked = machine.missing_all();
    let ignore = !blocked.is_empty();
    if ignore {
        eprintln!("world tests ignored: {}", blocked.join("; "));
    }
    let trials = vec![
        Trial::test("refbox_passes_every_case", refbox_passes_every_case),
        Trial::test("naive_runtime_is_caught", naive_runtime_is_caught),
        Trial::test("libtest_and_run_agree", libtest_and_run_agree),
    ]
    .into_iter()
    .map(|t| t.with_ignored_flag(ignore))
    .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
