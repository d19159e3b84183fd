//! Client-given text as it is echoed back in an error or written in a log line: quoted, with
//! control characters escaped, and cut to a readable length, so that a 100 KB id makes a
//! short message and a newline in a path cannot forge a log line.

use std::fmt;

/// Characters of a client-given string shown at most.
pub const SHOWN_CHARS: usize = 64;

/// Displays as a quoted, escaped string of at most [`SHOWN_CHARS`] characters; a longer one
/// ends with `…` and says how long it was.
pub struct Shown<'a>(&'a str);

/// `value` as an error message or log line should show it.
pub fn shown(value: &str) -> Shown<'_> {
    Shown(value)
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cut = self.0.char_indices().nth(SHOWN_CHARS).map(|(at, _)| at);
        let head = &self.0[..cut.unwrap_or(self.0.len())];
        // Debug quotes and escapes every control character (\n, \u{1b}, ...).
        write!(f, "{head:?}")?;
        if cut.is_some() {
            write!(f, "… ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_and_hostile_strings_are_cut_and_escaped() {
        assert_eq!(shown("abc").to_string(), "\"abc\"");
        assert_eq!(shown("a\nb\u{1b}[31m").to_string(), "\"a\\nb\\u{1b}[31m\"");
        let long = "x".repeat(100_000);
        let text = shown(&long).to_string();
        assert!(text.len() < 100 && text.ends_with("… (100000 bytes)"), "{text}");
        let wide = "é".repeat(SHOWN_CHARS);
        assert_eq!(shown(&wide).to_string(), format!("{wide:?}"), "exactly the limit is not cut");
    }
}
