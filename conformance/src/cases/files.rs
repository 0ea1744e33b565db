//! files::*: planted state files (oversized, FIFO, symlink, garbage) get a
//! clear answer in bounded time, are left in place, and never stop the
//! runtime from handling healthy boxes.

use super::{hung, judge, live_box, state_problem};
use crate::adapter::{Operation, Status};
use crate::catalog::{Halt, NotStaged, Verdict};
use crate::scene::{FileKind, Plant, Scene};

/// Plants `plant` as `id`'s state record (replacing the real one), with a
/// healthy box beside it, then asks state/list/recover. Returns problems.
fn planted_record(s: &mut Scene<'_>, id: &str, plant: Plant) -> Result<Vec<String>, Halt> {
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
        let plant = Plant::Oversized { size: bytes };
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
    let mut problems = Vec::new();
    let mut outside = Vec::new();
    // One box per record kind, so each link is judged on its own: a runtime
    // whose other records disagree with the linked one must not pass by luck.
    for (kind, id) in [
        (FileKind::State, "linked-state"),
        (FileKind::Identity, "linked-identity"),
    ] {
        let Some(src) = s.path(kind, "healthy") else {
            continue;
        };
        live_box(s, id)?;
        let dst = s.path(kind, id).expect("same template as healthy");
        // A copy of the live box's record outside the root: a runtime that
        // follows the link would take the box for the live one.
        let out = s.outside_path(&format!("outside-{kind}"));
        let bytes = s.read(&src)?;
        s.write(&out, &bytes)?;
        s.plant(
            &dst,
            Plant::Symlink {
                target: out.clone().into(),
            },
        )?;
        outside.push((out.clone(), s.fingerprint(&out)?));
        let (run, st) = s.state(id)?;
        if let Some(st) = st.filter(|st| st.status == Some(Status::Running)) {
            let pid = super::reported_pid(s, st.pid, None)?;
            let whose = if st.pid == Some(i64::from(live)) {
                " (the healthy box's)"
            } else {
                ""
            };
            problems.push(format!(
                "state followed the symlinked {kind} record and reported `{id}` running{pid}{whose}: {}",
                run.summary()
            ));
        }
        s.op(Operation::List, None, &[])?;
        s.op(Operation::Recover, None, &[])?;
        s.delete(id, true)?;
        if s.census()?.get(live).is_none() {
            problems.push(format!(
                "delete --force of `{id}` killed the healthy box's process {live} through the symlinked {kind} record"
            ));
            break;
        }
    }
    if outside.is_empty() {
        return Err(
            NotStaged("adapter declares neither files.state nor identity.file".into()).into(),
        );
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
    for (i, plant) in [
        Plant::RandomBytes { len: 512 },
        Plant::Empty,
        Plant::HalfOfExisting,
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("garbage{i}");
        live_box(s, &id)?;
        let path = s.declared_path(FileKind::State, &id)?;
        let what = plant.to_string();
        s.plant(&path, plant)?;
        let (run, st) = s.state(&id)?;
        let file = path.rsplit('/').next().unwrap_or(&path).to_string();
        // The error must name the file (its path or its name): the box id
        // alone does not tell an operator which file to look at.
        let names_file = |text: &str| text.contains(&path) || text.contains(&file);
        if run.crashed() {
            problems.push(format!(
                "state on a {what} record crashed: {}",
                run.summary()
            ));
        } else if hung(&run) {
            problems.push(format!("state on a {what} record hung"));
        } else if run.success() {
            match st {
                Some(st) if st.status == Some(Status::Running) => {
                    let pid = super::reported_pid(s, st.pid, None)?;
                    problems.push(format!(
                        "state on a {what} record reported {:?}{pid} instead of an error",
                        st.word
                    ));
                }
                // Exit 0 is an answer, not an error, unless the answer
                // carries one naming the file.
                st if st
                    .as_ref()
                    .is_some_and(|st| json_strings(&st.raw).any(names_file)) => {}
                _ => problems.push(format!(
                    "state on a {what} record exited 0 with no error naming {file} or {path}: {}",
                    run.summary()
                )),
            }
        } else if !names_file(&run.stderr) && !names_file(&run.stdout) {
            problems.push(format!(
                "the error for a {what} record names neither {file} nor {path}: {}",
                run.summary()
            ));
        }
    }
    judge(
        "garbage records give an error (non-zero exit, or an error in the answer) naming the file; no panic; never running",
        problems,
        s,
    )
}

/// Every string in a JSON document (values, recursively).
fn json_strings(v: &serde_json::Value) -> Box<dyn Iterator<Item = &str> + '_> {
    match v {
        serde_json::Value::String(s) => Box::new(std::iter::once(s.as_str())),
        serde_json::Value::Array(a) => Box::new(a.iter().flat_map(json_strings)),
        serde_json::Value::Object(o) => Box::new(o.values().flat_map(json_strings)),
        _ => Box::new(std::iter::empty()),
    }
}

