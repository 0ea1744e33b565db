//! sentinels::*: stale log directories are cleaned by owner identity, never
//! by a bare pid.

use super::{judge, live_box, replace_with_impostor};
use crate::adapter::Operation;
use crate::catalog::Verdict;
use crate::scene::{FileKind, ImpostorKind, Plant, Scene};

/// The boxes of the scene, each with a sentinel in a different situation.
const BOXES: [&str; 6] = [
    "live",
    "dead",
    "recycled",
    "oversized",
    "legacy-dead",
    "legacy-live",
];

pub(crate) fn stale_log_cleanup(s: &mut Scene<'_>) -> Verdict {
    const EXPECTED: &str = "dead and recycled owners' logs removed with a reason (v1 and v2), live kept (v1 and v2), oversized left alone";
    // live: a running box; dead: its process killed; recycled: killed and an
    // unrelated process placed at its pid; oversized: a sparse sentinel;
    // legacy-*: the sentinel rewritten to the legacy format (v1, a lone
    // pid, as `log-sentinels` defines it), its owner then killed or alive.
    let mut pids = Vec::new();
    for id in BOXES {
        pids.push(live_box(s, id)?);
    }
    let pid = |id: &str| pids[BOXES.iter().position(|b| *b == id).expect("a box")];
    let mut problems = Vec::new();
    for id in BOXES {
        let p = s.declared_path(FileKind::Sentinel, id)?;
        if !s.exists(&p) {
            // The adapter claims log sentinels: a running box without one
            // is the runtime's failure.
            problems.push(format!(
                "the runtime wrote no sentinel for the running box {id} at {p}"
            ));
        }
    }
    if !problems.is_empty() {
        return judge(EXPECTED, problems, s);
    }
    for id in ["legacy-dead", "legacy-live"] {
        let p = s.declared_path(FileKind::Sentinel, id)?;
        s.write(&p, format!("{}\n", pid(id)).as_bytes())?;
    }
    s.kill_process(pid("dead"))?;
    s.kill_process(pid("legacy-dead"))?;
    let imp = replace_with_impostor(s, pid("recycled"), ImpostorKind::Unrelated)?;
    let big = s.declared_path(FileKind::Sentinel, "oversized")?;
    s.plant(&big, Plant::Oversized { size: 1 << 40 })?;
    let big_fp = s.fingerprint(&big)?;
    let run = s.op(Operation::Cleanup, None, &[])?;
    if run.crashed() || run.timed_out {
        problems.push(format!("cleanup: {}", run.summary()));
    }
    for id in ["dead", "recycled", "legacy-dead"] {
        let p = s.declared_path(FileKind::Sentinel, id)?;
        if s.exists(&p) {
            problems.push(format!(
                "the sentinel of {id} (owner pid {} gone or recycled) is still there: {p}",
                pid(id)
            ));
        } else if !gives_reason(&run.stdout, &run.stderr, id, &p) {
            problems.push(format!(
                "cleanup removed {id}'s log without saying why: {}",
                run.summary()
            ));
        }
    }
    for id in ["live", "legacy-live"] {
        let p = s.declared_path(FileKind::Sentinel, id)?;
        if !s.exists(&p) {
            problems.push(format!(
                "the sentinel {p} of {id}, whose owner pid {} is alive, was removed",
                pid(id)
            ));
        }
    }
    if s.fingerprint(&big)? != big_fp {
        problems.push(format!(
            "the oversized sentinel {big} was changed or removed"
        ));
    }
    if let Some(p) = super::impostor_problem(s, &imp)? {
        problems.push(p);
    }
    judge(EXPECTED, problems, s)
}

/// Words that say what was done, not why.
const ACTION_WORDS: [&str; 10] = [
    "removed", "remove", "removing", "deleted", "delete", "cleaned", "clean", "ok", "done", "log",
];

/// Keys of a JSON object that carry a reason.
const REASON_KEYS: [&str; 6] = ["reason", "why", "cause", "message", "error", "detail"];

/// Whether cleanup's output gives a reason for the box `id` (sentinel at
/// `path`): a JSON object (stdout as one document, or one per line) naming
/// the box with a non-empty reason-like field, or a line naming it with a
/// word beyond the id, paths and the action itself
/// ("removed /r/dead/log/.sentinel" says what, not why).
pub(crate) fn gives_reason(stdout: &str, stderr: &str, id: &str, path: &str) -> bool {
    let dir = path.rsplit_once('/').map_or(path, |(d, _)| d);
    let names =
        |t: &str| t == id || t.contains(&format!("/{id}/")) || t.ends_with(&format!("/{id}"));
    let json = |t: &str| serde_json::from_str::<serde_json::Value>(t).ok();
    let whole = json(stdout.trim());
    if whole
        .iter()
        .chain(stdout.lines().filter_map(json).collect::<Vec<_>>().iter())
        .any(|d| json_reason(d, &names))
    {
        return true;
    }
    // Text lines: JSON is judged by its fields above, not its words.
    let text = stdout
        .lines()
        .filter(|l| whole.is_none() && json(l).is_none())
        .chain(stderr.lines());
    text.into_iter().any(|line| {
        let words: Vec<&str> = line
            .split(|c: char| {
                c.is_whitespace()
                    || matches!(c, ',' | ':' | ';' | '"' | '{' | '}' | '[' | ']' | '=')
            })
            .filter(|w| !w.is_empty())
            .collect();
        words.iter().any(|w| names(w) || *w == path || *w == dir)
            && words.iter().any(|w| {
                !names(w)
                    && !w.contains('/')
                    && w.chars().any(|c| c.is_ascii_alphabetic())
                    && !ACTION_WORDS.contains(&w.to_ascii_lowercase().as_str())
            })
    })
}

fn json_reason(v: &serde_json::Value, names: &dyn Fn(&str) -> bool) -> bool {
    match v {
        serde_json::Value::Object(o) => {
            let about = o.values().any(|x| x.as_str().is_some_and(names));
            let reason = o.iter().any(|(k, x)| {
                REASON_KEYS
                    .iter()
                    .any(|r| k.to_ascii_lowercase().contains(r))
                    && x.as_str().is_some_and(|t| !t.trim().is_empty())
            });
            (about && reason) || o.values().any(|x| json_reason(x, names))
        }
        serde_json::Value::Array(a) => a.iter().any(|x| json_reason(x, names)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::gives_reason;

    const P: &str = "/w/root/dead/log/.sentinel";

    #[test]
    fn a_json_reason_counts() {
        let out = r#"{"boxes":[{"id":"dead","action":"removed","reason":"owner-dead pid=5"}],"errors":[]}"#;
        assert!(gives_reason(out, "", "dead", P));
        let none = r#"{"boxes":[{"id":"dead","action":"removed","reason":""}]}"#;
        assert!(!gives_reason(none, "", "dead", P));
        let other = r#"{"boxes":[{"id":"live","reason":"owner-alive"},{"id":"dead"}]}"#;
        assert!(!gives_reason(other, "", "dead", P));
    }

    #[test]
    fn a_line_needs_more_than_the_action() {
        assert!(!gives_reason(
            "",
            "removed /w/root/dead/log/.sentinel\n",
            "dead",
            P
        ));
        assert!(!gives_reason("", "dead removed\n", "dead", P));
        assert!(gives_reason(
            "",
            "dead removed owner-dead pid=5\n",
            "dead",
            P
        ));
        assert!(gives_reason(
            "",
            "removed /w/root/dead/log: owner exited\n",
            "dead",
            P
        ));
        assert!(!gives_reason(
            "",
            "deadbeef removed: owner exited\n",
            "dead",
            P
        ));
    }
}
