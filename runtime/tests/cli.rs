//! The `refbox` executable as a user sees it, without worlds: help, usage
//! errors and exit codes, and what its `#![no_main]` start-up must still do
//! (standard fds, panics). Boxes are exercised in `world_refbox.rs`.

use std::process::{Command, Output};

fn refbox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_refbox"))
        .args(args)
        .output()
        .expect("refbox runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_every_command() {
    let out = refbox(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!(text(&out.stdout));
}

#[test]
fn command_help_shows_its_usage_and_the_global_options() {
    let out = refbox(&["kill", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!(text(&out.stdout));
}

#[test]
fn usage_errors_exit_2_with_the_usage_line() {
    for (args, says, usage) in [
        (
            &["state"][..],
            "the argument <ID> is required",
            "refbox state <ID>",
        ),
        (
            &["create", "b1", "sleep", "1"],
            "unexpected argument 'sleep' (a payload goes after `--`)",
            "refbox create [OPTIONS] <ID> -- <CMD>...",
        ),
        (
            &["frob"],
            "unknown command 'frob'",
            "refbox [OPTIONS] <COMMAND>",
        ),
        (
            &["list", "--format", "xml"],
            "invalid value 'xml' for --format <FORMAT>: table or json",
            "refbox list [OPTIONS]",
        ),
        (
            &["state", "a/b"],
            "invalid box id 'a/b': box id \"a/b\" has a forbidden character at byte 1",
            "refbox state <ID>",
        ),
    ] {
        let out = refbox(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with(&format!("refbox: error: {says}")),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(&format!("Usage: {usage}\n")),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn version_names_the_crate_version() {
    let out = refbox(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("refbox {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn closed_standard_fds_are_reopened_on_dev_null() {
    // Without Rust's start-up code the `refbox` binary does this itself
    // (`sys::prepare_cli_process`): else the first file it opened would
    // become its stdout. Checked in a child copy of this test (std ignores
    // EBADF on stdout, so refbox's output alone would not show it, and the
    // test binary's own start-up has reopened fds already: the child
    // closes fd 1 again).
    if std::env::var_os("REFBOX_TEST_CLOSED_STDOUT").is_some() {
        // SAFETY: close(2) of fd 1 in this child, which writes nothing to
        // it (libtest captures test output in-process); a closed fd 1 is
        // the scene under test.
        unsafe { libc::close(1) };
        refbox::sys::prepare_cli_process();
        let fd1 = std::fs::read_link("/proc/self/fd/1");
        let opened = std::fs::File::open("/proc/self/stat").map(|f| {
            use std::os::fd::AsRawFd;
            f.as_raw_fd()
        });
        eprintln!("fd 1 -> {fd1:?}; next open got fd {opened:?}");
        let ok = fd1.is_ok_and(|t| t == std::path::Path::new("/dev/null"))
            && opened.is_ok_and(|fd| fd > 2);
        std::process::exit(if ok { 0 } else { 3 });
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "closed_standard_fds_are_reopened_on_dev_null",
            "--nocapture",
        ])
        .env("REFBOX_TEST_CLOSED_STDOUT", "1")
        .output()
        .expect("the test binary runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn list_of_an_empty_root_prints_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let out = refbox(&["--root", root.to_str().unwrap(), "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("ID "),
        "{}",
        text(&out.stdout)
    );
    let out = refbox(&["list", "--format", "json", "--root", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["boxes"], serde_json::json!([]));
}
