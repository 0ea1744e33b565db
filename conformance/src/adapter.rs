//! The adapter protocol: a TOML file that tells the suite how to drive one
//! runtime. This module owns its schema, its validation (errors name the key
//! and the line), placeholder expansion and the parsing of the runtime's
//! `state` output. It runs nothing: [`crate::scene`] does.
//!
//! The schema is documented for runtime authors in `docs/adapter-guide.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// The adapter schema version this suite reads.
pub const ADAPTER_SCHEMA: u32 = 1;

/// The refbox adapter shipped with the workspace, used when no `--adapter` is given.
pub const EMBEDDED_REFBOX: &str = include_str!("../../fixtures/adapters/refbox.toml");

/// Everything that can be wrong with an adapter file.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The file could not be read (missing, not a regular file, too large,
    /// not text).
    #[error("adapter: {why}")]
    Read {
        /// The adapter file.
        path: PathBuf,
        /// Why (it names the file).
        why: crate::input::InputError,
    },
    /// The TOML is malformed or does not match the schema (unknown or missing key, wrong type).
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The adapter file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// What toml/serde said, which names the key.
        message: String,
    },
    /// The TOML parses but a value is not usable.
    #[error("{path}:{line}: key `{key}`: {reason}")]
    Invalid {
        /// The adapter file.
        path: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// Dotted key, e.g. `commands.kill`.
        key: String,
        /// Why the value is rejected.
        reason: String,
    },
}

/// An operation a runtime may declare. Cases needing an undeclared operation are not applicable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Create a box without starting its payload.
    Create,
    /// Start a created box.
    Start,
    /// Create and start a box, detached.
    Run,
    /// Create and start a box whose payload receives a secret.
    RunSecret,
    /// Print the state of one box.
    State,
    /// Send a signal to a box.
    Kill,
    /// Delete a stopped box.
    Delete,
    /// Delete a box whatever its state.
    DeleteForce,
    /// List boxes.
    List,
    /// Classify every box after a restart.
    Recover,
    /// Remove stale log directories.
    Cleanup,
}

impl Operation {
    /// Every operation, in schema order.
    pub const ALL: [Operation; 11] = [
        Operation::Create,
        Operation::Start,
        Operation::Run,
        Operation::RunSecret,
        Operation::State,
        Operation::Kill,
        Operation::Delete,
        Operation::DeleteForce,
        Operation::List,
        Operation::Recover,
        Operation::Cleanup,
    ];

    /// The key under `[commands]`.
    pub fn key(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Start => "start",
            Operation::Run => "run",
            Operation::RunSecret => "run_secret",
            Operation::State => "state",
            Operation::Kill => "kill",
            Operation::Delete => "delete",
            Operation::DeleteForce => "delete_force",
            Operation::List => "list",
            Operation::Recover => "recover",
            Operation::Cleanup => "cleanup",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A capability an adapter may declare (beyond operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuntimeCapability {
    /// A long-lived daemon or library mode with its own reaper.
    Daemon,
    /// A privileged helper process.
    Helper,
    /// Secrets reach the box on stdin or a file, never argv/environ.
    SecretsStdin,
    /// Log directories carry owner sentinels, cleaned by `cleanup`.
    LogSentinels,
    /// The recorded process is the runtime's own per-box supervisor (a
    /// shim), not the payload: its argv is the runtime's to choose.
    Shim,
}

impl RuntimeCapability {
    /// Every capability.
    pub const ALL: [RuntimeCapability; 5] = [
        RuntimeCapability::Daemon,
        RuntimeCapability::Helper,
        RuntimeCapability::SecretsStdin,
        RuntimeCapability::LogSentinels,
        RuntimeCapability::Shim,
    ];

    /// The word used in `capabilities = [...]`.
    pub fn word(self) -> &'static str {
        match self {
            RuntimeCapability::Daemon => "daemon",
            RuntimeCapability::Helper => "helper",
            RuntimeCapability::SecretsStdin => "secrets-stdin",
            RuntimeCapability::LogSentinels => "log-sentinels",
            RuntimeCapability::Shim => "shim",
        }
    }

    fn from_word(w: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.word() == w)
    }
}

impl fmt::Display for RuntimeCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// How the payload (the workload inside a box) is handed to the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadMode {
    /// `{payload...}` expands to the payload's argv.
    Argv,
    /// `{bundle}` names an OCI bundle built by fixtures whose process is the payload.
    OciBundle,
}

/// Where a value sits in a record: a 1-based line number or a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Locator {
    /// 1-based line of a line-oriented record.
    Line(usize),
    /// RFC 6901 JSON pointer into a JSON record.
    Pointer(String),
}

/// The status words a runtime prints, mapped to the suite's notion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Created, payload not started.
    Created,
    /// Payload running.
    Running,
    /// Payload ended.
    Stopped,
    /// The runtime cannot tell (e.g. unverifiable identity).
    Unknown,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Unknown => "unknown",
        })
    }
}

// ---- raw schema (what serde sees) ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdapter {
    schema: Spanned<u32>,
    runtime: RawRuntime,
    payload: RawPayload,
    #[serde(default)]
    commands: RawCommands,
    state: Option<RawState>,
    #[serde(default)]
    files: RawFiles,
    identity: Option<RawIdentity>,
    #[serde(default)]
    capabilities: Vec<Spanned<String>>,
    #[serde(default)]
    world: WorldSetup,
    failpoints: Option<RawFailpoints>,
    helper: Option<RawHelper>,
    daemon: Option<RawDaemon>,
    supervisor: Option<RawSupervisor>,
}

/// `[supervisor]`: the runtime's own long-lived daemon (a process
/// supervisor's), started in the world by the suite, SIGKILLed and started
/// again by the daemon cases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupervisor {
    setup: Option<Spanned<Vec<String>>>,
    start: Spanned<Vec<String>>,
    ready: Option<Spanned<Vec<String>>>,
    pid_file: Option<Spanned<String>>,
    stop: Option<Spanned<Vec<String>>>,
}

/// `[daemon]`: the runtime's library (daemon) mode, as an embedder runs it
/// (capability `daemon`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    reaper_probe: Spanned<Vec<String>>,
    child_exit: Spanned<String>,
    reaped: Option<Spanned<String>>,
}

/// `[failpoints]`: named points where the runtime SIGKILLs itself when an
/// environment variable names them (crash sweeps by failpoint).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailpoints {
    env: Spanned<String>,
    #[serde(default)]
    create: Vec<String>,
    #[serde(default)]
    start: Vec<String>,
    #[serde(default)]
    run: Vec<String>,
    #[serde(default)]
    kill: Vec<String>,
    #[serde(default)]
    delete: Vec<String>,
}

/// `[helper]`: how to start the runtime's privileged helper and drive boxes
/// through it (capability `helper`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHelper {
    serve: Spanned<Vec<String>>,
    serve_fallback: Option<Spanned<Vec<String>>>,
    signal: Spanned<Vec<String>>,
    run: Spanned<Vec<String>>,
    delete_force: Spanned<Vec<String>>,
}

/// Named failpoints an adapter declares (`[failpoints]`), by operation.
#[derive(Debug, Clone, Default)]
pub struct Failpoints {
    /// The environment variable that names the point to die at.
    pub env: String,
    /// Points `create` passes.
    pub create: Vec<String>,
    /// Points `start` passes.
    pub start: Vec<String>,
    /// Points `run` passes.
    pub run: Vec<String>,
    /// Points `kill` passes.
    pub kill: Vec<String>,
    /// Points `delete --force` passes.
    pub delete: Vec<String>,
}

