//! `doppel bench`: black-box latency of `state`, `list` and a recovery pass
//! for each runtime with N live boxes, measured side by side in one run.
//!
//! Each runtime gets its own world (through [`Scene`], so the suite's
//! adapters, payload modes and OCI bundles are reused as they are) with N
//! boxes created and started (progress on stderr). Then samples are taken
//! round-robin across runtimes, so machine noise lands on all of them alike.
//! Every figure is the wall time of one runtime command from its exec to
//! its exit, taken inside its world by the suite's timing wrapper (this
//! executable re-run there, [`Scene::op_crash`] without a kill), so the
//! harness's control-channel round trip and the transport of the command's
//! output are not counted. The `round trip` column is `/bin/true` run
//! through the harness the ordinary way in the same world, in the same
//! rounds: what every command costs on top, for reference (it grows with the
//! number of processes in a world and with machine load).
//!
//! A recovery pass is the adapter's `recover` command when it declares one
//! (the OCI adapters map it to `list`, the one command that classifies every
//! container); otherwise what a supervisor does after a restart to learn which boxes are
//! alive (containerd does this per task): `list`, then `state` of every box.
//!
//! Each report says how busy the machine was during its samples ([`Load`]:
//! load average, and CPU pressure where the kernel reports it), with a
//! warning when other work shared the CPUs.
//!
//! When the scenes end, every box is `delete --force`d (real OCI runtimes
//! create host cgroups) and the worlds are closed.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::adapter::Operation;
use crate::catalog::NotStaged;
use crate::runner::Subject;
use crate::scene::{Run, Scene};

/// Payload of every box: a long sleep.
const PAYLOAD: &[&str] = &["/bin/sleep", "1000000"];

/// What `doppel bench` measures.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Live boxes per runtime.
    pub boxes: usize,
    /// Samples of `state` and `list` per runtime.
    pub samples: usize,
    /// Samples of a recovery pass per runtime.
    pub recovery_samples: usize,
}

/// One measured operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `state ID` (a different box each sample).
    State,
    /// `list`.
    List,
    /// A recovery pass.
    Recovery,
    /// `/bin/true` through the harness in the same world: its round trip.
    Floor,
}

/// The figures of one runtime.
#[derive(Debug, Clone)]
pub struct RuntimeFigures {
    /// Adapter's runtime name.
    pub name: String,
    /// Its version line, when the version command answered.
    pub version: Option<String>,
    /// Median time to create and start one box.
    pub create: Duration,
    /// Median `state`.
    pub state: Duration,
    /// Median `list`.
    pub list: Duration,
    /// Median recovery pass.
    pub recovery: Duration,
    /// How the recovery pass was made.
    pub recovery_how: String,
    /// Median harness round trip of `/bin/true` in this runtime's world.
    pub floor: Duration,
}

/// The result of `doppel bench`.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Live boxes per runtime.
    pub boxes: usize,
    /// Samples per figure (state/list, recovery).
    pub samples: (usize, usize),
    /// One entry per runtime, in the order given.
    pub runtimes: Vec<RuntimeFigures>,
    /// The machine's load while the samples were taken, when known.
    pub load: Option<Load>,
}

/// How busy the machine was while the samples were taken: other work's
/// queueing lands in the medians and moves the ratios (seen: `list` of 100
/// boxes 3.7× crun on a quiet machine, 2.5× in a run beside two busy loops).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// 1-minute load average before the first sample.
    pub before: f64,
    /// 1-minute load average after the last.
    pub after: f64,
    /// CPUs this process may run on.
    pub cpus: usize,
    /// Share of the samples' wall time during which some task waited for
    /// a CPU (the kernel's CPU pressure, `/proc/pressure/cpu`), when the
    /// kernel reports it. The bench's own commands count too: on this
    /// project's 2-CPU VM, refbox and crun with 30 boxes measured 12% on a
    /// quiet machine, 19% beside one busy loop, 53% beside two.
    pub stall: Option<f64>,
}

/// CPU pressure (share of the samples' time) above which the report warns
/// that other work shared the CPUs; see [`Load::stall`] for what a quiet
/// machine shows.
pub const STALL_WARNING: f64 = 0.30;

