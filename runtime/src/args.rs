//! The `refbox` command line's grammar: what the words mean ([`Cli`],
//! [`Command`]), how they are parsed ([`parse`]), and the help texts.
//!
//! Hand-written over `lexopt` rather than derived with clap, because
//! `refbox` is exec'ed once per operation and its start-up is part of
//! every answer: building clap's command tree cost about 30 page faults and
//! 0.13–0.17 ms per invocation on the project's VM (measured side by side,
//! `refbox state` 1.85 → 1.72 ms), more than `state` spends on its box.
//! The grammar is small and fixed; the tests below pin it, and every
//! adapter command line in `fixtures/adapters` parses.
//!
//! Grammar (global options may come before or after the command; a
//! payload always follows `--`):
//!
//! ```text
//! refbox [--root DIR] [--helper SOCKET] <COMMAND> [ARGS]
//! ```

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;

use lexopt::{Arg, ValueExt};

/// One word of the command line, owned (lexopt's borrows its parser).
#[derive(Debug)]
enum Word {
    Short(char),
    Long(String),
    Value(OsString),
}

impl Word {
    fn next(p: &mut lexopt::Parser) -> Result<Option<Word>, lexopt::Error> {
        Ok(p.next()?.map(|a| match a {
            Arg::Short(c) => Word::Short(c),
            Arg::Long(l) => Word::Long(l.to_string()),
            Arg::Value(v) => Word::Value(v),
        }))
    }

    /// Whether this is the option `--long` (or `-short`).
    fn is(&self, short: Option<char>, long: &str) -> bool {
        match self {
            Word::Short(c) => Some(*c) == short,
            Word::Long(l) => l == long,
            Word::Value(_) => false,
        }
    }

    /// The word as the user wrote it, for errors.
    fn describe(&self) -> String {
        match self {
            Word::Short(c) => format!("-{c}"),
            Word::Long(l) => format!("--{l}"),
            Word::Value(v) => v.to_string_lossy().into_owned(),
        }
    }
}

use crate::ids::{BoxId, BoxIdError};

/// A parsed command line.
#[derive(Debug)]
pub struct Cli {
    /// State root (`--root`). Default: [`crate::layout::default_root`].
    pub root: Option<PathBuf>,
    /// The shim executable (`--shim`, hidden; default: `refbox-shim` next to
    /// this executable, or `$REFBOX_SHIM`).
    pub shim: Option<PathBuf>,
    /// Act through the refbox-helper listening on this socket (`--helper`).
    pub helper: Option<PathBuf>,
    /// What to do.
    pub command: Command,
}

/// The subcommands, OCI-runtime-like. See [`COMMANDS`] for their help.
#[derive(Debug)]
pub enum Command {
    /// Create and start a box (create + start).
    Run {
        /// Return once the payload is started instead of waiting for it to exit.
        detach: bool,
        /// Box id and payload.
        spec: SpecArgs,
    },
    /// Create a box: its shim is started and waits for `start`.
    Create {
        /// Box id and payload.
        spec: SpecArgs,
    },
    /// Start the payload of a created box, or restart a stopped one.
    Start {
        /// Box id.
        id: BoxId,
        /// Secrets for a restarted payload.
        secret_file: Option<PathBuf>,
    },
    /// Print a box's state as JSON.
    State {
        /// Box id.
        id: BoxId,
    },
    /// List every box under the root.
    List {
        /// Output format.
        format: Format,
    },
    /// Send a signal to a running box.
    Kill {
        /// Box id.
        id: BoxId,
        /// The signal as given (parsed by the `parse_signal` strategy).
        signal: String,
    },
    /// Delete a stopped box; with `force`, kill a running one first.
    Delete {
        /// Kill the box first if it is running.
        force: bool,
        /// Box id.
        id: BoxId,
    },
    /// Classify every box and print what was done.
    Recover {
        /// Output format.
        format: Format,
    },
    /// Remove log dirs whose owner is dead or recycled.
    CleanupLogs {
        /// Output format.
        format: Format,
    },
    /// Serve as the root's daemon until SIGTERM (see `refbox daemon --help`).
    Daemon,
    /// Whether the recorded daemon runs (verified).
    DaemonStatus,
    /// Stop the recorded daemon (verified) with SIGTERM.
    DaemonStop,
    /// Library-mode check of the scoped reaper (see `refbox reaper-probe --help`).
    ReaperProbe {
        /// The exit code of the embedder's own child.
        child_exit: u8,
        /// Boxes whose shims the reaper reaps while the child's status waits.
        boxes: usize,
        /// The boxes' payload.
        command: Vec<String>,
    },
}

