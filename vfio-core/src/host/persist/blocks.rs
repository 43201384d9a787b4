//! vfiotool's marked block in a file it shares with the user: cutting a file around it
//! and merging a new block in, keeping every other byte. Pure functions over text.

use super::{BEGIN, END};

// ---------------------------------------------------------------------------------------
// Pure text: blocks
// ---------------------------------------------------------------------------------------

/// A file cut around vfiotool's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split<'a> {
    /// The text before the [`BEGIN`] line (all of it when there is no block).
    pub before: &'a str,
    /// The lines between the markers; `None` when the file has no block.
    pub block: Option<&'a str>,
    /// The text after the [`END`] line (after its newline).
    pub after: &'a str,
}

impl Split<'_> {
    /// The user's part of the file: everything outside the block.
    pub fn outside(&self) -> String {
        format!("{}{}", self.before, self.after)
    }
}

/// Why a file's markers cannot be read: a line number (1-based) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockError {
    /// The line of the offending marker.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.trim() == marker
}

/// Cuts `text` around vfiotool's block. A marker is a line that reads [`BEGIN`] or
/// [`END`] (surrounding white space ignored). A file has at most one block; an unpaired,
/// nested or second marker is an error, never a guess.
pub fn split_block(text: &str) -> Result<Split<'_>, BlockError> {
    let mut pos = 0;
    let mut begin: Option<(usize, usize)> = None; // (start of BEGIN line, end of it)
    let mut done: Option<(usize, usize, usize, usize)> = None;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let (start, end) = (pos, pos + line.len());
        pos = end;
        if is_marker(line, BEGIN) {
            if done.is_some() {
                return Err(BlockError { line: i + 1, reason: "a second vfiotool block" });
            }
            if begin.is_some() {
                return Err(BlockError {
                    line: i + 1,
                    reason: "a BEGIN marker inside the block (no END before it)",
                });
            }
            begin = Some((start, end));
        } else if is_marker(line, END) {
            match begin.take() {
                Some((b0, b1)) if done.is_none() => done = Some((b0, b1, start, end)),
                _ => {
                    return Err(BlockError {
                        line: i + 1,
                        reason: "an END marker with no BEGIN before it",
                    })
                }
            }
        }
    }
    if begin.is_some() {
        let line = text[..begin.map_or(0, |b| b.0)].matches('\n').count() + 1;
        return Err(BlockError { line, reason: "a BEGIN marker with no END after it" });
    }
    Ok(match done {
        Some((b0, b1, e0, e1)) => {
            Split { before: &text[..b0], block: Some(&text[b1..e0]), after: &text[e1..] }
        }
        None => Split { before: text, block: None, after: "" },
    })
}

/// The block holding `inner` (given a final newline when it lacks one).
fn block_text(inner: &str) -> String {
    let nl = if inner.is_empty() || inner.ends_with('\n') { "" } else { "\n" };
    format!("{BEGIN}\n{inner}{nl}{END}\n")
}

/// A file's new content with its block set to `inner` (`None`: no block).
///
/// `old` is the file now (`None`: absent). Outside the block every byte is kept; a file
/// without a block gets the block appended (after a newline closing its last line, if
/// that line had none). The result is `None` when the file should not exist: it did not
/// and gets no block, or it held nothing but the block and the block goes.
pub fn merge_block(old: Option<&str>, inner: Option<&str>) -> Result<Option<String>, BlockError> {
    if let Some(inner) = inner {
        if let Some(i) = inner.lines().position(|l| is_marker(l, BEGIN) || is_marker(l, END)) {
            return Err(BlockError { line: i + 1, reason: "a marker line inside the new block" });
        }
    }
    let Some(old) = old else {
        return Ok(inner.map(block_text));
    };
    let split = split_block(old)?;
    Ok(match (split.block, inner) {
        (Some(_), Some(inner)) => {
            Some(format!("{}{}{}", split.before, block_text(inner), split.after))
        }
        (Some(_), None) => Some(split.outside()).filter(|s| !s.is_empty()),
        (None, Some(inner)) => {
            let nl = if old.is_empty() || old.ends_with('\n') { "" } else { "\n" };
            Some(format!("{old}{nl}{}", block_text(inner)))
        }
        (None, None) => Some(old.to_string()),
    })
}