/// The helper's commands (`[helper]`).
#[derive(Debug, Clone)]
pub struct HelperCommands {
    /// Starts the helper with box cgroups under `{cgroup_root}`; it must
    /// create `{helper_socket}` only once it accepts requests.
    pub serve: Template,
    /// Starts the helper without cgroups (its documented weaker fallback).
    pub serve_fallback: Option<Template>,
    /// Asks the helper to send `{signal}` to `{pid}` on behalf of box `{id}`.
    pub signal: Template,
    /// `run` through the helper.
    pub run: Template,
    /// `delete --force` through the helper.
    pub delete_force: Template,
}

/// The library-mode probe (`[daemon]`).
#[derive(Debug, Clone)]
pub struct DaemonCommands {
    /// Runs the runtime in-process under its reaper while a child of the
    /// embedder exits with `{code}` unreaped and boxes running `{payload...}`
    /// are killed; then the embedder waits for its child itself and prints
    /// JSON.
    pub reaper_probe: Template,
    /// JSON pointer to the exit code the embedder's wait returned (absent
    /// or null when the wait found no child).
    pub child_exit: String,
    /// JSON pointer to the number of the runtime's own children its reaper
    /// reaped while the embedder's child was pending, if it prints one.
    pub reaped: Option<String>,
}

/// The runtime's daemon (`[supervisor]`): how the suite starts it in the
/// world (its home and state under `{root}`, never the machine's), finds
/// its pid, and stops it the runtime's own way.
#[derive(Debug, Clone)]
pub struct SupervisorCommands {
    /// Run once per world before the daemon first starts (config files,
    /// service dirs); must exit 0.
    pub setup: Option<Template>,
    /// Starts the daemon. The suite runs it in the background in a session
    /// of its own: it may stay in the foreground (then, without `pid_file`,
    /// its own pid is the daemon's) or fork away and exit 0.
    pub start: Template,
    /// Exits 0 once the daemon serves; polled after every start.
    pub ready: Option<Template>,
    /// Where the daemon records its own pid (the first decimal number in
    /// the file). Without it, the process `start` started is the daemon.
    pub pid_file: Option<String>,
    /// Stops the daemon, the CLI's own way.
    pub stop: Option<Template>,
}

/// How the world a runtime runs in must be set up (`[world]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldSetup {
    /// Hide `/sys/fs/cgroup/unified` in the world's private mount namespace
    /// (`umount -l` there, never on the host): crun refuses a cgroup v1/v2
    /// hybrid host.
    #[serde(default)]
    pub unmount_cgroup_unified: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    name: Spanned<String>,
    version: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayload {
    mode: PayloadMode,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommands {
    create: Option<Spanned<Vec<String>>>,
    start: Option<Spanned<Vec<String>>>,
    run: Option<Spanned<Vec<String>>>,
    run_secret: Option<Spanned<Vec<String>>>,
    state: Option<Spanned<Vec<String>>>,
    kill: Option<Spanned<Vec<String>>>,
    delete: Option<Spanned<Vec<String>>>,
    delete_force: Option<Spanned<Vec<String>>>,
    list: Option<Spanned<Vec<String>>>,
    recover: Option<Spanned<Vec<String>>>,
    cleanup: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    /// `json` (default), `text` or `exit-code`.
    #[serde(default)]
    format: Option<Spanned<String>>,
    /// `text` (and optionally `exit-code`): a regular expression with
    /// named groups `status`, `pid`, `exit_code`, `previous_exit_code`.
    pattern: Option<Spanned<String>>,
    status: Option<Spanned<String>>,
    pid: Option<Spanned<String>>,
    exit_code: Option<Spanned<String>>,
    previous_exit_code: Option<Spanned<String>>,
    running: Vec<String>,
    stopped: Vec<String>,
    #[serde(default)]
    created: Vec<String>,
    #[serde(default)]
    unknown: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    box_dir: Option<Spanned<String>>,
    state: Option<Spanned<String>>,
    exit: Option<Spanned<String>>,
    exit_previous: Option<Spanned<String>>,
    sentinel: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    file: Spanned<String>,
    format: RecordFormat,
    pid: Spanned<Locator>,
    start_time: Option<Spanned<Locator>>,
    boot_id: Option<Spanned<Locator>>,
    legacy: Option<Spanned<String>>,
}

/// Encoding of an identity record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordFormat {
    /// One value per line; locators are line numbers.
    Lines,
    /// A JSON document; locators are JSON pointers.
    Json,
}

// ---- validated adapter ----

/// A command template: argv elements with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<String>);

/// Values substituted into templates.
#[derive(Debug, Clone, Default)]
pub struct Vars<'a> {
    /// `{root}`: the runtime's state root inside the world.
    pub root: Option<&'a str>,
    /// `{id}`: the box id.
    pub id: Option<&'a str>,
    /// `{bundle}`: an OCI bundle directory.
    pub bundle: Option<&'a str>,
    /// `{signal}`: a signal name, e.g. `KILL`.
    pub signal: Option<&'a str>,
    /// `{secret_file}`: a file holding a secret.
    pub secret_file: Option<&'a str>,
    /// `{bindir}`: directory of the runtime's binaries.
    pub bindir: Option<&'a str>,
    /// `{payload...}`: the payload argv.
    pub payload: Option<&'a [String]>,
    /// `{helper_socket}`: where the helper listens.
    pub helper_socket: Option<&'a str>,
    /// `{cgroup_root}`: a cgroup2 dir the world owns, for the helper's boxes.
    pub cgroup_root: Option<&'a str>,
    /// `{pid}`: a process ID (helper requests).
    pub pid: Option<&'a str>,
    /// `{code}`: an exit code (the daemon probe's child).
    pub code: Option<&'a str>,
}

/// Placeholders a template may use.
const PLACEHOLDERS: [&str; 11] = [
    "root",
    "id",
    "bundle",
    "signal",
    "secret_file",
    "bindir",
    "payload...",
    "helper_socket",
    "cgroup_root",
    "pid",
    "code",
];
/// Placeholders a file path template may use.
const PATH_PLACEHOLDERS: [&str; 2] = ["root", "id"];

/// A placeholder was used without a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("placeholder {{{name}}} has no value here")]
pub struct MissingVar {
    /// The placeholder's name.
    pub name: String,
}

impl Template {
    /// Expands the template into an argv.
    pub fn expand(&self, vars: &Vars<'_>) -> Result<Vec<String>, MissingVar> {
        let mut out = Vec::with_capacity(self.0.len());
        for el in &self.0 {
            if el == "{payload...}" {
                let p = vars.payload.ok_or_else(|| MissingVar {
                    name: "payload...".into(),
                })?;
                out.extend(p.iter().cloned());
            } else {
                out.push(expand_str(el, vars)?);
            }
        }
        Ok(out)
    }

    /// The raw elements.
    pub fn elements(&self) -> &[String] {
        &self.0
    }

    /// Whether any element mentions `{name}`.
    pub fn uses(&self, name: &str) -> bool {
        self.0.iter().any(|e| {
            pieces(e)
                .iter()
                .any(|p| matches!(p, Piece::Placeholder(n) if *n == name))
        })
    }
}