/// Box id and payload for `create` and `run`.
#[derive(Debug)]
pub struct SpecArgs {
    /// Box id.
    pub id: BoxId,
    /// Environment for the payload, `KEY=VALUE` lines (non-secret).
    pub env_file: Option<PathBuf>,
    /// Secret bytes handed to the payload on its stdin.
    pub secret_file: Option<PathBuf>,
    /// The payload: program and arguments.
    pub command: Vec<String>,
}

/// Output format for `list`, `recover`, `cleanup-logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document for programs.
    Json,
}

/// What a command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Run a command.
    Run(Cli),
    /// Print this help text (stdout, exit 0).
    Help(String),
    /// Print the version (stdout, exit 0).
    Version,
}

/// `s` as an error message may echo it: control characters (an escape
/// sequence, a bell) written as escapes, never sent to the terminal.
fn shown(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Why a command line is not understood (exit code 2). Each variant names
/// the word at fault; [`ArgsError::usage`] says what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// No command was given.
    #[error("a command is required")]
    MissingCommand,
    /// Not one of the commands.
    #[error("unknown command '{}'", shown(.0))]
    UnknownCommand(String),
    /// An option the command does not take.
    #[error("unexpected option '{}'", shown(.option))]
    UnexpectedOption {
        /// The command, if known.
        command: Option<&'static str>,
        /// The option as written.
        option: String,
    },
    /// A word the command does not take.
    #[error("unexpected argument '{}'{}", shown(.arg), if *.payload { " (a payload goes after `--`)" } else { "" })]
    UnexpectedArgument {
        /// The command.
        command: &'static str,
        /// The word.
        arg: String,
        /// Whether the command takes a payload after `--`.
        payload: bool,
    },
    /// A required argument is missing.
    #[error("the argument {what} is required")]
    MissingArgument {
        /// The command.
        command: &'static str,
        /// E.g. `<ID>`.
        what: &'static str,
    },
    /// An option's value is missing, or the value is not text where text
    /// is needed.
    #[error("bad option value")]
    Lexopt {
        /// The command, if known.
        command: Option<&'static str>,
        /// What lexopt found wrong.
        #[source]
        source: lexopt::Error,
    },
    /// A box id that is not one.
    #[error("invalid box id '{}'", shown(.value))]
    BadId {
        /// The command.
        command: &'static str,
        /// The value.
        value: String,
        /// Why.
        #[source]
        source: BoxIdError,
    },
    /// A value outside what the option takes.
    #[error("invalid value '{}' for {what}: {expected}", shown(.value))]
    BadValue {
        /// The command.
        command: &'static str,
        /// E.g. `--format <FORMAT>`.
        what: &'static str,
        /// The value.
        value: String,
        /// What it may be.
        expected: &'static str,
    },
}

impl ArgsError {
    /// The usage line of the command concerned (or of refbox).
    pub fn usage(&self) -> &'static str {
        let command = match self {
            ArgsError::MissingCommand | ArgsError::UnknownCommand(_) => None,
            ArgsError::UnexpectedOption { command, .. } | ArgsError::Lexopt { command, .. } => {
                *command
            }
            ArgsError::UnexpectedArgument { command, .. }
            | ArgsError::MissingArgument { command, .. }
            | ArgsError::BadId { command, .. }
            | ArgsError::BadValue { command, .. } => Some(*command),
        };
        command
            .and_then(find)
            .map_or("refbox [OPTIONS] <COMMAND>", |c| c.usage)
    }
}

impl From<lexopt::Error> for ArgsError {
    fn from(source: lexopt::Error) -> Self {
        ArgsError::Lexopt {
            command: None,
            source,
        }
    }
}

/// Help of one command.
#[derive(Debug)]
pub struct CommandHelp {
    /// The command word.
    pub name: &'static str,
    /// One line, for `refbox --help`.
    pub about: &'static str,
    /// The usage line.
    pub usage: &'static str,
    /// The options it takes besides the global ones (long names).
    pub options: &'static [&'static str],
    /// Whether it takes a payload after `--`.
    pub payload: bool,
    /// Its arguments and options, for `--help` (the global ones are added).
    pub body: &'static str,
}

/// The arguments `run` and `create` share (help text; ends with a blank line).
macro_rules! payload_arguments {
    () => {
        "\
Arguments:
  <ID>      Box id: [A-Za-z0-9][A-Za-z0-9_.-]{0,63}
  <CMD>...  The payload: program and arguments
"
    };
}

