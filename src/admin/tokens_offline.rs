//! `logbook tokens create --data-dir DIR --scope … --name …`: a token made
//! with no daemon running, so that a first start may already listen on a
//! non-loopback address. It goes into the store the daemon will open, as
//! `logbook admin tokens create` would put it; redb's lock on the store
//! file refuses it while a daemon has the data dir open.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::tokens::{generate, valid_name};
use crate::config::Scope;
use logbook_journal::store::DB_FILE;
use logbook_journal::store::admin::insert_token_offline;

/// `logbook tokens …`: tokens in a data dir no daemon has open.
#[derive(clap::Subcommand)]
pub(crate) enum OfflineTokens {
    /// Create a token before the first start (or while the daemon is
    /// stopped); it is printed once and stored only as a hash. With it, the
    /// daemon may listen on a non-loopback address on its first boot. While
    /// a daemon runs, use `logbook admin tokens create`.
    Create {
        /// The daemon's data dir (server.data_dir); created if missing.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Comma-separated scopes: read, append, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scope: Vec<String>,
        /// A name for the token [default: token-<id>].
        #[arg(long)]
        name: Option<String>,
        /// The config the daemon will read (default: ./config.toml if it
        /// exists), so that a name already in `auth.tokens` is refused.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Runs a `logbook tokens` command.
pub(crate) fn run_command(command: OfflineTokens) -> ExitCode {
    match command {
        OfflineTokens::Create {
            data_dir,
            scope,
            name,
            config,
        } => run(&data_dir, &scope, name, config.as_deref()),
    }
}

/// Prints the token once on stdout (the details on stderr), as `logbook
/// admin tokens create` does.
fn run(
    data_dir: &Path,
    scopes: &[String],
    name: Option<String>,
    config: Option<&Path>,
) -> ExitCode {
    match create(data_dir, scopes, name, config) {
        Ok((token, name, id, scopes)) => {
            eprintln!(
                "created token {name:?} (id {id}, scopes {scopes}) in {}; it is shown only this once:",
                data_dir.display()
            );
            crate::admin::client::print_secret_once(&token, &name);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("logbook tokens create: {e}");
            ExitCode::FAILURE
        }
    }
}

fn create(
    data_dir: &Path,
    scopes: &[String],
    name: Option<String>,
    config: Option<&Path>,
) -> Result<(String, String, String, String), String> {
    let scopes = scopes
        .iter()
        .map(|s| parse_scope(s))
        .collect::<Result<Vec<_>, _>>()?;
    if scopes.is_empty() {
        return Err("give at least one scope: read, append, admin".into());
    }
    if let Some(name) = &name
        && !valid_name(name)
    {
        return Err("a token name is 1 to 64 letters, digits, '-', '_' or '.'".into());
    }
    // Two tokens of one name would blur who did what in the logs.
    if let Some(name) = &name {
        let (config, source) = crate::config::Config::load(config)?;
        if config.auth.tokens.iter().any(|t| &t.name == name) {
            return Err(format!(
                "{source} already has a token named {name:?} (auth.tokens); choose another name"
            ));
        }
    }
    logbook_base::private_file::ensure_private_dir(data_dir)
        .map_err(|e| format!("creating data dir {}: {e}", data_dir.display()))?;
    let (token, record) = generate(name, scopes)?;
    let path = data_dir.join(DB_FILE);
    match insert_token_offline(&path, &record) {
        Ok(Ok(())) => {}
        Ok(Err(exists)) => return Err(exists.to_string()),
        Err(e) if e.fault() == logbook_journal::store::Fault::Unavailable => {
            return Err(format!(
                "{e}; while the daemon runs, use `logbook admin tokens create`"
            ));
        }
        Err(e) => return Err(e.to_string()),
    }
    let scopes = record
        .scopes
        .iter()
        .map(|s| scope_name(*s))
        .collect::<Vec<_>>()
        .join(",");
    Ok((token, record.name, record.id, scopes))
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    match text.trim() {
        "read" => Ok(Scope::Read),
        "append" => Ok(Scope::Append),
        "admin" => Ok(Scope::Admin),
        other => Err(format!(
            "unknown scope {other:?}; the scopes are read, append and admin"
        )),
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "read",
        Scope::Append => "append",
        Scope::Admin => "admin",
    }
}
