//! A case's stage: one world, the runtime driven through its adapter inside
//! it, and the tools cases use (impostors, plants, census, record
//! rewrites). Everything a case does goes through a [`Scene`]; the world
//! ends when the scene is dropped.

use std::fmt;
use std::ops::ControlFlow;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use doppel_harness::poll;

use crate::adapter::{Adapter, ObservedState, Operation, Status, Vars, record_get, record_set};
use crate::catalog::{Case, Halt, NotStaged};
use crate::runner::Subject;
use crate::world::World;

pub use crate::world::{Census, Impostor, ImpostorKind, ImpostorReport, Machine, Plant, Proc};

/// How long one runtime command may take before it is killed and reported
/// as hung, unless `DOPPEL_COMMAND_DEADLINE_MS` says otherwise.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(10);
/// Environment variable overriding [`COMMAND_DEADLINE`] (milliseconds).
pub const COMMAND_DEADLINE_ENV: &str = "DOPPEL_COMMAND_DEADLINE_MS";

/// The deadline in force for runtime commands ([`COMMAND_DEADLINE`] unless
/// [`COMMAND_DEADLINE_ENV`] sets one; `doppel` refuses a bad value at
/// start, see [`command_deadline_setting`]).
pub fn command_deadline() -> Duration {
    command_deadline_setting().unwrap_or(COMMAND_DEADLINE)
}

/// The most [`COMMAND_DEADLINE_ENV`] may ask for: one hour.
const MAX_COMMAND_DEADLINE_MS: u64 = 3_600_000;

/// The deadline [`COMMAND_DEADLINE_ENV`] asks for, or why it is not one
/// (whole milliseconds, 1 to 3 600 000).
pub fn command_deadline_setting() -> Result<Duration, String> {
    let Some(v) = std::env::var_os(COMMAND_DEADLINE_ENV) else {
        return Ok(COMMAND_DEADLINE);
    };
    let bad = || {
        format!(
            "{COMMAND_DEADLINE_ENV}={}: not a deadline (whole milliseconds, 1 to {MAX_COMMAND_DEADLINE_MS})",
            v.to_string_lossy()
        )
    };
    let ms: u64 = v
        .to_str()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(bad)?;
    if ms == 0 || ms > MAX_COMMAND_DEADLINE_MS {
        return Err(bad());
    }
    Ok(Duration::from_millis(ms))
}
/// How long a box may take to reach a status the case waits for.
pub const STATUS_DEADLINE: Duration = Duration::from_secs(10);

/// Which adapter file template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `files.box_dir`.
    BoxDir,
    /// `files.state`.
    State,
    /// `identity.file`.
    Identity,
    /// `files.exit`.
    Exit,
    /// `files.exit_previous`.
    ExitPrevious,
    /// `files.sentinel`.
    Sentinel,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::BoxDir => "box_dir",
            FileKind::State => "state",
            FileKind::Identity => "identity",
            FileKind::Exit => "exit",
            FileKind::ExitPrevious => "exit_previous",
            FileKind::Sentinel => "sentinel",
        })
    }
}

/// One runtime command, as run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The argv.
    pub argv: Vec<String>,
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal, when killed.
    pub signal: Option<i32>,
    /// stdout, lossy UTF-8.
    pub stdout: String,
    /// stderr, lossy UTF-8.
    pub stderr: String,
    /// Killed at [`COMMAND_DEADLINE`].
    pub timed_out: bool,
    /// Wall time.
    pub elapsed: Duration,
}

impl Run {
    /// Exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Crashed: a Rust panic (exit 101 or "panicked at" on stderr), or killed
    /// by a signal other than the deadline's.
    pub fn crashed(&self) -> bool {
        self.code == Some(101)
            || self.stderr.contains("panicked at")
            || (self.signal.is_some() && !self.timed_out)
    }

    /// One line for evidence.
    pub fn summary(&self) -> String {
        let end = match (self.code, self.signal, self.timed_out) {
            (_, _, true) => format!(
                "killed at the {} ms deadline",
                command_deadline().as_millis()
            ),
            (Some(c), _, _) => format!("exit {c}"),
            (_, Some(s), _) => format!("killed by signal {s}"),
            _ => "?".into(),
        };
        let clip = |s: &str| {
            let s = s.trim();
            if s.len() > 300 {
                let mut cut = 300;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("{}…", &s[..cut])
            } else {
                s.to_string()
            }
        };
        format!(
            "`{}` → {end}; stdout {:?}; stderr {:?}",
            self.argv.join(" "),
            clip(&self.stdout),
            clip(&self.stderr)
        )
    }
}

/// An identity record being rewritten.
#[derive(Debug)]
pub struct RecordEdit<'a> {
    text: String,
    rec: &'a crate::adapter::IdentityRecord,
    missing: Option<String>,
}

impl RecordEdit<'_> {
    fn set(&mut self, key: &str, loc: Option<&crate::adapter::Locator>, value: &str) {
        match loc.and_then(|l| record_set(self.rec.format, &self.text, l, value)) {
            Some(t) => self.text = t,
            None => self.missing = Some(format!("cannot set identity.{key} in the record")),
        }
    }

    /// Sets the pid.
    pub fn pid(&mut self, pid: &str) {
        let loc = self.rec.pid.clone();
        self.set("pid", Some(&loc), pid);
    }

    /// Sets the start time.
    pub fn start_time(&mut self, ticks: u64) {
        let loc = self.rec.start_time.clone();
        self.set("start_time", loc.as_ref(), &ticks.to_string());
    }

    /// Sets the boot id.
    pub fn boot_id(&mut self, id: &str) {
        let loc = self.rec.boot_id.clone();
        self.set("boot_id", loc.as_ref(), id);
    }
}

/// One case's stage.
#[derive(Debug)]
pub struct Scene<'a> {
    adapter: &'a Adapter,
    bindir: Option<String>,
    root: String,
    world: World,
    /// After `world`: dropped once the world (and every process) is gone.
    bundles: crate::oci::Bundles,
    /// After `world`: a cgroup2 dir for the helper's boxes, made on demand.
    cgroup: Option<crate::cgroup::CgroupDir>,
    transcript: Vec<String>,
    secret: Option<String>,
    probes: usize,
    /// How the scene was staged, when the report should say (e.g. record rewrite).
    pub staging: Option<String>,
    /// The runtime's daemon, when the adapter declares one.
    pub(crate) daemons: crate::supervisor::Daemons,
}

