//! Text from outside made safe to print on a terminal.
//!
//! Strings a program prints can come from whoever sent them to it. Printed
//! raw, a control character in them moves the cursor,
//! recolours or retitles the operator's terminal, or starts a fake row of
//! a table; a bidirectional override reorders what the line seems to say;
//! an invisible character makes two different names look the same.
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

/// Characters that change how the text around them reads without being
/// seen: direction marks, embeddings, overrides and isolates ("Trojan
/// Source"), zero-width spaces, the word joiner and invisible operators,
/// the byte order mark, blank fillers, tag characters (which can carry
/// hidden ASCII), the combining grapheme joiner, Mongolian variation
/// selectors, and line and paragraph separators (the viewer marks these
/// too, among others). The zero-width non-joiner and joiner (U+200C,
/// U+200D) are not among them: Persian and Indic spelling and emoji
/// sequences need them, and they reorder nothing.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// Whether printing `c` raw could mislead whoever reads it: it acts on the
/// terminal, or it is invisible ([`is_invisible`]: `admin\u{200b}` would
/// read as `admin`).
fn misleads(c: char) -> bool {
    acts_on_terminal(c) || is_invisible(c)
}

/// `text` with each character that [`misleads`] written as a Rust escape,
/// `\u{1b}`.
pub fn inert(text: &str) -> Cow<'_, str> {
    escape(text, misleads, |c, out| {
        out.push_str(&format!("\\u{{{:x}}}", u32::from(c)))
    })
}

/// JSON text (as serde_json writes it) with each character that
/// [`misleads`] written as a JSON escape, `\u0085` (a pair of surrogate
/// escapes beyond the Basic Multilingual Plane): still the same JSON
/// value. serde_json escapes C0 inside strings itself, so a line break is
/// the pretty form's own and stays; it writes the others only inside
/// strings, where the escape means the same character.
pub fn inert_json(json: &str) -> Cow<'_, str> {
    let acts = |c: char| c != '\n' && misleads(c);
    escape(json, acts, |c, out| {
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            out.push_str(&format!("\\u{:04x}", unit));
        }
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
    fn invisible_characters_are_escaped_and_joiners_kept() {
        assert_eq!(
            inert("admin\u{200b} \u{feff}x\u{2028}y\u{e0041}\u{ad}"),
            "admin\\u{200b} \\u{feff}x\\u{2028}y\\u{e0041}\\u{ad}"
        );
        // Joiners spell words and emoji, and reorder nothing.
        assert_eq!(
            inert("می\u{200c}خواهم 👩\u{200d}💻"),
            "می\u{200c}خواهم 👩\u{200d}💻"
        );
    }

    #[test]
    fn escaped_json_is_the_same_value() {
        let value = serde_json::json!({
            "actor": "\u{1b}]0;owned\u{7}\u{7f}\u{85}\u{9b}\u{200f}\u{202d}",
            "hidden": "admin\u{200b}\u{feff}\u{2029}\u{e0041}\u{e007f}",
            "n": [1, "ok\n"],
        });
        for json in [
            value.to_string(),
            serde_json::to_string_pretty(&value).unwrap(),
        ] {
            let safe = inert_json(&json);
            // Only the pretty form's own line breaks are left.
            assert!(
                safe.chars().filter(|&c| misleads(c)).all(|c| c == '\n'),
                "{safe}"
            );
            let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
            assert_eq!(back, value);
        }
    }
}
