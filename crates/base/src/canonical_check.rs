//! Is a text exactly its own RFC 8785 canonical form? Without rebuilding it.
//!
//! Verification asks this of every stored payload. Parsing the text into a
//! `serde_json::Value` and canonicalizing it again allocated a tree and a
//! string per event and took most of the verify time. Almost every payload
//! is objects, arrays, plain strings and small integers, whose canonical
//! spelling can be confirmed in one pass over the bytes. Anything else (an
//! escape, a fraction, deep nesting, any doubt) is decided by the reference,
//! `canonical_json(parse(text)) == text`, so the fast path can only say yes
//! where the reference says yes.

use serde_json::Value;

use crate::canonical::canonical_json;

/// Nesting the one-pass scan follows; deeper texts go to the reference,
/// which also applies serde_json's own depth limit.
const MAX_FAST_DEPTH: usize = 64;

/// Integer literals of at most this many digits are below 2^53, so JCS
/// spells them as plain digits.
const MAX_FAST_DIGITS: usize = 15;

/// `text == canonical_json(parse(text))`, and `text` parses.
pub fn is_canonical(text: &str) -> bool {
    surely_canonical(text.as_bytes()) || reference(text)
}

/// The definition, used when the scan is not sure.
fn reference(text: &str) -> bool {
    serde_json::from_str::<Value>(text).is_ok_and(|v| canonical_json(&v) == text)
}

/// True only if the text is certainly canonical; false means "ask the
/// reference", not "not canonical".
fn surely_canonical(text: &[u8]) -> bool {
    let mut scan = Scan::new(text);
    scan.value(0) && scan.at == text.len()
}

/// A text that the one-pass scan found to be exactly its own RFC 8785
/// form: a handler that receives one can store it as it came, without
/// building a value and serializing it again. Every integer in it has at
/// most 15 digits and there is no fraction or exponent, so every number is
/// within ±(2^53−1) ([`crate::canonical::check_numbers`] passes).
#[derive(Debug, Clone, Copy)]
pub struct SurelyCanonical<'a> {
    text: &'a str,
    depth: usize,
}

impl<'a> SurelyCanonical<'a> {
    /// `None` means "not sure": parse the text and canonicalize the value.
    pub fn scan(text: &'a str) -> Option<SurelyCanonical<'a>> {
        let mut scan = Scan::new(text.as_bytes());
        (scan.value(0) && scan.at == text.len()).then_some(SurelyCanonical {
            text,
            depth: scan.deepest,
        })
    }

    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Nesting depth, as `canonical::json_depth` counts it: scalars 0,
    /// `[]` and `{}` 1.
    pub fn depth(&self) -> usize {
        self.depth
    }
}

struct Scan<'a> {
    text: &'a [u8],
    at: usize,
    /// The deepest array or object entered.
    deepest: usize,
}

