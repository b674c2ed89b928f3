//! `logbook config check`: reads the config the way `serve` would (file,
//! environment, flags), runs the checks a start runs before it touches the
//! data dir, and prints each effective key with its source. Nothing is
//! written; secrets are printed as `<redacted>`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::layers::{REDACTED, Setting, Source, settings};
use super::{Config, Overrides};

#[derive(Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration and print the effective settings.
    ///
    /// Reads FILE as `logbook serve` would (default: ./config.toml if it
    /// exists, else the built-in defaults), with the same environment
    /// ($RUST_LOG overrides log.level; $LOGBOOK_HMAC_SECRET …) and the same
    /// flags. Prints every key with its value and its source: default,
    /// file, environment or flag. Secrets are shown as <redacted>. Exits 1,
    /// naming the key at fault, when the daemon would refuse to start with it.
    Check {
        /// Configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// As `serve --listen`.
        #[arg(long, value_name = "ADDR", value_parser = super::listen::parse)]
        listen: Option<SocketAddr>,
        /// As `serve --data-dir`.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// As `serve --admin-socket`.
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<PathBuf>,
        /// Print JSON instead of annotated TOML.
        #[arg(long)]
        json: bool,
    },
}

/// What was checked, for the report.
#[derive(Debug)]
struct Report {
    file: Option<PathBuf>,
    settings: Vec<Setting>,
    /// Where the HMAC key would come from; never the key.
    hmac: (Source, String),
    notes: Vec<String>,
}

pub(crate) fn run(args: ConfigArgs) -> ExitCode {
    let ConfigCommand::Check {
        config,
        listen,
        data_dir,
        admin_socket,
        json,
    } = args.command;
    let overrides = Overrides {
        listen,
        data_dir,
        admin_socket,
    };
    let file = Config::file_path(config.as_deref());
    match check(file.as_deref(), &overrides, |name| std::env::var(name).ok()) {
        Ok(report) if json => out(&format!("{:#}\n", to_json(&report))),
        Ok(report) => out(&to_text(&report)),
        Err(e) => {
            let shown = file
                .as_ref()
                .map_or("the configuration (built-in defaults)".into(), |p| {
                    p.display().to_string()
                });
            if json {
                let file = file.as_ref().map(|p| p.display().to_string());
                out(&format!(
                    "{:#}\n",
                    json!({"valid": false, "file": file, "error": e})
                ));
            }
            // The fault may be in the file, the environment or a flag: the
            // error names the key or variable; this line names all three.
            eprintln!(
                "logbook config check: the configuration (file {shown}, with the environment and flags) is invalid: {e}"
            );
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn out(text: &str) -> ExitCode {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

fn check(
    file: Option<&Path>,
    overrides: &Overrides,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Report, String> {
    let (mut config, table) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let config = Config::parse(&text)?;
            // Parsed once more as a plain table, for which keys it sets.
            let table: toml::Table = text.parse().map_err(|e| format!("{e}"))?;
            (config, Some(table))
        }
        None => (Config::default(), None),
    };
    config.apply(overrides);
    config.check_before_start(&env)?;
    let mut notes = Vec::new();
    if let Err(e) = config.check_exposure(0, false) {
        // Tokens created over the admin socket live in the store, which a
        // check does not open: only a journal that exists can hold them,
        // and they count only under "auto" (`false` is refused off
        // loopback whatever the store holds).
        if config.auth.required != super::AuthRequired::Never
            && config
                .server
                .data_dir
                .join(logbook_journal::store::DB_FILE)
                .is_file()
        {
            notes.push(format!(
                "{e} (unless the journal in {} holds a token created with `logbook admin tokens create`)",
                config.server.data_dir.display()
            ));
        } else {
            return Err(e);
        }
    }
    let hmac = match super::hmac_secret(&env)? {
        Some(name) => (Source::Environment, format!("${name}")),
        None => {
            let key = config
                .server
                .data_dir
                .join(logbook_journal::keys::GENERATED_KEY_FILE);
            let state = if key.is_file() {
                ""
            } else {
                ", generated at the first start"
            };
            (Source::Default, format!("{}{state}", key.display()))
        }
    };
    Ok(Report {
        settings: settings(&config, table.as_ref(), overrides, env)?,
        file: file.map(Path::to_path_buf),
        hmac,
        notes,
    })
}

fn to_json(report: &Report) -> Value {
    json!({
        "valid": true,
        "file": report.file.as_ref().map(|p| p.display().to_string()),
        "settings": report.settings,
        "hmac_secret": {"value": REDACTED, "source": report.hmac.0, "from": report.hmac.1},
        "notes": report.notes,
    })
}

/// Annotated TOML: one `section.key = value` line per key (dotted keys, so
/// the text is TOML again), each followed by its source.
fn to_text(report: &Report) -> String {
    let lines: Vec<(String, String)> = report
        .settings
        .iter()
        .map(|s| {
            let source = match &s.from {
                Some(from) => format!("{} {from}", s.source.as_str()),
                None => s.source.as_str().to_string(),
            };
            (format!("{} = {}", s.key, s.value), source)
        })
        .collect();
    // Aligned, except for a few very long values.
    let width = lines
        .iter()
        .map(|(l, _)| l.chars().count())
        .filter(|&n| n <= 60)
        .max()
        .unwrap_or(0);
    let mut out = String::from("# logbook config check: valid\n");
    match &report.file {
        Some(p) => out.push_str(&format!("# file: {}\n", p.display())),
        None => out.push_str("# file: none (built-in defaults)\n"),
    }
    for note in &report.notes {
        out.push_str(&format!("# note: {note}\n"));
    }
    for (line, source) in lines {
        out.push_str(&format!("{line:<width$}  # {source}\n"));
    }
    out.push_str(&format!(
        "# HMAC secret: {REDACTED}  # {} {}\n",
        report.hmac.0.as_str(),
        report.hmac.1
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_file_checks_and_names_its_sources() {
        let dir = std::env::temp_dir().join(format!("config-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("partial.toml");
        std::fs::write(&path, "[log]\nformat = \"json\"\n").unwrap();
        let env = |name: &str| (name == "LOGBOOK_HMAC_SECRET").then(|| "s".repeat(40));
        let report = check(Some(&path), &Overrides::default(), env).unwrap();
        let text = to_text(&report);
        assert!(text.contains("log.format = \"json\""), "{text}");
        assert!(text.contains("# file\n"), "{text}");
        assert!(text.contains("# default\n"), "{text}");
        assert!(text.contains("environment $LOGBOOK_HMAC_SECRET"), "{text}");
        assert!(!text.contains(&"s".repeat(40)));

        std::fs::write(&path, "[log]\nlevel = \"inf\"\n").unwrap();
        let err = check(Some(&path), &Overrides::default(), |_| None).unwrap_err();
        assert!(
            err.contains("log.level") && err.contains("info, warn"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
