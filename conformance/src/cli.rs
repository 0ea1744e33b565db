//! The `doppel` command line. `doppel run|list|doctor|bench|compare` are the user
//! commands; any other invocation is read as libtest arguments (`--list
//! --format terse`, `--exact NAME`, `--ignored`, filters), so nextest can
//! drive `doppel` and the `suite` test target alike.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::adapter::Adapter;
use crate::report::{self, Format, Report};
use crate::runner::{self, Subject};

/// Exit code of `doppel run`: cases ran and no MUST case failed.
pub const EXIT_OK: u8 = 0;
/// Exit code of `doppel run`: a MUST case failed.
pub const EXIT_MUST_FAILED: u8 = 1;
/// Exit code: the command line, the adapter or an input file is wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of `doppel run`: nothing could be tested (no case passed or
/// failed: the runtime's program is missing, every scene failed to stage,
/// or nothing applies to the adapter); one line on stderr says why.
pub const EXIT_NOTHING_TESTED: u8 = 3;

/// The exit codes, for `doppel run --help`.
const EXIT_CODES: &str = "Exit codes:\n  0  cases ran and no MUST case failed\n  1  a MUST case failed\n  2  usage error: bad arguments, adapter or input file\n  3  nothing was tested: no case could run to a verdict (the line on stderr says why)";

/// Environment variable: an adapter file for the libtest front end (default: refbox).
pub const ADAPTER_ENV: &str = "DOPPEL_ADAPTER";
/// Environment variable: `{bindir}` for the libtest front end (like `--bindir`).
pub const BINDIR_ENV: &str = "DOPPEL_BINDIR";

/// doppel: conformance suite for runtimes that supervise long-lived processes.
///
/// Each case runs in its own world (fresh PID + mount namespaces) where the
/// harness stages PID reuse, impostors, planted files and zombies, then asks
/// the runtime through its adapter and judges by evidence.
#[derive(Debug, Parser)]
#[command(name = "doppel", version, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Which runtime to test.
#[derive(Debug, clap::Args)]
pub struct SubjectArgs {
    /// Adapter file (TOML). Default: refbox built from this workspace.
    #[arg(long, value_name = "FILE")]
    pub adapter: Option<PathBuf>,
    /// Directory substituted for `{bindir}` in the adapter. Default: where
    /// refbox's binaries are (next to `doppel`, or $DOPPEL_REFBOX_DIR).
    #[arg(long, value_name = "DIR")]
    pub bindir: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the catalog (or the cases matching FILTERs) and report.
    #[command(after_help = EXIT_CODES)]
    Run {
        /// Which runtime.
        #[command(flatten)]
        subject: SubjectArgs,
        /// Report format.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Write the report here instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Cases run at once (each in its own world).
        #[arg(long, short, default_value_t = 4)]
        jobs: usize,
        /// Match FILTERs exactly instead of by substring.
        #[arg(long)]
        exact: bool,
        /// Skip cases whose id contains this.
        #[arg(long, value_name = "SUBSTRING")]
        skip: Vec<String>,
        /// Case id filters (substring of `area::case`).
        filters: Vec<String>,
    },
    /// List the catalog and whether each case can run here.
    List {
        /// Which runtime.
        #[command(flatten)]
        subject: SubjectArgs,
    },
    /// Check this machine's capabilities and the adapter.
    Doctor {
        /// Which runtime.
        #[command(flatten)]
        subject: SubjectArgs,
    },
    /// Time state, list and recovery with N live boxes, runtimes side by side.
    ///
    /// Latency of state, list and a recovery pass with N live boxes, for
    /// each runtime side by side in one run (Markdown table of medians and
    /// ratios to the fastest). Every box is deleted (--force) afterwards.
    ///
    /// With several box counts (`--boxes 10,100,1000`) each count is a run
    /// of its own, one after the other, followed by how list and recovery
    /// grow with N (medians, ratios, a linear fit per runtime); `--plot`
    /// draws that as an SVG chart.
    Bench {
        /// Adapter files, one per runtime (repeatable). Default: refbox.
        #[arg(long, value_name = "FILE")]
        adapter: Vec<PathBuf>,
        /// Directory substituted for `{bindir}` in the adapters.
        #[arg(long, value_name = "DIR")]
        bindir: Option<PathBuf>,
        /// Live boxes per runtime; several (comma-separated or repeated)
        /// for one run per count.
        #[arg(long, value_name = "N", value_delimiter = ',', default_values_t = [100])]
        boxes: Vec<usize>,
        /// Write an SVG chart of list and recovery latency against the box
        /// counts, one line per runtime (log-log).
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        /// Samples of state and list per runtime.
        #[arg(long, default_value_t = 21)]
        samples: usize,
        /// Recovery passes per runtime.
        #[arg(long, default_value_t = 5)]
        recovery_samples: usize,
    },
    /// Compare JSON reports: a Markdown table, one column per runtime.
    Compare {
        /// After the table, one line per failure (what the runtime did) and
        /// one line per run (version, counts, wall time).
        #[arg(long)]
        evidence: bool,
        /// Reports written by `doppel run --format json`.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
    },
}

