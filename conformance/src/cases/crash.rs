//! crash::*: the runtime SIGKILLed part-way through an operation (swept
//! delays, and named failpoints when the adapter declares them), and the
//! privileged helper SIGKILLed with boxes running. After each crash: no
//! orphan process, every record readable (old or new, never half-written),
//! `state` says something true, `delete --force` cleans up.

use std::fmt;

use crate::adapter::{Operation as Op, Status, record_get};
use crate::catalog::{NotStaged, Outcome, Verdict};
use crate::scene::{Census, FileKind, Scene};

use super::SLEEPER;

/// Delays swept per operation (plus the adapter's failpoints).
pub(crate) const DELAYS_PER_OP: u64 = 50;

/// The operations the sweep interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SweptOp {
    Create,
    Start,
    Kill,
    Delete,
}

impl SweptOp {
    const ALL: [SweptOp; 4] = [
        SweptOp::Create,
        SweptOp::Start,
        SweptOp::Kill,
        SweptOp::Delete,
    ];

    fn op(self) -> Op {
        match self {
            SweptOp::Create => Op::Create,
            SweptOp::Start => Op::Start,
            SweptOp::Kill => Op::Kill,
            SweptOp::Delete => Op::DeleteForce,
        }
    }
}

impl fmt::Display for SweptOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SweptOp::Create => "create",
            SweptOp::Start => "start",
            SweptOp::Kill => "kill",
            SweptOp::Delete => "delete",
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
    failpoints: usize,
    killed: usize,
    orphans: usize,
    records_lost: usize,
}