/// One piece of a template string: literal text, or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    /// Text as it is (`{{` and `}}` already made `{` and `}`).
    Text(std::borrow::Cow<'a, str>),
    /// `{name}`.
    Placeholder(&'a str),
    /// A `{` with no `}` after it: the rest of the string.
    Unclosed(&'a str),
}

/// Splits a template string into text and placeholders. `{{` and `}}` are
/// a literal `{` and `}` (a shell script's `{ …; }` or `${var}` in an
/// adapter command); a lone `}` is itself.
fn pieces(s: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(['{', '}']) {
        text.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            text.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if let Some(after) = tail.strip_prefix('}') {
            text.push('}');
            rest = after;
        } else {
            let Some(close) = tail.find('}') else {
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text).into()));
                }
                out.push(Piece::Unclosed(tail));
                return out;
            };
            if !text.is_empty() {
                out.push(Piece::Text(std::mem::take(&mut text).into()));
            }
            out.push(Piece::Placeholder(&tail[1..close]));
            rest = &tail[close + 1..];
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Piece::Text(text.into()));
    }
    out
}

/// Expands placeholders inside one string (`{{`, `}}`: a literal brace).
pub fn expand_str(s: &str, vars: &Vars<'_>) -> Result<String, MissingVar> {
    let mut out = String::with_capacity(s.len());
    for piece in pieces(s) {
        let name = match piece {
            Piece::Text(t) => {
                out.push_str(&t);
                continue;
            }
            Piece::Unclosed(t) => {
                out.push_str(t);
                continue;
            }
            Piece::Placeholder(name) => name,
        };
        let value = match name {
            "root" => vars.root,
            "id" => vars.id,
            "bundle" => vars.bundle,
            "signal" => vars.signal,
            "secret_file" => vars.secret_file,
            "bindir" => vars.bindir,
            "helper_socket" => vars.helper_socket,
            "cgroup_root" => vars.cgroup_root,
            "pid" => vars.pid,
            "code" => vars.code,
            _ => None,
        };
        out.push_str(value.ok_or_else(|| MissingVar { name: name.into() })?);
    }
    Ok(out)
}

/// How to read `state` output.
#[derive(Debug, Clone)]
pub struct StateParsing {
    /// How the answer is read.
    pub format: StateFormat,
    /// Where the status word is: a JSON pointer (`json`), the `status`
    /// group (`text`), the exit code (`exit-code`).
    pub status: String,
    /// Where the pid is, if the runtime prints one: a JSON pointer, or the
    /// `pid` group of the pattern.
    pub pid: Option<String>,
    /// Where the last payload exit code is, if printed (pointer or group).
    pub exit_code: Option<String>,
    /// Where the exit code before that is, if printed (pointer or group).
    pub previous_exit_code: Option<String>,
    words: Vec<(String, Status)>,
}

/// How `state` answers (`state.format`).
#[derive(Debug, Clone)]
pub enum StateFormat {
    /// A JSON document on stdout, read by JSON pointers; only an exit 0
    /// is an answer.
    Json,
    /// Text on stdout matched by a pattern with named groups (`status`
    /// required): `supervisorctl status`, `sv status`, `s6-svstat`. Any exit
    /// code (supervisorctl exits 3 for a stopped program).
    Text(regex::Regex),
    /// The exit code is the status word (`running = ["0"]`, `stopped =
    /// ["3"]`: `start-stop-daemon --status`, LSB `status`); an optional
    /// pattern reads the other fields from stdout.
    ExitCode(Option<regex::Regex>),
}

/// The named groups a `state.pattern` may have.
const PATTERN_GROUPS: [&str; 4] = ["status", "pid", "exit_code", "previous_exit_code"];

/// What one `state` invocation said, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedState {
    /// The status, mapped through the adapter's words; `None` for an unmapped word.
    pub status: Option<Status>,
    /// The word as printed.
    pub word: String,
    /// The pid printed, if any (0 is kept as printed).
    pub pid: Option<i64>,
    /// The last exit code printed, if any.
    pub exit_code: Option<i64>,
    /// The previous exit code printed, if any.
    pub previous_exit_code: Option<i64>,
    /// The whole document, for evidence.
    pub raw: serde_json::Value,
}

/// Why `state` output could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateParseError {
    /// stdout was not JSON.
    #[error("state output is not JSON: {0}")]
    NotJson(String),
    /// The status pointer did not name a string.
    #[error("state output has no string at {0}")]
    NoStatus(String),
    /// A text answer did not match `state.pattern`.
    #[error("state output does not match the pattern {0:?}")]
    NoMatch(String),
    /// A JSON `state` exited non-zero (or was killed): no answer.
    #[error("state exited {0:?}")]
    Failed(Option<i32>),
}

impl StateParsing {
    /// Parses one `state` answer: its exit code (`None` when it was
    /// killed) and stdout.
    pub fn parse(
        &self,
        code: Option<i32>,
        stdout: &[u8],
    ) -> Result<ObservedState, StateParseError> {
        match &self.format {
            StateFormat::Json if code == Some(0) => self.parse_json(stdout),
            StateFormat::Json => Err(StateParseError::Failed(code)),
            StateFormat::Text(re) => self.parse_text(re, None, stdout),
            StateFormat::ExitCode(re) => match code {
                Some(c) => match re {
                    Some(re) => self.parse_text(re, Some(c), stdout),
                    None => Ok(self.observed(c.to_string(), None, None, None, text_raw(stdout))),
                },
                None => Err(StateParseError::Failed(None)),
            },
        }
    }

    fn observed(
        &self,
        word: String,
        pid: Option<i64>,
        exit_code: Option<i64>,
        previous_exit_code: Option<i64>,
        raw: serde_json::Value,
    ) -> ObservedState {
        let status = self.words.iter().find(|(w, _)| *w == word).map(|(_, s)| *s);
        ObservedState {
            status,
            word,
            pid,
            exit_code,
            previous_exit_code,
            raw,
        }
    }

    /// Text through `re`; with `code`, the exit code is the status word.
    fn parse_text(
        &self,
        re: &regex::Regex,
        code: Option<i32>,
        stdout: &[u8],
    ) -> Result<ObservedState, StateParseError> {
        let text = String::from_utf8_lossy(stdout);
        let caps = re.captures(&text);
        let group = |name: &Option<String>| -> Option<i64> {
            let c = caps.as_ref()?;
            c.name(name.as_deref()?)?.as_str().trim().parse().ok()
        };
        let word = match code {
            Some(c) => c.to_string(),
            None => caps
                .as_ref()
                .and_then(|c| c.name("status"))
                .map(|m| m.as_str().to_string())
                .ok_or_else(|| StateParseError::NoMatch(re.as_str().to_string()))?,
        };
        Ok(self.observed(
            word,
            group(&self.pid),
            group(&self.exit_code),
            group(&self.previous_exit_code),
            text_raw(stdout),
        ))
    }

    fn parse_json(&self, stdout: &[u8]) -> Result<ObservedState, StateParseError> {
        let raw: serde_json::Value =
            serde_json::from_slice(stdout).map_err(|e| StateParseError::NotJson(e.to_string()))?;
        let word = raw
            .pointer(&self.status)
            .and_then(|v| v.as_str())
            .ok_or_else(|| StateParseError::NoStatus(self.status.clone()))?
            .to_string();
        let int = |p: &Option<String>| {
            p.as_ref()
                .and_then(|p| raw.pointer(p))
                .and_then(|v| v.as_i64())
        };
        Ok(self.observed(
            word,
            int(&self.pid),
            int(&self.exit_code),
            int(&self.previous_exit_code),
            raw.clone(),
        ))
    }
}

