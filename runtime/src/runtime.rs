//! `Runtime`: the operations on boxes (create, start, state, list, kill,
//! delete, recover, cleanup-logs) over one root, built from the strategies.
//! The CLI is a thin layer over it; a daemon embeds it directly.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::config::ShimConfig;
use crate::exitfile::{self, ExitError, ExitRecord};
use crate::fsread::{self, ReadError};
use crate::fswrite::{self, WriteError};
use crate::identity::{
    self, AbsentReason, ChildRecordWriter, HostFacts, IdentityError, IdentityRecord,
    ProcessIdentity, RecordError, VerifiedProcess, VerifyRequest,
};
use crate::ids::BoxId;
use crate::layout::{self, BoxPaths, Layout};
use crate::pid::Pid;
use crate::reaper::{Reaper, ReaperError, Registration};
use crate::sentinel::{self, Verdict};
use crate::state::{self, BoxRecord, Phase, StateError};
use crate::status::{
    BoxState, CleanedLog, CleanupAction, CleanupReport, EntryError, IdentityKind, ListReport,
    RecoverAction, RecoverReport, RecoveredBox, Status,
};
use crate::strategy::Strategies;

mod daemon;
pub use daemon::{
    DAEMON_LOCK, DAEMON_RECORD, DaemonError, DaemonExclusiveFn, DaemonGuard, DaemonLockRequest,
    DaemonStatus, Exclusive, daemon_lock,
};

/// How long `create` waits for a new shim to say it is ready.
pub const SHIM_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `kill KILL` / `delete --force` give the shim to kill its
/// payload's group before SIGKILLing the shim itself.
pub const GROUP_KILL_GRACE: Duration = Duration::from_secs(2);
/// How long `delete --force` waits for a killed shim to die.
pub const KILL_WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many threads load boxes for `list`, `recover` and `cleanup-logs`.
pub const LIST_THREADS: usize = 4;
/// `list` adds a thread only per this many boxes (a thread costs tens of µs).
pub const LIST_BOXES_PER_THREAD: usize = 32;

/// Why one box could not be loaded. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum BoxError {
    /// A file could not be read (oversized, FIFO, symlink, wrong owner, ...).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The box dir is not a private dir of ours (symlink, foreign, writable).
    #[error(transparent)]
    Dir(#[from] WriteError),
    /// `state.json` is malformed.
    #[error("{path}: malformed")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: StateError,
    },
    /// `shim.pid` is malformed.
    #[error("{path}: malformed identity record")]
    Record {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: RecordError,
    },
    /// `exit` or `exit.previous` is malformed.
    #[error("{path}: malformed exit record")]
    Exit {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: ExitError,
    },
}

impl BoxError {
    /// The file at fault.
    pub fn path(&self) -> PathBuf {
        match self {
            BoxError::Read(e) => e.path().to_path_buf(),
            BoxError::Dir(WriteError::AlreadyExists { path })
            | BoxError::Dir(WriteError::Symlink { path })
            | BoxError::Dir(WriteError::NotDirectory { path })
            | BoxError::Dir(WriteError::ForeignOwner { path, .. })
            | BoxError::Dir(WriteError::Writable { path, .. })
            | BoxError::Dir(WriteError::Io { path, .. }) => path.clone(),
            BoxError::State { path, .. }
            | BoxError::Record { path, .. }
            | BoxError::Exit { path, .. } => path.clone(),
        }
    }
}

