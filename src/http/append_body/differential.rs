//! The compact path against the general one, on the same bytes: for every
//! body it either steps aside or yields exactly the general path's fields
//! and payload (text and hash), and it never takes a body the general path
//! refuses. Hand-written nasty bodies, then generated and mutated ones, under
//! several depth and type-length limits. `PROPTEST_CASES=N` raises the count.

use proptest::prelude::*;

use logbook_base::proptest_support::{self, cases};

use super::*;
use logbook_base::canonical::canonical_json;

/// What the handler got before the compact path: `parse_json`, then the
/// shape and the payload check. `Err` is any refusal, as text.
fn general(bytes: &[u8], limits: &Limits) -> Result<AppendFields, String> {
    parse_json(bytes, limits)
        .map_err(|p| format!("{p:?}"))
        .and_then(|v| AppendJson::Parsed(v).into_fields(limits.max_type_len))
}

/// Holds the contract for one body; true when the compact path took it.
fn check(bytes: &[u8], limits: &Limits) -> bool {
    let shown = || {
        format!(
            "{:?} (depth limit {})",
            String::from_utf8_lossy(bytes),
            limits.max_json_depth
        )
    };
    let Some(fast) = compact_fields(bytes, limits) else {
        return false;
    };
    let slow = general(bytes, limits).unwrap_or_else(|e| {
        panic!(
            "compact path took a body the general path refuses: {}: {e}",
            shown()
        )
    });
    assert_eq!(fast.event_type, slow.event_type, "{}", shown());
    assert_eq!(fast.actor, slow.actor, "{}", shown());
    assert_eq!(fast.expected_seq, slow.expected_seq, "{}", shown());
    match (&fast.payload, &slow.payload) {
        (Ok(f), Ok(s)) => {
            assert_eq!(f.json.get(), s.json.get(), "{}", shown());
            assert_eq!(f.hash, s.hash, "{}", shown());
            // And the stored text is its own canonical form.
            let value: Value = serde_json::from_str(f.json.get()).unwrap();
            assert_eq!(canonical_json(&value), f.json.get(), "{}", shown());
        }
        (Err(f), Err(s)) => assert_eq!(f, s, "{}", shown()),
        (f, s) => panic!(
            "payload check differs for {}: compact {:?}, general {:?}",
            shown(),
            f.as_ref().map(|p| p.json.get()),
            s.as_ref().map(|p| p.json.get())
        ),
    }
    true
}

/// The limits each body is tried under: the default, tight depths around a
/// shallow body, the largest depth the config allows, a short type limit.
fn limit_sets() -> Vec<Limits> {
    let mut sets: Vec<Limits> = [1, 2, 3, 4, 32, 64, 65, 128]
        .into_iter()
        .map(|max_json_depth| Limits {
            max_json_depth,
            ..Limits::default()
        })
        .collect();
    sets.push(Limits {
        max_type_len: 4,
        ..Limits::default()
    });
    sets
}

fn check_all_limits(bytes: &[u8]) -> usize {
    limit_sets().iter().filter(|l| check(bytes, l)).count()
}

