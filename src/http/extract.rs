//! Request extractors that fail with problem+json: a JSON body read under the
//! configured size, time and depth limits, a plan id and other path
//! parameters, a query string; and the object check for JSON bodies.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;
use uuid::Uuid;

use super::AppState;
use super::body_budget::over_budget;
use super::problem::Problem;
use crate::config::Limits;
use logbook_base::canonical::{json_depth, unsafe_integer_literal};
use logbook_base::reloadable::Reloadable;
use logbook_journal::event::parse_plan_id;

/// The JSON body extractor reads the limits (the federation routes take the
/// whole [`AppState`]).
impl FromRef<AppState> for Arc<Reloadable<Limits>> {
    fn from_ref(state: &AppState) -> Arc<Reloadable<Limits>> {
        state.limits.clone()
    }
}

/// A request body that is JSON, within `limits.max_body_bytes`, received
/// within `limits.request_timeout_secs`, and at most `limits.max_json_depth`
/// deep.
pub(crate) struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody
where
    Arc<Reloadable<Limits>>: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let (bytes, limits) = read_limited_json(req, state).await?;
        parse_json(&bytes, &limits).map(JsonBody)
    }
}

/// A JSON route's body, read under the limits current when it arrived
/// (size, time), returned with those limits for the checks that follow.
pub(crate) async fn read_limited_json<S>(
    req: Request,
    state: &S,
) -> Result<(axum::body::Bytes, Arc<Limits>), Problem>
where
    Arc<Reloadable<Limits>>: FromRef<S>,
{
    let limits = Arc::<Reloadable<Limits>>::from_ref(state).current();
    let timeout = Duration::from_secs(limits.request_timeout_secs);
    let bytes = read_json_body(req, limits.max_body_bytes, timeout).await?;
    Ok((bytes, limits))
}

/// A JSON body as every JSON route reads it: one pass that builds the value
/// and refuses duplicate members, then the depth and number limits.
pub(crate) fn parse_json(bytes: &[u8], limits: &Limits) -> Result<Value, Problem> {
    let too_deep = || {
        Problem::bad_request(
            "json-too-deep",
            "JSON nested too deeply",
            format!(
                "the request body nests deeper than {} levels",
                limits.max_json_depth
            ),
        )
    };
    // One pass builds the value and refuses duplicate members (see
    // `refuse_duplicate_members` for why); a repeat is a data error,
    // anything else a syntax error.
    let malformed = |e: &serde_json::Error| {
        if e.to_string().contains("recursion limit") {
            too_deep()
        } else {
            Problem::bad_request(
                "invalid-json",
                "Malformed JSON",
                format!("the request body is not valid JSON: {e}"),
            )
        }
    };
    let StrictValue(value) = serde_json::from_slice(bytes).map_err(|e| {
        if !e.is_data() {
            return malformed(&e);
        }
        // The one pass stops at the first repeat, which may come before a
        // syntax error or past the depth limit: those are answered first,
        // in the documented order (an error path only, so a second pass
        // costs nothing on good bodies).
        match serde_json::from_slice::<Value>(bytes) {
            Err(syntax) => malformed(&syntax),
            Ok(lenient) if json_depth(&lenient) > limits.max_json_depth => too_deep(),
            Ok(_) => duplicate_member(&e),
        }
    })?;
    if json_depth(&value) > limits.max_json_depth {
        return Err(too_deep());
    }
    refuse_unsafe_numbers(bytes)?;
    Ok(value)
}

/// Reads a JSON request body: the content type must be JSON, the body at
/// most `cap` bytes (a larger declared length is refused before reading),
/// and it must arrive within `timeout`. Shared by every JSON route and the
/// federation intake, which has its own cap.
pub(crate) async fn read_json_body(
    req: Request,
    cap: usize,
    timeout: Duration,
) -> Result<axum::body::Bytes, Problem> {
    if !is_json(req.headers().get(header::CONTENT_TYPE)) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "the request body must be JSON in UTF-8, sent with Content-Type: application/json (a charset other than utf-8 is refused)",
        ));
    }
    read_body(req, cap, timeout).await
}

