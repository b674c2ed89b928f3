//! Event types: the one registry of which types exist, how a type name is
//! spelled, and the subject patterns (`plan.*`, `step.>`) used to filter them.

use serde::{Deserialize, Serialize};

/// Longest type name the format allows.
pub const MAX_TYPE_LEN: usize = 128;

/// The plan-lifecycle types every registry starts with.
pub const BUILTIN_TYPES: [(&str, &str); 15] = [
    ("plan.created", "A plan was drafted."),
    ("plan.submitted", "A plan was submitted for approval."),
    ("plan.approved", "A plan was approved and may execute."),
    ("plan.rejected", "A plan was rejected by a reviewer."),
    (
        "plan.state_changed",
        "A plan moved from one state to another.",
    ),
    ("step.started", "A step of the plan started."),
    ("step.completed", "A step of the plan completed."),
    ("step.failed", "A step of the plan failed."),
    (
        "instrument.issued",
        "A financial or legal instrument was issued.",
    ),
    ("ledger.transaction", "A ledger transaction was recorded."),
    (
        "bank.message",
        "A message was sent to or received from a bank.",
    ),
    (
        "notary.anchored",
        "A digest of the journal was anchored with a notary.",
    ),
    (
        "exception.raised",
        "An exception was raised and needs handling.",
    ),
    ("exception.resolved", "A raised exception was resolved."),
    (
        "plan.closed",
        "A plan reached its end; no further steps run.",
    ),
];

/// One registered type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventType {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub builtin: bool,
}

/// The registry: built-in types plus the ones the config adds.
#[derive(Debug, Clone, Serialize)]
pub struct Registry {
    /// When true, appending an unregistered type is refused.
    pub strict: bool,
    pub types: Vec<EventType>,
}

impl Registry {
    /// Built-in types plus `extra`. Fails on a malformed or repeated name.
    pub fn new(strict: bool, extra: &[EventType]) -> Result<Registry, RegistryError> {
        let mut types: Vec<EventType> = BUILTIN_TYPES
            .iter()
            .map(|(name, description)| EventType {
                name: (*name).to_string(),
                description: (*description).to_string(),
                builtin: true,
            })
            .collect();
        for t in extra {
            validate_type_name(&t.name, MAX_TYPE_LEN).map_err(|error| {
                RegistryError::InvalidName {
                    name: t.name.clone(),
                    error,
                }
            })?;
            if types.iter().any(|existing| existing.name == t.name) {
                return Err(RegistryError::Repeated(t.name.clone()));
            }
            types.push(EventType {
                builtin: false,
                ..t.clone()
            });
        }
        Ok(Registry { strict, types })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.types.iter().any(|t| t.name == name)
    }

    /// Whether an append of this (well-formed) type is allowed.
    pub fn accepts(&self, name: &str) -> bool {
        !self.strict || self.contains(name)
    }
}

/// Why the configured registry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    /// A configured type name is malformed.
    InvalidName {
        name: String,
        error: InvalidTypeName,
    },
    /// A type name is registered twice (or repeats a built-in one).
    Repeated(String),
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryError::InvalidName { name, error } => write!(f, "event type {name:?}: {error}"),
            RegistryError::Repeated(name) => write!(f, "event type {name:?} is registered twice"),
        }
    }
}

impl std::error::Error for RegistryError {}

/// Why a type name is malformed. Its text is a predicate, to follow the
/// name in a message: `type "Bad" segments must start with ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidTypeName {
    Empty,
    /// Longer than the limit given, in bytes.
    TooLong(usize),
    /// A segment does not start with a lowercase letter.
    SegmentStart,
    /// A segment holds a character other than a-z, 0-9 and `_`.
    SegmentCharacter,
}

impl std::fmt::Display for InvalidTypeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidTypeName::Empty => f.write_str("must not be empty"),
            InvalidTypeName::TooLong(max_len) => write!(f, "is longer than {max_len} characters"),
            InvalidTypeName::SegmentStart => f.write_str(
                "segments must start with a lowercase letter (dot notation like step.completed)",
            ),
            InvalidTypeName::SegmentCharacter => {
                f.write_str("segments may hold only a-z, 0-9 and _")
            }
        }
    }
}