impl<'a> Scene<'a> {
    /// Opens a fresh world for `case`.
    pub fn open(_case: &Case, subject: &'a Subject) -> Result<Scene<'a>, NotStaged> {
        Self::open_subject(subject)
    }

    /// Opens a fresh world for `subject` outside any case (`doppel bench`).
    pub fn open_subject(subject: &'a Subject) -> Result<Scene<'a>, NotStaged> {
        let world = World::open_with(subject.adapter.world)?;
        let root = format!("{}/root", world.dir().trim_end_matches('/'));
        Ok(Scene {
            adapter: &subject.adapter,
            bindir: subject
                .bindir
                .as_ref()
                .ok()
                .map(|p| p.display().to_string()),
            root,
            world,
            bundles: crate::oci::Bundles::default(),
            cgroup: None,
            transcript: Vec::new(),
            secret: None,
            probes: 0,
            staging: None,
            daemons: Default::default(),
        })
    }

    /// Another scene for the same runtime in a fresh world of its own, so a
    /// long case can work on several worlds at once (one per thread); with
    /// the runtime's daemon started there too.
    pub fn sibling(&self) -> Result<Scene<'a>, Halt> {
        let world = World::open_with(self.adapter.world)?;
        let root = format!("{}/root", world.dir().trim_end_matches('/'));
        let mut sibling = Scene {
            adapter: self.adapter,
            bindir: self.bindir.clone(),
            root,
            world,
            bundles: crate::oci::Bundles::default(),
            cgroup: None,
            transcript: Vec::new(),
            secret: None,
            probes: 0,
            staging: None,
            daemons: Default::default(),
        };
        sibling.ensure_daemon()?;
        Ok(sibling)
    }

    /// The runtime's state root (world path).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The commands run so far, with their outcomes, for evidence.
    pub fn transcript(&self) -> Vec<String> {
        self.transcript.clone()
    }

    /// Runs any command in the scene's world, as runtime commands are run
    /// (`doppel bench` measures the harness's round trip with `/bin/true`).
    pub fn run_command(&mut self, argv: &[&str]) -> Result<Run, NotStaged> {
        self.exec(argv.iter().map(|s| s.to_string()).collect(), &[])
    }

    fn exec(&mut self, argv: Vec<String>, stdin: &[u8]) -> Result<Run, NotStaged> {
        self.exec_env(argv, &[], stdin)
    }

    fn exec_env(
        &mut self,
        argv: Vec<String>,
        env: &[(String, String)],
        stdin: &[u8],
    ) -> Result<Run, NotStaged> {
        let start = Instant::now();
        let e = self.world.exec(&argv, env, stdin, command_deadline())?;
        let run = Run {
            argv,
            code: e.code,
            signal: e.signal,
            stdout: String::from_utf8_lossy(&e.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&e.stderr).into_owned(),
            timed_out: e.timed_out,
            elapsed: start.elapsed(),
        };
        self.transcript.push(format!("ran {}", run.summary()));
        Ok(run)
    }

    fn expand(
        &mut self,
        op: Operation,
        root: &str,
        id: Option<&str>,
        payload: &[&str],
        signal: Option<&str>,
        secret_file: Option<&str>,
    ) -> Result<Vec<String>, NotStaged> {
        let adapter = self.adapter;
        let t = adapter
            .command(op)
            .ok_or_else(|| NotStaged(format!("adapter declares no commands.{op}")))?;
        let payload: Vec<String> = payload.iter().map(|s| s.to_string()).collect();
        // Payload mode oci-bundle: a bundle per box, its process the payload.
        let bundle = match (t.uses("bundle"), id) {
            (true, Some(id)) => {
                let world = &self.world;
                Some(
                    self.bundles
                        .build(world.dir(), |p| world.host_path(p), root, id, &payload)?,
                )
            }
            _ => None,
        };
        let vars = Vars {
            root: Some(root),
            id,
            bundle: bundle.as_deref(),
            signal,
            secret_file,
            bindir: self.bindir.as_deref(),
            payload: Some(&payload),
            ..Vars::default()
        };
        t.expand(&vars).map_err(NotStaged::from)
    }

    /// A cgroup2 dir this scene owns (created on first use; killed and
    /// removed when the scene ends), or why there is none.
    pub fn cgroup_root(&mut self) -> Result<String, String> {
        if std::env::var_os(crate::cgroup::NO_CGROUP_ENV).is_some() {
            return Err(format!(
                "cgroups disabled by {}",
                crate::cgroup::NO_CGROUP_ENV
            ));
        }
        if self.cgroup.is_none() {
            self.cgroup = Some(crate::cgroup::CgroupDir::create()?);
        }
        Ok(self
            .cgroup
            .as_ref()
            .map(|c| c.path().display().to_string())
            .unwrap_or_default())
    }

    /// An impostor of `kind` at a PID of the kernel's choosing.
    pub fn impostor_anywhere(&mut self, kind: ImpostorKind) -> Result<Impostor, NotStaged> {
        let imp = self.world.impostor(None, &kind)?;
        self.transcript
            .push(format!("placed {kind:?} impostor at pid {}", imp.pid));
        Ok(imp)
    }

    /// Cgroup dirs (host paths) the runtime left for box `id`, when the
    /// suite gave its bundles a `cgroupsPath` (payload mode `oci-bundle`).
    pub fn leftover_cgroups(&self, id: &str) -> Vec<PathBuf> {
        self.bundles.existing_cgroups_of(id)
    }

    /// The adapter driving this scene.
    pub fn adapter(&self) -> &'a Adapter {
        self.adapter
    }

    /// Expands any template of the adapter (e.g. `[helper]` ones) with this
    /// scene's `{root}` and `{bindir}` plus `extra` (its `root`/`bindir` are
    /// ignored).
    pub fn expand_template(
        &self,
        t: &crate::adapter::Template,
        extra: &Vars<'_>,
    ) -> Result<Vec<String>, NotStaged> {
        let vars = Vars {
            root: Some(&self.root),
            bindir: self.bindir.as_deref(),
            ..extra.clone()
        };
        t.expand(&vars).map_err(NotStaged::from)
    }

    /// Runs an expanded argv in the world (deadline [`command_deadline`]),
    /// with extra environment variables; recorded in the transcript.
    pub fn exec_argv(
        &mut self,
        argv: Vec<String>,
        env: &[(String, String)],
    ) -> Result<Run, NotStaged> {
        self.exec_env(argv, env, &[])
    }

