//! Whole-suite checks that need worlds, run through the `doppel` binary as a
//! user would: refbox passes every case; each flaw (flawbox's, and the naive
//! pid-file runtime in tests/naive) is caught by every case that claims to
//! catch it (proof the cases can fail);
//! the libtest front end (what nextest runs) and `doppel run` report the same
//! outcomes. harness = false so a machine that cannot open worlds lists these
//! as ignored with the reason instead of passing them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use doppel_conformance::catalog::{Caught, Flaw, Outcome};
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

/// Passes when nothing went wrong; else fails with every error, a line each.
fn all_held(errors: Vec<String>) -> Result<(), Failed> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n").into())
    }
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

/// flawbox's adapter file, or, for a flaw shown in another runtime shape
/// ([`Caught::dropped_ops`]), that adapter without those operations,
/// written to `dir`.
fn flawbox_adapter(dir: &Path, caught: Caught) -> Result<PathBuf, Failed> {
    let flawbox = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/adapters/flawbox.toml");
    let drop = caught.dropped_ops();
    if drop.is_empty() {
        return Ok(flawbox);
    }
    let text = std::fs::read_to_string(&flawbox).map_err(|e| e.to_string())?;
    let mut t: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    for op in drop {
        table(&mut t, "commands").remove(&op.to_string());
    }
    let p = dir.join("flawbox-shaped.toml");
    std::fs::write(&p, toml::to_string(&t).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    Ok(p)
}

/// Runs the cases that claim `caught` (see `Case::caught_by`) against
/// that runtime and requires every one of them to fail.
fn flaw_is_caught(caught: Caught) -> Result<(), Failed> {
    let cases: Vec<&str> = doppel_conformance::cases::ALL
        .iter()
        .filter(|c| c.caught_by.contains(&caught))
        .map(|c| c.id)
        .collect();
    let flaw = caught.label();
    let naive = naive_dir();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let flawbox = flawbox_adapter(dir.path(), caught)?;
    let mut args: Vec<String> = if caught == Caught::Naive {
        vec![
            "--adapter".into(),
            naive.join("naive.toml").display().to_string(),
            "--bindir".into(),
            naive.display().to_string(),
        ]
    } else {
        vec!["--adapter".into(), flawbox.display().to_string()]
    };
    args.push("--exact".into());
    args.extend(cases.iter().map(|c| c.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (r, code) = run_json(
        &args,
        // Hangs (FIFO, 1 TiB reads) are caught at the deadline; keep it short.
        &[
            ("DOPPEL_COMMAND_DEADLINE_MS", "1000"),
            (
                "FLAWBOX_FLAW",
                caught
                    .flaw()
                    .map_or("", doppel_conformance::catalog::Flaw::name),
            ),
        ],
    )?;
    let got = outcomes(&r);
    let missed: Vec<String> = cases
        .iter()
        .filter(|id| got.get(**id).map(String::as_str) != Some("fail"))
        .map(|id| {
            format!(
                "{id}: {:?}",
                r.cases.iter().find(|c| c.id == *id).map(|c| &c.outcome)
            )
        })
        .collect();
    if !missed.is_empty() {
        return Err(format!("cases that claim to catch {flaw} but did not: {missed:#?}").into());
    }
    if code != 1 {
        return Err(format!("doppel run exited {code} with MUST failures, expected 1").into());
    }
    Ok(())
}

/// Every case is paired with a flaw, and the default subject (refbox)
/// can run every case: sensitivity is measured over the whole catalog.
fn every_case_is_paired_with_a_flaw() -> Result<(), Failed> {
    let subject = doppel_conformance::runner::Subject::default_refbox();
    let unpaired: Vec<&str> = doppel_conformance::cases::ALL
        .iter()
        .filter(|c| c.caught_by.is_empty())
        .map(|c| c.id)
        .collect();
    let not_run: Vec<String> = doppel_conformance::cases::ALL
        .iter()
        .filter_map(|c| {
            c.not_applicable(&subject.adapter)
                .map(|why| format!("{}: {why}", c.id))
        })
        .collect();
    if !unpaired.is_empty() {
        return Err(format!("cases no flaw is shown to fail: {unpaired:?}").into());
    }
    if !not_run.is_empty() {
        return Err(format!("cases refbox's adapter cannot run: {not_run:?}").into());
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

/// Removes keys from an adapter's TOML.
type Strip = fn(&mut toml::Table);

/// refbox's adapter with `strip` applied, written to a file.
fn stripped_refbox(dir: &Path, name: &str, strip: Strip) -> Result<PathBuf, Failed> {
    let mut t: toml::Table = doppel_conformance::adapter::EMBEDDED_REFBOX
        .parse()
        .map_err(|e: toml::de::Error| e.to_string())?;
    strip(&mut t);
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, toml::to_string(&t).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    Ok(p)
}

fn table<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    t.get_mut(key)
        .and_then(toml::Value::as_table_mut)
        .expect("refbox.toml has the table")
}

/// An adapter that leaves out what a case needs makes the case
/// not-applicable, named, at list time; never not-staged at run time (the
/// cases' `needs` are complete). refbox is correct, so what does run passes.
fn undeclared_keys_are_not_applicable() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let variants: [(&str, Strip); 2] = [
        // No file templates, a bare identity record, no exit pointers.
        ("bare-files", |t| {
            t.remove("files");
            let id = table(t, "identity");
            for k in ["start_time", "boot_id", "legacy"] {
                id.remove(k);
            }
            let st = table(t, "state");
            st.remove("exit_code");
            st.remove("previous_exit_code");
        }),
        // No identity record: pids come from `state`.
        ("no-identity", |t| {
            t.remove("identity");
        }),
    ];
    let mut errors = Vec::new();
    for (name, strip) in variants {
        let adapter = stripped_refbox(dir.path(), name, strip)?;
        let adapter = adapter.display().to_string();
        // crash:: needs nothing beyond commands, and is the slow one.
        let (r, _) = run_json(&["--adapter", &adapter, "--skip", "crash::"], &[])?;
        let na = r
            .cases
            .iter()
            .filter(|c| c.outcome.word() == "not-applicable")
            .count();
        if na == 0 {
            errors.push(format!("{name}: no case is not-applicable"));
        }
        for c in &r.cases {
            match &c.outcome {
                Outcome::NotStaged { why } => {
                    errors.push(format!("{name}: {} not staged: {why}", c.id))
                }
                Outcome::Fail(f) => errors.push(format!("{name}: {} failed: {}", c.id, f.observed)),
                _ => {}
            }
        }
    }
    all_held(errors)
}

/// refbox's adapter with every command (helper ones too) replaced by
/// `program` with the same arguments.
fn refbox_as(dir: &Path, name: &str, program: &[&str]) -> Result<PathBuf, Failed> {
    let mut t: toml::Table = doppel_conformance::adapter::EMBEDDED_REFBOX
        .parse()
        .map_err(|e: toml::de::Error| e.to_string())?;
    fn swap(v: &mut toml::Value, program: &[&str]) {
        match v {
            toml::Value::Array(a)
                if a.first()
                    .and_then(toml::Value::as_str)
                    .is_some_and(|s| s.starts_with("{bindir}/")) =>
            {
                let rest: Vec<toml::Value> = a.drain(1..).collect();
                a.clear();
                a.extend(program.iter().map(|p| toml::Value::from(*p)));
                a.extend(rest);
            }
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| swap(v, program)),
            _ => {}
        }
    }
    t.iter_mut().for_each(|(_, v)| swap(v, program));
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, toml::to_string(&t).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    Ok(p)
}

/// A runtime whose every command exits 0 and does nothing (`/bin/true`),
/// or only prints 100 MB, passes no case and `doppel run` exits non-zero:
/// a case passes only on a scene the runtime really made.
fn do_nothing_runtimes_pass_nothing() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let printer = "head -c 100000000 /dev/zero | tr '\\0' x";
    let runtimes = [
        ("true", vec!["/bin/true"]),
        ("printer", vec!["/bin/sh", "-c", printer, "printer"]),
    ];
    let mut errors = Vec::new();
    for (name, program) in runtimes {
        let adapter = refbox_as(dir.path(), name, &program)?;
        let adapter = adapter.display().to_string();
        // The default deadline: printing 100 MB must never be mistaken for
        // a hang on a loaded machine.
        let (r, code) = run_json(&["--adapter", &adapter], &[])?;
        let passed: Vec<&str> = r
            .cases
            .iter()
            .filter(|c| c.outcome.word() == "pass")
            .map(|c| c.id.as_str())
            .collect();
        if !passed.is_empty() {
            errors.push(format!("{name}: passed {passed:?}"));
        }
        if code == 0 {
            errors.push(format!("{name}: doppel run exited 0"));
        }
        if r.summary.fail == 0 {
            errors.push(format!("{name}: no case failed: {:?}", outcomes(&r)));
        }
    }
    all_held(errors)
}

/// A runtime that fails every command (`/bin/false`), or hangs in every
/// one, gets no verdict at all: `doppel run` says so in one line and exits
/// 3, never 0 ("cases ran and no MUST failed") and never 1.
fn untestable_runtimes_exit_3() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    for (name, program) in [
        ("false", vec!["/bin/false"]),
        ("hang", vec!["/bin/sh", "-c", "exec /bin/sleep 100", "hang"]),
    ] {
        let adapter = refbox_as(dir.path(), name, &program)?;
        let out = doppel()
            .args(["run", "--adapter"])
            .arg(&adapter)
            .env("DOPPEL_COMMAND_DEADLINE_MS", "300")
            .output()
            .map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default();
        if out.status.code() != Some(3) {
            errors.push(format!(
                "{name}: exit {:?}, expected 3: {err}",
                out.status.code()
            ));
        }
        if !last.starts_with("doppel: nothing was tested (") {
            errors.push(format!("{name}: no one-line reason: {err}"));
        }
    }
    all_held(errors)
}

