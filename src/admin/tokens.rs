//! API tokens from both sources, config.toml and the store, merged into the
//! one set the HTTP auth layer checks ([`crate::http::auth::Tokens`]).
//!
//! A token created with `logbook admin tokens create` is a random secret
//! shown once; only its SHA-256 is stored. Creating or revoking one, or
//! reloading the config, republishes the merged set at once.

use std::sync::Mutex;

use crate::config::{Scope, TokenConfig};
use crate::http::auth::{Token, Tokens};
use logbook_base::canonical::sha256;
use logbook_base::hex;
use logbook_journal::store::admin::StoredToken;

/// Prefix of generated tokens, so they are recognisable in a leaked-secret scan.
pub(crate) const TOKEN_PREFIX: &str = "lbk_";

/// The two sources, kept apart so a reload replaces only the config's.
#[derive(Debug, Default)]
pub(crate) struct TokenSources(Mutex<(Vec<Token>, Vec<Token>)>);

fn from_config(entries: &[TokenConfig]) -> Vec<Token> {
    entries
        .iter()
        .filter_map(|t| {
            Some(Token {
                name: t.name.clone(),
                hash: hex::decode_array(&t.sha256)?,
                scopes: t.scopes.clone(),
            })
        })
        .collect()
}

fn from_store(stored: &[StoredToken]) -> Vec<Token> {
    stored
        .iter()
        .map(|t| Token {
            name: t.name.clone(),
            hash: t.sha256,
            scopes: t.scopes.clone(),
        })
        .collect()
}

impl TokenSources {
    pub(crate) fn new(config: &[TokenConfig], stored: &[StoredToken]) -> TokenSources {
        TokenSources(Mutex::new((from_config(config), from_store(stored))))
    }

    /// The merged set, for the auth layer.
    pub(crate) fn merged(&self) -> Vec<Token> {
        let sources = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sources.0.iter().chain(&sources.1).cloned().collect()
    }

    pub(crate) fn config_names(&self) -> Vec<String> {
        let sources = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sources.0.iter().map(|t| t.name.clone()).collect()
    }

    pub(crate) fn set_config(&self, config: &[TokenConfig], publish: &Tokens) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0 = from_config(config);
        publish.replace(self.merged());
    }

    pub(crate) fn set_stored(&self, stored: &[StoredToken], publish: &Tokens) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).1 = from_store(stored);
        publish.replace(self.merged());
    }

    /// Drops the stored token `revoked` from the set in memory, with no
    /// read that could fail after the store has let it go: a revocation
    /// must not leave the token working.
    pub(crate) fn revoke_stored(&self, revoked: &StoredToken, publish: &Tokens) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .retain(|t| t.hash != revoked.sha256);
        publish.replace(self.merged());
    }
}

/// A new random token: the secret to show once, and the record to store.
pub(crate) fn generate(
    name: Option<String>,
    scopes: Vec<Scope>,
) -> Result<(String, StoredToken), String> {
    let mut secret = [0u8; 32];
    let mut id = [0u8; 4];
    getrandom::fill(&mut secret).map_err(|e| e.to_string())?;
    getrandom::fill(&mut id).map_err(|e| e.to_string())?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(&secret));
    let id = hex::encode(&id);
    let created_at = logbook_journal::event::Timestamp::now().millis();
    let record = StoredToken {
        name: name.unwrap_or_else(|| format!("token-{id}")),
        id,
        sha256: sha256(token.as_bytes()),
        scopes,
        created_at,
    };
    Ok((token, record))
}

/// Token names: what `auth.tokens` names allow, so names stay easy to type.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_match_their_hash_and_merge() {
        let (secret, record) = generate(None, vec![Scope::Read]).unwrap();
        assert!(secret.starts_with(TOKEN_PREFIX));
        assert_eq!(record.sha256, sha256(secret.as_bytes()));
        let tokens = Tokens::default();
        let sources = TokenSources::default();
        sources.set_stored(std::slice::from_ref(&record), &tokens);
        assert_eq!(tokens.find(&secret).unwrap().name, record.name);
        sources.set_config(&[], &tokens);
        assert!(
            tokens.find(&secret).is_some(),
            "a reload keeps stored tokens"
        );
        sources.set_stored(&[], &tokens);
        assert!(tokens.find(&secret).is_none());
    }
}