/// Payload texts that are canonical, nearly canonical, or not JSON at all.
pub(crate) const PAYLOADS: &[&str] = &[
    "{}",
    "[]",
    "null",
    "true",
    "false",
    "0",
    "-0",
    "-0.0",
    "0.0",
    "1",
    "-1",
    "1.0",
    "1e2",
    "1E2",
    "1e+2",
    "1e-2",
    "1e400",
    "-1e400",
    "1.5",
    "01",
    "-01",
    "00",
    "+1",
    ".5",
    "5.",
    "123456789012345",
    "-123456789012345",
    "1234567890123456",
    "9007199254740991",
    "-9007199254740991",
    "9007199254740992",
    "-9007199254740992",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "9007199254740993.0",
    "1e19",
    "-1e19",
    "1e21",
    "9.007199254740992E15",
    "NaN",
    "Infinity",
    "tru",
    "nul",
    "\"\"",
    "\"a\"",
    "\"\\u0041\"",
    "\"\\/\"",
    "\"a\\\"b\"",
    "\"\\\\\"",
    "\"\\n\"",
    "\"\\u000a\"",
    "\"\\u001f\"",
    "\"\\u007f\"",
    "\"\u{7f}\"",
    "\"\u{2028}\u{2029}\"",
    "\"\\u2028\"",
    "\"\\ud800\"",
    "\"\\udc00\"",
    "\"\\ud83d\\ude00\"",
    "\"😀\"",
    "\"\u{e000}\"",
    "\"\u{ffff}\"",
    "\"\u{feff}\"",
    "\"\\uFEFF\"",
    "\"\\x41\"",
    "\"\\a\"",
    "\"\\U0041\"",
    "\"\t\"",
    "\"\n\"",
    "\"\u{1}\"",
    "\"\u{0}\"",
    "\"é\"",
    "\"e\u{301}\"",
    "{\"a\":1}",
    "{\"a\": 1}",
    "{ \"a\":1}",
    "{\"a\":1 }",
    "{\"a\" :1}",
    "{\"a\":1,\"a\":1}",
    "{\"a\":1,\"a\":2}",
    "{\"a\":1,\"\\u0061\":2}",
    "{\"\\u0061\":1}",
    "{\"b\":1,\"a\":2}",
    "{\"a\":1,\"b\":2}",
    "{\"A\":1,\"a\":2}",
    "{\"a\":1,\"A\":2}",
    "{\"\":1,\"a\":2}",
    "{\"a\":1,\"\":2}",
    "{\"a\":{\"b\":1,\"b\":2}}",
    "[{\"x\":1,\"x\":1}]",
    "{\"a\":[1,2,{\"c\":null,\"b\":true}]}",
    "{\"\u{e000}\":1,\"😀\":2}",
    "{\"😀\":1,\"\u{e000}\":2}",
    "{\"é\":1,\"z\":2}",
    "{\"z\":1,\"é\":2}",
    "{\"\u{ffff}\":1,\"😀\":2}",
    "{\"😀\":1,\"\u{ffff}\":2}",
    "{\"a\":1,}",
    "[1,]",
    "[,1]",
    "{,}",
    "[1 ,2]",
    "[1, 2]",
    "[1,2 ]",
    "[ 1]",
    "{\"a\"}",
    "{\"a\":}",
    "{1:2}",
    "{'a':1}",
    "[1]]",
    "[[1]",
    "{\"a\":1}}",
    "[\"a\",\"a\"]",
    "[-0]",
    "[1.0]",
    "[1e2]",
    "[0,-0]",
    "{\"n\":-9007199254740992}",
    "{\"n\":1234567890123456}",
    "\"\u{7f}\u{80}\u{7ff}\u{800}\u{fffd}\"",
];

/// Body templates around a payload (`P`); some valid, some not.
const BODIES: &[&str] = &[
    r#"{"type":"step.done","payload":P}"#,
    r#"{"payload":P,"type":"step.done"}"#,
    r#"{"type":"step.done","actor":"me","payload":P,"expected_seq":3}"#,
    r#"{"expected_seq":0,"payload":P,"actor":null,"type":"step.done"}"#,
    r#" {"type":"step.done","payload":P} "#,
    "\t{\r\n\"type\" : \"step.done\" ,\n\"payload\" :\tP\n}\n",
    r#"{"type":"step.done","payload": P }"#,
    r#"{"type":"step.done","payload":P,"payload":P}"#,
    r#"{"type":"step.done","payload":P,"pay\u006coad":{}}"#,
    r#"{"type":"step.done","type":"step.done","payload":P}"#,
    r#"{"type":"step.done","\u0074ype":"x.y","payload":P}"#,
    r#"{"type":"step.done","payload":P,"extra":1}"#,
    r#"{"type":"step.done","payload":P,"Type":"a"}"#,
    r#"{"payload":P}"#,
    r#"{"type":null,"payload":P}"#,
    r#"{"type":1,"payload":P}"#,
    r#"{"type":["step.done"],"payload":P}"#,
    r#"{"type":"step.done","actor":1,"payload":P}"#,
    r#"{"type":"step.done","actor":"a","actor":"a","payload":P}"#,
    r#"{"type":"step.done","actor":"\ud800","payload":P}"#,
    r#"{"type":"step.done","actor":"\ud83d\ude00\u0000","payload":P}"#,
    r#"{"type":"step.done","payload":P,"expected_seq":-1}"#,
    r#"{"type":"step.done","payload":P,"expected_seq":-0}"#,
    r#"{"type":"step.done","payload":P,"expected_seq":1.0}"#,
    r#"{"type":"step.done","payload":P,"expected_seq":1e2}"#,
    r#"{"type":"step.done","payload":P,"expected_seq":"1"}"#,
    r#"{"type":"step.done","payload":P,"expected_seq":9007199254740991}"#,
    r#"{"type":"step.done","payload":P,"expected_seq":9007199254740992}"#,
    r#"{"type":"step.done","payload":P,"expected_seq":18446744073709551615}"#,
    r#"{"type":"step.done","payload":P,"expected_seq":18446744073709551616}"#,
    r#"{"type":"step.done","payload":P,"expected_seq":null,"expected_seq":1}"#,
    r#"{"type":"Step.Done","payload":P}"#,
    r#"{"type":"step.d\u006fne","payload":P}"#,
    r#"{"type":"","payload":P}"#,
    r#"{"type":"step.done","payload":P}x"#,
    r#"{"type":"step.done","payload":P}{}"#,
    r#"{"type":"step.done","payload":P},"#,
    r#"{"type":"step.done","payload":P"#,
    "\u{feff}{\"type\":\"step.done\",\"payload\":P}",
    "\x0c{\"type\":\"step.done\",\"payload\":P}",
    "{\"type\":\"step.done\",\"payload\":P}\x0c",
    "{\"type\":\"step.done\",\"payload\":P}\0",
    r#"["step.done",null,P,null]"#,
    r#"[{"type":"step.done","payload":P}]"#,
    r#"{"type":"step.done","payload":[P]}"#,
    r#"{"type":"step.done","payload":{"k":P}}"#,
    r#"{"type":"step.done","payload":{"a":0,"k":P,"z":0}}"#,
    r#"{"type":"step.done","payload":[[[[[[[[P]]]]]]]]}"#,
];

