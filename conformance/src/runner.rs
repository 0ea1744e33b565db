//! Running cases: the subject (adapter + where its binaries are), the
//! machine's capabilities, one world per case, and two front ends over the
//! same [`run_case`]: `doppel run` (reports) and the libtest protocol (so
//! nextest drives the catalog, one process per case).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::adapter::{Adapter, Operation, Vars};
use crate::catalog::{Case, Level, MachineNeed, Outcome};
use crate::report::{CaseReport, Report, RuntimeInfo};
use crate::scene::{Machine, Scene};

/// The runtime under test: its adapter and where `{bindir}` points.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The validated adapter.
    pub adapter: Adapter,
    /// The value of `{bindir}`, or why there is none.
    pub bindir: Result<PathBuf, String>,
}

impl Subject {
    /// The default subject: the embedded refbox adapter and refbox's binaries
    /// from this workspace.
    pub fn default_refbox() -> Subject {
        Subject {
            adapter: Adapter::embedded_refbox(),
            bindir: crate::locate::refbox_dir().map_err(|e| e.to_string()),
        }
    }

    /// A subject from an adapter file; `{bindir}` comes from `bindir`, else
    /// from where refbox's binaries are (flawbox lives next to them).
    pub fn from_adapter(adapter: Adapter, bindir: Option<PathBuf>) -> Subject {
        let bindir = match bindir {
            Some(b) => Ok(b),
            None => crate::locate::refbox_dir().map_err(|e| e.to_string()),
        };
        Subject { adapter, bindir }
    }

    /// Whether the adapter's commands need `{bindir}`.
    pub fn needs_bindir(&self) -> bool {
        self.adapter
            .operations()
            .filter_map(|op| self.adapter.command(op))
            .chain(self.adapter.version.as_ref())
            .any(|t| t.uses("bindir"))
    }

    /// The distinct programs the adapter's commands run, each with the
    /// first command that runs it, as the host resolves them (`{bindir}`
    /// expanded; a bare name searched on `PATH`), and whether it is there.
    fn programs(&self) -> Vec<(String, String, bool)> {
        let bindir = self.bindir.as_ref().ok().map(|p| p.display().to_string());
        let vars = Vars {
            bindir: bindir.as_deref(),
            ..Vars::default()
        };
        let mut out: Vec<(String, String, bool)> = Vec::new();
        for op in self.adapter.operations() {
            let Some(first) = self.adapter.command(op).and_then(|t| t.elements().first()) else {
                continue;
            };
            let Ok(program) = crate::adapter::expand_str(first, &vars) else {
                continue;
            };
            if out.iter().any(|(p, _, _)| *p == program) {
                continue;
            }
            let found = program_exists(&program);
            out.push((program, format!("commands.{op}"), found));
        }
        out
    }

    /// One line for each program of the adapter's commands that is not
    /// there (cases that run it will not be staged).
    pub fn missing_programs(&self) -> Vec<String> {
        self.programs()
            .into_iter()
            .filter(|(_, _, found)| !found)
            .map(|(p, key, _)| format!("{key} runs {p}, which does not exist or is not executable"))
            .collect()
    }

    /// Why no box can be made, when the program of the command that makes
    /// boxes (`run`, else `create`) is not there.
    pub fn cannot_make_boxes(&self) -> Option<String> {
        let op = [Operation::Run, Operation::Create]
            .into_iter()
            .find(|op| self.adapter.has(*op))?;
        let t = self.adapter.command(op)?;
        let bindir = self.bindir.as_ref().ok().map(|p| p.display().to_string());
        let program = crate::adapter::expand_str(
            t.elements().first()?,
            &Vars {
                bindir: bindir.as_deref(),
                ..Vars::default()
            },
        )
        .ok()?;
        (!program_exists(&program)).then(|| {
            format!(
                "commands.{op} runs {program}, which does not exist or is not executable{}",
                if t.elements().first().is_some_and(|e| e.contains("{bindir}")) {
                    format!(
                        " ({{bindir}} is {})",
                        bindir.as_deref().unwrap_or("not set")
                    )
                } else {
                    String::new()
                }
            )
        })
    }

