//! Where each effective setting comes from: the built-in default, the
//! config file, the environment or a command-line flag (highest last), for
//! `logbook config check`. Values are read back from the `Config` the daemon
//! would run with, so what is shown is what runs; secrets are redacted.

use serde::Serialize;

use super::{Config, Overrides};

/// The variable that overrides `log.level` (read by `admin::logging`).
pub(crate) const LOG_ENV: &str = "RUST_LOG";

/// What `config check` prints instead of a secret.
pub(crate) const REDACTED: &str = "<redacted>";

/// Keys whose values are never printed, at any depth.
const SECRET_KEYS: [&str; 1] = ["sha256"];

/// The layer a value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Source {
    Default,
    File,
    Environment,
    Flag,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Environment => "environment",
            Source::Flag => "flag",
        }
    }
}

/// One effective key: `section.key`, its value and where it comes from
/// (`from`: the flag or variable name, for those two layers).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Setting {
    pub(crate) key: String,
    pub(crate) value: toml::Value,
    pub(crate) source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<String>,
}

impl Overrides {
    /// The keys the flags set, with the flag's name.
    pub(crate) fn flags(&self) -> Vec<(&'static str, &'static str)> {
        let mut set = Vec::new();
        if self.listen.is_some() {
            set.push(("server.listen", "--listen"));
        }
        if self.data_dir.is_some() {
            set.push(("server.data_dir", "--data-dir"));
        }
        if self.admin_socket.is_some() {
            set.push(("server.admin_socket", "--admin-socket"));
        }
        set
    }
}

/// Every leaf key of `config` (flags already applied) in the file's order,
/// with its source. `file` is the file's own table (absent: no file);
/// `env` reads the environment. Arrays (`[[peers]]`, `auth.tokens`) are one
/// value each.
pub(crate) fn settings(
    config: &Config,
    file: Option<&toml::Table>,
    overrides: &Overrides,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Setting>, String> {
    let effective = toml::Table::try_from(config)
        .map_err(|e| format!("reading the effective configuration back: {e}"))?;
    let flags = overrides.flags();
    let log_env = env(LOG_ENV);
    let mut out = Vec::new();
    walk(&effective, "", &mut |key, value| {
        let mut value = redact(value.clone());
        let (source, from) = if let Some((_, flag)) = flags.iter().find(|(k, _)| *k == key) {
            (Source::Flag, Some((*flag).to_string()))
        } else if let (Some(filter), "log.level") = (&log_env, key) {
            value = toml::Value::String(filter.clone());
            (Source::Environment, Some(format!("${LOG_ENV}")))
        } else if file.is_some_and(|t| lookup(t, key)) {
            (Source::File, None)
        } else {
            (Source::Default, None)
        };
        out.push(Setting {
            key: key.to_string(),
            value,
            source,
            from,
        });
    });
    Ok(out)
}

fn walk(table: &toml::Table, prefix: &str, f: &mut impl FnMut(&str, &toml::Value)) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            toml::Value::Table(inner) => walk(inner, &key, f),
            leaf => f(&key, leaf),
        }
    }
}

/// Whether the dotted `key` is set in `table`.
fn lookup(table: &toml::Table, key: &str) -> bool {
    let mut current = table;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        match (current.get(part), parts.peek()) {
            (Some(_), None) => return true,
            (Some(toml::Value::Table(inner)), Some(_)) => current = inner,
            _ => return false,
        }
    }
    false
}

/// `value` with every secret member replaced by [`REDACTED`].
fn redact(value: toml::Value) -> toml::Value {
    match value {
        toml::Value::Table(table) => toml::Value::Table(
            table
                .into_iter()
                .map(|(k, v)| {
                    let v = if SECRET_KEYS.contains(&k.as_str()) {
                        toml::Value::String(REDACTED.into())
                    } else {
                        redact(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        toml::Value::Array(items) => toml::Value::Array(items.into_iter().map(redact).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(all: &'a [Setting], key: &str) -> &'a Setting {
        all.iter().find(|s| s.key == key).expect(key)
    }

    #[test]
    fn each_layer_is_named() {
        let text = "[sse]\nkeepalive_secs = 3\n[[auth.tokens]]\nname = \"ci\"\nsha256 = \"aa\"\nscopes = [\"read\"]\n";
        let table: toml::Table = text.parse().unwrap();
        let mut config = Config::parse(text).unwrap();
        let overrides = Overrides {
            listen: Some("127.0.0.1:9".parse().unwrap()),
            ..Overrides::default()
        };
        config.apply(&overrides);
        let env = |name: &str| (name == LOG_ENV).then(|| "debug".to_string());
        let all = settings(&config, Some(&table), &overrides, env).unwrap();
        let listen = find(&all, "server.listen");
        assert_eq!(
            (listen.source, listen.from.as_deref()),
            (Source::Flag, Some("--listen"))
        );
        assert_eq!(listen.value.as_str(), Some("127.0.0.1:9"));
        assert_eq!(find(&all, "sse.keepalive_secs").source, Source::File);
        assert_eq!(find(&all, "sse.max_streams").source, Source::Default);
        let level = find(&all, "log.level");
        assert_eq!(
            (level.source, level.value.as_str()),
            (Source::Environment, Some("debug"))
        );
        let tokens = find(&all, "auth.tokens");
        assert_eq!(tokens.source, Source::File);
        assert!(
            !tokens.value.to_string().contains("\"aa\""),
            "{}",
            tokens.value
        );
        assert!(tokens.value.to_string().contains(REDACTED));
        assert_eq!(all[0].key, "server.listen", "in the file's order");
    }
}
