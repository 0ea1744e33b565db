//! files::*: planted state files (oversized, FIFO, symlink, garbage) get a
//! clear answer in bounded time, are left in place, and never stop the
//! runtime from handling healthy boxes.

use super::{hung, judge, live_box, state_problem};
use crate::adapter::{Operation, Status};
use crate::catalog::{NotStaged, Verdict};
use crate::scene::{FileKind, Plant, Scene};

/// Plants `plant` as `id`'s state record (replacing the real one), with a
/// healthy box beside it, then asks state/list/recover. Returns problems.
fn planted_record(s: &mut Scene<'_>, id: &str, plant: Plant) -> Result<Vec<String>, NotStaged> {
    live_box(s, "healthy")?;
    live_box(s, id)?;
    let path = s.declared_path(FileKind::State, id)?;
    let what = plant.to_string();
    s.plant(&path, plant)?;
    let before = s.fingerprint(&path)?;
    let mut problems = Vec::new();
    let (run, _) = s.state(id)?;
    if hung(&run) {
        problems.push(format!(
            "state {id} with a {what} record hung: {}",
            run.summary()
        ));
    }
    if run.crashed() {
        problems.push(format!(
            "state {id} with a {what} record crashed: {}",
            run.summary()
        ));
    }
    for op in [Operation::List, Operation::Recover] {
        let run = s.op(op, None, &[])?;
        if hung(&run) {
            problems.push(format!("{op} with a {what} record hung: {}", run.summary()));
        }
        if run.crashed() {
            problems.push(format!(
                "{op} with a {what} record crashed: {}",
                run.summary()
            ));
        }
        if op == Operation::List && !run.stdout.contains("healthy") {
            problems.push(format!(
                "list with a {what} record beside it does not name the healthy box: {}",
                run.summary()
            ));
        }
    }
    problems.extend(state_problem(s, "healthy", &[Status::Running])?);
    if s.fingerprint(&path)? != before {
        problems.push(format!(
            "the planted {what} at {path} was changed or removed"
        ));
    }
    Ok(problems)
}

/// How much more a runtime may hold in memory with an oversized record
/// planted than without it (peak RSS).
const RSS_BUDGET_KIB: u64 = 16 * 1024;

pub(crate) fn oversized_record(s: &mut Scene<'_>) -> Verdict {
    live_box(s, "healthy")?;
    live_box(s, "big")?;
    let path = s.declared_path(FileKind::State, "big")?;
    let mut problems = Vec::new();
    // Peak RSS of the same commands without the plant: the baseline.
    let mut base = std::collections::BTreeMap::new();
    for (op, id) in [
        (Operation::State, Some("healthy")),
        (Operation::List, None),
        (Operation::Recover, None),
    ] {
        let (_, rss) = s.op_rss(op, id)?;
        base.insert(op, rss);
    }
    // 1 GiB + 1: a reader that slurps it holds a GiB; a capped one a few KiB.
    // 1 TiB: a reader that reads it all never answers.
    for (bytes, measure) in [((1u64 << 30) + 1, true), (1 << 40, false)] {
        let plant = Plant::Oversized { bytes };
        let what = plant.to_string();
        s.plant(&path, plant)?;
        let before = s.fingerprint(&path)?;
        for (op, id) in [
            (Operation::State, Some("big")),
            (Operation::List, None),
            (Operation::Recover, None),
        ] {
            let (run, rss) = if measure {
                s.op_rss(op, id)?
            } else {
                (s.op(op, id, &[])?, None)
            };
            if hung(&run) {
                problems.push(format!("{op} with a {what} record hung: {}", run.summary()));
            } else if run.crashed() {
                problems.push(format!(
                    "{op} with a {what} record crashed: {}",
                    run.summary()
                ));
            }
            if let (Some(r), Some(Some(b))) = (rss, base.get(&op)) {
                if r > b + RSS_BUDGET_KIB {
                    problems.push(format!(
                        "{op} with a {what} record peaked at {} KiB RSS, {} KiB more than without it (budget {RSS_BUDGET_KIB} KiB)",
                        r,
                        r - b
                    ));
                }
            }
            if op == Operation::List && !hung(&run) && !run.stdout.contains("healthy") {
                problems.push(format!(
                    "list with a {what} record beside it does not name the healthy box: {}",
                    run.summary()
                ));
            }
        }
        if s.fingerprint(&path)? != before {
            problems.push(format!(
                "the planted {what} at {path} was changed or removed"
            ));
        }
    }
    problems.extend(state_problem(s, "healthy", &[Status::Running])?);
    judge(
        "an oversized record is refused promptly with bounded memory, left in place, and healthy boxes still handled",
        problems,
        s,
    )
}