/// A CLI that leaves a short-lived child behind (it exits by itself and
/// init reaps it) is not a runtime that orphans boxes:
/// recovery::adopts_live_box passes and notes the child.
fn transient_cli_children_are_noted_not_failed() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut t: toml::Table = doppel_conformance::adapter::EMBEDDED_REFBOX
        .parse()
        .map_err(|e: toml::de::Error| e.to_string())?;
    // A child left behind, then exec the real command: the child has
    // nothing to do with the box and ends on its own, reaped by init; at
    // first it is a shell carrying the command's argv (the box id with
    // it), as a child between fork and exec does.
    // `run`'s children end within the case (reaped by init while still
    // carrying the box id, as init last saw them); the others' outlast
    // its last census by a moment.
    for (op, v) in table(&mut t, "commands").iter_mut() {
        let linger = if op == "run" { "0.02" } else { "0.1" };
        let wrap = [
            "/bin/sh".to_string(),
            "-c".to_string(),
            format!("(/bin/sleep {linger}; /bin/true) & exec \"$0\" \"$@\""),
        ];
        if let toml::Value::Array(a) = v {
            let rest: Vec<toml::Value> = std::mem::take(a);
            a.extend(wrap.into_iter().map(toml::Value::from));
            a.extend(rest);
        }
    }
    let p = dir.path().join("transient.toml");
    std::fs::write(&p, toml::to_string(&t).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let adapter = p.display().to_string();
    let (r, _) = run_json(
        &[
            "--adapter",
            &adapter,
            "--exact",
            "recovery::adopts_live_box",
        ],
        &[],
    )?;
    let c = r
        .cases
        .iter()
        .find(|c| c.id == "recovery::adopts_live_box")
        .ok_or("no outcome")?;
    if c.outcome != Outcome::Pass {
        return Err(format!("{:?}", c.outcome).into());
    }
    // (Whether a child was reaped inside the case's window is timing, so
    // the note is not asserted; with the old rule this failed as soon as
    // one was.)
    Ok(())
}

