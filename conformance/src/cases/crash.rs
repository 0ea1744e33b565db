//! crash::*: the runtime SIGKILLed part-way through an operation (swept
//! delays, and named failpoints when the adapter declares them), and the
//! privileged helper SIGKILLed with boxes running. After each crash: no
//! orphan process, every record readable (old or new, never half-written),
//! `state` says something true, `delete --force` cleans up.

use std::fmt;

use crate::adapter::{Operation as Op, RecordFormat, Status, record_get};
use crate::catalog::{Halt, NotStaged, Outcome, Verdict};
use crate::scene::{Census, FileKind, Scene};

use super::SLEEPER;

/// Delays swept per operation (plus the adapter's failpoints).
pub(crate) const DELAYS_PER_OP: u64 = 50;

/// At most this many delays are tried per operation to get
/// [`DELAYS_PER_OP`] of them to interrupt it.
const MAX_DELAYS_PER_OP: u64 = 3 * DELAYS_PER_OP;

/// The span is measured again, on an uninterrupted run, every this many
/// delays (see [`sweep`]).
const RECALIBRATE_EVERY: u64 = 10;

/// Where a sweep's delays fall: a low-discrepancy walk (golden ratio) over
/// [0, span), so every prefix of the sweep covers the span evenly; the span
/// is the operation's duration as last seen.
#[derive(Debug, Clone, PartialEq)]
struct Span {
    us: u64,
    /// Delays handed out so far.
    tried: u64,
}

impl Span {
    /// A span of one measured, uninterrupted run.
    fn new(measured_us: u64) -> Span {
        Span {
            us: measured_us.max(1),
            tried: 0,
        }
    }

    /// Whether the operation should be measured again before the next
    /// delay. The span only shrinks on its own ([`Span::outlived`]); on a
    /// loaded machine the operation may have slowed since it was measured,
    /// and the delays would then all land in its early part and miss a
    /// window near its end (seen: crun's create leaks a cgroup when killed
    /// in its latter half; with the span halved the sweep found 3 leaks
    /// where it finds ~15).
    fn due(&self) -> bool {
        self.tried > 0 && self.tried % RECALIBRATE_EVERY == 0
    }

    /// An uninterrupted run took `us`: the span follows the operation as
    /// it runs now.
    fn measured(&mut self, us: u64) {
        self.us = us.max(1);
    }

    /// The operation ended before a delay: a delay that long is no crash
    /// point, so the span shrinks to what it took.
    fn outlived(&mut self, us: u64) {
        self.us = self.us.min(us.max(1));
    }

    /// The next delay, µs.
    fn next(&mut self) -> u64 {
        self.tried += 1;
        let frac = (self.tried as f64 * 0.618_033_988_749_895).fract();
        (frac * self.us as f64) as u64
    }
}

/// The operations the sweep interrupts: every one the adapter declares,
/// whatever the runtime's shape (a run-only CLI gets `run`, `kill`,
/// `delete` and `delete --force` swept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SweptOp {
    Create,
    Start,
    Run,
    Kill,
    /// `delete` of a stopped box.
    Delete,
    /// `delete --force` of a running box.
    DeleteForce,
}

impl SweptOp {
    const ALL: [SweptOp; 6] = [
        SweptOp::Create,
        SweptOp::Start,
        SweptOp::Run,
        SweptOp::Kill,
        SweptOp::Delete,
        SweptOp::DeleteForce,
    ];

    fn op(self) -> Op {
        match self {
            SweptOp::Create => Op::Create,
            SweptOp::Start => Op::Start,
            SweptOp::Run => Op::Run,
            SweptOp::Kill => Op::Kill,
            SweptOp::Delete => Op::Delete,
            SweptOp::DeleteForce => Op::DeleteForce,
        }
    }

    /// The operations of `adapter` the sweep interrupts. `start` needs
    /// `create` to make the box it starts.
    fn of(adapter: &crate::adapter::Adapter) -> Vec<SweptOp> {
        SweptOp::ALL
            .into_iter()
            .filter(|op| adapter.has(op.op()))
            .filter(|op| *op != SweptOp::Start || adapter.has(Op::Create))
            .collect()
    }

    /// The adapter's failpoints for this operation.
    fn failpoints(self, fp: &crate::adapter::Failpoints) -> &[String] {
        match self {
            SweptOp::Create => &fp.create,
            SweptOp::Start => &fp.start,
            SweptOp::Run => &fp.run,
            SweptOp::Kill => &fp.kill,
            SweptOp::Delete | SweptOp::DeleteForce => &fp.delete,
        }
    }
}