/// Errors of runtime operations.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The root is unusable (symlink, foreign owner, writable parent, ...).
    #[error("state root {root} refused")]
    Root {
        /// The root.
        root: PathBuf,
        /// Why.
        #[source]
        source: WriteError,
    },
    /// No box with this id.
    #[error("no box {id}")]
    NoSuchBox {
        /// The id.
        id: BoxId,
    },
    /// A box with this id exists already.
    #[error("box {id} already exists")]
    BoxExists {
        /// The id.
        id: BoxId,
    },
    /// The box's files could not be read; they are left in place.
    #[error("box {id}: unreadable (left in place)")]
    Box {
        /// The id.
        id: BoxId,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// Writing the box's files failed.
    #[error("box {id}: write failed")]
    Write {
        /// The id.
        id: BoxId,
        /// Why.
        #[source]
        source: WriteError,
    },
    /// Host facts (boot id) unavailable.
    #[error("cannot identify this boot")]
    Host(#[source] IdentityError),
    /// The box is running and `--force` was not given.
    #[error("box {id} is running (pid {pid}); use --force to kill it first")]
    Running {
        /// The id.
        id: BoxId,
        /// The verified shim pid.
        pid: Pid,
    },
    /// `start` on a running box.
    #[error("box {id} is already running")]
    AlreadyRunning {
        /// The id.
        id: BoxId,
    },
    /// The box's record cannot be verified: refbox will not act on it.
    #[error(
        "box {id}: pid {pid} cannot be verified ({reason}); refusing to act (inspect it and remove {dir} by hand)"
    )]
    Unverifiable {
        /// The id.
        id: BoxId,
        /// The recorded pid.
        pid: Pid,
        /// Why.
        reason: String,
        /// The box dir.
        dir: PathBuf,
    },
    /// The payload argv is empty.
    #[error("box {id}: empty payload command")]
    EmptyPayload {
        /// The id.
        id: BoxId,
    },
    /// A daemon command failed (`refbox daemon`, `daemon-stop`, ...).
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
    /// The shim could not be spawned.
    #[error("cannot spawn shim {path}")]
    ShimSpawn {
        /// The shim executable.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The shim started but reported a failure (or died) before ready.
    #[error("box {id}: shim failed: {message}")]
    ShimFailed {
        /// The id.
        id: BoxId,
        /// What the shim said.
        message: String,
    },
    /// Registering the shim with the reaper failed.
    #[error("box {id}: cannot watch the shim")]
    Reaper {
        /// The id.
        id: BoxId,
        /// Why.
        #[source]
        source: ReaperError,
    },
    /// Sending a signal failed.
    #[error("box {id}: signalling pid {pid} failed")]
    Signal {
        /// The id.
        id: BoxId,
        /// The verified pid.
        pid: Pid,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The shim did not die after SIGKILL within the deadline.
    #[error("box {id}: pid {pid} still alive after SIGKILL")]
    StillAlive {
        /// The id.
        id: BoxId,
        /// The pid.
        pid: Pid,
    },
    /// The signal is refused.
    #[error("signal {given:?} refused")]
    BadSignal {
        /// What was asked.
        given: String,
        /// Why.
        #[source]
        source: crate::signal::SignalError,
    },
    /// A user input file is malformed.
    #[error("{path}: bad input")]
    Input {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A user input file is unreadable.
    #[error("cannot read input")]
    Read {
        /// Why (names the file).
        #[source]
        source: ReadError,
    },
    /// The helper refused or could not be reached.
    #[error("box {id}: helper")]
    Helper {
        /// The id.
        id: BoxId,
        /// Why.
        #[source]
        source: crate::helper::ClientError,
    },
    /// The box's cgroup (from the helper) cannot be joined.
    #[error("box {id}: cannot join cgroup {path}")]
    Cgroup {
        /// The id.
        id: BoxId,
        /// Its `cgroup.procs`.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The box dir holds files refbox did not create: left in place.
    #[error("{path}: holds entries refbox did not create ({entries}); left in place")]
    Foreign {
        /// The dir.
        path: PathBuf,
        /// The entries.
        entries: String,
    },
}

/// What `create` needs.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The box id.
    pub id: BoxId,
    /// Payload argv.
    pub argv: Vec<String>,
    /// Payload environment (non-secret).
    pub env: Vec<(String, String)>,
    /// Bytes for the payload's stdin (secrets).
    pub secret: Option<Vec<u8>>,
}

/// What `kill` did.
#[derive(Debug)]
pub enum KillOutcome {
    /// The verified shim was signalled.
    Signalled {
        /// Its pid.
        pid: Pid,
    },
    /// The box is not running: nothing was signalled.
    NotRunning {
        /// Its state.
        state: Box<BoxState>,
    },
}

/// A box as loaded from disk, with its identity verified.
#[derive(Debug)]
pub struct LoadedBox {
    /// `state.json`.
    pub record: BoxRecord,
    /// `shim.pid`, if present.
    pub identity_record: Option<IdentityRecord>,
    /// The verification outcome.
    pub identity: ProcessIdentity,
    /// `exit`.
    pub exit: Option<ExitRecord>,
    /// `exit.previous`.
    pub exit_previous: Option<ExitRecord>,
}

impl LoadedBox {
    /// The reported view.
    pub fn view(&self) -> BoxState {
        let (status, identity, reason) = match &self.identity {
            ProcessIdentity::Verified(_) => {
                let s = if self.record.phase == Phase::Created {
                    Status::Created
                } else {
                    Status::Running
                };
                (s, IdentityKind::Verified, None)
            }
            ProcessIdentity::Legacy { reason, .. } => {
                (Status::Unknown, IdentityKind::Legacy, Some(reason.clone()))
            }
            ProcessIdentity::Absent { reason, .. } => (
                Status::Stopped,
                IdentityKind::Absent,
                Some(reason.to_string()),
            ),
        };
        BoxState {
            oci_version: crate::status::OCI_VERSION,
            id: self.record.id.to_string(),
            status,
            pid: self.identity_record.map(|r| r.pid().get()),
            identity,
            reason,
            payload: self.record.argv.clone(),
            created_unix_ms: self.record.created_unix_ms,
            exit: self.exit.clone(),
            exit_previous: self.exit_previous.clone(),
        }
    }
}

/// A refbox runtime over one root.
pub struct Runtime {
    layout: Layout,
    /// The root, held open (`O_PATH`): box files are opened beneath it.
    root_fd: std::os::fd::OwnedFd,
    uid: u32,
    strategies: Strategies,
    /// Found on first use: only create and start need it.
    shim_path: OnceLock<PathBuf>,
    host: OnceLock<HostFacts>,
    reaper: OnceLock<Reaper>,
    helper: Option<PathBuf>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("root", &self.layout.root())
            .field("shim", &self.shim_path.get())
            .finish_non_exhaustive()
    }
}

/// `refbox-shim` next to the current executable (tests: one dir up from deps/).
pub fn default_shim_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let here = dir.join("refbox-shim");
    if here.exists() {
        return here;
    }
    dir.parent()
        .map(|p| p.join("refbox-shim"))
        .filter(|p| p.exists())
        .unwrap_or(here)
}

impl Runtime {
    /// Opens (creating if needed) the root, checking its ownership and mode
    /// and its parent's.
    pub fn open(root: &Path, strategies: Strategies) -> Result<Self, RuntimeError> {
        // Absolute from here on: a shim starts in its box dir, and paths
        // its child uses before exec (the identity record) must not be
        // relative to the caller's working directory.
        let absolute = std::path::absolute(root).map_err(|e| RuntimeError::Root {
            root: root.to_path_buf(),
            source: WriteError::Io {
                path: root.to_path_buf(),
                op: "resolve",
                source: e,
            },
        })?;
        let root = absolute.as_path();
        let uid = rustix::process::geteuid().as_raw();
        let refuse = |source| RuntimeError::Root {
            root: root.to_path_buf(),
            source,
        };
        let parent = root
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fswrite::check_parent_dir(parent, uid).map_err(refuse)?;
        if let Err(rustix::io::Errno::NOENT) = rustix::fs::lstat(root) {
            match (strategies.make_dir)(root) {
                Ok(()) | Err(WriteError::AlreadyExists { .. }) => {}
                Err(e) => return Err(refuse(e)),
            }
        }
        fswrite::check_private_dir(root, uid).map_err(refuse)?;
        let root_fd = rustix::fs::open(
            root,
            rustix::fs::OFlags::PATH
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| {
            refuse(WriteError::Io {
                path: root.to_path_buf(),
                op: "open",
                source: e.into(),
            })
        })?;
        Ok(Runtime {
            root_fd,
            layout: Layout::new(root),
            uid,
            strategies,
            shim_path: OnceLock::new(),
            host: OnceLock::new(),
            reaper: OnceLock::new(),
            helper: None,
        })
    }

    /// Uses another shim executable.
    pub fn set_shim_path(&mut self, path: PathBuf) {
        self.shim_path = OnceLock::from(path);
    }

    /// The shim executable: as set, else [`default_shim_path`].
    pub fn shim_path(&self) -> &Path {
        self.shim_path.get_or_init(default_shim_path)
    }

    /// Acts through the refbox-helper listening at `socket`: box cgroups
    /// are prepared by it, and `kill`/`delete --force` signal through it
    /// (the start request to a box's own shim stays direct).
    pub fn set_helper(&mut self, socket: PathBuf) {
        self.helper = Some(socket);
    }