const SUBCOMMANDS: [&str; 9] = [
    "run",
    "list",
    "doctor",
    "bench",
    "compare",
    "help",
    "--help",
    "-h",
    "--version",
];

fn subject(args: &SubjectArgs) -> Result<Subject, String> {
    match &args.adapter {
        None => {
            let mut s = Subject::default_refbox();
            if let Some(b) = &args.bindir {
                s.bindir = Ok(b.clone());
            }
            Ok(s)
        }
        Some(path) => {
            let a = Adapter::load(path).map_err(|e| e.to_string())?;
            Ok(Subject::from_adapter(a, args.bindir.clone()))
        }
    }
}

fn write_out(output: Option<&PathBuf>, text: &str) -> Result<(), String> {
    match output {
        Some(p) => {
            std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .map_err(|e| format!("cannot write the report: {e}"))
        }
    }
}

/// Hidden modes a world may re-exec this binary in (impostor, world init).
/// Returns only when this process is an ordinary invocation.
fn dispatch_hidden_modes() {
    crate::world::dispatch_hidden_modes();
}

/// `doppel`'s main.
pub fn main() -> ExitCode {
    dispatch_hidden_modes();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1) {
        None => {
            let _ = <Cli as clap::CommandFactory>::command().print_help();
            ExitCode::from(2)
        }
        Some(a) if SUBCOMMANDS.contains(&a.as_str()) || a == "-V" => run_cli(Cli::parse()),
        Some(_) => libtest(),
    }
}

/// The `suite` test target's main: libtest mode only.
pub fn suite_main() -> ExitCode {
    dispatch_hidden_modes();
    libtest()
}

fn libtest() -> ExitCode {
    if let Err(why) = crate::scene::command_deadline_setting() {
        eprintln!("doppel: {why}");
        return ExitCode::from(EXIT_USAGE);
    }
    let args = libtest_mimic::Arguments::from_args();
    let subject = match std::env::var_os(ADAPTER_ENV) {
        None => Subject::default_refbox(),
        Some(p) => match Adapter::load(p.as_ref()) {
            Ok(a) => Subject::from_adapter(a, std::env::var_os(BINDIR_ENV).map(PathBuf::from)),
            Err(e) => {
                eprintln!("doppel: {e}");
                return ExitCode::from(2);
            }
        },
    };
    runner::libtest_main(args, subject).exit_code()
}

/// For a command that opens worlds: removes the world dirs dead doppels
/// left (SIGKILLed with worlds open), and on SIGINT, SIGTERM or SIGHUP
/// removes this process's own before it exits (128 + the signal): its
/// worlds end with it, their dirs must too.
fn guard_world_dirs() {
    let stale = doppel_harness::world::remove_stale_workdirs();
    if !stale.is_empty() {
        eprintln!(
            "doppel: removed {} world dir(s) a doppel that is gone left behind",
            stale.len()
        );
    }
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            doppel_harness::world::close_for_exit();
            let name = match sig {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            eprintln!("doppel: stopped by {name}; its worlds end with it");
            std::process::exit(128 + sig);
        }
    });
}

