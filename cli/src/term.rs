//! Writing to stdout. Every line goes through here, so that a reader that stops reading
//! (`rcluster list --all | head -1`) ends the command quietly instead of a panic.

use std::fmt::Display;
use std::io::Write;

use crate::failure::Failure;

/// Writes `text` and a newline to stdout.
pub fn line(text: impl Display) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(())
}

/// Writes `text` as it is (it carries its own newlines) and flushes.
pub fn text(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
