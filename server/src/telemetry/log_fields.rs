//! How the text log format writes an event's fields: every value with its control
//! characters escaped (`\n`, `\u{1b}`), so that a client-given string — a file path, a tool
//! error, an id — cannot end the line and forge the next one or recolour a terminal, and cut
//! to a readable length. The JSON format escapes by its nature.

use std::fmt::Write as _;

use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::debug_fn;

/// Characters of one field's value written at most.
const MAX_VALUE_CHARS: usize = 2048;

/// The field formatter of the text log format.
pub fn escaped_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    debug_fn(|writer, field, value| {
        let text = escape(&format!("{value:?}"));
        if field.name() == "message" { writer.write_str(&text) } else { write!(writer, "{field}={text}") }
    })
    .delimited(" ")
}

/// `text` with control characters escaped, cut to [`MAX_VALUE_CHARS`].
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_VALUE_CHARS + 32));
    for (count, c) in text.chars().enumerate() {
        if count == MAX_VALUE_CHARS {
            let _ = write!(out, "… ({} bytes)", text.len());
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_values_cut() {
        assert_eq!(escape("a/b c"), "a/b c");
        assert_eq!(escape("x\n2026-01-01 INFO forged\u{1b}[31m"), "x\\n2026-01-01 INFO forged\\u{1b}[31m");
        assert_eq!(escape("tab\there\r"), "tab\\there\\r");
        let long = escape(&"é".repeat(5000));
        assert!(long.ends_with("… (10000 bytes)") && long.chars().count() < MAX_VALUE_CHARS + 20, "{long}");
    }
}