pub(crate) fn bad_record_isolated(s: &mut Scene<'_>) -> Verdict {
    let h1 = live_box(s, "healthy1")?;
    let h2 = live_box(s, "healthy2")?;
    let mut problems = Vec::new();
    let plants = [
        Plant::Oversized { size: 1 << 40 },
        Plant::Fifo,
        Plant::Symlink {
            target: "/etc/hostname".into(),
        },
        Plant::DanglingSymlink,
        Plant::DirectoryInsteadOfFile,
        Plant::RandomBytes { len: 512 },
        Plant::Empty,
        Plant::HalfOfExisting,
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

/// Parents a state root must not be accepted in: (name, mode, owner, why).
/// The foreign owner is `nobody`, which a world run as root can chown to.
const BAD_PARENTS: [(&str, u32, Option<u32>, &str); 3] = [
    ("loose", 0o777, None, "world-writable"),
    ("group-writable", 0o775, None, "group-writable"),
    ("foreign-owned", 0o755, Some(65534), "owned by uid 65534"),
];

pub(crate) fn private_dirs(s: &mut Scene<'_>) -> Verdict {
    // A first box makes the root; then watch it, and every dir made under
    // it, while the second box is created: a mode set after mkdir or open
    // (chmod-after-create) leaves a window in which the entry had
    // group/other bits, and an attribute event.
    live_box(s, "first")?;
    let dir = s.declared_path(FileKind::BoxDir, "private")?;
    let parent = dir
        .rsplit_once('/')
        .map(|(p, _)| p.to_string())
        .ok_or_else(|| NotStaged(format!("{dir} has no parent")))?;
    let watch = s.watch_attrib_tree(&parent)?;
    live_box(s, "private")?;
    let seen = watch.finish();
    let mut problems = Vec::new();
    let mine = |p: &str| p == dir || p.starts_with(&format!("{dir}/"));
    for (path, mode) in seen.changed.iter().filter(|(p, _)| mine(p)) {
        problems.push(format!(
            "{path} had its mode, owner or times set after it was created (mode now {:o}): a mode or owner given after creation leaves a window",
            mode & 0o7777
        ));
    }
    let unseen: Vec<&String> = seen.unseen.iter().filter(|p| mine(p)).collect();
    let watched = seen.watched.iter().filter(|p| mine(p)).count();
    let mut staging = vec![format!(
        "chmod watch on {parent} and {watched} dir(s) of the box as they appeared"
    )];
    if !unseen.is_empty() {
        staging.push(format!(
            "made before their dir's watch was set (modes checked, not the window): {}",
            unseen
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
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
    // A root inside a parent others can write to or own must be refused.
    for (name, mode, owner, why) in BAD_PARENTS {
        let root = match s.root_in_parent(name, mode, owner) {
            Ok(r) => r,
            // Only the foreign owner can be out of reach (no second uid
            // mapped in a world of an unprivileged user): say so.
            Err(e) if owner.is_some() => {
                staging.push(format!("no {why} parent: {}", e.0));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let run = s.run_box_in_root(&root, &format!("exposed-{name}"), super::SLEEPER)?;
        if run.success() {
            problems.push(format!(
                "the runtime accepted a root inside a {why} parent ({root}): {}",
                run.summary()
            ));
        }
    }
    s.staging = Some(staging.join("; "));
    judge(
        "runtime dirs 0700 and files 0600 from birth; a group/world-writable or foreign-owned parent refused",
        problems,
        s,
    )
}
