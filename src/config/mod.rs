//! Configuration: the TOML file, its embedded default, command-line
//! overrides, and the checks that refuse an unsafe or inconsistent setup.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use logbook_journal::registry::MAX_TYPE_LEN;
// `[federation]` and `[[peers]]` are the federation crate's, in `Config` as they were.
pub(crate) use logbook_federation::config::{FederationConfig, PeerConfig};
mod auth;
pub(crate) mod check;
mod layers;
pub(crate) mod listen;
pub(crate) mod log_filter;
mod sections;
mod ui;
mod witness;
pub(crate) use auth::{Auth, AuthRequired, Scope, TokenConfig};
pub(crate) use sections::{
    Http, Limits, Log, LogFormat, RegistryConfig, Server, Sse, StorageConfig,
};
pub(crate) use ui::UiConfig;
pub(crate) use witness::WitnessConfig;

/// The shipped `config.toml`, which is also the default when no file exists.
pub(crate) const EMBEDDED_DEFAULT: &str = include_str!("../../config.toml");

/// The largest `limits.max_body_bytes` accepted. One request holds its body,
/// the parsed value and the stored record at once (and a federated copy
/// more), so without a bound a typo in the config could let a single
/// request take gigabytes.
pub(crate) const MAX_BODY_BYTES: usize = 64 << 20;

/// The whole file. Every key has a default, the shipped `config.toml`'s
/// value (a test holds them equal), so a file names only what it changes.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    pub(crate) server: Server,
    pub(crate) log: Log,
    pub(crate) limits: Limits,
    pub(crate) sse: Sse,
    pub(crate) http: Http,
    pub(crate) registry: RegistryConfig,
    pub(crate) storage: StorageConfig,
    pub(crate) retention: RetentionConfig,
    pub(crate) checkpoints: CheckpointsConfig,
    pub(crate) witness: WitnessConfig,
    pub(crate) auth: Auth,
    pub(crate) federation: FederationConfig,
    pub(crate) peers: Vec<PeerConfig>,
    /// Outside C2SP witnesses of the heads log, besides the peers.
    pub(crate) witnesses: Vec<OutsideWitnessConfig>,
    /// `[ui]`: the audit viewer's routes.
    pub(crate) ui: UiConfig,
}

/// Longest `limits.max_actor_len` accepted, in characters.
const MAX_ACTOR_LEN: usize = 1024;

/// Most outside witnesses, and the largest quorum.
pub(crate) const MAX_WITNESSES: usize = 32;

/// `[[witnesses]]`: an outside C2SP witness (c2sp.org/tlog-witness).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OutsideWitnessConfig {
    /// Submission prefix: the sender POSTs to `{url}/add-checkpoint`.
    pub(crate) url: String,
    /// The witness's cosignature/v1 verifier key; its name names the witness.
    pub(crate) vkey: String,
}

impl OutsideWitnessConfig {
    /// The witness's name: its cosignature vkey's key name.
    pub(crate) fn name(&self) -> Result<String, String> {
        logbook_tlog::cosignature::CosignatureVerifier::parse(&self.vkey)
            .map(|key| key.name)
            .map_err(|e| format!("not a cosignature/v1 verifier key: {e}"))
    }
}

/// `[retention]`: what the journal keeps, and for how long.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RetentionConfig {
    /// Payloads of events older than this many days (fractions allowed)
    /// are redacted by the retention task; 0 keeps them forever.
    pub(crate) payload_max_age_days: f64,
}

/// A hundred years: more is a typo, not a policy.
const MAX_PAYLOAD_AGE_DAYS: f64 = 36_500.0;
/// Longest wait between SSE keep-alive comments: proxies close idle
/// connections after a minute or so, and a longer interval only hides a
/// dead stream.
const MAX_KEEPALIVE_SECS: u64 = 3600;
/// Most seconds `server.send_timeout_secs` may be: past an hour, a client
/// that reads nothing holds its connection for as good as ever.
const MAX_SEND_TIMEOUT_SECS: u64 = 3600;

impl RetentionConfig {
    /// The age as milliseconds, `None` when off.
    pub(crate) fn payload_max_age_ms(&self) -> Option<i64> {
        (self.payload_max_age_days > 0.0)
            .then(|| (self.payload_max_age_days * 86_400_000.0).ceil() as i64)
    }

    fn check(&self) -> Result<(), String> {
        let days = self.payload_max_age_days;
        if !days.is_finite() || !(0.0..=MAX_PAYLOAD_AGE_DAYS).contains(&days) {
            return Err(format!(
                "retention.payload_max_age_days = {days} must be from 0 (off) to {MAX_PAYLOAD_AGE_DAYS}"
            ));
        }
        Ok(())
    }
}