/// The options `run` and `create` share (help text).
macro_rules! payload_options {
    () => {
        "      --env-file <FILE>     Environment for the payload, KEY=VALUE lines (non-secret)
      --secret-file <FILE>  Secret bytes handed to the payload on its stdin; they never appear in
                            any argv or environ, nor on disk under the root"
    };
}

/// Every command, in the order `refbox --help` lists them.
pub const COMMANDS: &[CommandHelp] = &[
    CommandHelp {
        name: "run",
        about: "Create and start a box (create + start)",
        usage: "refbox run [OPTIONS] <ID> -- <CMD>...",
        options: &["--detach", "--env-file", "--secret-file"],
        payload: true,
        body: concat!(
            payload_arguments!(),
            "
Options:
  -d, --detach              Return once the payload is started instead of waiting for it to exit
",
            payload_options!()
        ),
    },
    CommandHelp {
        name: "create",
        about: "Create a box: its shim is started and waits for `start`",
        usage: "refbox create [OPTIONS] <ID> -- <CMD>...",
        options: &["--env-file", "--secret-file"],
        payload: true,
        body: concat!(payload_arguments!(), "\nOptions:\n", payload_options!()),
    },
    CommandHelp {
        name: "start",
        about: "Start the payload of a created box, or restart a stopped one",
        usage: "refbox start [OPTIONS] <ID>",
        options: &["--secret-file"],
        payload: false,
        body: "\
Arguments:
  <ID>  Box id

Options:
      --secret-file <FILE>  Secrets for a restarted payload (see `create --secret-file`)",
    },
    CommandHelp {
        name: "state",
        about: "Print a box's state as JSON: id, status, pid, identity, reason",
        usage: "refbox state <ID>",
        options: &[],
        payload: false,
        body: "\
Arguments:
  <ID>  Box id",
    },
    CommandHelp {
        name: "list",
        about: "List every box under the root; bad entries are named on stderr",
        usage: "refbox list [OPTIONS]",
        options: &["--format"],
        payload: false,
        body: "\
Options:
      --format <FORMAT>  Output format: table (aligned columns for people) or json (one JSON
                         document for programs) [default: table]",
    },
    CommandHelp {
        name: "kill",
        about: "Send a signal to a running box (verified identity only). Exits 3 when the box is not \
                running",
        usage: "refbox kill <ID> [SIGNAL]",
        options: &[],
        payload: false,
        body: "\
Arguments:
  <ID>      Box id
  [SIGNAL]  TERM, KILL, INT, HUP, QUIT, USR1, USR2, ABRT (with or without SIG, or as a number)
            [default: TERM]",
    },
    CommandHelp {
        name: "delete",
        about: "Delete a stopped box. With --force, kill a running box first",
        usage: "refbox delete [OPTIONS] <ID>",
        options: &["--force"],
        payload: false,
        body: "\
Arguments:
  <ID>  Box id

Options:
  -f, --force  Kill the box first if it is running",
    },
    CommandHelp {
        name: "recover",
        about: "Classify every box (adopt running, mark dead stopped, keep unknown, leave corrupt in \
                place) and print what was done",
        usage: "refbox recover [OPTIONS]",
        options: &["--format"],
        payload: false,
        body: "\
Options:
      --format <FORMAT>  Output format: table or json [default: table]",
    },
    CommandHelp {
        name: "cleanup-logs",
        about: "Remove log dirs whose owner (per `log/.sentinel`) is dead or recycled",
        usage: "refbox cleanup-logs [OPTIONS]",
        options: &["--format"],
        payload: false,
        body: "\
Options:
      --format <FORMAT>  Output format: table or json [default: table]",
    },
    CommandHelp {
        name: "daemon",
        about: "Serve as the root's daemon until SIGTERM: one per root, its own pid recorded and \
                verified like a shim's",
        usage: "refbox daemon",
        options: &[],
        payload: false,
        body: "\
No box needs the daemon: each box has its own shim, no daemon's child, so the daemon's death
orphans nothing. On start it takes an exclusive lock on {root}/.daemon.lock for its whole life
(a second daemon is refused even when the pid record is lost; the kernel drops the lock when it
dies), writes its identity record {root}/.daemon.pid (pid, start time, boot id, pidfs inode),
and adopts every box as `recover` does. SIGTERM, SIGINT or SIGHUP end it (exit 0, record
removed). Exits 1 when another daemon holds the lock.",
    },
    CommandHelp {
        name: "daemon-status",
        about: "Print whether the recorded daemon runs (verified). Exits 3 when it does not",
        usage: "refbox daemon-status",
        options: &[],
        payload: false,
        body: "\
Prints {\"status\": \"running\"|\"stopped\", \"pid\": N|null, \"reason\": ...}. A process that
now holds the recorded pid but is not the daemon (start time, pidfs inode) is \"stopped\".",
    },
    CommandHelp {
        name: "daemon-stop",
        about: "Stop the recorded daemon with SIGTERM, after verifying it is the daemon",
        usage: "refbox daemon-stop",
        options: &[],
        payload: false,
        body: "\
Waits up to 10 s for it to exit. When the record names a process that is not the daemon (its
pid reused), nothing is signalled, the stale record is removed, and it exits 0.",
    },
    CommandHelp {
        name: "reaper-probe",
        about: "Library-mode check: does the scoped reaper leave this process's own children alone?",
        usage: "refbox reaper-probe [OPTIONS] [-- <CMD>...]",
        options: &["--child-exit", "--boxes"],
        payload: true,
        body: "\
Runs boxes in-process, as a daemon embedding `refbox::Runtime` does; a child of this process
(`/bin/sh -c 'exit CODE'`) exits and is left unreaped; the boxes are force-deleted so the reaper
reaps their shims while that status is pending; then this process waits for its child itself.
Prints JSON (`child.code`, `child.error`, `reaped`, `kept`); exits 0 when the wait got CODE, 1
when the status was lost. The suite's `zombies::reaper_scoped` runs it.

Arguments:
  [CMD]...  The boxes' payload (a long-lived program) [default: sleep 1000]

Options:
      --child-exit <CODE>  The exit code of the embedder's own child [default: 37]
      --boxes <N>          Boxes whose shims the reaper reaps while the child's status waits
                           [default: 2]",
    },
];

