//! Failpoints: named points where refbox kills itself with SIGKILL when
//! `REFBOX_FAILPOINT` names them (a documented debug flag, used by crash
//! tests to stop the CLI at an exact step instead of a swept delay). They
//! only ever signal refbox's own process.
//!
//! Points: `create:after-mkdir`, `create:after-state`, `create:after-spawn`,
//! `create:after-ready`, `start:after-state`, `delete:after-kill`,
//! `delete:mid-remove`, `write:before-rename`.

/// The environment variable naming the failpoint to trigger.
pub const ENV: &str = "REFBOX_FAILPOINT";

/// SIGKILLs this process if `REFBOX_FAILPOINT` equals `name`.
pub fn hit(name: &str) {
    if std::env::var_os(ENV).is_some_and(|v| v == name) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}