/// `[checkpoints]`: how plan logs name themselves in signed checkpoints.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CheckpointsConfig {
    /// The log key's name; a plan's origin is `{origin_prefix}/{plan_id}`.
    /// `{instanceId}` stands for the federation instance id.
    pub(crate) origin_prefix: String,
    /// Cosignatures a heads checkpoint needs to count as witnessed.
    pub(crate) witness_quorum: usize,
    /// Seconds between two passes that record moved plan heads in the
    /// heads log.
    pub(crate) interval_secs: u64,
}

/// Bounds of `[checkpoints] interval_secs`.
const INTERVAL_SECS: std::ops::RangeInclusive<u64> = 1..=3600;

impl Default for CheckpointsConfig {
    fn default() -> CheckpointsConfig {
        CheckpointsConfig {
            origin_prefix: "logbook/{instanceId}".into(),
            witness_quorum: 1,
            interval_secs: 5,
        }
    }
}

impl CheckpointsConfig {
    /// The prefix with the instance id in place of `{instanceId}`.
    pub(crate) fn origin_prefix_for(&self, instance_id: &str) -> String {
        self.origin_prefix.replace("{instanceId}", instance_id)
    }

    /// A prefix must make a valid signed-note key name (no spaces, no '+')
    /// and one line of origin; a trailing '/' would double the separator.
    fn check(&self) -> Result<(), String> {
        let prefix = self.origin_prefix_for("instance");
        if !logbook_tlog::note::valid_key_name(&prefix)
            || prefix.chars().any(char::is_control)
            || prefix.ends_with('/')
        {
            return Err(format!(
                "checkpoints.origin_prefix {:?} must be non-empty, without spaces, '+' or a trailing '/' (a signed-note key name)",
                self.origin_prefix
            ));
        }
        if !INTERVAL_SECS.contains(&self.interval_secs) {
            return Err(format!(
                "checkpoints.interval_secs {} must be from {} to {}",
                self.interval_secs,
                INTERVAL_SECS.start(),
                INTERVAL_SECS.end()
            ));
        }
        Ok(())
    }
}

/// Command-line values that override the file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) admin_socket: Option<PathBuf>,
}

impl Config {
    pub(crate) fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub(crate) fn embedded_default() -> Config {
        Config::parse(EMBEDDED_DEFAULT).expect("the embedded config.toml is valid")
    }

