//! Reading a history file back for `keel chaos report FILE`: either a plain
//! history (JSON lines, one operation each) or `keel chaos`'s failures file,
//! where each seed's history follows a `# seed N` line.

use std::io::BufRead;

use crate::history::{History, Operation};

/// Why a history file could not be read. Always names the line (1-based).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading the history file: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: not an operation: {source}")]
    Json {
        line: usize,
        source: serde_json::Error,
    },
    #[error("line {line}: bad seed header {text:?} (expected `# seed N`)")]
    Header { line: usize, text: String },
    #[error("line {line}: seed {seed}'s history is invalid: {reason}")]
    Invalid {
        line: usize,
        seed: u64,
        reason: String,
    },
    #[error("the history file has no operations")]
    Empty,
}

/// Each seed's history, in file order. A file without `# seed` lines is one
/// history under seed 0. Every history is validated.
pub fn load_failures<R: BufRead>(input: R) -> Result<Vec<(u64, History)>, LoadError> {
    // (seed, line of its header, ops)
    let mut seeds: Vec<(u64, usize, Vec<Operation>)> = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let (line, n) = (line?, i + 1);
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if let Some(rest) = text.strip_prefix('#') {
            let seed = rest
                .trim()
                .strip_prefix("seed")
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| LoadError::Header {
                    line: n,
                    text: text.to_string(),
                })?;
            seeds.push((seed, n, Vec::new()));
            continue;
        }
        let op =
            serde_json::from_str(text).map_err(|source| LoadError::Json { line: n, source })?;
        if seeds.is_empty() {
            seeds.push((0, n, Vec::new()));
        }
        seeds.last_mut().expect("pushed above").2.push(op);
    }
    if seeds.iter().all(|s| s.2.is_empty()) {
        return Err(LoadError::Empty);
    }
    seeds
        .into_iter()
        .map(|(seed, line, ops)| {
            let h = History::new(ops);
            h.validate().map_err(|e| LoadError::Invalid {
                line,
                seed,
                reason: e.to_string(),
            })?;
            Ok((seed, h))
        })
        .collect()
}
