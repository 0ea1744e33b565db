//! Writes under the root: private dirs (0700) and files (0600) get their
//! modes at creation, never by chmod afterwards; files are replaced
//! atomically (temp file in the same dir → write → fsync → rename → fsync
//! dir), so a reader sees the old or the new content, never half of either.
//! Also the ownership and mode checks on the root and its parent.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Why a write or a directory check failed. Each variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The path already exists (e.g. a box with this id).
    #[error("{path}: already exists")]
    AlreadyExists {
        /// The path.
        path: PathBuf,
    },
    /// A symlink where a directory was expected.
    #[error("{path}: is a symlink (refused)")]
    Symlink {
        /// The path.
        path: PathBuf,
    },
    /// Not a directory.
    #[error("{path}: is not a directory")]
    NotDirectory {
        /// The path.
        path: PathBuf,
    },
    /// Owned by someone else.
    #[error("{path}: owned by uid {uid}, expected uid {expected}{or_root}", or_root = if *.allow_root { " or root" } else { "" })]
    ForeignOwner {
        /// The path.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Who should own it.
        expected: u32,
        /// Whether root would have been accepted too.
        allow_root: bool,
    },
    /// Group- or world-writable.
    #[error("{path}: mode {mode:o} is group- or world-writable")]
    Writable {
        /// The path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Any other I/O error.
    #[error("{path}: {op} failed")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was attempted.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(rustix::io::Errno) -> WriteError + 'a {
    move |e| WriteError::Io {
        path: path.to_path_buf(),
        op,
        source: e.into(),
    }
}

/// Creates a directory with mode 0700 from birth. Refuses an existing path.
pub fn create_private_dir(path: &Path) -> Result<(), WriteError> {
    match rustix::fs::mkdir(path, Mode::from_raw_mode(0o700)) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => Err(WriteError::AlreadyExists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_err(path, "mkdir")(e)),
    }
}

/// Atomically replaces `dir/name` with `data` (mode 0600).
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), WriteError> {
    replace(dir, name, None, data)
}

/// Like [`write_atomic`], but the old `dir/name` (if any) becomes
/// `dir/previous` first, through a hard link, so `name` never goes missing:
/// a reader sees old+older, old+old, or new+old.
pub fn write_atomic_keeping_previous(
    dir: &Path,
    name: &str,
    previous: &str,
    data: &[u8],
) -> Result<(), WriteError> {
    replace(dir, name, Some(previous), data)
}

fn replace(dir: &Path, name: &str, previous: Option<&str>, data: &[u8]) -> Result<(), WriteError> {
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let path = dir.join(name);
    let result = (|| {
        let fd = rustix::fs::open(
            &tmp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(io_err(&tmp, "create"))?;
        let mut f = File::from(fd);
        // Two writes, so a crash test can stop a writer halfway through a
        // record's bytes: here only the invisible temp file is half-written.
        let (head, tail) = data.split_at(data.len() / 2);
        for (i, part) in [head, tail].into_iter().enumerate() {
            if i == 1 {
                crate::failpoint::hit("write:mid-data");
            }
            f.write_all(part).map_err(|e| WriteError::Io {
                path: tmp.clone(),
                op: "write",
                source: e,
            })?;
        }
        f.sync_all().map_err(|e| WriteError::Io {
            path: tmp.clone(),
            op: "fsync",
            source: e,
        })?;
        drop(f);
        if let Some(previous) = previous {
            let keep = dir.join(format!(".{previous}.tmp.{}", std::process::id()));
            match rustix::fs::link(&path, &keep) {
                Ok(()) => rustix::fs::rename(&keep, dir.join(previous))
                    .map_err(io_err(&keep, "rename"))?,
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(io_err(&path, "link")(e)),
            }
        }
        crate::failpoint::hit("write:before-rename");
        rustix::fs::rename(&tmp, &path).map_err(io_err(&path, "rename"))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = rustix::fs::unlink(&tmp);
    }
    result
}

/// fsyncs a directory so a rename in it is durable.
pub fn fsync_dir(dir: &Path) -> Result<(), WriteError> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(io_err(dir, "open dir"))?;
    rustix::fs::fsync(&fd).map_err(io_err(dir, "fsync dir"))
}

/// Renames `dir/from` to `dir/to` if `from` exists. Returns whether
/// something was moved.
pub fn rename_if_exists(dir: &Path, from: &str, to: &str) -> Result<bool, WriteError> {
    match rustix::fs::rename(dir.join(from), dir.join(to)) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(io_err(&dir.join(from), "rename")(e)),
    }
}

/// Removes a file refbox owns; a missing file is fine. Symlinks are removed
/// as links (unlink never follows).
pub fn remove_file(path: &Path) -> Result<(), WriteError> {
    match rustix::fs::unlink(path) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(io_err(path, "unlink")(e)),
    }
}

/// Removes an empty directory; a missing one is fine.
pub fn remove_dir(path: &Path) -> Result<(), WriteError> {
    match rustix::fs::unlinkat(rustix::fs::CWD, path, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(io_err(path, "rmdir")(e)),
    }
}

