//! `[auth]`: whether API calls over TCP need a token, and the tokens
//! configured in the file (by their SHA-256, never the token itself).

use serde::{Deserialize, Serialize};

pub(crate) use logbook_journal::store::admin::Scope;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Auth {
    pub(crate) required: AuthRequired,
    pub(crate) tokens: Vec<TokenConfig>,
}

/// `[auth] required`: whether API requests over TCP need a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum AuthRequired {
    /// Required once any token has ever existed (a latch kept in the store).
    #[default]
    Auto,
    /// Always required; with no token, TCP gets 401 and only the admin socket works.
    Always,
    /// The operator's explicit opt-out. Still loopback only, with the Host
    /// and Origin checks, and federation management on the admin socket only.
    Never,
}

impl AuthRequired {
    /// The setting as written in config.toml.
    pub(crate) fn as_json(self) -> serde_json::Value {
        match self {
            AuthRequired::Auto => serde_json::json!("auto"),
            AuthRequired::Always => serde_json::json!(true),
            AuthRequired::Never => serde_json::json!(false),
        }
    }
}

impl Serialize for AuthRequired {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AuthRequired::Auto => s.serialize_str("auto"),
            AuthRequired::Always => s.serialize_bool(true),
            AuthRequired::Never => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for AuthRequired {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(AuthRequired::Always),
            Raw::Bool(false) => Ok(AuthRequired::Never),
            Raw::Text(t) if t == "auto" => Ok(AuthRequired::Auto),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "auth.required must be \"auto\", true or false, not {t:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenConfig {
    pub(crate) name: String,
    /// Hex SHA-256 of the bearer token.
    pub(crate) sha256: String,
    pub(crate) scopes: Vec<Scope>,
}
