//! doppel-benches: criterion benches for Doppel (see `benches/`).
//!
//! This library holds the small helpers the bench targets share: a median over
//! repeated measurements and the side-by-side summary line, so a ratio is always
//! computed from two figures taken in the same run.

use std::time::Duration;

/// Median of a set of durations (the upper median for an even count).
///
/// Returns `None` for an empty set.
pub fn median(samples: &mut [Duration]) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    Some(samples[samples.len() / 2])
}

/// How many times `slow` is slower than `fast` (`slow / fast`).
pub fn ratio(slow: Duration, fast: Duration) -> f64 {
    slow.as_secs_f64() / fast.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// Formats a duration with a unit that keeps three significant figures.
pub fn human(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_sets() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [ms(3), ms(1), ms(2)]), Some(ms(2)));
        assert_eq!(median(&mut [ms(4), ms(1), ms(3), ms(2)]), Some(ms(3)));
    }

    #[test]
    fn ratio_and_units() {
        let us = Duration::from_micros;
        assert!((ratio(us(500), us(5)) - 100.0).abs() < 1e-9);
        assert_eq!(human(Duration::from_nanos(12)), "12 ns");
        assert_eq!(human(us(12)), "12.0 µs");
        assert_eq!(human(Duration::from_millis(12)), "12.00 ms");
        assert_eq!(human(Duration::from_secs(2)), "2.00 s");
    }
}
