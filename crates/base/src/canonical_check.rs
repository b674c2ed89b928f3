//! Is a text exactly its own RFC 8785 canonical form? Without rebuilding it.
//!
//! Verification asks this of every stored payload. The definition is
//! `canonical_json(parse(text)) == text` (the tests keep it as `reference`
//! and compare), but parsing into a `serde_json::Value` costs a tree and a
//! string: per event that took most of the verify time, and a hostile text
//! (an export line, a payload planted in the store) cost about 13× its size
//! in memory. So the whole question is decided in one pass over the bytes,
//! with memory bounded by the nesting depth (one frame and one borrowed
//! member name per open container) and no copy of the text.
//!
//! Why one pass can decide it: canonical spellings are prefix-free (a
//! string ends at its quote, a number before a byte no number holds), so a
//! text equals its canonical form only if every token is spelled as JCS
//! spells it, in JCS's order. And a text spelled that way parses: every
//! spelling below is valid JSON, and nesting stays within serde_json's
//! limit. Each rule below is therefore "the reference says yes" exactly:
//! - no whitespace, `,` and `:` only where JCS writes them;
//! - strings: raw text except `"`, `\` and controls, and only the escapes
//!   serde_json writes (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, and
//!   `\u00xx` in lowercase for the other controls). Any other escape (`\/`,
//!   `\u0041`, a surrogate, uppercase hex) is either not JSON or spelled
//!   otherwise by JCS: not canonical either way;
//! - numbers: the token parses as serde_json parses it and JCS spells the
//!   value with exactly those bytes;
//! - member names strictly ascending by UTF-16 code units of the decoded
//!   name (how serde_json_canonicalizer sorts), which also rules out a
//!   repeated name (the parser would keep one);
//! - at most [`SERDE_JSON_DEPTH`] nested arrays and objects.

use serde_json::Number;

/// Nesting the scan for [`SurelyCanonical`] follows.
const MAX_FAST_DEPTH: usize = 64;

/// The deepest nesting serde_json parses: its recursion limit (128) is
/// reached when the 128th array or object opens.
const SERDE_JSON_DEPTH: usize = 127;

/// Integer literals of at most this many digits are below 2^53, so JCS
/// spells them as plain digits.
const MAX_FAST_DIGITS: usize = 15;

/// No canonical number is longer (JCS's longest is 25 bytes, like
/// `-0.0000012345678901234567`), so a longer token is not canonical and is
/// never parsed: a hostile 100 MB number costs nothing.
const MAX_NUMBER_LEN: usize = 32;

/// `text == canonical_json(parse(text))`, and `text` parses.
pub fn is_canonical(text: &str) -> bool {
    let mut scan = Decider::new(text.as_bytes());
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
        let mut scan = PlainScan::new(text.as_bytes());
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

/// Every canonical text; false means not canonical.
type Decider<'a> = Scan<'a, true>;

/// What [`SurelyCanonical`] promises its callers: no escape, integers of
/// at most 15 digits, nesting to [`MAX_FAST_DEPTH`]. False means "not
/// sure".
type PlainScan<'a> = Scan<'a, false>;

/// One pass over a text; `FULL` says which rules (a constant, so the plain
/// texts both scans see take the same code, with nothing to test per byte).
struct Scan<'a, const FULL: bool> {
    text: &'a [u8],
    at: usize,
    /// The deepest array or object entered.
    deepest: usize,
}

impl<'a, const FULL: bool> Scan<'a, FULL> {
    const MAX_DEPTH: usize = if FULL {
        SERDE_JSON_DEPTH
    } else {
        MAX_FAST_DEPTH
    };

    fn new(text: &'a [u8]) -> Scan<'a, FULL> {
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
            Some(b'{') if depth < Self::MAX_DEPTH => self.object(depth + 1),
            Some(b'[') if depth < Self::MAX_DEPTH => self.array(depth + 1),
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
        // Borrowed from the text: the only memory an open object holds.
        let mut previous: Option<&'a [u8]> = None;
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

    /// A string spelled as JCS writes it: no control character, and (under
    /// [`Decider`]) only the escapes JCS writes. Its contents, quotes
    /// excluded, as they are in the text. The caller has seen its opening
    /// quote.
    // Inlined, as it was before the escapes: called apart, plain payloads
    // were checked at 0.92-0.95x the old speed (micro-benchmark, old and
    // new in one process), inlined at 1.00-1.05x.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a [u8]> {
        let text: &'a [u8] = self.text;
        let start = self.at + 1;
        let end = start + string_end(text.get(start..)?)?;
        match text[end] {
            b'"' => {
                self.at = end + 1;
                Some(&text[start..end])
            }
            b'\\' if FULL => self.escaped_string(start, end),
            _ => None,
        }
    }

    /// The rest of a string from its first escape, at `end`.
    #[inline(never)]
    fn escaped_string(&mut self, start: usize, mut end: usize) -> Option<&'a [u8]> {
        let text: &'a [u8] = self.text;
        loop {
            match text[end] {
                b'"' => break,
                b'\\' => end += jcs_escape(&text[end..])?.1,
                _ => return None,
            }
            end += string_end(text.get(end..)?)?;
        }
        self.at = end + 1;
        Some(&text[start..end])
    }

