//! `logbook admin`: the command-line client of the admin socket. It sends one
//! HTTP request per command over the Unix socket and prints the answer for
//! people, or as JSON with `--json`.
//!
//! `args` holds the command line; `transport` the socket and the request;
//! `output` the rendering for people (tables); `plans`, `daemon` and
//! `federation` the command groups; `events` and `tail` read events.

// Every `println!` and `print!` of the client writes through
// `output::print_out`: a reader that went away (`| head`, a closed pager)
// ends the command quietly, as SIGPIPE ends `ls`, instead of the panic and
// backtrace std's macros give. Defined before the modules, so they all
// see these and not std's.
macro_rules! println {
    () => {
        $crate::admin::client::output::print_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::admin::client::output::print_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::admin::client::output::print_out(format_args!($($arg)*))
    };
}

mod args;
mod daemon;
mod events;
mod federation;
mod output;
mod plans;
mod tail;
mod transport;

use std::process::ExitCode;

pub(crate) use args::AdminArgs;
use args::AdminCommand;
pub(crate) use output::{count, print_secret_once};
use transport::{Client, socket_path};

#[derive(Debug)]
struct Failure {
    message: String,
    /// The daemon's problem+json answer, when the failure is its refusal.
    problem: Option<serde_json::Value>,
}

impl Failure {
    fn new(message: String) -> Failure {
        Failure {
            message,
            problem: None,
        }
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::new(e.to_string())
    }
}

/// Runs one admin command; the exit code is 0 on success, 1 otherwise.
pub(crate) fn run(args: AdminArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("logbook admin: {e}");
            return ExitCode::FAILURE;
        }
    };
    let socket = socket_path(args.socket.clone());
    let client = Client {
        socket,
        json: args.json,
    };
    match runtime.block_on(client.dispatch(args.command)) {
        Ok(code) => code,
        Err(failure) => {
            // For scripts, a refusal is the daemon's JSON answer too.
            if let Some(problem) = failure.problem.as_ref().filter(|_| client.json) {
                client.print_json(problem);
            }
            // A refusal's detail can quote what a client sent.
            eprintln!(
                "logbook admin: {}",
                logbook_base::terminal::inert(&failure.message)
            );
            ExitCode::FAILURE
        }
    }
}

impl Client {
    async fn dispatch(&self, command: AdminCommand) -> Result<ExitCode, Failure> {
        match command {
            AdminCommand::Status => self.status().await?,
            AdminCommand::Plans(command) => self.plans(command).await?,
            AdminCommand::Events {
                plan,
                after,
                limit,
                type_pattern,
                full,
            } => {
                self.events(events::EventsQuery {
                    plan,
                    after,
                    limit,
                    type_pattern,
                    full,
                })
                .await?
            }
            AdminCommand::Tail {
                plan,
                type_pattern,
                after,
                ..
            } => {
                self.tail(tail::TailQuery {
                    plan,
                    type_pattern,
                    after,
                })
                .await?
            }
            AdminCommand::Verify {
                plan: Some(plan), ..
            } => return self.verify(&plan).await,
            AdminCommand::Verify { plan: None, .. } => return self.verify_all().await,
            AdminCommand::Tokens(command) => self.tokens(command).await?,
            AdminCommand::Export { plan, checkpoint } => {
                self.export(&plan, checkpoint.as_deref()).await?
            }
            AdminCommand::Redact { plan, seq, reason } => self.redact(&plan, seq, &reason).await?,
            AdminCommand::Compact => self.compact().await?,
            AdminCommand::Backup { file, without_keys } => self.backup(&file, without_keys).await?,
            AdminCommand::LogLevel { level } => self.log_level(level).await?,
            AdminCommand::Keys(command) => self.keys(command).await?,
            AdminCommand::Peers(command) => self.peers(command).await?,
            AdminCommand::Subscriptions(command) => self.subscriptions(command).await?,
            AdminCommand::Dead(command) => self.dead(command).await?,
            AdminCommand::Witness(command) => self.witness(command).await?,
            AdminCommand::Reload => self.reload().await?,
        }
        Ok(ExitCode::SUCCESS)
    }
}
