//! The append request's body, `{type, actor?, payload?, expected_seq?}`,
//! read into its fields with the payload checked (`journal::validate`).
//!
//! Almost every append sends a compact body whose payload is already its own
//! canonical form (RFC 8785): sorted members, no whitespace, small integers.
//! For such a body the fields are read in one pass with the payload kept as
//! the text that came, which `SurelyCanonical` vouches for; no JSON value
//! is built, canonicalized again and copied (at 64 clients that was about
//! a tenth of the handlers' CPU). Any other body, and any doubt, takes the
//! path of every JSON route (`extract::parse_json`, then `from_object`),
//! so bad input gets exactly the answer it always got: the fast path says
//! yes only where that path would accept the same fields and payload.

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequest, Request};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::extract::{from_object, parse_json, read_limited_json};
use super::problem::Problem;
use crate::config::Limits;
use logbook_base::canonical::MAX_SAFE_INTEGER;
use logbook_base::canonical_check::SurelyCanonical;
use logbook_base::reloadable::Reloadable;
use logbook_journal::chain::CanonicalPayload;
use logbook_journal::validate::{InvalidEvent, validate_canonical_event, validate_event};

/// An append's body, read under the JSON body limits (content type, size,
/// time, depth, duplicate members, unsafe numbers): its fields, or, when
/// it was not the usual compact shape, the parsed value they come from.
pub(crate) enum AppendJson {
    Fields(AppendFields),
    Parsed(Value),
}

/// The fields of an append. The payload's check is kept, not raised, so
/// the handler answers refusals in its own order.
pub(crate) struct AppendFields {
    pub event_type: String,
    pub actor: Option<String>,
    pub expected_seq: Option<u64>,
    /// The type and payload check (`journal::validate`) with its result.
    pub payload: Result<CanonicalPayload, InvalidEvent>,
}

/// The documented shape, as a parsed value is read into it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendBody {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default = "empty_object")]
    payload: Value,
    #[serde(default)]
    expected_seq: Option<u64>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// The same shape read from the text, the payload left as text. An omitted
/// payload is `{}`, as above; an explicit `null` stays `null` (which is why
/// this is not an `Option`: serde reads `null` as `None`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactBody<'a> {
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    #[serde(default, borrow)]
    actor: Option<Cow<'a, str>>,
    #[serde(default = "empty_raw_object", borrow)]
    payload: &'a RawValue,
    #[serde(default)]
    expected_seq: Option<u64>,
}

fn empty_raw_object<'a>() -> &'a RawValue {
    serde_json::from_str("{}").expect("{} is JSON")
}

impl<S: Send + Sync> FromRequest<S> for AppendJson
where
    Arc<Reloadable<Limits>>: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let (bytes, limits) = read_limited_json(req, state).await?;
        if let Some(fields) = compact_fields(&bytes, &limits) {
            return Ok(AppendJson::Fields(fields));
        }
        parse_json(&bytes, &limits).map(AppendJson::Parsed)
    }
}

impl AppendJson {
    /// The fields, or why the body does not have the documented shape (the
    /// reason, for the caller's 422).
    pub(crate) fn into_fields(self, max_type_len: usize) -> Result<AppendFields, String> {
        let value = match self {
            AppendJson::Fields(fields) => return Ok(fields),
            AppendJson::Parsed(value) => value,
        };
        let body: AppendBody = from_object(value)?;
        let payload = validate_event(&body.event_type, &body.payload, max_type_len);
        Ok(AppendFields {
            event_type: body.event_type,
            actor: body.actor,
            expected_seq: body.expected_seq,
            payload,
        })
    }
}

/// The fields of a body that [`parse_json`] and `from_object` would accept
/// as the same fields and payload, or `None` to go that way instead. Each
/// condition below is one of theirs: an object (not an array, which serde
/// would also read into a struct); no unknown or repeated member; every
/// number within ±(2^53−1); no nesting beyond the limit; and a payload
/// that is surely canonical, so no repeated member inside it either.
fn compact_fields(bytes: &[u8], limits: &Limits) -> Option<AppendFields> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let body: CompactBody = serde_json::from_slice(bytes).ok()?;
    if body.expected_seq.is_some_and(|seq| seq > MAX_SAFE_INTEGER) {
        return None;
    }
    let payload = SurelyCanonical::scan(body.payload.get())?;
    // The body is one level deeper than its payload.
    if payload.depth() + 1 > limits.max_json_depth {
        return None;
    }
    Some(AppendFields {
        payload: validate_canonical_event(&body.event_type, payload, limits.max_type_len),
        event_type: body.event_type.into_owned(),
        actor: body.actor.map(Cow::into_owned),
        expected_seq: body.expected_seq,
    })
}

