//! Capped, safe reads of the files refbox keeps under its root (and of user
//! input files). Open with `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`, so a symlink
//! is refused and a FIFO never blocks; `fstat` the open fd: it must be a
//! regular file, owned by the expected uid, no larger than the cap; then read
//! through `take(cap + 1)` so a file growing after the fstat still cannot make
//! us read more than the cap. A 4 GiB sparse file costs one open and one fstat.
//!
//! Files under the state root are opened relative to an fd of the root
//! ([`FileRef`], `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`): no
//! component may be a symlink or lead outside, and the kernel walks two
//! components (`<id>/<file>`) instead of the whole path — in `list` of many
//! boxes, path lookup was the largest single cost.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FileType, Mode, OFlags};

/// Cap for identity records, sentinels and exit files.
pub const RECORD_CAP: u64 = 4096;
/// Cap for `state.json`.
pub const STATE_CAP: u64 = 64 * 1024;

static BYTES_READ: AtomicU64 = AtomicU64::new(0);

/// Total bytes this process has read through this module: lets tests and
/// benches prove that a planted multi-GiB file was not read.
pub fn bytes_read() -> u64 {
    BYTES_READ.load(Ordering::Relaxed)
}

/// Why a file could not be read. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file does not exist.
    #[error("{path}: not found")]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// A symlink where a file was expected: not followed.
    #[error("{path}: is a symlink (not followed)")]
    Symlink {
        /// The file.
        path: PathBuf,
    },
    /// Not a regular file (FIFO, directory, socket, device).
    #[error("{path}: is a {kind}, not a regular file")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Owned by another user.
    #[error("{path}: owned by uid {uid}, expected uid {expected}")]
    WrongOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// Who should own it.
        expected: u32,
    },
    /// Larger than the cap (left in place, not read).
    #[error("{path}: {size} bytes, more than the {cap}-byte cap (left in place, not read)")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size per fstat.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// Grew past the cap between fstat and read.
    #[error("{path}: grew past the {cap}-byte cap while being read")]
    GrewPastCap {
        /// The file.
        path: PathBuf,
        /// The cap.
        cap: u64,
    },
    /// Any other I/O error.
    #[error("{path}: cannot read")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl ReadError {
    /// True when the file simply does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::NotFound { .. })
    }

    /// The file this error is about.
    pub fn path(&self) -> &Path {
        match self {
            ReadError::NotFound { path }
            | ReadError::Symlink { path }
            | ReadError::NotRegular { path, .. }
            | ReadError::WrongOwner { path, .. }
            | ReadError::TooLarge { path, .. }
            | ReadError::GrewPastCap { path, .. }
            | ReadError::Io { path, .. } => path,
        }
    }
}

fn kind_name(ft: FileType) -> &'static str {
    match ft {
        FileType::Fifo => "FIFO",
        FileType::Directory => "directory",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Symlink => "symlink",
        _ => "special file",
    }
}

/// A file under a directory held open: `rel` is resolved beneath `dir`;
/// `path` is the same file's full path, for errors (and for strategies that
/// open by path).
#[derive(Debug, Clone, Copy)]
pub struct FileRef<'a> {
    /// The directory (the state root).
    pub dir: BorrowedFd<'a>,
    /// The file, relative to `dir` (e.g. `box-1/state.json`).
    pub rel: &'a Path,
    /// The file's full path.
    pub path: &'a Path,
}

const READ_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

fn open_error(path: &Path, e: rustix::io::Errno) -> ReadError {
    match e {
        rustix::io::Errno::NOENT => ReadError::NotFound {
            path: path.to_path_buf(),
        },
        // ELOOP: a symlink (final component, or any with RESOLVE_NO_SYMLINKS);
        // EXDEV: RESOLVE_BENEATH refused a way out.
        rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => ReadError::Symlink {
            path: path.to_path_buf(),
        },
        e => ReadError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        },
    }
}

/// Opens without following symlinks and without blocking on FIFOs.
fn open_nofollow(path: &Path) -> Result<File, ReadError> {
    rustix::fs::open(path, READ_FLAGS, Mode::empty())
        .map(File::from)
        .map_err(|e| open_error(path, e))
}

/// Opens `f.rel` beneath `f.dir`, no symlink on the way. Kernels without
/// `openat2` (before 5.6) get `openat` with `O_NOFOLLOW`, which refuses a
/// symlink as the last component only (callers check box dirs with lstat).
fn open_beneath(f: &FileRef<'_>) -> Result<File, ReadError> {
    use rustix::fs::ResolveFlags;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let fd: Result<OwnedFd, _> =
        match rustix::fs::openat2(f.dir, f.rel, READ_FLAGS, Mode::empty(), resolve) {
            Err(rustix::io::Errno::NOSYS) => {
                rustix::fs::openat(f.dir, f.rel, READ_FLAGS, Mode::empty())
            }
            r => r,
        };
    fd.map(File::from).map_err(|e| open_error(f.path, e))
}

/// Reads a state file: regular, owned by `owner_uid`, at most `cap` bytes.
pub fn read_capped(path: &Path, cap: u64, owner_uid: u32) -> Result<Vec<u8>, ReadError> {
    read_checked(open_nofollow(path)?, path, cap, Some(owner_uid))
}

