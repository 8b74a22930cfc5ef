//! Text as it appears inside one-line error messages.
//!
//! Invariant: what [`printable`] returns holds no control characters, so a value or header cell
//! copied from user input can never break an error (or the failure file) over several lines.

/// `text` with control characters (line breaks, tabs, NUL, ...) written as escapes (`\n`, `\r`,
/// `\u{0}`); everything else, non-ASCII letters included, unchanged.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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
    use super::printable;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("a\nb\r\tc\0"), "a\\nb\\r\\tc\\u{0}");
        assert_eq!(printable("Café 北京 \"q\""), "Café 北京 \"q\"");
    }
}
