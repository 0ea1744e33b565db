//! Failpoints: named points where refbox kills itself with SIGKILL when
//! `REFBOX_FAILPOINT` names them (a documented debug flag, used by crash
//! tests to stop the CLI at an exact step instead of a swept delay). They
//! only ever signal refbox's own process.
//!
//! Points: `create:after-mkdir`, `create:after-state`, `create:after-spawn`
//! (also a restart's `start`), `create:after-ready`, `start:after-state`,
//! `kill:after-verify`, `kill:after-group-kill` (also `delete --force`),
//! `delete:after-kill`, `delete:mid-remove`, `recover:before-write`, and in
//! every atomic write `write:mid-data` (half the bytes in the temp file) and
//! `write:before-rename`.
//!
//! The list an adapter can sweep is [`POINTS`], by operation.

/// The named points each operation passes, for crash sweeps (the suite's
/// adapter for refbox lists the same).
pub const POINTS: [(&str, &[&str]); 5] = [
    (
        "create",
        &[
            "create:after-mkdir",
            "write:mid-data",
            "write:before-rename",
            "create:after-state",
            "create:after-spawn",
            "create:after-ready",
        ],
    ),
    (
        "start",
        &["write:mid-data", "write:before-rename", "start:after-state"],
    ),
    (
        "run",
        &[
            "create:after-mkdir",
            "write:mid-data",
            "write:before-rename",
            "create:after-state",
            "create:after-spawn",
            "create:after-ready",
            "start:after-state",
        ],
    ),
    ("kill", &["kill:after-verify", "kill:after-group-kill"]),
    (
        "delete",
        &[
            "kill:after-group-kill",
            "delete:after-kill",
            "delete:mid-remove",
        ],
    ),
];

/// The environment variable naming the failpoint to trigger.
pub const ENV: &str = "REFBOX_FAILPOINT";

/// SIGKILLs this process if `REFBOX_FAILPOINT` equals `name`.
pub fn hit(name: &str) {
    if std::env::var_os(ENV).is_some_and(|v| v == name) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