fn run_cli(cli: Cli) -> ExitCode {
    match execute(cli) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("doppel: {msg}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn execute(cli: Cli) -> Result<ExitCode, String> {
    crate::scene::command_deadline_setting()?;
    if matches!(cli.command, Command::Run { .. } | Command::Bench { .. }) {
        guard_world_dirs();
    }
    match cli.command {
        Command::Run {
            subject: sa,
            format,
            output,
            jobs,
            exact,
            skip,
            filters,
        } => {
            let subject = subject(&sa)?;
            if subject.needs_bindir() {
                if let Err(e) = &subject.bindir {
                    return Err(e.clone());
                }
            }
            let cases = runner::select(&filters, exact, &skip);
            if cases.is_empty() {
                return Err(format!("no case matches {filters:?}"));
            }
            if let Some(why) = subject.cannot_make_boxes() {
                eprintln!("doppel: nothing can be tested: {why}");
                return Ok(ExitCode::from(EXIT_NOTHING_TESTED));
            }
            for m in subject.missing_programs() {
                eprintln!("doppel: warning: {m}");
            }
            let report = runner::run_all(&cases, &subject, jobs);
            write_out(output.as_ref(), &report::render(&report, format))?;
            if output.is_some() || format != Format::Human {
                eprintln!(
                    "doppel: {} passed, {} failed ({} MUST), {} not applicable, {} not staged",
                    report.summary.pass,
                    report.summary.fail,
                    report.summary.must_fail,
                    report.summary.not_applicable,
                    report.summary.not_staged
                );
            }
            if report.failed() {
                return Ok(ExitCode::from(EXIT_MUST_FAILED));
            }
            if let Some(why) = report.nothing_tested() {
                eprintln!("doppel: {why}");
                return Ok(ExitCode::from(EXIT_NOTHING_TESTED));
            }
            Ok(ExitCode::from(EXIT_OK))
        }
        Command::List { subject: sa } => {
            let subject = subject(&sa)?;
            write_out(None, &(runner::list_lines(&subject).join("\n") + "\n"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor { subject: sa } => {
            let subject = subject(&sa)?;
            let (text, ok) = runner::doctor(&subject);
            write_out(None, &text)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Bench {
            adapter,
            bindir,
            boxes,
            samples,
            recovery_samples,
            plot,
        } => {
            let mut subjects = Vec::new();
            if adapter.is_empty() {
                subjects.push(subject(&SubjectArgs {
                    adapter: None,
                    bindir: bindir.clone(),
                })?);
            }
            for a in adapter {
                subjects.push(subject(&SubjectArgs {
                    adapter: Some(a),
                    bindir: bindir.clone(),
                })?);
            }
            for s in &subjects {
                if s.needs_bindir() {
                    if let Err(e) = &s.bindir {
                        return Err(e.clone());
                    }
                }
            }
            let mut reports = Vec::new();
            for (i, &n) in boxes.iter().enumerate() {
                if boxes.len() > 1 {
                    eprintln!("== {n} boxes ({} of {})", i + 1, boxes.len());
                }
                let opts = crate::bench::BenchOptions {
                    boxes: n,
                    samples: samples.max(1),
                    recovery_samples: recovery_samples.max(1),
                };
                let report = crate::bench::run(&subjects, &opts).map_err(|e| e.0)?;
                // Each count's table as soon as it is measured.
                write_out(None, &format!("{}\n", crate::bench::render(&report)))?;
                reports.push(report);
            }
            if reports.len() > 1 {
                write_out(None, &crate::bench::render_growth(&reports))?;
            }
            if let Some(p) = plot {
                write_out(Some(&p), &crate::plot::svg(&reports))?;
                eprintln!("chart written to {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Compare { evidence, reports } => {
            let mut parsed: Vec<Report> = Vec::new();
            for p in &reports {
                let text = crate::input::read_text(p, crate::input::REPORT_CAP)
                    .map_err(|e| format!("compare: {e}"))?;
                let r: Report = serde_json::from_str(&text)
                    .map_err(|e| format!("{}: not a doppel JSON report: {e}", p.display()))?;
                if r.schema != report::REPORT_SCHEMA {
                    return Err(format!(
                        "{}: schema {:?}, this doppel reads {:?}",
                        p.display(),
                        r.schema,
                        report::REPORT_SCHEMA
                    ));
                }
                parsed.push(r);
            }
            let text = if evidence {
                report::compare_with_evidence(&parsed)
            } else {
                report::compare(&parsed)
            };
            write_out(None, &text)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
