//! The `refbox` command line: argument parsing, output formatting and exit
//! codes. A thin layer over [`crate::Runtime`]; a fixture runtime reuses it
//! with other strategies through [`main_with`].
//!
//! Exit codes (a contract for adapters):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | error (message on stderr) |
//! | 2 | usage error (from clap) |
//! | 3 | the box is not running: nothing was signalled or started (`kill`, `start` on a running box) |
//! | 4 | `list`/`recover`/`cleanup-logs` handled every healthy box but some entries had errors (named on stderr and in the JSON `errors`) |

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ids::BoxId;
use crate::runtime::{CreateOptions, KillOutcome, Runtime, RuntimeError};
use crate::status::{BoxState, ListReport};
use crate::strategy::Strategies;

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: an error, described on stderr.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: the box is not running, so nothing was done.
pub const EXIT_NOT_RUNNING: u8 = 3;
/// Exit code: the healthy boxes were handled, but some entries had errors.
pub const EXIT_PARTIAL: u8 = 4;

/// refbox: a reference runtime whose process identity cannot be fooled.
///
/// Each box is a workload supervised by its own `refbox-shim <id>` process.
/// The shim's identity (pid, start time, boot id, pidfs inode) is recorded by
/// the shim itself before it execs; every later command verifies it through a
/// pidfd before trusting or signalling the pid.
#[derive(Debug, Parser)]
#[command(
    name = "refbox",
    version,
    max_term_width = 100,
    after_help = "Exit codes: 0 done; 1 error; 2 usage; 3 not running / already running, nothing done; \
                  4 some entries unreadable (named on stderr), the others handled."
)]
pub struct Cli {
    /// State root. Default: $XDG_RUNTIME_DIR/refbox, or /run/refbox as root.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// The shim executable. Default: `refbox-shim` next to this executable
    /// (or $REFBOX_SHIM).
    #[arg(long, global = true, value_name = "PATH", hide = true)]
    pub shim: Option<PathBuf>,