pub(crate) fn fifo_record(s: &mut Scene<'_>) -> Verdict {
    let problems = planted_record(s, "fifo", Plant::Fifo)?;
    judge(
        "a FIFO record is refused without blocking, left in place, and healthy boxes still handled",
        problems,
        s,
    )
}

pub(crate) fn symlink_record(s: &mut Scene<'_>) -> Verdict {
    let live = live_box(s, "healthy")?;
    live_box(s, "linked")?;
    let mut problems = Vec::new();
    let mut outside = Vec::new();
    for kind in [FileKind::State, FileKind::Identity] {
        let Some(src) = s.path(kind, "healthy") else {
            continue;
        };
        let dst = s.path(kind, "linked").expect("same template as healthy");
        // A copy of the live box's record outside the root: a runtime that
        // follows the link would take `linked` for the live box.
        let out = s.outside_path(&format!("outside-{kind}"));
        let bytes = s.read(&src)?;
        s.write(&out, &bytes)?;
        s.plant(
            &dst,
            Plant::Symlink {
                target: out.clone(),
            },
        )?;
        outside.push((out.clone(), s.fingerprint(&out)?));
    }
    if outside.is_empty() {
        return Err(NotStaged(
            "adapter declares neither files.state nor identity.file".into(),
        ));
    }
    let (run, st) = s.state("linked")?;
    if let Some(st) = st.filter(|st| st.status == Some(Status::Running)) {
        let pid = super::reported_pid(s, st.pid, None)?;
        let whose = if st.pid == Some(i64::from(live)) {
            " (the healthy box's)"
        } else {
            ""
        };
        problems.push(format!(
            "state followed the symlinked records and reported `linked` running{pid}{whose}: {}",
            run.summary()
        ));
    }
    s.op(Operation::List, None, &[])?;
    s.op(Operation::Recover, None, &[])?;
    s.delete("linked", true)?;
    if s.census()?.get(live).is_none() {
        problems.push(format!(
            "delete --force of `linked` killed the healthy box's process {live} through the symlinked record"
        ));
    }
    for (path, fp) in outside {
        if s.fingerprint(&path)? != fp {
            problems.push(format!("the outside file {path} was changed or removed"));
        }
    }
    judge(
        "symlinked records are not followed; the outside files stay unchanged",
        problems,
        s,
    )
}

pub(crate) fn garbage_record(s: &mut Scene<'_>) -> Verdict {
    let mut problems = Vec::new();
    for (i, plant) in [Plant::Random { bytes: 512 }, Plant::Empty, Plant::Truncated]
        .into_iter()
        .enumerate()
    {
        let id = format!("garbage{i}");
        live_box(s, &id)?;
        let path = s
            .path(FileKind::State, &id)
            .ok_or_else(|| NotStaged("adapter declares no files.state".into()))?;
        let what = plant.to_string();
        s.plant(&path, plant)?;
        let (run, st) = s.state(&id)?;
        if run.crashed() {
            problems.push(format!(
                "state on a {what} record crashed: {}",
                run.summary()
            ));
        } else if hung(&run) {
            problems.push(format!("state on a {what} record hung"));
        } else if run.success() {
            if let Some(st) = st.filter(|st| st.status == Some(Status::Running)) {
                problems.push(format!(
                    "state on a {what} record reported {:?} instead of an error",
                    st.word
                ));
            }
        } else {
            let file = path.rsplit('/').next().unwrap_or(&path);
            if !run.stderr.contains(file) && !run.stderr.contains(&id) {
                problems.push(format!(
                    "the error for a {what} record names neither {file} nor {id}: {}",
                    run.summary()
                ));
            }
        }
    }
    judge(
        "garbage records give a typed error naming the file; no panic",
        problems,
        s,
    )
}