/// The version command runs like every runtime command: one that hangs is
/// killed at the command deadline (doctor answers and says so), and
/// nothing of it outlives doppel.
fn version_command_is_bounded() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let marker = format!("{}", 100_000 + rand_u16());
    let text = doppel_conformance::adapter::EMBEDDED_REFBOX.replace(
        "version = [\"{bindir}/refbox\", \"--version\"]",
        &format!("version = [\"/bin/sleep\", \"{marker}\"]"),
    );
    let p = dir.path().join("hanging-version.toml");
    std::fs::write(&p, text).map_err(|e| e.to_string())?;
    let mut child = doppel()
        .args(["doctor", "--adapter"])
        .arg(&p)
        .env("DOPPEL_COMMAND_DEADLINE_MS", "500")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    wait_child(&mut child)?;
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        std::io::Read::read_to_string(&mut o, &mut out).map_err(|e| e.to_string())?;
    }
    if !out.contains(&format!(
        "/bin/sleep {marker}` still running at the 500 ms deadline"
    )) {
        return Err(format!("doctor does not say the version command hung: {out}").into());
    }
    // A version command that prints 100 MB: doctor answers with one line
    // of it, not the whole (doppel reads a capped copy).
    let text = doppel_conformance::adapter::EMBEDDED_REFBOX.replace(
        "version = [\"{bindir}/refbox\", \"--version\"]",
        "version = [\"/bin/sh\", \"-c\", \"head -c 100000000 /dev/zero | tr '\\\\0' v\"]",
    );
    let p = dir.path().join("loud-version.toml");
    std::fs::write(&p, text).map_err(|e| e.to_string())?;
    let mut loud = doppel()
        .args(["doctor", "--adapter"])
        .arg(&p)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    if let Some(mut o) = loud.stdout.take() {
        std::io::Read::read_to_string(&mut o, &mut out).map_err(|e| e.to_string())?;
    }
    wait_child(&mut loud)?;
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("version:"))
        .unwrap_or_default();
    if !line.contains("vvvv") || line.len() > 300 || out.len() > 100_000 {
        return Err(format!(
            "doctor with a 100 MB version: {} bytes out, version line {:?}",
            out.len(),
            &line[..line.len().min(120)]
        )
        .into());
    }
    // Nothing of it left anywhere on the machine (read /proc, signal nothing).
    if !poll(|| !any_process_carries(&marker)) {
        return Err(format!("`/bin/sleep {marker}` outlived doppel doctor").into());
    }
    Ok(())
}