impl<'a> Scan<'a> {
    fn new(text: &'a [u8]) -> Scan<'a> {
        Scan {
            text,
            at: 0,
            deepest: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let ok = self.peek() == Some(byte);
        self.at += usize::from(ok);
        ok
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'{') if depth < MAX_FAST_DEPTH => self.object(depth + 1),
            Some(b'[') if depth < MAX_FAST_DEPTH => self.array(depth + 1),
            Some(b'"') => self.string().is_some(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => false,
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let ok = self.text[self.at..].starts_with(word);
        self.at += if ok { word.len() } else { 0 };
        ok
    }

    fn object(&mut self, depth: usize) -> bool {
        self.deepest = self.deepest.max(depth);
        self.at += 1;
        if self.eat(b'}') {
            return true;
        }
        let mut previous: Option<&[u8]> = None;
        loop {
            // `value` looks at a value's first byte; a name's is looked at
            // here (`{#a":1}` once passed as `{"a":1}`).
            if self.peek() != Some(b'"') {
                return false;
            }
            let Some(key) = self.string() else {
                return false;
            };
            // Members strictly ascending: sorted as JCS sorts, and no
            // name repeated (a parser keeps one of the two).
            if previous.is_some_and(|p| !key_less(p, key)) {
                return false;
            }
            previous = Some(key);
            if !self.eat(b':') || !self.value(depth) {
                return false;
            }
            if self.eat(b'}') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.deepest = self.deepest.max(depth);
        self.at += 1;
        if self.eat(b']') {
            return true;
        }
        loop {
            if !self.value(depth) {
                return false;
            }
            if self.eat(b']') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    /// A string with no escape and no control character, which JCS writes
    /// as is (the input is UTF-8 already); its contents, quotes excluded.
    /// The caller has seen its opening quote.
    fn string(&mut self) -> Option<&'a [u8]> {
        let text: &'a [u8] = self.text;
        let start = self.at + 1;
        let rest = text.get(start..)?;
        let len = string_end(rest)?;
        if rest[len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        Some(&rest[..len])
    }

    /// `0` or `-?[1-9][0-9]*` below 2^53: JCS writes these digits as is.
    /// (`-0` is spelled `0` by JCS, so it is left to the reference.)
    fn number(&mut self) -> bool {
        let negative = self.eat(b'-');
        let start = self.at;
        let digits = self.text[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        self.at += digits;
        let first = self.text.get(start).copied();
        let plain = match (first, digits) {
            (Some(b'0'), 1) => !negative,
            (Some(b'1'..=b'9'), 1..=MAX_FAST_DIGITS) => true,
            _ => false,
        };
        plain && !matches!(self.peek(), Some(b'.' | b'e' | b'E'))
    }
}

/// Where the first `"`, `\\` or control character is: what ends a string
/// JCS writes as is. Payloads are mostly long plain strings, so eight bytes
/// are tested at once, and only the word that holds a match is searched
/// byte by byte (each test says exactly whether the word holds such a
/// byte, so no match is skipped).
fn string_end(rest: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A high bit for some byte below `n` (n <= 128), none otherwise.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS;
    let mut at = 0;
    while let Some(word) = rest.get(at..at + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        if below(quote, 1) | below(backslash, 1) | below(w, 0x20) != 0 {
            break;
        }
        at += 8;
    }
    rest[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|p| at + p)
}

/// JCS orders member names by their UTF-16 code units.
fn key_less(a: &[u8], b: &[u8]) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a < b;
    }
    // Both came from a `&str` split at ASCII quotes, so both are UTF-8.
    match (std::str::from_utf8(a), std::str::from_utf8(b)) {
        (Ok(a), Ok(b)) => a.encode_utf16().lt(b.encode_utf16()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agree(text: &str) {
        assert_eq!(is_canonical(text), reference(text), "{text:?}");
    }

    /// Every byte value in every lane of a word, after plain text of
    /// every length: the first `"`, `\\` or control byte is found.
    #[test]
    fn string_end_finds_the_first_stop_byte() {
        let slow = |t: &[u8]| t.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        for lead in 0..20 {
            for byte in 0..=255u8 {
                let mut text = vec![b'x'; lead];
                text.push(byte);
                text.extend_from_slice(b"yyyyyyyyyyy\"");
                assert_eq!(string_end(&text), slow(&text), "{lead} {byte:#x}");
                // Bytes >= 0x80 (UTF-8) next to the stop byte.
                text.insert(0, 0xc3);
                text.insert(1, 0xa9);
                assert_eq!(string_end(&text), slow(&text), "é {lead} {byte:#x}");
            }
            let unterminated = vec![b'x'; lead];
            assert_eq!(string_end(&unterminated), None);
        }
    }

    #[test]
    fn agrees_with_the_reference() {
        let cases = [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":1}"#,
            r#"{"a": 1}"#,
            r#" {"a":1}"#,
            r#"{"a":1} "#,
            r#"{"a":1}x"#,
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"[]"#,
            r#"{}"#,
            r#""""#,
            r#""a\"b""#,
            r#""a\/b""#,
            r#""\u0041""#,
            r#""\u001f""#,
            r#""\n""#,
            "\"\u{7f}\u{2028}é😀\"",
            r#"-0"#,
            r#"0"#,
            r#"00"#,
            r#"01"#,
            r#"-1"#,
            r#"1.0"#,
            r#"1.5"#,
            r#"1e3"#,
            r#"1E400"#,
            r#"123456789012345"#,
            r#"9007199254740991"#,
            r#"9007199254740993"#,
            r#"99999999999999999999999"#,
            r#"{"\ud800":1}"#,
            "{\"\u{e000}\":1,\"😀\":2}",
            "{\"😀\":1,\"\u{e000}\":2}",
            r#"{"a":tru}"#,
            // A member name's opening quote missing or replaced: not JSON.
            r#"{#a":1}"#,
            r#"{a":1}"#,
            r#"{"a":1,#b":2}"#,
            r#"{"a":1,b":2}"#,
            r#"[{"a":{x":1}}]"#,
            "{\u{e9}a\":1}",
            r#"nul"#,
            r#""#,
            r#"{"#,
            r#""abc"#,
            "\"a\u{1}b\"",
        ];
        for case in cases {
            agree(case);
        }
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for n in [1, 63, 64, 65, 127, 128, 129, 200] {
            agree(&deep(n));
        }
    }

    /// Every one-byte edit (replaced, inserted, removed) of canonical texts,
    /// with bytes that matter to JSON: the scan never says yes where the
    /// reference says no. Replacing a member name's opening quote was such
    /// an edit.
    #[test]
    fn one_byte_edits_agree_with_the_reference() {
        let seeds = [
            r#"{"a":[1,-20,"x"],"b":{"c":null,"d":true},"e":false}"#,
            r#"[{},[],"",0,{"k":"v"}]"#,
            "{\"é\":\"😀\",\"\u{e000}\":1}",
        ];
        let bytes: &[u8] = b"{}[]\",:\\ \t\n0129-+.eEtrufalsnx#\x00\x1f\x7f\xc3\xa9";
        let mut checked = 0;
        for seed in seeds {
            assert!(surely_canonical(seed.as_bytes()), "{seed}");
            let seed = seed.as_bytes();
            for at in 0..=seed.len() {
                let mut edits = vec![];
                for &b in bytes {
                    let mut inserted = seed.to_vec();
                    inserted.insert(at, b);
                    edits.push(inserted);
                    if at < seed.len() {
                        let mut replaced = seed.to_vec();
                        replaced[at] = b;
                        edits.push(replaced);
                    }
                }
                if at < seed.len() {
                    let mut removed = seed.to_vec();
                    removed.remove(at);
                    edits.push(removed);
                }
                // The check takes text: other bytes never reach it.
                for text in edits.iter().filter_map(|e| std::str::from_utf8(e).ok()) {
                    agree(text);
                    checked += 1;
                }
            }
        }
        assert!(checked > 5000, "{checked}");
    }

    #[test]
    fn canonical_texts_of_generated_values_take_the_fast_path() {
        let value = serde_json::json!({
            "z": [1, -2, 0, 123456789012345_u64, "x", {"b": null, "a": true}],
            "a": {"k": "v", "K": "w", "é": "é"},
            "m": "plain text, with spaces: and punctuation!",
        });
        let text = canonical_json(&value);
        assert!(surely_canonical(text.as_bytes()), "{text}");
        assert!(is_canonical(&text));
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        assert!(!is_canonical(&pretty));
    }

    /// A text the scan vouches for is canonical by the definition, and its
    /// depth is the one `json_depth` gives the parsed value.
    #[test]
    fn surely_canonical_texts_are_canonical_with_their_depth() {
        use crate::canonical::json_depth;
        for text in [
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
            r#"{"pad":"xxxx"}"#,
            r#"[[[]],{}]"#,
            r#"{}"#,
            r#""s""#,
            r#"-12"#,
            r#"null"#,
        ] {
            let sure = SurelyCanonical::scan(text).unwrap_or_else(|| panic!("{text}"));
            assert!(reference(text), "{text}");
            assert_eq!(sure.text(), text);
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(sure.depth(), json_depth(&value), "{text}");
        }
        // Not sure: canonical spelled otherwise, or not canonical at all.
        for text in [
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":1}"#,
            r#"{"a": 1}"#,
            r#"1.5"#,
            r#"9007199254740993"#,
            r#""\u0041""#,
            "[1]x",
            r#"{#a":1}"#,
            r#"{"a":1,#b":2}"#,
        ] {
            assert!(SurelyCanonical::scan(text).is_none(), "{text}");
        }
    }
}
