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
//! | 2 | usage error (grammar and help: [`crate::args`]) |
//! | 3 | the box is not running: nothing was signalled or started (`kill`, `start` on a running box) |
//! | 4 | `list`/`recover`/`cleanup-logs` handled every healthy box but some entries had errors (named on stderr and in the JSON `errors`) |

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::args::{ArgsError, Parsed};
pub use crate::args::{Cli, Command, Format, SpecArgs};
use crate::runtime::{CreateOptions, KillOutcome, Runtime, RuntimeError};
use crate::status::{BoxState, ListReport};
use crate::strategy::Strategies;

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: an error, described on stderr.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: the command line is not understood.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the box is not running, so nothing was done.
pub const EXIT_NOT_RUNNING: u8 = 3;
/// Exit code: the healthy boxes were handled, but some entries had errors.
pub const EXIT_PARTIAL: u8 = 4;

/// `refbox`'s `main`: parse the process arguments and run with refbox's own
/// strategies.
pub fn main() -> ExitCode {
    main_with(Strategies::default())
}

/// Parse the process arguments and run with the given strategies. A fixture
/// runtime (e.g. flawbox) calls this with one strategy swapped.
pub fn main_with(strategies: Strategies) -> ExitCode {
    ExitCode::from(run_process(strategies))
}

/// The whole `refbox` process, for its `#![no_main]` binary
/// (`src/bin/refbox.rs`), which starts without Rust's runtime start-up:
/// does what of it matters ([`crate::sys::prepare_cli_process`]), runs
/// refbox, turns a panic into exit code 101 as Rust's `main` would, and
/// flushes stdout (Rust's start-up code would have done it at exit).
/// Returns the exit code.
pub fn process_main() -> i32 {
    crate::sys::prepare_cli_process();
    let code = std::panic::catch_unwind(|| run_process(Strategies::default())).unwrap_or(101);
    let _ = std::io::stdout().flush();
    i32::from(code)
}

fn run_process(strategies: Strategies) -> u8 {
    run_args(std::env::args_os().skip(1), strategies)
}

/// Runs refbox on `args` (the arguments after the program name) with the
/// given strategies, as the process would; returns the exit code. A fixture
/// runtime (e.g. flawbox) uses it to change what refbox is asked, or how
/// it answers.
pub fn run_args(args: impl IntoIterator<Item = std::ffi::OsString>, strategies: Strategies) -> u8 {
    // Files and dirs get their modes at creation; the umask is belt and braces.
    crate::sys::set_umask_077();
    match crate::args::parse(args) {
        Ok(Parsed::Run(cli)) => execute(cli, strategies).unwrap_or_else(|err| {
            print_error(&err);
            EXIT_ERROR
        }),
        Ok(Parsed::Help(text)) => {
            print!("{text}");
            EXIT_OK
        }
        Ok(Parsed::Version) => {
            println!("refbox {}", env!("CARGO_PKG_VERSION"));
            EXIT_OK
        }
        Err(e) => {
            print_usage_error(&e);
            EXIT_USAGE
        }
    }
}

/// `refbox: error: ...`, the usage line and where to find more (stderr).
fn print_usage_error(e: &ArgsError) {
    eprintln!(
        "refbox: error: {}\n\nUsage: {}\n\nFor more information, try '--help'.",
        crate::runtime::chain(e),
        e.usage()
    );
}

/// Run a parsed command line; returns the exit code.
pub fn run_cli(cli: Cli, strategies: Strategies) -> ExitCode {
    ExitCode::from(execute(cli, strategies).unwrap_or_else(|err| {
        print_error(&err);
        EXIT_ERROR
    }))
}

/// `refbox: error: cause: cause...` on stderr.
fn print_error(err: &dyn std::error::Error) {
    eprintln!("refbox: {}", crate::runtime::chain(err));
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
        Command::Daemon => {
            drop(out);
            serve_daemon(&rt)
        }
        Command::DaemonStatus => {
            let (code, status, pid, reason) = match rt.daemon_status()? {
                crate::runtime::DaemonStatus::Running(p) => {
                    (EXIT_OK, "running", Some(p.pid.get()), String::new())
                }
                crate::runtime::DaemonStatus::Stopped { pid, reason } => (
                    EXIT_NOT_RUNNING,
                    "stopped",
                    pid.map(|p| p.get()),
                    match reason {
                        crate::identity::AbsentReason::NoRecord => {
                            format!("no daemon record ({})", crate::runtime::DAEMON_RECORD)
                        }
                        other => other.to_string(),
                    },
                ),
            };
            print_json(
                &mut out,
                &serde_json::json!({"status": status, "pid": pid, "reason": reason}),
            );
            Ok(code)
        }
        Command::DaemonStop => {
            match rt.daemon_stop()? {
                Some(pid) => eprintln!("refbox: daemon (pid {pid}) stopped"),
                None => eprintln!("refbox: no daemon running"),
            }
            Ok(EXIT_OK)
        }
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

/// `refbox daemon`: lock and record, adopt every box, then wait for
/// SIGTERM/SIGINT/SIGHUP (registered first, so one sent while it starts is
/// not lost) and end cleanly.
fn serve_daemon(rt: &Runtime) -> Result<u8, RuntimeError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|source| {
            RuntimeError::Daemon(crate::runtime::DaemonError::SelfIdentity {
                what: format!("cannot register for SIGTERM: {source}"),
            })
        })?;
    let guard = rt.daemon_begin()?;
    let report = rt.recover();
    eprintln!(
        "refbox: daemon (pid {}) serves {}: {} box(es) recovered, {} unreadable",
        guard.pid(),
        rt.layout().root().display(),
        report.boxes.len(),
        report.errors.len()
    );
    print_entry_errors(&report.errors);
    let sig = signals.forever().next();
    rt.daemon_end(guard);
    eprintln!(
        "refbox: daemon ends (signal {})",
        sig.map_or("?".to_string(), |s| s.to_string())
    );
    Ok(EXIT_OK)
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
