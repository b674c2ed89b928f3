//! The `logbook` command line. It only parses arguments and hands over to the
//! library; see `ARCHITECTURE.md` for where things live.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use logbook::config::{Config, Overrides};

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
    /// default, which is the shipped config.toml). Flags override the file.
    /// The HMAC signing key comes from $LOGBOOK_HMAC_SECRET,
    /// $EVENT_BUS_HMAC_SECRET or $SESSION_SECRET, or is generated on first
    /// start into <data-dir>/hmac.key (mode 0600). Stops cleanly on SIGTERM
    /// or SIGINT.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to listen on, e.g. 127.0.0.1:7411 (overrides server.listen).
        /// A non-loopback address requires API tokens.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Directory for the journal and keys (overrides server.data_dir).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Path of the local admin Unix socket (overrides server.admin_socket).
        #[arg(long, value_name = "PATH")]
        admin_socket: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            admin_socket,
        } => serve(config, Overrides { listen, data_dir, admin_socket }),
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
    logbook::server::init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("logbook: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(logbook::server::run(config, &source));
    // `run` has already drained the writer; don't wait on stragglers.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("logbook: {e}");
            ExitCode::FAILURE
        }
    }
}
