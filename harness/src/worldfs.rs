//! Owns host-side access to files in a world's work dir without following
//! symlinks out of it.
//!
//! The world shares the host's root filesystem, and the runtime under test
//! controls what its state dirs hold: a runtime that turned `{root}/{id}`
//! into a symlink to `/etc` would make a path built as
//! `/proc/<init>/root/<workdir>/{root}/{id}/state.json` land in the host's
//! `/etc`. So every harness write (plants, impostor logs) and checked read
//! starts from a directory fd of the work dir, opened when the world came up
//! (before any world process ran), walks the parent directories one
//! component at a time with openat2 `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS`, and acts on the final component relative to its
//! parent's fd, never following it (O_NOFOLLOW, or an `*at` call that does
//! not follow: mkdirat, mknodat, symlinkat).
//!
//! Depends on: `world` (the lexical [`check_relative`] rule).

use crate::world::{PathOutsideWorld, check_relative};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// openat2 resolution for every step: stay under the dir fd, follow no
/// symlink (and no /proc magic link) anywhere, the final component included.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Why a world path was not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectReason {
    /// The component is a symlink (it could lead anywhere, e.g. `/etc`).
    Symlink,
    /// The component should be a directory and is something else.
    NotADirectory,
    /// Resolution would leave the work dir.
    Escapes,
}

impl std::fmt::Display for RedirectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedirectReason::Symlink => {
                "is a symlink (not followed: it could lead out of the world)"
            }
            RedirectReason::NotADirectory => "is not a directory",
            RedirectReason::Escapes => "resolves outside the world's work dir",
        })
    }
}

/// A world path whose resolution met a symlink, a non-directory or an
/// escape: the harness refused to follow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("world path {path:?}: {component:?} {reason}")]
pub struct PathRedirected {
    /// The path asked for (world path).
    pub path: PathBuf,
    /// The component where resolution stopped (world path).
    pub component: PathBuf,
    /// Why.
    pub reason: RedirectReason,
}