pub(crate) fn runtime_killed_mid_op(s: &mut Scene<'_>) -> Verdict {
    let mut problems = Vec::new();
    let mut tallies = Vec::new();
    let mut n = 0usize;
    for op in SweptOp::ALL {
        let mut t = Tally::default();
        // Calibrate: how long the uninterrupted operation takes here.
        n += 1;
        let id = format!("cal{n}");
        setup(s, op, &id)?;
        let (run, end) = crash(s, op, &id, None)?;
        if !run.success() {
            return Err(NotStaged(format!(
                "uninterrupted {op} failed: {}",
                run.summary()
            )));
        }
        cleanup(s, &id)?;
        let span = end.elapsed_us.max(1) * 6 / 5;
        let mut points: Vec<At> = (0..DELAYS_PER_OP)
            .map(|i| At::Delay(i * span / (DELAYS_PER_OP - 1)))
            .collect();
        if let Some(fp) = &s.adapter().failpoints {
            let names = match op {
                SweptOp::Create => &fp.create,
                SweptOp::Start => &fp.start,
                SweptOp::Kill => &fp.kill,
                SweptOp::Delete => &fp.delete,
            };
            points.extend(names.iter().cloned().map(At::Failpoint));
        }
        for at in points {
            n += 1;
            let id = format!("c{n}");
            let keep = s.transcript_len();
            setup(s, op, &id)?;
            let killed = match &at {
                At::Delay(us) => {
                    t.delays += 1;
                    crash(s, op, &id, Some(*us))?.1.killed
                }
                At::Failpoint(name) => {
                    t.failpoints += 1;
                    let env = s.adapter().failpoints.as_ref().map(|f| f.env.clone());
                    let env = [(env.unwrap_or_default(), name.clone())];
                    let sig = (op == SweptOp::Kill).then_some("KILL");
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
        tallies.push((op, t));
    }
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
    let mut evidence = problems;
    evidence.truncate(40);
    evidence.extend(s.transcript().into_iter().take(60));
    Ok(Outcome::fail(
        "after every crash: no orphan process, every record readable, state true, delete --force cleans up",
        observed,
        evidence,
    ))
}

fn summary(tallies: &[(SweptOp, Tally)]) -> String {
    tallies
        .iter()
        .map(|(op, t)| {
            format!(
                "{op}: {} delays + {} failpoints ({} killed mid-way), {} orphans, {} records lost",
                t.delays, t.failpoints, t.killed, t.orphans, t.records_lost
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Brings box `id` to the state the operation starts from.
fn setup(s: &mut Scene<'_>, op: SweptOp, id: &str) -> Result<(), NotStaged> {
    match op {
        SweptOp::Create => Ok(()),
        SweptOp::Start => {
            let r = s.op(Op::Create, Some(id), SLEEPER)?;
            if r.success() {
                Ok(())
            } else {
                Err(NotStaged(format!("create {id} failed: {}", r.summary())))
            }
        }
        SweptOp::Kill | SweptOp::Delete => {
            s.must_run_box(id, SLEEPER)?;
            s.wait_status(id, &[Status::Running])
        }
    }
}

fn crash(
    s: &mut Scene<'_>,
    op: SweptOp,
    id: &str,
    delay_us: Option<u64>,
) -> Result<(crate::scene::Run, crate::world::CrashEnd), NotStaged> {
    let sig = (op == SweptOp::Kill).then_some("KILL");
    s.op_crash(op.op(), id, SLEEPER, sig, delay_us)
}

/// `delete --force` a calibration box; it must leave nothing.
fn cleanup(s: &mut Scene<'_>, id: &str) -> Result<(), NotStaged> {
    s.delete(id, true)?;
    let left = live(&s.census()?);
    if left.is_empty() {
        Ok(())
    } else {
        Err(NotStaged(format!(
            "delete --force {id} after an uninterrupted run left {left:?}"
        )))
    }
}

fn live(c: &Census) -> Vec<(i32, Vec<String>)> {
    c.procs
        .iter()
        .filter(|p| p.state != 'Z')
        .map(|p| (p.pid, p.cmdline.clone()))
        .collect()
}

/// The checks after one crash; returns the problems found and counts them.
fn check_point(s: &mut Scene<'_>, id: &str, t: &mut Tally) -> Result<Vec<String>, NotStaged> {
    let mut problems = Vec::new();
    let before = s.census()?;
    let (record_pid, unreadable) = records(s, id);
    let mut lost = !unreadable.is_empty();
    problems.extend(unreadable);
    let (run, st) = s.state(id)?;
    let after = s.census()?;
    let pid = record_pid
        .or(st.as_ref().and_then(|o| o.pid))
        .map(|p| p as i32);
    let alive = |c: &Census| pid.is_some_and(|p| c.get(p).is_some());
    match st.as_ref().and_then(|o| o.status) {
        // A process dead before `state` ran cannot have been running.
        Some(Status::Running | Status::Created) if !alive(&before) => {
            lost = true;
            problems.push(format!(
                "state said {:?} but its process (pid {pid:?}) was not alive",
                st.as_ref().map(|o| o.word.clone()).unwrap_or_default()
            ));
        }
        // A process alive after `state` ran was alive while it ran.
        Some(Status::Stopped) if alive(&after) => {
            lost = true;
            problems.push(format!("state said stopped but pid {pid:?} is alive"));
        }
        Some(_) => {}
        None => {
            let recorded = s.path(FileKind::State, id).is_some_and(|p| s.exists(&p));
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
    let left = live(&s.census()?);
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
    Ok(problems)
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
        if kind == FileKind::Identity {
            let rec = s
                .adapter()
                .identity
                .as_ref()
                .expect("the path came from it");
            match record_get(rec.format, &text, &rec.pid).and_then(|v| v.parse().ok()) {
                Some(p) => pid = Some(p),
                None => bad.push(format!(
                    "identity record {path} names no pid (half-written?): {text:?}"
                )),
            }
        } else if text.trim_start().starts_with(['{', '[']) {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
                bad.push(format!(
                    "{kind} record {path} is cut short or corrupt ({e}): {text:?}"
                ));
            }
        }
    }
    (pid, bad)
}
