//! Helpers for refbox's process tests outside worlds: this test process
//! becomes a child subreaper, so every shim and payload it causes ends up
//! as its child, and [`Reaped`] kills and reaps exactly those on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Makes this process a child subreaper and, on drop, SIGKILLs and reaps
/// every child it still has (shims and orphaned payloads started by the test).
/// It also serializes the tests that hold one, so under `cargo test` (threads
/// in one process) no test kills or counts another's children; under nextest
/// (a process per test) the lock is free.
pub struct Reaped {
    _serial: std::sync::MutexGuard<'static, ()>,
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Reaped {
    pub fn new() -> Self {
        let serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .expect("PR_SET_CHILD_SUBREAPER");
        Reaped { _serial: serial }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        // Children listed by the kernel are ours: safe to kill and reap by pid.
        for _ in 0..3 {
            let kids = children();
            if kids.is_empty() {
                break;
            }
            for pid in kids {
                let p = rustix::process::Pid::from_raw(pid).expect("pid > 0");
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty());
            }
        }
    }
}

/// The pids of this process's children (all threads).
pub fn children() -> Vec<i32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(s) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Zombie children of this process.
pub fn zombie_children() -> Vec<i32> {
    children()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|b| {
                    let i = b.iter().rposition(|&c| c == b')')?;
                    b.get(i + 2).copied()
                })
                == Some(b'Z')
        })
        .collect()
}

/// A fresh private root inside a tempdir.
pub fn root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    (dir, root)
}

/// The built refbox binaries.
pub fn refbox_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_refbox"))
}

/// The built shim.
pub fn shim_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_refbox-shim"))
}

/// Reads a file to string (test helper).
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