/// Errors of host-side access to world files.
#[derive(Debug, thiserror::Error)]
pub enum WorldPathError {
    /// The path is absolute or has `..` (lexically outside the world).
    #[error(transparent)]
    Outside(#[from] PathOutsideWorld),
    /// A component is a symlink, not a directory, or escapes.
    #[error(transparent)]
    Redirected(#[from] PathRedirected),
    /// A file operation failed.
    #[error("{op} world path {path:?}")]
    Io {
        /// What the harness was doing (`open`, `mkdir`, `write`, ...).
        op: &'static str,
        /// The world path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The path names something other than a regular file (a FIFO, a
    /// directory, a device), which the harness will not read or write.
    #[error("world path {path:?} is not a regular file")]
    NotAFile {
        /// The world path.
        path: PathBuf,
    },
    /// A read found more than the cap.
    #[error("world path {path:?} holds more than {cap} bytes")]
    TooLarge {
        /// The world path.
        path: PathBuf,
        /// The cap.
        cap: u64,
    },
}

/// A parent directory resolved beneath the work dir, and the final
/// component's name in it.
#[derive(Debug)]
pub(crate) struct Parent {
    /// `O_PATH` fd of the parent directory.
    pub(crate) fd: OwnedFd,
    /// The final component.
    pub(crate) name: OsString,
    /// World path of the final component (for messages).
    pub(crate) path: PathBuf,
    /// True when the parent is the work dir itself.
    pub(crate) parent_is_root: bool,
}

/// The work dir of a world, held open by fd. See the module docs.
#[derive(Debug)]
pub(crate) struct WorkDir {
    fd: OwnedFd,
    /// World path of the work dir (for messages).
    world: PathBuf,
}

fn errno_io(e: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.raw_os_error())
}

/// The `Normal` components of a lexically checked relative path.
fn names(rel: &Path) -> Result<Vec<&OsStr>, PathOutsideWorld> {
    check_relative(rel)?;
    Ok(rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect())
}

impl WorkDir {
    /// Opens `workdir` (a world path) through `proc_root`
    /// (`/proc/<init>/root`). Called before any world process runs, so
    /// nothing in the world can have redirected the path yet; still resolved
    /// without symlinks, so a symlinked `$TMPDIR` is refused rather than
    /// trusted.
    pub(crate) fn open(proc_root: &Path, workdir: &Path) -> std::io::Result<WorkDir> {
        // /proc/<init>/root is a magic link into the world's root: follow
        // it on purpose (we checked the PID is our init), and nothing after.
        let root = rustix::fs::open(
            proc_root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_io)?;
        let inner = workdir.strip_prefix("/").unwrap_or(workdir);
        let fd = rustix::fs::openat2(
            &root,
            inner,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
        .map_err(errno_io)?;
        Ok(WorkDir {
            fd,
            world: workdir.to_path_buf(),
        })
    }

    fn world_path(&self, rel: &Path) -> PathBuf {
        self.world.join(rel)
    }

    fn io(&self, op: &'static str, rel: &Path, e: Errno) -> WorldPathError {
        WorldPathError::Io {
            op,
            path: self.world_path(rel),
            source: errno_io(e),
        }
    }

    /// Says why `name` in `dir` could not be opened as a directory.
    fn redirected(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        so_far: &Path,
    ) -> PathRedirected {
        let symlink = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
        PathRedirected {
            path: self.world_path(rel),
            component: self.world_path(so_far),
            reason: if symlink {
                RedirectReason::Symlink
            } else {
                RedirectReason::NotADirectory
            },
        }
    }

    /// Walks `dirs` from the work dir. With `create`, missing directories
    /// are made (mode 0777 less the umask, like `create_dir_all`); without,
    /// the walk stops at the first missing one (`Ok(None)`).
    fn walk(
        &self,
        dirs: &[&OsStr],
        rel: &Path,
        create: bool,
    ) -> Result<Option<OwnedFd>, WorldPathError> {
        let mut cur = rustix::io::dup(&self.fd).map_err(|e| self.io("dup", rel, e))?;
        let mut so_far = PathBuf::new();
        for name in dirs {
            so_far.push(name);
            let mut made = false;
            let next = loop {
                match rustix::fs::openat2(
                    &cur,
                    *name,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                    RESOLVE,
                ) {
                    Ok(fd) => break fd,
                    Err(Errno::NOENT) if create && !made => {
                        match rustix::fs::mkdirat(&cur, *name, Mode::from_raw_mode(0o777)) {
                            Ok(()) | Err(Errno::EXIST) => made = true,
                            Err(e) => return Err(self.io("mkdir", &so_far, e)),
                        }
                    }
                    Err(Errno::NOENT) if !create => return Ok(None),
                    Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                        return Err(self.redirected(cur.as_fd(), name, rel, &so_far).into());
                    }
                    Err(Errno::XDEV) => {
                        return Err(PathRedirected {
                            path: self.world_path(rel),
                            component: self.world_path(&so_far),
                            reason: RedirectReason::Escapes,
                        }
                        .into());
                    }
                    Err(e) => return Err(self.io("open", &so_far, e)),
                }
            };
            cur = next;
        }
        Ok(Some(cur))
    }

    /// Resolves the parent of `rel`, creating missing parent directories
    /// when `create_parents`.
    pub(crate) fn parent(
        &self,
        rel: &Path,
        create_parents: bool,
    ) -> Result<Parent, WorldPathError> {
        let names = names(rel)?;
        let Some((last, dirs)) = names.split_last() else {
            // "." or "./.": the work dir itself has no parent in the world.
            return Err(PathOutsideWorld {
                path: rel.to_path_buf(),
            }
            .into());
        };
        let fd = match self.walk(dirs, rel, create_parents)? {
            Some(fd) => fd,
            None => {
                return Err(WorldPathError::Io {
                    op: "open parent of",
                    path: self.world_path(rel),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            }
        };
        Ok(Parent {
            fd,
            name: (*last).to_os_string(),
            path: self.world_path(rel),
            parent_is_root: dirs.is_empty(),
        })
    }

    /// Checks that no existing parent directory of `rel` is a symlink or a
    /// non-directory (missing ones are fine: nothing can redirect them yet).
    /// The final component is not looked at.
    pub(crate) fn check_parents(&self, rel: &Path) -> Result<(), WorldPathError> {
        let names = names(rel)?;
        let dirs = names.split_last().map_or(&[][..], |(_, d)| d);
        self.walk(dirs, rel, false).map(|_| ())
    }

    /// `mkdir -p rel` beneath the work dir; returns the directory's `O_PATH` fd.
    pub(crate) fn create_dir_all(&self, rel: &Path) -> Result<OwnedFd, WorldPathError> {
        let names = names(rel)?;
        // `create` never answers None.
        self.walk(&names, rel, true)?
            .ok_or_else(|| WorldPathError::Io {
                op: "mkdir",
                path: self.world_path(rel),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
    }

    /// Opens (creating, truncating) the regular file `p.name` in `p.fd`
    /// for writing, never following a symlink there (a planted FIFO is
    /// refused instead of blocking: O_NONBLOCK).
    pub(crate) fn create_file(&self, p: &Parent) -> Result<std::fs::File, WorldPathError> {
        let fd = rustix::fs::openat2(
            &p.fd,
            &p.name,
            OFlags::WRONLY
                | OFlags::CREATE
                | OFlags::TRUNC
                | OFlags::NOFOLLOW
                | OFlags::NONBLOCK
                | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
            RESOLVE,
        )
        .map_err(|e| self.final_error(p, e, "create"))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| WorldPathError::Io {
            op: "fstat",
            path: p.path.clone(),
            source: errno_io(e),
        })?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(WorldPathError::NotAFile {
                path: p.path.clone(),
            });
        }
        Ok(std::fs::File::from(fd))
    }

    /// Removes whatever is at `p.name` in `p.fd`, never following a
    /// symlink: a file, FIFO or symlink is unlinked; a directory is emptied
    /// beneath its own fd (a symlink inside it is unlinked, not followed)
    /// and removed. Nothing there is fine.
    pub(crate) fn remove(&self, p: &Parent) -> Result<(), WorldPathError> {
        remove_at(p.fd.as_fd(), &p.name).map_err(|e| self.final_error(p, e, "remove"))
    }

    /// Maps an error of an `*at` call on the final component.
    pub(crate) fn final_error(&self, p: &Parent, e: Errno, op: &'static str) -> WorldPathError {
        if e == Errno::LOOP {
            return PathRedirected {
                path: p.path.clone(),
                component: p.path.clone(),
                reason: RedirectReason::Symlink,
            }
            .into();
        }
        WorldPathError::Io {
            op,
            path: p.path.clone(),
            source: errno_io(e),
        }
    }

    /// Writes `bytes` to `rel` (created or truncated; parents must exist).
    pub(crate) fn write(&self, rel: &Path, bytes: &[u8]) -> Result<(), WorldPathError> {
        let p = self.parent(rel, false)?;
        let mut f = self.create_file(&p)?;
        f.write_all(bytes).map_err(|e| WorldPathError::Io {
            op: "write",
            path: p.path.clone(),
            source: e,
        })
    }

    /// Reads the regular file `rel`, at most `cap` bytes (more is
    /// [`WorldPathError::TooLarge`]); a symlink anywhere is refused, and a
    /// FIFO is refused without blocking.
    pub(crate) fn read(&self, rel: &Path, cap: u64) -> Result<Vec<u8>, WorldPathError> {
        let p = self.parent(rel, false)?;
        let fd = rustix::fs::openat2(
            &p.fd,
            &p.name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
        .map_err(|e| self.final_error(&p, e, "open"))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| self.final_error(&p, e, "fstat"))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(WorldPathError::NotAFile { path: p.path });
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(cap.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| WorldPathError::Io {
                op: "read",
                path: p.path.clone(),
                source: e,
            })?;
        if bytes.len() as u64 > cap {
            return Err(WorldPathError::TooLarge { path: p.path, cap });
        }
        Ok(bytes)
    }
}

/// Removes `name` in `dir` without following it (see [`WorkDir::remove`]).
fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        // unlink(2) of a directory: EISDIR on Linux.
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e),
    }
    let fd = rustix::fs::openat2(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )?;
    let mut entries = Vec::new();
    for e in rustix::fs::Dir::read_from(&fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            entries.push(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(n).to_os_string());
        }
    }
    for n in &entries {
        remove_at(fd.as_fd(), n)?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}
