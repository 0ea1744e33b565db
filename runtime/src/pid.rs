//! The `Pid` newtype: a process id that is safe to name as a signal target.
//! Never 0 (own process group), never negative (a process group), never 1
//! (init): a record holding one of those is rejected when parsed.

use std::fmt;

/// The kernel's hard upper bound for pids (`PID_MAX_LIMIT` on 64-bit).
pub const PID_MAX_LIMIT: i64 = 4_194_304;

/// A pid in `2..=PID_MAX_LIMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(i32);

/// A pid out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("pid {value} is not a valid target (must be 2..={PID_MAX_LIMIT})")]
pub struct PidError {
    /// The rejected value.
    pub value: i64,
}

impl Pid {
    /// Validates a raw pid.
    pub fn new(value: i64) -> Result<Self, PidError> {
        if (2..=PID_MAX_LIMIT).contains(&value) {
            Ok(Pid(value as i32))
        } else {
            Err(PidError { value })
        }
    }

    /// The raw value.
    pub fn get(self) -> i32 {
        self.0
    }

    /// As a rustix pid.
    pub fn to_rustix(self) -> rustix::process::Pid {
        rustix::process::Pid::from_raw(self.0).expect("a Pid is >= 2")
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_dangerous_values() {
        for v in [i64::MIN, -1, 0, 1, PID_MAX_LIMIT + 1, i64::MAX] {
            assert!(Pid::new(v).is_err(), "{v}");
        }
        assert_eq!(Pid::new(2).unwrap().get(), 2);
    }

    proptest! {
        #[test]
        fn any_value_ok_or_err(v in any::<i64>()) {
            if let Ok(p) = Pid::new(v) {
                prop_assert!(p.get() > 1);
                prop_assert_eq!(i64::from(p.get()), v);
            }
        }
    }
}