fn nasty_bodies() -> &'static [String] {
    static BODIES_WITH_PAYLOADS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    BODIES_WITH_PAYLOADS.get_or_init(|| {
        let mut bodies = Vec::new();
        for body in BODIES {
            for payload in PAYLOADS {
                bodies.push(body.replace('P', payload));
            }
        }
        bodies
    })
}

/// The bodies of the corpus that the compact path takes by default.
fn taken_bodies() -> &'static [String] {
    static TAKEN: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    TAKEN.get_or_init(|| {
        let limits = Limits::default();
        let taken: Vec<String> = nasty_bodies()
            .iter()
            .filter(|b| compact_fields(b.as_bytes(), &limits).is_some())
            .cloned()
            .collect();
        assert!(taken.len() > 100, "{} bodies taken", taken.len());
        taken
    })
}

#[test]
fn nasty_bodies_hold_the_contract() {
    let mut taken = 0;
    for body in nasty_bodies() {
        taken += check_all_limits(body.as_bytes());
    }
    // The corpus does reach the compact path (so it is what is tested).
    assert!(taken > 1000, "only {taken} bodies took the compact path");
}

#[test]
fn nesting_around_every_limit_holds_the_contract() {
    for depth in 0..=140 {
        for (open, close) in [("[", "]"), ("{\"a\":", "}"), ("[{\"a\":", "}]")] {
            let payload = format!("{}0{}", open.repeat(depth), close.repeat(depth));
            let body = format!(r#"{{"type":"step.done","payload":{payload}}}"#);
            check_all_limits(body.as_bytes());
        }
        let payload = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        check_all_limits(format!(r#"{{"type":"step.done","payload":{payload}}}"#).as_bytes());
    }
}

#[test]
fn non_utf8_bodies_are_never_taken() {
    for bad in [
        &b"\xff"[..],
        b"\xc3",
        b"\xed\xa0\x80",
        b"\xc0\xaf",
        b"\xf4\x90\x80\x80",
    ] {
        for template in [
            &b"{\"type\":\"step.done\",\"payload\":\"X\"}"[..],
            b"{\"type\":\"step.done\",\"payload\":{\"X\":1}}",
            b"{\"type\":\"step.done\",\"actor\":\"X\"}",
            b"{\"type\":\"X\"}",
        ] {
            let at = template.iter().position(|&b| b == b'X').unwrap();
            let body = [&template[..at], bad, &template[at + 1..]].concat();
            for limits in limit_sets() {
                assert!(compact_fields(&body, &limits).is_none(), "{body:?}");
                assert!(general(&body, &limits).is_err(), "{body:?}");
            }
        }
    }
}

/// Characters that JCS writes differently, sorts unusually, or refuses.
fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::sample::select(vec![
            'a',
            'b',
            'A',
            'z',
            '0',
            ' ',
            '"',
            '\\',
            '/',
            '\u{0}',
            '\u{8}',
            '\t',
            '\n',
            '\u{c}',
            '\r',
            '\u{1f}',
            '\u{7f}',
            '\u{80}',
            'é',
            '\u{2028}',
            '\u{2029}',
            '\u{e000}',
            '\u{feff}',
            '\u{ffff}',
            '😀',
            '\u{10ffff}',
        ]),
        any::<char>(),
    ]
}

fn nasty_string() -> impl Strategy<Value = String> {
    prop::collection::vec(nasty_char(), 0..4).prop_map(|c| c.into_iter().collect())
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            0i64,
            1,
            -1,
            9,
            10,
            999_999_999_999_999,
            1 << 53,
            -(1 << 53)
        ])
        .prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(Value::from),
        prop::sample::select(vec![-0.0f64, 0.5, 1e2, 1e21, 1e-7, 123.456, 5e-324])
            .prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        number(),
        nasty_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(nasty_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value's text as a client might send it.
fn spelled(value: &Value, how: u8) -> String {
    match how % 3 {
        0 => canonical_json(value),
        1 => serde_json::to_string(value).unwrap(),
        _ => serde_json::to_string_pretty(value).unwrap(),
    }
}

/// A JSON-ish text built from tokens, valid or not: repeated and escaped
/// names, odd number spellings, escapes and whitespace where JCS has none.
fn token_text() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "\"a\"",
        "\"\\u0061\"",
        "\"b\"",
        "\"A\"",
        "\"\"",
        "\"é\"",
        "\"\\u00e9\"",
        "\"😀\"",
        "\"\u{e000}\"",
        "\"\u{ffff}\"",
        "\"\\ud83d\\ude00\"",
        "\"a\\/\"",
        "\"a/\"",
    ]);
    let scalar = prop::sample::select(PAYLOADS.to_vec());
    let ws = prop::sample::select(vec!["", "", "", "", " ", "\n", "\t", "\r", "\x0c"]);
    let leaf = scalar.prop_map(str::to_string);
    leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            (prop::collection::vec(inner.clone(), 0..4), ws.clone())
                .prop_map(|(items, w)| { format!("[{w}{}]", items.join(",")) }),
            (
                prop::collection::vec((key.clone(), inner), 0..4),
                ws.clone()
            )
                .prop_map(|(members, w)| {
                    let members: Vec<String> =
                        members.iter().map(|(k, v)| format!("{k}{w}:{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
        ]
    })
}

