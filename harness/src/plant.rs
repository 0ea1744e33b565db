//! Owns plants: hostile files put where a runtime keeps its state (oversized
//! sparse files, FIFOs without writers, symlinks leading out, wrong owners,
//! writable parents, ...). Planted by the harness from the host, through
//! the work dir's fd ([`crate::worldfs`]): paths are relative to
//! [`World::root`], and neither `..` nor a symlinked component (which a
//! runtime under test may have put there) can take a plant out of the world.
//!
//! Depends on: `world` (paths), `worldfs` (resolution without symlinks).

use crate::world::{PathOutsideWorld, World, check_relative};
use crate::worldfs::{PathRedirected, WorldPathError};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Default apparent size of [`Plant::Oversized`]: just over 1 GiB.
pub const DEFAULT_OVERSIZED: u64 = (1 << 30) + 1;
/// Work-dir subdirectory holding the targets of [`Plant::SymlinkOutside`].
pub const OUTSIDE_DIR: &str = ".doppel-outside";

/// What to plant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plant {
    /// A sparse file of `size` bytes apparent size (no disk cost).
    Oversized {
        /// Apparent size.
        size: u64,
    },
    /// A FIFO nobody writes to (a blocking open or read hangs).
    Fifo,
    /// A symlink to a file outside the state dir (created by the harness
    /// under `.doppel-outside/`); check it is unchanged afterwards.
    SymlinkOutside,
    /// A symlink to `target` (a world path, or any path: it is only the
    /// link's text), e.g. a copy of a live box's record outside its dir.
    Symlink {
        /// What the link says.
        target: PathBuf,
    },
    /// A symlink to a path that does not exist.
    DanglingSymlink,
    /// A directory where a file is expected.
    DirectoryInsteadOfFile,
    /// `len` random bytes.
    RandomBytes {
        /// Length.
        len: usize,
    },
    /// An empty file.
    Empty,
    /// The first half of the regular file that is there (a record cut
    /// short as a crash mid-write leaves it), with [`World::plant_replacing`].
    HalfOfExisting,
    /// The first `keep` bytes of `of` (a record cut short).
    Truncated {
        /// The full record.
        of: Vec<u8>,
        /// Bytes kept.
        keep: usize,
    },
    /// A file with `contents` owned by `uid`.
    WrongOwner {
        /// The owner (a world uid).
        uid: u32,
        /// Contents.
        contents: Vec<u8>,
    },
    /// A file with `contents` whose parent directory is group-writable.
    GroupWritableParent {
        /// Contents.
        contents: Vec<u8>,
    },
    /// A file with `contents` whose parent directory is world-writable.
    WorldWritableParent {
        /// Contents.
        contents: Vec<u8>,
    },
}

impl std::fmt::Display for Plant {
    /// What a report calls the plant.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Plant::Oversized { size } => write!(f, "sparse {} MiB", size >> 20),
            Plant::Fifo => f.write_str("FIFO"),
            Plant::SymlinkOutside | Plant::Symlink { .. } => f.write_str("symlink"),
            Plant::DanglingSymlink => f.write_str("dangling symlink"),
            Plant::DirectoryInsteadOfFile => f.write_str("directory"),
            Plant::RandomBytes { .. } => f.write_str("random-bytes"),
            Plant::Empty => f.write_str("empty"),
            Plant::HalfOfExisting | Plant::Truncated { .. } => f.write_str("truncated"),
            Plant::WrongOwner { uid, .. } => write!(f, "owned by uid {uid}"),
            Plant::GroupWritableParent { .. } => f.write_str("group-writable parent"),
            Plant::WorldWritableParent { .. } => f.write_str("world-writable parent"),
        }
    }
}

/// The outside file a [`Plant::SymlinkOutside`] points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsideFile {
    /// World path of the target (what the symlink says).
    pub world_path: PathBuf,
    /// Host path of the target.
    pub host_path: PathBuf,
    /// Its contents when planted.
    pub contents: Vec<u8>,
}

