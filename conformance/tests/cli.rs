//! The `doppel` command line as a user sees it, without worlds: the libtest
//! listing nextest reads, adapter errors, `compare`, help.

use std::path::Path;
use std::process::Command;

fn doppel(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args(args)
        .output()
        .expect("doppel runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn libtest_listing_names_every_case() {
    let (code, out, _) = doppel(&["--list", "--format", "terse"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!(out);
}

#[test]
fn not_applicable_cases_are_listed_as_ignored() {
    // refbox declares every capability: nothing is ignored for want of one.
    let (code, out, _) = doppel(&["--list", "--format", "terse", "--ignored"]);
    assert_eq!(code, 0);
    for id in [
        "zombies::reaper_scoped",
        "crash::helper_killed",
        "helper::signal_allowlist",
    ] {
        assert!(
            !out.contains(&format!("{id}: test")),
            "{id} ignored:\n{out}"
        );
    }
    // runc's adapter declares no daemon, helper or sentinels.
    let runc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/adapters/runc.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args(["--list", "--format", "terse", "--ignored"])
        .env("DOPPEL_ADAPTER", &runc)
        .output()
        .expect("doppel runs");
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    let out = String::from_utf8_lossy(&out.stdout);
    for id in [
        "zombies::reaper_scoped",
        "crash::helper_killed",
        "sentinels::stale_log_cleanup",
        // Declared keys, not only commands and capabilities.
        "recovery::legacy_record_read",
        "recovery::crash_evidence_kept",
    ] {
        assert!(
            out.contains(&format!("{id}: test")),
            "{id} not ignored:\n{out}"
        );
    }
    // The reasons go to stderr; the listing on stdout stays libtest's.
    for line in [
        "ignored recovery::legacy_record_read: not applicable: adapter runc does not declare identity.legacy",
        "ignored recovery::reboot_detected: not applicable: adapter runc does not declare identity.boot_id",
    ] {
        assert!(err.contains(line), "{line:?} not on stderr:\n{err}");
    }
    assert!(!out.contains("not applicable"), "{out}");
}

#[test]
fn malformed_adapter_names_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        "schema = 1\n[runtime]\nname = \"bad\"\n[payload]\nmode = \"argv\"\n[commands]\nkill = [\"bad\", \"{id}\"]\n",
    )
    .unwrap();
    let (code, _, err) = doppel(&["list", "--adapter", p.to_str().unwrap()]);
    assert_eq!(code, 2);
    let err = err.replace(p.to_str().unwrap(), "bad.toml");
    insta::assert_snapshot!(err);
}

#[test]
fn every_shipped_adapter_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/adapters");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            doppel_conformance::adapter::Adapter::load(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 1);
    let naive = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/naive/naive.toml");
    doppel_conformance::adapter::Adapter::load(&naive).unwrap();
}

#[test]
fn compare_makes_one_column_per_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let mk = |name: &str, outcome: &str| {
        let json = format!(
            r#"{{"schema":"doppel-report/1","runtime":{{"name":"{name}","version":null,"adapter":"{name}.toml"}},
            "machine_missing":[],"duration_ms":5,"summary":{{"pass":1,"fail":0,"must_fail":0,"not_applicable":0,"not_staged":0}},
            "cases":[{{"id":"ids::argv_exact","level":"MUST","outcome":"{outcome}","duration_ms":1{extra}}}]}}"#,
            extra = if outcome == "fail" {
                r#","expected":"e","observed":"o","evidence":[]"#
            } else {
                ""
            }
        );
        let p = dir.path().join(format!("{name}.json"));
        std::fs::write(&p, json).unwrap();
        p.to_str().unwrap().to_string()
    };
    let a = mk("refbox", "pass");
    let b = mk("naive", "fail");
    let (code, out, err) = doppel(&["compare", &a, &b]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!(out);
}

