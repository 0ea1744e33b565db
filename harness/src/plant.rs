//! Owns plants: hostile files put where a runtime keeps its state (oversized
//! sparse files, FIFOs without writers, symlinks leading out, wrong owners,
//! writable parents, ...). Planted by the harness through the world's host
//! path; paths are relative to [`World::root`] and may not escape it.
//!
//! Depends on: `world` (paths).

use crate::world::{PathOutsideWorld, World, check_relative};
use std::os::unix::fs::PermissionsExt;
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
    /// The path would leave the world.
    #[error(transparent)]
    PathOutsideWorld(#[from] PathOutsideWorld),
    /// A file operation failed.
    #[error("planting at {path:?}")]
    Io {
        /// Host path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The plant is impossible here (e.g. a second uid in a one-uid user namespace).
    #[error("not staged: {reason}")]
    NotStaged {
        /// Why.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PlantError + '_ {
    move |source| PlantError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl World {
    /// Plants `plant` at `rel` (relative to [`World::root`]); parent
    /// directories are created. Refuses absolute and `..` paths.
    pub fn plant(&self, rel: impl AsRef<Path>, plant: &Plant) -> Result<Planted, PlantError> {
        let rel = rel.as_ref();
        check_relative(rel)?;
        let host = self.host_path(rel)?;
        let world_path = self.world_path(rel)?;
        if let Some(parent) = host.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut outside = None;
        match plant {
            Plant::Oversized { size } => {
                let f = std::fs::File::create(&host).map_err(io(&host))?;
                f.set_len(*size).map_err(io(&host))?;
            }
            Plant::Fifo => {
                nix::unistd::mkfifo(&host, nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .map_err(|e| io(&host)(std::io::Error::from(e)))?;
            }
            Plant::SymlinkOutside => {
                let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let target_rel = PathBuf::from(OUTSIDE_DIR).join(format!("target-{n}"));
                let target_host = self.host_path(&target_rel)?;
                let target_world = self.world_path(&target_rel)?;
                let dir = self.host_path(OUTSIDE_DIR)?;
                std::fs::create_dir_all(&dir).map_err(io(&dir))?;
                let contents =
                    format!("doppel outside file {n}: must stay unchanged\n").into_bytes();
                std::fs::write(&target_host, &contents).map_err(io(&target_host))?;
                std::os::unix::fs::symlink(&target_world, &host).map_err(io(&host))?;
                outside = Some(OutsideFile {
                    world_path: target_world,
                    host_path: target_host,
                    contents,
                });
            }
            Plant::DanglingSymlink => {
                let target = self.world_path("does-not-exist/doppel-dangling")?;
                std::os::unix::fs::symlink(&target, &host).map_err(io(&host))?;
            }
            Plant::DirectoryInsteadOfFile => {
                std::fs::create_dir(&host).map_err(io(&host))?;
            }
            Plant::RandomBytes { len } => {
                let bytes: Vec<u8> = (0..*len).map(|_| rand::random::<u8>()).collect();
                std::fs::write(&host, bytes).map_err(io(&host))?;
            }
            Plant::Empty => {
                std::fs::write(&host, b"").map_err(io(&host))?;
            }
            Plant::Truncated { of, keep } => {
                std::fs::write(&host, &of[..(*keep).min(of.len())]).map_err(io(&host))?;
            }
            Plant::WrongOwner { uid, contents } => {
                if self.in_user_namespace() && *uid != 0 {
                    return Err(PlantError::NotStaged {
                        reason: format!(
                            "the world's user namespace maps only uid 0; uid {uid} cannot own a file"
                        ),
                    });
                }
                std::fs::write(&host, contents).map_err(io(&host))?;
                std::os::unix::fs::chown(&host, Some(*uid), None).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::PermissionDenied {
                        PlantError::NotStaged {
                            reason: format!("chown to uid {uid} not permitted: {e}"),
                        }
                    } else {
                        io(&host)(e)
                    }
                })?;
            }
            Plant::GroupWritableParent { contents } | Plant::WorldWritableParent { contents } => {
                let mode = if matches!(plant, Plant::GroupWritableParent { .. }) {
                    0o775
                } else {
                    0o777
                };
                let parent = host.parent().unwrap_or(&host).to_path_buf();
                if parent == self.host_root_dir() {
                    return Err(PlantError::NotStaged {
                        reason: "the parent would be the world root; plant one level deeper".into(),
                    });
                }
                std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(mode))
                    .map_err(io(&parent))?;
                std::fs::write(&host, contents).map_err(io(&host))?;
            }
        }
        Ok(Planted {
            world_path,
            host_path: host,
            outside,
        })
    }
}