    /// The first line of the version command's stdout, or why there is
    /// none. It runs in a world like every runtime command: killed at the
    /// command deadline, its output capped, never outliving doppel.
    pub fn version_answer(&self) -> Result<String, String> {
        let t = self
            .adapter
            .version
            .as_ref()
            .ok_or_else(|| "no version command (runtime.version)".to_string())?;
        let bindir = self.bindir.as_ref().ok().map(|p| p.display().to_string());
        let argv = t
            .expand(&Vars {
                bindir: bindir.as_deref(),
                ..Vars::default()
            })
            .map_err(|e| e.to_string())?;
        let mut world = crate::world::World::open_with(self.adapter.world)
            .map_err(|e| format!("cannot open a world to run it: {e}"))?;
        let deadline = crate::scene::command_deadline();
        let e = world
            .exec(&argv, &[], &[], deadline)
            .map_err(|e| format!("`{}`: {e}", argv.join(" ")))?;
        if e.timed_out {
            return Err(format!(
                "`{}` still running at the {} ms deadline",
                argv.join(" "),
                deadline.as_millis()
            ));
        }
        let out = String::from_utf8_lossy(&e.stdout);
        match out.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(line) => Ok(line.chars().take(200).collect()),
            None => Err(format!(
                "`{}` printed nothing (exit {:?})",
                argv.join(" "),
                e.code
            )),
        }
    }

    /// The version line, when the version command answers.
    pub fn version(&self) -> Option<String> {
        self.version_answer().ok()
    }

    /// Runtime info for reports.
    pub fn info(&self) -> RuntimeInfo {
        RuntimeInfo {
            name: self.adapter.name.clone(),
            version: self.version(),
            adapter: self.adapter.source.clone(),
        }
    }
}

/// Why a case cannot be staged on this machine, if it cannot.
pub fn machine_blocker(case: &Case, machine: &Machine) -> Option<String> {
    let missing: Vec<String> = case
        .machine
        .iter()
        .filter_map(|n| machine.missing(*n).map(|why| format!("{n}: {why}")))
        .collect();
    (!missing.is_empty()).then(|| format!("this machine lacks {}", missing.join("; ")))
}

/// Runs one case in its own world and judges it.
pub fn run_case(case: &Case, subject: &Subject, machine: &Machine) -> CaseReport {
    let start = Instant::now();
    let mut staging = None;
    let outcome = if let Some(why) = case.not_applicable(&subject.adapter) {
        Outcome::NotApplicable { why }
    } else if let Some(why) = machine_blocker(case, machine) {
        Outcome::NotStaged { why }
    } else if let (true, Err(why)) = (subject.needs_bindir(), &subject.bindir) {
        Outcome::NotStaged { why: why.clone() }
    } else {
        match Scene::open(case, subject) {
            Err(e) => Outcome::NotStaged {
                why: format!("cannot open a world: {}", e.0),
            },
            Ok(mut scene) => {
                let body = case.run;
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    scene.ensure_daemon()?;
                    body(&mut scene)
                }));
                staging = scene.staging.take();
                match r {
                    Ok(Ok(o)) => o,
                    Ok(Err(halt)) => halt.outcome(),
                    Err(p) => {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Outcome::fail(
                            "the case body completes",
                            format!("the suite panicked: {msg}"),
                            vec![],
                        )
                    }
                }
            }
        }
    };
    CaseReport {
        id: case.id.to_string(),
        level: case.level,
        outcome,
        duration_ms: start.elapsed().as_millis() as u64,
        staging,
    }
}