    /// Runs one adapter operation with extra environment variables (e.g. a
    /// failpoint). `signal` is used by `kill`.
    pub fn op_env(
        &mut self,
        op: Operation,
        id: &str,
        payload: &[&str],
        signal: Option<&str>,
        env: &[(String, String)],
    ) -> Result<Run, NotStaged> {
        let root = self.root.clone();
        let argv = self.expand(op, &root, Some(id), payload, signal, None)?;
        self.exec_env(argv, env, &[])
    }

    /// Runs one adapter operation under the crash wrapper (this executable,
    /// re-run in the world), which SIGKILLs it `delay_us` µs after its exec
    /// (µs resolution; the harness's own crash timer counts milliseconds).
    /// `None` delay: not killed, only timed.
    pub fn op_crash(
        &mut self,
        op: Operation,
        id: &str,
        payload: &[&str],
        signal: Option<&str>,
        delay_us: Option<u64>,
    ) -> Result<(Run, crate::world::CrashEnd), NotStaged> {
        let root = self.root.clone();
        let argv = self.expand(op, &root, Some(id), payload, signal, None)?;
        let exe = std::env::current_exe()
            .map_err(|e| NotStaged(format!("cannot find this executable: {e}")))?;
        self.probes += 1;
        let out = self.outside_path(&format!("crash{}", self.probes));
        let wrapped: Vec<String> = std::iter::once(exe.display().to_string())
            .chain(argv.iter().cloned())
            .collect();
        let env = [
            (crate::world::CRASH_OUT_ENV.to_string(), out.clone()),
            (
                crate::world::CRASH_AFTER_ENV.to_string(),
                delay_us.map_or("never".to_string(), |d| d.to_string()),
            ),
        ];
        let start = Instant::now();
        let e = self.world.exec(&wrapped, &env, &[], command_deadline())?;
        let text = self.read(&out).unwrap_or_default();
        let end =
            crate::world::CrashEnd::parse(&String::from_utf8_lossy(&text)).ok_or_else(|| {
                NotStaged(format!(
                    "the crash wrapper left no report (exit {:?}, stderr {:?})",
                    e.code,
                    String::from_utf8_lossy(&e.stderr)
                ))
            })?;
        let run = Run {
            argv,
            code: end.code,
            signal: end.signal,
            stdout: String::from_utf8_lossy(&e.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&e.stderr).into_owned(),
            timed_out: e.timed_out,
            elapsed: start.elapsed(),
        };
        self.transcript.push(format!(
            "ran {} (crash at {} µs: {})",
            run.summary(),
            delay_us.map_or("never".to_string(), |d| d.to_string()),
            if end.killed {
                "killed"
            } else {
                "finished first"
            }
        ));
        Ok((run, end))
    }

    /// Starts a long-lived process in the world and returns its PID (it
    /// ends with the world).
    pub fn spawn_background(&mut self, argv: &[String]) -> Result<i32, NotStaged> {
        let pid = self.world.spawn(argv)?;
        self.transcript
            .push(format!("started `{}` as pid {pid}", argv.join(" ")));
        Ok(pid)
    }

    /// How a process from [`Scene::spawn_background`] ended (`None`
    /// while it runs).
    pub fn background_exit(&mut self, pid: i32) -> Result<Option<crate::world::Exec>, NotStaged> {
        Ok(self.world.exit_of(pid)?)
    }

    /// Forgets transcript lines beyond the first `keep` (long sweeps keep
    /// only what their evidence needs).
    pub fn truncate_transcript(&mut self, keep: usize) {
        self.transcript.truncate(keep);
    }

    /// The number of transcript lines so far.
    pub fn transcript_len(&self) -> usize {
        self.transcript.len()
    }

    /// Host path of a world path (for polling files the runtime creates).
    pub fn host_path_of(&self, world_path: &str) -> Result<PathBuf, NotStaged> {
        self.host(world_path)
    }

    /// Runs one adapter operation. `payload` is used by create/run.
    pub fn op(
        &mut self,
        op: Operation,
        id: Option<&str>,
        payload: &[&str],
    ) -> Result<Run, NotStaged> {
        let root = self.root.clone();
        let argv = self.expand(op, &root, id, payload, None, None)?;
        self.exec(argv, &[])
    }

    /// Runs one adapter operation under the rusage wrapper (this executable,
    /// re-run in the world) and returns the runtime's peak RSS in KiB too.
    pub fn op_rss(
        &mut self,
        op: Operation,
        id: Option<&str>,
    ) -> Result<(Run, Option<u64>), NotStaged> {
        let root = self.root.clone();
        let argv = self.expand(op, &root, id, &[], None, None)?;
        let exe = std::env::current_exe()
            .map_err(|e| NotStaged(format!("cannot find this executable: {e}")))?;
        self.probes += 1;
        let out = self.outside_path(&format!("rusage{}", self.probes));
        let wrapped: Vec<String> = std::iter::once(exe.display().to_string())
            .chain(argv.iter().cloned())
            .collect();
        let env = [(crate::world::RUSAGE_OUT_ENV.to_string(), out.clone())];
        let mut run = self.exec_env(wrapped, &env, &[])?;
        run.argv = argv;
        let usage = self
            .read(&out)
            .ok()
            .and_then(|b| crate::world::Rusage::parse(&String::from_utf8_lossy(&b)));
        if let Some(u) = usage {
            run.code = u.code;
            run.signal = u.signal;
        }
        Ok((run, usage.map(|u| u.maxrss_kib)))
    }

    /// `kill ID SIGNAL`.
    pub fn kill(&mut self, id: &str, signal: &str) -> Result<Run, NotStaged> {
        let root = self.root.clone();
        let argv = self.expand(Operation::Kill, &root, Some(id), &[], Some(signal), None)?;
        self.exec(argv, &[])
    }

    /// `delete ID` or `delete --force ID`.
    pub fn delete(&mut self, id: &str, force: bool) -> Result<Run, NotStaged> {
        let op = if force {
            Operation::DeleteForce
        } else {
            Operation::Delete
        };
        self.op(op, Some(id), &[])
    }

    /// Creates and starts a box: `run` if declared, else `create` + `start`.
    pub fn run_box(&mut self, id: &str, payload: &[&str]) -> Result<Run, NotStaged> {
        let root = self.root.clone();
        self.run_box_in_root(&root, id, payload)
    }