    /// Reads `path`, or `./config.toml` when no path is given and it exists,
    /// or else the embedded default. Returns the config and where it came from.
    pub(crate) fn load(path: Option<&Path>) -> Result<(Config, String), String> {
        match Config::file_path(path) {
            Some(p) => {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| format!("reading {}: {e}", p.display()))?;
                let config = Config::parse(&text).map_err(|e| format!("{}: {e}", p.display()))?;
                Ok((config, p.display().to_string()))
            }
            None => Ok((Config::embedded_default(), "embedded default".into())),
        }
    }

    pub(crate) fn apply(&mut self, overrides: &Overrides) {
        if let Some(listen) = overrides.listen {
            self.server.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            self.server.data_dir = dir.clone();
        }
        if let Some(socket) = &overrides.admin_socket {
            self.server.admin_socket = socket.display().to_string();
        }
    }

    pub(crate) fn admin_socket_path(&self) -> PathBuf {
        if self.server.admin_socket.is_empty() {
            self.server.data_dir.join("admin.sock")
        } else {
            PathBuf::from(&self.server.admin_socket)
        }
    }

    /// Checks what the types alone cannot. Each message names the key at fault.
    #[cfg(test)]
    pub(crate) fn validate(&self) -> Result<(), String> {
        self.validate_settings()?;
        self.check_exposure(0, false)
    }

    /// Everything [`Config::validate`] checks except the loopback rule,
    /// which also counts tokens kept in the store ([`Config::check_exposure`]).
    pub(crate) fn validate_settings(&self) -> Result<(), String> {
        log_filter::parse(&self.log.level).map_err(|e| format!("log.level: {e}"))?;
        // Stopping must take under 5 s in all: the grace plus the writer drain.
        if self.server.shutdown_grace_secs > 4 {
            return Err(
                "server.shutdown_grace_secs must be at most 4 (a stop completes within 5 s)".into(),
            );
        }
        if !(1..=65535).contains(&self.server.listen_backlog) {
            return Err("server.listen_backlog must be between 1 and 65535".into());
        }
        let l = &self.limits;
        if !(1..=MAX_BODY_BYTES).contains(&l.max_body_bytes) {
            return Err(format!(
                "limits.max_body_bytes must be between 1 and {MAX_BODY_BYTES} (64 MiB)"
            ));
        }
        // Every route's own cap must fit, or its largest body never could.
        let largest_body = l
            .max_body_bytes
            .max(self.witness.max_body_bytes)
            .max(self.federation.incoming_max_body_bytes);
        if l.max_buffered_body_bytes < largest_body {
            return Err(format!(
                "limits.max_buffered_body_bytes must be at least the largest body a route accepts ({largest_body} bytes: limits.max_body_bytes, witness.max_body_bytes and federation.incoming_max_body_bytes)"
            ));
        }
        if l.max_json_depth == 0 || l.max_json_depth > 128 {
            return Err("limits.max_json_depth must be between 1 and 128".into());
        }
        if l.max_type_len == 0 || l.max_type_len > MAX_TYPE_LEN {
            return Err(format!(
                "limits.max_type_len must be between 1 and {MAX_TYPE_LEN}"
            ));
        }
        // An actor travels in every federation message, escaped by JCS (up
        // to six bytes a character): bounded, it stays well inside the
        // 16 KiB a peer's incoming_max_body_bytes allows beyond the payload.
        if l.max_actor_len == 0 || l.max_actor_len > MAX_ACTOR_LEN {
            return Err(format!(
                "limits.max_actor_len must be between 1 and {MAX_ACTOR_LEN}"
            ));
        }
        if l.request_timeout_secs == 0 {
            return Err("limits.request_timeout_secs must be positive".into());
        }
        if !(1..=MAX_KEEPALIVE_SECS).contains(&self.sse.keepalive_secs) {
            return Err(format!(
                "sse.keepalive_secs must be between 1 and {MAX_KEEPALIVE_SECS}"
            ));
        }
        self.witness.check()?;
        if self.sse.max_streams == 0 {
            return Err("sse.max_streams must be positive".into());
        }
        if self.server.max_connections == 0 {
            return Err("server.max_connections must be positive".into());
        }
        if self.server.max_connections_per_ip == 0 {
            return Err("server.max_connections_per_ip must be positive".into());
        }
        if !(1..=MAX_SEND_TIMEOUT_SECS).contains(&self.server.send_timeout_secs) {
            return Err(format!(
                "server.send_timeout_secs must be between 1 and {MAX_SEND_TIMEOUT_SECS}"
            ));
        }
        for host in &self.server.allowed_hosts {
            let ok = !host.is_empty()
                && host.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                });
            if !ok {
                return Err(format!(
                    "server.allowed_hosts: {host:?} is not a host name (write it as in a Host header, e.g. \"logbook.internal\" or \"logbook.internal:7411\", without a scheme)"
                ));
            }
        }
        for origin in &self.http.cors_origins {
            if origin != "*" && origin.parse::<axum::http::HeaderValue>().is_err() {
                return Err(format!(
                    "http.cors_origins: {origin:?} is not a valid origin"
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        let mut hashes = std::collections::HashSet::new();
        for t in &self.auth.tokens {
            if !names.insert(&t.name) {
                return Err(format!("auth.tokens: the name {:?} is used twice", t.name));
            }
            let Some(hash) = logbook_base::hex::decode_array::<32>(&t.sha256) else {
                return Err(format!(
                    "auth.tokens[{}].sha256 must be 64 hex digits (the SHA-256 of the token, not the token)",
                    t.name
                ));
            };
            // `printf %s "$TOKEN" | sha256sum` with `$TOKEN` unset gives
            // this hash: a token anyone can send.
            if hash == logbook_base::canonical::sha256(b"") {
                return Err(format!(
                    "auth.tokens[{}].sha256 is the SHA-256 of the empty string: the token was empty when it was hashed",
                    t.name
                ));
            }
            // One token, two scope sets: which one applies would be silent.
            if !hashes.insert(hash) {
                return Err(format!(
                    "auth.tokens[{}].sha256 is another token's: each token has its own",
                    t.name
                ));
            }
            if t.scopes.is_empty() {
                return Err(format!("auth.tokens[{}].scopes must not be empty", t.name));
            }
        }
        self.checkpoints.check()?;
        self.check_witnesses()?;
        self.retention.check()?;
        Ok(())
    }

    /// Everything that can be checked before the daemon touches its data
    /// dir: the settings, the `RUST_LOG` that would override `log.level`,
    /// `[federation]`, `[registry]` and `[[peers]]`. `env` reads the
    /// environment. The loopback rule needs the store (`check_exposure`).
    pub(crate) fn check_before_start(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        self.validate_settings()?;
        if let Some(filter) = env(layers::LOG_ENV) {
            log_filter::parse(&filter).map_err(|e| format!("${}: {e}", layers::LOG_ENV))?;
        }
        hmac_secret(&env)?;
        self.federation.validate().map_err(|e| e.to_string())?;
        logbook_journal::registry::Registry::new(self.registry.strict, &self.registry.types)
            .map_err(|e| format!("registry.types: {e}"))?;
        logbook_federation::peers::check_config(&self.federation.instance_id, &self.peers)
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The path `load` reads: `path`, else `./config.toml` if it exists.
    pub(crate) fn file_path(path: Option<&Path>) -> Option<PathBuf> {
        match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("config.toml")).filter(|p| p.is_file()),
        }
    }

    /// `[[witnesses]]` and `witness_quorum`: bounded, each URL a plain
    /// http(s) prefix, each vkey a cosignature key, no witness twice.
    fn check_witnesses(&self) -> Result<(), String> {
        if self.checkpoints.witness_quorum > MAX_WITNESSES {
            return Err(format!(
                "checkpoints.witness_quorum must be at most {MAX_WITNESSES}"
            ));
        }
        if self.witnesses.len() > MAX_WITNESSES {
            return Err(format!("at most {MAX_WITNESSES} [[witnesses]]"));
        }
        let mut names = std::collections::HashSet::new();
        for w in &self.witnesses {
            let url_ok = (w.url.starts_with("http://") || w.url.starts_with("https://"))
                && !w.url.ends_with('/')
                && reqwest::Url::parse(&w.url).is_ok_and(|u| {
                    u.query().is_none() && u.fragment().is_none() && u.host().is_some()
                });
            if !url_ok {
                return Err(format!(
                    "witnesses.url {:?} must be an http(s) URL without a trailing '/', query or fragment (the witness's submission prefix)",
                    w.url
                ));
            }
            let name = w
                .name()
                .map_err(|e| format!("witnesses.vkey {:?}: {e}", w.vkey))?;
            if !names.insert(name.clone()) {
                return Err(format!("witnesses: the witness {name:?} is listed twice"));
            }
        }
        Ok(())
    }

    /// Refuses a non-loopback listen address unless auth is in force:
    /// `auth.required = true`, or "auto" with an API token (in config.toml
    /// or among `stored_tokens` created over the admin socket) or the
    /// persisted latch (`latched`: a token existed once). `false` is never
    /// allowed off loopback.
    pub(crate) fn check_exposure(&self, stored_tokens: usize, latched: bool) -> Result<(), String> {
        if self.server.listen.ip().is_loopback() {
            return Ok(());
        }
        match self.auth.required {
            AuthRequired::Always => Ok(()),
            AuthRequired::Never => Err(format!(
                "refusing to listen on {} with auth.required = false: that opt-out is for loopback only",
                self.server.listen
            )),
            AuthRequired::Auto if !self.auth.tokens.is_empty() || stored_tokens > 0 || latched => {
                Ok(())
            }
            AuthRequired::Auto => Err(format!(
                "refusing to listen on {} without authentication: create a token first with `logbook tokens create --data-dir {} --scope read,append` (no daemon needed; `logbook admin tokens create` while one runs), add token hashes under [auth], or listen on a loopback address such as 127.0.0.1",
                self.server.listen,
                self.server.data_dir.display()
            )),
        }
    }
}

/// The variable the HMAC secret comes from, if one is set: the first of
/// `SECRET_ENV_VARS` that is not empty, as `Keyring::load` takes it, refused
/// when it is too short to be a key.
pub(crate) fn hmac_secret(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<&'static str>, String> {
    use logbook_journal::keys::{MIN_ENV_SECRET_BYTES, SECRET_ENV_VARS};
    let Some((name, len)) = SECRET_ENV_VARS.iter().find_map(|name| {
        env(name)
            .filter(|v| !v.is_empty())
            .map(|v| (*name, v.len()))
    }) else {
        return Ok(None);
    };
    if len < MIN_ENV_SECRET_BYTES {
        return Err(format!(
            "${name} is {len} bytes; an HMAC secret must be at least {MIN_ENV_SECRET_BYTES} bytes. \
             Generate one with: head -c 32 /dev/urandom | base64"
        ));
    }
    Ok(Some(name))
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests;