/// Reads a request body of any type: at most `cap` bytes (a larger
/// declared length is refused before reading, 413), within `timeout` (408).
pub(crate) async fn read_body(
    req: Request,
    cap: usize,
    timeout: Duration,
) -> Result<axum::body::Bytes, Problem> {
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!("the request body exceeds {cap} bytes"),
        )
        .with("max_body_bytes", cap)
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let body = Limited::new(req.into_body(), cap);
    match tokio::time::timeout(timeout, body.collect()).await {
        Err(_) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            "Request timeout",
            format!(
                "the request body was not received within {}s",
                timeout.as_secs()
            ),
        )),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => match over_budget(&*e) {
            // Nothing of this request was used.
            Some(over) => Err(Problem::unavailable(format!(
                "the daemon is receiving too many request bodies at once: {over}; retry shortly"
            ))),
            None => Err(Problem::bad_request(
                "invalid-body",
                "Unreadable request body",
                format!("the request body could not be read: {e}"),
            )),
        },
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Refuses JSON text in which an object repeats a member name, at any
/// depth. serde_json keeps the last of duplicate members; a reader of the
/// same text may keep the first, and the verifier refuses a stored payload
/// with any. So input may not have them either.
/// Builds nothing: for bodies kept as text (the federation intake).
pub(crate) fn refuse_duplicate_members(text: &[u8]) -> Result<(), Problem> {
    serde_json::from_slice::<NoDuplicates>(text).map_err(|e| duplicate_member(&e))?;
    Ok(())
}

fn duplicate_member(e: &serde_json::Error) -> Problem {
    Problem::bad_request(
        "duplicate-member",
        "Duplicate member",
        format!("the request body has a {e}; each member name may occur once per object"),
    )
}

fn duplicate_error<E: serde::de::Error>(name: &str) -> E {
    E::custom(format_args!("duplicate member {name:?}"))
}

/// Refuses JSON text holding a number that a double cannot hold exactly as
/// the integer it denotes (RFC 8785 numbers are doubles).
pub(crate) fn refuse_unsafe_numbers(text: &[u8]) -> Result<(), Problem> {
    match unsafe_integer_literal(text) {
        None => Ok(()),
        Some(literal) => Err(Problem::unprocessable(
            "unsafe-integer",
            "Integer out of range",
            format!(
                "the integer {literal} is outside ±(2^53-1): JSON numbers are IEEE-754 doubles (RFC 8785), so it would not be stored exactly; send it as a string"
            ),
        )),
    }
}

/// `application/json`, or any `application/<x>+json`, with optional parameters.
pub(crate) fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(Ok(value)) = content_type.map(|v| v.to_str()) else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || essence
            .strip_prefix("application/")
            .and_then(|subtype| subtype.strip_suffix("+json"))
            .is_some_and(|name| !name.is_empty());
    // JSON is UTF-8 (RFC 8259 §8.1), and the body is read as UTF-8: a body
    // said to be in another charset (US-ASCII is a subset) is refused, not
    // misread.
    let utf8 = parts.all(|param| match param.split_once('=') {
        Some((name, charset)) if name.trim().eq_ignore_ascii_case("charset") => {
            let charset = charset.trim().trim_matches('"');
            ["utf-8", "utf8", "us-ascii"]
                .iter()
                .any(|utf8| charset.eq_ignore_ascii_case(utf8))
        }
        _ => true,
    });
    json && utf8
}

/// Deserializes any JSON value, keeping nothing, and fails on the first
/// object with two members of the same name (compared after unescaping, so
/// `"a"` and `"\u0061"` are the same name), at any depth.
struct NoDuplicates;

impl<'de> serde::Deserialize<'de> for NoDuplicates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicates)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicates {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if seen.contains(&name) {
                return Err(duplicate_error(&name));
            }
            map.next_value::<NoDuplicates>()?;
            seen.insert(name);
        }
        Ok(NoDuplicates)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(NoDuplicates)
    }
}

/// The `{plan_id}` path segment, which must be a hyphenated UUID.
pub(crate) struct PlanId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PlanId {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let axum::extract::Path(text) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| {
                    Problem::bad_request("invalid-plan-id", "Invalid plan id", e.body_text())
                })?;
        parse_plan_id(&text).map(PlanId).ok_or_else(|| {
            Problem::bad_request(
                "invalid-plan-id",
                "Invalid plan id",
                format!("{text:?} is not a UUID (expected the hyphenated form, like 0192f3a4-5b6c-7d8e-9f00-112233445566)"),
            )
        })
    }
}