    fn ask_helper(
        &self,
        id: &BoxId,
        req: &crate::helper::Request,
    ) -> Result<Option<crate::helper::Response>, RuntimeError> {
        let Some(sock) = &self.helper else {
            return Ok(None);
        };
        crate::helper::request(sock, req)
            .map(Some)
            .map_err(|source| RuntimeError::Helper {
                id: id.clone(),
                source,
            })
    }

    /// The strategies in use.
    pub fn strategies(&self) -> &Strategies {
        &self.strategies
    }

    /// The layout (paths) of this root.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// This boot's facts (cached).
    pub fn host(&self) -> Result<&HostFacts, RuntimeError> {
        if let Some(h) = self.host.get() {
            return Ok(h);
        }
        let h = HostFacts::detect().map_err(RuntimeError::Host)?;
        Ok(self.host.get_or_init(|| h))
    }

    fn reaper(&self, id: &BoxId) -> Result<&Reaper, RuntimeError> {
        if let Some(r) = self.reaper.get() {
            return Ok(r);
        }
        let r = Reaper::new(self.strategies.reap).map_err(|source| RuntimeError::Reaper {
            id: id.clone(),
            source,
        })?;
        Ok(self.reaper.get_or_init(|| r))
    }

    /// The pids the scoped reaper watches (shims spawned by this runtime).
    pub fn registered_children(&self) -> Vec<Pid> {
        self.reaper
            .get()
            .map(Reaper::registered)
            .unwrap_or_default()
    }

    /// Waits up to `timeout` until the scoped reaper has reaped every shim
    /// this runtime spawned (`true` at once when it spawned none).
    pub fn wait_reaped(&self, timeout: Duration) -> bool {
        self.reaper.get().is_none_or(|r| r.wait_idle(timeout))
    }

    /// Reads one of a box's files (full path and path beneath the root, see
    /// [`BoxPaths`]) through the `read_file` strategy.
    fn read_in(&self, (path, rel): (&Path, &Path), cap: u64) -> Result<Vec<u8>, ReadError> {
        let file = fsread::FileRef {
            dir: self.root_fd.as_fd(),
            rel,
            path,
        };
        (self.strategies.read_file)(&file, cap, self.uid)
    }

