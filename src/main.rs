//! logbook: a tamper-evident, append-only event journal.
//!
//! This file is the command line: it only parses arguments and hands over.
//! The daemon's layers are the modules below, over the library crates in
//! `crates/`; `ARCHITECTURE.md` is the map, and its layers block (checked by
//! `tests/layering.rs`) says which module may use which.

mod admin;
mod app;
mod config;
mod federation;
mod heads;
mod http;
mod notify;
mod retention;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};

/// A tamper-evident, append-only event journal.
///
/// Every event belongs to a plan; each plan's events form a hash chain signed
/// with HMAC-SHA256, so any change, reordering or removal inside the chain is
/// detectable. Clients append and read over HTTP and follow events live over
/// Server-Sent Events.
#[derive(Parser)]
#[command(name = "logbook", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the journal daemon.
    ///
    /// Reads FILE (default: ./config.toml if it exists, else the embedded
    /// default, which is the shipped config.toml); a file needs only the
    /// keys it changes. $RUST_LOG overrides log.level; flags override the
    /// file. `logbook config check` shows the result without starting.
    /// The HMAC signing key comes from $LOGBOOK_HMAC_SECRET,
    /// $EVENT_BUS_HMAC_SECRET or $SESSION_SECRET, or is generated on first
    /// start into <data-dir>/hmac.key (mode 0600). Stops cleanly on SIGTERM
    /// or SIGINT.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on, e.g. 127.0.0.1:7411 or localhost:7411
        /// (overrides server.listen). A non-loopback address requires API tokens.
        #[arg(long, value_name = "ADDR", value_parser = crate::config::listen::parse)]
        listen: Option<SocketAddr>,
        /// Directory for the journal and keys (overrides server.data_dir).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Path of the local admin Unix socket (overrides server.admin_socket).
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<PathBuf>,
    },
    /// Administer a running daemon over its local admin socket.
    ///
    /// Only the daemon's user, root and members of server.admin_group may
    /// connect. The socket speaks HTTP, so `curl --unix-socket PATH
    /// http://logbook/status` works too.
    Admin(crate::admin::client::AdminArgs),
    /// API tokens in a data dir no daemon has open (first starts).
    #[command(subcommand)]
    Tokens(crate::admin::tokens_offline::OfflineTokens),
    /// Check an NDJSON export offline, without a daemon.
    ///
    /// Prints the event count and head signature and exits 0, or the first
    /// broken seq and why and exits 1 (2 for a usage or I/O error). With
    /// --log-key and --checkpoint (or --bundle) it checks the export against
    /// the signed checkpoint instead: `ok`, `truncated` (the export is
    /// shorter), `root-mismatch` (the events are not the signed log) or
    /// `uncovered` (events past the checkpoint, which only an HMAC key could
    /// vouch for), and needs an HMAC key only for those. The HMAC secret
    /// comes from the variables named by --key-env (repeatable, for rotated
    /// keys); without a checkpoint, by default $LOGBOOK_HMAC_SECRET,
    /// $EVENT_BUS_HMAC_SECRET and $SESSION_SECRET. For a generated key:
    /// LOGBOOK_HMAC_SECRET="$(cat DATA_DIR/hmac.key)".
    Verify {
        /// The export to check (from `logbook admin export PLAN`).
        #[arg(long, value_name = "FILE")]
        export: PathBuf,
        /// Environment variable holding an HMAC secret.
        #[arg(long, value_name = "VAR")]
        key_env: Vec<String>,
        /// The instance's log vkey (`GET /api/v1/log/keys`): with
        /// --checkpoint, checks the export against the plan's signed
        /// checkpoint, with no HMAC key needed.
        #[arg(long, value_name = "VKEY")]
        log_key: Option<String>,
        /// A signed checkpoint of the plan (`logbook admin export PLAN
        /// --checkpoint FILE`, or `GET /api/plans/{plan_id}/checkpoint`).
        #[arg(long, value_name = "FILE", requires = "log_key")]
        checkpoint: Option<PathBuf>,
        /// A witnessed bundle (`GET /api/plans/{plan_id}/checkpoint?witnessed=1`):
        /// with --log-key, checks the export against its plan checkpoint, the
        /// entry's inclusion in the heads log, the heads checkpoint's signature
        /// and the witnesses' cosignatures.
        #[arg(
            long,
            value_name = "FILE",
            requires = "log_key",
            conflicts_with = "checkpoint"
        )]
        bundle: Option<PathBuf>,
        /// A witness's cosignature vkey (cosignature/v1); repeatable.
        #[arg(long, value_name = "VKEY", requires = "bundle")]
        witness: Vec<String>,
        /// Distinct --witness keys whose cosignature must verify.
        #[arg(long, value_name = "K", default_value_t = 1, requires = "bundle")]
        quorum: usize,
        /// Oldest the quorum's cosignatures may be, in seconds (the
        /// quorum-th newest counts): an older bundle is `stale`, as a
        /// rolled-back log's is. Raise it to check an archived bundle.
        #[arg(
            long,
            value_name = "SECS",
            default_value_t = crate::admin::bundle::DEFAULT_MAX_AGE_SECS,
            requires = "bundle"
        )]
        max_age: u64,
    },
    /// Check a configuration without starting the daemon.
    Config(crate::config::check::ConfigArgs),
    /// Install a backup as the store of an empty data dir.
    ///
    /// FILE comes from `logbook admin backup FILE`; its key files (HMAC,
    /// federation and log keys, instance_id) are restored too, mode 0600.
    /// Key files already in DIR must be the same as the backup's. A witness
    /// key is never restored, and one in DIR refuses the restore. A
    /// backup made with --without-keys (or by an older build) holds no keys:
    /// copy them, or set the same $LOGBOOK_HMAC_SECRET.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Data dir to restore into; it must not hold a journal yet.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Restore a backup whose MAC the signing key here
        /// ($LOGBOOK_HMAC_SECRET, else DIR/hmac.key) cannot check: an older
        /// build's (format 1 or a bare store), or one made under another or
        /// a retired key (keys a backup carries never vouch for it). A MAC
        /// that does not verify under a key DIR or the environment holds is
        /// refused all the same; one naming a key not here is not checked.
        #[arg(long)]
        allow_unauthenticated: bool,
    },
    /// Print a shell completion script to stdout.
    ///
    /// bash: `logbook completions bash > ~/.local/share/bash-completion/completions/logbook`;
    /// zsh: into a directory of $fpath as `_logbook`; fish:
    /// `~/.config/fish/completions/logbook.fish`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout: `logbook man > logbook.1`.
    Man,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            admin_socket,
        } => serve(
            config,
            Overrides {
                listen,
                data_dir,
                admin_socket,
            },
        ),
        Command::Admin(args) => crate::admin::client::run(args),
        Command::Tokens(command) => crate::admin::tokens_offline::run_command(command),
        Command::Verify {
            export,
            key_env,
            log_key,
            checkpoint,
            bundle,
            witness,
            quorum,
            max_age,
        } => {
            let witnessed = bundle.map(|file| Witnesses {
                file,
                keys: witness,
                bar: crate::admin::bundle::Bar {
                    quorum,
                    max_age_secs: max_age,
                    now: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                },
            });
            verify_export(
                &export,
                &key_env,
                log_key.as_deref(),
                checkpoint.as_deref(),
                witnessed.as_ref(),
            )
        }
        Command::Restore {
            file,
            data_dir,
            allow_unauthenticated,
        } => crate::admin::restore::run(&file, &data_dir, allow_unauthenticated),
        Command::Config(args) => crate::config::check::run(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "logbook", &mut script);
            print_bytes("completions", &script)
        }
        Command::Man => {
            use clap::CommandFactory;
            // The top-level page, from the same definition as `--help`.
            let mut page = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut page) {
                Ok(()) => print_bytes("man", &page),
                Err(e) => {
                    eprintln!("logbook man: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Writes generated text to stdout; a reader that stopped early (`| head`)
/// is not an error.
fn print_bytes(what: &str, bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logbook {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `1 event`, `2 events`.
fn events(n: u64) -> String {
    crate::admin::client::count(n, "event", "events")
}

/// `--bundle` and what it is checked with.
struct Witnesses {
    file: PathBuf,
    keys: Vec<String>,
    bar: crate::admin::bundle::Bar,
}

/// The first `limit + 1` bytes of `file` at most: enough for its parser to
/// refuse one too large, without reading the rest.
fn read_at_most(file: &std::path::Path, limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(file)?
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn verify_export(
    path: &std::path::Path,
    key_env: &[String],
    log_key: Option<&str>,
    checkpoint: Option<&std::path::Path>,
    witnesses: Option<&Witnesses>,
) -> ExitCode {
    use crate::admin::offline::{LogCheck, LogOutcome, Outcome, keyring_from_env, verify_export};
    let mut witnessed = None;
    let mut run = || -> Result<_, String> {
        // At most one byte over the format's limit, which its parser then
        // refuses: the file comes from the instance being audited, and may
        // be as large as it likes (or /dev/zero).
        let read = |file: &std::path::Path, limit: usize| {
            read_at_most(file, limit).map_err(|e| format!("reading {}: {e}", file.display()))
        };
        let instance = log_key
            .map(|vkey| {
                logbook_tlog::note::Verifier::parse(vkey).map_err(|e| format!("--log-key: {e}"))
            })
            .transpose()?;
        let log = match (instance, checkpoint, witnesses) {
            (Some(instance), Some(file), _) => Some(LogCheck {
                instance,
                checkpoint: read(file, logbook_tlog::note::MAX_NOTE_BYTES)?,
            }),
            (Some(instance), None, Some(w)) => {
                let bundle = crate::admin::bundle::parse(&read(
                    &w.file,
                    crate::admin::bundle::MAX_BUNDLE_BYTES,
                )?)?;
                let keys = w
                    .keys
                    .iter()
                    .map(|k| {
                        logbook_tlog::cosignature::CosignatureVerifier::parse(k)
                            .map_err(|e| format!("--witness {k:?}: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                witnessed = Some(crate::admin::bundle::check(
                    &bundle, &instance, &keys, w.bar.now,
                ));
                Some(LogCheck {
                    instance,
                    checkpoint: bundle.plan_checkpoint.into_bytes(),
                })
            }
            (Some(_), None, None) => {
                return Err("--log-key needs --checkpoint or --bundle".into());
            }
            _ => None,
        };
        // Against a checkpoint the HMAC key is optional and only taken from
        // --key-env: a default variable set for something else (as
        // SESSION_SECRET often is) must not turn a good export into a break.
        let keyring = match (&log, key_env.is_empty()) {
            (Some(_), true) => None,
            _ => Some(keyring_from_env(key_env, |name| std::env::var(name).ok())?),
        };
        let file =
            std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        verify_export(
            std::io::BufReader::new(file),
            keyring.as_ref(),
            log.as_ref(),
        )
    };
    let verified = match run() {
        Ok(verified) => verified,
        Err(e) => {
            eprintln!("logbook verify: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    let mut bundle_failed = false;
    if let (Some(outcome), Some(w)) = (witnessed, witnesses) {
        bundle_failed = !crate::admin::bundle::report(&outcome, w.bar);
    }
    match (&verified.chain, &verified.log) {
        (Outcome::Broken { reason, .. }, Some(LogOutcome::BadCheckpoint)) => {
            println!("{reason}");
            failed = true;
        }
        // Line 0: no line is at fault (an empty export), with or without a
        // checkpoint or bundle to hold it against.
        (
            Outcome::Broken {
                line: 0, reason, ..
            },
            _,
        ) => {
            println!("broken: {reason}");
            failed = true;
        }
        // The log matches, but the key given does not verify the chain.
        (Outcome::Broken { seq, line, reason }, Some(LogOutcome::Ok { .. }))
            if reason.starts_with("signature") || reason.starts_with("missing-key") =>
        {
            println!(
                "broken at seq {seq} (line {line}): {reason} (the events are the signed log: check the HMAC key)"
            );
            failed = true;
        }
        // The checkpoint's events rebuild its root: the broken one is after
        // them, and the root is not what failed.
        (Outcome::Broken { seq, line, reason }, Some(LogOutcome::Ok { size })) if seq > size => {
            println!(
                "broken at seq {seq} (line {line}): {reason} (after the checkpoint's {size} events, which rebuild its root)"
            );
            failed = true;
        }
        // Against a checkpoint, any changed event is a root mismatch; the
        // chain names the first one (its payload is outside the leaves).
        (
            Outcome::Broken { seq, line, reason },
            Some(LogOutcome::Ok { .. } | LogOutcome::RootMismatch),
        ) => {
            println!("root-mismatch: first bad seq {seq} (line {line}): {reason}");
            failed = true;
        }
        (Outcome::Broken { seq, line, reason }, _) => {
            println!("broken at seq {seq} (line {line}): {reason}");
            failed = true;
        }
        (
            Outcome::Valid {
                count,
                head_signature,
                redacted,
                redacted_seqs,
            },
            _,
        ) => {
            match head_signature {
                Some(head) => println!(
                    "ok: {}, head signature {}",
                    events(*count),
                    logbook_base::hex::encode(head)
                ),
                None => println!(
                    "ok: {} in order, payloads match their hashes (no HMAC key: signatures not checked)",
                    events(*count)
                ),
            }
            if *redacted > 0 {
                let listed: Vec<String> = redacted_seqs.iter().map(u64::to_string).collect();
                let more = redacted.saturating_sub(listed.len() as u64);
                println!(
                    "redacted: {redacted} (payloads erased; their hashes stay signed and in the log): seq {}{}",
                    listed.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    let count = match verified.chain {
        Outcome::Valid { count, .. } => Some(count),
        Outcome::Broken { .. } => None,
    };
    match (verified.log, count) {
        (Some(LogOutcome::Ok { size }), Some(count)) if count > size && key_env.is_empty() => {
            println!(
                "uncovered: events {} to {count} are after the checkpoint (size {size}); without an HMAC key only their order and payloads were checked",
                size + 1
            );
            failed = true;
        }
        (Some(LogOutcome::Ok { size }), Some(_)) => {
            if size == 1 {
                println!("ok: the first event is the signed checkpoint's log")
            } else {
                println!("ok: the first {size} events are the signed checkpoint's log")
            }
        }
        (Some(LogOutcome::Truncated { export, checkpoint }), _) => {
            println!(
                "truncated: the export has {}, the checkpoint {checkpoint}",
                events(export)
            );
            failed = true;
        }
        (Some(LogOutcome::RootMismatch), Some(_)) => {
            println!("root-mismatch: the events do not rebuild the checkpoint's root");
            failed = true;
        }
        _ => {}
    }
    if bundle_failed && !failed {
        // The `ok:` lines above hold the export to the bundle's plan
        // checkpoint; the last line must not leave a failed bundle behind.
        println!(
            "not-witnessed: the export is the bundle's plan checkpoint, but the bundle does not hold (above)"
        );
    }
    if failed || bundle_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn serve(config_path: Option<PathBuf>, overrides: Overrides) -> ExitCode {
    let (mut config, source) = match Config::load(config_path.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("logbook: {e}");
            return ExitCode::from(2);
        }
    };
    config.apply(&overrides);
    // Checked before logging starts, so a bad log.level is refused, not
    // silently read as "log nothing".
    if let Err(e) = config.check_before_start(|name| std::env::var(name).ok()) {
        eprintln!("logbook: {e}");
        return ExitCode::from(2);
    }
    crate::server::init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("logbook: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(crate::server::run(config, &source));
    // `run` has already drained the writer; don't wait on stragglers.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: in the log when it shows errors (both go to stderr),
            // else on stderr as it is.
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!("{e}");
            } else {
                eprintln!("logbook: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
