//! Text from outside made safe to print on a terminal.
//!
//! Strings a program prints can come from whoever sent them to it. Printed
//! raw, a control character in them moves the cursor,
//! recolours or retitles the operator's terminal, or starts a fake row of
//! a table; a bidirectional override reorders what the line seems to say.
//! These functions write such characters as escapes instead, so the text
//! is shown as it was written and does nothing.

use std::borrow::Cow;

/// Whether `c` acts on a terminal instead of being shown: a control
/// character (C0, DEL, C1) or one of Unicode's Bidi_Control characters (a
/// mark, embedding, override or isolate).
pub fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with each character that [`acts_on_terminal`] written as a Rust
/// escape, `\u{1b}`.
pub fn inert(text: &str) -> Cow<'_, str> {
    escape(text, acts_on_terminal, |c, out| {
        out.push_str(&format!("\\u{{{:x}}}", u32::from(c)))
    })
}

/// JSON text (as serde_json writes it) with each character that
/// [`acts_on_terminal`] written as a JSON escape, `\u0085`: still the same
/// JSON value. serde_json escapes C0 inside strings itself, so a line
/// break is the pretty form's own and stays; it writes the others only
/// inside strings, where `\uXXXX` means the same character (all of them
/// are in the Basic Multilingual Plane).
pub fn inert_json(json: &str) -> Cow<'_, str> {
    let acts = |c: char| c != '\n' && acts_on_terminal(c);
    escape(json, acts, |c, out| {
        out.push_str(&format!("\\u{:04x}", u32::from(c)))
    })
}

fn escape(
    text: &str,
    acts: impl Fn(char) -> bool,
    write: impl Fn(char, &mut String),
) -> Cow<'_, str> {
    if !text.chars().any(&acts) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if acts(c) {
            write(c, &mut out);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_overrides_are_escaped_and_the_rest_kept() {
        assert_eq!(inert("plain ü 😀"), "plain ü 😀");
        assert!(matches!(inert("plain"), Cow::Borrowed(_)));
        assert_eq!(
            inert("\u{1b}[31mRED\u{7}\na\tb\rc\u{7f}\u{9b}\u{202e}x\u{2066}\u{61c}"),
            "\\u{1b}[31mRED\\u{7}\\u{a}a\\u{9}b\\u{d}c\\u{7f}\\u{9b}\\u{202e}x\\u{2066}\\u{61c}"
        );
    }

    #[test]
    fn escaped_json_is_the_same_value() {
        let value = serde_json::json!({
            "actor": "\u{1b}]0;owned\u{7}\u{7f}\u{85}\u{9b}\u{200f}\u{202d}",
            "n": [1, "ok\n"],
        });
        for json in [
            value.to_string(),
            serde_json::to_string_pretty(&value).unwrap(),
        ] {
            let safe = inert_json(&json);
            // Only the pretty form's own line breaks are left.
            assert!(
                safe.chars()
                    .filter(|&c| acts_on_terminal(c))
                    .all(|c| c == '\n'),
                "{safe}"
            );
            let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
            assert_eq!(back, value);
        }
    }
}
