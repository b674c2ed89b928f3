//! The full decider against the definition on every form a token can
//! take, on generated canonical texts with edits, and on hostile texts.

use proptest::prelude::*;

use super::alloc_meter::peak_heap;
use super::*;
use crate::proptest_support::{Edit, apply};

/// The text in each place a string can stand: a value, a name, a name
/// after another; how many of them are canonical.
fn agree_as_string(inner: &str) -> usize {
    [
        format!(r#"["{inner}"]"#),
        format!(r#"{{"{inner}":0}}"#),
        format!(r#"{{"":0,"{inner}":1}}"#),
    ]
    .iter()
    .filter(|text| agree(text))
    .count()
}

#[test]
fn every_escape_agrees() {
    // Every byte after a backslash: JCS writes seven of them.
    let mut canonical = 0;
    for byte in 0..=127u8 {
        canonical += agree_as_string(&format!("a\\{}b", char::from(byte)));
    }
    // `{"":0,"a\ub":1}` for each of the seven: names stay ascending.
    assert_eq!(canonical, 7 * 3);
    // Every `\u00xx`, lowercase and uppercase: JCS writes the controls
    // without a short escape (27), in lowercase (18 of them have no hex
    // letter, so both spellings are the same text).
    let mut canonical = 0;
    for code in 0..=0xffu32 {
        canonical += agree_as_string(&format!("\\u{code:04x}"));
        canonical += agree_as_string(&format!("\\u{code:04X}"));
    }
    assert_eq!(canonical, (27 + 18) * 3);
    // Surrogates (serde_json refuses lone ones, JCS writes pairs raw),
    // other `\u`, and cut-short escapes: never canonical.
    for escape in [
        r"\ud800",
        r"\udbff",
        r"\udc00",
        r"\udfff",
        r"\ud83d\ude00",
        r"\uD83D\uDE00",
        r"\ude00\ud83d",
        r"\ud800\u0041",
        r"\ud800\n",
        r"\ud800x",
        r"\u0041",
        r"\u00e9",
        r"\u007f",
        r"\u2028",
        r"\uffff",
        r"\u0000\u",
        r"\u",
        r"\u0",
        r"\u00",
        r"\u001",
        r"\u00g1",
        r"\u+001",
        r"\x41",
        r"\/",
        r"\",
        r"\\\",
    ] {
        assert_eq!(agree_as_string(escape), 0, "{escape}");
    }
    // Raw controls are not JSON; raw DEL, U+2028 and the rest are canonical.
    assert_eq!(agree_as_string("\u{1f}"), 0);
    assert_eq!(agree_as_string("\u{7f}\u{2028}\u{ffff}😀"), 3);
}

#[test]
fn numbers_agree() {
    let mut tokens: Vec<String> = [
        "0",
        "-0",
        "0.0",
        "-0.0",
        "0e0",
        "-0e-0",
        "00",
        "01",
        "-01",
        "1.0",
        "1.5",
        "-1.5",
        "1.50",
        "0.1",
        "0.30000000000000004",
        "1e21",
        "1E21",
        "1e+21",
        "1E+21",
        "1e20",
        "100000000000000000000",
        "1000000000000000000000",
        "1e-7",
        "1E-7",
        "1e-07",
        "0.0000001",
        "1e-6",
        "0.000001",
        "1e400",
        "-1e400",
        "1E400",
        "1e-400",
        "1e309",
        "5e-324",
        "4.9e-324",
        "2.5e-324",
        "1.7976931348623157e308",
        "1.7976931348623157e+308",
        "1.7976931348623157E+308",
        "-1.2345678901234567e-308",
        "-0.0000012345678901234567",
        "1e",
        "1e+",
        "1e-",
        "1.",
        "-",
        ".5",
        "-.5",
        "+1",
        "1e0",
        "1e+0",
        "1e-0",
        "1E2",
        "100",
        "123e-2",
        "1.23",
        "1.0e1",
        "10",
        "1-2",
        "1.2.3",
        "1e2e3",
        "--1",
        "-+1",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "123456789012345",
        "1234567890123456",
    ]
    .map(String::from)
    .to_vec();
    // Integers around 2^53, 2^63, 2^64 and 10^21, and their other spellings.
    for around in [1u128 << 53, 1 << 63, 1 << 64, 10u128.pow(21)] {
        for n in around - 3..=around + 3 {
            tokens.extend([
                format!("{n}"),
                format!("-{n}"),
                format!("{n}.0"),
                format!("{n}e0"),
            ]);
        }
    }
    tokens.push(format!("1{}", "0".repeat(400)));
    tokens.push(format!("0.{}1", "0".repeat(400)));
    let mut canonical = 0;
    for token in &tokens {
        for text in [
            token.clone(),
            format!("[{token}]"),
            format!(r#"{{"a":{token}}}"#),
            format!("[{token},1]"),
        ] {
            canonical += usize::from(agree(&text));
        }
    }
    // Some of each kind are canonical: the check is not "no".
    for token in [
        "1.5",
        "1e+21",
        "1e-7",
        "5e-324",
        "1.7976931348623157e+308",
        "9007199254740992",
    ] {
        assert!(is_canonical(token), "{token}");
    }
    assert!(canonical > 100, "{canonical}");
}

/// Names that sort differently by UTF-16 than by code point or by bytes,
/// escaped names, and names equal once unescaped.
#[test]
fn member_orders_agree() {
    let names = [
        "",
        "a",
        "b",
        "B",
        "aa",
        "é",
        "\u{7f}",
        "\u{e000}",
        "\u{ffff}",
        "😀",
        "\u{10000}",
        "\u{10ffff}",
        r"\n",
        r"\t",
        r"\u001f",
        r"\u0000",
        r"\u0001",
        r#"\""#,
        r"\\",
        r"a\nb",
        r"a\u000b",
        "a\u{b}",
        r"\u00e9",
        r"\/",
        "/",
        "\\",
        "\"",
    ];
    let mut canonical = 0;
    for a in names {
        for b in names {
            let members = format!(r#""{a}":1,"{b}":2"#);
            canonical += usize::from(agree(&format!("{{{members}}}")));
            agree(&format!(r#"[{{{members}}},{{"{a}":{{{members}}}}}]"#));
        }
    }
    // Strictly ascending pairs of the 22 names JCS writes as they are
    // here (the others are not JSON or spelled otherwise).
    assert_eq!(canonical, 22 * 21 / 2);
    assert!(is_canonical("{\"😀\":1,\"\u{e000}\":2}"));
    assert!(is_canonical(r#"{"\t":1,"\u001f":2," ":3}"#));
}

#[test]
fn repeated_names_agree_at_every_depth() {
    for depth in 0..=SERDE_JSON_DEPTH + 1 {
        let open = r#"{"a":"#.repeat(depth);
        let close = "}".repeat(depth);
        for (members, distinct) in [
            (r#""a":1,"a":1"#, false),
            (r#""a":1,"b":2,"b":2"#, false),
            (r#""\n":1,"\n":2"#, false),
            (r#""😀":1,"😀":2"#, false),
            (r#""a":1,"b":2"#, true),
        ] {
            let text = format!("{open}{{{members}}}{close}");
            assert_eq!(
                agree(&text),
                distinct && depth < SERDE_JSON_DEPTH,
                "{depth}"
            );
        }
    }
}

#[test]
fn nesting_agrees_at_serde_jsons_limit() {
    for depth in SERDE_JSON_DEPTH - 2..=SERDE_JSON_DEPTH + 2 {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!(
            "{}{{}}{}",
            r#"{"a":"#.repeat(depth - 1),
            "}".repeat(depth - 1)
        );
        let mixed = format!(
            "{}1{}",
            r#"[{"a":"#.repeat(depth / 2),
            "}]".repeat(depth / 2)
        );
        assert_eq!(agree(&arrays), depth <= SERDE_JSON_DEPTH, "{depth}");
        assert_eq!(agree(&objects), depth <= SERDE_JSON_DEPTH, "{depth}");
        agree(&mixed);
    }
    // Past the limit serde_json says no however the text goes on.
    agree(&"[".repeat(100_000));
}

/// Strings whose characters JCS escapes, sorts differently or leaves.
fn string() -> impl Strategy<Value = String> {
    let chars = [
        'a',
        'b',
        'B',
        ' ',
        '\0',
        '\u{1f}',
        '\n',
        '\t',
        '\u{8}',
        '"',
        '\\',
        '/',
        'é',
        '\u{7f}',
        '\u{2028}',
        '\u{e000}',
        '\u{ffff}',
        '😀',
        '\u{10000}',
    ];
    prop::collection::vec(prop::sample::select(chars.to_vec()), 0..4)
        .prop_map(|chars| chars.into_iter().collect())
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-1000i64..1000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |x| Number::from_f64(x).map(Value::Number)),
        (-1000i32..1000, -30i32..30).prop_map(|(m, e)| Value::from(f64::from(m) * 10f64.powi(e))),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(string(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Up to three edits, bytes mostly from those that matter to JSON.
fn edits() -> impl Strategy<Value = Vec<Edit>> {
    crate::proptest_support::edits(
        b"{}[]\",:\\ 0159-+.eEutrfalsn/\x00\x1f\x7f\xc3\xa9\xf0\x9f\x98\x80",
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Canonical texts of generated values are canonical; with a few
    /// bytes changed, both deciders still give the reference's verdict.
    #[test]
    fn generated_values_and_their_edits_agree(value in json_value(), edits in edits()) {
        let text = canonical_json(&value);
        prop_assert!(is_canonical(&text), "{text}");
        let edited = apply(text.into_bytes(), edits);
        if let Ok(text) = std::str::from_utf8(&edited) {
            agree(text);
        }
    }

    #[test]
    fn number_tokens_agree(token in prop::collection::vec(prop::sample::select(b"-+0123456789.eE".to_vec()), 1..30)) {
        let token = String::from_utf8(token).unwrap();
        agree(&token);
        agree(&format!("[{token}]"));
    }

    /// Every double's canonical spelling is within the length bound and
    /// canonical; Rust's spellings of it agree.
    #[test]
    fn every_double_is_spelled_within_the_bound(bits in any::<u64>()) {
        let x = f64::from_bits(bits);
        if let Some(n) = Number::from_f64(x) {
            let spelled = canonical_json(&Value::Number(n));
            prop_assert!(spelled.len() <= 25, "{spelled}");
            prop_assert!(is_canonical(&spelled), "{spelled}");
            agree(&format!("{x:e}"));
            agree(&format!("{x:?}"));
            agree(&format!("{x}"));
        }
    }
}

/// Hostile texts are decided in one pass with no tree: the scan holds one
/// stack frame and one borrowed name per open container (at most
/// [`SERDE_JSON_DEPTH`]), never copies the text, and parses a number only
/// when its token is at most [`MAX_NUMBER_LEN`] bytes (a scalar and one
/// short string). So what it holds does not grow with the text. Through
/// the reference, `[0 ,0 ,…]` cost about 13 bytes per byte of text.
#[test]
fn hostile_texts_are_decided_without_a_tree() {
    let mb = 1 << 20;
    let cases = [
        (format!("[{}0]", "0 ,".repeat(20 * mb / 3)), false),
        (format!("[{}0 ]", "0,".repeat(4 * mb / 2)), false),
        (format!("[{}1.0]", "1.5,".repeat(4 * mb / 4)), false),
        (format!("[{}1e-7]", "0.5,".repeat(4 * mb / 4)), true),
        (
            format!(r#"["{}\/"]"#, r"\n\u0001".repeat(4 * mb / 8)),
            false,
        ),
        ("1".repeat(4 * mb), false),
        (
            format!("{}1{}", r#"{"\n":["#.repeat(60), "]}".repeat(60)),
            true,
        ),
        (
            format!("[{}0,{{\"a\":1,\"a\":1}}]", "0,".repeat(4 * mb / 2)),
            false,
        ),
    ];
    for (text, canonical) in cases {
        let (verdict, peak) = peak_heap(|| is_canonical(&text));
        assert_eq!(verdict, canonical, "{}", &text[..40]);
        assert!(peak < 1024, "{peak} bytes held for {}", &text[..40]);
    }
}