    /// [`Runtime::read_in`] of a file that may be missing.
    fn read_opt(&self, file: (&Path, &Path), cap: u64) -> Result<Option<Vec<u8>>, BoxError> {
        match self.read_in(file, cap) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn read_exit(&self, paths: &mut BoxPaths, name: &str) -> Result<Option<ExitRecord>, BoxError> {
        let Some(bytes) = self.read_opt(paths.file(name), fsread::RECORD_CAP)? else {
            return Ok(None);
        };
        exitfile::parse_exit(&bytes)
            .map(Some)
            .map_err(|source| BoxError::Exit {
                path: paths.file(name).0.to_path_buf(),
                source,
            })
    }

    /// Loads a box and verifies its shim's identity: one lstat of the box
    /// dir, capped reads of its files beneath the root's fd, one
    /// verification. No path is walked from `/`, nothing is read twice.
    pub fn load(&self, id: &BoxId) -> Result<LoadedBox, RuntimeError> {
        let mut paths = BoxPaths::new(self.layout.root(), id);
        let wrap = |source: BoxError| RuntimeError::Box {
            id: id.clone(),
            source,
        };
        self.check_box_dir(id, paths.dir())?;
        let bytes = self
            .read_in(paths.file(layout::STATE), fsread::STATE_CAP)
            .map_err(|e| wrap(e.into()))?;
        let record = state::parse_state(&bytes, id).map_err(|source| {
            wrap(BoxError::State {
                path: paths.file(layout::STATE).0.to_path_buf(),
                source,
            })
        })?;
        let identity_record = match self
            .read_opt(paths.file(layout::IDENTITY), fsread::RECORD_CAP)
            .map_err(wrap)?
        {
            None => None,
            Some(b) => Some((self.strategies.parse_identity)(&b).map_err(|source| {
                wrap(BoxError::Record {
                    path: paths.file(layout::IDENTITY).0.to_path_buf(),
                    source,
                })
            })?),
        };
        let identity = match &identity_record {
            None => ProcessIdentity::Absent {
                pid: None,
                reason: AbsentReason::NoRecord,
            },
            Some(rec) => (self.strategies.verify)(&VerifyRequest {
                id,
                record: rec,
                host: self.host()?,
            }),
        };
        // The exits are read after the verification: a shim writes `exit`
        // just before it ends, so one found dead has written it already.
        // One verified alive has not (yet), and when no shim before it ran
        // this box (`earlier_exits`), there is no `exit` to look for: a
        // failed open, ≈ 1/4 of a running box's cost on tmpfs, is saved.
        let exit = match (&identity, record.earlier_exits) {
            (ProcessIdentity::Verified(_), false) => None,
            _ => self.read_exit(&mut paths, layout::EXIT).map_err(wrap)?,
        };
        // `exit.previous` is made only from an `exit` (hard link, then the
        // new `exit` renamed over) and deleted before it, so without `exit`
        // there is none: not probing for it saves another failed open.
        let exit_previous = match exit {
            Some(_) => self
                .read_exit(&mut paths, layout::EXIT_PREVIOUS)
                .map_err(wrap)?,
            None => None,
        };
        Ok(LoadedBox {
            record,
            identity_record,
            identity,
            exit,
            exit_previous,
        })
    }

    /// `refbox state ID`.
    pub fn state(&self, id: &BoxId) -> Result<BoxState, RuntimeError> {
        Ok(self.load(id)?.view())
    }

    /// One pass over the root: every box's state; unreadable entries are
    /// named in `errors`, left in place, and do not stop the others.
    ///
    /// Boxes are loaded on up to [`LIST_THREADS`] threads when there are
    /// many (each load is a handful of syscalls that wait on nothing else);
    /// the report is in box-id order either way.
    pub fn list(&self) -> ListReport {
        let mut report = ListReport::default();
        let ids = self.box_ids(&mut report.errors);
        let results = map_boxes(&ids, |id| {
            self.load(id)
                .map(|b| b.view())
                .map_err(|e| entry_error(self, id, &e))
        });
        for r in results {
            match r {
                Ok(b) => report.boxes.push(b),
                Err(e) => report.errors.push(e),
            }
        }
        report.boxes.sort_by(|a, b| a.id.cmp(&b.id));
        report
    }

    /// One pass over the root: the box ids, sorted; entries that are not
    /// boxes are named in `errors`.
    fn box_ids(&self, errors: &mut Vec<EntryError>) -> Vec<BoxId> {
        let entries = match std::fs::read_dir(self.layout.root()) {
            Ok(e) => e,
            Err(e) => {
                errors.push(EntryError {
                    id: None,
                    path: self.layout.root().to_path_buf(),
                    error: e.to_string(),
                });
                return Vec::new();
            }
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    errors.push(EntryError {
                        id: None,
                        path: self.layout.root().to_path_buf(),
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue; // temp files of atomic writes
            }
            match BoxId::new(&name) {
                Ok(id) => ids.push(id),
                Err(e) => errors.push(EntryError {
                    id: None,
                    path: entry.path(),
                    error: format!("not a box: {e}"),
                }),
            }
        }
        ids.sort();
        ids
    }

    /// `refbox create`: box dir, `state.json`, then the shim, which records
    /// its own identity before exec and reports ready.
    pub fn create(&self, opts: &CreateOptions) -> Result<(), RuntimeError> {
        let id = &opts.id;
        if opts.argv.is_empty() {
            return Err(RuntimeError::EmptyPayload { id: id.clone() });
        }
        let dir = self.layout.box_dir(id);
        match (self.strategies.make_dir)(&dir) {
            Ok(()) => {}
            Err(WriteError::AlreadyExists { .. }) => {
                return Err(RuntimeError::BoxExists { id: id.clone() });
            }
            Err(source) => {
                return Err(RuntimeError::Write {
                    id: id.clone(),
                    source,
                });
            }
        }
        crate::failpoint::hit("create:after-mkdir");
        let _lock = self.lock(id)?;
        let result = (|| {
            (self.strategies.make_dir)(&self.layout.log_dir(id)).map_err(|source| {
                RuntimeError::Write {
                    id: id.clone(),
                    source,
                }
            })?;
            let record = BoxRecord {
                version: state::STATE_VERSION,
                id: id.clone(),
                phase: Phase::Created,
                argv: opts.argv.clone(),
                env: opts.env.clone(),
                created_unix_ms: state::now_unix_ms(),
                // A new box dir: no payload has run in it.
                earlier_exits: false,
            };
            self.write_state(&record)?;
            crate::failpoint::hit("create:after-state");
            let config = ShimConfig {
                argv: opts.argv.clone(),
                env: opts.env.clone(),
                stdin: opts.secret.clone(),
                start_now: false,
            };
            self.launch_shim(id, &config).map(drop)
        })();
        if result.is_err() {
            // Only files this call created; a failed create leaves no box.
            let _ = self.remove_box_files(id);
        }
        result
    }

    fn lock(&self, id: &BoxId) -> Result<fswrite::DirLock, RuntimeError> {
        fswrite::DirLock::acquire(&self.layout.box_dir(id)).map_err(|source| RuntimeError::Write {
            id: id.clone(),
            source,
        })
    }

    /// Looks at box `id` without its lock (records are replaced atomically,
    /// as `list` relies on); when `changes` says that look leads to a change,
    /// takes the lock and looks again under it, so the change is decided on
    /// what no other invocation can alter meanwhile. The lock is returned
    /// for the caller to hold while it changes the box.
    fn look_then_lock<T>(
        &self,
        id: &BoxId,
        look: impl Fn() -> T,
        changes: impl Fn(&T) -> bool,
    ) -> Result<(T, Option<fswrite::DirLock>), RuntimeError> {
        let first = look();
        if !changes(&first) {
            return Ok((first, None));
        }
        let lock = self.lock_existing(id)?;
        Ok((look(), Some(lock)))
    }

    /// Locks an existing box dir; checks it first (a symlink or foreign dir is
    /// reported like any unreadable box, a missing one as no such box).
    fn lock_existing(&self, id: &BoxId) -> Result<fswrite::DirLock, RuntimeError> {
        self.check_box_dir(id, BoxPaths::new(self.layout.root(), id).dir())?;
        self.lock(id)
    }

    /// A box dir must be a private dir of ours (one lstat, beneath the open
    /// root); missing → no such box.
    fn check_box_dir(&self, id: &BoxId, (dir, rel): (&Path, &Path)) -> Result<(), RuntimeError> {
        match fswrite::check_private_dir_at(self.root_fd.as_fd(), rel, dir, self.uid) {
            Ok(()) => Ok(()),
            Err(WriteError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Err(RuntimeError::NoSuchBox { id: id.clone() })
            }
            Err(e) => Err(RuntimeError::Box {
                id: id.clone(),
                source: e.into(),
            }),
        }
    }

    /// Writes `state.json` in the current version (a v1 record read
    /// earlier is written back as v2).
    fn write_state(&self, record: &BoxRecord) -> Result<(), RuntimeError> {
        let current = BoxRecord {
            version: state::STATE_VERSION,
            ..record.clone()
        };
        (self.strategies.write_file)(
            &self.layout.box_dir(&record.id),
            layout::STATE,
            &state::format_state(&current),
        )
        .map_err(|source| RuntimeError::Write {
            id: record.id.clone(),
            source,
        })
    }

    /// Spawns the shim for `id`; returns its reaper registration once it
    /// reported ready.
    fn launch_shim(&self, id: &BoxId, config: &ShimConfig) -> Result<Registration, RuntimeError> {
        let host = *self.host()?;
        let dir = self.layout.box_dir(id);
        let writer = ChildRecordWriter::new(
            dir.join(".shim.pid.tmp"),
            dir.join(layout::IDENTITY),
            host.boot_id,
            host.pidfs,
        )
        .map_err(|source| RuntimeError::ShimSpawn {
            path: self.shim_path().to_path_buf(),
            source,
        })?;
        let _ = fswrite::remove_file(&dir.join(".shim.pid.tmp"));
        // cleanup-logs may have removed the log dir of a stopped box.
        match (self.strategies.make_dir)(&self.layout.log_dir(id)) {
            Ok(()) | Err(WriteError::AlreadyExists { .. }) => {}
            Err(source) => {
                return Err(RuntimeError::Write {
                    id: id.clone(),
                    source,
                });
            }
        }
        let log = open_append(&self.layout.log_dir(id).join("shim.log")).map_err(|source| {
            RuntimeError::Write {
                id: id.clone(),
                source: WriteError::Io {
                    path: self.layout.log_dir(id).join("shim.log"),
                    op: "open",
                    source,
                },
            }
        })?;
        let mut cmd = Command::new(self.shim_path());
        {
            use std::os::unix::process::CommandExt;
            cmd.arg0("refbox-shim");
        }
        cmd.args((self.strategies.shim_args)(id, config))
            .current_dir(&dir)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let prepared =
            self.ask_helper(id, &crate::helper::Request::Prepare { id: id.to_string() })?;
        let cgroup_procs = match prepared.and_then(|r| r.cgroup) {
            Some(cg) => {
                let path = cg.join("cgroup.procs");
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|source| RuntimeError::Cgroup {
                        id: id.clone(),
                        path,
                        source,
                    })?;
                Some(f)
            }
            None => None,
        };
        {
            use std::os::fd::AsRawFd;
            crate::sys::install_identity_hook(
                &mut cmd,
                writer,
                cgroup_procs.as_ref().map(|f| f.as_raw_fd()),
            );
        }
        let mut child = cmd.spawn().map_err(|source| RuntimeError::ShimSpawn {
            path: self.shim_path().to_path_buf(),
            source,
        })?;
        let pid = Pid::new(i64::from(child.id())).expect("a child pid is > 1");
        // Pinned before the reaper can reap it: signals below go through this.
        let pidfd =
            rustix::process::pidfd_open(pid.to_rustix(), rustix::process::PidfdFlags::empty())
                .map_err(|e| RuntimeError::ShimSpawn {
                    path: self.shim_path().to_path_buf(),
                    source: e.into(),
                })?;
        let registration =
            self.reaper(id)?
                .register(pid)
                .map_err(|source| RuntimeError::Reaper {
                    id: id.clone(),
                    source,
                })?;
        crate::failpoint::hit("create:after-spawn");
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        drop(child);
        let payload = serde_json::to_vec(config).expect("ShimConfig always serializes");
        // A shim that dies early closes its stdin: the error shows below.
        let _ = stdin.write_all(&payload);
        drop(stdin);
        match read_ready(stdout, SHIM_READY_TIMEOUT) {
            Ok(()) => {
                crate::failpoint::hit("create:after-ready");
                Ok(registration)
            }
            Err(message) => {
                // Through the pidfd: the reaper may already have reaped it.
                let _ = crate::sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
                let status = registration.wait(KILL_WAIT_TIMEOUT);
                let tail =
                    fsread::read_capped(&self.layout.log_dir(id).join("shim.log"), 4096, self.uid)
                        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                        .unwrap_or_default();
                let message = match (message.is_empty(), tail.is_empty()) {
                    (false, _) => message,
                    (true, false) => tail,
                    (true, true) => format!("exited before ready ({status:?})"),
                };
                Err(RuntimeError::ShimFailed {
                    id: id.clone(),
                    message,
                })
            }
        }
    }

    /// `refbox start`: signal a created box's shim to start its payload, or
    /// launch a new shim for a stopped box (its old `exit` becomes
    /// `exit.previous` when the new run ends).
    pub fn start(&self, id: &BoxId, secret: Option<Vec<u8>>) -> Result<(), RuntimeError> {
        let _lock = self.lock_existing(id)?;
        let mut b = self.load(id)?;
        match &b.identity {
            ProcessIdentity::Verified(p) if b.record.phase == Phase::Created => {
                b.record.phase = Phase::Started;
                self.write_state(&b.record)?;
                crate::failpoint::hit("start:after-state");
                let sig = crate::sys::start_signal();
                let pidfd = p.pidfd.as_ref().map(OwnedFd::as_fd);
                let r = match pidfd {
                    Some(fd) => crate::sys::pidfd_send_signal(fd, sig),
                    None => (self.strategies.send_signal)(p, sig),
                };
                r.map_err(|source| RuntimeError::Signal {
                    id: id.clone(),
                    pid: p.pid,
                    source,
                })
            }
            ProcessIdentity::Verified(_) => Err(RuntimeError::AlreadyRunning { id: id.clone() }),
            ProcessIdentity::Legacy { pid, reason } => Err(self.unverifiable(id, *pid, reason)),
            ProcessIdentity::Absent { .. } => {
                b.record.phase = Phase::Started;
                // The identity is absent, so `load` read `exit`: the new
                // shim's box has an earlier exit exactly when this one does.
                b.record.earlier_exits = b.exit.is_some();
                self.write_state(&b.record)?;
                let config = ShimConfig {
                    argv: b.record.argv.clone(),
                    env: b.record.env.clone(),
                    stdin: secret,
                    start_now: true,
                };
                self.launch_shim(id, &config).map(drop)
            }
        }
    }

    fn unverifiable(&self, id: &BoxId, pid: Pid, reason: &str) -> RuntimeError {
        RuntimeError::Unverifiable {
            id: id.clone(),
            pid,
            reason: reason.to_string(),
            dir: self.layout.box_dir(id),
        }
    }

    /// `refbox kill`: signal the verified shim, which forwards catchable
    /// signals to the payload's process group. SIGKILL goes through
    /// `kill_verified` (group kill, exit recorded, then the shim
    /// itself if it lingers). Not running: nothing is signalled.
    pub fn kill(&self, id: &BoxId, sig: i32) -> Result<KillOutcome, RuntimeError> {
        let b = self.load(id)?;
        crate::failpoint::hit("kill:after-verify");
        match &b.identity {
            ProcessIdentity::Verified(p) if sig == libc::SIGKILL => {
                self.kill_verified(id, p)?;
                Ok(KillOutcome::Signalled { pid: p.pid })
            }
            ProcessIdentity::Verified(p) if self.helper.is_some() => {
                let signal = crate::signal::AllowedSignal::from_number(sig)
                    .map_or_else(|| sig.to_string(), |s| s.name().to_string());
                self.ask_helper(
                    id,
                    &crate::helper::Request::Signal {
                        id: id.to_string(),
                        pid: i64::from(p.pid.get()),
                        signal,
                    },
                )?;
                Ok(KillOutcome::Signalled { pid: p.pid })
            }
            ProcessIdentity::Verified(p) => {
                (self.strategies.send_signal)(p, sig).map_err(|source| RuntimeError::Signal {
                    id: id.clone(),
                    pid: p.pid,
                    source,
                })?;
                Ok(KillOutcome::Signalled { pid: p.pid })
            }
            _ => Ok(KillOutcome::NotRunning {
                state: Box::new(b.view()),
            }),
        }
    }

    /// `refbox delete [--force]`: remove a stopped box's files (only the
    /// ones refbox creates). A running box needs `force` (killed as by
    /// `kill KILL`, waiting for death). An unverifiable box is refused.
    pub fn delete(&self, id: &BoxId, force: bool) -> Result<(), RuntimeError> {
        let _lock = self.lock_existing(id)?;
        let b = match self.load(id) {
            Ok(b) => b,
            Err(e) if self.is_half_created(id, &e) => {
                self.remove_box_files(id)?;
                return self.release_cgroup(id);
            }
            Err(e) => return Err(e),
        };
        match &b.identity {
            ProcessIdentity::Verified(p) if !force => {
                return Err(RuntimeError::Running {
                    id: id.clone(),
                    pid: p.pid,
                });
            }
            ProcessIdentity::Verified(p) => {
                self.kill_verified(id, p)?;
                crate::failpoint::hit("delete:after-kill");
            }
            ProcessIdentity::Legacy { pid, reason } => {
                return Err(self.unverifiable(id, *pid, reason));
            }
            ProcessIdentity::Absent { .. } => {}
        }
        self.remove_box_files(id)?;
        self.release_cgroup(id)
    }

    /// With a helper: kill what is left in the box's cgroup and remove it.
    fn release_cgroup(&self, id: &BoxId) -> Result<(), RuntimeError> {
        self.ask_helper(id, &crate::helper::Request::Remove { id: id.to_string() })
            .map(drop)
    }

    /// Kills a verified box: first asks its shim to SIGKILL the payload's
    /// whole process group and record the exit; if the shim is not gone
    /// within [`GROUP_KILL_GRACE`], SIGKILLs the shim itself (PDEATHSIG then
    /// takes the payload). Both through the verified pidfd.
    fn kill_verified(&self, id: &BoxId, p: &VerifiedProcess) -> Result<(), RuntimeError> {
        let send = |sig| {
            (self.strategies.send_signal)(p, sig).map_err(|source| RuntimeError::Signal {
                id: id.clone(),
                pid: p.pid,
                source,
            })
        };
        if self.helper.is_some() {
            // The helper kills the whole cgroup (or, without cgroups, the
            // verified shim; PDEATHSIG takes the payload).
            self.ask_helper(
                id,
                &crate::helper::Request::KillBox {
                    id: id.to_string(),
                    pid: i64::from(p.pid.get()),
                },
            )?;
            return match &p.pidfd {
                Some(fd) if !identity::wait_pidfd(fd, KILL_WAIT_TIMEOUT) => {
                    Err(RuntimeError::StillAlive {
                        id: id.clone(),
                        pid: p.pid,
                    })
                }
                _ => Ok(()),
            };
        }
        let Some(fd) = &p.pidfd else {
            return send(libc::SIGKILL); // a fixture strategy without a pidfd
        };
        send(crate::sys::group_kill_signal())?;
        crate::failpoint::hit("kill:after-group-kill");
        if identity::wait_pidfd(fd, GROUP_KILL_GRACE) {
            return Ok(());
        }
        send(libc::SIGKILL)?;
        if identity::wait_pidfd(fd, KILL_WAIT_TIMEOUT) {
            Ok(())
        } else {
            Err(RuntimeError::StillAlive {
                id: id.clone(),
                pid: p.pid,
            })
        }
    }

    /// A create killed between mkdir and writing `state.json` leaves a box
    /// dir with neither `state.json` nor `shim.pid`: nothing can be running.
    fn is_half_created(&self, id: &BoxId, e: &RuntimeError) -> bool {
        let dir = self.layout.box_dir(id);
        matches!(e, RuntimeError::Box { source: BoxError::Read(r), .. }
            if r.is_not_found() && r.path() == dir.join(layout::STATE))
            && matches!(
                rustix::fs::lstat(dir.join(layout::IDENTITY)),
                Err(rustix::io::Errno::NOENT)
            )
    }

    /// Removes the files refbox creates in a box dir, then the dir. Anything
    /// else in it (a plant, a user's file) is left, and the dir with it.
    fn remove_box_files(&self, id: &BoxId) -> Result<(), RuntimeError> {
        let dir = self.layout.box_dir(id);
        let log = self.layout.log_dir(id);
        let werr = |source| RuntimeError::Write {
            id: id.clone(),
            source,
        };
        remove_log_dir(&log).map_err(werr)?;
        remove_own_temp_files(&dir).map_err(werr)?;
        // state.json goes last: a delete killed half-way leaves a box that
        // still loads (identity absent → stopped) and can be deleted again.
        // `exit.previous` before `exit`: `load` reads it only when `exit`
        // exists, so an interrupted delete must not leave it alone.
        for name in [
            ".shim.pid.tmp",
            layout::IDENTITY,
            layout::EXIT_PREVIOUS,
            layout::EXIT,
            layout::STATE,
        ] {
            if name == layout::STATE {
                crate::failpoint::hit("delete:mid-remove");
            }
            fswrite::remove_file(&dir.join(name)).map_err(werr)?;
        }
        remove_dir_or_report(&dir)
    }

    /// `refbox recover`: classify every box in one pass (on several threads
    /// when there are many, like [`Runtime::list`]; each box under its lock).
    pub fn recover(&self) -> RecoverReport {
        let mut report = RecoverReport::default();
        let ids = self.box_ids(&mut report.errors);
        let results = map_boxes(&ids, |id| {
            self.recover_one(id).map_err(|e| entry_error(self, id, &e))
        });
        for r in results {
            match r {
                Ok(b) => report.boxes.push(b),
                Err(e) => report.errors.push(e),
            }
        }
        report
    }

    fn recover_one(&self, id: &BoxId) -> Result<RecoveredBox, RuntimeError> {
        // Only a box about to be marked stopped is locked.
        let (b, _lock) = self.look_then_lock(
            id,
            || self.load(id),
            |b| {
                b.as_ref().is_ok_and(|b| {
                    b.record.phase != Phase::Stopped
                        && matches!(b.identity, ProcessIdentity::Absent { .. })
                })
            },
        )?;
        let mut b = b?;
        let view = b.view();
        let (action, detail) = match &b.identity {
            ProcessIdentity::Verified(_) => (RecoverAction::Adopted, "verified".to_string()),
            ProcessIdentity::Legacy { reason, .. } => (RecoverAction::KeptUnknown, reason.clone()),
            ProcessIdentity::Absent { reason, .. } if b.record.phase != Phase::Stopped => {
                b.record.phase = Phase::Stopped;
                crate::failpoint::hit("recover:before-write");
                self.write_state(&b.record)?;
                (RecoverAction::MarkedStopped, reason.to_string())
            }
            ProcessIdentity::Absent { reason, .. } => (RecoverAction::Stopped, reason.to_string()),
        };
        Ok(RecoveredBox {
            id: id.to_string(),
            action,
            pid: view.pid,
            status: view.status,
            detail,
        })
    }

    /// `refbox cleanup-logs`: remove log dirs whose owner is dead or
    /// recycled; keep live ones; leave unreadable sentinels alone. Boxes are
    /// judged on threads as in [`Self::list`]; the report is in box-id order.
    /// A dir is removed under its box's lock, after a second look.
    pub fn cleanup_logs(&self) -> CleanupReport {
        let mut report = CleanupReport::default();
        let ids = self.box_ids(&mut report.errors);
        for r in map_boxes(&ids, |id| self.cleanup_log(id))
            .into_iter()
            .flatten()
        {
            match r {
                Ok(c) => report.boxes.push(c),
                Err(e) => report.errors.push(e),
            }
        }
        report
    }

    /// One box of [`Self::cleanup_logs`]; `None` when it has no log dir
    /// (or no sentinel in it) to judge.
    fn cleanup_log(&self, id: &BoxId) -> Option<Result<CleanedLog, EntryError>> {
        let log = self.layout.log_dir(id);
        rustix::fs::lstat(&log).ok()?;
        let path = log.join(layout::SENTINEL);
        let judge =
            || sentinel::check(&path, self.uid).map(|(s, v)| self.confirm_keep(id, s.pid(), v));
        // A log dir is removed only under the box lock: a `start` holding
        // it may have a new shim that has written a new sentinel (a shim
        // writes it before it says ready, and `start` holds the lock until
        // then).
        let (checked, _lock) =
            match self.look_then_lock(id, judge, |c| matches!(c, Ok(Verdict::Remove(_)))) {
                Ok(looked) => looked,
                Err(RuntimeError::NoSuchBox { .. }) => return None,
                Err(e) => {
                    return Some(Err(EntryError {
                        id: Some(id.to_string()),
                        path: log,
                        error: chain(&e),
                    }));
                }
            };
        let cleaned = |action, reason| CleanedLog {
            id: id.to_string(),
            action,
            reason,
        };
        let error = |path, error| EntryError {
            id: Some(id.to_string()),
            path,
            error,
        };
        Some(match checked {
            Ok(Verdict::Remove(reason)) => match remove_log_dir(&log) {
                Ok(()) => Ok(cleaned(CleanupAction::Removed, reason)),
                Err(e) => Err(error(log, chain(&e))),
            },
            Ok(Verdict::Keep(reason)) => Ok(cleaned(CleanupAction::Kept, reason)),
            Err(sentinel::SentinelCheckError::Read(e)) if e.is_not_found() => return None,
            Err(e) => Err(error(path, chain(&e))),
        })
    }

    /// A sentinel whose pid is alive with the same exe could still be a
    /// recycled pid taken by another shim: when the box's own identity
    /// record names that pid and does not verify, the owner is gone.
    fn confirm_keep(&self, id: &BoxId, pid: Pid, verdict: Verdict) -> Verdict {
        let Verdict::Keep(reason) = verdict else {
            return verdict;
        };
        match self.load(id) {
            Ok(LoadedBox {
                identity:
                    ProcessIdentity::Absent {
                        pid: Some(p),
                        reason: why,
                    },
                ..
            }) if p == pid => Verdict::Remove(format!(
                "owner-recycled pid={pid}: same exe, but the box's identity record does not verify ({why})"
            )),
            _ => Verdict::Keep(reason),
        }
    }

    /// Waits until a box is no longer running (for attached `run`).
    pub fn wait_stopped(&self, id: &BoxId) -> Result<BoxState, RuntimeError> {
        let b = self.load(id)?;
        if let ProcessIdentity::Verified(p) = &b.identity {
            if let Some(fd) = &p.pidfd {
                while !identity::wait_pidfd(fd, Duration::from_secs(3600)) {}
            }
        }
        self.state(id)
    }
}

/// `f` over every id, in order, on up to [`LIST_THREADS`] threads (one per
/// [`LIST_BOXES_PER_THREAD`] boxes): a box costs a dozen independent
/// syscalls, so a large root is read in parallel. Every thread, the caller
/// included, takes the next box from a shared counter until none is left,
/// so a thread that starts late (≈ 0.1 ms to wake an idle CPU on a VM) or
/// meets slow boxes simply takes fewer.
///
/// Where the threads run matters as much as how many there are: a new
/// thread is often queued on its spawner's CPU, and an idle CPU nearby does
/// not pull it over for a millisecond or more (measured on 2 vCPUs: the
/// second of two threads started when the first had finished, so a
/// 100-box `list` ran serially). So the spawner yields once, letting a
/// thread queued behind it run at once, and each new thread that finds
/// itself on the spawner's CPU moves itself to the others first
/// ([`leave_cpu`]).
fn map_boxes<T: Send>(ids: &[BoxId], f: impl Fn(&BoxId) -> T + Sync) -> Vec<T> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = usable_cpus()
        .min(LIST_THREADS)
        .min(ids.len() / LIST_BOXES_PER_THREAD)
        .max(1);
    if threads == 1 {
        return ids.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let take = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(id) = ids.get(i) else {
                return done;
            };
            done.push((i, f(id)));
        }
    };
    let take = &take;
    let spawner_cpu = rustix::thread::sched_getcpu();
    let mut done = std::thread::scope(|s| {
        let others: Vec<_> = (1..threads)
            .map(|_| {
                s.spawn(move || {
                    if rustix::thread::sched_getcpu() == spawner_cpu {
                        leave_cpu(spawner_cpu);
                    }
                    take()
                })
            })
            .collect();
        rustix::thread::sched_yield();
        let mut done = take();
        for h in others {
            done.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        done
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, t)| t).collect()
}