impl std::error::Error for InvalidTypeName {}

/// Checks `^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$` and the length limit.
pub fn validate_type_name(name: &str, max_len: usize) -> Result<(), InvalidTypeName> {
    if name.is_empty() {
        return Err(InvalidTypeName::Empty);
    }
    if name.len() > max_len {
        return Err(InvalidTypeName::TooLong(max_len));
    }
    for segment in name.split('.') {
        let mut chars = segment.chars();
        match chars.next() {
            Some('a'..='z') => {}
            _ => return Err(InvalidTypeName::SegmentStart),
        }
        if !chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_')) {
            return Err(InvalidTypeName::SegmentCharacter);
        }
    }
    Ok(())
}

/// A malformed type pattern (or one in a filter), with its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidPattern {
    /// Empty, or longer than [`MAX_TYPE_LEN`].
    Length(String),
    /// A segment is neither a name, `*`, nor a final `>`.
    Segment(String),
    /// More than [`MAX_PATTERNS`] patterns in one filter.
    TooMany(usize),
}

impl std::fmt::Display for InvalidPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidPattern::Length(text) => {
                write!(f, "pattern {text:?} must be 1 to {MAX_TYPE_LEN} characters")
            }
            InvalidPattern::Segment(text) => write!(
                f,
                "pattern {text:?}: each segment is a name, `*`, or a final `>`"
            ),
            InvalidPattern::TooMany(count) => {
                write!(f, "{count} patterns; a filter holds at most {MAX_PATTERNS}")
            }
        }
    }
}

impl std::error::Error for InvalidPattern {}

/// Its message, for callers that pass error text on (a problem's detail).
impl From<InvalidPattern> for String {
    fn from(e: InvalidPattern) -> String {
        e.to_string()
    }
}

/// A NATS-style subject pattern over type names: segments match exactly, `*`
/// matches one segment, and a final `>` matches one or more segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypePattern {
    segments: Vec<String>,
}

impl TypePattern {
    pub fn parse(text: &str) -> Result<TypePattern, InvalidPattern> {
        if text.is_empty() || text.len() > MAX_TYPE_LEN {
            return Err(InvalidPattern::Length(text.to_string()));
        }
        let segments: Vec<String> = text.split('.').map(str::to_string).collect();
        for (i, segment) in segments.iter().enumerate() {
            let ok = match segment.as_str() {
                "*" => true,
                ">" => i == segments.len() - 1,
                s => validate_type_name(s, MAX_TYPE_LEN).is_ok(),
            };
            if !ok {
                return Err(InvalidPattern::Segment(text.to_string()));
            }
        }
        Ok(TypePattern { segments })
    }