    /// Like [`Scene::run_box`] with another state root.
    pub fn run_box_in_root(
        &mut self,
        root: &str,
        id: &str,
        payload: &[&str],
    ) -> Result<Run, NotStaged> {
        let before = self.oci_census()?;
        if self.adapter.has(Operation::Run) {
            let argv = self.expand(Operation::Run, root, Some(id), payload, None, None)?;
            let run = self.exec(argv, &[])?;
            self.settle_oci(&run, before)?;
            return Ok(run);
        }
        let argv = self.expand(Operation::Create, root, Some(id), payload, None, None)?;
        let c = self.exec(argv, &[])?;
        if !c.success() {
            return Ok(c);
        }
        let argv = self.expand(Operation::Start, root, Some(id), &[], None, None)?;
        let run = self.exec(argv, &[])?;
        self.settle_oci(&run, before)?;
        Ok(run)
    }

    /// Payload mode oci-bundle: the world's pids before a box is started.
    fn oci_census(&mut self) -> Result<Option<Vec<i32>>, NotStaged> {
        if self.adapter.payload != crate::adapter::PayloadMode::OciBundle {
            return Ok(None);
        }
        Ok(Some(self.census()?.procs.iter().map(|p| p.pid).collect()))
    }

    /// Payload mode oci-bundle: once `run`/`start` returned, waits (deadline)
    /// until the runtime's own new processes are gone from the world (runc's
    /// `runc init` until it execs the payload, crun's intermediate until it
    /// exits), so a scene starts from the box as the runtime left it rather
    /// than racing the runtime's last steps. What outlives the deadline is
    /// noted in the transcript.
    fn settle_oci(&mut self, run: &Run, before: Option<Vec<i32>>) -> Result<(), NotStaged> {
        let (Some(before), Some(argv0)) = (before, run.argv.first().cloned()) else {
            return Ok(());
        };
        if !run.success() {
            return Ok(());
        }
        let start = Instant::now();
        let settled = poll::until(
            crate::oci::SETTLE_DEADLINE,
            Duration::from_millis(2),
            || {
                let census = self.census()?;
                let left = crate::oci::runtime_processes(&census.procs, &argv0, &before);
                Ok::<_, NotStaged>(if left.is_empty() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(left)
                })
            },
        )?;
        if let Err(left) = settled {
            self.transcript.push(format!(
                "the runtime's own processes were still there {} ms after its command returned: {}",
                start.elapsed().as_millis(),
                left.join(", ")
            ));
        }
        Ok(())
    }

    /// [`Scene::run_box`] that must succeed (else the scene is not staged).
    /// Success is only the runtime's word: prove the box with
    /// [`Scene::prove_running`] before judging anything about it.
    pub fn must_run_box(&mut self, id: &str, payload: &[&str]) -> Result<Run, NotStaged> {
        let r = self.run_box(id, payload)?;
        if r.success() {
            Ok(r)
        } else {
            Err(NotStaged(format!(
                "the runtime could not run box {id}: {}",
                r.summary()
            )))
        }
    }

    /// Proves that box `id`, which `after` (a command that exited 0) was to
    /// bring to one of `want`, is there: its declared records exist (box
    /// dir, identity record, state record), the pid they record (or `state`
    /// reports) is a live process when `want` is running, and `state`
    /// reaches one of `want` (deadline [`STATUS_DEADLINE`]). The recorded
    /// pid, when there is one.
    ///
    /// A case may judge a box only after this: a runtime whose commands
    /// exit 0 and do nothing must fail ([`Halt::NoScene`]), never pass
    /// because nothing it did was wrong.
    pub fn prove_box(
        &mut self,
        id: &str,
        after: &Run,
        want: &[Status],
    ) -> Result<Option<i32>, Halt> {
        match self.scene_problem(id, want)? {
            Ok(pid) => Ok(pid),
            Err(observed) => {
                let want = want
                    .iter()
                    .map(|w| w.to_string())
                    .collect::<Vec<_>>()
                    .join(" or ");
                Err(self.no_scene(
                    format!("box {id} {want} after `{}` exited 0", after.argv.join(" ")),
                    format!("{observed}: the runtime said it did, but did not"),
                ))
            }
        }
    }

    /// Proves that box `id`, which `after` (a delete that exited 0)
    /// removed, is gone: none of its declared records is left and `state`
    /// gives no status for it.
    pub fn prove_gone(&mut self, id: &str, after: &Run) -> Result<(), Halt> {
        let mut left = Vec::new();
        for kind in [FileKind::BoxDir, FileKind::Identity, FileKind::State] {
            if let Some(path) = self.path(kind, id) {
                if self.exists(&path) && !left.contains(&path) {
                    left.push(path);
                }
            }
        }
        let mut observed = Vec::new();
        if !left.is_empty() {
            observed.push(format!("its records are still there: {}", left.join(", ")));
        }
        if self.adapter.has(Operation::State) {
            if let (run, Some(st)) = self.state(id)? {
                if st.status.is_some() {
                    observed.push(format!(
                        "state still answers {:?}: {}",
                        st.word,
                        run.summary()
                    ));
                }
            }
        }
        if observed.is_empty() {
            return Ok(());
        }
        Err(self.no_scene(
            format!("box {id} gone after `{}` exited 0", after.argv.join(" ")),
            format!(
                "{}: the runtime said it did, but did not",
                observed.join("; ")
            ),
        ))
    }

    /// A [`Halt::NoScene`]: the runtime said it set up what the case needs
    /// (`expected`) and did not (`observed`); the evidence is the
    /// transcript and the census.
    pub fn no_scene(&mut self, expected: String, observed: String) -> Halt {
        let mut evidence = self.transcript();
        if let Ok(c) = self.census() {
            evidence.extend(c.lines());
        }
        Halt::NoScene(crate::catalog::Failure {
            expected: format!("the scene the case needs: {expected}"),
            observed,
            evidence,
        })
    }

    /// [`Scene::prove_box`] for a box that must be running: its live pid.
    pub fn prove_running(&mut self, id: &str, after: &Run) -> Result<i32, Halt> {
        match self.prove_box(id, after, &[Status::Running])? {
            Some(pid) => Ok(pid),
            // Not reached: running requires a recorded pid.
            None => Err(NotStaged(format!("no recorded pid for box {id}")).into()),
        }
    }

    /// What [`Scene::prove_box`] finds missing, if anything (`Ok(Err)`),
    /// else the recorded pid.
    fn scene_problem(
        &mut self,
        id: &str,
        want: &[Status],
    ) -> Result<Result<Option<i32>, String>, NotStaged> {
        let mut seen = Vec::new();
        for kind in [FileKind::BoxDir, FileKind::Identity, FileKind::State] {
            let Some(path) = self.path(kind, id) else {
                continue;
            };
            if seen.contains(&path) {
                continue;
            }
            if !self.exists(&path) {
                return Ok(Err(format!(
                    "no {kind} record: {path} does not exist (or the adapter's template points elsewhere)"
                )));
            }
            seen.push(path);
        }
        let running = want == [Status::Running];
        let mut pid = None;
        if let Some(rec) = self.adapter.identity.clone() {
            let (path, text) = self.identity_text(id)?;
            match record_get(rec.format, &text, &rec.pid).and_then(|s| s.parse::<i64>().ok()) {
                Some(p) => pid = Some(p),
                None if running => {
                    return Ok(Err(format!(
                        "the identity record {path} names no pid: {text:?}"
                    )));
                }
                None => {}
            }
        }
        let observable = self.adapter.has(Operation::State) && self.adapter.state.is_some();
        if observable {
            // No parseable answer at all ends the wait at once: nothing
            // is on its way to the status wanted.
            let answer = poll::until(STATUS_DEADLINE, poll::STEP, || {
                let (run, st) = self.state(id)?;
                Ok::<_, NotStaged>(match st {
                    None => ControlFlow::Break(Err(format!(
                        "state {id} gives no parseable answer: {}",
                        run.summary()
                    ))),
                    Some(st) if st.status.is_some_and(|x| want.contains(&x)) => {
                        ControlFlow::Break(Ok(st.pid))
                    }
                    Some(st) => ControlFlow::Continue(format!(
                        "state {id} still says {:?} after {} s: {}",
                        st.word,
                        STATUS_DEADLINE.as_secs(),
                        run.summary()
                    )),
                })
            })?;
            match answer {
                Ok(Ok(reported)) => pid = pid.or(reported),
                Ok(Err(why)) | Err(why) => return Ok(Err(why)),
            }
        }
        if !running {
            return Ok(Ok(pid.and_then(|p| i32::try_from(p).ok())));
        }
        let Some(p) = pid else {
            return Ok(Err(format!(
                "nothing records box {id}'s pid (no identity record, and state reports none)"
            )));
        };
        let live = i32::try_from(p)
            .ok()
            .filter(|p| *p > 1)
            .filter(|p| self.census().is_ok_and(|c| c.get(*p).is_some()));
        Ok(match live {
            Some(p) => Ok(Some(p)),
            None => Err(format!(
                "box {id}'s recorded pid {p} is not a live process of the world"
            )),
        })
    }

    /// `run_secret` with `secret` in a file of the world. The census then
    /// marks processes whose cmdline or environ hold it.
    pub fn run_secret(
        &mut self,
        id: &str,
        secret: &[u8],
        payload: &[&str],
    ) -> Result<Run, NotStaged> {
        let file = self.outside_path("secret");
        self.write(&file, secret)?;
        self.secret = Some(String::from_utf8_lossy(secret).into_owned());
        let root = self.root.clone();
        let argv = self.expand(
            Operation::RunSecret,
            &root,
            Some(id),
            payload,
            None,
            Some(&file),
        )?;
        self.exec(argv, &[])
    }

    /// `state ID`, parsed when it can be.
    pub fn state(&mut self, id: &str) -> Result<(Run, Option<ObservedState>), NotStaged> {
        let run = self.op(Operation::State, Some(id), &[])?;
        // Whether a non-zero exit is an answer is the format's to say
        // (JSON: no; text and exit codes: yes).
        let parsed = if run.timed_out {
            None
        } else {
            self.adapter
                .state
                .as_ref()
                .and_then(|p| p.parse(run.code, run.stdout.as_bytes()).ok())
        };
        Ok((run, parsed))
    }

    /// Whether `state` output carries the last and previous exit codes.
    pub fn state_reports_exits(&self) -> bool {
        self.adapter
            .state
            .as_ref()
            .is_some_and(|p| p.exit_code.is_some() && p.previous_exit_code.is_some())
    }

    /// Polls `state` until it says one of `want` (deadline
    /// [`STATUS_DEADLINE`]); a box that never gets there is not staged. For
    /// scenes where reaching `want` is the runtime's job under test, use
    /// [`Scene::await_status`].
    pub fn wait_status(&mut self, id: &str, want: &[Status]) -> Result<(), NotStaged> {
        self.await_status(id, want)?.map_err(NotStaged)
    }

    /// Polls `state` until it says one of `want` (deadline
    /// [`STATUS_DEADLINE`]). `Ok(Err(why))` when the box never got there:
    /// the runtime's answer, for the case to judge; `Err` only when the
    /// harness could not ask.
    pub fn await_status(
        &mut self,
        id: &str,
        want: &[Status],
    ) -> Result<Result<(), String>, NotStaged> {
        let reached = poll::until(STATUS_DEADLINE, poll::STEP, || {
            let (run, st) = self.state(id)?;
            Ok::<_, NotStaged>(
                if st
                    .as_ref()
                    .and_then(|s| s.status)
                    .is_some_and(|s| want.contains(&s))
                {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(run)
                },
            )
        })?;
        Ok(reached.map_err(|run| {
            let want = want
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join(" or ");
            format!(
                "box {id} did not reach {want} within {} s: {}",
                STATUS_DEADLINE.as_secs(),
                run.summary()
            )
        }))
    }

    /// The world path of a file template the case lists among its needs
    /// ([`crate::catalog::AdapterNeed`]): an adapter without it never gets
    /// here (the case is not applicable), so `Err` means the case forgot
    /// the need.
    pub fn declared_path(&self, kind: FileKind, id: &str) -> Result<String, NotStaged> {
        self.path(kind, id).ok_or_else(|| {
            NotStaged(format!(
                "adapter declares no {} template (the case does not list it among its needs)",
                match kind {
                    FileKind::Identity => "identity.file".to_string(),
                    k => format!("files.{k}"),
                }
            ))
        })
    }

    /// The world path of an adapter file template for `id`.
    pub fn path(&self, kind: FileKind, id: &str) -> Option<String> {
        let f = &self.adapter.files;
        let t = match kind {
            FileKind::BoxDir => f.box_dir.as_ref(),
            FileKind::State => f.state.as_ref(),
            FileKind::Identity => self.adapter.identity.as_ref().map(|i| &i.file),
            FileKind::Exit => f.exit.as_ref(),
            FileKind::ExitPrevious => f.exit_previous.as_ref(),
            FileKind::Sentinel => f.sentinel.as_ref(),
        }?;
        crate::adapter::expand_str(
            t,
            &Vars {
                root: Some(&self.root),
                id: Some(id),
                ..Vars::default()
            },
        )
        .ok()
    }

    /// A world path outside the runtime's root, private to this scene.
    pub fn outside_path(&self, name: &str) -> String {
        format!("{}/outside-{name}", self.world.dir().trim_end_matches('/'))
    }

    /// A root inside a world-writable parent.
    pub fn loose_root(&mut self) -> Result<String, NotStaged> {
        self.root_in_parent("loose", 0o777, None)
    }

    /// A state root `<parent>/root` whose parent (a fresh dir outside the
    /// runtime's root, named `name`) has `mode` and, when `owner` is given,
    /// that uid and gid: the parents a runtime must refuse (group- or
    /// world-writable, owned by someone else). `Err` when the harness
    /// cannot make it (e.g. no second uid is mapped in the world).
    pub fn root_in_parent(
        &mut self,
        name: &str,
        mode: u32,
        owner: Option<u32>,
    ) -> Result<String, NotStaged> {
        let parent = self.outside_path(name);
        let host = self.world.host_path(&parent)?;
        std::fs::create_dir_all(&host).map_err(|e| io(&host, e))?;
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io(&host, e))?;
        if let Some(uid) = owner {
            // The runtime runs as the world's root, which is this process's
            // own uid seen from the host: a parent "owned by someone else"
            // must be owned by another uid, or the scene is not there.
            let me = nix::unistd::geteuid().as_raw();
            if uid == me {
                return Err(NotStaged(format!(
                    "uid {uid} is the runtime's own here (doppel runs as uid {me}, the world's root): no parent owned by someone else can be made"
                )));
            }
            std::os::unix::fs::chown(&host, Some(uid), Some(uid)).map_err(|e| io(&host, e))?;
        }
        let m = std::fs::metadata(&host).map_err(|e| io(&host, e))?;
        self.transcript.push(format!(
            "made {parent} mode {:o} owner {}",
            m.mode() & 0o7777,
            m.uid()
        ));
        Ok(format!("{parent}/root"))
    }

    /// Host path of a world path; no symlink below the world's dir (see
    /// [`crate::world::World::host_path`]).
    fn host(&self, path: &str) -> Result<PathBuf, NotStaged> {
        self.world.host_path(path)
    }

    /// Reads a world file (at most 16 MiB; no symlink followed).
    pub fn read(&self, path: &str) -> Result<Vec<u8>, NotStaged> {
        self.world.read_file(path, 16 << 20)
    }

    /// Reads at most `cap` bytes of a world file (no symlink followed).
    pub fn read_capped(&self, path: &str, cap: u64) -> Result<Vec<u8>, NotStaged> {
        self.world.read_file(path, cap)
    }

    /// Removes a world file (a record the runtime wrote: lost), nothing
    /// followed; recorded in the transcript.
    pub fn remove_file(&mut self, path: &str) -> Result<(), NotStaged> {
        self.world.remove(path)?;
        self.transcript.push(format!("harness removed {path}"));
        Ok(())
    }

    /// Adds a line to the evidence transcript.
    pub fn push_transcript(&mut self, line: String) {
        self.transcript.push(line);
    }

    /// Writes a world file (replacing it; no symlink followed).
    pub fn write(&self, path: &str, bytes: &[u8]) -> Result<(), NotStaged> {
        self.world.write_file(path, bytes)
    }

    /// Whether a world path exists (without following a final symlink; a
    /// path through a symlinked dir is reported as not there).
    pub fn exists(&self, path: &str) -> bool {
        self.host(path)
            .is_ok_and(|h| std::fs::symlink_metadata(h).is_ok())
    }

    /// Identity of a file's state for "left in place, unchanged" checks:
    /// type, size, inode, mtime, and a hash of small regular files.
    pub fn fingerprint(&self, path: &str) -> Result<String, NotStaged> {
        let h = self.host(path)?;
        let m = match std::fs::symlink_metadata(&h) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok("absent".into()),
            Err(e) => return Err(io(&h, e)),
        };
        let mut fp = format!(
            "type {:?} size {} ino {} mtime {}.{}",
            m.file_type(),
            m.size(),
            m.ino(),
            m.mtime(),
            m.mtime_nsec()
        );
        if m.is_file() && m.size() <= 1 << 20 {
            let bytes = self.world.read_file(path, 1 << 20)?;
            fp.push_str(&format!(" fnv {:x}", fnv(&bytes)));
        }
        Ok(fp)
    }

    /// Plants a file at a world path, replacing what is there (see
    /// [`crate::world::World::plant`]).
    pub fn plant(&mut self, path: &str, plant: Plant) -> Result<(), NotStaged> {
        self.world.plant(path, &plant)?;
        self.transcript.push(format!("planted {plant} at {path}"));
        Ok(())
    }

    /// Every path under a world dir (itself included) with its mode and whether it is a dir.
    pub fn walk_modes(&self, dir: &str) -> Result<Vec<(String, u32, bool)>, NotStaged> {
        self.walk_modes_inner(dir)
    }

    /// Starts watching a world dir, and every dir created under it while
    /// the watch runs, for metadata changes (chmod, chown) of the entries
    /// created in them: a mode set after creation shows up as an attribute
    /// event, one given at creation does not. A thread follows new dirs as
    /// they appear, so entries made in a new dir before its watch is set
    /// are not covered; [`TreeWatch::finish`] names them.
    pub fn watch_attrib_tree(&self, dir: &str) -> Result<TreeWatch, NotStaged> {
        TreeWatch::start(dir.trim_end_matches('/').to_string(), self.host(dir)?)
    }

    /// Starts watching a world dir for writes into the files in it
    /// (`IN_MODIFY`): a record written in place shows up under its own
    /// name; one replaced atomically only under its temp file's.
    pub fn watch_writes(&self, dir: &str) -> Result<WriteWatch, NotStaged> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let h = self.host(dir)?;
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| io(&h, e.into()))?;
        ino.add_watch(&h, AddWatchFlags::IN_MODIFY)
            .map_err(|e| io(&h, e.into()))?;
        Ok(WriteWatch { ino })
    }

    fn walk_modes_inner(&self, dir: &str) -> Result<Vec<(String, u32, bool)>, NotStaged> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_string()];
        while let Some(p) = stack.pop() {
            let h = self.host(&p)?;
            let m = std::fs::symlink_metadata(&h).map_err(|e| io(&h, e))?;
            out.push((p.clone(), m.mode(), m.is_dir()));
            if m.is_dir() {
                for e in std::fs::read_dir(&h).map_err(|e| io(&h, e))? {
                    let e = e.map_err(|e| io(&h, e))?;
                    stack.push(format!("{p}/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        Ok(out)
    }

    fn identity_text(&self, id: &str) -> Result<(String, String), NotStaged> {
        let rec = self
            .adapter
            .identity
            .as_ref()
            .ok_or_else(|| NotStaged("adapter declares no [identity] record".into()))?;
        let path = self
            .path(FileKind::Identity, id)
            .ok_or_else(|| NotStaged("identity.file does not expand".into()))?;
        let _ = rec;
        let text = String::from_utf8_lossy(&self.read(&path)?).into_owned();
        Ok((path, text))
    }

    /// The pid a box's process is recorded at: the identity record's, else `state`'s.
    pub fn recorded_pid(&mut self, id: &str) -> Result<i32, NotStaged> {
        if let Some(rec) = self.adapter.identity.clone() {
            let (path, text) = self.identity_text(id)?;
            return record_get(rec.format, &text, &rec.pid)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| NotStaged(format!("no pid in {path}: {text:?}")));
        }
        match self.state(id)? {
            (_, Some(ObservedState { pid: Some(p), .. })) if p > 1 => Ok(p as i32),
            (run, _) => Err(NotStaged(format!(
                "state {id} names no pid: {}",
                run.summary()
            ))),
        }
    }

    /// Rewrites fields of a box's identity record in place (same inode's
    /// directory, new content), keeping every other field.
    pub fn rewrite_identity(
        &mut self,
        id: &str,
        edit: impl FnOnce(&mut RecordEdit<'_>),
    ) -> Result<(), NotStaged> {
        let (path, text) = self.identity_text(id)?;
        let rec = self
            .adapter
            .identity
            .as_ref()
            .expect("checked by identity_text");
        let mut e = RecordEdit {
            text,
            rec,
            missing: None,
        };
        edit(&mut e);
        if let Some(m) = e.missing {
            return Err(NotStaged(m));
        }
        self.write(&path, e.text.as_bytes())?;
        self.transcript
            .push(format!("rewrote {path} to {:?}", e.text));
        Ok(())
    }

    /// Replaces a box's identity record with the legacy format naming `pid`.
    pub fn write_legacy_identity(&mut self, id: &str, pid: i32) -> Result<(), NotStaged> {
        let legacy = self
            .adapter
            .identity
            .as_ref()
            .and_then(|r| r.legacy.clone())
            .ok_or_else(|| NotStaged("adapter declares no identity.legacy format".into()))?;
        let path = self
            .path(FileKind::Identity, id)
            .ok_or_else(|| NotStaged("identity.file does not expand".into()))?;
        let text = legacy.replace("{pid}", &pid.to_string());
        self.write(&path, text.as_bytes())?;
        self.transcript
            .push(format!("wrote legacy record {text:?} to {path}"));
        Ok(())
    }

    /// SIGKILLs a world process and waits until it is gone.
    pub fn kill_process(&mut self, pid: i32) -> Result<(), NotStaged> {
        self.world.kill_and_wait(pid)?;
        self.transcript.push(format!("harness killed pid {pid}"));
        Ok(())
    }

    /// Waits until `pid` is gone (deadline), without signalling it.
    pub fn wait_gone(&mut self, pid: i32) -> Result<(), NotStaged> {
        self.await_gone(pid)?.map_err(NotStaged)
    }

    /// Waits until `pid` is gone (deadline), without signalling it.
    /// `Ok(Err(why))` when it is still there at the deadline: for the case
    /// to judge when ending it was the runtime's job.
    pub fn await_gone(&mut self, pid: i32) -> Result<Result<(), String>, NotStaged> {
        let gone = poll::until(STATUS_DEADLINE, poll::STEP, || {
            Ok::<_, NotStaged>(match self.census()?.get(pid) {
                None => ControlFlow::Break(()),
                Some(p) => ControlFlow::Continue(p.cmdline.clone()),
            })
        })?;
        Ok(gone.map_err(|cmdline| {
            format!(
                "pid {pid} {cmdline:?} was still there {} s later",
                STATUS_DEADLINE.as_secs()
            )
        }))
    }

    /// Places an impostor at `pid`, SIGKILLing whatever holds it first.
    pub fn impostor_at(&mut self, pid: i32, kind: ImpostorKind) -> Result<Impostor, NotStaged> {
        let imp = self.world.impostor(Some(pid), &kind)?;
        self.transcript.push(format!(
            "placed {kind:?} impostor at pid {} (start time {})",
            imp.pid, imp.start_time
        ));
        Ok(imp)
    }

    /// An unrelated signal-logging process anywhere in the world.
    pub fn spawn_bystander(&mut self) -> Result<Impostor, NotStaged> {
        let imp = self.world.impostor(None, &ImpostorKind::Unrelated)?;
        self.transcript
            .push(format!("placed a bystander at pid {}", imp.pid));
        Ok(imp)
    }

    /// A same-exe impostor at `pid`, or a same-argv one when the executable
    /// does not stay up on its own; records which in [`Scene::staging`].
    pub fn same_exe_impostor(
        &mut self,
        pid: i32,
        exe: &str,
        argv: &[String],
    ) -> Result<Impostor, NotStaged> {
        let (imp, fell_back) = self.world.same_exe_or_argv(pid, exe, argv)?;
        self.staging = Some(if fell_back {
            format!(
                "same argv: {exe} exits at once when started without its runtime's input, so the impostor has the shim's exact argv but another executable"
            )
        } else {
            format!("same exe: {exe} with the box's argv")
        });
        self.transcript.push(format!(
            "placed impostor at pid {} ({})",
            imp.pid,
            self.staging.as_deref().unwrap_or_default()
        ));
        Ok(imp)
    }

    /// Whether an impostor still runs and which signals it got.
    pub fn impostor_report(&mut self, imp: &Impostor) -> Result<ImpostorReport, NotStaged> {
        Ok(self.world.impostor_report(imp)?)
    }

    /// Start time (stat field 22) of a world process.
    pub fn start_time(&mut self, pid: i32) -> Result<u64, NotStaged> {
        self.census()?
            .get(pid)
            .map(|p| p.start_time)
            .ok_or_else(|| NotStaged(format!("pid {pid} is not running")))
    }

    /// The world's processes now, the runtime's daemon left out (it is no
    /// box's leftover; [`Scene::census_all`] has it).
    pub fn census(&mut self) -> Result<Census, NotStaged> {
        let mut c = self.census_all()?;
        let daemons = &self.daemons;
        c.procs.retain(|p| !daemons.is_daemon(p.pid, p.start_time));
        Ok(c)
    }

    /// The world's processes now, the runtime's daemon included.
    pub fn census_all(&mut self) -> Result<Census, NotStaged> {
        let secret = self.secret.clone();
        Ok(self.world.census(secret.as_deref())?)
    }

    /// Census once no zombie remains, or at the deadline (whatever is left).
    pub fn settle_zombies(&mut self) -> Result<Census, NotStaged> {
        let settled = poll::until(Duration::from_secs(2), poll::STEP, || {
            let c = self.census()?;
            Ok::<_, NotStaged>(if c.zombies().next().is_none() {
                ControlFlow::Break(c)
            } else {
                ControlFlow::Continue(c)
            })
        })?;
        Ok(settled.unwrap_or_else(|last| last))
    }

    /// A random token, unlikely to appear anywhere by chance.
    pub fn random_token(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        )
    }
}

impl Drop for Scene<'_> {
    /// Boxes of OCI runtimes hold host cgroups that outlive the world:
    /// `delete --force` each before the world ends (best effort; whatever
    /// is left is removed and reported by [`crate::oci::Bundles`]).
    fn drop(&mut self) {
        if !self.adapter.has(Operation::DeleteForce) {
            return;
        }
        for (root, id) in self.bundles.boxes().to_vec() {
            if let Ok(argv) = self.expand(Operation::DeleteForce, &root, Some(&id), &[], None, None)
            {
                let _ = self.exec(argv, &[]);
            }
        }
    }
}

fn io(path: &std::path::Path, e: std::io::Error) -> NotStaged {
    NotStaged(format!("{}: {e}", path.display()))
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A watch from [`Scene::watch_attrib_tree`]; ends with
/// [`TreeWatch::finish`] (or when dropped).
#[derive(Debug)]
pub struct TreeWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<TreeSeen>>,
}

/// What a [`TreeWatch`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeSeen {
    /// World paths of entries whose mode, owner or times were changed
    /// after they were created (attribute events that are not a
    /// truncation), each with its mode then.
    pub changed: Vec<(String, u32)>,
    /// World paths of the dirs watched, the top one first.
    pub watched: Vec<String>,
    /// World paths of entries that were already in a dir when its watch
    /// was set: a change of their mode before that is not seen.
    pub unseen: Vec<String>,
}