/// The kernel's CPU pressure counter: µs during which some task waited.
fn cpu_stall_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let some = text.lines().find(|l| l.starts_with("some "))?;
    some.split_whitespace()
        .find_map(|w| w.strip_prefix("total="))?
        .parse()
        .ok()
}

/// The 1-minute load average (`/proc/loadavg`).
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Watches the machine's load over the samples.
struct LoadWatch {
    load: Option<f64>,
    stall_us: Option<u64>,
    since: Instant,
    cpus: usize,
}

impl LoadWatch {
    fn start() -> LoadWatch {
        LoadWatch {
            load: load_average(),
            stall_us: cpu_stall_us(),
            since: Instant::now(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    fn finish(&self) -> Option<Load> {
        let wall = self.since.elapsed().as_micros() as f64;
        let stall = self
            .stall_us
            .zip(cpu_stall_us())
            .map(|(a, b)| b.saturating_sub(a) as f64 / wall.max(1.0));
        Some(Load {
            before: self.load?,
            after: load_average()?,
            cpus: self.cpus,
            stall,
        })
    }
}

impl Load {
    /// A warning when other work shared the CPUs: CPU pressure over
    /// [`STALL_WARNING`] of the samples' time where the kernel reports it,
    /// else a load average above the CPU count before the samples (a
    /// lagging figure: a build that just ended still counts).
    pub fn warning(&self) -> Option<String> {
        let busy = match self.stall {
            Some(stall) if stall > STALL_WARNING => format!(
                "tasks waited for a CPU {:.0}% of the time the samples took",
                stall * 100.0
            ),
            Some(_) => return None,
            None if self.before > self.cpus as f64 => format!(
                "load average {:.2} on {} CPU(s) before measuring",
                self.before, self.cpus
            ),
            None => return None,
        };
        Some(format!(
            "warning: {busy}: other work shared the CPUs; its queueing is in the medians \
             and moves the ratios; measure on a quiet machine for figures to compare"
        ))
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn human(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1e3 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// One runtime's world with its boxes.
struct Bench<'a> {
    subject: &'a Subject,
    scene: Scene<'a>,
    ids: Vec<String>,
    create: Vec<Duration>,
    next_state: usize,
}

impl<'a> Bench<'a> {
    fn name(&self) -> &str {
        &self.subject.adapter.name
    }

    /// Opens the world and creates `n` boxes, with progress on stderr.
    fn open(subject: &'a Subject, n: usize) -> Result<Bench<'a>, NotStaged> {
        let mut scene = Scene::open_subject(subject)?;
        scene.ensure_daemon().map_err(|h| match h {
            crate::catalog::Halt::NotStaged(n) => n,
            crate::catalog::Halt::NoScene(f) => NotStaged(f.observed),
        })?;
        let mut b = Bench {
            subject,
            scene,
            ids: Vec::with_capacity(n),
            create: Vec::with_capacity(n),
            next_state: 0,
        };
        let name = b.name().to_string();
        let start = Instant::now();
        let mut progress = crate::progress::Progress::stderr();
        for i in 0..n {
            let id = format!("bench-{i:05}");
            let t = Instant::now();
            let run = b.scene.run_box(&id, PAYLOAD)?;
            b.create.push(t.elapsed());
            if !run.success() {
                return Err(NotStaged(format!(
                    "{name}: box {id} did not start: {}",
                    run.summary()
                )));
            }
            b.ids.push(id);
            progress.update(
                || {
                    format!(
                        "{name}: creating boxes {}/{n} ({:.1} s, {} each)",
                        i + 1,
                        start.elapsed().as_secs_f64(),
                        human(median(b.create.clone()))
                    )
                },
                i + 1 == n,
            );
        }
        Ok(b)
    }

    fn check(&self, op: &str, run: &Run) -> Result<(), NotStaged> {
        if run.success() {
            Ok(())
        } else {
            Err(NotStaged(format!(
                "{}: {op} failed: {}",
                self.name(),
                run.summary()
            )))
        }
    }

    /// Runs `op` once under the timing wrapper; returns its exec-to-exit time.
    fn timed(&mut self, op: Operation, id: &str, what: &str) -> Result<Duration, NotStaged> {
        let (run, end) = self.scene.op_crash(op, id, &[], None, None)?;
        self.check(what, &run)?;
        Ok(Duration::from_micros(end.elapsed_us))
    }

    /// Times one sample of `op`.
    fn sample(&mut self, op: Op) -> Result<Duration, NotStaged> {
        let first = self.ids[0].clone();
        match op {
            Op::State => {
                let id = self.ids[self.next_state % self.ids.len()].clone();
                self.next_state += 1;
                self.timed(Operation::State, &id, "state")
            }
            Op::List => self.timed(Operation::List, &first, "list"),
            Op::Recovery if self.subject.adapter.has(Operation::Recover) => {
                self.timed(Operation::Recover, &first, "recover")
            }
            Op::Floor => {
                let run = self.scene.run_command(&["/bin/true"])?;
                self.check("/bin/true", &run)?;
                Ok(run.elapsed)
            }
            Op::Recovery => {
                let mut total = self.timed(Operation::List, &first, "list")?;
                for id in self.ids.clone() {
                    total += self.timed(Operation::State, &id, "state")?;
                }
                Ok(total)
            }
        }
    }

    /// The recovery pass in words: the adapter's `recover` command (its
    /// program and literal words, e.g. `runc list`), or list + state.
    fn recovery_how(&self) -> String {
        match self.subject.adapter.command(Operation::Recover) {
            Some(t) => {
                let words: Vec<&str> = t
                    .elements()
                    .iter()
                    .map(String::as_str)
                    .filter(|w| !w.contains('{') && !w.starts_with('-'))
                    .map(|w| w.rsplit('/').next().unwrap_or(w))
                    .collect();
                format!("`{}`", words.join(" "))
            }
            None => format!("list + {} × state", self.ids.len()),
        }
    }
}

/// Runs the bench over `subjects`; every runtime has its boxes live at once,
/// and samples are taken round-robin.
pub fn run(subjects: &[Subject], opts: &BenchOptions) -> Result<BenchReport, NotStaged> {
    let mut benches = Vec::with_capacity(subjects.len());
    for s in subjects {
        if !s.adapter.has(Operation::State) || !s.adapter.has(Operation::List) {
            return Err(NotStaged(format!(
                "{}: the adapter declares no state or list command",
                s.adapter.name
            )));
        }
        benches.push(Bench::open(s, opts.boxes.max(1))?);
    }
    let k = benches.len();
    let mut times = vec![[Vec::new(), Vec::new(), Vec::new(), Vec::new()]; k];
    let watch = LoadWatch::start();
    eprintln!(
        "measuring: {} × state and list, {} recovery passes per runtime, round-robin",
        opts.samples, opts.recovery_samples
    );
    for round in 0..opts.samples.max(opts.recovery_samples) {
        for (i, b) in benches.iter_mut().enumerate() {
            if round < opts.samples {
                times[i][0].push(b.sample(Op::State)?);
                times[i][1].push(b.sample(Op::List)?);
                times[i][3].push(b.sample(Op::Floor)?);
            }
            if round < opts.recovery_samples {
                times[i][2].push(b.sample(Op::Recovery)?);
            }
        }
    }
    let runtimes = benches
        .iter()
        .zip(times)
        .map(|(b, [state, list, recovery, floor])| RuntimeFigures {
            name: b.name().to_string(),
            version: b.subject.version(),
            create: median(b.create.clone()),
            state: median(state),
            list: median(list),
            recovery: median(recovery),
            recovery_how: b.recovery_how(),
            floor: median(floor),
        })
        .collect();
    let load = watch.finish();
    if let Some(w) = load.as_ref().and_then(Load::warning) {
        eprintln!("{w}");
    }
    eprintln!("deleting the boxes (delete --force) and closing the worlds…");
    drop(benches);
    Ok(BenchReport {
        boxes: opts.boxes.max(1),
        samples: (opts.samples, opts.recovery_samples),
        runtimes,
        load,
    })
}

/// The report as a Markdown table: medians, and each runtime's ratio to the
/// fastest in that column.
pub fn render(r: &BenchReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} live boxes per runtime; medians of {} samples (recovery: {}), one run, round-robin",
        r.boxes, r.samples.0, r.samples.1
    );
    if let Some(l) = &r.load {
        let stall = l.stall.map_or(String::new(), |s| {
            format!("; tasks waited for a CPU {:.1}% of the time", s * 100.0)
        });
        let _ = writeln!(
            out,
            "machine: load average {:.2} before the samples, {:.2} after; {} CPU(s){stall}",
            l.before, l.after, l.cpus
        );
        if let Some(w) = l.warning() {
            let _ = writeln!(out, "{w}");
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| runtime | version | create+start | state | list | recovery pass | recovery is | round trip |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---|---:|");
    let best =
        |f: fn(&RuntimeFigures) -> Duration| r.runtimes.iter().map(f).min().unwrap_or_default();
    let cell = |d: Duration, best: Duration| {
        format!(
            "{} ({:.1}×)",
            human(d),
            d.as_secs_f64() / best.as_secs_f64().max(f64::MIN_POSITIVE)
        )
    };
    let (bc, bs, bl, br) = (
        best(|f| f.create),
        best(|f| f.state),
        best(|f| f.list),
        best(|f| f.recovery),
    );
    for f in &r.runtimes {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            f.name,
            f.version.as_deref().unwrap_or("?"),
            cell(f.create, bc),
            cell(f.state, bs),
            cell(f.list, bl),
            cell(f.recovery, br),
            f.recovery_how,
            human(f.floor)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "(×) = ratio to the fastest runtime in that column. state, list and recovery: exec to exit of the command, \
         timed inside its world; create+start: through the harness (what a user waits); \
         round trip = `/bin/true` through the harness in that runtime's world."
    );
    out
}

/// Least squares `t(N) = a + N × b` over `(N, seconds)` points: `(a, b, r²)`,
/// or `None` with fewer than two distinct N.
pub fn fit(points: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if points.len() < 2 || sxx == 0.0 {
        return None;
    }
    let b = sxy / sxx;
    let a = my - b * mx;
    let r2 = if syy == 0.0 {
        1.0
    } else {
        (sxy * sxy) / (sxx * syy)
    };
    Some((a, b, r2))
}

/// One figure of a runtime's, picked out of its [`RuntimeFigures`].
pub type Figure = fn(&RuntimeFigures) -> Duration;

/// The figures whose growth with the number of boxes is reported and
/// plotted, with their names.
pub const GROWTH_FIGURES: [(&str, Figure); 2] =
    [("list", |f| f.list), ("recovery pass", |f| f.recovery)];

/// Every runtime of `reports`, once each, in the order first seen.
pub fn runtime_names(reports: &[BenchReport]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for f in reports.iter().flat_map(|r| &r.runtimes) {
        if !names.contains(&f.name.as_str()) {
            names.push(&f.name);
        }
    }
    names
}

/// How `list` and the recovery pass grow with the number of boxes, over
/// several bench runs (one per box count): the medians with each runtime's
/// ratio to the fastest at that count, and a linear fit per runtime.
pub fn render_growth(reports: &[BenchReport]) -> String {
    let mut out = String::new();
    let names = runtime_names(reports);
    for (what, pick) in GROWTH_FIGURES {
        let _ = writeln!(
            out,
            "{what}, by live boxes (median; ratio to the fastest at that count), and a fit t(N) = a + N × b:"
        );
        let _ = writeln!(out);
        let mut head = String::from("| runtime |");
        let mut rule = String::from("|---|");
        for r in reports {
            let _ = write!(head, " {} boxes |", r.boxes);
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{head} fit |");
        let _ = writeln!(out, "{rule}---|");
        for name in &names {
            let mut row = format!("| {name} |");
            let mut points = Vec::new();
            for r in reports {
                let best = r.runtimes.iter().map(pick).min().unwrap_or_default();
                match r.runtimes.iter().find(|f| f.name == *name) {
                    Some(f) => {
                        let d = pick(f);
                        points.push((r.boxes as f64, d.as_secs_f64()));
                        let _ = write!(
                            row,
                            " {} ({:.1}×) |",
                            human(d),
                            d.as_secs_f64() / best.as_secs_f64().max(f64::MIN_POSITIVE)
                        );
                    }
                    None => row.push_str(" – |"),
                }
            }
            match fit(&points) {
                Some((a, b, r2)) => {
                    let _ = writeln!(
                        out,
                        "{row} {} + N × {} (r² = {r2:.4}) |",
                        human(Duration::from_secs_f64(a.max(0.0))),
                        human(Duration::from_secs_f64(b.max(0.0)))
                    );
                }
                None => {
                    let _ = writeln!(out, "{row} – |");
                }
            }
        }
        let _ = writeln!(out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_table_fits_a_line_per_runtime() {
        let ms = Duration::from_millis;
        let at = |boxes: usize, a: u64, b: u64| BenchReport {
            boxes,
            samples: (1, 1),
            runtimes: [("a", a), ("b", b)]
                .into_iter()
                .map(|(name, t)| RuntimeFigures {
                    name: name.into(),
                    version: None,
                    create: ms(1),
                    state: ms(1),
                    list: ms(t),
                    recovery: ms(t),
                    recovery_how: "recover".into(),
                    floor: ms(1),
                })
                .collect(),
            load: None,
        };
        // a: 1 ms + N × 10 µs; b: 4 ms + N × 40 µs.
        let text = render_growth(&[at(100, 2, 8), at(1000, 11, 44)]);
        assert!(
            text.contains(
                "| a | 2.00 ms (1.0×) | 11.00 ms (1.0×) | 1.00 ms + N × 10 µs (r² = 1.0000) |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| b | 8.00 ms (4.0×) | 44.00 ms (4.0×) | 4.00 ms + N × 40 µs (r² = 1.0000) |"
            ),
            "{text}"
        );
        assert!(fit(&[(1.0, 1.0)]).is_none());
    }

    #[test]
    fn table_has_ratios_to_the_fastest() {
        let ms = Duration::from_millis;
        let fig = |name: &str, s| RuntimeFigures {
            name: name.into(),
            version: Some("1".into()),
            create: ms(10),
            state: ms(s),
            list: ms(s * 2),
            recovery: ms(s * 3),
            recovery_how: "recover".into(),
            floor: ms(1),
        };
        let mut r = BenchReport {
            boxes: 10,
            samples: (5, 3),
            runtimes: vec![fig("a", 2), fig("b", 6)],
            load: Some(Load {
                before: 0.5,
                after: 1.25,
                cpus: 2,
                stall: Some(0.012),
            }),
        };
        let text = render(&r);
        assert!(
            text.contains(
                "machine: load average 0.50 before the samples, 1.25 after; 2 CPU(s); tasks waited for a CPU 1.2% of the time\n\n"
            ),
            "{text}"
        );
        assert!(text.contains("| a | 1 | 10.00 ms (1.0×) | 2.00 ms (1.0×) | 4.00 ms (1.0×) | 6.00 ms (1.0×) | recover | 1.00 ms |"), "{text}");
        assert!(text.contains("| b | 1 | 10.00 ms (1.0×) | 6.00 ms (3.0×) | 12.00 ms (3.0×) | 18.00 ms (3.0×) | recover | 1.00 ms |"), "{text}");
        // A machine busy before the samples is said so, in the report.
        r.load = Some(Load {
            before: 3.87,
            after: 3.6,
            cpus: 2,
            stall: Some(0.43),
        });
        let text = render(&r);
        assert!(
            text.contains("warning: tasks waited for a CPU 43% of the time the samples took"),
            "{text}"
        );
        // Without CPU pressure figures (older kernels), the load average.
        r.load = r.load.map(|l| Load { stall: None, ..l });
        assert!(
            render(&r).contains("warning: load average 3.87 on 2 CPU(s) before measuring"),
            "{text}"
        );
        // A load average left by a build that just ended is not a warning
        // when the pressure during the samples was low.
        r.load = r.load.map(|l| Load {
            stall: Some(0.02),
            ..l
        });
        assert!(!render(&r).contains("warning"), "{text}");
    }
}