    pub fn matches(&self, name: &str) -> bool {
        let mut parts = name.split('.');
        for (i, segment) in self.segments.iter().enumerate() {
            if segment == ">" {
                // At least one more segment must remain.
                return parts.next().is_some() && i == self.segments.len() - 1;
            }
            match parts.next() {
                Some(part) if segment == "*" || segment == part => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }

    pub fn as_string(&self) -> String {
        self.segments.join(".")
    }

    /// Whether every type name `other` matches is also matched by `self`:
    /// `step.>` covers `step.*`, `step.completed` and `step.a.>`; `>`
    /// covers everything; `step.*` does not cover `step.>` (which also
    /// matches `step.a.b`). This is what a grant to a peer means: it may
    /// subscribe to any pattern its grants cover, and to nothing wider.
    pub fn covers(&self, other: &TypePattern) -> bool {
        covers(&self.segments, &other.segments)
    }
}

/// [`TypePattern::covers`] over the remaining segments of both patterns.
/// Every pattern matches at least one name (segments are non-empty), so a
/// position where `requested` can match something `granted` cannot is
/// enough to refuse.
fn covers(granted: &[String], requested: &[String]) -> bool {
    let Some((g, g_rest)) = granted.split_first() else {
        // `granted` ends here: only names ending here too are matched.
        return requested.is_empty();
    };
    let Some((r, r_rest)) = requested.split_first() else {
        // `requested` matches a name that ends here; `granted` wants more.
        return false;
    };
    match (g.as_str(), r.as_str()) {
        // One or more remaining segments, whatever they are: `requested`
        // is non-empty, so it only matches names with at least one more.
        (">", _) => true,
        // `requested` matches names of several lengths from here; a fixed
        // segment followed by anything but `>` cannot match all of them,
        // and `*.>` misses the one-segment ones.
        (_, ">") => false,
        // `*` takes any one segment, so whatever `requested` has here.
        ("*", _) => covers(g_rest, r_rest),
        // A literal covers only the same literal (`*` would match others).
        (g, r) => g == r && covers(g_rest, r_rest),
    }
}

/// Most patterns in one [`TypeFilter`]. Every event a stream sees is
/// matched against each, for as long as the stream lasts, so a query string
/// must not be able to ask for thousands.
pub const MAX_PATTERNS: usize = 32;

/// A comma-separated list of patterns; an event matches if any pattern does.
/// An empty list matches everything; an empty pattern inside a list (`a,,b`,
/// `,`) is refused, not dropped: `types=,` would otherwise ask for nothing in
/// particular and get every event.
#[derive(Debug, Clone, Default)]
pub struct TypeFilter {
    patterns: Vec<TypePattern>,
}

impl TypeFilter {
    pub fn parse(list: &str) -> Result<TypeFilter, InvalidPattern> {
        if list.trim().is_empty() {
            return Ok(TypeFilter::default());
        }
        let texts = list.split(',').map(str::trim);
        let count = texts.clone().count();
        if count > MAX_PATTERNS {
            return Err(InvalidPattern::TooMany(count));
        }
        let patterns = texts.map(TypePattern::parse).collect::<Result<_, _>>()?;
        Ok(TypeFilter { patterns })
    }

    pub fn matches(&self, name: &str) -> bool {
        self.matches_all() || self.patterns.iter().any(|p| p.matches(name))
    }

    /// Whether every type matches (an empty list).
    pub fn matches_all(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_complete() {
        let r = Registry::new(true, &[]).unwrap();
        assert_eq!(r.types.len(), 15);
        for (name, description) in BUILTIN_TYPES {
            validate_type_name(name, MAX_TYPE_LEN).unwrap();
            assert!(!description.is_empty());
            assert!(r.contains(name));
        }
        let mut names: Vec<_> = BUILTIN_TYPES.iter().map(|t| t.0).collect();
        names.dedup();
        assert_eq!(names.len(), 15, "no duplicates");
    }

    #[test]
    fn config_types_are_added_and_checked() {
        let extra = |name: &str| EventType {
            name: name.into(),
            description: String::new(),
            builtin: false,
        };
        let r = Registry::new(true, &[extra("audit.note")]).unwrap();
        assert!(r.accepts("audit.note"));
        assert!(!r.accepts("audit.other"));
        assert!(Registry::new(false, &[]).unwrap().accepts("anything.goes"));
        assert!(Registry::new(true, &[extra("Bad.Name")]).is_err());
        assert!(Registry::new(true, &[extra("plan.created")]).is_err());
    }

    #[test]
    fn type_names() {
        for ok in ["a", "plan.created", "a1_b.c2", &"a".repeat(128)] {
            assert!(validate_type_name(ok, MAX_TYPE_LEN).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Plan",
            "1a",
            "a..b",
            "a.",
            ".a",
            "a-b",
            "a.B",
            "é",
            &"a".repeat(129),
        ] {
            assert!(validate_type_name(bad, MAX_TYPE_LEN).is_err(), "{bad}");
        }
    }

    #[test]
    fn patterns_work_like_nats_subjects() {
        let m = |p: &str, n: &str| TypePattern::parse(p).unwrap().matches(n);
        assert!(m("plan.created", "plan.created"));
        assert!(!m("plan.created", "plan.created.x"));
        assert!(m("plan.*", "plan.created"));
        assert!(!m("plan.*", "plan"));
        assert!(!m("plan.*", "plan.a.b"));
        assert!(m("step.>", "step.completed"));
        assert!(m("step.>", "step.a.b.c"));
        assert!(!m("step.>", "step"));
        assert!(!m("step.>", "plan.created"));
        assert!(m("*.failed", "step.failed"));
        assert!(m(">", "anything.at.all"));
        for bad in ["", "a.>.b", "A", "a..b", "a.**"] {
            assert!(TypePattern::parse(bad).is_err(), "{bad}");
        }
        let f = TypeFilter::parse("plan.*, step.>").unwrap();
        assert!(f.matches("plan.closed") && f.matches("step.x.y") && !f.matches("bank.message"));
        assert!(TypeFilter::parse("").unwrap().matches("bank.message"));
        for list in [",", "plan.*,,step.>", "plan.*,", " , "] {
            assert!(
                matches!(TypeFilter::parse(list), Err(InvalidPattern::Length(_))),
                "{list:?}"
            );
        }
        let most = vec!["a.b"; MAX_PATTERNS].join(",");
        assert!(TypeFilter::parse(&most).is_ok());
        let err = TypeFilter::parse(&format!("{most},a.c")).unwrap_err();
        assert_eq!(err, InvalidPattern::TooMany(MAX_PATTERNS + 1));
    }

    #[test]
    fn covering_examples() {
        let c = |g: &str, r: &str| {
            TypePattern::parse(g)
                .unwrap()
                .covers(&TypePattern::parse(r).unwrap())
        };
        assert!(c("step.>", "step.*"));
        assert!(c("step.>", "step.completed"));
        assert!(c("step.>", "step.>"));
        assert!(c("step.>", "step.a.>"));
        assert!(c(">", ">"));
        assert!(c(">", "plan.created"));
        assert!(c(">", "*.*.>"));
        assert!(c("*.failed", "step.failed"));
        assert!(c("step.*", "step.completed"));
        assert!(c("step.completed", "step.completed"));
        assert!(!c("step.*", "step.>"));
        assert!(!c("step.>", ">"));
        assert!(!c("step.>", "step"));
        assert!(!c("step.>", "*.completed"));
        assert!(!c("step.completed", "step.*"));
        assert!(!c("*.>", ">"));
        assert!(!c("plan.*", "step.*"));
        assert!(!c("step.completed", "step.completed.x"));
    }

    /// Every pattern over a small alphabet, as text.
    fn all_patterns(max_len: usize, segments: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let mut layer = vec![String::new()];
        for _ in 0..max_len {
            let mut next = Vec::new();
            for prefix in &layer {
                for s in segments {
                    let p = if prefix.is_empty() {
                        (*s).to_string()
                    } else {
                        format!("{prefix}.{s}")
                    };
                    if TypePattern::parse(&p).is_ok() {
                        out.push(p.clone());
                    }
                    if *s != ">" {
                        next.push(p);
                    }
                }
            }
            layer = next;
        }
        out
    }

    /// `covers` agrees with its definition, checked by brute force: every
    /// name (up to one segment longer than any pattern, with a segment no
    /// pattern names) matched by the requested pattern is matched by the
    /// granted one.
    #[test]
    fn covering_agrees_with_matching_by_brute_force() {
        let patterns = all_patterns(3, &["a", "b", "*", ">"]);
        let names = all_patterns(4, &["a", "b", "c"]);
        for g in &patterns {
            let granted = TypePattern::parse(g).unwrap();
            for r in &patterns {
                let requested = TypePattern::parse(r).unwrap();
                let by_definition = names
                    .iter()
                    .filter(|n| requested.matches(n))
                    .all(|n| granted.matches(n));
                assert_eq!(granted.covers(&requested), by_definition, "{g} covers {r}");
            }
        }
    }
}