#[cfg(test)]
pub(crate) mod differential;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Both ways to read a body, side by side: the compact path gives the
    /// fields of the general one exactly, or steps aside.
    fn both(text: &str) -> (Option<AppendFields>, Result<AppendFields, String>) {
        let limits = Limits::default();
        let fast = compact_fields(text.as_bytes(), &limits);
        let slow = parse_json(text.as_bytes(), &limits)
            .map_err(|p| format!("{p:?}"))
            .and_then(|v| AppendJson::Parsed(v).into_fields(limits.max_type_len));
        (fast, slow)
    }

    fn same(a: &AppendFields, b: &AppendFields) {
        assert_eq!(a.event_type, b.event_type);
        assert_eq!(a.actor, b.actor);
        assert_eq!(a.expected_seq, b.expected_seq);
        match (&a.payload, &b.payload) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.json.get(), b.json.get());
                assert_eq!(a.hash, b.hash);
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("one accepted the payload and the other did not"),
        }
    }

    #[test]
    fn compact_bodies_read_as_the_general_path_reads_them() {
        for text in [
            r#"{"type":"ledger.transaction","actor":"bench","payload":{"pad":"xxx"}}"#,
            r#"{"type":"step.done"}"#,
            r#"{"type":"step.done","payload":null}"#,
            r#"{"type":"step.done","payload":{},"actor":null,"expected_seq":null}"#,
            r#" {"payload":[1,-2,{"a":true}],"expected_seq":7,"type":"step.done"}"#,
            r#"{"type":"step.d\u006fne","actor":"\u00e9\n","payload":"x"}"#,
            r#"{"type":"Bad.Type","payload":{"a":1}}"#,
            r#"{"type":"step.done","expected_seq":9007199254740991}"#,
        ] {
            let (fast, slow) = both(text);
            let fast = fast.unwrap_or_else(|| panic!("not compact: {text}"));
            same(&fast, &slow.unwrap());
        }
    }

    #[test]
    fn anything_else_goes_the_general_way() {
        for text in [
            // An array reads into a struct, but is not the documented shape.
            r#"["step.done", null, {}, null]"#,
            r#"{"type":"step.done","type":"step.done"}"#,
            r#"{"type":"step.done","extra":1}"#,
            r#"{"type":"step.done","expected_seq":9007199254740992}"#,
            r#"{"type":"step.done","expected_seq":-1}"#,
            r#"{"type":"step.done","payload":{"b":1,"a":2}}"#,
            r#"{"type":"step.done","payload":{"a":1,"a":1}}"#,
            r#"{"type":"step.done","payload":{"a": 1}}"#,
            r#"{"type":"step.done","payload":{"n":9007199254740993}}"#,
            r#"{"type":"step.done","payload":{"n":1.5}}"#,
            r#"{"type":"step.done","payload":{"n":1}"#,
            r#"{"actor":"x"}"#,
        ] {
            let (fast, _) = both(text);
            assert!(fast.is_none(), "{text}");
        }
    }

    /// Any JSON value, a few levels deep, with numbers near the limits.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1_000i64..1_000).prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| {
                serde_json::Number::from_f64(f).map(Value::Number)
            }),
            any::<String>().prop_map(Value::String),
            "[a-z.]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof!["[a-z]{1,3}", any::<String>()],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A body: usually a type name and a payload, each member sometimes
    /// missing or of another kind, sometimes a member too many.
    fn body() -> impl Strategy<Value = Value> {
        let type_name = prop_oneof![
            3 => "[a-z]{1,4}(\\.[a-z]{1,4}){0,2}".prop_map(Value::String),
            1 => json_value(),
        ];
        let actor = prop_oneof![Just(Value::Null), any::<String>().prop_map(Value::String)];
        let seq = prop_oneof![(0u64..100).prop_map(Value::from), json_value()];
        (
            prop::option::weighted(0.9, type_name),
            prop::option::of(actor),
            prop::option::weighted(0.8, json_value()),
            prop::option::of(seq),
            prop::option::weighted(0.1, json_value()),
        )
            .prop_map(|(event_type, actor, payload, seq, extra)| {
                let mut body = serde_json::Map::new();
                let named = [
                    ("type", event_type),
                    ("actor", actor),
                    ("payload", payload),
                    ("expected_seq", seq),
                    ("extra", extra),
                ];
                for (name, value) in named {
                    if let Some(value) = value {
                        body.insert(name.to_string(), value);
                    }
                }
                Value::Object(body)
            })
    }

    proptest::proptest! {
        /// Whatever the body and however it is spelled (compact, canonical,
        /// pretty), the compact path yields exactly what the general path
        /// yields, or steps aside.
        #[test]
        fn the_compact_path_never_disagrees(body in body()) {
            for text in [
                serde_json::to_string(&body).unwrap(),
                logbook_base::canonical::canonical_json(&body),
                serde_json::to_string_pretty(&body).unwrap(),
            ] {
                if let (Some(fast), slow) = both(&text) {
                    let slow = slow.unwrap_or_else(|e| panic!("{text}: {e}"));
                    same(&fast, &slow);
                }
            }
        }
    }

    #[test]
    fn nesting_at_the_limit_is_compact_and_beyond_it_is_not() {
        let limits = Limits::default();
        let payload = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let body = |depth: usize| format!(r#"{{"type":"step.done","payload":{}}}"#, payload(depth));
        let at = body(limits.max_json_depth - 1);
        assert!(compact_fields(at.as_bytes(), &limits).is_some());
        assert!(parse_json(at.as_bytes(), &limits).is_ok());
        let beyond = body(limits.max_json_depth);
        assert!(compact_fields(beyond.as_bytes(), &limits).is_none());
        assert!(parse_json(beyond.as_bytes(), &limits).is_err());
    }
}
