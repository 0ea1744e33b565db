//! `refbox-helper`: the privileged half of refbox. It owns the box cgroups
//! and sends signals on a caller's behalf, over a unix socket; the CLI
//! (`refbox --helper SOCKET ...`) asks it instead of acting itself.
//!
//! - **Socket**: created 0600 from birth (umask 0177 around `bind`, never a
//!   chmod afterwards) under a temporary name in a 0700 dir, then renamed
//!   into place once it listens: the socket path existing means "ready". A
//!   stale socket (nobody listening) is replaced; a live one is refused.
//! - **Peers**: `SO_PEERCRED` on every connection; only the helper's own
//!   uid and `--allow-uid` uids are served.
//! - **Signals**: by name only, from the allowlist TERM KILL INT HUP QUIT
//!   USR1 USR2 ABRT (with or without `SIG`); STOP, CONT, realtime signals,
//!   numbers and 0 are refused ([`HelperError::SignalRefused`]).
//! - **Authorization** ([`authorize_by_membership`]): the target pid, pinned
//!   by a pidfd, must be listed in the box's `cgroup.procs`, and still alive
//!   after that read; the signal then goes through the pidfd. A process
//!   with the same cmdline outside the box's cgroup is refused.
//!   *Fallback* without cgroup2 (`serve` without `--cgroup-root`): the pid
//!   must be the box's shim according to its identity record (owned by the
//!   caller's uid, verified through a pidfd: boot id, pidfs inode or start
//!   time), with exact argv `refbox-shim <id>`, owned by the caller's uid.
//!   This is **weaker**: it trusts a record the caller can write, so it
//!   only protects other users' processes and recycled pids, not the
//!   caller from itself, and only the shim (not its payload) can be named.
//! - **Helper death**: the helper keeps nothing in memory. Box cgroups live
//!   in the cgroup tree under `--cgroup-root/<id>`; a restarted helper
//!   re-adopts every populated one (and removes empty leftovers), so a
//!   helper SIGKILLed with boxes running orphans none of them: the boxes run
//!   on, supervised by their shims, and the next helper can still signal,
//!   kill (`cgroup.kill`) and remove them.
//!
//! Protocol: one JSON [`Request`] line per connection, one JSON
//! [`Response`] line back.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fswrite;
use crate::identity::{self, HostFacts, ProcessIdentity, VerifyRequest};
use crate::ids::BoxId;
use crate::pid::Pid;
use crate::runtime::chain;

/// How long a connection may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `remove` waits for a killed cgroup to empty.
pub const CGROUP_EMPTY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request accepted.
pub const REQUEST_CAP: u64 = 64 << 10;

/// The signals the helper sends, by name.
pub const ALLOWED: [&str; 8] = ["TERM", "KILL", "INT", "HUP", "QUIT", "USR1", "USR2", "ABRT"];

/// A request to the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Create box `id`'s cgroup (if the helper has cgroups) and delegate it
    /// to the caller; answers its path.
    Prepare {
        /// Box id.
        id: String,
    },
    /// Send `signal` (a name) to `pid`, which must belong to box `id`.
    Signal {
        /// Box id.
        id: String,
        /// Target.
        pid: i64,
        /// Signal name.
        signal: String,
    },
    /// Kill every process of box `id` (`cgroup.kill`); `pid` (the shim the
    /// caller verified) must belong to the box. Without cgroups: SIGKILL `pid`.
    KillBox {
        /// Box id.
        id: String,
        /// The box's shim.
        pid: i64,
    },
    /// Kill what is left in box `id`'s cgroup and remove it.
    Remove {
        /// Box id.
        id: String,
    },
}

/// The helper's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Response {
    /// Done.
    pub ok: bool,
    /// `prepare`: the box's cgroup dir, when the helper has cgroups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
    /// The error's kind ([`HelperError::kind`]), when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The error, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why the helper refused or failed a request. Each variant names what it