/// A text answer as evidence: `{"stdout": "..."}`.
fn text_raw(stdout: &[u8]) -> serde_json::Value {
    serde_json::json!({ "stdout": String::from_utf8_lossy(stdout) })
}

/// Where the runtime records a process's identity, so scenes can rewrite it.
#[derive(Debug, Clone)]
pub struct IdentityRecord {
    /// Path template (`{root}`, `{id}`).
    pub file: String,
    /// Encoding.
    pub format: RecordFormat,
    /// Where the pid is.
    pub pid: Locator,
    /// Where the start time (stat field 22) is.
    pub start_time: Option<Locator>,
    /// Where the boot id is.
    pub boot_id: Option<Locator>,
    /// Template of the legacy record (`{pid}`), if the runtime reads one.
    pub legacy: Option<String>,
}

/// State-file path templates, for plants.
#[derive(Debug, Clone, Default)]
pub struct Files {
    /// A box's directory.
    pub box_dir: Option<String>,
    /// A box's state record.
    pub state: Option<String>,
    /// The payload's exit record.
    pub exit: Option<String>,
    /// The previous exit record.
    pub exit_previous: Option<String>,
    /// The log sentinel.
    pub sentinel: Option<String>,
}

/// A validated adapter.
#[derive(Debug, Clone)]
pub struct Adapter {
    /// Where it was read from (`<embedded refbox>` for the default).
    pub source: String,
    /// The runtime's name, e.g. `refbox`.
    pub name: String,
    /// Command printing the runtime's version.
    pub version: Option<Template>,
    /// Payload mode.
    pub payload: PayloadMode,
    commands: BTreeMap<Operation, Template>,
    /// State output parsing, if `state` is declared.
    pub state: Option<StateParsing>,
    /// File templates.
    pub files: Files,
    /// Identity record location.
    pub identity: Option<IdentityRecord>,
    capabilities: Vec<RuntimeCapability>,
    /// How the world must be set up for this runtime.
    pub world: WorldSetup,
    /// Named failpoints, if the runtime has them.
    pub failpoints: Option<Failpoints>,
    /// The helper's commands, if the runtime has one.
    pub helper: Option<HelperCommands>,
    /// The library-mode probe, if the runtime has a daemon mode.
    pub daemon: Option<DaemonCommands>,
    /// The runtime's own daemon, if its boxes live under one.
    pub supervisor: Option<SupervisorCommands>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

struct Ctx<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Ctx<'_> {
    fn invalid(&self, span: Range<usize>, key: &str, reason: impl Into<String>) -> AdapterError {
        AdapterError::Invalid {
            path: self.path.to_path_buf(),
            line: line_of(self.text, span.start),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn check_placeholders(
        &self,
        span: Range<usize>,
        key: &str,
        s: &str,
        allowed: &[&str],
    ) -> Result<(), AdapterError> {
        for piece in pieces(s) {
            let name = match piece {
                Piece::Text(_) => continue,
                Piece::Unclosed(_) => {
                    return Err(self.invalid(
                        span,
                        key,
                        format!(
                            "unclosed `{{` in {s:?} (a literal brace is written `{{{{` or `}}}}`)"
                        ),
                    ));
                }
                Piece::Placeholder(name) => name,
            };
            if !allowed.contains(&name) {
                return Err(self.invalid(
                    span,
                    key,
                    format!(
                        "unknown placeholder {{{name}}}; known: {} (a literal brace is written `{{{{` or `}}}}`)",
                        allowed
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn template(&self, key: &str, raw: Spanned<Vec<String>>) -> Result<Template, AdapterError> {
        let span = raw.span();
        let v = raw.into_inner();
        if v.is_empty() {
            return Err(self.invalid(span, key, "command is empty"));
        }
        for (i, el) in v.iter().enumerate() {
            if el.contains('\0') {
                return Err(self.invalid(
                    span,
                    key,
                    format!("argv element {i} holds a NUL byte, which no argv element can carry"),
                ));
            }
            let payload_inside = pieces(el)
                .iter()
                .any(|p| matches!(p, Piece::Placeholder("payload...")));
            if payload_inside && el != "{payload...}" {
                return Err(self.invalid(span, key, "{payload...} must be a whole argv element"));
            }
            if el != "{payload...}" {
                self.check_placeholders(span.clone(), key, el, &PLACEHOLDERS)?;
            }
        }
        Ok(Template(v))
    }

    fn path_template(&self, key: &str, raw: Spanned<String>) -> Result<String, AdapterError> {
        let span = raw.span();
        let s = raw.into_inner();
        if s.contains('\0') {
            return Err(self.invalid(span, key, "a path cannot hold a NUL byte"));
        }
        self.check_placeholders(span.clone(), key, &s, &PATH_PLACEHOLDERS)?;
        if !s.starts_with("{root}") && !s.starts_with('/') {
            return Err(self.invalid(span, key, "path must start with {root} or /"));
        }
        Ok(s)
    }

    /// `[state]`'s format and where each field is read from (see
    /// [`StateParsing`]).
    #[allow(clippy::type_complexity)]
    fn state_format(
        &self,
        s: &RawState,
    ) -> Result<
        (
            StateFormat,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        ),
        AdapterError,
    > {
        let word = s.format.as_ref().map_or("json", |f| f.get_ref().as_str());
        let span = |f: &Option<Spanned<String>>| f.as_ref().map(|f| f.span()).unwrap_or(0..0);
        let pointers_refused = |what: &str| -> Result<(), AdapterError> {
            for (key, v) in [
                ("state.status", &s.status),
                ("state.pid", &s.pid),
                ("state.exit_code", &s.exit_code),
                ("state.previous_exit_code", &s.previous_exit_code),
            ] {
                if let Some(v) = v {
                    return Err(self.invalid(
                        v.span(),
                        key,
                        format!(
                            "is a JSON pointer; with format {what:?} the fields come from state.pattern's named groups"
                        ),
                    ));
                }
            }
            Ok(())
        };
        match word {
            "json" => {
                if let Some(p) = &s.pattern {
                    return Err(self.invalid(
                        p.span(),
                        "state.pattern",
                        "is for format \"text\" or \"exit-code\"",
                    ));
                }
                let status = s.status.as_ref().ok_or_else(|| {
                    self.invalid(
                        span(&s.format),
                        "state.status",
                        "is required with format \"json\"",
                    )
                })?;
                let status = self.pointer("state.status", status)?;
                let opt = |key: &str, v: &Option<Spanned<String>>| {
                    v.as_ref().map(|p| self.pointer(key, p)).transpose()
                };
                Ok((
                    StateFormat::Json,
                    status,
                    opt("state.pid", &s.pid)?,
                    opt("state.exit_code", &s.exit_code)?,
                    opt("state.previous_exit_code", &s.previous_exit_code)?,
                ))
            }
            "text" | "exit-code" => {
                pointers_refused(word)?;
                let re = match &s.pattern {
                    Some(p) => Some(self.pattern(p, word == "text")?),
                    None if word == "text" => {
                        return Err(self.invalid(
                            span(&s.format),
                            "state.pattern",
                            "is required with format \"text\"",
                        ));
                    }
                    None => None,
                };
                let has = |g: &str| {
                    re.as_ref()
                        .is_some_and(|r| r.capture_names().flatten().any(|n| n == g))
                        .then(|| g.to_string())
                };
                let (pid, exit_code, previous) =
                    (has("pid"), has("exit_code"), has("previous_exit_code"));
                Ok(if word == "text" {
                    let re = re.expect("required above");
                    (
                        StateFormat::Text(re),
                        "status".into(),
                        pid,
                        exit_code,
                        previous,
                    )
                } else {
                    (
                        StateFormat::ExitCode(re),
                        "(exit code)".into(),
                        pid,
                        exit_code,
                        previous,
                    )
                })
            }
            other => Err(self.invalid(
                span(&s.format),
                "state.format",
                format!("unknown format {other:?}; known: \"json\", \"text\", \"exit-code\""),
            )),
        }
    }

    /// A `state.pattern`: it compiles, names only known groups, and has a
    /// `status` group when `status` comes from it.
    fn pattern(
        &self,
        raw: &Spanned<String>,
        needs_status: bool,
    ) -> Result<regex::Regex, AdapterError> {
        let re = regex::Regex::new(raw.get_ref()).map_err(|e| {
            self.invalid(
                raw.span(),
                "state.pattern",
                format!("not a regular expression: {e}"),
            )
        })?;
        for name in re.capture_names().flatten() {
            if !PATTERN_GROUPS.contains(&name) {
                return Err(self.invalid(
                    raw.span(),
                    "state.pattern",
                    format!(
                        "unknown group (?P<{name}>); known: {}",
                        PATTERN_GROUPS.join(", ")
                    ),
                ));
            }
        }
        let named_status = re.capture_names().flatten().any(|n| n == "status");
        if needs_status && !named_status {
            return Err(self.invalid(raw.span(), "state.pattern", "needs a (?P<status>...) group"));
        }
        if !needs_status && named_status {
            return Err(self.invalid(
                raw.span(),
                "state.pattern",
                "with format \"exit-code\" the exit code is the status: no (?P<status>...) group",
            ));
        }
        Ok(re)
    }

    fn pointer(&self, key: &str, raw: &Spanned<String>) -> Result<String, AdapterError> {
        let p = raw.get_ref();
        if !p.is_empty() && !p.starts_with('/') {
            return Err(self.invalid(
                raw.span(),
                key,
                format!("{p:?} is not a JSON pointer (must start with /)"),
            ));
        }
        Ok(p.clone())
    }

    fn locator(
        &self,
        key: &str,
        format: RecordFormat,
        raw: Spanned<Locator>,
    ) -> Result<Locator, AdapterError> {
        let span = raw.span();
        match (format, raw.into_inner()) {
            (RecordFormat::Lines, Locator::Line(0)) => {
                Err(self.invalid(span, key, "line numbers start at 1"))
            }
            (RecordFormat::Lines, l @ Locator::Line(_)) => Ok(l),
            (RecordFormat::Json, Locator::Pointer(p)) if p.starts_with('/') => {
                Ok(Locator::Pointer(p))
            }
            (RecordFormat::Lines, Locator::Pointer(_)) => {
                Err(self.invalid(span, key, "format = \"lines\" needs a line number"))
            }
            (RecordFormat::Json, _) => Err(self.invalid(
                span,
                key,
                "format = \"json\" needs a JSON pointer starting with /",
            )),
        }
    }
}

impl Adapter {
    /// Reads and validates an adapter file.
    pub fn load(path: &Path) -> Result<Adapter, AdapterError> {
        let text = crate::input::read_text(path, crate::input::ADAPTER_CAP).map_err(|why| {
            AdapterError::Read {
                path: path.to_path_buf(),
                why,
            }
        })?;
        Self::parse(&text, path)
    }

    /// The embedded refbox adapter.
    pub fn embedded_refbox() -> Adapter {
        Self::parse(EMBEDDED_REFBOX, Path::new("<embedded refbox.toml>"))
            .expect("the embedded refbox adapter is validated by a unit test")
    }

    /// Validates adapter text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Adapter, AdapterError> {
        let raw: RawAdapter = toml::from_str(text).map_err(|e| AdapterError::Syntax {
            path: path.to_path_buf(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(1),
            message: e.message().trim().to_string(),
        })?;
        let cx = Ctx { text, path };
        if *raw.schema.get_ref() != ADAPTER_SCHEMA {
            return Err(cx.invalid(
                raw.schema.span(),
                "schema",
                format!(
                    "this suite reads adapter schema {ADAPTER_SCHEMA}, the file says {}",
                    raw.schema.get_ref()
                ),
            ));
        }
        let name_span = raw.runtime.name.span();
        let name = raw.runtime.name.into_inner();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(cx.invalid(name_span, "runtime.name", "must be a non-empty word"));
        }
        let version = raw
            .runtime
            .version
            .map(|v| cx.template("runtime.version", v))
            .transpose()?;

        let c = raw.commands;
        let mut commands = BTreeMap::new();
        for (op, t) in [
            (Operation::Create, c.create),
            (Operation::Start, c.start),
            (Operation::Run, c.run),
            (Operation::RunSecret, c.run_secret),
            (Operation::State, c.state),
            (Operation::Kill, c.kill),
            (Operation::Delete, c.delete),
            (Operation::DeleteForce, c.delete_force),
            (Operation::List, c.list),
            (Operation::Recover, c.recover),
            (Operation::Cleanup, c.cleanup),
        ] {
            let Some(t) = t else { continue };
            let key = format!("commands.{}", op.key());
            let span = t.span();
            let t = cx.template(&key, t)?;
            let needs: &[&str] = match op {
                Operation::Create | Operation::Run if raw.payload.mode == PayloadMode::Argv => {
                    &["{id}", "{payload...}"]
                }
                Operation::Create | Operation::Run => &["{id}", "{bundle}"],
                Operation::RunSecret => &["{id}", "{secret_file}"],
                Operation::Kill => &["{id}", "{signal}"],
                Operation::Start
                | Operation::State
                | Operation::Delete
                | Operation::DeleteForce => &["{id}"],
                Operation::List | Operation::Recover | Operation::Cleanup => &[],
            };
            for n in needs {
                let bare = &n[1..n.len() - 1];
                let ok = if *n == "{payload...}" {
                    t.elements().iter().any(|e| e == n)
                } else {
                    t.uses(bare)
                };
                if !ok {
                    return Err(cx.invalid(span, &key, format!("must use {n}")));
                }
            }
            commands.insert(op, t);
        }

        let state = match raw.state {
            Some(s) => {
                let (format, status, pid, exit_code, previous_exit_code) = cx.state_format(&s)?;
                let mut words = Vec::new();
                for (list, st) in [
                    (s.running, Status::Running),
                    (s.stopped, Status::Stopped),
                    (s.created, Status::Created),
                    (s.unknown, Status::Unknown),
                ] {
                    words.extend(list.into_iter().map(|w| (w, st)));
                }
                Some(StateParsing {
                    format,
                    status,
                    pid,
                    exit_code,
                    previous_exit_code,
                    words,
                })
            }
            None => None,
        };
        if commands.contains_key(&Operation::State) && state.is_none() {
            return Err(AdapterError::Invalid {
                path: path.to_path_buf(),
                line: 1,
                key: "state".into(),
                reason: "commands.state is declared but the [state] table is missing".into(),
            });
        }

        let f = raw.files;
        let pt =
            |key: &str, v: Option<Spanned<String>>| v.map(|v| cx.path_template(key, v)).transpose();
        let files = Files {
            box_dir: pt("files.box_dir", f.box_dir)?,
            state: pt("files.state", f.state)?,
            exit: pt("files.exit", f.exit)?,
            exit_previous: pt("files.exit_previous", f.exit_previous)?,
            sentinel: pt("files.sentinel", f.sentinel)?,
        };

        let identity = match raw.identity {
            Some(i) => Some(IdentityRecord {
                file: cx.path_template("identity.file", i.file)?,
                format: i.format,
                pid: cx.locator("identity.pid", i.format, i.pid)?,
                start_time: i
                    .start_time
                    .map(|l| cx.locator("identity.start_time", i.format, l))
                    .transpose()?,
                boot_id: i
                    .boot_id
                    .map(|l| cx.locator("identity.boot_id", i.format, l))
                    .transpose()?,
                legacy: match i.legacy {
                    Some(l) => {
                        let span = l.span();
                        let l = l.into_inner();
                        if !l.contains("{pid}") {
                            return Err(cx.invalid(span, "identity.legacy", "must use {pid}"));
                        }
                        Some(l)
                    }
                    None => None,
                },
            }),
            None => None,
        };

        let mut capabilities = Vec::new();
        let raw_caps: Vec<(String, Range<usize>)> = raw
            .capabilities
            .iter()
            .map(|c| (c.get_ref().clone(), c.span()))
            .collect();
        for c in raw.capabilities {
            match RuntimeCapability::from_word(c.get_ref()) {
                Some(cap) => capabilities.push(cap),
                None => {
                    return Err(cx.invalid(
                        c.span(),
                        "capabilities",
                        format!(
                            "unknown capability {:?}; known: {}",
                            c.get_ref(),
                            RuntimeCapability::ALL.map(|c| c.word()).join(", ")
                        ),
                    ));
                }
            }
        }

        let failpoints = match raw.failpoints {
            Some(f) => {
                let span = f.env.span();
                let env = f.env.into_inner();
                if env.is_empty() || env.contains('=') {
                    return Err(cx.invalid(span, "failpoints.env", "must be a variable name"));
                }
                Some(Failpoints {
                    env,
                    create: f.create,
                    start: f.start,
                    run: f.run,
                    kill: f.kill,
                    delete: f.delete,
                })
            }
            None => None,
        };
        let helper = match raw.helper {
            Some(h) => {
                let need = |key: &str, t: &Template, names: &[&str], span| match names
                    .iter()
                    .find(|n| !t.uses(n))
                {
                    Some(n) => Err(cx.invalid(span, key, format!("must use {{{n}}}"))),
                    None => Ok(()),
                };
                let (s1, s2, s3, s4) = (
                    h.serve.span(),
                    h.signal.span(),
                    h.run.span(),
                    h.delete_force.span(),
                );
                let serve = cx.template("helper.serve", h.serve)?;
                need(
                    "helper.serve",
                    &serve,
                    &["helper_socket", "cgroup_root"],
                    s1,
                )?;
                let serve_fallback = match h.serve_fallback {
                    Some(t) => {
                        let span = t.span();
                        let t = cx.template("helper.serve_fallback", t)?;
                        need("helper.serve_fallback", &t, &["helper_socket"], span)?;
                        Some(t)
                    }
                    None => None,
                };
                let signal = cx.template("helper.signal", h.signal)?;
                need(
                    "helper.signal",
                    &signal,
                    &["helper_socket", "id", "pid", "signal"],
                    s2,
                )?;
                let run = cx.template("helper.run", h.run)?;
                need("helper.run", &run, &["helper_socket", "id"], s3)?;
                let delete_force = cx.template("helper.delete_force", h.delete_force)?;
                need(
                    "helper.delete_force",
                    &delete_force,
                    &["helper_socket", "id"],
                    s4,
                )?;
                Some(HelperCommands {
                    serve,
                    serve_fallback,
                    signal,
                    run,
                    delete_force,
                })
            }
            None => None,
        };

        let daemon = match raw.daemon {
            Some(d) => {
                let span = d.reaper_probe.span();
                let reaper_probe = cx.template("daemon.reaper_probe", d.reaper_probe)?;
                if !reaper_probe.uses("code") {
                    return Err(cx.invalid(span, "daemon.reaper_probe", "must use {code}"));
                }
                if !reaper_probe.elements().iter().any(|e| e == "{payload...}") {
                    return Err(cx.invalid(span, "daemon.reaper_probe", "must use {payload...}"));
                }
                Some(DaemonCommands {
                    reaper_probe,
                    child_exit: cx.pointer("daemon.child_exit", &d.child_exit)?,
                    reaped: d
                        .reaped
                        .as_ref()
                        .map(|p| cx.pointer("daemon.reaped", p))
                        .transpose()?,
                })
            }
            None => None,
        };
        let supervisor = match raw.supervisor {
            Some(sv) => {
                // The daemon serves every box: only the world's values.
                let own = |key: &str, t: Spanned<Vec<String>>| {
                    let span = t.span();
                    let t = cx.template(key, t)?;
                    if let Some(p) = PLACEHOLDERS.iter().find(|p| {
                        let needle = format!("{{{p}}}");
                        !matches!(**p, "root" | "bindir")
                            && t.elements().iter().any(|e| e.contains(&needle))
                    }) {
                        return Err(cx.invalid(
                            span,
                            key,
                            format!(
                                "a daemon command may use only {{root}} and {{bindir}}, not {{{p}}}"
                            ),
                        ));
                    }
                    Ok(t)
                };
                Some(SupervisorCommands {
                    setup: sv.setup.map(|t| own("supervisor.setup", t)).transpose()?,
                    start: own("supervisor.start", sv.start)?,
                    ready: sv.ready.map(|t| own("supervisor.ready", t)).transpose()?,
                    pid_file: sv
                        .pid_file
                        .map(|p| {
                            let span = p.span();
                            let p = cx.path_template("supervisor.pid_file", p)?;
                            if p.contains("{id}") {
                                return Err(cx.invalid(
                                    span,
                                    "supervisor.pid_file",
                                    "the daemon's pid file may use only {root}",
                                ));
                            }
                            Ok(p)
                        })
                        .transpose()?,
                    stop: sv.stop.map(|t| own("supervisor.stop", t)).transpose()?,
                })
            }
            None => None,
        };
        if let Some(c) = capabilities_span(&raw_caps, RuntimeCapability::Daemon) {
            if daemon.is_none() {
                return Err(cx.invalid(
                    c,
                    "capabilities",
                    "capability \"daemon\" needs a [daemon] table (reaper_probe, child_exit)",
                ));
            }
        }

        Ok(Adapter {
            daemon,
            supervisor,
            failpoints,
            helper,
            source: path.display().to_string(),
            name,
            version,
            payload: raw.payload.mode,
            commands,
            state,
            files,
            identity,
            capabilities,
            world: raw.world,
        })
    }

    /// The template of an operation, if declared.
    pub fn command(&self, op: Operation) -> Option<&Template> {
        self.commands.get(&op)
    }

    /// Whether an operation is declared.
    pub fn has(&self, op: Operation) -> bool {
        self.commands.contains_key(&op)
    }

    /// Whether a capability is declared.
    pub fn declares(&self, cap: RuntimeCapability) -> bool {
        self.capabilities.contains(&cap)
    }

    /// Declared operations.
    pub fn operations(&self) -> impl Iterator<Item = Operation> + '_ {
        self.commands.keys().copied()
    }

    /// Declared capabilities.
    pub fn capabilities(&self) -> &[RuntimeCapability] {
        &self.capabilities
    }
}

/// Where `cap` is declared in the raw `capabilities` list, if it is.
fn capabilities_span(
    raw: &[(String, Range<usize>)],
    cap: RuntimeCapability,
) -> Option<Range<usize>> {
    raw.iter()
        .find(|(w, _)| w == cap.word())
        .map(|(_, s)| s.clone())
}

/// Reads one value out of an identity record.
pub fn record_get(format: RecordFormat, text: &str, loc: &Locator) -> Option<String> {
    match (format, loc) {
        (RecordFormat::Lines, Locator::Line(n)) => text
            .lines()
            .nth(n.checked_sub(1)?)
            .map(|s| s.trim().to_string()),
        (RecordFormat::Json, Locator::Pointer(p)) => {
            let v: serde_json::Value = serde_json::from_str(text).ok()?;
            match v.pointer(p)? {
                serde_json::Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }
        }
        _ => None,
    }
}

/// Rewrites one value in an identity record, keeping everything else.
pub fn record_set(format: RecordFormat, text: &str, loc: &Locator, value: &str) -> Option<String> {
    match (format, loc) {
        (RecordFormat::Lines, Locator::Line(n)) => {
            let mut lines: Vec<&str> = text.lines().collect();
            let slot = lines.get_mut(n.checked_sub(1)?)?;
            *slot = value;
            let mut out = lines.join("\n");
            if text.ends_with('\n') {
                out.push('\n');
            }
            Some(out)
        }
        (RecordFormat::Json, Locator::Pointer(p)) => {
            let mut v: serde_json::Value = serde_json::from_str(text).ok()?;
            let slot = v.pointer_mut(p)?;
            *slot = match slot {
                serde_json::Value::Number(_) => serde_json::Value::Number(value.parse().ok()?),
                _ => serde_json::Value::String(value.to_string()),
            };
            serde_json::to_string(&v).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Adapter, AdapterError> {
        Adapter::parse(text, Path::new("t.toml"))
    }

    const MIN: &str = r#"schema = 1
[runtime]
name = "x"
[payload]
mode = "argv"
"#;

    #[test]
    fn embedded_refbox_is_valid() {
        let a = Adapter::embedded_refbox();
        assert_eq!(a.name, "refbox");
        for op in Operation::ALL {
            assert!(a.has(op), "refbox declares {op}");
        }
    }

    /// MIN with a `state` command and this `[state]` table.
    fn with_state(table: &str) -> Result<Adapter, AdapterError> {
        parse(&format!(
            "{MIN}[commands]\nstate = [\"x\", \"{{id}}\"]\n[state]\n{table}"
        ))
    }

    #[test]
    fn text_state_is_read_by_named_groups_whatever_the_exit_code() {
        // supervisorctl status NAME: exits 3 when the program is not running.
        let a = with_state(
            "format = \"text\"\npattern = '^\\S+\\s+(?P<status>[A-Z]+)(?:\\s+pid (?P<pid>\\d+))?'\nrunning = [\"RUNNING\"]\nstopped = [\"STOPPED\", \"EXITED\"]\n",
        )
        .unwrap();
        let sp = a.state.as_ref().unwrap();
        assert_eq!(sp.pid.as_deref(), Some("pid"));
        let o = sp
            .parse(Some(0), b"web  RUNNING   pid 4242, uptime 0:00:05\n")
            .unwrap();
        assert_eq!((o.status, o.pid), (Some(Status::Running), Some(4242)));
        let o = sp
            .parse(Some(3), b"web  STOPPED   Dec 02 04:05 PM\n")
            .unwrap();
        assert_eq!((o.status, o.pid), (Some(Status::Stopped), None));
        assert_eq!(o.raw["stdout"], "web  STOPPED   Dec 02 04:05 PM\n");
        assert!(matches!(
            sp.parse(Some(1), b"error: no such process\n"),
            Err(StateParseError::NoMatch(_))
        ));
    }

    #[test]
    fn exit_code_state_maps_codes_to_statuses() {
        // start-stop-daemon --status: 0 running, 1 dead with a pid file, 3 not running, 4 unknown.
        let a = with_state(
            "format = \"exit-code\"\nrunning = [\"0\"]\nstopped = [\"1\", \"3\"]\nunknown = [\"4\"]\n",
        )
        .unwrap();
        let sp = a.state.as_ref().unwrap();
        assert_eq!(
            sp.parse(Some(0), b"").unwrap().status,
            Some(Status::Running)
        );
        assert_eq!(
            sp.parse(Some(3), b"").unwrap().status,
            Some(Status::Stopped)
        );
        let o = sp.parse(Some(2), b"").unwrap();
        assert_eq!((o.status, o.word.as_str()), (None, "2"));
        assert!(sp.parse(None, b"").is_err(), "killed is no answer");
        // A pattern reads the pid from stdout.
        let a = with_state(
            "format = \"exit-code\"\npattern = 'pid (?P<pid>\\d+)'\nrunning = [\"0\"]\nstopped = [\"3\"]\n",
        )
        .unwrap();
        let o = a
            .state
            .as_ref()
            .unwrap()
            .parse(Some(0), b"up (pid 77)")
            .unwrap();
        assert_eq!((o.status, o.pid), (Some(Status::Running), Some(77)));
    }

    #[test]
    fn json_state_needs_exit_0() {
        let a = with_state("status = \"/status\"\nrunning = [\"r\"]\nstopped = [\"s\"]\n").unwrap();
        let sp = a.state.as_ref().unwrap();
        assert!(sp.parse(Some(0), br#"{"status":"r"}"#).is_ok());
        assert!(matches!(
            sp.parse(Some(1), br#"{"status":"r"}"#),
            Err(StateParseError::Failed(Some(1)))
        ));
    }

    #[test]
    fn bad_state_formats_are_refused_with_their_key() {
        let words = "running = [\"r\"]\nstopped = [\"s\"]\n";
        for (table, says) in [
            (
                "format = \"xml\"\n",
                "key `state.format`: unknown format \"xml\"",
            ),
            (
                "format = \"text\"\n",
                "key `state.pattern`: is required with format \"text\"",
            ),
            (
                "format = \"text\"\npattern = '(?P<state>\\w+)'\n",
                "unknown group (?P<state>)",
            ),
            (
                "format = \"text\"\npattern = 'pid (?P<pid>\\d+)'\n",
                "needs a (?P<status>...) group",
            ),
            (
                "format = \"text\"\npattern = '('\n",
                "not a regular expression",
            ),
            (
                "format = \"text\"\npattern = '(?P<status>\\w+)'\npid = \"/pid\"\n",
                "key `state.pid`: is a JSON pointer",
            ),
            (
                "format = \"exit-code\"\npattern = '(?P<status>\\w+)'\n",
                "the exit code is the status",
            ),
            (
                "pattern = '(?P<status>\\w+)'\nstatus = \"/s\"\n",
                "key `state.pattern`: is for format",
            ),
            (
                "pid = \"/pid\"\n",
                "key `state.status`: is required with format \"json\"",
            ),
        ] {
            let e = with_state(&format!("{table}{words}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{table:?}: {e}");
            assert!(e.starts_with("t.toml:"), "{e}");
        }
    }

    #[test]
    fn minimal_adapter_declares_nothing() {
        let a = parse(MIN).unwrap();
        assert_eq!(a.operations().count(), 0);
        assert!(a.capabilities().is_empty());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = parse(&format!("{MIN}[commands]\nstat = [\"x\", \"{{id}}\"]\n")).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("t.toml:7:"), "{s}");
        assert!(s.contains("stat"), "{s}");
    }

    #[test]
    fn missing_placeholder_is_named() {
        let e = parse(&format!("{MIN}[commands]\n\nkill = [\"x\", \"{{id}}\"]\n")).unwrap_err();
        let s = e.to_string();
        assert_eq!(s, "t.toml:8: key `commands.kill`: must use {signal}");
    }

    #[test]
    fn unknown_placeholder_is_named() {
        let e = parse(&format!(
            "{MIN}[commands]\nstart = [\"x\", \"{{idd}}\", \"{{id}}\"]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("unknown placeholder {idd}"), "{e}");
    }

    #[test]
    fn unknown_capability_is_named() {
        let e = parse(&MIN.replace(
            "[runtime]",
            "capabilities = [\"helper\", \"telepathy\"]\n[runtime]",
        ))
        .unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("t.toml:2: key `capabilities`"), "{s}");
        assert!(s.contains("telepathy"), "{s}");
    }

    #[test]
    fn wrong_type_names_line() {
        let e = parse(&MIN.replace("mode = \"argv\"", "mode = \"floppy\"")).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("t.toml:5:"), "{s}");
    }

    #[test]
    fn doubled_braces_are_literal_braces() {
        let vars = Vars {
            root: Some("/r"),
            id: Some("b1"),
            ..Vars::default()
        };
        assert_eq!(
            expand_str("[ -e {root}/{id} ] || {{ echo ${{HOME}}; }}", &vars).unwrap(),
            "[ -e /r/b1 ] || { echo ${HOME}; }"
        );
        assert_eq!(expand_str("a } b", &vars).unwrap(), "a } b");
        let t = Template(vec!["sh".into(), "-c".into(), "{{id}} {root}".into()]);
        assert!(!t.uses("id"), "an escaped {{id}} is no placeholder");
        assert!(t.uses("root"));
        // In an adapter: a shell group with single braces is refused with
        // the hint; doubled, it loads and expands to the script.
        let bad = "schema = 1\n[runtime]\nname = \"x\"\n[payload]\nmode = \"argv\"\n[commands]\nlist = [\"sh\", \"-c\", \"true || { exit 1; }\"]\n";
        let e = Adapter::parse(bad, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.toml:7") && e.contains("a literal brace is written"),
            "{e}"
        );
        let good = bad.replace("{ exit 1; }", "{{ exit 1; }}");
        let a = Adapter::parse(&good, Path::new("x.toml")).unwrap();
        let argv = a
            .command(Operation::List)
            .unwrap()
            .expand(&Vars::default())
            .unwrap();
        assert_eq!(argv[2], "true || { exit 1; }");
    }

    #[test]
    fn templates_expand_payload() {
        let t = Template(vec![
            "{bindir}/rb".into(),
            "--root".into(),
            "{root}".into(),
            "run".into(),
            "{id}".into(),
            "--".into(),
            "{payload...}".into(),
        ]);
        let payload = vec!["sleep".to_string(), "100".to_string()];
        let v = Vars {
            root: Some("/r"),
            id: Some("b1"),
            bindir: Some("/bin"),
            payload: Some(&payload),
            ..Vars::default()
        };
        assert_eq!(
            t.expand(&v).unwrap(),
            ["/bin/rb", "--root", "/r", "run", "b1", "--", "sleep", "100"]
        );
        assert_eq!(
            t.expand(&Vars::default()).unwrap_err(),
            MissingVar {
                name: "bindir".into()
            }
        );
    }

    #[test]
    fn records_round_trip() {
        let t = "42\n1234\nabc\n";
        assert_eq!(
            record_get(RecordFormat::Lines, t, &Locator::Line(2)).unwrap(),
            "1234"
        );
        let t2 = record_set(RecordFormat::Lines, t, &Locator::Line(2), "99").unwrap();
        assert_eq!(t2, "42\n99\nabc\n");
        let j = r#"{"init_process_pid":5,"init_process_start":77}"#;
        let p = Locator::Pointer("/init_process_start".into());
        assert_eq!(record_get(RecordFormat::Json, j, &p).unwrap(), "77");
        let j2 = record_set(RecordFormat::Json, j, &p, "88").unwrap();
        assert_eq!(record_get(RecordFormat::Json, &j2, &p).unwrap(), "88");
    }

    #[test]
    fn world_setup_is_read() {
        assert!(!parse(MIN).unwrap().world.unmount_cgroup_unified);
        let a = parse(&format!("{MIN}[world]\nunmount_cgroup_unified = true\n")).unwrap();
        assert!(a.world.unmount_cgroup_unified);
        let e = parse(&format!("{MIN}[world]\nunmount = true\n")).unwrap_err();
        assert!(e.to_string().starts_with("t.toml:7:"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_an_adapter_or_an_error(text in "\\PC{0,400}") {
            let _ = parse(&text);
        }

        #[test]
        fn any_bytes_in_toml_shape_never_panic(
            key in "[a-z_]{1,12}",
            value in "\\PC{0,40}",
        ) {
            let _ = parse(&format!("{MIN}[commands]\n{key} = [\"{value}\"]\n"));
            let _ = parse(&format!("{MIN}[identity]\nfile = \"{value}\"\nformat = \"lines\"\npid = 0\n"));
        }

        #[test]
        fn expand_never_panics(s in "\\PC{0,80}") {
            let _ = expand_str(&s, &Vars { root: Some("/r"), id: Some("b"), ..Vars::default() });
        }

        #[test]
        fn line_records_round_trip(
            lines in proptest::collection::vec("[0-9a-f-]{1,20}", 1..6),
            n in 1usize..6,
            value in "[0-9]{1,12}",
        ) {
            let text = lines.join("\n") + "\n";
            let loc = Locator::Line(n);
            match record_set(RecordFormat::Lines, &text, &loc, &value) {
                Some(t) => {
                    proptest::prop_assert_eq!(record_get(RecordFormat::Lines, &t, &loc), Some(value.clone()));
                    for (i, l) in lines.iter().enumerate() {
                        if i + 1 != n {
                            proptest::prop_assert_eq!(record_get(RecordFormat::Lines, &t, &Locator::Line(i + 1)), Some(l.clone()));
                        }
                    }
                }
                None => proptest::prop_assert!(n > lines.len()),
            }
        }

        #[test]
        fn state_output_parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let a = Adapter::embedded_refbox();
            let _ = a.state.as_ref().unwrap().parse(Some(0), &bytes);
        }
    }

    #[test]
    fn state_words_map() {
        let a = Adapter::embedded_refbox();
        let sp = a.state.as_ref().unwrap();
        let o = sp
            .parse(Some(0), br#"{"id":"b","status":"running","pid":7}"#)
            .unwrap();
        assert_eq!(o.status, Some(Status::Running));
        assert_eq!(o.pid, Some(7));
        let o = sp
            .parse(Some(0), br#"{"id":"b","status":"weird"}"#)
            .unwrap();
        assert_eq!(o.status, None);
        assert!(sp.parse(Some(0), b"nope").is_err());
    }
}