/// [`read_capped`] of a file beneath a directory fd (see [`FileRef`]):
/// refbox's reader of everything under its root.
pub fn read_capped_in(f: &FileRef<'_>, cap: u64, owner_uid: u32) -> Result<Vec<u8>, ReadError> {
    read_checked(open_beneath(f)?, f.path, cap, Some(owner_uid))
}

/// Reads a user-given input file (`--env-file`, `--secret-file`): symlinks
/// are refused too, any owner is accepted.
pub fn read_user_input(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    read_checked(open_nofollow(path)?, path, cap, None)
}

fn read_checked(
    file: File,
    path: &Path,
    cap: u64,
    owner_uid: Option<u32>,
) -> Result<Vec<u8>, ReadError> {
    let st = rustix::fs::fstat(&file).map_err(|e| ReadError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let ft = FileType::from_raw_mode(st.st_mode);
    if ft != FileType::RegularFile {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_name(ft),
        });
    }
    if let Some(expected) = owner_uid {
        if st.st_uid != expected {
            return Err(ReadError::WrongOwner {
                path: path.to_path_buf(),
                uid: st.st_uid,
                expected,
            });
        }
    }
    let size = st.st_size as u64;
    if size > cap {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size,
            cap,
        });
    }
    read_limited(file, path, cap, size)
}

/// Reads at most `cap` bytes, usually in one `read`: fstat said `size`
/// (≤ cap), and asking for one byte more shows whether the file grew since;
/// only then is it read on, through `take(cap + 1)`.
fn read_limited(mut file: File, path: &Path, cap: u64, size: u64) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let want = size.min(cap) as usize + 1;
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got as u64 == size {
                    break; // all fstat announced: a regular file is at EOF
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    buf.truncate(got);
    if got == want {
        // Grew after the fstat (or a size-0 special file): read on, capped.
        (&mut file)
            .take(cap + 1 - got as u64)
            .read_to_end(&mut buf)
            .map_err(io)?;
    }
    let n = buf.len();
    BYTES_READ.fetch_add(n as u64, Ordering::Relaxed);
    if n as u64 > cap {
        return Err(ReadError::GrewPastCap {
            path: path.to_path_buf(),
            cap,
        });
    }
    Ok(buf)
}

/// Reads a procfs file (whose fstat size is 0) up to `cap` bytes.
pub fn read_proc(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    let file = open_nofollow(path)?;
    // Room for the whole cap up front: procfs files report size 0, and a
    // growing buffer would cost a read per doubling.
    let mut buf = Vec::with_capacity(cap.min(64 * 1024) as usize);
    let n = file
        .take(cap)
        .read_to_end(&mut buf)
        .map_err(|e| ReadError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
    BYTES_READ.fetch_add(n as u64, Ordering::Relaxed);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid() -> u32 {
        rustix::process::getuid().as_raw()
    }

    #[test]
    fn a_file_larger_than_its_fstat_size_is_read_on_to_the_cap() {
        // procfs files say size 0 and have content: the one-read fast path
        // must notice and read on, still capped.
        let whole = read_user_input(Path::new("/proc/self/stat"), 4096).unwrap();
        assert!(whole.len() > 20 && whole.ends_with(b"\n"), "{whole:?}");
        assert!(matches!(
            read_user_input(Path::new("/proc/self/stat"), 10),
            Err(ReadError::GrewPastCap { cap: 10, .. })
        ));
    }

    #[test]
    fn exact_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"").unwrap();
        assert_eq!(read_capped(&p, 16, uid()).unwrap(), b"");
        std::fs::write(&p, b"0123456789abcdef").unwrap();
        assert_eq!(read_capped(&p, 16, uid()).unwrap(), b"0123456789abcdef");
    }

    #[test]
    fn reads_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_capped(&p, 16, uid()).unwrap(), b"hello");
    }

    #[test]
    fn sparse_file_is_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::File::create(&p).unwrap().set_len(4 << 30).unwrap();
        let before = bytes_read();
        let err = read_capped(&p, RECORD_CAP, uid()).unwrap_err();
        assert!(
            matches!(err, ReadError::TooLarge { size, .. } if size == 4 << 30),
            "{err}"
        );
        // Other tests may read concurrently, but never gigabytes.
        assert!(bytes_read() - before < 1 << 20);
        assert!(p.exists(), "left in place");
    }

    #[test]
    fn fifo_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = read_capped(&p, RECORD_CAP, uid()).unwrap_err();
        assert!(
            matches!(err, ReadError::NotRegular { kind: "FIFO", .. }),
            "{err}"
        );
    }

    #[test]
    fn symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"outside").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            read_capped(&link, 16, uid()),
            Err(ReadError::Symlink { .. })
        ));
    }

    #[test]
    fn directory_and_missing_and_wrong_owner() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_capped(dir.path(), 16, uid()),
            Err(ReadError::NotRegular {
                kind: "directory",
                ..
            })
        ));
        assert!(
            read_capped(&dir.path().join("nope"), 16, uid())
                .unwrap_err()
                .is_not_found()
        );
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        assert!(matches!(
            read_capped(&p, 16, uid() + 1),
            Err(ReadError::WrongOwner { .. })
        ));
    }
}