/// A random number for markers no other test uses.
fn rand_u16() -> u32 {
    u32::from(std::process::id() as u16)
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            & 0xffff)
}

/// World dirs of doppel process `pid` in `tmp`.
fn world_dirs_of(tmp: &Path, pid: u32) -> Vec<PathBuf> {
    let prefix = format!("doppel-world-{pid}-");
    std::fs::read_dir(tmp)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Polls `what` until it holds, for at most 20 s.
fn poll(what: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if what() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    what()
}

/// A `doppel run` (a long case, its worlds in `tmp`) that has opened a world.
/// Whether any process on the machine has `marker` in its argv (reads
/// /proc, signals nothing).
fn any_process_carries(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
}

fn doppel_with_worlds(tmp: &Path) -> Result<std::process::Child, Failed> {
    let mut child = doppel()
        .args(["run", "--exact", "crash::runtime_killed_mid_op"])
        .env("TMPDIR", tmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id();
    if !poll(|| !world_dirs_of(tmp, pid).is_empty()) {
        let _ = child.kill();
        let _ = child.wait();
        return Err("doppel run opened no world within 20 s".into());
    }
    Ok(child)
}

/// Waits (20 s at most) for a child we started; its exit code.
fn wait_child(child: &mut std::process::Child) -> Result<Option<i32>, Failed> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(st.code());
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("doppel did not exit within 20 s of the signal".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// SIGINT, SIGTERM or SIGHUP to `doppel run` with worlds open: it exits
/// 128 + the signal and leaves no world dir; after a SIGKILL the next run
/// removes what the dead one left.
fn interrupted_runs_leave_no_world_dirs() -> Result<(), Failed> {
    use nix::sys::signal::{Signal, kill};
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let mut child = doppel_with_worlds(tmp.path())?;
        let pid = child.id();
        kill(nix::unistd::Pid::from_raw(pid as i32), sig).map_err(|e| e.to_string())?;
        let code = wait_child(&mut child)?;
        if code != Some(128 + sig as i32) {
            errors.push(format!(
                "{sig}: exit {code:?}, expected {}",
                128 + sig as i32
            ));
        }
        let left = world_dirs_of(tmp.path(), pid);
        if !left.is_empty() {
            errors.push(format!("{sig}: world dirs left: {left:?}"));
        }
        // Nor a process of its worlds (each world's init carries its dir's
        // name; read /proc, signal nothing).
        let marker = format!("doppel-world-{pid}-");
        if !poll(|| !any_process_carries(&marker)) {
            errors.push(format!("{sig}: a process of its worlds is still running"));
        }
    }
    let mut child = doppel_with_worlds(tmp.path())?;
    let pid = child.id();
    child.kill().map_err(|e| e.to_string())?;
    child.wait().map_err(|e| e.to_string())?;
    if world_dirs_of(tmp.path(), pid).is_empty() {
        errors.push("SIGKILL left no world dir: nothing for the next run to remove".into());
    }
    let next = doppel()
        .args(["run", "--exact", "ids::argv_exact"])
        .env("TMPDIR", tmp.path())
        .output()
        .map_err(|e| e.to_string())?;
    let left = world_dirs_of(tmp.path(), pid);
    if !left.is_empty() {
        errors.push(format!(
            "the run after a SIGKILLed one left its world dirs: {left:?} ({})",
            String::from_utf8_lossy(&next.stderr)
        ));
    }
    all_held(errors)
}

/// refbox driven with its `state` read as text (a pattern with named
/// groups) and as exit codes (a wrapper mapping its status to LSB-style
/// codes), as supervisors that print no JSON are: every case that passes
/// with JSON passes, none is not staged.
fn text_and_exit_code_state_drive_refbox() -> Result<(), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let base: toml::Table = doppel_conformance::adapter::EMBEDDED_REFBOX
        .parse()
        .map_err(|e: toml::de::Error| e.to_string())?;
    let words =
        |t: &mut toml::Table, running: &str, stopped: &str, created: &str, unknown: &str| {
            for (k, v) in [
                ("running", running),
                ("stopped", stopped),
                ("created", created),
                ("unknown", unknown),
            ] {
                t.insert(k.into(), toml::Value::Array(vec![v.into()]));
            }
        };
    let mut text = base.clone();
    let mut st = toml::Table::new();
    st.insert("format".into(), "text".into());
    st.insert(
        "pattern".into(),
        r#"(?s)"status": "(?P<status>\w+)",\s*"pid": (?P<pid>\d+|null)"#.into(),
    );
    words(&mut st, "running", "stopped", "created", "unknown");
    text.insert("state".into(), toml::Value::Table(st));
    let mut codes = base;
    let mut st = toml::Table::new();
    st.insert("format".into(), "exit-code".into());
    words(&mut st, "0", "3", "5", "4");
    codes.insert("state".into(), toml::Value::Table(st));
    let script = r#"out=$("$0" --root "$1" state "$2") || exit 1; case $out in *'"status": "running"'*) exit 0;; *'"status": "stopped"'*) exit 3;; *'"status": "created"'*) exit 5;; *) exit 4;; esac"#;
    table(&mut codes, "commands").insert(
        "state".into(),
        toml::Value::Array(
            ["/bin/sh", "-c", script, "{bindir}/refbox", "{root}", "{id}"]
                .into_iter()
                .map(toml::Value::from)
                .collect(),
        ),
    );
    let mut errors = Vec::new();
    for (name, t) in [("text", text), ("exit-code", codes)] {
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, toml::to_string(&t).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let adapter = p.display().to_string();
        let (r, code) = run_json(&["--adapter", &adapter], &[])?;
        for c in &r.cases {
            if !matches!(c.outcome, Outcome::Pass | Outcome::NotApplicable { .. }) {
                errors.push(format!("{name}: {}: {:?}", c.id, c.outcome));
            }
        }
        if code != 0 || r.summary.pass < 25 {
            errors.push(format!("{name}: exit {code}, {} passed", r.summary.pass));
        }
    }
    all_held(errors)
}

/// `doppel bench` writing to a log (stderr not a terminal) writes plain
/// lines, never a `\r` redraw.
fn bench_progress_in_a_log_is_plain_lines() -> Result<(), Failed> {
    let out = doppel()
        .args([
            "bench",
            "--boxes",
            "3",
            "--samples",
            "1",
            "--recovery-samples",
            "1",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("bench failed: {err}").into());
    }
    if err.contains('\r') || !err.contains("creating boxes 3/3") {
        return Err(format!("progress in a log: {err:?}").into());
    }
    Ok(())
}

/// The uid `refbox_passes_as_an_ordinary_user` runs doppel as.
const NOBODY: u32 = 65534;

/// Why doppel cannot be run as [`NOBODY`] here, if it cannot: not root,
/// or a dir on the way to the binaries that others may not search.
fn nobody_cannot_run() -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: cannot switch to uid 65534".into());
    }
    let exe = Path::new(env!("CARGO_BIN_EXE_doppel"));
    for p in exe.ancestors() {
        let Ok(m) = std::fs::metadata(p) else {
            continue;
        };
        if m.permissions().mode() & 0o001 == 0 {
            return Some(format!(
                "{} is not searchable by other users (mode {:o})",
                p.display(),
                m.permissions().mode() & 0o7777
            ));
        }
    }
    None
}