/// Moves the calling thread off `cpu` (to the other CPUs it may use), if
/// there are others; a refused `sched_setaffinity` only costs parallelism.
fn leave_cpu(cpu: usize) {
    use rustix::thread::{sched_getaffinity, sched_setaffinity};
    if let Ok(mut set) = sched_getaffinity(None) {
        set.unset(cpu);
        if set.count() > 0 {
            let _ = sched_setaffinity(None, &set);
        }
    }
}

/// CPUs this process may run on, from its affinity mask: one syscall,
/// where `std::thread::available_parallelism` also reads the cgroup's CPU
/// quota (about 20 syscalls on a cgroup v1 host, on every `list`).
fn usable_cpus() -> usize {
    rustix::thread::sched_getaffinity(None).map_or(1, |set| set.count() as usize)
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Whether `name` is a temp file of [`fswrite::write_atomic`] for one of
/// refbox's own files (`.<name>.tmp.<pid>`), left by a writer that was killed.
fn is_own_temp(name: &str) -> bool {
    let own = [
        layout::STATE,
        layout::IDENTITY,
        layout::EXIT,
        layout::EXIT_PREVIOUS,
        layout::SENTINEL,
    ];
    name.strip_prefix('.')
        .and_then(|rest| rest.split_once(".tmp"))
        .is_some_and(|(base, tail)| {
            own.contains(&base)
                && (tail.is_empty()
                    || tail
                        .strip_prefix('.')
                        .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit())))
        })
}

