//! secrets::*: secrets never reach a process's cmdline or environ, and
//! still reach the payload.

use std::time::Duration;

use super::judge;
use crate::catalog::{NotStaged, Verdict};
use crate::scene::Scene;

/// How long the payload may take to write down what it received.
const RECEIVED_DEADLINE: Duration = Duration::from_secs(5);

pub(crate) fn not_in_proc(s: &mut Scene<'_>) -> Verdict {
    let secret = s.random_token("doppel-secret");
    // The payload copies its stdin to a file the suite reads, then stays
    // up for the census: a runtime that keeps the secret out of /proc by
    // dropping it must not pass.
    let received = s.outside_path("secret-received");
    let script =
        format!("cat > {received}.tmp && mv {received}.tmp {received}; exec /bin/sleep 1000");
    let run = s.run_secret("secretive", secret.as_bytes(), &["/bin/sh", "-c", &script])?;
    if !run.success() {
        return Err(NotStaged(format!("run with a secret failed: {}", run.summary())).into());
    }
    let mut problems = Vec::new();
    let got = doppel_harness::poll::until(RECEIVED_DEADLINE, doppel_harness::poll::STEP, || {
        Ok::<_, NotStaged>(match s.read(&received) {
            Ok(b) => std::ops::ControlFlow::Break(b),
            Err(_) => std::ops::ControlFlow::Continue(()),
        })
    })?
    .ok();
    match got {
        Some(b) if String::from_utf8_lossy(&b).trim_end() == secret => {}
        Some(b) => problems.push(format!(
            "the payload received {:?} on stdin, not the secret ({} bytes)",
            String::from_utf8_lossy(&b),
            secret.len()
        )),
        None => problems.push(format!(
            "the payload did not receive the secret: its stdin did not end within {} s ({received} not written)",
            RECEIVED_DEADLINE.as_secs()
        )),
    }
    let census = s.census()?;
    let leaks: Vec<String> = census
        .procs
        .iter()
        .filter(|p| p.holds_secret)
        .map(|p| format!("pid {} {:?}", p.pid, p.cmdline))
        .collect();
    if !leaks.is_empty() {
        problems.push(format!(
            "the secret is in the cmdline or environ of {}",
            leaks.join(", ")
        ));
    }
    judge(
        "the payload receives the secret, and it is in no process's cmdline or environ",
        problems,
        s,
    )
}