/// Query strings, parsed with errors as problem+json.
pub(crate) struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| {
                Problem::bad_request(
                    "invalid-query",
                    "Invalid query string",
                    plain_query(&e.body_text()),
                )
            })
    }
}

/// A route that takes no query parameter: any query is 400
/// `invalid-query`, as an unknown parameter is on the routes that take some.
pub(crate) struct NoQuery;

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        match parts.uri.query() {
            None => Ok(NoQuery),
            Some(_) => Err(Problem::bad_request(
                "invalid-query",
                "Invalid query string",
                "this route takes no query parameters",
            )),
        }
    }
}

/// A path parameter (`{instance_id}`, `{name_or_id}`, ...), with errors as
/// problem+json: axum's own rejection (for example a segment that is not
/// UTF-8 once percent-decoded, like `%ff`) answers `text/plain`.
pub(crate) struct Path<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| Problem::bad_request("invalid-path", "Invalid path", e.body_text()))
    }
}

/// `T` from a JSON body that must be an object. serde fills a struct from a
/// JSON array too (in field order), so `["step.started"]` would otherwise
/// pass for `{"type": "step.started"}`; every body whose documented shape is
/// an object is read through here. The error says what was wrong, for the
/// caller's 422.
pub(crate) fn from_object<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
    let kind = match &value {
        Value::Object(_) => {
            return serde_json::from_value(value).map_err(|e| plain_choices(&e.to_string()));
        }
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    };
    Err(format!("the body must be a JSON object, not {kind}"))
}

/// axum's "Failed to deserialize query string: NAME: unknown field …" as
/// [`plain_choices`] words; other messages without the axum prefix.
pub(crate) fn plain_query(text: &str) -> String {
    let text = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(text);
    match text.find("unknown ") {
        Some(at) => plain_choices_of(
            &text[at..],
            "is not a known query parameter; the parameters are",
        ),
        None => text.to_string(),
    }
}

/// serde's "unknown variant `x`, expected one of `a`, `b`" (and the same
/// for fields) in words for people: the value given and the valid choices,
/// without the parser's vocabulary. Any other message is kept.
fn plain_choices(message: &str) -> String {
    plain_choices_of(message, "is not a known member; the members are")
}