fn body_around(payload: &str, fields: u8) -> String {
    let mut members = vec![r#""type":"step.done""#.to_string()];
    if fields & 1 != 0 {
        members.push(r#""actor":"a""#.into());
    }
    if fields & 2 != 0 {
        members.push(r#""expected_seq":5"#.into());
    }
    if fields & 4 == 0 {
        members.push(format!(r#""payload":{payload}"#));
    }
    if fields & 8 != 0 {
        members.reverse();
    }
    format!("{{{}}}", members.join(","))
}

proptest! {
    #![proptest_config(cases(512))]

    /// Values spelled canonically, compactly (byte-sorted) or pretty.
    #[test]
    fn generated_values_hold_the_contract(value in json_value(), how in any::<u8>(), fields in any::<u8>()) {
        let body = body_around(&spelled(&value, how), fields);
        check_all_limits(body.as_bytes());
        if how % 3 == 0 && fields & 4 == 0 {
            // A canonical payload whose numbers are all small integers is taken.
            let text = canonical_json(&value);
            if SurelyCanonical::scan(&text).is_some() {
                prop_assert!(check(body.as_bytes(), &Limits::default()), "{body}");
            }
        }
    }

    #[test]
    fn token_texts_hold_the_contract(payload in token_text(), fields in any::<u8>()) {
        check_all_limits(body_around(&payload, fields).as_bytes());
    }

    /// Bodies of the corpus that the compact path takes, with a few bytes
    /// changed, inserted or removed: the edits most likely to slip through.
    #[test]
    fn mutated_bodies_hold_the_contract(
        pick in any::<prop::sample::Index>(),
        edits in proptest_support::edits(b"{}[]\",:\\ 0123456789-+.eEtrufalsn\x00\x1f\x7f\xc3\xa9\xff\xe2\x80\xa8"),
    ) {
        let body = proptest_support::apply(pick.get(taken_bodies()).clone().into_bytes(), edits);
        check_all_limits(&body);
    }
}