/// Runs the selected cases on `jobs` threads, in catalog order in the report.
pub fn run_all(cases: &[&'static Case], subject: &Subject, jobs: usize) -> Report {
    let machine = Machine::detect();
    let start = Instant::now();
    let results: Mutex<Vec<(usize, CaseReport)>> = Mutex::new(Vec::new());
    let next = Mutex::new(0usize);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().expect("no panics while holding the lock");
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(case) = cases.get(i) else { break };
                    let r = run_case(case, subject, &machine);
                    results
                        .lock()
                        .expect("no panics while holding the lock")
                        .push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("threads joined");
    results.sort_by_key(|(i, _)| *i);
    Report::new(
        subject.info(),
        machine.missing_all(),
        start.elapsed().as_millis() as u64,
        results.into_iter().map(|(_, r)| r).collect(),
        // From the catalog (`caught_by`, checked by tests/world_outcomes.rs):
        // nothing in this run measures it.
        crate::report::Sensitivity {
            cases: cases.len(),
            proven_to_fail: cases.iter().filter(|c| !c.caught_by.is_empty()).count(),
        },
    )
}

/// Selects cases by name filters (substring, or exact), skipping `skip` substrings.
pub fn select(filters: &[String], exact: bool, skip: &[String]) -> Vec<&'static Case> {
    crate::cases::ALL
        .iter()
        .filter(|c| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        c.id == f
                    } else {
                        c.id.contains(f.as_str())
                    }
                })
        })
        .filter(|c| !skip.iter().any(|s| c.id.contains(s.as_str())))
        .collect()
}

/// The libtest front end: `args` as libtest takes them (`--list --format
/// terse`, `--exact`, `--ignored`, filters...). A case the machine cannot
/// stage is listed as ignored; run anyway (`--ignored`) it reports the reason.
/// Not-applicable cases are listed as ignored; a scene that could not be set
/// at run time fails with the reason. Neither is ever reported as passed.
pub fn libtest_main(args: Arguments, subject: Subject) -> libtest_mimic::Conclusion {
    let machine = Machine::detect();
    let trials = crate::cases::ALL
        .iter()
        .map(|case| {
            // Known at list time: the machine cannot stage it, or the adapter
            // does not declare what it needs. Listed as ignored; run anyway
            // (`--ignored`), it reports the reason.
            // The reason goes to stderr (stdout is the listing nextest
            // parses), as the harness's world tests do.
            let why = case
                .not_applicable(&subject.adapter)
                .map(|why| format!("not applicable: {why}"))
                .or_else(|| {
                    machine_blocker(case, &machine).map(|why| format!("not staged: {why}"))
                });
            if let Some(why) = &why {
                eprintln!("ignored {}: {why}", case.id);
            }
            let blocked = why.is_some();
            let subject = subject.clone();
            let machine = machine.clone();
            Trial::ignorable_test(case.id, move || {
                let r = run_case(case, &subject, &machine);
                match r.outcome {
                    Outcome::Pass => Ok(Completion::Completed),
                    Outcome::Fail(f) => {
                        let mut msg = format!(
                            "{} {} failed\n  expected: {}\n  observed: {}",
                            case.level, case.id, f.expected, f.observed
                        );
                        for e in &f.evidence {
                            msg.push_str(&format!("\n  evidence: {e}"));
                        }
                        Err(Failed::from(msg))
                    }
                    Outcome::NotApplicable { why } => {
                        Ok(Completion::ignored_with(format!("not applicable: {why}")))
                    }
                    // Not known at list time, so not listed as ignored: a
                    // scene that could not be set is reported as a failure
                    // rather than passing silently.
                    Outcome::NotStaged { why } => Err(Failed::from(format!(
                        "{} {} not staged: {why}",
                        case.level, case.id
                    ))),
                }
            })
            .with_ignored_flag(blocked)
        })
        .collect();
    libtest_mimic::run(&args, trials)
}

/// One line per case for `doppel list`.
pub fn list_lines(subject: &Subject) -> Vec<String> {
    let machine = Machine::detect();
    crate::cases::ALL
        .iter()
        .map(|c| {
            let status = if let Some(why) = c.not_applicable(&subject.adapter) {
                format!("not applicable: {why}")
            } else if let Some(why) = machine_blocker(c, &machine) {
                format!("not staged: {why}")
            } else {
                "ready".to_string()
            };
            format!("{:<6} {:<40} {status}", c.level.to_string(), c.id)
        })
        .collect()
}