const ABOUT: &str = "\
refbox: a reference runtime whose process identity cannot be fooled

Each box is a workload supervised by its own `refbox-shim <id>` process. The shim's identity (pid,
start time, boot id, pidfs inode) is recorded by the shim itself before it execs; every later
command verifies it through a pidfd before trusting or signalling the pid.";

const GLOBAL_OPTIONS: &str =
    "      --root <DIR>       State root. Default: $XDG_RUNTIME_DIR/refbox, or /run/refbox as root
      --helper <SOCKET>  Act through the refbox-helper listening on this socket: box cgroups come
                         from it, and `kill`/`delete --force` signal through it (the shim's own
                         start request stays direct). Without it refbox acts itself
  -h, --help             Print help";

const EXIT_CODES: &str = "\
Exit codes: 0 done; 1 error; 2 usage; 3 not running / already running, nothing done; 4 some entries
unreadable (named on stderr), the others handled.";

fn find(name: &str) -> Option<&'static CommandHelp> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// `refbox --help`.
pub fn top_help() -> String {
    let mut s = format!("{ABOUT}\n\nUsage: refbox [OPTIONS] <COMMAND>\n\nCommands:\n");
    for c in COMMANDS {
        let _ = writeln!(s, "  {:<13} {}", c.name, wrap(c.about, 100 - 16, 16));
    }
    let _ = writeln!(
        s,
        "  {:<13} Print this message or the help of the given command",
        "help"
    );
    let _ = write!(
        s,
        "\nOptions:\n{GLOBAL_OPTIONS}\n  -V, --version          Print version\n\n{EXIT_CODES}\n"
    );
    s
}

