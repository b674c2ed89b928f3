//! The decider against the definition, on every kind of token, on
//! generated and mutated texts, and on hostile texts (without the tree).

use serde_json::Value;

use super::*;
use crate::canonical::canonical_json;

mod alloc_meter;
mod differential;

/// The definition: the text parses and is its own canonical form.
fn reference(text: &str) -> bool {
    serde_json::from_str::<Value>(text).is_ok_and(|v| canonical_json(&v) == text)
}

/// The scan `SurelyCanonical` makes: yes only where the reference says yes.
fn surely_canonical(text: &[u8]) -> bool {
    let mut scan = PlainScan::new(text);
    scan.value(0) && scan.at == text.len()
}

/// Both scans against the reference; the reference's verdict.
fn agree(text: &str) -> bool {
    let verdict = reference(text);
    assert_eq!(is_canonical(text), verdict, "{text:?}");
    if surely_canonical(text.as_bytes()) {
        assert!(verdict, "surely canonical but not: {text:?}");
    }
    verdict
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
        // What only the full decider says yes to.
        r#"{"\n":"a\"b\\c\u001f\t","é":[1.5,-0.001,1e+21,1e-7]}"#,
    ];
    let bytes: &[u8] = b"{}[]\",:\\ \t\n0129-+.eEtrufalsnxu/#\x00\x1f\x7f\xc3\xa9";
    let mut checked = 0;
    for seed in seeds {
        assert!(reference(seed), "{seed}");
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
    assert!(checked > 8000, "{checked}");
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
