//! Box ids: the validated name of a box. Compared exactly, never by prefix or
//! substring (`box-1` is not `box-10`).

use std::fmt;
use std::str::FromStr;

/// Maximum length of a box id.
pub const MAX_LEN: usize = 64;

/// A box id: `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`. Safe as a single path
/// component (no `/`, never `.` or `..`) and as one argv element.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct BoxId(String);

/// Why a string is not a box id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoxIdError {
    /// Empty string.
    #[error("box id is empty")]
    Empty,
    /// Longer than [`MAX_LEN`].
    #[error("box id is {len} bytes long, more than {MAX_LEN}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// A character outside the allowed set (or a bad first character).
    #[error(
        "box id {id:?} has a forbidden character at byte {at} (allowed: [A-Za-z0-9][A-Za-z0-9_.-]*)"
    )]
    BadChar {
        /// The rejected id.
        id: String,
        /// Byte offset of the first bad character.
        at: usize,
    },
}

impl BoxId {
    /// Validates `s` as a box id.
    pub fn new(s: &str) -> Result<Self, BoxIdError> {
        if s.is_empty() {
            return Err(BoxIdError::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(BoxIdError::TooLong { len: s.len() });
        }
        for (i, b) in s.bytes().enumerate() {
            let ok = b.is_ascii_alphanumeric() || (i > 0 && matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(BoxIdError::BadChar {
                    id: s.to_string(),
                    at: i,
                });
            }
        }
        Ok(BoxId(s.to_string()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for BoxId {
    type Err = BoxIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BoxId::new(s)
    }
}

impl TryFrom<String> for BoxId {
    type Error = BoxIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        BoxId::new(&s)
    }
}

impl From<BoxId> for String {
    fn from(id: BoxId) -> String {
        id.0
    }
}

impl fmt::Display for BoxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    #[rstest]
    #[case("a", true)]
    #[case("box-1", true)]
    #[case("Box_1.x-y", true)]
    #[case("", false)]
    #[case(".", false)]
    #[case("..", false)]
    #[case("-a", false)]
    #[case("a/b", false)]
    #[case("a b", false)]
    #[case("é", false)]
    fn validates(#[case] s: &str, #[case] ok: bool) {
        assert_eq!(BoxId::new(s).is_ok(), ok, "{s:?}");
    }

    #[test]
    fn length_limit() {
        assert!(BoxId::new(&"a".repeat(64)).is_ok());
        assert_eq!(
            BoxId::new(&"a".repeat(65)),
            Err(BoxIdError::TooLong { len: 65 })
        );
    }

    #[test]
    fn exact_comparison() {
        assert_ne!(BoxId::new("box-1").unwrap(), BoxId::new("box-10").unwrap());
    }

    proptest! {
        #[test]
        fn any_string_ok_or_err(s in ".*") {
            if let Ok(id) = BoxId::new(&s) {
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert!(!id.as_str().contains('/'));
            }
        }

        #[test]
        fn valid_ids_round_trip_json(s in "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}") {
            let id = BoxId::new(&s).unwrap();
            let json = serde_json::to_string(&id).unwrap();
            let back: BoxId = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, id);
        }
    }
}