/// [`plain_choices`] with `fields` saying what an unknown field is.
fn plain_choices_of(message: &str, fields: &str) -> String {
    let (what, rest) = if let Some(rest) = message.strip_prefix("unknown variant `") {
        ("is not a valid value; the valid values are", rest)
    } else if let Some(rest) = message.strip_prefix("unknown field `") {
        (fields, rest)
    } else {
        return message.to_string();
    };
    let Some((given, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    // The choices are the backquoted words after "expected".
    let choices: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    if choices.is_empty() {
        return format!("{given:?} {what}: none");
    }
    format!("{given:?} {what}: {}", choices.join(", "))
}

/// A JSON value built in one pass that fails, like [`NoDuplicates`], on an
/// object with two members of the same name, so that a body is parsed once.
#[derive(Debug)]
struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if object.contains_key(&name) {
                return Err(duplicate_error(&name));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(name, value);
        }
        Ok(StrictValue(Value::Object(object)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(value)) = seq.next_element()? {
            items.push(value);
        }
        Ok(StrictValue(Value::Array(items)))
    }

    fn visit_bool<E>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<StrictValue, E> {
        // The parser yields only finite numbers; Value::from maps others to null.
        Ok(StrictValue(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let ok = |v: &'static str| is_json(Some(&header::HeaderValue::from_static(v)));
        assert!(ok("application/json"));
        assert!(ok("application/json; charset=utf-8"));
        assert!(ok("Application/JSON"));
        assert!(ok("application/merge-patch+json"));
        assert!(ok("application/json; Charset=\"UTF-8\""));
        assert!(ok("application/json; charset=us-ascii"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/jsonp"));
        assert!(!ok("application/+json"));
        assert!(!ok("application/json; charset=utf-16"));
        assert!(!ok("application/json; charset=latin1"));
        assert!(!is_json(None));
    }

    #[test]
    fn bad_choices_are_listed_in_words() {
        assert_eq!(
            plain_choices("unknown variant `bogus`, expected one of `read`, `append`, `admin`"),
            "\"bogus\" is not a valid value; the valid values are: read, append, admin"
        );
        assert_eq!(
            plain_choices("unknown variant `x`, expected `on` or `off`"),
            "\"x\" is not a valid value; the valid values are: on, off"
        );
        assert_eq!(
            plain_choices("unknown field `nme`, expected `name` or `scopes`"),
            "\"nme\" is not a known member; the members are: name, scopes"
        );
        assert_eq!(plain_choices("missing field `x`"), "missing field `x`");
        assert_eq!(
            plain_query(
                "Failed to deserialize query string: type: unknown field `type`, expected one of `after`, `types`"
            ),
            "\"type\" is not a known query parameter; the parameters are: after, types"
        );
        assert_eq!(
            plain_query("Failed to deserialize query string: limit: invalid digit"),
            "limit: invalid digit"
        );
    }

    #[test]
    fn duplicate_members_are_found_at_any_depth() {
        let dup = |text: &str| {
            serde_json::from_str::<NoDuplicates>(text)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(dup(r#"{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}"#), None);
        assert_eq!(dup(r#"[1,"x",true,null,1.5,-3]"#), None);
        for text in [
            r#"{"type":"bogus","type":"plan.created"}"#,
            r#"{"payload":{"a":1,"a":2}}"#,
            r#"{"p":[{"x":0},{"a":1,"\u0061":2}]}"#,
        ] {
            let e = dup(text).unwrap_or_default();
            assert!(e.starts_with("duplicate member"), "{text}: {e}");
            // The one-pass builder refuses it the same way, as a data error.
            let strict = serde_json::from_str::<StrictValue>(text).err().unwrap();
            assert!(strict.is_data(), "{text}: {strict}");
            assert!(
                strict.to_string().starts_with("duplicate member"),
                "{strict}"
            );
        }
    }

    /// A body with a repeated member and another fault gets the answer the
    /// documented order puts first: syntax, then depth, then the repeat.
    #[test]
    fn a_repeat_is_answered_after_syntax_and_depth() {
        let limits = Limits::default();
        let kind = |text: &str| parse_json(text.as_bytes(), &limits).err().map(|p| p.kind);
        assert_eq!(kind(r#"{"type":"a","type":"b""#), Some("invalid-json"));
        assert_eq!(
            kind(r#"{"type":"a","type":"b","payload":[1,,]}"#),
            Some("invalid-json")
        );
        let deep = format!(
            r#"{{"payload":{}{},"type":"a","type":"b"}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        assert_eq!(kind(&deep), Some("json-too-deep"));
        assert_eq!(kind(r#"{"type":"a","type":"b"}"#), Some("duplicate-member"));
        assert_eq!(kind(r#"{"type":"a"}"#), None);
    }

    /// Without duplicates, the one-pass builder yields exactly serde_json's value.
    #[test]
    fn strict_values_equal_plain_values() {
        for text in [
            r#"{"a":1,"b":{"c":[1,-2,3.5,1e300,18446744073709551615,-9223372036854775808]},"d":"\u00e9\n","e":null,"f":true}"#,
            r#"[]"#,
            r#""x""#,
            r#"0.1"#,
        ] {
            let StrictValue(strict) = serde_json::from_str(text).unwrap();
            assert_eq!(
                strict,
                serde_json::from_str::<Value>(text).unwrap(),
                "{text}"
            );
        }
        // Syntax errors stay syntax errors.
        assert!(
            serde_json::from_str::<StrictValue>("{\"a\":")
                .unwrap_err()
                .is_eof()
        );
        assert!(
            serde_json::from_str::<StrictValue>("{a}")
                .unwrap_err()
                .is_syntax()
        );
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Shape {
        a: String,
        #[serde(default)]
        b: Option<u64>,
    }

    #[test]
    fn only_objects_fill_a_struct() {
        // Without the check, serde reads the array in field order.
        assert!(serde_json::from_value::<Shape>(serde_json::json!(["x", 1])).is_ok());
        assert!(from_object::<Shape>(serde_json::json!({"a": "x", "b": 1})).is_ok());
        for bad in [
            serde_json::json!(["x", 1]),
            serde_json::json!([]),
            serde_json::json!("x"),
            serde_json::json!(1),
            serde_json::json!(true),
            serde_json::json!(null),
        ] {
            let e = from_object::<Shape>(bad.clone()).unwrap_err();
            assert!(e.contains("must be a JSON object"), "{bad}: {e}");
        }
        assert!(from_object::<Shape>(serde_json::json!({"a": 1})).is_err());
    }
}