/// Run by an ordinary user (uid 65534, worlds in a user namespace), refbox
/// passes what it passes as root: a scene the harness cannot make there (a
/// parent owned by someone else than the runtime) is noted, never blamed
/// on the runtime.
fn refbox_passes_as_an_ordinary_user() -> Result<(), Failed> {
    use std::os::unix::process::CommandExt;
    let out_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::set_permissions(
        out_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .map_err(|e| e.to_string())?;
    let out = out_dir.path().join("report.json");
    let status = doppel()
        .args([
            "run",
            "--exact",
            "files::private_dirs",
            "identity::recycled_pid_not_alive",
        ])
        .args(["--format", "json", "-o"])
        .arg(&out)
        .uid(NOBODY)
        .gid(NOBODY)
        .env("HOME", out_dir.path())
        .output()
        .map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&out).map_err(|e| {
        format!(
            "no report ({e}); stderr: {}",
            String::from_utf8_lossy(&status.stderr)
        )
    })?;
    let r: Report = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let bad: Vec<String> = r
        .cases
        .iter()
        .filter(|c| c.outcome != Outcome::Pass)
        .map(|c| format!("{}: {:?}", c.id, c.outcome))
        .collect();
    if !bad.is_empty() || status.status.code() != Some(0) {
        return Err(format!("exit {:?}: {bad:#?}", status.status.code()).into());
    }
    let private = r.cases.iter().find(|c| c.id == "files::private_dirs");
    let staging = private.and_then(|c| c.staging.clone()).unwrap_or_default();
    if !staging.contains("no owned by uid 65534 parent") {
        return Err(format!("the foreign-owned parent is not noted: {staging:?}").into());
    }
    Ok(())
}

