//! Owns finding the helper programs a world runs: `doppel-init` and
//! `doppel-impostor`. Order: an explicit path > the environment variable
//! (`DOPPEL_INIT` / `DOPPEL_IMPOSTOR`) > the current executable when it called
//! [`crate::init::dispatch`] > a sibling of the current executable (and of its
//! parent when it lives in `deps/`, as test binaries do).

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

fn is_exec_file(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds `helper`, preferring `explicit` when given.
pub fn find(helper: Helper, explicit: Option<&Path>) -> Result<Program, NotFound> {
    let mut searched = Vec::new();
    let plain = |path: PathBuf| Program {
        path,
        prefix_args: Vec::new(),
    };
    if let Some(p) = explicit {
        if is_exec_file(p) {
            return Ok(plain(p.to_path_buf()));
        }
        searched.push(p.to_path_buf());
    }
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
    })
}
