//! Owns finding the helper programs a world runs: `doppel-init` and
//! `doppel-impostor`. Order: an explicit path > the environment variable
//! (`DOPPEL_INIT` / `DOPPEL_IMPOSTOR`) > the current executable when it called
//! [`crate::init::dispatch`] > a sibling of the current executable (and of its
//! parent when it lives in `deps/`, as test binaries do). An explicit path
//! that is not an executable file is an error naming it, never a reason to
//! try the other places: a caller who names a binary wants that binary.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Which helper program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    /// `doppel-init`.
    Init,
    /// `doppel-impostor`.
    Impostor,
}

impl Helper {
    /// The binary's file name.
    pub fn binary_name(self) -> &'static str {
        match self {
            Helper::Init => "doppel-init",
            Helper::Impostor => "doppel-impostor",
        }
    }

    /// The environment variable that overrides the lookup.
    pub fn env_var(self) -> &'static str {
        match self {
            Helper::Init => "DOPPEL_INIT",
            Helper::Impostor => "DOPPEL_IMPOSTOR",
        }
    }

    fn dispatch_arg(self) -> &'static str {
        match self {
            Helper::Init => crate::init::INIT_DISPATCH_ARG,
            Helper::Impostor => crate::init::IMPOSTOR_DISPATCH_ARG,
        }
    }
}

/// A located helper: the executable and the arguments that select its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Absolute path of the executable.
    pub path: PathBuf,
    /// Arguments to put first (e.g. `__doppel-init` for a self-dispatching exe).
    pub prefix_args: Vec<OsString>,
}

/// The helper could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot find {name}: looked at {searched:?}; run `cargo build --workspace`, set {env_var}, \
     or call doppel_harness::init::dispatch() first thing in main"
)]
pub struct NotFound {
    /// Binary name.
    pub name: &'static str,
    /// Environment variable that would override.
    pub env_var: &'static str,
    /// Places looked at.
    pub searched: Vec<PathBuf>,
}

/// What is wrong with a helper path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    /// Nothing is there.
    Missing,
    /// Something other than a regular file is there.
    NotAFile,
    /// A file without any execute bit.
    NotExecutable,
    /// stat failed for another reason (errno).
    Inaccessible(i32),
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathProblem::Missing => f.write_str("does not exist"),
            PathProblem::NotAFile => f.write_str("is not a regular file"),
            PathProblem::NotExecutable => f.write_str("is not executable"),
            PathProblem::Inaccessible(errno) => write!(
                f,
                "cannot be inspected: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

/// A helper program could not be located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    /// The path given explicitly (e.g. `WorldOptions::impostor_program`)
    /// is not an executable file; no other place was tried.
    #[error("{name} given as {path:?} {problem}")]
    ExplicitPath {
        /// Binary name.
        name: &'static str,
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        problem: PathProblem,
    },
    /// No path was given and the search found nothing.
    #[error(transparent)]
    NotFound(#[from] NotFound),
}

fn check_exec_file(p: &Path) -> Result<(), PathProblem> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(p) {
        Ok(m) if !m.is_file() => Err(PathProblem::NotAFile),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(PathProblem::NotExecutable),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(PathProblem::Missing),
        Err(e) => Err(PathProblem::Inaccessible(
            e.raw_os_error().unwrap_or(libc::EIO),
        )),
    }
}

fn is_exec_file(p: &Path) -> bool {
    check_exec_file(p).is_ok()
}

/// Finds `helper`: at `explicit` when given (and only there), else by the
/// search order in the module docs.
pub fn find(helper: Helper, explicit: Option<&Path>) -> Result<Program, LocateError> {
    let plain = |path: PathBuf| Program {
        path,
        prefix_args: Vec::new(),
    };
    if let Some(p) = explicit {
        return match check_exec_file(p) {
            Ok(()) => Ok(plain(p.to_path_buf())),
            Err(problem) => Err(LocateError::ExplicitPath {
                name: helper.binary_name(),
                path: p.to_path_buf(),
                problem,
            }),
        };
    }
    let mut searched = Vec::new();
    if let Some(p) = std::env::var_os(helper.env_var()) {
        let p = PathBuf::from(p);
        if is_exec_file(&p) {
            return Ok(plain(p));
        }
        searched.push(p);
    }
    let exe = std::env::current_exe().ok();
    if crate::init::dispatched() {
        if let Some(exe) = &exe {
            return Ok(Program {
                path: exe.clone(),
                prefix_args: vec![OsString::from(helper.dispatch_arg())],
            });
        }
    }
    if let Some(dir) = exe.as_deref().and_then(Path::parent) {
        let mut dirs = vec![dir.to_path_buf()];
        if dir
            .file_name()
            .is_some_and(|n| n == "deps" || n == "examples")
        {
            if let Some(up) = dir.parent() {
                dirs.push(up.to_path_buf());
            }
        }
        for d in dirs {
            let cand = d.join(helper.binary_name());
            if is_exec_file(&cand) {
                return Ok(plain(cand));
            }
            searched.push(cand);
        }
    }
    Err(NotFound {
        name: helper.binary_name(),
        env_var: helper.env_var(),
        searched,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_path_is_the_only_place_looked_at() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("doppel-impostor");
        assert_eq!(
            find(Helper::Impostor, Some(&missing)),
            Err(LocateError::ExplicitPath {
                name: "doppel-impostor",
                path: missing.clone(),
                problem: PathProblem::Missing,
            })
        );
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"#!/bin/sh\n").unwrap();
        assert!(matches!(
            find(Helper::Init, Some(&plain)),
            Err(LocateError::ExplicitPath {
                problem: PathProblem::NotExecutable,
                ..
            })
        ));
        assert!(matches!(
            find(Helper::Init, Some(dir.path())),
            Err(LocateError::ExplicitPath {
                problem: PathProblem::NotAFile,
                ..
            })
        ));
        let err = find(Helper::Impostor, Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&missing.display().to_string()) && err.contains("does not exist"),
            "{err}"
        );
    }
}