/// Removes refbox's own stale temp files in `dir`.
fn remove_own_temp_files(dir: &Path) -> Result<(), WriteError> {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_str().is_some_and(is_own_temp) {
            fswrite::remove_file(&e.path())?;
        }
    }
    Ok(())
}

/// Removes a log dir's known files, then the dir (if only those were there).
fn remove_log_dir(log: &Path) -> Result<(), WriteError> {
    for name in [layout::SENTINEL, layout::OUTPUT, "shim.log"] {
        fswrite::remove_file(&log.join(name))?;
    }
    remove_own_temp_files(log)?;
    fswrite::remove_dir(log)
}

fn remove_dir_or_report(dir: &Path) -> Result<(), RuntimeError> {
    match rustix::fs::unlinkat(rustix::fs::CWD, dir, rustix::fs::AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(rustix::io::Errno::NOTEMPTY) => {
            let entries: Vec<String> = std::fs::read_dir(dir)
                .map(|r| {
                    r.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            Err(RuntimeError::Foreign {
                path: dir.to_path_buf(),
                entries: entries.join(", "),
            })
        }
        Err(e) => Err(RuntimeError::Foreign {
            path: dir.to_path_buf(),
            entries: format!("rmdir failed: {e}"),
        }),
    }
}

/// Reads the shim's ready line (poll with a deadline, so a stuck shim
/// cannot hang `create`). Err carries what the shim said, if anything.
fn read_ready(stdout: std::process::ChildStdout, timeout: Duration) -> Result<(), String> {
    use rustix::event::{PollFd, PollFlags};
    let deadline = std::time::Instant::now() + timeout;
    let mut stdout = stdout;
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(format!("no ready message within {timeout:?}"));
        }
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&stdout, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let mut chunk = [0u8; 512];
        let n = stdout.read(&mut chunk).map_err(|e| e.to_string())?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            return if line == "ready" {
                Ok(())
            } else {
                Err(line.strip_prefix("error: ").unwrap_or(&line).to_string())
            };
        }
        if n == 0 || buf.len() > 4096 {
            return Err(String::from_utf8_lossy(&buf).trim().to_string());
        }
    }
}

