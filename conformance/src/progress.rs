//! Progress of long work on stderr: redrawn in place (`\r`) a few times a
//! second on a terminal; elsewhere (a CI log, a file) a plain line every
//! few seconds and at the end, so a log holds lines, not one line of
//! hundreds of redraws.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a terminal's line is redrawn.
const TERMINAL_EVERY: Duration = Duration::from_millis(200);
/// How often a plain line is written when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// One progress line's pacing.
#[derive(Debug)]
pub struct Progress {
    terminal: bool,
    last: Option<Instant>,
}

impl Progress {
    /// Progress on this process's stderr.
    pub fn stderr() -> Progress {
        Progress::new(std::io::stderr().is_terminal())
    }

    /// Progress for a terminal (`true`) or a log.
    pub fn new(terminal: bool) -> Progress {
        Progress {
            terminal,
            last: None,
        }
    }

    /// What to write now for the line `line` makes (at `now`; `last` for
    /// the final update), if anything: the text, with its `\r` or newline.
    pub fn frame(
        &mut self,
        line: impl FnOnce() -> String,
        now: Instant,
        last: bool,
    ) -> Option<String> {
        let every = if self.terminal {
            TERMINAL_EVERY
        } else {
            LOG_EVERY
        };
        let due = self.last.is_none_or(|t| now.duration_since(t) >= every);
        if !due && !last {
            return None;
        }
        self.last = Some(now);
        let line = line();
        Some(if self.terminal {
            format!("\r{line}   {}", if last { "\n" } else { "" })
        } else {
            format!("{line}\n")
        })
    }

    /// Writes the update to stderr, if one is due (`line` is only made
    /// then).
    pub fn update(&mut self, line: impl FnOnce() -> String, last: bool) {
        if let Some(f) = self.frame(line, Instant::now(), last) {
            eprint!("{f}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames for 60 s of updates every 10 ms, then a last one.
    fn frames(terminal: bool) -> Vec<String> {
        let mut p = Progress::new(terminal);
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..6000u64 {
            out.extend(p.frame(|| format!("{i}"), t0 + Duration::from_millis(10 * i), false));
        }
        out.extend(p.frame(|| "done".into(), t0 + Duration::from_secs(60), true));
        out
    }

    #[test]
    fn a_log_gets_a_plain_line_every_few_seconds() {
        let f = frames(false);
        assert!(f.iter().all(|l| !l.contains('\r') && l.ends_with('\n')));
        assert_eq!(f.len(), 13, "every 5 s for 60 s, and the end: {f:?}");
        assert_eq!(f.last().map(String::as_str), Some("done\n"));
    }

    #[test]
    fn a_terminal_is_redrawn_in_place() {
        let f = frames(true);
        assert!(f.iter().all(|l| l.starts_with('\r')));
        assert!((290..=310).contains(&f.len()), "{}", f.len());
        assert!(f.last().is_some_and(|l| l.ends_with('\n')));
    }
}