impl fmt::Display for SweptOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SweptOp::Create => "create",
            SweptOp::Start => "start",
            SweptOp::Run => "run",
            SweptOp::Kill => "kill",
            SweptOp::Delete => "delete",
            SweptOp::DeleteForce => "delete --force",
        })
    }
}

/// Where one point interrupts the operation.
#[derive(Debug, Clone)]
enum At {
    Delay(u64),
    Failpoint(String),
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Delay(us) => write!(f, "{us} µs"),
            At::Failpoint(p) => write!(f, "failpoint {p}"),
        }
    }
}

/// Figures of one operation's sweep.
#[derive(Debug, Default, Clone)]
struct Tally {
    delays: usize,
    /// Delays at which the operation was still running (killed mid-way).
    delays_killed: usize,
    failpoints: usize,
    killed: usize,
    orphans: usize,
    records_lost: usize,
    cgroups_leaked: usize,
    /// Records the operation writes in place.
    in_place: Vec<String>,
}

pub(crate) fn runtime_killed_mid_op(s: &mut Scene<'_>) -> Verdict {
    let ops = SweptOp::of(s.adapter());
    if ops.is_empty() {
        return Err(
            NotStaged("the adapter declares no operation the sweep interrupts".into()).into(),
        );
    }
    // One world per operation, swept in parallel: each sweep is a few
    // hundred runtime invocations that wait on nothing but the CPU.
    let mut scenes = vec![];
    for _ in 1..ops.len() {
        scenes.push(s.sibling()?);
    }
    let results: Vec<Result<Sweep, Halt>> = std::thread::scope(|scope| {
        let each: Vec<&mut Scene<'_>> = std::iter::once(&mut *s).chain(scenes.iter_mut()).collect();
        let handles: Vec<_> = each
            .into_iter()
            .zip(ops.iter().copied())
            .map(|(scene, op)| scope.spawn(move || sweep(scene, op)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    // Every sweep's findings count: one sweep that could not be staged
    // must not hide what the others found.
    let mut problems = Vec::new();
    let mut tallies = Vec::new();
    let mut evidence = Vec::new();
    let mut unstaged = Vec::new();
    for (r, op) in results.into_iter().zip(ops.iter().copied()) {
        match r {
            Ok(sw) => {
                problems.extend(sw.problems);
                evidence.extend(sw.transcript);
                tallies.push((sw.op, sw.tally));
            }
            Err(Halt::NotStaged(e)) => {
                unstaged.push(format!("the {op} sweep was not staged: {}", e.0))
            }
            // The runtime said it made what the sweep starts from, and did
            // not: the sweep cannot begin, and that is the runtime's failure.
            Err(Halt::NoScene(f)) => {
                problems.push(format!("the {op} sweep: {}: {}", f.expected, f.observed));
                evidence.extend(f.evidence);
            }
        }
    }
    if problems.is_empty() && !unstaged.is_empty() {
        return Err(NotStaged(unstaged.join("; ")).into());
    }
    problems.extend(unstaged);
    s.staging = Some(summary(&tallies));
    if problems.is_empty() {
        return Ok(Outcome::Pass);
    }
    let observed = format!(
        "{} problem(s) ({}); first: {}",
        problems.len(),
        summary(&tallies),
        problems
            .iter()
            .take(6)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    );
    let mut all = problems;
    all.truncate(40);
    all.extend(evidence.into_iter().take(60));
    Ok(Outcome::fail(
        "after every crash: no orphan process, every record readable, state true, delete --force cleans up",
        observed,
        all,
    ))
}

/// What one operation's sweep found.
#[derive(Debug)]
struct Sweep {
    op: SweptOp,
    tally: Tally,
    problems: Vec<String>,
    /// The commands of the points with problems.
    transcript: Vec<String>,
}

/// Interrupts `op` at delays spread over its measured duration until
/// [`DELAYS_PER_OP`] of them caught it still running (at most
/// [`MAX_DELAYS_PER_OP`] tries), then at each of the adapter's failpoints.
/// The delays follow the operation's duration as it varies ([`Span`]): a
/// delay the operation outlived shrinks the span, and every
/// [`RECALIBRATE_EVERY`] delays an uninterrupted run measures it again.
fn sweep(s: &mut Scene<'_>, op: SweptOp) -> Result<Sweep, Halt> {
    let mut t = Tally::default();
    let mut problems = Vec::new();
    let tag = op.tag();
    // Calibrate: how long the uninterrupted operation takes here.
    // Watch its records meanwhile: one written in place (not replaced by a
    // rename) is half-written while the write lasts, and a crash then
    // leaves it so, however narrow the window the delays have to hit.
    let cal = format!("{tag}cal");
    match setup(s, op, &cal)? {
        Ok(()) => {}
        Err(Setup::Refused(why)) => return Err(NotStaged(why).into()),
        Err(Setup::NoBox(halt)) => return Err(halt),
    }
    let watch = match s.path(FileKind::BoxDir, &cal) {
        Some(dir) if !op.makes_the_box() && s.exists(&dir) => Some(s.watch_writes(&dir)?),
        _ => None,
    };
    let (run, end) = crash(s, op, &cal, None)?;
    if !run.success() {
        // A runtime that cannot create a box at all cannot be swept (as
        // every case that needs a box is not staged); any other operation
        // failing on the box it was just given is the runtime's failure.
        if op.makes_the_box() {
            return Err(NotStaged(format!("uninterrupted {op} failed: {}", run.summary())).into());
        }
        problems.push(format!(
            "uninterrupted {op} (not killed) failed: {}",
            run.summary()
        ));
    } else {
        // The uninterrupted operation must have done its job: a sweep of
        // an operation that does nothing finds nothing to interrupt.
        effect(s, op, &cal, &run)?;
    }
    if let Some(w) = watch {
        let records = record_names(s, &cal);
        for name in w.written().into_iter().filter(|n| records.contains(n)) {
            t.in_place.push(name.clone());
            problems.push(format!(
                "{op} rewrites the record {name} in place (written to under its own name, not replaced by a rename): a crash during the write leaves it half-written"
            ));
        }
    }
    if let Some(p) = cleanup(s, &cal)? {
        problems.push(format!("{op} calibration: {p}"));
    }
    let clean = s.transcript_len();
    let mut span = Span::new(end.elapsed_us);
    let failpoints: Vec<At> = match &s.adapter().failpoints {
        Some(fp) => op
            .failpoints(fp)
            .iter()
            .cloned()
            .map(At::Failpoint)
            .collect(),
        None => Vec::new(),
    };
    let mut failpoints = failpoints.into_iter();
    for n in 0.. {
        // Delays first, then failpoints.
        let at = if (t.delays_killed as u64) < DELAYS_PER_OP && span.tried < MAX_DELAYS_PER_OP {
            if span.due() {
                // (A setup that fails now is left to the next point's
                // setup to report.)
                let id = format!("{tag}cal{}", span.tried);
                let keep = s.transcript_len();
                if setup(s, op, &id)?.is_ok() {
                    let (run, end) = crash(s, op, &id, None)?;
                    if run.success() {
                        span.measured(end.elapsed_us);
                    }
                    match cleanup(s, &id)? {
                        Some(p) => problems.push(format!("{op} calibration: {p}")),
                        None => s.truncate_transcript(keep),
                    }
                }
            }
            At::Delay(span.next())
        } else {
            match failpoints.next() {
                Some(fp) => fp,
                None => break,
            }
        };
        let id = format!("{tag}{n}");
        let keep = s.transcript_len();
        // The runtime set this box up before the first crash; failing to
        // now is what the earlier crashes did to it.
        if let Err(why) = setup(s, op, &id)? {
            let why = why.to_string();
            problems.push(format!(
                "{op} at {at}: after the earlier crashes the runtime could not set up box {id} (sweep stopped): {why}"
            ));
            problems.extend(
                check_point(s, &id, &mut t)?
                    .into_iter()
                    .map(|p| format!("{op} at {at}, after the failed setup: {p}")),
            );
            break;
        }
        let killed = match &at {
            At::Delay(us) => {
                t.delays += 1;
                let end = crash(s, op, &id, Some(*us))?.1;
                if end.killed {
                    t.delays_killed += 1;
                } else {
                    span.outlived(end.elapsed_us);
                }
                end.killed
            }
            At::Failpoint(name) => {
                t.failpoints += 1;
                let env = s.adapter().failpoints.as_ref().map(|f| f.env.clone());
                let env = [(env.unwrap_or_default(), name.clone())];
                let sig = op.signal();
                let r = s.op_env(op.op(), &id, SLEEPER, sig, &env)?;
                r.signal == Some(9)
            }
        };
        t.killed += usize::from(killed);
        let found = check_point(s, &id, &mut t)?;
        if found.is_empty() {
            s.truncate_transcript(keep);
        } else {
            problems.extend(found.into_iter().map(|p| format!("{op} at {at}: {p}")));
        }
    }
    let transcript = s.transcript().split_off(clean.min(s.transcript_len()));
    Ok(Sweep {
        op,
        tally: t,
        problems,
        transcript,
    })
}

fn summary(tallies: &[(SweptOp, Tally)]) -> String {
    tallies
        .iter()
        .map(|(op, t)| {
            format!(
                "{op}: {} delays ({} killed mid-way){}, {} orphans, {} records lost{}",
                t.delays,
                t.delays_killed,
                if t.failpoints > 0 {
                    format!(
                        " + {} failpoints ({} killed there)",
                        t.failpoints,
                        t.killed - t.delays_killed
                    )
                } else {
                    String::new()
                },
                t.orphans,
                t.records_lost,
                if t.cgroups_leaked > 0 {
                    format!(", {} points left a cgroup", t.cgroups_leaked)
                } else {
                    String::new()
                } + &if t.in_place.is_empty() {
                    String::new()
                } else {
                    format!(", rewrites {} in place", t.in_place.join(" and "))
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a box could not be brought to where an operation starts from.
#[derive(Debug)]
enum Setup {
    /// The runtime refused (a command exited non-zero).
    Refused(String),
    /// The runtime said it did (exit 0), but the box is not there.
    NoBox(Halt),
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setup::Refused(why) => f.write_str(why),
            Setup::NoBox(Halt::NoScene(fail)) => write!(f, "{}: {}", fail.expected, fail.observed),
            Setup::NoBox(Halt::NotStaged(why)) => f.write_str(&why.0),
        }
    }
}

impl SweptOp {
    /// The letter a sweep's box ids start with.
    fn tag(self) -> char {
        match self {
            SweptOp::Create => 'c',
            SweptOp::Start => 's',
            SweptOp::Run => 'r',
            SweptOp::Kill => 'k',
            SweptOp::Delete => 'd',
            SweptOp::DeleteForce => 'f',
        }
    }

    /// Whether the operation makes the box (there is none before it).
    fn makes_the_box(self) -> bool {
        matches!(self, SweptOp::Create | SweptOp::Run)
    }

    /// The `{signal}` of a swept `kill`.
    fn signal(self) -> Option<&'static str> {
        (self == SweptOp::Kill).then_some("KILL")
    }
}

/// Brings box `id` to the state the operation starts from, proven there.
fn setup(s: &mut Scene<'_>, op: SweptOp, id: &str) -> Result<Result<(), Setup>, NotStaged> {
    let proven = |s: &mut Scene<'_>, r: &crate::scene::Run, want: &[Status]| match s
        .prove_box(id, r, want)
    {
        Ok(_) => Ok(Ok(())),
        Err(Halt::NotStaged(e)) => Err(e),
        Err(halt) => Ok(Err(Setup::NoBox(halt))),
    };
    let refused = |what: &str, r: &crate::scene::Run| {
        Ok(Err(Setup::Refused(format!(
            "{what} {id} failed: {}",
            r.summary()
        ))))
    };
    match op {
        SweptOp::Create | SweptOp::Run => Ok(Ok(())),
        SweptOp::Start => {
            let r = s.op(Op::Create, Some(id), SLEEPER)?;
            if !r.success() {
                return refused("create", &r);
            }
            proven(s, &r, &[Status::Created])
        }
        // `run` (or create + start) returns once the payload runs.
        SweptOp::Kill | SweptOp::DeleteForce => {
            let r = s.run_box(id, SLEEPER)?;
            if !r.success() {
                return refused("run", &r);
            }
            proven(s, &r, &[Status::Running])
        }
        // A plain delete is for a box that has stopped.
        SweptOp::Delete => {
            let r = s.run_box(id, SLEEPER)?;
            if !r.success() {
                return refused("run", &r);
            }
            if let Err(e) = proven(s, &r, &[Status::Running])? {
                return Ok(Err(e));
            }
            let k = s.kill(id, "KILL")?;
            if !k.success() {
                return refused("kill KILL", &k);
            }
            proven(s, &k, &[Status::Stopped])
        }
    }
}

/// What an uninterrupted operation must have done, proven: a sweep over an
/// operation that does nothing would find nothing to interrupt.
fn effect(s: &mut Scene<'_>, op: SweptOp, id: &str, run: &crate::scene::Run) -> Result<(), Halt> {
    match op {
        SweptOp::Create => s.prove_box(id, run, &[Status::Created]).map(drop),
        SweptOp::Start | SweptOp::Run => s.prove_running(id, run).map(drop),
        SweptOp::Kill => s.prove_box(id, run, &[Status::Stopped]).map(drop),
        SweptOp::Delete | SweptOp::DeleteForce => s.prove_gone(id, run),
    }
}

fn crash(
    s: &mut Scene<'_>,
    op: SweptOp,
    id: &str,
    delay_us: Option<u64>,
) -> Result<(crate::scene::Run, crate::world::CrashEnd), NotStaged> {
    s.op_crash(op.op(), id, SLEEPER, op.signal(), delay_us)
}

/// `delete --force` a calibration box; it must leave nothing. Returns
/// what it left (SIGKILLed by the harness so the sweep starts clean).
fn cleanup(s: &mut Scene<'_>, id: &str) -> Result<Option<String>, NotStaged> {
    let del = s.delete(id, true)?;
    let left = super::settle_live(s, &[])?;
    if left.is_empty() {
        return Ok(None);
    }
    for (p, _) in &left {
        let _ = s.kill_process(*p);
    }
    Ok(Some(format!(
        "delete --force {id} after an uninterrupted run left {left:?} ({})",
        del.summary()
    )))
}

/// The checks after one crash; returns the problems found and counts them.
fn check_point(s: &mut Scene<'_>, id: &str, t: &mut Tally) -> Result<Vec<String>, NotStaged> {
    let mut problems = Vec::new();
    // What a runtime's surviving child (a killed `run` may leave one that
    // finishes the box) does while `state` runs is no lie of `state`'s:
    // only what held before it ran and still after is judged.
    let state_record = s.path(FileKind::State, id);
    let recorded_before = state_record.as_ref().is_some_and(|p| s.exists(p));
    let before = s.census()?;
    let (record_pid, unreadable) = records(s, id);
    let mut lost = !unreadable.is_empty();
    problems.extend(unreadable);
    let (run, st) = s.state(id)?;
    let after = s.census()?;
    // A box whose record was written while `state` ran (by a surviving
    // child of the killed command) is judged by that record's pid: an
    // adapter whose `state` gives no pid (exit codes) has no other.
    let pid = record_pid
        .or(st.as_ref().and_then(|o| o.pid))
        .or_else(|| records(s, id).0)
        .map(|p| p as i32);
    let alive = |c: &Census| pid.is_some_and(|p| c.get(p).is_some());
    match st.as_ref().and_then(|o| o.status) {
        // A process dead before `state` ran, and not born while it ran,
        // cannot have been running. A created box with no pid anywhere is
        // not judged: a supervisor's created program (supervisord's "Not
        // started") has no process until it starts.
        Some(status @ (Status::Running | Status::Created))
            if (status == Status::Running || pid.is_some())
                && !alive(&before)
                && !alive(&after) =>
        {
            lost = true;
            problems.push(format!(
                "state said {:?} but its process (pid {pid:?}) was not alive",
                st.as_ref().map(|o| o.word.clone()).unwrap_or_default()
            ));
        }
        // A process alive after `state` ran was alive while it ran: the
        // box's recorded process (not a pid `state` printed beside
        // "stopped", such as runit's finish script), and the same program
        // before and after (one that exec'ed meanwhile, like
        // start-stop-daemon's child between writing the pid file and
        // exec'ing the payload, was not yet the box's).
        Some(Status::Stopped)
            if record_pid.map(|p| p as i32).is_some_and(|p| {
                after
                    .get(p)
                    .zip(before.get(p))
                    .is_some_and(|(a, b)| a.cmdline == b.cmdline)
            }) =>
        {
            lost = true;
            problems.push(format!("state said stopped but pid {pid:?} is alive"));
        }
        Some(_) => {}
        None => {
            let recorded = recorded_before && state_record.as_ref().is_some_and(|p| s.exists(p));
            if recorded {
                lost = true;
                problems.push(format!(
                    "the box's state record exists but state gives no answer: {}",
                    run.summary()
                ));
            }
        }
    }
    t.records_lost += usize::from(lost);
    let del = s.delete(id, true)?;
    let left = super::settle_live(s, &[])?;
    if !left.is_empty() {
        t.orphans += left.len();
        problems.push(format!(
            "after delete --force ({}), still alive: {left:?}",
            del.summary()
        ));
        for (p, _) in &left {
            let _ = s.kill_process(*p);
        }
    }
    if let Some(dir) = s.path(FileKind::BoxDir, id) {
        if s.exists(&dir) {
            problems.push(format!("delete --force left {dir} ({})", del.summary()));
        }
    }
    let cgroups = s.leftover_cgroups(id);
    if !cgroups.is_empty() {
        t.cgroups_leaked += 1;
        problems.push(format!(
            "delete --force left the box's cgroup: {}",
            cgroups
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(problems)
}

/// File names of the records the adapter declares in box `id`'s dir.
fn record_names(s: &Scene<'_>, id: &str) -> Vec<String> {
    let Some(dir) = s.path(FileKind::BoxDir, id) else {
        return Vec::new();
    };
    [
        FileKind::Identity,
        FileKind::State,
        FileKind::Exit,
        FileKind::ExitPrevious,
    ]
    .into_iter()
    .filter_map(|k| s.path(k, id))
    .filter_map(|p| {
        p.strip_prefix(&format!("{}/", dir.trim_end_matches('/')))
            .filter(|n| !n.contains('/'))
            .map(str::to_string)
    })
    .collect()
}

/// Reads every record the adapter declares for `id`: the recorded pid, and
/// what is unreadable (empty, or JSON cut short).
fn records(s: &Scene<'_>, id: &str) -> (Option<i64>, Vec<String>) {
    let mut bad = Vec::new();
    let mut pid = None;
    let mut seen = Vec::new();
    for kind in [
        FileKind::Identity,
        FileKind::State,
        FileKind::Exit,
        FileKind::ExitPrevious,
    ] {
        let Some(path) = s.path(kind, id) else {
            continue;
        };
        if seen.contains(&path) || !s.exists(&path) {
            continue;
        }
        seen.push(path.clone());
        let Ok(bytes) = s.read(&path) else {
            bad.push(format!("{kind} record {path} cannot be read"));
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        if text.trim().is_empty() {
            bad.push(format!("{kind} record {path} is empty (half-written)"));
            continue;
        }
        let rec = s.adapter().identity.as_ref();
        if kind == FileKind::Identity {
            let rec = rec.expect("the path came from it");
            pid = record_get(rec.format, &text, &rec.pid).and_then(|v| v.parse().ok());
            // A line record is nothing but its values. A whole JSON record
            // without a pid yet (youki's "creating") is an early record,
            // not a lost one: only whether it parses counts (below).
            if pid.is_none() && rec.format == RecordFormat::Lines {
                bad.push(format!(
                    "identity record {path} names no pid (half-written?): {text:?}"
                ));
                continue;
            }
        }
        if text.trim_start().starts_with(['{', '[']) {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
                bad.push(format!(
                    "{kind} record {path} is cut short or corrupt ({e}): {text:?}"
                ));
            }
        }
    }
    (pid, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep's delays over an operation that took `cal_us` when it was
    /// measured and `now_us` from the first delay on (re-measured when the
    /// span says so): how many of the delays that interrupt it land in its
    /// last 30%.
    fn late_hits(cal_us: u64, now_us: u64) -> u64 {
        let mut span = Span::new(cal_us);
        let (mut killed, mut late) = (0, 0);
        while killed < DELAYS_PER_OP && span.tried < MAX_DELAYS_PER_OP {
            if span.due() {
                span.measured(now_us);
            }
            let d = span.next();
            if d >= now_us {
                span.outlived(now_us);
                continue;
            }
            killed += 1;
            late += u64::from(d * 10 >= now_us * 7);
        }
        late
    }

    #[test]
    fn delays_follow_an_operation_that_slowed_after_it_was_measured() {
        // Steady: the walk covers the span evenly, ~30% land late.
        let steady = late_hits(10_000, 10_000);
        assert!((12..=18).contains(&steady), "{steady}");
        // Three times slower from the first delay on: the first 10 delays
        // (within the old 10 ms, a third of the new run) cannot land late;
        // once re-measured the rest cover the whole run again.
        let slowed = late_hits(10_000, 30_000);
        assert!(slowed >= 10, "{slowed}");
    }

    #[test]
    fn a_delay_the_operation_outlived_shrinks_the_span() {
        let mut span = Span::new(30_000);
        span.outlived(10_000);
        assert_eq!(span.us, 10_000);
        span.outlived(20_000);
        assert_eq!(span.us, 10_000, "it only shrinks");
        span.measured(25_000);
        assert_eq!(span.us, 25_000, "a new measurement replaces it");
        assert!((0..40).all(|_| span.next() < 25_000));
        assert_eq!(Span::new(0).us, 1, "never empty");
    }
}
