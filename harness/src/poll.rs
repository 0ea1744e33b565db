//! Owns the one way the workspace waits for something that has no
//! descriptor to wait on (a status `state` will report, a process to leave
//! the census, a file to appear): [`until`], a poll with a deadline. Where
//! a descriptor exists (a pidfd, a pipe), wait on it instead.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// How long [`until`] sleeps between tries unless told otherwise.
pub const STEP: Duration = Duration::from_millis(5);

/// Calls `try_once` every `step` until it answers `Break(done)`, for at
/// most `timeout` (it is always tried at least once, and once more after
/// the deadline has passed, so a slow machine gets its last look).
/// `Ok(Ok(done))` when it broke, `Ok(Err(last))` with the last
/// `Continue(last)` at the deadline, `Err` as soon as a try fails.
pub fn until<T, L, E>(
    timeout: Duration,
    step: Duration,
    mut try_once: impl FnMut() -> Result<ControlFlow<T, L>, E>,
) -> Result<Result<T, L>, E> {
    let deadline = Instant::now() + timeout;
    loop {
        let past = Instant::now() >= deadline;
        match try_once()? {
            ControlFlow::Break(done) => return Ok(Ok(done)),
            ControlFlow::Continue(last) if past => return Ok(Err(last)),
            ControlFlow::Continue(_) => std::thread::sleep(step),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaks_as_soon_as_it_can() {
        let mut n = 0;
        let r: Result<Result<u32, ()>, ()> = until(Duration::from_secs(10), Duration::ZERO, || {
            n += 1;
            Ok(if n == 3 {
                ControlFlow::Break(n)
            } else {
                ControlFlow::Continue(())
            })
        });
        assert_eq!(r, Ok(Ok(3)));
    }

    #[test]
    fn gives_the_last_try_at_the_deadline_and_tries_at_least_once() {
        let mut n = 0;
        let r: Result<Result<(), u32>, ()> = until(Duration::ZERO, Duration::ZERO, || {
            n += 1;
            Ok(ControlFlow::Continue(n))
        });
        assert_eq!(r, Ok(Err(1)), "one try, past the deadline at once");
        let r: Result<Result<(), ()>, &str> =
            until(Duration::from_secs(10), Duration::ZERO, || Err("broken"));
        assert_eq!(r, Err("broken"));
    }
}