    /// `0` or `-?[1-9][0-9]*` below 2^53 is spelled as is by JCS; under
    /// [`Decider`] any other token is parsed and spelled again.
    fn number(&mut self) -> bool {
        let start = self.at;
        let negative = self.eat(b'-');
        let digits_at = self.at;
        let digits = self.text[digits_at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        self.at += digits;
        let first = self.text.get(digits_at).copied();
        // (`-0` is spelled `0` by JCS.)
        let plain = match (first, digits) {
            (Some(b'0'), 1) => !negative,
            (Some(b'1'..=b'9'), 1..=MAX_FAST_DIGITS) => true,
            _ => false,
        };
        if plain && !matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return true;
        }
        FULL && self.any_number(start)
    }

    /// The number token at `start`, whatever its form.
    #[inline(never)]
    fn any_number(&mut self, start: usize) -> bool {
        // All the bytes a number may hold: whatever follows cannot
        // continue a JSON number, so the token is the number or the text
        // is not JSON.
        let len = self.text[start..]
            .iter()
            .take_while(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
            .count();
        self.at = start + len;
        len <= MAX_NUMBER_LEN && spelled_as_jcs(&self.text[start..start + len])
    }
}

/// The token parses as serde_json parses a number in a document (the same
/// code: `deserialize_any`), and JCS spells that number with these bytes.
/// A scalar: no tree, and at most [`MAX_NUMBER_LEN`] bytes to parse.
fn spelled_as_jcs(token: &[u8]) -> bool {
    let Ok(number) = serde_json::from_slice::<Number>(token) else {
        return false;
    };
    // How serde_json_canonicalizer writes every number, integers too: as
    // the double (`as f64`), in ryu-js's spelling (JavaScript's). Written
    // on the stack; `canonical_json` would allocate per number. The tests
    // compare the two on every kind of number.
    number
        .as_f64()
        .filter(|x| x.is_finite())
        .is_some_and(|x| ryu_js::Buffer::new().format_finite(x).as_bytes() == token)
}

/// The escape at the start of `text` if serde_json (hence JCS) writes it
/// that way: the character it stands for and its length.
fn jcs_escape(text: &[u8]) -> Option<(char, usize)> {
    let short = match text.get(1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => return control_escape(text.get(2..6)?).map(|c| (c, 6)),
        _ => return None,
    };
    Some((short, 2))
}

/// `00xx` in lowercase hex, for a control character that has no short
/// escape: how serde_json writes those.
fn control_escape(hex: &[u8]) -> Option<char> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let [b'0', b'0', high @ (b'0' | b'1'), low] = *hex else {
        return None;
    };
    let code = ((high - b'0') << 4) | digit(low)?;
    (!matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d)).then_some(char::from(code))
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

/// JCS orders member names by the UTF-16 code units of the names as
/// parsed (an escape counts as the character it stands for).
fn key_less(a: &[u8], b: &[u8]) -> bool {
    // Bytes compare as units where each byte is a character.
    let plain = |name: &[u8]| name.iter().all(|&c| c < 0x80 && c != b'\\');
    if plain(a) && plain(b) {
        return a < b;
    }
    name_units(a).lt(name_units(b))
}

/// The UTF-16 code units of a name the scan accepted, escapes decoded on
/// the way (nothing is copied).
fn name_units(raw: &[u8]) -> impl Iterator<Item = u16> + '_ {
    let mut rest = raw;
    let mut plain = "".chars();
    std::iter::from_fn(move || {
        if let Some(c) = plain.next() {
            return Some(c);
        }
        if rest.first()? == &b'\\' {
            let (c, len) = jcs_escape(rest)?;
            rest = &rest[len..];
            return Some(c);
        }
        let end = rest.iter().position(|&b| b == b'\\').unwrap_or(rest.len());
        let segment = std::str::from_utf8(&rest[..end]);
        plain = segment.expect("a `&str` split at ASCII bytes").chars();
        rest = &rest[end..];
        plain.next()
    })
    .flat_map(utf16)
}

fn utf16(c: char) -> impl Iterator<Item = u16> {
    let mut units = [0u16; 2];
    let len = c.encode_utf16(&mut units).len();
    units.into_iter().take(len)
}

#[cfg(test)]
mod tests;
