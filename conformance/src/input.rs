//! Reading the files a user hands `doppel` (an adapter, reports to
//! compare): capped, non-blocking, regular files only, so a FIFO answers at
//! once and `/dev/zero` is refused instead of read until memory runs out.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why an input file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// It could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not a regular file (a FIFO, a device, a directory...).
    #[error("{path} is a {kind}, not a regular file")]
    NotAFile {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// It is larger than the cap.
    #[error("{path} is {size} bytes, more than the {cap} this input may be")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (at least this many bytes).
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// Reading it failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not UTF-8 text.
    #[error("{path} is not UTF-8 text")]
    NotText {
        /// The file.
        path: PathBuf,
    },
}

/// The cap for an adapter file.
pub const ADAPTER_CAP: u64 = 1 << 20;
/// The cap for a JSON report.
pub const REPORT_CAP: u64 = 256 << 20;

/// Reads the text file at `path`: opened non-blocking (a FIFO with no
/// writer answers at once), a regular file (fstat), at most `cap` bytes
/// (checked by size, and by reading at most `cap + 1`).
pub fn read_text(path: &Path, cap: u64) -> Result<String, InputError> {
    use std::os::unix::fs::FileTypeExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|source| InputError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let meta = f.metadata().map_err(|source| InputError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let t = meta.file_type();
    if !t.is_file() {
        let kind = if t.is_fifo() {
            "FIFO"
        } else if t.is_dir() {
            "directory"
        } else if t.is_char_device() {
            "character device"
        } else if t.is_block_device() {
            "block device"
        } else if t.is_socket() {
            "socket"
        } else {
            "special file"
        };
        return Err(InputError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    if meta.len() > cap {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            cap,
        });
    }
    let mut bytes = Vec::new();
    f.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| InputError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > cap {
        return Err(InputError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            cap,
        });
    }
    String::from_utf8(bytes).map_err(|_| InputError::NotText {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_text(&p, ADAPTER_CAP).unwrap_err();
        assert!(
            matches!(e, InputError::NotAFile { kind: "FIFO", .. }),
            "{e}"
        );
    }

    #[test]
    fn devices_and_dirs_are_refused() {
        let e = read_text(Path::new("/dev/zero"), ADAPTER_CAP).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero is a character device, not a regular file"
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_text(dir.path(), ADAPTER_CAP),
            Err(InputError::NotAFile {
                kind: "directory",
                ..
            })
        ));
    }

    #[test]
    fn the_cap_holds() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'a'; 11]).unwrap();
        assert_eq!(read_text(&p, 11).unwrap().len(), 11);
        assert!(matches!(
            read_text(&p, 10),
            Err(InputError::TooLarge {
                size: 11,
                cap: 10,
                ..
            })
        ));
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_text(&p, 10), Err(InputError::NotText { .. })));
    }
}
