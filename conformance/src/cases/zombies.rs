//! zombies::*: failed creations leave no zombie behind.

use super::judge;
use crate::catalog::Verdict;
use crate::scene::Scene;

/// How many failing creations of each kind.
const N: usize = 8;

pub(crate) fn none_after_failures(s: &mut Scene<'_>) -> Verdict {
    for i in 0..N {
        // Payload that cannot be executed, then one that dies at once.
        s.run_box(&format!("noexec{i}"), &["/nonexistent/doppel-payload"])?;
        s.run_box(&format!("dies{i}"), &["/bin/sh", "-c", "exit 3"])?;
    }
    // A zombie may exist for the instant between its death and its parent's
    // wait; give the runtime a deadline to reap, then judge.
    let census = s.settle_zombies()?;
    let zombies: Vec<String> = census
        .zombies()
        .map(|p| format!("pid {} {:?} (parent {})", p.pid, p.cmdline, p.ppid))
        .collect();
    let problems = if zombies.is_empty() {
        vec![]
    } else {
        vec![format!(
            "{} zombie(s) left: {}",
            zombies.len(),
            zombies.join(", ")
        )]
    };
    judge("no zombies after 16 failed creations", problems, s)
}
