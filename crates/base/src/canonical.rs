//! Canonical JSON and hashing.
//!
//! Everything logbook signs or hashes is RFC 8785 (JCS) canonical JSON, so
//! any language can recompute it. RFC 8785 writes numbers as IEEE-754
//! doubles; the number rules here refuse what would not survive that
//! exactly, so a value is stored as the value that was sent.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Largest integer magnitude a payload may carry: RFC 8785 canonicalizes
/// numbers as IEEE-754 doubles, so larger integers would hash differently in
/// other languages' verifiers.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// RFC 8785 canonical JSON of a value.
pub fn canonical_json(value: &Value) -> String {
    // Serializing a `Value` cannot fail: keys are strings, and serde_json
    // never holds NaN or infinities.
    serde_json_canonicalizer::to_string(value).expect("a serde_json::Value always canonicalizes")
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// An integer that RFC 8785 cannot represent exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafeInteger(pub String);

impl std::fmt::Display for UnsafeInteger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the integer {} is outside ±(2^53-1); RFC 8785 cannot represent it exactly, send it as a string",
            self.0
        )
    }
}

impl std::error::Error for UnsafeInteger {}

/// Finds an integer literal in JSON text whose magnitude exceeds
/// [`MAX_SAFE_INTEGER`]. RFC 8785 canonicalizes numbers as IEEE-754 doubles,
/// so such an integer would be stored as a different value than the one
/// sent (and serde_json turns literals beyond 64 bits into doubles before any
/// check on a parsed value could see them). The text must be valid JSON.
pub fn unsafe_integer_literal(json: &[u8]) -> Option<String> {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                // Skip the string, honouring escapes.
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < json.len()
                    && matches!(json[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let literal = &json[start..i];
                let is_integer = !literal.iter().any(|c| matches!(c, b'.' | b'e' | b'E'));
                let digits = literal.strip_prefix(b"-").unwrap_or(literal);
                let too_big = digits.len() > 16
                    || std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse::<u64>().ok())
                        .is_none_or(|n| n > MAX_SAFE_INTEGER);
                if (is_integer && too_big) || (!is_integer && whole_beyond_safe(literal)) {
                    return Some(String::from_utf8_lossy(literal).into_owned());
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// A number written with a fraction or exponent whose value is a whole
/// number beyond ±(2^53−1) and below 1e21 (`9007199254740993.0`, `1e19`):
/// RFC 8785 writes it as a plain integer (1e21 and above keep an exponent),
/// which is then out of range, and a receiving peer refuses it. Its value
/// is already rounded, so it is refused like the integer it becomes.
fn whole_beyond_safe(literal: &[u8]) -> bool {
    std::str::from_utf8(literal)
        .ok()
        .and_then(|text| text.parse::<f64>().ok())
        .is_some_and(|v| {
            let v = v.abs();
            v > MAX_SAFE_INTEGER as f64 && v < 1e21 && v.fract() == 0.0
        })
}

/// Rejects integers in a parsed value beyond ±(2^53−1). Literals beyond 64
/// bits have already become doubles by then; [`unsafe_integer_literal`] on
/// the raw text catches those too.
pub fn check_numbers(value: &Value) -> Result<(), UnsafeInteger> {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) => {
                let too_big = match (n.as_u64(), n.as_i64()) {
                    (Some(u), _) => u > MAX_SAFE_INTEGER,
                    (None, Some(i)) => i.unsigned_abs() > MAX_SAFE_INTEGER,
                    (None, None) => false, // a float: canonical form is well defined
                };
                if too_big {
                    return Err(UnsafeInteger(n.to_string()));
                }
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    Ok(())
}

/// Nesting depth of a JSON value: scalars are 0, `[]` and `{}` are 1.
pub fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => {
                deepest = deepest.max(depth);
                continue;
            }
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    deepest
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_form_sorts_keys_and_normalizes_numbers() {
        let v: Value = serde_json::from_str(r#"{"b":1.0,"a":[1e2,"\u00e9"],"c":null}"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":[100,"é"],"b":1,"c":null}"#);
    }

    #[test]
    fn unsafe_integers_are_found_in_text() {
        let find = |text: &str| unsafe_integer_literal(text.as_bytes());
        assert_eq!(
            find(r#"{"a":[9007199254740991,-9007199254740991,1.5e300,1e21]}"#),
            None
        );
        assert_eq!(
            find(r#"{"a":9007199254740992}"#).as_deref(),
            Some("9007199254740992")
        );
        assert_eq!(
            find("-9007199254740992").as_deref(),
            Some("-9007199254740992")
        );
        assert_eq!(
            find(r#"[18446744073709551616]"#).as_deref(),
            Some("18446744073709551616")
        );
        assert_eq!(
            find(r#"{"s":"123456789012345678901234567890","t":"\"99999999999999999"}"#),
            None
        );
        assert_eq!(find(r#"{"123456789012345678901":0}"#), None);
        // Fractions and exponents that come out as unsafe whole numbers.
        assert_eq!(
            find("[9007199254740993.0]").as_deref(),
            Some("9007199254740993.0")
        );
        assert_eq!(find("[-1e19]").as_deref(), Some("-1e19"));
        assert_eq!(
            find("[9.007199254740992E15]").as_deref(),
            Some("9.007199254740992E15")
        );
        assert_eq!(find("[9007199254740991.0,1.5,1e21,-1e300,1e-300]"), None);
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!({})), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": []}]})), 4);
    }
}