/// is about.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The signal is not on the allowlist (or not given by name).
    #[error("signal {given:?} refused: only TERM, KILL, INT, HUP, QUIT, USR1, USR2, ABRT, by name")]
    SignalRefused {
        /// What was asked.
        given: String,
    },
    /// The target is not in the box's cgroup.
    #[error("pid {pid} is not in box {id}'s cgroup {cgroup}: refused")]
    NotInBox {
        /// Box id.
        id: String,
        /// Target.
        pid: i64,
        /// The box's cgroup.
        cgroup: PathBuf,
    },
    /// Fallback: the target is not the box's verified shim.
    #[error("pid {pid} is not box {id}'s verified shim ({reason}): refused")]
    NotVerified {
        /// Box id.
        id: String,
        /// Target.
        pid: i64,
        /// Why.
        reason: String,
    },
    /// The box has no cgroup under this helper.
    #[error("box {id} has no cgroup {cgroup}")]
    NoCgroup {
        /// Box id.
        id: String,
        /// Where it would be.
        cgroup: PathBuf,
    },
    /// The peer's uid is not served.
    #[error("peer uid {uid} (pid {pid}) is not allowed")]
    PeerRefused {
        /// Peer uid.
        uid: u32,
        /// Peer pid.
        pid: i32,
    },
    /// A non-root peer asked about a box (or box cgroup) it does not own.
    #[error("box {id}: {path} belongs to uid {owner}, not to the caller (uid {uid}): refused")]
    NotYourBox {
        /// Box id.
        id: String,
        /// The dir whose owner decided.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The peer's uid.
        uid: u32,
    },
    /// The request is malformed.
    #[error("bad request: {detail}")]
    BadRequest {
        /// What is wrong.
        detail: String,
    },
    /// The socket path has a live helper, or is not a socket.
    #[error("{path}: {why}")]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
        /// Why it cannot be used.
        why: &'static str,
    },
    /// An OS call failed.
    #[error("{path}: {op} failed")]
    Io {
        /// The path (or pid) it was about.
        path: PathBuf,
        /// What was attempted.
        op: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The socket dir is unusable.
    #[error(transparent)]
    Dir(#[from] fswrite::WriteError),
}

impl HelperError {
    /// A stable word for the response's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            HelperError::SignalRefused { .. } => "signal-refused",
            HelperError::NotInBox { .. } => "not-in-box",
            HelperError::NotVerified { .. } => "not-verified",
            HelperError::NoCgroup { .. } => "no-cgroup",
            HelperError::PeerRefused { .. } => "peer-refused",
            HelperError::NotYourBox { .. } => "not-your-box",
            HelperError::BadRequest { .. } => "bad-request",
            HelperError::SocketInUse { .. } => "socket-in-use",
            HelperError::Io { .. } | HelperError::Dir(_) => "io",
        }
    }
}

fn io_err(
    path: impl Into<PathBuf>,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> HelperError {
    let path = path.into();
    move |source| HelperError::Io { path, op, source }
}

/// What [`HelperStrategies::authorize`] decides on.
#[derive(Debug)]
pub struct Authorize<'a> {
    /// The box.
    pub id: &'a BoxId,
    /// The target.
    pub pid: Pid,
    /// The box's cgroup dir, when the helper has cgroups.
    pub cgroup: Option<&'a Path>,
    /// The state root (fallback: where identity records are).
    pub state_root: &'a Path,
    /// The caller's uid.
    pub peer_uid: u32,
}

