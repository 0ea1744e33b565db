//! What the shim is told on stdin (never argv or environ): the payload argv,
//! its environment and its secret bytes. Plus the `--env-file` parser.

use serde::{Deserialize, Serialize};

/// The shim's configuration, sent as one JSON document on its stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShimConfig {
    /// Payload argv (non-empty).
    pub argv: Vec<String>,
    /// Payload environment.
    pub env: Vec<(String, String)>,
    /// Bytes written to the payload's stdin, then closed. Secrets go here.
    pub stdin: Option<Vec<u8>>,
    /// Start the payload at once instead of waiting for the start signal.
    pub start_now: bool,
}

/// Why an env file is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvFileError {
    /// Not UTF-8.
    #[error("not UTF-8 text")]
    NotText,
    /// A line is not `KEY=VALUE` with a valid key.
    #[error("line {line}: expected KEY=VALUE with KEY in [A-Za-z_][A-Za-z0-9_]*")]
    BadLine {
        /// 1-based line number.
        line: usize,
    },
}

/// Parses `KEY=VALUE` lines; blank lines and `#` comments are skipped.
pub fn parse_env_file(bytes: &[u8]) -> Result<Vec<(String, String)>, EnvFileError> {
    let text = std::str::from_utf8(bytes).map_err(|_| EnvFileError::NotText)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (k, v) = t
            .split_once('=')
            .ok_or(EnvFileError::BadLine { line: i + 1 })?;
        let key_ok = k
            .chars()
            .enumerate()
            .all(|(j, c)| c == '_' || c.is_ascii_alphabetic() || (j > 0 && c.is_ascii_digit()));
        if k.is_empty() || !key_ok {
            return Err(EnvFileError::BadLine { line: i + 1 });
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn env_lines() {
        let env = parse_env_file(b"# c\nA=1\n\nB_2=x=y\n").unwrap();
        assert_eq!(
            env,
            vec![("A".into(), "1".into()), ("B_2".into(), "x=y".into())]
        );
        assert_eq!(
            parse_env_file(b"1A=2"),
            Err(EnvFileError::BadLine { line: 1 })
        );
        assert_eq!(
            parse_env_file(b"noequals"),
            Err(EnvFileError::BadLine { line: 1 })
        );
    }

    proptest! {
        #[test]
        fn any_bytes_ok_or_err(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_env_file(&bytes);
            // The shim decodes its stdin the same way: bytes → Ok or Err.
            let _ = serde_json::from_slice::<ShimConfig>(&bytes);
        }

        #[test]
        fn config_round_trips(argv in proptest::collection::vec(".*", 1..4), secret in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)), now in any::<bool>()) {
            let c = ShimConfig { argv, env: vec![("K".into(), "V".into())], stdin: secret, start_now: now };
            let back: ShimConfig = serde_json::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap();
            prop_assert_eq!(back, c);
        }
    }
}