/// `text` in lines of at most `width` characters (words are not split),
/// every line after the first indented by `indent`.
fn wrap(text: &str, width: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        if line > 0 && line + 1 + word.len() > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

/// `refbox COMMAND --help`.
pub fn command_help(c: &CommandHelp) -> String {
    let (own, options) = match c.body.split_once("Options:\n") {
        Some((before, opts)) => (before, format!("{opts}\n{GLOBAL_OPTIONS}")),
        None => (c.body, GLOBAL_OPTIONS.to_string()),
    };
    let own = own.trim_end();
    let mut s = format!("{}\n\nUsage: {}\n\n", wrap(c.about, 100, 0), c.usage);
    if !own.is_empty() {
        let _ = write!(s, "{own}\n\n");
    }
    let _ = write!(s, "Options:\n{options}\n\n{EXIT_CODES}\n");
    s
}

/// The global options, wherever they appear.
#[derive(Debug, Default)]
struct Globals {
    root: Option<PathBuf>,
    shim: Option<PathBuf>,
    helper: Option<PathBuf>,
}

impl Globals {
    /// Takes `arg` if it is a global option; `Ok(false)` if it is not one.
    fn take(&mut self, word: &Word, p: &mut lexopt::Parser) -> Result<bool, lexopt::Error> {
        let slot = if word.is(None, "root") {
            &mut self.root
        } else if word.is(None, "shim") {
            &mut self.shim
        } else if word.is(None, "helper") {
            &mut self.helper
        } else {
            return Ok(false);
        };
        *slot = Some(PathBuf::from(p.value()?));
        Ok(true)
    }
}

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Parsed, ArgsError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut p = lexopt::Parser::from_args(args);
    let mut globals = Globals::default();
    let name = loop {
        let Some(word) = Word::next(&mut p)? else {
            return Err(ArgsError::MissingCommand);
        };
        if globals.take(&word, &mut p)? {
            continue;
        }
        if word.is(Some('h'), "help") {
            return Ok(Parsed::Help(top_help()));
        }
        if word.is(Some('V'), "version") {
            return Ok(Parsed::Version);
        }
        match word {
            Word::Value(v) => break v.string()?,
            other => {
                return Err(ArgsError::UnexpectedOption {
                    command: None,
                    option: other.describe(),
                });
            }
        }
    };
    if name == "help" {
        let text = match Word::next(&mut p)? {
            None => top_help(),
            Some(Word::Value(v)) => {
                let v = v.string()?;
                command_help(find(&v).ok_or(ArgsError::UnknownCommand(v))?)
            }
            Some(other) => {
                return Err(ArgsError::UnexpectedOption {
                    command: None,
                    option: other.describe(),
                });
            }
        };
        return Ok(Parsed::Help(text));
    }
    let help = find(&name).ok_or_else(|| ArgsError::UnknownCommand(name.clone()))?;
    let mut words = Words {
        p,
        globals,
        help,
        detach: false,
        force: false,
        env_file: None,
        secret_file: None,
        format: Format::Table,
        child_exit: 37,
        boxes: 2,
        positional: Vec::new(),
        payload: None,
    };
    match words.read()? {
        Some(text) => Ok(Parsed::Help(text)),
        None => words.into_cli().map(Parsed::Run),
    }
}

/// Everything a command line can hold after its command word; each command
/// takes its share and refuses the rest.
struct Words {
    p: lexopt::Parser,
    globals: Globals,
    help: &'static CommandHelp,
    detach: bool,
    force: bool,
    env_file: Option<PathBuf>,
    secret_file: Option<PathBuf>,
    format: Format,
    child_exit: u8,
    boxes: usize,
    positional: Vec<String>,
    payload: Option<Vec<String>>,
}

