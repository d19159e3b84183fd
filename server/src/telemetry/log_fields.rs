//! How the text log format writes an event's fields: every value with its control
//! characters escaped (`\n`, `\u{1b}`), so that a client-given string — a file path, a tool
//! error, an id — cannot end the line and forge the next one or recolour a terminal, and cut
//! to a readable length. The JSON format escapes by its nature.
//!
//! Values are escaped as they are written, without a copy: a line is written per save, so
//! this sits on the path of every transition.

use std::fmt::{self, Write as _};

use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::debug_fn;

/// Characters of one field's value written at most.
const MAX_VALUE_CHARS: usize = 2048;

/// The field formatter of the text log format.
pub fn escaped_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    debug_fn(|writer, field, value| {
        if field.name() != "message" {
            write!(writer, "{field}=")?;
        }
        let mut escaping = Escaping { out: writer, written: 0, bytes: 0, cut: false };
        write!(escaping, "{value:?}")?;
        if escaping.cut {
            write!(escaping.out, "… ({} bytes)", escaping.bytes)?;
        }
        Ok(())
    })
    .delimited(" ")
}

/// Writes what it is given with control characters escaped, up to [`MAX_VALUE_CHARS`]
/// characters, counting the bytes it was given.
struct Escaping<W> {
    out: W,
    written: usize,
    bytes: usize,
    cut: bool,
}

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.bytes += text.len();
        if self.cut {
            return Ok(());
        }
        // Plain text goes through in runs; only control characters are rewritten.
        let mut run = 0;
        for (at, c) in text.char_indices() {
            if self.written == MAX_VALUE_CHARS {
                self.cut = true;
                return self.out.write_str(&text[run..at]);
            }
            self.written += 1;
            if c.is_control() {
                self.out.write_str(&text[run..at])?;
                for escaped in c.escape_default() {
                    self.out.write_char(escaped)?;
                }
                run = at + c.len_utf8();
            }
        }
        self.out.write_str(&text[run..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escape(text: &str) -> String {
        let mut out = String::new();
        let mut escaping = Escaping { out: &mut out, written: 0, bytes: 0, cut: false };
        escaping.write_str(text).expect("write");
        let (cut, bytes) = (escaping.cut, escaping.bytes);
        if cut {
            out.push_str(&format!("… ({bytes} bytes)"));
        }
        out
    }

    #[test]
    fn control_characters_are_escaped_and_long_values_cut() {
        assert_eq!(escape("a/b c"), "a/b c");
        assert_eq!(escape("x\n2026-01-01 INFO forged\u{1b}[31m"), "x\\n2026-01-01 INFO forged\\u{1b}[31m");
        assert_eq!(escape("tab\there\r"), "tab\\there\\r");
        let long = escape(&"é".repeat(5000));
        assert!(long.ends_with("… (10000 bytes)") && long.chars().count() < MAX_VALUE_CHARS + 20, "{long}");
        assert_eq!(escape(&"x".repeat(MAX_VALUE_CHARS)), "x".repeat(MAX_VALUE_CHARS), "exactly the limit is not cut");
    }
}
