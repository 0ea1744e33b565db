//! Owns [`WorldCommand`], the builder for a process to start inside a world
//! (like `std::process::Command`, but executed by the world's init so the
//! process sees world PIDs).

use crate::proto::{EnvSpec, SpawnSpec};
use std::time::Duration;

/// Default wait for a ready line (`ready_fd(true)`).
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A command to run inside a world.
///
/// ```
/// use doppel_harness::WorldCommand;
/// let cmd = WorldCommand::new("/bin/sh").args(["-c", "echo hi"]).env("A", "1");
/// assert_eq!(cmd.argv(), ["/bin/sh", "-c", "echo hi"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldCommand {
    program: String,
    argv: Vec<String>,
    env: EnvSpec,
    cwd: Option<String>,
    stdin: Vec<u8>,
    ready_fd: bool,
    ready_timeout: Duration,
    setsid: bool,
}

impl WorldCommand {
    /// A command running `program` (a path inside the world, or a name looked
    /// up in `PATH`), with argv\[0\] = `program`.
    pub fn new(program: impl Into<String>) -> WorldCommand {
        let program = program.into();
        WorldCommand {
            argv: vec![program.clone()],
            program,
            env: EnvSpec::default(),
            cwd: None,
            stdin: Vec::new(),
            ready_fd: false,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            setsid: false,
        }
    }

    /// Sets argv\[0\] independently of the program path.
    pub fn arg0(mut self, arg0: impl Into<String>) -> WorldCommand {
        self.argv[0] = arg0.into();
        self
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> WorldCommand {
        self.argv.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> WorldCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> WorldCommand {
        let key = key.into();
        self.env.remove.retain(|k| *k != key);
        self.env.set.push((key, value.into()));
        self
    }

    /// Removes an environment variable (inherited, or set earlier).
    pub fn env_remove(mut self, key: impl Into<String>) -> WorldCommand {
        let key = key.into();
        self.env.set.retain(|(k, _)| *k != key);
        self.env.remove.push(key);
        self
    }

    /// Starts from an empty environment (init's is inherited otherwise).
    pub fn env_clear(mut self) -> WorldCommand {
        self.env.clear = true;
        self.env.set.clear();
        self
    }

    /// Working directory (a world path).
    pub fn current_dir(mut self, dir: impl Into<String>) -> WorldCommand {
        self.cwd = Some(dir.into());
        self
    }

    /// Bytes the process reads on stdin, followed by EOF.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> WorldCommand {
        self.stdin = bytes.into();
        self
    }

    /// Gives the process fd 3 (`DOPPEL_READY_FD=3`) and makes spawning wait
    /// until it writes a line there or closes it.
    pub fn ready_fd(mut self, on: bool) -> WorldCommand {
        self.ready_fd = on;
        self
    }

    /// How long spawning waits for the ready line before killing the process.
    pub fn ready_timeout(mut self, timeout: Duration) -> WorldCommand {
        self.ready_timeout = timeout;
        self
    }

    /// Runs the process in a new session (`setsid`).
    pub fn setsid(mut self, on: bool) -> WorldCommand {
        self.setsid = on;
        self
    }

    /// The program.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The full argv.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The wire form, placed at `at_pid` and killed after `kill_after`.
    pub fn to_spec(&self, at_pid: Option<crate::Pid>, kill_after: Option<Duration>) -> SpawnSpec {
        SpawnSpec {
            program: self.program.clone(),
            argv: self.argv.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            stdin: self.stdin.clone(),
            at_pid,
            ready_fd: self.ready_fd,
            ready_timeout_ms: crate::world::millis(self.ready_timeout),
            setsid: self.setsid,
            kill_after_ms: kill_after.map(crate::world::millis),
        }
    }
}
