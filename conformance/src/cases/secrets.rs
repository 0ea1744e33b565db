//! secrets::*: secrets never reach a process's cmdline or environ.

use super::{SLEEPER, judge};
use crate::catalog::{NotStaged, Verdict};
use crate::scene::Scene;

pub(crate) fn not_in_proc(s: &mut Scene<'_>) -> Verdict {
    let secret = s.random_token("doppel-secret");
    let run = s.run_secret("secretive", secret.as_bytes(), SLEEPER)?;
    if !run.success() {
        return Err(NotStaged(format!(
            "run with a secret failed: {}",
            run.summary()
        )));
    }
    let census = s.census()?;
    let leaks: Vec<String> = census
        .procs
        .iter()
        .filter(|p| p.holds_secret)
        .map(|p| format!("pid {} {:?}", p.pid, p.cmdline))
        .collect();
    let problems = if leaks.is_empty() {
        vec![]
    } else {
        vec![format!(
            "the secret is in the cmdline or environ of {}",
            leaks.join(", ")
        )]
    };
    judge(
        "the secret is in no process's cmdline or environ",
        problems,
        s,
    )
}