/// The flaw only a helper with cgroups can show.
const CGROUP_FLAW: Caught = Caught::Flaw(Flaw::HelperForgetsBoxes);

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let machine = Machine::detect();
    let blocked = machine.missing_all();
    let ignore = !blocked.is_empty();
    if ignore {
        eprintln!("world tests ignored: {}", blocked.join("; "));
    }
    let nobody = nobody_cannot_run();
    if let Some(why) = &nobody {
        eprintln!("refbox_passes_as_an_ordinary_user ignored: {why}");
    }
    let mut flaws: Vec<Caught> = doppel_conformance::cases::ALL
        .iter()
        .flat_map(|c| c.caught_by.iter().copied())
        .collect();
    flaws.sort_unstable();
    flaws.dedup();
    let mut trials = vec![
        Trial::test("refbox_passes_every_case", refbox_passes_every_case),
        Trial::test("libtest_and_run_agree", libtest_and_run_agree),
        Trial::test(
            "undeclared_keys_are_not_applicable",
            undeclared_keys_are_not_applicable,
        ),
        Trial::test(
            "do_nothing_runtimes_pass_nothing",
            do_nothing_runtimes_pass_nothing,
        ),
        Trial::test("untestable_runtimes_exit_3", untestable_runtimes_exit_3),
        Trial::test(
            "text_and_exit_code_state_drive_refbox",
            text_and_exit_code_state_drive_refbox,
        ),
        Trial::test("version_command_is_bounded", version_command_is_bounded),
        Trial::test(
            "bench_progress_in_a_log_is_plain_lines",
            bench_progress_in_a_log_is_plain_lines,
        ),
        Trial::test(
            "interrupted_runs_leave_no_world_dirs",
            interrupted_runs_leave_no_world_dirs,
        ),
        Trial::test(
            "refbox_passes_as_an_ordinary_user",
            refbox_passes_as_an_ordinary_user,
        )
        .with_ignored_flag(nobody.is_some()),
        Trial::test(
            "transient_cli_children_are_noted_not_failed",
            transient_cli_children_are_noted_not_failed,
        ),
    ];
    // A helper that forgets its boxes' cgroups can only be caught where it
    // has cgroups: without a writable cgroup2 the helper runs its fallback.
    let no_cgroup = match std::env::var_os(doppel_conformance::cgroup::NO_CGROUP_ENV) {
        Some(_) => Some(format!(
            "disabled by {}",
            doppel_conformance::cgroup::NO_CGROUP_ENV
        )),
        None => doppel_conformance::cgroup::CgroupDir::create().err(),
    };
    if let Some(why) = &no_cgroup {
        eprintln!(
            "caught::{} ignored: no writable cgroup2 ({why})",
            CGROUP_FLAW.label()
        );
    }
    trials.extend(flaws.into_iter().map(|f| {
        let needs_cgroup = f == CGROUP_FLAW && no_cgroup.is_some();
        Trial::test(format!("caught::{}", f.label()), move || flaw_is_caught(f))
            .with_ignored_flag(needs_cgroup)
    }));
    let mut trials: Vec<Trial> = trials
        .into_iter()
        .map(|t| {
            let ignored = ignore || t.has_ignored_flag();
            t.with_ignored_flag(ignored)
        })
        .collect();
    // Pure catalog check: no world needed.
    trials.push(Trial::test(
        "every_case_is_paired_with_a_flaw",
        every_case_is_paired_with_a_flaw,
    ));
    libtest_mimic::run(&args, trials).exit_code()
}