#[test]
fn help_names_the_subcommands() {
    let (code, out, _) = doppel(&["--help"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!(out);
}

/// refbox's adapter with every `{bindir}/refbox…` program replaced, in `dir`.
fn refbox_adapter_running(dir: &Path, name: &str, program: &str) -> std::path::PathBuf {
    let text = doppel_conformance::adapter::EMBEDDED_REFBOX
        .replace("\"{bindir}/refbox-helper\"", &format!("{program:?}"))
        .replace("\"{bindir}/refbox\"", &format!("{program:?}"));
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).expect("write the adapter");
    p
}

#[test]
fn run_exits_3_when_the_runtime_program_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = refbox_adapter_running(dir.path(), "missing", "/nonexistent/refbox");
    let start = std::time::Instant::now();
    let (code, out, err) = doppel(&["run", "--adapter", adapter.to_str().expect("utf-8")]);
    assert_eq!(code, 3, "exit 3 (nothing tested): {err}");
    assert!(out.is_empty(), "no report: {out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line says why: {err}");
    assert!(
        lines[0]
            .starts_with("doppel: nothing can be tested: commands.run runs /nonexistent/refbox"),
        "{err}"
    );
    // Decided before any world is opened.
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn run_exits_3_when_bindir_does_not_exist() {
    let (code, _, err) = doppel(&["run", "--bindir", "/nonexistent"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("{bindir} is /nonexistent") && err.lines().count() == 1,
        "names the bindir: {err}"
    );
}

#[test]
fn run_help_documents_the_exit_codes() {
    let (code, out, _) = doppel(&["run", "--help"]);
    assert_eq!(code, 0);
    for line in [
        "0  cases ran and no MUST case failed",
        "1  a MUST case failed",
        "2  usage error",
        "3  nothing was tested",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
}

/// `doppel` with `args`, and how long it took.
fn timed(args: &[&str], env: &[(&str, &str)]) -> (i32, String, std::time::Duration) {
    let start = std::time::Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_doppel"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("doppel runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed(),
    )
}

#[test]
fn a_fifo_or_a_device_as_input_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("adapter.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let fifo = fifo.to_str().expect("utf-8");
    for (args, says) in [
        (
            vec!["list", "--adapter", fifo],
            "is a FIFO, not a regular file",
        ),
        (
            vec!["run", "--adapter", fifo],
            "is a FIFO, not a regular file",
        ),
        (
            vec!["list", "--adapter", "/dev/zero"],
            "/dev/zero is a character device, not a regular file",
        ),
        (vec!["compare", fifo], "is a FIFO, not a regular file"),
        (
            vec!["compare", "/dev/zero"],
            "/dev/zero is a character device",
        ),
    ] {
        let (code, err, took) = timed(&args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            // An answer, not a hang (which would never end): a deadline
            // well above doppel's start-up on a loaded machine (~20 ms here).
            took < std::time::Duration::from_secs(5),
            "{args:?} took {took:?}"
        );
    }
    // A libtest run reads DOPPEL_ADAPTER the same way.
    let (code, err, took) = timed(&["--list"], &[("DOPPEL_ADAPTER", fifo)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a FIFO"), "{err}");
    assert!(took < std::time::Duration::from_secs(5));
}

#[test]
fn a_nul_byte_in_an_adapter_argv_is_refused_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = doppel_conformance::adapter::EMBEDDED_REFBOX.replace(
        "\"kill\", \"{id}\", \"{signal}\"",
        "\"kill\", \"{id}\\u0000x\", \"{signal}\"",
    );
    assert_ne!(text, doppel_conformance::adapter::EMBEDDED_REFBOX);
    let line = text
        .lines()
        .position(|l| l.starts_with("kill "))
        .expect("a kill line")
        + 1;
    let p = dir.path().join("nul.toml");
    std::fs::write(&p, text).expect("write");
    let (code, _, err) = doppel(&["list", "--adapter", p.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "nul.toml:{line}: key `commands.kill`: argv element 4 holds a NUL byte"
        )),
        "{err}"
    );
}

#[test]
fn a_nul_byte_in_an_adapter_path_is_refused_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = doppel_conformance::adapter::EMBEDDED_REFBOX.replace(
        "state         = \"{root}/{id}/state.json\"",
        "state         = \"{root}/{id}/state\\u0000.json\"",
    );
    assert_ne!(text, doppel_conformance::adapter::EMBEDDED_REFBOX);
    let p = dir.path().join("nul-path.toml");
    std::fs::write(&p, text).expect("write");
    let (code, _, err) = doppel(&["list", "--adapter", p.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("key `files.state`: a path cannot hold a NUL byte"),
        "{err}"
    );
}

#[test]
fn argv_exact_applies_only_to_runtimes_with_a_shim() {
    use doppel_conformance::adapter::Adapter;
    let case = doppel_conformance::cases::ALL
        .iter()
        .find(|c| c.id == "ids::argv_exact")
        .expect("the case");
    let adapters = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/adapters");
    for rt in ["runc", "crun", "youki"] {
        let a = Adapter::load(&adapters.join(format!("{rt}.toml"))).expect("valid");
        let why = case.not_applicable(&a).expect("not applicable");
        assert!(why.contains("capability `shim`"), "{rt}: {why}");
    }
    assert_eq!(case.not_applicable(&Adapter::embedded_refbox()), None);
}

#[test]
fn a_bad_command_deadline_is_refused() {
    for bad in ["abc", "0", "-5", "1.5", "99999999999"] {
        let (code, err, _) = timed(&["list"], &[("DOPPEL_COMMAND_DEADLINE_MS", bad)]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(
            err.contains(&format!("DOPPEL_COMMAND_DEADLINE_MS={bad}: not a deadline")),
            "{bad}: {err}"
        );
        let (code, err, _) = timed(&["--list"], &[("DOPPEL_COMMAND_DEADLINE_MS", bad)]);
        assert_eq!(code, 2, "libtest mode, {bad}: {err}");
    }
    let (code, err, _) = timed(&["list"], &[("DOPPEL_COMMAND_DEADLINE_MS", "2500")]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn doctor_says_when_there_is_no_version_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = doppel_conformance::adapter::EMBEDDED_REFBOX
        .replace("version = [\"{bindir}/refbox\", \"--version\"]\n", "");
    assert_ne!(text, doppel_conformance::adapter::EMBEDDED_REFBOX);
    let p = dir.path().join("no-version.toml");
    std::fs::write(&p, text).expect("write");
    let (_, out, _) = doppel(&["doctor", "--adapter", p.to_str().expect("utf-8")]);
    assert!(
        out.contains("version: (no version command (runtime.version))"),
        "{out}"
    );
}