/// Checks a directory refbox owns (the root, a box dir): not a symlink, a
/// directory, owned by `uid`, not group- or world-writable.
pub fn check_private_dir(path: &Path, uid: u32) -> Result<(), WriteError> {
    let st = rustix::fs::lstat(path).map_err(io_err(path, "lstat"))?;
    judge_private_dir(&st, path, uid)
}

/// [`check_private_dir`] of `rel` beneath the open directory `dir` (one
/// `fstatat` without following; `path` names it in errors).
pub fn check_private_dir_at(
    dir: std::os::fd::BorrowedFd<'_>,
    rel: &Path,
    path: &Path,
    uid: u32,
) -> Result<(), WriteError> {
    let st = rustix::fs::statat(dir, rel, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .map_err(io_err(path, "lstat"))?;
    judge_private_dir(&st, path, uid)
}

fn judge_private_dir(st: &rustix::fs::Stat, path: &Path, uid: u32) -> Result<(), WriteError> {
    let ft = FileType::from_raw_mode(st.st_mode);
    if ft == FileType::Symlink {
        return Err(WriteError::Symlink {
            path: path.to_path_buf(),
        });
    }
    if ft != FileType::Directory {
        return Err(WriteError::NotDirectory {
            path: path.to_path_buf(),
        });
    }
    if st.st_uid != uid {
        return Err(WriteError::ForeignOwner {
            path: path.to_path_buf(),
            uid: st.st_uid,
            expected: uid,
            allow_root: false,
        });
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(WriteError::Writable {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Checks the parent of the root: owned by `uid` or root, and not group- or
/// world-writable unless sticky (like /tmp, where others cannot rename or
/// remove our entry).
pub fn check_parent_dir(path: &Path, uid: u32) -> Result<(), WriteError> {
    let st = rustix::fs::stat(path).map_err(io_err(path, "stat"))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(WriteError::NotDirectory {
            path: path.to_path_buf(),
        });
    }
    if st.st_uid != uid && st.st_uid != 0 {
        return Err(WriteError::ForeignOwner {
            path: path.to_path_buf(),
            uid: st.st_uid,
            expected: uid,
            allow_root: true,
        });
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(WriteError::Writable {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// An exclusive `flock` on a box dir, held while an operation changes the
/// box (create, start, delete, recover marking it stopped, cleanup-logs
/// removing its log dir), so two refbox invocations cannot both decide the
/// box is stopped and each start a shim. Released on drop. Readers
/// (`state`, `list`, the first look of recover and cleanup-logs) never take
/// it.
#[derive(Debug)]
pub struct DirLock {
    _fd: std::os::fd::OwnedFd,
}

/// How long [`DirLock::acquire`] waits for another refbox to finish.
pub const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl DirLock {
    /// Locks `dir` (not following a symlink), waiting up to [`LOCK_TIMEOUT`].
    pub fn acquire(dir: &Path) -> Result<DirLock, WriteError> {
        let fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err(dir, "open dir for lock"))?;
        let deadline = std::time::Instant::now() + LOCK_TIMEOUT;
        loop {
            match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(DirLock { _fd: fd }),
                Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                    // Another refbox holds it for one operation: milliseconds.
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(e) => return Err(io_err(dir, "flock")(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn uid() -> u32 {
        rustix::process::getuid().as_raw()
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "f", b"one").unwrap();
        write_atomic(dir.path(), "f", b"two").unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
        let mode = std::fs::metadata(dir.path().join("f"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn keeping_previous_never_loses_the_current() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic_keeping_previous(dir.path(), "exit", "exit.previous", b"1").unwrap();
        assert!(!dir.path().join("exit.previous").exists());
        write_atomic_keeping_previous(dir.path(), "exit", "exit.previous", b"2").unwrap();
        assert_eq!(std::fs::read(dir.path().join("exit")).unwrap(), b"2");
        assert_eq!(
            std::fs::read(dir.path().join("exit.previous")).unwrap(),
            b"1"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temp left"
        );
    }

    #[test]
    fn private_dir_mode_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        create_private_dir(&d).unwrap();
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(matches!(
            create_private_dir(&d),
            Err(WriteError::AlreadyExists { .. })
        ));
        check_private_dir(&d, uid()).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o770)).unwrap();
        assert!(matches!(
            check_private_dir(&d, uid()),
            Err(WriteError::Writable { .. })
        ));
        assert!(matches!(
            check_private_dir(&d, uid() + 1),
            Err(WriteError::ForeignOwner { .. })
        ));
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(matches!(
            check_private_dir(&link, uid()),
            Err(WriteError::Symlink { .. })
        ));
    }

    #[test]
    fn dir_lock_is_exclusive_across_open_files() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let fd = rustix::fs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        assert_eq!(
            rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive),
            Err(rustix::io::Errno::WOULDBLOCK)
        );
        drop(held);
        rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    }

    #[test]
    fn parent_checks() {
        let dir = tempfile::tempdir().unwrap();
        check_parent_dir(dir.path(), uid()).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            check_parent_dir(dir.path(), uid()),
            Err(WriteError::Writable { .. })
        ));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_parent_dir(dir.path(), uid()).unwrap();
    }
}