impl TreeWatch {
    fn start(world_dir: String, host_dir: PathBuf) -> Result<TreeWatch, NotStaged> {
        use nix::sys::inotify::{InitFlags, Inotify};
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| io(&host_dir, e.into()))?;
        let mut seen = TreeSeen::default();
        let mut dirs = std::collections::HashMap::new();
        // The top dir's entries predate the watch by definition: not "unseen".
        let wd = add_tree_watch(&ino, &host_dir).map_err(|e| io(&host_dir, e))?;
        dirs.insert(wd, (world_dir.clone(), host_dir));
        seen.watched.push(world_dir);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            use std::sync::atomic::Ordering;
            loop {
                let last = flag.load(Ordering::Acquire);
                {
                    use std::os::fd::AsFd;
                    let mut fds = [nix::poll::PollFd::new(
                        ino.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5u8));
                }
                while let Ok(events) = ino.read_events() {
                    if events.is_empty() {
                        break;
                    }
                    for e in events {
                        tree_event(&ino, &mut dirs, &mut seen, e);
                    }
                }
                // One more drain after the stop request, so nothing queued
                // before it is lost.
                if last {
                    return seen;
                }
            }
        });
        Ok(TreeWatch {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the watch once what is queued is read, and says what it saw.
    pub fn finish(mut self) -> TreeSeen {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for TreeWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn add_tree_watch(
    ino: &nix::sys::inotify::Inotify,
    host: &std::path::Path,
) -> std::io::Result<nix::sys::inotify::WatchDescriptor> {
    use nix::sys::inotify::AddWatchFlags as F;
    ino.add_watch(
        host,
        F::IN_ATTRIB | F::IN_CREATE | F::IN_MOVED_TO | F::IN_ONLYDIR | F::IN_DONT_FOLLOW,
    )
    .map_err(std::io::Error::from)
}

/// Handles one event of a [`TreeWatch`]: follows new dirs, notes changes.
fn tree_event(
    ino: &nix::sys::inotify::Inotify,
    dirs: &mut std::collections::HashMap<nix::sys::inotify::WatchDescriptor, (String, PathBuf)>,
    seen: &mut TreeSeen,
    e: nix::sys::inotify::InotifyEvent,
) {
    use nix::sys::inotify::AddWatchFlags as F;
    let (Some(name), Some((world, host))) = (e.name, dirs.get(&e.wd).cloned()) else {
        return;
    };
    let name = name.to_string_lossy().into_owned();
    let (world, host) = (format!("{world}/{name}"), host.join(&name));
    if e.mask.contains(F::IN_ATTRIB) && !e.mask.contains(F::IN_MODIFY) {
        // An O_TRUNC open reports a size change with its times (IN_MODIFY
        // too): not a mode set after creation.
        let mode = std::fs::symlink_metadata(&host).map_or(0, |m| m.mode());
        if !seen.changed.iter().any(|(p, _)| *p == world) {
            seen.changed.push((world.clone(), mode));
        }
    }
    if e.mask.intersects(F::IN_CREATE | F::IN_MOVED_TO) && e.mask.contains(F::IN_ISDIR) {
        let mut stack = vec![(world, host)];
        while let Some((w, h)) = stack.pop() {
            let Ok(wd) = add_tree_watch(ino, &h) else {
                continue;
            };
            if dirs.insert(wd, (w.clone(), h.clone())).is_some() {
                continue;
            }
            seen.watched.push(w.clone());
            for entry in std::fs::read_dir(&h).into_iter().flatten().flatten() {
                let n = entry.file_name().to_string_lossy().into_owned();
                seen.unseen.push(format!("{w}/{n}"));
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((format!("{w}/{n}"), entry.path()));
                }
            }
        }
    }
}

/// A watch from [`Scene::watch_writes`].
#[derive(Debug)]
pub struct WriteWatch {
    ino: nix::sys::inotify::Inotify,
}

impl WriteWatch {
    /// Names of the files written to so far (drains the queue).
    pub fn written(&self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(events) = self.ino.read_events() {
            if events.is_empty() {
                break;
            }
            for e in events {
                if let Some(name) = e.name {
                    let name = name.to_string_lossy().into_owned();
                    if !out.contains(&name) {
                        out.push(name);
                    }
                }
            }
        }
        out
    }
}