    /// Act through the refbox-helper listening on this socket: box cgroups
    /// come from it, and `kill`/`delete --force` signal through it (the
    /// shim's own start request stays direct). Without it refbox acts itself.
    #[arg(long, global = true, value_name = "SOCKET")]
    pub helper: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands, OCI-runtime-like.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and start a box (create + start).
    Run {
        /// Return once the payload is started instead of waiting for it to exit.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Box id and payload.
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Create a box: its shim is started and waits for `start`.
    Create {
        /// Box id and payload.
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Start the payload of a created box, or restart a stopped one.
    Start {
        /// Box id.
        id: BoxId,
        /// Secrets for a restarted payload (see `create --secret-file`).
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
    },
    /// Print a box's state as JSON: id, status, pid, identity, reason.
    State {
        /// Box id.
        id: BoxId,
    },
    /// List every box under the root; bad entries are named on stderr.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Send a signal to a running box (verified identity only). Exits 3 when
    /// the box is not running.
    Kill {
        /// Box id.
        id: BoxId,
        /// TERM, KILL, INT, HUP, QUIT, USR1, USR2, ABRT (with or without SIG,
        /// or as a number). Default TERM.
        #[arg(default_value = "TERM")]
        signal: String,
    },
    /// Delete a stopped box. With --force, kill a running box first.
    Delete {
        /// Kill the box first if it is running.
        #[arg(short, long)]
        force: bool,
        /// Box id.
        id: BoxId,
    },
    /// Classify every box (adopt running, mark dead stopped, keep unknown,
    /// leave corrupt in place) and print what was done.
    Recover {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Remove log dirs whose owner (per `log/.sentinel`) is dead or recycled.
    CleanupLogs {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Library-mode check: does the scoped reaper leave this process's own
    /// children alone?
    ///
    /// Runs boxes in-process, as a daemon embedding `refbox::Runtime` does;
    /// a child of this process (`/bin/sh -c 'exit CODE'`) exits and is left
    /// unreaped; the boxes are force-deleted so the reaper reaps their shims
    /// while that status is pending; then this process waits for its child
    /// itself. Prints JSON (`child.code`, `child.error`, `reaped`, `kept`);
    /// exits 0 when the wait got CODE, 1 when the status was lost. The
    /// suite's `zombies::reaper_scoped` runs it.
    ReaperProbe {
        /// The exit code of the embedder's own child.
        #[arg(long, value_name = "CODE", default_value_t = 37)]
        child_exit: u8,
        /// Boxes whose shims the reaper reaps while the child's status waits.
        #[arg(long, value_name = "N", default_value_t = 2)]
        boxes: usize,
        /// The boxes' payload (a long-lived program).
        #[arg(last = true, value_name = "CMD", default_values_t = ["sleep".to_string(), "1000".to_string()])]
        command: Vec<String>,
    },
}

/// Box id and payload for `create` and `run`.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// Box id: `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
    pub id: BoxId,
    /// Environment for the payload, `KEY=VALUE` lines (non-secret).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Secret bytes handed to the payload on its stdin; they never appear in
    /// any argv or environ, nor on disk under the root.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// The payload: program and arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Output format for `list`, `recover`, `cleanup-logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document for programs.
    Json,
}

/// `refbox`'s `main`: parse the process arguments and run with refbox's own
/// strategies.
pub fn main() -> ExitCode {
    main_with(Strategies::default())
}

/// Parse the process arguments and run with the given strategies. A fixture
/// runtime (e.g. flawbox) calls this with one strategy swapped.
pub fn main_with(strategies: Strategies) -> ExitCode {
    // Files and dirs get their modes at creation; the umask is belt and braces.
    crate::sys::set_umask_077();
    let cli = Cli::parse();
    run_cli(cli, strategies)
}

/// Run a parsed command line; returns the exit code.
pub fn run_cli(cli: Cli, strategies: Strategies) -> ExitCode {
    match execute(cli, strategies) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            print_error(&err);
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// `refbox: error: cause: cause...` on stderr.
fn print_error(err: &dyn std::error::Error) {
    let mut msg = format!("refbox: {err}");
    let mut source = err.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    eprintln!("{msg}");
}

fn execute(cli: Cli, strategies: Strategies) -> Result<u8, RuntimeError> {
    let root = match cli.root {
        Some(r) => r,
        None => crate::layout::default_root(),
    };
    let mut rt = Runtime::open(&root, strategies)?;
    if let Some(shim) = cli
        .shim
        .or_else(|| std::env::var_os("REFBOX_SHIM").map(PathBuf::from))
    {
        rt.set_shim_path(shim);
    }
    if let Some(sock) = cli.helper {
        rt.set_helper(sock);
    }
    // Buffered: stdout is line-buffered, and `list --format json` of 1000
    // boxes was ~14 000 write calls. Flushed when `out` drops, on return.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match cli.command {
        Command::Run { detach, spec } => {
            let id = spec.id.clone();
            rt.create(&create_options(spec)?)?;
            rt.start(&id, None)?;
            if detach {
                return Ok(EXIT_OK);
            }
            let state = rt.wait_stopped(&id)?;
            print_json(&mut out, &state);
            Ok(state.exit.as_ref().map_or(EXIT_OK, |e| e.shell_code()))
        }
        Command::Create { spec } => {
            rt.create(&create_options(spec)?)?;
            Ok(EXIT_OK)
        }
        Command::Start { id, secret_file } => {
            let secret = secret_file.map(|p| read_input(&p)).transpose()?;
            match rt.start(&id, secret) {
                Ok(()) => Ok(EXIT_OK),
                Err(RuntimeError::AlreadyRunning { id }) => {
                    eprintln!("refbox: box {id} is already running; nothing done");
                    Ok(EXIT_NOT_RUNNING)
                }
                Err(e) => Err(e),
            }
        }
        Command::State { id } => {
            let state = rt.state(&id)?;
            print_json(&mut out, &state);
            Ok(EXIT_OK)
        }
        Command::List { format } => {
            let report = rt.list();
            print_list(&mut out, &report, format);
            Ok(partial_code(report.errors.is_empty()))
        }
        Command::Kill { id, signal } => {
            let sig = (rt.strategies().parse_signal)(&signal).map_err(|source| {
                RuntimeError::BadSignal {
                    given: signal.clone(),
                    source,
                }
            })?;
            match rt.kill(&id, sig)? {
                KillOutcome::Signalled { pid } => {
                    eprintln!("refbox: sent signal {sig} to box {id} (shim pid {pid})");
                    Ok(EXIT_OK)
                }
                KillOutcome::NotRunning { state } => {
                    eprintln!(
                        "refbox: box {id} is not running ({}: {}); nothing signalled",
                        state.status,
                        state.reason.as_deref().unwrap_or("-")
                    );
                    Ok(EXIT_NOT_RUNNING)
                }
            }
        }
        Command::Delete { force, id } => {
            rt.delete(&id, force)?;
            Ok(EXIT_OK)
        }
        Command::Recover { format } => {
            let report = rt.recover();
            match format {
                Format::Json => print_json(&mut out, &report),
                Format::Table => {
                    let _ = writeln!(out, "{:<20} {:<14} {:<8} DETAIL", "ID", "ACTION", "PID");
                    for b in &report.boxes {
                        let pid = b.pid.map_or("-".to_string(), |p| p.to_string());
                        let _ =
                            writeln!(out, "{:<20} {:<14} {:<8} {}", b.id, b.action, pid, b.detail);
                    }
                }
            }
            print_entry_errors(&report.errors);
            Ok(partial_code(report.errors.is_empty()))
        }
        Command::ReaperProbe {
            child_exit,
            boxes,
            command,
        } => reaper_probe(
            &rt,
            &mut out,
            &crate::embed::ProbeOptions {
                child_exit,
                boxes,
                payload: command,
            },
        ),
        Command::CleanupLogs { format } => {
            let report = rt.cleanup_logs();
            match format {
                Format::Json => print_json(&mut out, &report),
                Format::Table => {
                    for b in &report.boxes {
                        let _ = writeln!(out, "{:<20} {:<8} {}", b.id, b.action, b.reason);
                    }
                }
            }
            print_entry_errors(&report.errors);
            Ok(partial_code(report.errors.is_empty()))
        }
    }
}

fn reaper_probe(
    rt: &Runtime,
    out: &mut impl Write,
    opts: &crate::embed::ProbeOptions,
) -> Result<u8, RuntimeError> {
    let report = match crate::embed::reaper_probe(rt, opts) {
        Ok(r) => r,
        Err(err) => {
            print_error(&err);
            return Ok(EXIT_ERROR);
        }
    };
    print_json(out, &report);
    if report.kept {
        return Ok(EXIT_OK);
    }
    let got = match (&report.child.error, report.child.code, report.child.signal) {
        (Some(e), _, _) => format!("its wait failed: {e}"),
        (None, Some(c), _) => format!("its wait returned exit code {c}"),
        (None, None, Some(s)) => format!("its wait returned signal {s}"),
        (None, None, None) => "its wait returned nothing".to_string(),
    };
    eprintln!(
        "refbox: the embedder's child (pid {}) exited {}, but {got}: its status was taken by another wait",
        report.child.pid, report.child.expected
    );
    Ok(EXIT_ERROR)
}

fn partial_code(clean: bool) -> u8 {
    if clean { EXIT_OK } else { EXIT_PARTIAL }
}

fn create_options(spec: SpecArgs) -> Result<CreateOptions, RuntimeError> {
    let env = match &spec.env_file {
        Some(p) => crate::config::parse_env_file(&read_input(p)?).map_err(|source| {
            RuntimeError::Input {
                path: p.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, source),
            }
        })?,
        None => Vec::new(),
    };
    let secret = spec.secret_file.as_deref().map(read_input).transpose()?;
    Ok(CreateOptions {
        id: spec.id,
        argv: spec.command,
        env,
        secret,
    })
}

/// Reads a user-given input file (env or secret file), capped at 1 MiB.
fn read_input(path: &std::path::Path) -> Result<Vec<u8>, RuntimeError> {
    crate::fsread::read_user_input(path, 1 << 20).map_err(|source| RuntimeError::Read { source })
}

fn print_json<T: serde::Serialize>(out: &mut impl Write, value: &T) {
    let _ = serde_json::to_writer_pretty(&mut *out, value);
    let _ = writeln!(out);
}

fn print_list(out: &mut impl Write, report: &ListReport, format: Format) {
    match format {
        Format::Json => print_json(out, report),
        Format::Table => {
            let _ = writeln!(
                out,
                "{:<20} {:<8} {:<8} {:<9} REASON",
                "ID", "STATUS", "PID", "IDENTITY"
            );
            for b in &report.boxes {
                print_row(out, b);
            }
        }
    }
    print_entry_errors(&report.errors);
}

fn print_row(out: &mut impl Write, b: &BoxState) {
    let pid = b.pid.map_or("-".to_string(), |p| p.to_string());
    let _ = writeln!(
        out,
        "{:<20} {:<8} {:<8} {:<9} {}",
        b.id,
        b.status,
        pid,
        b.identity,
        b.reason.as_deref().unwrap_or("")
    );
}

fn print_entry_errors(errors: &[crate::status::EntryError]) {
    for e in errors {
        let path = e.path.display().to_string();
        if e.error.contains(&path) {
            eprintln!("refbox: {}", e.error);
        } else {
            eprintln!("refbox: {path}: {}", e.error);
        }
    }
}