/// An error and its sources, `outer: inner: ...`, on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn entry_error(rt: &Runtime, id: &BoxId, e: &RuntimeError) -> EntryError {
    let path = match e {
        RuntimeError::Box { source, .. } => source.path(),
        _ => rt.layout.box_dir(id),
    };
    EntryError {
        id: Some(id.to_string()),
        path,
        error: chain(e),
    }
}

#[cfg(test)]
mod tests {
    use super::is_own_temp;

    #[test]
    fn list_and_cleanup_on_threads_keep_order_and_errors() {
        use crate::state::{BoxRecord, Phase, STATE_VERSION, format_state};
        use crate::{BoxId, Runtime, Strategies, fswrite};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let rt = Runtime::open(&root, Strategies::default()).unwrap();
        // Enough boxes for several threads; no shim.pid, so each is stopped.
        let n = 3 * super::LIST_BOXES_PER_THREAD + 5;
        for i in (0..n).rev() {
            let id = BoxId::new(&format!("b{i:04}")).unwrap();
            let bdir = root.join(id.as_str());
            fswrite::create_private_dir(&bdir).unwrap();
            let rec = BoxRecord {
                version: STATE_VERSION,
                id,
                phase: Phase::Started,
                argv: vec!["true".into()],
                env: vec![],
                created_unix_ms: 0,
                earlier_exits: false,
            };
            fswrite::write_atomic(&bdir, crate::layout::STATE, &format_state(&rec)).unwrap();
        }
        // One unreadable box among them.
        fswrite::create_private_dir(&root.join("b0100x")).unwrap();
        let r = rt.list();
        let ids: Vec<String> = r.boxes.iter().map(|b| b.id.clone()).collect();
        let want: Vec<String> = (0..n).map(|i| format!("b{i:04}")).collect();
        assert_eq!(ids, want);
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert_eq!(r.errors[0].id.as_deref(), Some("b0100x"));

        // cleanup-logs runs on the same threads: every other box gets a log
        // dir whose sentinel names a live pid (this test's) under another
        // exe, as a recycled shim pid would look, and one a garbage sentinel.
        let pid = crate::Pid::new(i64::from(std::process::id())).unwrap();
        let mut removed = Vec::new();
        for i in (0..n).step_by(2) {
            let id = BoxId::new(&format!("b{i:04}")).unwrap();
            let log = rt.layout().log_dir(&id);
            fswrite::create_private_dir(&log).unwrap();
            let bytes = if i == 6 {
                b"not a pid\n".to_vec()
            } else {
                removed.push(id.to_string());
                crate::sentinel::format_sentinel(pid, b"/nonexistent/refbox-shim")
            };
            fswrite::write_atomic(&log, crate::layout::SENTINEL, &bytes).unwrap();
        }
        let r = rt.cleanup_logs();
        let ids: Vec<String> = r.boxes.iter().map(|b| b.id.clone()).collect();
        assert_eq!(ids, removed);
        assert!(
            r.boxes
                .iter()
                .all(|b| b.action == crate::status::CleanupAction::Removed),
            "{:?}",
            r.boxes
        );
        let errors: Vec<_> = r.errors.iter().map(|e| e.id.as_deref()).collect();
        assert_eq!(errors, [Some("b0006")], "{:?}", r.errors);
        assert!(root.join("b0006/log").exists() && !root.join("b0008/log").exists());
    }

    #[test]
    fn own_temp_names() {
        for yes in [
            ".state.json.tmp.42",
            ".exit.tmp.7",
            ".exit.previous.tmp.3",
            ".shim.pid.tmp",
            "..sentinel.tmp.1",
        ] {
            assert!(is_own_temp(yes), "{yes}");
        }
        for no in [
            "state.json",
            ".state.json.tmp.x",
            ".foo.tmp.1",
            ".state.json.tmpx",
            "planted",
        ] {
            assert!(!is_own_temp(no), "{no}");
        }
    }
}