impl Words {
    fn command(&self) -> &'static str {
        self.help.name
    }

    /// Whether this command takes the option.
    fn takes(&self, option: &str) -> bool {
        self.help.options.contains(&option)
    }

    fn lex<T>(&self, r: Result<T, lexopt::Error>) -> Result<T, ArgsError> {
        r.map_err(|source| ArgsError::Lexopt {
            command: Some(self.command()),
            source,
        })
    }

    /// Reads the words; `Some(help)` when `-h`/`--help` was among them.
    fn read(&mut self) -> Result<Option<String>, ArgsError> {
        loop {
            // A payload is everything after a lone `--`.
            if let Some(mut raw) = self.p.try_raw_args() {
                if raw.peek().is_some_and(|w| w == "--") {
                    raw.next();
                    let rest: Result<Vec<String>, _> = raw.map(|w| w.string()).collect();
                    self.payload = Some(self.lex(rest)?);
                    return Ok(None);
                }
            }
            let next = Word::next(&mut self.p);
            let Some(word) = self.lex(next)? else {
                return Ok(None);
            };
            let taken = self.globals.take(&word, &mut self.p);
            if self.lex(taken)? {
                continue;
            }
            if word.is(Some('h'), "help") {
                return Ok(Some(command_help(self.help)));
            }
            if let Word::Value(v) = word {
                let v = self.lex(v.string())?;
                self.positional.push(v);
            } else if word.is(Some('d'), "detach") && self.takes("--detach") {
                self.detach = true;
            } else if word.is(Some('f'), "force") && self.takes("--force") {
                self.force = true;
            } else if word.is(None, "env-file") && self.takes("--env-file") {
                let v = self.p.value();
                self.env_file = Some(self.lex(v)?.into());
            } else if word.is(None, "secret-file") && self.takes("--secret-file") {
                let v = self.p.value();
                self.secret_file = Some(self.lex(v)?.into());
            } else if word.is(None, "format") && self.takes("--format") {
                self.format = match self.text()?.as_str() {
                    "table" => Format::Table,
                    "json" => Format::Json,
                    other => return Err(self.bad("--format <FORMAT>", other, "table or json")),
                };
            } else if word.is(None, "child-exit") && self.takes("--child-exit") {
                let v = self.text()?;
                self.child_exit = v
                    .parse()
                    .map_err(|_| self.bad("--child-exit <CODE>", &v, "a number 0-255"))?;
            } else if word.is(None, "boxes") && self.takes("--boxes") {
                let v = self.text()?;
                self.boxes = v
                    .parse()
                    .map_err(|_| self.bad("--boxes <N>", &v, "a number"))?;
            } else {
                return Err(ArgsError::UnexpectedOption {
                    command: Some(self.command()),
                    option: word.describe(),
                });
            }
        }
    }

    /// The value of the option just read, as text.
    fn text(&mut self) -> Result<String, ArgsError> {
        let v = self.p.value();
        let v = self.lex(v)?.string();
        self.lex(v)
    }

    fn bad(&self, what: &'static str, value: &str, expected: &'static str) -> ArgsError {
        ArgsError::BadValue {
            command: self.command(),
            what,
            value: value.to_string(),
            expected,
        }
    }

    /// The positional arguments: `need` required ones (named for errors),
    /// then up to `optional` more.
    fn positionals(&mut self, need: &[&'static str], optional: usize) -> Result<(), ArgsError> {
        if let Some(what) = need.get(self.positional.len()) {
            return Err(ArgsError::MissingArgument {
                command: self.command(),
                what,
            });
        }
        if let Some(extra) = self.positional.get(need.len() + optional) {
            return Err(ArgsError::UnexpectedArgument {
                command: self.command(),
                arg: extra.clone(),
                payload: self.help.payload,
            });
        }
        Ok(())
    }

    fn id(&self, i: usize) -> Result<BoxId, ArgsError> {
        let value = &self.positional[i];
        BoxId::new(value).map_err(|source| ArgsError::BadId {
            command: self.command(),
            value: value.clone(),
            source,
        })
    }

    /// The payload after `--`: required (`run`, `create`) or optional.
    fn payload(&mut self, required: bool) -> Result<Option<Vec<String>>, ArgsError> {
        match self.payload.take() {
            Some(cmd) if !cmd.is_empty() => Ok(Some(cmd)),
            _ if required => Err(ArgsError::MissingArgument {
                command: self.command(),
                what: "-- <CMD>...",
            }),
            _ => Ok(None),
        }
    }

    fn into_cli(mut self) -> Result<Cli, ArgsError> {
        if self.payload.is_some() && !self.help.payload {
            return Err(ArgsError::UnexpectedOption {
                command: Some(self.command()),
                option: "--".to_string(),
            });
        }
        let command = match self.command() {
            "run" | "create" => {
                self.positionals(&["<ID>"], 0)?;
                let spec = SpecArgs {
                    id: self.id(0)?,
                    env_file: self.env_file.take(),
                    secret_file: self.secret_file.take(),
                    command: self.payload(true)?.unwrap_or_default(),
                };
                if self.command() == "run" {
                    Command::Run {
                        detach: self.detach,
                        spec,
                    }
                } else {
                    Command::Create { spec }
                }
            }
            "start" => {
                self.positionals(&["<ID>"], 0)?;
                Command::Start {
                    id: self.id(0)?,
                    secret_file: self.secret_file.take(),
                }
            }
            "state" => {
                self.positionals(&["<ID>"], 0)?;
                Command::State { id: self.id(0)? }
            }
            "kill" => {
                self.positionals(&["<ID>"], 1)?;
                Command::Kill {
                    id: self.id(0)?,
                    signal: self
                        .positional
                        .get(1)
                        .cloned()
                        .unwrap_or_else(|| "TERM".to_string()),
                }
            }
            "delete" => {
                self.positionals(&["<ID>"], 0)?;
                Command::Delete {
                    force: self.force,
                    id: self.id(0)?,
                }
            }
            "list" | "recover" | "cleanup-logs" => {
                self.positionals(&[], 0)?;
                match self.command() {
                    "list" => Command::List {
                        format: self.format,
                    },
                    "recover" => Command::Recover {
                        format: self.format,
                    },
                    _ => Command::CleanupLogs {
                        format: self.format,
                    },
                }
            }
            "daemon" | "daemon-status" | "daemon-stop" => {
                self.positionals(&[], 0)?;
                match self.command() {
                    "daemon" => Command::Daemon,
                    "daemon-status" => Command::DaemonStatus,
                    _ => Command::DaemonStop,
                }
            }
            _ => {
                self.positionals(&[], 0)?;
                Command::ReaperProbe {
                    child_exit: self.child_exit,
                    boxes: self.boxes,
                    command: self
                        .payload(false)?
                        .unwrap_or_else(|| vec!["sleep".to_string(), "1000".to_string()]),
                }
            }
        };
        Ok(Cli {
            root: self.globals.root,
            shim: self.globals.shim,
            helper: self.globals.helper,
            command,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(words: &[&str]) -> Cli {
        match parse(words.iter().copied()) {
            Ok(Parsed::Run(cli)) => cli,
            other => panic!("{words:?}: {other:?}"),
        }
    }

    fn err(words: &[&str]) -> ArgsError {
        match parse(words.iter().copied()) {
            Err(e) => e,
            other => panic!("{words:?} parsed: {other:?}"),
        }
    }

    #[test]
    fn every_adapter_command_line_parses() {
        // The shapes of fixtures/adapters/refbox.toml and flawbox.toml.
        let r = run(&["--root", "/r", "create", "b1", "--", "sleep", "100"]);
        assert_eq!(r.root.as_deref(), Some("/r".as_ref()));
        match r.command {
            Command::Create { spec } => {
                assert_eq!(spec.id.as_str(), "b1");
                assert_eq!(spec.command, ["sleep", "100"]);
            }
            c => panic!("{c:?}"),
        }
        let r = run(&[
            "--root",
            "/r",
            "run",
            "-d",
            "--secret-file",
            "/s",
            "b1",
            "--",
            "sh",
            "-c",
            "x -y",
        ]);
        match r.command {
            Command::Run { detach, spec } => {
                assert!(detach);
                assert_eq!(spec.secret_file.as_deref(), Some("/s".as_ref()));
                assert_eq!(spec.command, ["sh", "-c", "x -y"]);
            }
            c => panic!("{c:?}"),
        }
        assert!(matches!(
            run(&["--root", "/r", "kill", "b1", "KILL"]).command,
            Command::Kill { signal, .. } if signal == "KILL"
        ));
        assert!(matches!(
            run(&["--root", "/r", "kill", "b1"]).command,
            Command::Kill { signal, .. } if signal == "TERM"
        ));
        assert!(matches!(
            run(&["--root", "/r", "delete", "--force", "b1"]).command,
            Command::Delete { force: true, .. }
        ));
        assert!(matches!(
            run(&["--root", "/r", "delete", "b1"]).command,
            Command::Delete { force: false, .. }
        ));
        assert!(matches!(
            run(&["--root", "/r", "list", "--format", "json"]).command,
            Command::List {
                format: Format::Json
            }
        ));
        assert!(matches!(
            run(&["--root", "/r", "recover", "--format=json"]).command,
            Command::Recover {
                format: Format::Json
            }
        ));
        assert!(matches!(
            run(&["--root", "/r", "cleanup-logs"]).command,
            Command::CleanupLogs {
                format: Format::Table
            }
        ));
        assert!(matches!(
            run(&["--root", "/r", "state", "b1"]).command,
            Command::State { .. }
        ));
        assert!(matches!(
            run(&["--root", "/r", "start", "b1"]).command,
            Command::Start {
                secret_file: None,
                ..
            }
        ));
        match run(&[
            "reaper-probe",
            "--child-exit",
            "9",
            "--boxes",
            "3",
            "--",
            "sleep",
            "5",
        ])
        .command
        {
            Command::ReaperProbe {
                child_exit,
                boxes,
                command,
            } => {
                assert_eq!((child_exit, boxes), (9, 3));
                assert_eq!(command, ["sleep", "5"]);
            }
            c => panic!("{c:?}"),
        }
        assert!(matches!(
            run(&["reaper-probe"]).command,
            Command::ReaperProbe { child_exit: 37, boxes: 2, command } if command == ["sleep", "1000"]
        ));
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let r = run(&[
            "list", "--root", "/r", "--helper", "/h.sock", "--shim", "/s",
        ]);
        assert_eq!(r.root.as_deref(), Some("/r".as_ref()));
        assert_eq!(r.helper.as_deref(), Some("/h.sock".as_ref()));
        assert_eq!(r.shim.as_deref(), Some("/s".as_ref()));
    }

    #[test]
    fn a_payload_keeps_its_own_options_and_a_lone_dash_dash() {
        let r = run(&["create", "b1", "--", "prog", "--root", "x", "--", "-h"]);
        match r.command {
            Command::Create { spec } => {
                assert_eq!(spec.command, ["prog", "--root", "x", "--", "-h"])
            }
            c => panic!("{c:?}"),
        }
        assert!(r.root.is_none());
    }

    #[test]
    fn usage_errors_name_the_word_and_the_usage() {
        assert!(matches!(err(&[]), ArgsError::MissingCommand));
        assert!(matches!(err(&["frobnicate"]), ArgsError::UnknownCommand(c) if c == "frobnicate"));
        let e = err(&["state"]);
        assert!(
            matches!(e, ArgsError::MissingArgument { what: "<ID>", .. }),
            "{e:?}"
        );
        assert_eq!(e.usage(), "refbox state <ID>");
        let e = err(&["state", "b1", "b2"]);
        assert!(
            matches!(&e, ArgsError::UnexpectedArgument { arg, .. } if arg == "b2"),
            "{e:?}"
        );
        let e = err(&["create", "b1", "sleep"]);
        assert!(e.to_string().contains("after `--`"), "{e}");
        assert!(matches!(
            err(&["create", "b1"]),
            ArgsError::MissingArgument {
                what: "-- <CMD>...",
                ..
            }
        ));
        assert!(matches!(
            err(&["create", "b1", "--"]),
            ArgsError::MissingArgument { .. }
        ));
        assert!(matches!(err(&["state", "../x"]), ArgsError::BadId { .. }));
        // Control bytes of a rejected word are escaped, never echoed raw.
        let e = err(&["state", "bad\u{1b}[31mid\u{7}"]).to_string();
        assert_eq!(e, "invalid box id 'bad\\u{1b}[31mid\\u{7}'");
        let e = err(&["\u{1b}]0;title\u{7}"]).to_string();
        assert!(!e.contains('\u{1b}') && !e.contains('\u{7}'), "{e:?}");
        assert!(
            matches!(err(&["state", "-d", "b1"]), ArgsError::UnexpectedOption { option, .. } if option == "-d")
        );
        assert!(matches!(
            err(&["delete", "--detach", "b1"]),
            ArgsError::UnexpectedOption { .. }
        ));
        assert!(matches!(
            err(&["list", "--format", "xml"]),
            ArgsError::BadValue { .. }
        ));
        assert!(matches!(
            err(&["list", "--format"]),
            ArgsError::Lexopt { .. }
        ));
        assert!(matches!(err(&["--root"]), ArgsError::Lexopt { .. }));
        assert!(
            matches!(err(&["state", "b1", "--", "x"]), ArgsError::UnexpectedOption { option, .. } if option == "--")
        );
        assert!(matches!(
            err(&["reaper-probe", "--child-exit", "300"]),
            ArgsError::BadValue { .. }
        ));
        assert!(matches!(
            err(&["--bogus", "list"]),
            ArgsError::UnexpectedOption { .. }
        ));
    }

    #[test]
    fn help_lines_fit_in_100_columns() {
        let mut texts = vec![top_help()];
        texts.extend(COMMANDS.iter().map(command_help));
        for t in texts {
            for l in t.lines() {
                assert!(l.chars().count() <= 100, "{l}");
            }
        }
        assert_eq!(wrap("aa bb cc", 5, 2), "aa bb\n  cc");
    }

    #[test]
    fn help_and_version_anywhere() {
        let Ok(Parsed::Help(top)) = parse(["--help"]) else {
            panic!()
        };
        for c in COMMANDS {
            let first_words: String = c.about.chars().take(40).collect();
            assert!(
                top.contains(&format!("  {:<13} {first_words}", c.name)),
                "{}",
                c.name
            );
            for words in [
                vec![c.name, "--help"],
                vec!["help", c.name],
                vec![c.name, "-h"],
            ] {
                match parse(words.iter().copied()) {
                    Ok(Parsed::Help(h)) => {
                        assert!(h.starts_with(&first_words), "{words:?}: {h}");
                        assert!(h.contains(c.usage), "{words:?}");
                        assert!(h.contains("--root <DIR>"), "{words:?}");
                    }
                    other => panic!("{words:?}: {other:?}"),
                }
            }
        }
        assert!(matches!(parse(["-V"]), Ok(Parsed::Version)));
        assert!(matches!(
            parse(["--root", "/r", "--version"]),
            Ok(Parsed::Version)
        ));
        assert!(matches!(parse(["help"]), Ok(Parsed::Help(h)) if h == top));
    }

    #[test]
    fn each_command_documents_exactly_the_options_it_takes() {
        for c in COMMANDS {
            let help = command_help(c);
            // The long names that start an option line (`  -d, --detach  ...`).
            let documented: Vec<&str> = help
                .lines()
                .map(str::trim_start)
                .filter(|l| l.starts_with('-'))
                .filter_map(|l| l.split([' ', ',']).find(|w| w.starts_with("--")))
                .filter(|o| !["--root", "--helper", "--help"].contains(o))
                .collect();
            assert_eq!(documented, c.options, "{}", c.name);
            assert_eq!(c.usage.contains("-- <CMD>"), c.payload, "{}", c.name);
        }
    }
}