/// The helper's decisions, swappable so fixtures can show the suite
/// catches wrong ones (like [`crate::Strategies`] for the CLI).
#[derive(Debug, Clone, Copy)]
pub struct HelperStrategies {
    /// Parses a signal request. Default [`allowlisted_name`].
    pub parse_signal: fn(&str) -> Result<i32, HelperError>,
    /// Decides whether `pid` belongs to the box; returns a pidfd pinning it.
    /// Default [`authorize_by_membership`].
    pub authorize: fn(&Authorize<'_>) -> Result<OwnedFd, HelperError>,
    /// Where box `id`'s cgroup lives under the cgroup root. Default
    /// [`box_cgroup_in_tree`] (`<root>/<id>`, found again by the next helper).
    pub box_cgroup: fn(&Path, &BoxId) -> PathBuf,
}

impl Default for HelperStrategies {
    fn default() -> Self {
        HelperStrategies {
            parse_signal: allowlisted_name,
            authorize: authorize_by_membership,
            box_cgroup: box_cgroup_in_tree,
        }
    }
}

/// Names only, from [`ALLOWED`], with or without `SIG`, any case.
pub fn allowlisted_name(s: &str) -> Result<i32, HelperError> {
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if ALLOWED.contains(&name) {
        if let Ok(sig) = crate::signal::parse_signal(name) {
            return Ok(sig.number());
        }
    }
    Err(HelperError::SignalRefused {
        given: s.to_string(),
    })
}

/// `<root>/<id>`.
pub fn box_cgroup_in_tree(root: &Path, id: &BoxId) -> PathBuf {
    root.join(id.as_str())
}

fn pin(pid: Pid) -> Result<OwnedFd, HelperError> {
    rustix::process::pidfd_open(pid.to_rustix(), rustix::process::PidfdFlags::empty()).map_err(
        |e| HelperError::Io {
            path: PathBuf::from(format!("pid {pid}")),
            op: "pidfd_open",
            source: e.into(),
        },
    )
}

/// Whether the process behind `pidfd` is still running (not exited).
fn still_alive(pidfd: &OwnedFd) -> bool {
    !identity::wait_pidfd(pidfd, Duration::ZERO)
}

/// Reads `cgroup.procs` (capped) and says whether `pid` is listed.
pub fn cgroup_lists(cgroup: &Path, pid: Pid) -> Result<bool, HelperError> {
    let path = cgroup.join("cgroup.procs");
    let mut text = String::new();
    std::fs::File::open(&path)
        .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
        .map_err(io_err(&path, "read"))?;
    let want = pid.get().to_string();
    Ok(text.lines().any(|l| l.trim() == want))
}

/// The default authorization: cgroup membership, else (no cgroups) the
/// weaker verified identity record + exact argv. See the module docs.
pub fn authorize_by_membership(a: &Authorize<'_>) -> Result<OwnedFd, HelperError> {
    let pidfd = pin(a.pid)?;
    match a.cgroup {
        Some(cg) => {
            if !cg.exists() {
                return Err(HelperError::NoCgroup {
                    id: a.id.to_string(),
                    cgroup: cg.to_path_buf(),
                });
            }
            // Listed while pinned and alive after the read: the listing was
            // about this process, not a successor at its pid.
            if cgroup_lists(cg, a.pid)? && still_alive(&pidfd) {
                Ok(pidfd)
            } else {
                Err(HelperError::NotInBox {
                    id: a.id.to_string(),
                    pid: i64::from(a.pid.get()),
                    cgroup: cg.to_path_buf(),
                })
            }
        }
        None => verify_shim(a),
    }
}

/// The fallback: `pid` is the shim the box's identity record names.
fn verify_shim(a: &Authorize<'_>) -> Result<OwnedFd, HelperError> {
    let refuse = |reason: String| HelperError::NotVerified {
        id: a.id.to_string(),
        pid: i64::from(a.pid.get()),
        reason,
    };
    let path = a
        .state_root
        .join(a.id.as_str())
        .join(crate::layout::IDENTITY);
    let bytes = crate::fsread::read_capped(&path, crate::fsread::RECORD_CAP, a.peer_uid)
        .map_err(|e| refuse(e.to_string()))?;
    let record = identity::parse_record(&bytes).map_err(|e| refuse(e.to_string()))?;
    let host = HostFacts::detect().map_err(|e| refuse(e.to_string()))?;
    let verified = identity::verify_with_pidfd(&VerifyRequest {
        id: a.id,
        record: &record,
        host: &host,
    });
    let (pid, pidfd) = match verified {
        ProcessIdentity::Verified(p) => (p.pid, p.pidfd),
        other => return Err(refuse(format!("record does not verify: {other:?}"))),
    };
    let Some(pidfd) = pidfd.filter(|_| pid == a.pid) else {
        return Err(refuse(format!("the box's shim is pid {pid}")));
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    if argv.get(1) != Some(&a.id.as_str().as_bytes()) {
        return Err(refuse("argv[1] is not exactly the box id".into()));
    }
    let owner = std::fs::metadata(format!("/proc/{pid}")).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    if owner.ok() != Some(a.peer_uid) && a.peer_uid != 0 {
        return Err(refuse("not owned by the caller".into()));
    }
    if !still_alive(&pidfd) {
        return Err(refuse("exited".into()));
    }
    Ok(pidfd)
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct HelperConfig {
    /// The socket path.
    pub socket: PathBuf,
    /// The state root whose boxes it serves (fallback authorization).
    pub state_root: PathBuf,
    /// Where box cgroups go; `None`: no cgroups (the fallback).
    pub cgroup_root: Option<PathBuf>,
    /// Uids served besides the helper's own.
    pub allowed_uids: Vec<u32>,
    /// The decisions.
    pub strategies: HelperStrategies,
}

/// Binds the socket 0600 from birth in a 0700 dir, listening before it
/// appears under its name.
pub fn bind_private(socket: &Path) -> Result<UnixListener, HelperError> {
    let uid = rustix::process::geteuid().as_raw();
    let dir = socket
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match fswrite::create_private_dir(dir) {
        Ok(()) | Err(fswrite::WriteError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    fswrite::check_private_dir(dir, uid)?;
    match rustix::fs::lstat(socket) {
        Err(rustix::io::Errno::NOENT) => {}
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_socket() => {
            if UnixStream::connect(socket).is_ok() {
                return Err(HelperError::SocketInUse {
                    path: socket.to_path_buf(),
                    why: "another helper is listening",
                });
            }
            fswrite::remove_file(socket)?; // stale: its helper is gone
        }
        Ok(_) => {
            return Err(HelperError::SocketInUse {
                path: socket.to_path_buf(),
                why: "exists and is not a socket (left in place)",
            });
        }
        Err(e) => return Err(io_err(socket, "lstat")(e.into())),
    }
    let name = socket
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let _ = fswrite::remove_file(&tmp);
    // The mode comes from the umask at bind time: 0777 & ~0177 = 0600.
    let old = crate::sys::set_umask(0o177);
    let bound = UnixListener::bind(&tmp);
    crate::sys::set_umask(old);
    let listener = bound.map_err(io_err(&tmp, "bind"))?;
    rustix::fs::rename(&tmp, socket).map_err(|e| io_err(socket, "rename")(e.into()))?;
    Ok(listener)
}

/// Re-adopts the box cgroups a previous helper left: populated ones are
/// kept (and reported), empty ones removed. Returns (adopted, removed).
pub fn adopt(cgroup_root: &Path) -> (Vec<String>, Vec<String>) {
    let (mut adopted, mut removed) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir(cgroup_root)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if BoxId::new(&name).is_err() || !e.path().join("cgroup.procs").exists() {
            continue;
        }
        if populated(&e.path()) {
            adopted.push(name);
        } else if fswrite::remove_dir(&e.path()).is_ok() {
            removed.push(name);
        }
    }
    (adopted, removed)
}

fn populated(cg: &Path) -> bool {
    std::fs::read_to_string(cg.join("cgroup.events"))
        .map(|t| t.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

/// Serves requests until the process is killed.
pub fn serve(cfg: &HelperConfig) -> Result<(), HelperError> {
    if let Some(root) = &cfg.cgroup_root {
        if !root.join("cgroup.kill").exists() {
            return Err(HelperError::Io {
                path: root.clone(),
                op: "find cgroup.kill (a cgroup2 dir, Linux 5.14+)",
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let (adopted, removed) = adopt(root);
        for id in adopted {
            eprintln!("refbox-helper: re-adopted box {id} (its cgroup is populated)");
        }
        for id in removed {
            eprintln!("refbox-helper: removed empty cgroup of box {id}");
        }
    }
    let listener = bind_private(&cfg.socket)?;
    let me = rustix::process::geteuid().as_raw();
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let resp = match handle(cfg, me, &conn) {
            Ok(r) => r,
            Err(e) => Response {
                ok: false,
                cgroup: None,
                kind: Some(e.kind().to_string()),
                error: Some(chain(&e)),
            },
        };
        let mut line = serde_json::to_vec(&resp).unwrap_or_default();
        line.push(b'\n');
        let _ = (&conn).write_all(&line);
    }
    Ok(())
}

fn handle(cfg: &HelperConfig, me: u32, conn: &UnixStream) -> Result<Response, HelperError> {
    let cred = rustix::net::sockopt::socket_peercred(conn)
        .map_err(|e| io_err("peer", "SO_PEERCRED")(e.into()))?;
    let uid = cred.uid.as_raw();
    if uid != me && !cfg.allowed_uids.contains(&uid) {
        return Err(HelperError::PeerRefused {
            uid,
            pid: cred.pid.as_raw_nonzero().get(),
        });
    }
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(io_err("peer", "set timeout"))?;
    let mut line = String::new();
    BufReader::new(conn.take(REQUEST_CAP))
        .read_line(&mut line)
        .map_err(io_err("peer", "read request"))?;
    let req: Request = serde_json::from_str(&line).map_err(|e| HelperError::BadRequest {
        detail: e.to_string(),
    })?;
    execute(cfg, uid, cred.gid.as_raw(), &req)
}

fn box_id(s: &str) -> Result<BoxId, HelperError> {
    BoxId::new(s).map_err(|e| HelperError::BadRequest {
        detail: format!("box id {s:?}: {e}"),
    })
}

fn target(pid: i64) -> Result<Pid, HelperError> {
    Pid::new(pid).map_err(|e| HelperError::BadRequest {
        detail: format!("pid {pid}: {e}"),
    })
}

/// Carries out one request from a peer with `uid`/`gid`.
pub fn execute(
    cfg: &HelperConfig,
    uid: u32,
    gid: u32,
    req: &Request,
) -> Result<Response, HelperError> {
    let s = &cfg.strategies;
    let cg = |id: &BoxId| cfg.cgroup_root.as_ref().map(|r| (s.box_cgroup)(r, id));
    let ok = Response {
        ok: true,
        ..Response::default()
    };
    match req {
        Request::Prepare { id } => {
            let id = box_id(id)?;
            // The box must be the caller's (its dir under the root, which
            // `create` made before asking), and so must an existing cgroup.
            owned_by(&id, &cfg.state_root.join(id.as_str()), uid, false)?;
            let Some(dir) = cg(&id) else { return Ok(ok) };
            owned_by(&id, &dir, uid, true)?;
            match std::fs::create_dir_all(&dir) {
                Ok(()) => {}
                Err(e) => return Err(io_err(&dir, "mkdir")(e)),
            }
            // Delegation: the caller's shim joins by writing cgroup.procs.
            if uid != 0 {
                for p in [dir.clone(), dir.join("cgroup.procs")] {
                    rustix::fs::chown(
                        &p,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                    )
                    .map_err(|e| io_err(&p, "chown")(e.into()))?;
                }
            }
            Ok(Response {
                cgroup: Some(dir),
                ..ok
            })
        }
        Request::Signal { id, pid, signal } => {
            let sig = (s.parse_signal)(signal)?;
            let id = box_id(id)?;
            let pid = target(*pid)?;
            let dir = cg(&id);
            if let Some(dir) = &dir {
                owned_by(&id, dir, uid, true)?;
            }
            let pidfd = (s.authorize)(&Authorize {
                id: &id,
                pid,
                cgroup: dir.as_deref(),
                state_root: &cfg.state_root,
                peer_uid: uid,
            })?;
            crate::sys::pidfd_send_signal(pidfd.as_fd(), sig)
                .map_err(io_err(format!("pid {pid}"), "pidfd_send_signal"))?;
            Ok(ok)
        }
        Request::KillBox { id, pid } => {
            let id = box_id(id)?;
            let pid = target(*pid)?;
            let dir = cg(&id);
            if let Some(dir) = &dir {
                owned_by(&id, dir, uid, true)?;
            }
            let pidfd = (s.authorize)(&Authorize {
                id: &id,
                pid,
                cgroup: dir.as_deref(),
                state_root: &cfg.state_root,
                peer_uid: uid,
            })?;
            let send = |sig| {
                crate::sys::pidfd_send_signal(pidfd.as_fd(), sig)
                    .map_err(io_err(format!("pid {pid}"), "pidfd_send_signal"))
            };
            match dir {
                Some(dir) => kill_cgroup(&dir)?,
                // Without a cgroup: the shim's group-kill request (it
                // SIGKILLs its payload's process group and records the
                // exit), then SIGKILL if it lingers, as the CLI does.
                None => {
                    send(crate::sys::group_kill_signal())?;
                    if !identity::wait_pidfd(&pidfd, crate::runtime::GROUP_KILL_GRACE) {
                        send(libc::SIGKILL)?;
                    }
                }
            }
            Ok(ok)
        }
        Request::Remove { id } => {
            let id = box_id(id)?;
            if let Some(dir) = cg(&id) {
                owned_by(&id, &dir, uid, true)?;
                remove_cgroup(&dir)?;
            }
            Ok(ok)
        }
    }
}

/// A non-root peer acts only on what it owns: `path` (a box dir, or a box
/// cgroup, which `Prepare` chowns to the caller) must be a dir of `uid`
/// (lstat: a symlink is nobody's box). `missing_ok`: a path that does not
/// exist yet (a cgroup before `Prepare`, after `Remove`) refuses nothing.
fn owned_by(id: &BoxId, path: &Path, uid: u32, missing_ok: bool) -> Result<(), HelperError> {
    if uid == 0 {
        return Ok(());
    }
    match rustix::fs::lstat(path) {
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() && st.st_uid == uid => {
            Ok(())
        }
        Ok(st) => Err(HelperError::NotYourBox {
            id: id.to_string(),
            path: path.to_path_buf(),
            owner: st.st_uid,
            uid,
        }),
        Err(rustix::io::Errno::NOENT) if missing_ok => Ok(()),
        Err(e) => Err(io_err(path, "lstat")(e.into())),
    }
}

/// `echo 1 > cgroup.kill`: every process of the cgroup, grandchildren
/// included, SIGKILLed by the kernel.
pub fn kill_cgroup(dir: &Path) -> Result<(), HelperError> {
    let path = dir.join("cgroup.kill");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(b"1"))
        .map_err(io_err(&path, "write"))
}

/// Kills what is left in a box cgroup, waits (deadline) until it is empty,
/// removes it. A missing cgroup is fine.
pub fn remove_cgroup(dir: &Path) -> Result<(), HelperError> {
    if !dir.exists() {
        return Ok(());
    }
    kill_cgroup(dir)?;
    let deadline = std::time::Instant::now() + CGROUP_EMPTY_TIMEOUT;
    while populated(dir) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    match rustix::fs::unlinkat(rustix::fs::CWD, dir, rustix::fs::AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(io_err(dir, "rmdir")(e.into())),
    }
}

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The helper could not be reached or answered garbage.
    #[error("helper at {path}: {op} failed")]
    Io {
        /// The socket.
        path: PathBuf,
        /// What was attempted.
        op: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The helper refused.
    #[error("helper refused ({kind}): {error}")]
    Refused {
        /// [`HelperError::kind`].
        kind: String,
        /// Its message.
        error: String,
    },
}

/// Sends one request; `Ok` only when the helper did it.
pub fn request(socket: &Path, req: &Request) -> Result<Response, ClientError> {
    let err = |op| {
        let path = socket.to_path_buf();
        move |source| ClientError::Io { path, op, source }
    };
    let mut s = UnixStream::connect(socket).map_err(err("connect"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(err("set timeout"))?;
    let mut line = serde_json::to_vec(req).expect("requests serialize");
    line.push(b'\n');
    s.write_all(&line).map_err(err("send"))?;
    let mut answer = String::new();
    BufReader::new(s.take(REQUEST_CAP))
        .read_line(&mut answer)
        .map_err(err("read answer"))?;
    let resp: Response = serde_json::from_str(&answer).map_err(|e| ClientError::Io {
        path: socket.to_path_buf(),
        op: "parse answer",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    if resp.ok {
        Ok(resp)
    } else {
        Err(ClientError::Refused {
            kind: resp.kind.unwrap_or_default(),
            error: resp.error.unwrap_or_default(),
        })
    }
}

/// `refbox-helper`'s command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "refbox-helper",
    version,
    max_term_width = 100,
    after_help = "Exit codes: 0 done; 1 refused or failed (the reason on stderr); 2 usage."
)]
pub struct HelperCli {
    /// The helper's socket (its dir is created 0700 if missing).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: HelperCommand,
}

/// `refbox-helper` subcommands: `serve`, and a client for each request.
#[derive(Debug, clap::Subcommand)]
pub enum HelperCommand {
    /// Serve requests on the socket until killed.
    Serve {
        /// The state root of the boxes it serves (fallback authorization).
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// A cgroup2 dir (with cgroup.kill) for box cgroups. Without it the
        /// helper authorizes by verified identity record + exact argv, which
        /// is weaker (see the module docs).
        #[arg(long, value_name = "DIR")]
        cgroup_root: Option<PathBuf>,
        /// Another uid to serve (the helper's own is always served).
        #[arg(long, value_name = "UID")]
        allow_uid: Vec<u32>,
    },
    /// Ask the helper to send SIGNAL (a name) to PID, which must belong to box ID.
    Signal {
        /// Box id.
        id: String,
        /// Target pid.
        pid: i64,
        /// TERM, KILL, INT, HUP, QUIT, USR1, USR2 or ABRT.
        signal: String,
    },
    /// Ask the helper to prepare box ID's cgroup; prints its path.
    Prepare {
        /// Box id.
        id: String,
    },
    /// Ask the helper to kill box ID (PID: its shim).
    KillBox {
        /// Box id.
        id: String,
        /// The shim's pid.
        pid: i64,
    },
    /// Ask the helper to remove box ID's cgroup.
    Remove {
        /// Box id.
        id: String,
    },
}

/// `refbox-helper`'s main with refbox's strategies.
pub fn main() -> std::process::ExitCode {
    main_with(HelperStrategies::default())
}

/// `refbox-helper`'s main with the given strategies (fixtures swap one).
pub fn main_with(strategies: HelperStrategies) -> std::process::ExitCode {
    use clap::Parser;
    crate::sys::set_umask_077();
    let cli = HelperCli::parse();
    let req = match cli.command {
        HelperCommand::Serve {
            root,
            cgroup_root,
            allow_uid,
        } => {
            let cfg = HelperConfig {
                socket: cli.socket,
                state_root: root,
                cgroup_root,
                allowed_uids: allow_uid,
                strategies,
            };
            return match serve(&cfg) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("refbox-helper: {}", chain(&e));
                    std::process::ExitCode::from(1)
                }
            };
        }
        HelperCommand::Signal { id, pid, signal } => Request::Signal { id, pid, signal },
        HelperCommand::Prepare { id } => Request::Prepare { id },
        HelperCommand::KillBox { id, pid } => Request::KillBox { id, pid },
        HelperCommand::Remove { id } => Request::Remove { id },
    };
    match request(&cli.socket, &req) {
        Ok(r) => {
            if let Some(cg) = r.cgroup {
                println!("{}", cg.display());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("refbox-helper: {}", chain(&e));
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("TERM", Some(libc::SIGTERM))]
    #[case("sigkill", Some(libc::SIGKILL))]
    #[case("SIGUSR2", Some(libc::SIGUSR2))]
    #[case("ABRT", Some(libc::SIGABRT))]
    #[case("STOP", None)]
    #[case("SIGCONT", None)]
    #[case("RTMIN", None)]
    #[case("RTMIN+5", None)]
    #[case("9", None)]
    #[case("15", None)]
    #[case("34", None)]
    #[case("0", None)]
    #[case("", None)]
    fn names_only_allowlist(#[case] s: &str, #[case] want: Option<i32>) {
        let got = allowlisted_name(s);
        assert_eq!(got.as_ref().ok().copied(), want, "{s}");
        if want.is_none() {
            assert_eq!(got.unwrap_err().kind(), "signal-refused");
        }
    }

    #[test]
    fn socket_is_0600_from_birth_in_a_0700_dir() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("run");
        let sock = dir.join("helper.sock");
        let l = bind_private(&sock).unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&sock), 0o600);
        // A live helper's socket is not taken over; a stale one is.
        assert!(matches!(
            bind_private(&sock),
            Err(HelperError::SocketInUse { .. })
        ));
        drop(l);
        let _l2 = bind_private(&sock).unwrap();
        assert_eq!(mode(&sock), 0o600);
    }

    #[test]
    fn peers_of_another_uid_are_refused() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let cfg = HelperConfig {
            socket: PathBuf::from("/nonexistent"),
            state_root: PathBuf::from("/nonexistent"),
            cgroup_root: None,
            allowed_uids: vec![],
            strategies: HelperStrategies::default(),
        };
        let me = rustix::process::geteuid().as_raw();
        // As a helper running under another uid, our own connection is foreign.
        let e = handle(&cfg, me.wrapping_add(1), &ours).unwrap_err();
        assert_eq!(e.kind(), "peer-refused", "{e}");
        // Allowed explicitly, it gets as far as reading the request.
        let cfg = HelperConfig {
            allowed_uids: vec![me],
            ..cfg
        };
        drop(theirs);
        let e = handle(&cfg, me.wrapping_add(1), &ours).unwrap_err();
        assert_eq!(e.kind(), "bad-request", "{e}");
    }

    #[test]
    fn a_peer_cannot_prepare_or_remove_another_uids_box() {
        // Box dir and box cgroup (a plain dir standing in) owned by uid
        // 4242; the peer is uid 4343, or root, or 4242 itself.
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let cgroups = t.path().join("cg");
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::create_dir_all(cgroups.join("b")).unwrap();
        let own = |p: &Path, uid| {
            rustix::fs::chown(p, Some(rustix::fs::Uid::from_raw(uid)), None).unwrap();
        };
        if !rustix::process::geteuid().is_root() {
            eprintln!("chown needs root: only the root-peer half of this test runs");
        } else {
            own(&root.join("b"), 4242);
            own(&cgroups.join("b"), 4242);
        }
        let cfg = HelperConfig {
            socket: PathBuf::from("/nonexistent"),
            state_root: root.clone(),
            cgroup_root: Some(cgroups.clone()),
            allowed_uids: vec![4242, 4343],
            strategies: HelperStrategies::default(),
        };
        let prepare = Request::Prepare { id: "b".into() };
        let remove = Request::Remove { id: "b".into() };
        if rustix::process::geteuid().is_root() {
            for req in [&prepare, &remove] {
                let e = execute(&cfg, 4343, 4343, req).unwrap_err();
                assert_eq!(e.kind(), "not-your-box", "{req:?}: {e}");
            }
            assert!(
                cgroups.join("b").exists(),
                "nothing removed for the wrong peer"
            );
            // The owner may (Prepare chowns cgroup.procs: absent in a plain dir).
            let e = execute(&cfg, 4242, 4242, &prepare).unwrap_err();
            assert_eq!(e.kind(), "io", "got past ownership: {e}");
        }
        // Root may act on any box (remove of a plain dir: cgroup.kill fails).
        let e = execute(&cfg, 0, 0, &remove).unwrap_err();
        assert_eq!(e.kind(), "io", "{e}");
    }

    #[test]
    fn requests_round_trip() {
        let r = Request::Signal {
            id: "b".into(),
            pid: 7,
            signal: "TERM".into(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"op":"signal","id":"b","pid":7,"signal":"TERM"}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
    }

    proptest::proptest! {
        #[test]
        fn any_request_line_parses_or_errs(s in "\\PC{0,200}") {
            let _ = serde_json::from_str::<Request>(&s);
        }
    }
}