/// What `doppel doctor` prints; `Err` when the machine cannot open worlds or
/// the subject's binaries are missing.
pub fn doctor(subject: &Subject) -> (String, bool) {
    use std::fmt::Write as _;
    let machine = Machine::detect();
    let mut ok = true;
    let mut out = String::new();
    let _ = writeln!(out, "machine:");
    for line in machine.describe() {
        let _ = writeln!(out, "  {line}");
    }
    for need in [MachineNeed::World, MachineNeed::PidPlacement] {
        if let Some(why) = machine.missing(need) {
            if need == MachineNeed::World {
                ok = false;
            }
            let disabled: Vec<&str> = crate::cases::ALL
                .iter()
                .filter(|c| c.machine.contains(&need))
                .map(|c| c.id)
                .collect();
            let _ = writeln!(
                out,
                "  missing {need}: {why}\n    disables {} case(s): {}",
                disabled.len(),
                disabled.join(", ")
            );
        }
    }
    let a = &subject.adapter;
    let _ = writeln!(out, "adapter: {} ({})", a.name, a.source);
    match subject.version_answer() {
        Ok(v) => {
            let _ = writeln!(out, "  version: {v}");
        }
        Err(why) => {
            let _ = writeln!(out, "  version: ({why})");
        }
    }
    match (&subject.bindir, subject.needs_bindir()) {
        (Ok(d), true) => {
            let _ = writeln!(out, "  bindir: {}", d.display());
        }
        (Err(e), true) => {
            ok = false;
            let _ = writeln!(out, "  bindir: {e}");
        }
        _ => {}
    }
    let ops: Vec<String> = a.operations().map(|o| o.to_string()).collect();
    let _ = writeln!(out, "  operations: {}", ops.join(", "));
    let missing_ops: Vec<String> = Operation::ALL
        .iter()
        .filter(|o| !a.has(**o))
        .map(|o| o.to_string())
        .collect();
    if !missing_ops.is_empty() {
        let _ = writeln!(out, "  undeclared operations: {}", missing_ops.join(", "));
    }
    let caps: Vec<String> = a.capabilities().iter().map(|c| c.to_string()).collect();
    let _ = writeln!(out, "  capabilities: {}", caps.join(", "));
    if a.payload == crate::adapter::PayloadMode::OciBundle {
        let busybox = std::path::Path::new(doppel_fixtures::bundle::BUSYBOX);
        match doppel_fixtures::bundle::check_busybox(busybox) {
            Ok(()) => {
                let _ = writeln!(
                    out,
                    "  payload: oci-bundle, rootfs from {}",
                    busybox.display()
                );
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(out, "  payload: oci-bundle, but no rootfs: {e}");
            }
        }
    }
    if a.world.unmount_cgroup_unified {
        let _ = writeln!(
            out,
            "  world: /sys/fs/cgroup/unified unmounted in each world's mount namespace"
        );
    }
    let na: Vec<String> = crate::cases::ALL
        .iter()
        .filter_map(|c| c.not_applicable(a).map(|_| c.id.to_string()))
        .collect();
    let _ = writeln!(
        out,
        "  cases not applicable to this adapter ({}): {}",
        na.len(),
        na.join(", ")
    );
    let must = crate::cases::ALL
        .iter()
        .filter(|c| c.level == Level::Must)
        .count();
    let _ = writeln!(
        out,
        "catalog: {} cases ({must} MUST, {} SHOULD)",
        crate::cases::ALL.len(),
        crate::cases::ALL.len() - must
    );
    (out, ok)
}

/// Whether `program` (a path, or a bare name looked up on `PATH`) is an
/// executable file.
fn program_exists(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(std::path::Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(program))))
}