impl OutsideFile {
    /// True when the target still exists, is a regular file and holds the
    /// planted contents.
    pub fn unchanged(&self) -> bool {
        std::fs::symlink_metadata(&self.host_path).is_ok_and(|m| m.is_file())
            && std::fs::read(&self.host_path).is_ok_and(|b| b == self.contents)
    }
}

/// What was planted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planted {
    /// World path.
    pub world_path: PathBuf,
    /// Host path.
    pub host_path: PathBuf,
    /// For `SymlinkOutside`: the target.
    pub outside: Option<OutsideFile>,
}

/// Errors of planting.
#[derive(Debug, thiserror::Error)]
pub enum PlantError {
    /// The path would leave the world (absolute, or with `..`).
    #[error(transparent)]
    PathOutsideWorld(#[from] PathOutsideWorld),
    /// A component of the path is a symlink (a runtime may have swapped a
    /// state dir for one leading to `/etc`), not a directory, or escapes
    /// the work dir; nothing was planted, and nothing outside was touched.
    #[error("not planted: {0}")]
    Redirected(#[from] PathRedirected),
    /// A file operation failed.
    #[error("planting at {path:?}")]
    Io {
        /// World path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Something other than a regular file (a FIFO, a directory) is where a
    /// file plant goes; it is left as it is.
    #[error("not planted: {path:?} exists and is not a regular file")]
    NotAFile {
        /// World path.
        path: PathBuf,
    },
    /// The plant is impossible here (e.g. a second uid in a one-uid user namespace).
    #[error("not staged: {reason}")]
    NotStaged {
        /// Why.
        reason: String,
    },
}

impl From<WorldPathError> for PlantError {
    fn from(e: WorldPathError) -> PlantError {
        match e {
            WorldPathError::Outside(o) => PlantError::PathOutsideWorld(o),
            WorldPathError::Redirected(r) => PlantError::Redirected(r),
            WorldPathError::Io { path, source, .. } => PlantError::Io { path, source },
            WorldPathError::NotAFile { path } => PlantError::NotAFile { path },
            // Plants never read; kept total for the compiler.
            WorldPathError::TooLarge { path, .. } => PlantError::Io {
                path,
                source: std::io::Error::from(std::io::ErrorKind::FileTooLarge),
            },
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PlantError + '_ {
    move |source| PlantError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl World {
    /// Plants `plant` at `rel` in place of whatever is there (a file, a
    /// FIFO, a symlink, a whole directory), removed beneath the parent's fd
    /// without following anything; [`Plant::HalfOfExisting`] reads the
    /// regular file there first (16 MiB at most). Otherwise as
    /// [`World::plant`].
    pub fn plant_replacing(
        &self,
        rel: impl AsRef<Path>,
        plant: &Plant,
    ) -> Result<Planted, PlantError> {
        let rel = rel.as_ref();
        check_relative(rel)?;
        let half;
        let plant = match plant {
            Plant::HalfOfExisting => {
                let of = self.files().read(rel, 16 << 20)?;
                let keep = of.len() / 2;
                half = Plant::Truncated { of, keep };
                &half
            }
            p => p,
        };
        let parent = self.files().parent(rel, true)?;
        self.files().remove(&parent)?;
        self.plant(rel, plant)
    }

    /// Plants `plant` at `rel` (relative to [`World::root`]); parent
    /// directories are created. Refuses absolute and `..` paths, and never
    /// follows a symlink: parents are resolved beneath the work dir's fd
    /// one component at a time, and the final component is created
    /// relative to its parent's fd without following it (a symlinked
    /// component is [`PlantError::Redirected`]).
    pub fn plant(&self, rel: impl AsRef<Path>, plant: &Plant) -> Result<Planted, PlantError> {
        let rel = rel.as_ref();
        check_relative(rel)?;
        let host = self.host_root_dir().join(rel);
        let world_path = self.world_path(rel)?;
        let files = self.files();
        let parent = files.parent(rel, true)?;
        let mut outside = None;
        let write = |bytes: &[u8]| -> Result<std::fs::File, PlantError> {
            let mut f = files.create_file(&parent)?;
            f.write_all(bytes).map_err(io(&world_path))?;
            Ok(f)
        };
        let symlink = |target: &Path| -> Result<(), PlantError> {
            rustix::fs::symlinkat(target, &parent.fd, &parent.name)
                .map_err(|e| files.final_error(&parent, e, "symlink").into())
        };
        match plant {
            Plant::Oversized { size } => {
                let f = write(b"")?;
                f.set_len(*size).map_err(io(&world_path))?;
            }
            Plant::Fifo => {
                rustix::fs::mknodat(
                    &parent.fd,
                    &parent.name,
                    FileType::Fifo,
                    Mode::from_raw_mode(0o644),
                    0,
                )
                .map_err(|e| PlantError::from(files.final_error(&parent, e, "mkfifo")))?;
            }
            Plant::SymlinkOutside => {
                let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let target_rel = PathBuf::from(OUTSIDE_DIR).join(format!("target-{n}"));
                let target_world = self.world_path(&target_rel)?;
                let contents =
                    format!("doppel outside file {n}: must stay unchanged\n").into_bytes();
                self.create_dir_all(OUTSIDE_DIR)?;
                self.write_file(&target_rel, &contents)?;
                symlink(&target_world)?;
                outside = Some(OutsideFile {
                    world_path: target_world,
                    host_path: self.host_root_dir().join(&target_rel),
                    contents,
                });
            }
            Plant::Symlink { target } => symlink(target)?,
            Plant::DanglingSymlink => {
                symlink(&self.world_path("does-not-exist/doppel-dangling")?)?;
            }
            Plant::HalfOfExisting => {
                return Err(PlantError::NotStaged {
                    reason: "a half of the existing file is planted with plant_replacing".into(),
                });
            }
            Plant::DirectoryInsteadOfFile => {
                rustix::fs::mkdirat(&parent.fd, &parent.name, Mode::from_raw_mode(0o777))
                    .map_err(|e| PlantError::from(files.final_error(&parent, e, "mkdir")))?;
            }
            Plant::RandomBytes { len } => {
                let bytes: Vec<u8> = (0..*len).map(|_| rand::random::<u8>()).collect();
                write(&bytes)?;
            }
            Plant::Empty => {
                write(b"")?;
            }
            Plant::Truncated { of, keep } => {
                write(&of[..(*keep).min(of.len())])?;
            }
            Plant::WrongOwner { uid, contents } => {
                if self.in_user_namespace() && *uid != 0 {
                    return Err(PlantError::NotStaged {
                        reason: format!(
                            "the world's user namespace maps only uid 0; uid {uid} cannot own a file"
                        ),
                    });
                }
                let f = write(contents)?;
                rustix::fs::fchown(&f, Some(rustix::fs::Uid::from_raw(*uid)), None).map_err(
                    |e| {
                        if e == rustix::io::Errno::PERM {
                            PlantError::NotStaged {
                                reason: format!(
                                    "chown to uid {uid} not permitted: {}",
                                    std::io::Error::from(e)
                                ),
                            }
                        } else {
                            io(&world_path)(e.into())
                        }
                    },
                )?;
            }
            Plant::GroupWritableParent { contents } | Plant::WorldWritableParent { contents } => {
                let mode = if matches!(plant, Plant::GroupWritableParent { .. }) {
                    0o775
                } else {
                    0o777
                };
                if parent.parent_is_root {
                    return Err(PlantError::NotStaged {
                        reason: "the parent would be the world root; plant one level deeper".into(),
                    });
                }
                // The parent's fd is O_PATH, which fchmod refuses: reopen it
                // (".", so still no symlink followed) to change its mode.
                let parent_world = world_path.parent().unwrap_or(&world_path);
                let dir = rustix::fs::openat2(
                    &parent.fd,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
                )
                .map_err(|e| io(parent_world)(e.into()))?;
                rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))
                    .map_err(|e| io(parent_world)(e.into()))?;
                write(contents)?;
            }
        }
        Ok(Planted {
            world_path,
            host_path: host,
            outside,
        })
    }
}