pub(crate) fn bad_record_isolated(s: &mut Scene<'_>) -> Verdict {
    let h1 = live_box(s, "healthy1")?;
    let h2 = live_box(s, "healthy2")?;
    let mut problems = Vec::new();
    let plants = [
        Plant::Oversized { bytes: 1 << 40 },
        Plant::Fifo,
        Plant::Symlink {
            target: "/etc/hostname".into(),
        },
        Plant::DanglingSymlink,
        Plant::Directory,
        Plant::Random { bytes: 512 },
        Plant::Empty,
        Plant::Truncated,
    ];
    for (i, plant) in plants.into_iter().enumerate() {
        let id = format!("bad{i}");
        live_box(s, &id)?;
        let path = s.declared_path(FileKind::State, &id)?;
        let what = plant.to_string();
        s.plant(&path, plant)?;
        for op in [Operation::List, Operation::Recover] {
            let run = s.op(op, None, &[])?;
            if hung(&run) || run.crashed() {
                problems.push(format!("{op} beside a {what} record: {}", run.summary()));
                continue;
            }
            for h in ["healthy1", "healthy2"] {
                if !run.stdout.contains(h) {
                    problems.push(format!(
                        "{op} beside a {what} record does not name {h}: {}",
                        run.summary()
                    ));
                }
            }
            let all = format!("{}{}", run.stdout, run.stderr);
            if !all.contains(&id) {
                problems.push(format!(
                    "{op} does not name the box with the {what} record ({id}): {}",
                    run.summary()
                ));
            }
        }
        s.delete(&id, true)?;
    }
    let census = s.census()?;
    for (h, pid) in [("healthy1", h1), ("healthy2", h2)] {
        if census.get(pid).is_none() {
            problems.push(format!("{h}'s process {pid} is gone"));
        }
    }
    judge(
        "one bad record never stops list/recover from handling the healthy boxes; the bad one is named",
        problems,
        s,
    )
}

pub(crate) fn private_dirs(s: &mut Scene<'_>) -> Verdict {
    // A first box makes the root; then watch it while the second box's dir
    // is created: a mode set after mkdir (chmod-after-create) leaves a
    // window in which the dir had group/other bits, and an attribute event.
    live_box(s, "first")?;
    let dir = s.declared_path(FileKind::BoxDir, "private")?;
    let parent = dir
        .rsplit_once('/')
        .map(|(p, _)| p.to_string())
        .ok_or_else(|| NotStaged(format!("{dir} has no parent")))?;
    let watch = s.watch_attrib(&parent)?;
    live_box(s, "private")?;
    let mut problems = Vec::new();
    let name = dir.rsplit('/').next().unwrap_or_default().to_string();
    if watch.changed_after_creation().contains(&name) {
        problems.push(format!(
            "{dir} had its mode or owner changed after it was created (chmod after mkdir leaves a window)"
        ));
    }
    for (path, mode, is_dir) in s.walk_modes(&dir)? {
        let loose = mode & 0o077;
        if loose != 0 {
            problems.push(format!(
                "{} {path} has mode {:o}: group/other bits set",
                if is_dir { "dir" } else { "file" },
                mode & 0o7777
            ));
        }
    }
    // A root inside a world-writable parent must be refused.
    let loose_root = s.loose_root()?;
    let run = s.run_box_in_root(&loose_root, "exposed", super::SLEEPER)?;
    if run.success() {
        problems.push(format!(
            "the runtime accepted a root inside a world-writable parent ({loose_root}): {}",
            run.summary()
        ));
    }
    judge(
        "runtime dirs 0700 and files 0600; a world-writable parent refused",
        problems,
        s,
    )
}
