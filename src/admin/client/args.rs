//! The `logbook admin` command line (clap derive).

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// Path of the admin socket [default: $LOGBOOK_ADMIN_SOCKET, else
    /// /run/logbook/admin.sock if it exists, else ./data/admin.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Print the daemon's JSON answer instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Version, uptime, listen addresses, plans, events, disk bytes, peers,
    /// queue depths and the last fsync latency.
    Status,
    /// List, show or delete plans.
    #[command(subcommand)]
    Plans(PlansCommand),
    /// A plan's events as a table: seq, time, type, actor and the payload
    /// cut short (--full for whole events, --json for the API's page).
    Events {
        /// Plan id (UUID).
        plan: String,
        /// Start after this seq.
        #[arg(long, value_name = "N", default_value_t = 0)]
        after: u64,
        /// At most N events.
        #[arg(long, value_name = "N", default_value_t = 100,
              value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        limit: u64,
        /// Only events whose type this pattern matches (plan.*, step.>, …).
        #[arg(long = "type", value_name = "PATTERN")]
        type_pattern: Option<String>,
        /// Every field of every event, payloads whole.
        #[arg(long)]
        full: bool,
    },
    /// Follow a plan's events live, or every plan's with --all, until
    /// Ctrl-C. Resumes where it was after a daemon restart, without a gap
    /// or a duplicate. With --json, one event per line.
    Tail {
        /// Plan id (UUID).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        plan: Option<String>,
        /// Every plan (the system journal too).
        #[arg(long)]
        all: bool,
        /// Only events whose type this pattern matches (plan.*, step.>, …).
        #[arg(long = "type", value_name = "PATTERN")]
        type_pattern: Option<String>,
        /// Start after this cursor (a plan's seq; with --all a store-wide
        /// position) [default: the current head, so only new events].
        #[arg(long, value_name = "N")]
        after: Option<u64>,
    },
    /// Verify a plan's whole chain, or every plan with --all.
    Verify {
        /// Plan id (UUID).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        plan: Option<String>,
        /// Verify every plan (with a progress bar on a terminal).
        #[arg(long)]
        all: bool,
    },
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Write a plan's events as NDJSON to stdout (`> plan.ndjson`).
    Export {
        /// Plan id (UUID).
        plan: String,
        /// Also write the plan's signed checkpoint at the exported size to
        /// FILE, for `logbook verify --export … --log-key … --checkpoint FILE`.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
    },
    /// Erase one event's payload for good. The event keeps its hash, so the
    /// chain and checkpoints still verify; the system journal records who,
    /// when and why.
    Redact {
        /// Plan id (UUID).
        plan: String,
        /// The event's seq.
        seq: u64,
        /// Why (one line, at most 1024 bytes), e.g. a ticket reference.
        #[arg(long)]
        reason: String,
    },
    /// Rewrite the store file with only its live rows, so that bytes of
    /// redacted payloads and deleted plans do not linger in its free pages.
    /// Appends wait while it runs.
    Compact,
    /// Write a consistent snapshot of the store, with the key files (HMAC,
    /// federation and log keys, instance_id; never the witness key), to
    /// FILE (mode 0600)
    /// while the daemon keeps serving. Restore with `logbook restore FILE
    /// --data-dir DIR`.
    Backup {
        /// Where to write the backup; must not exist yet.
        file: PathBuf,
        /// Leave the key material out (for off-site copies): the backup
        /// alone then cannot verify the chain or act as this instance.
        #[arg(long)]
        without_keys: bool,
    },
    /// Set the log filter (tracing syntax: info, debug, logbook=debug,warn),
    /// or show it when no LEVEL is given.
    LogLevel { level: Option<String> },
    /// Re-read the config file now, as SIGHUP does.
    Reload,
    /// Rotate signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Federation peers: add, list, suspend, resume, remove.
    #[command(subcommand)]
    Peers(PeersCommand),
    /// Federation subscriptions.
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
    /// Federation messages given up on (dead letters): list, retry, drop.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// This instance as a witness of its peers' heads logs.
    #[command(subcommand)]
    Witness(WitnessCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum WitnessCommand {
    /// Checkpoints refused because they contradict one cosigned before
    /// (rollback, fork, bad proof), each with both signed notes.
    Evidence,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PeersCommand {
    /// Add a peer and pin its key: give --fingerprint (hex SHA-256 of its
    /// SPKI DER, compared out of band) or --public-key FILE (SPKI PEM).
    Add {
        instance_id: String,
        /// The peer's base URL, e.g. http://10.0.0.5:7411.
        base_url: String,
        #[arg(long)]
        fingerprint: Option<String>,
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
    /// Every peer with its status and key fingerprint.
    List,
    /// Stop delivering to a peer; its messages stay queued.
    Suspend { instance_id: String },
    /// Deliver to a suspended peer again.
    Resume { instance_id: String },
    /// Remove a peer: no more deliveries to it.
    Remove { instance_id: String },
    /// Let a peer subscribe to event types these patterns cover (step.>,
    /// plan.*, ledger.transaction; > for all but the system journal). A
    /// peer may subscribe to nothing until it is allowed something.
    Allow {
        instance_id: String,
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// Take grants back: subscriptions they covered stop receiving events.
    Disallow {
        instance_id: String,
        #[arg(required = true)]
        patterns: Vec<String>,
    },
    /// Whether the peer witnesses this instance's heads log (cosigns its
    /// checkpoints). Overrides `[[peers]] witness`; peers do by default.
    Witness {
        instance_id: String,
        #[arg(value_enum)]
        switch: Switch,
    },
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Switch {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SubscriptionsCommand {
    /// Inbound and outbound subscriptions by peer and event-type pattern.
    List,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeadCommand {
    /// Dead outbound messages, optionally of one peer.
    List {
        #[arg(long)]
        peer: Option<String>,
    },
    /// Queue dead messages again: one by id, or all of --peer.
    #[command(
        override_usage = "logbook admin dead retry <MESSAGE_ID>\n       logbook admin dead retry --peer <PEER>"
    )]
    Retry {
        #[arg(required_unless_present = "peer", conflicts_with = "peer")]
        message_id: Option<String>,
        #[arg(long)]
        peer: Option<String>,
    },
    /// Delete dead messages for good: one by id, all of --peer, or --all.
    #[command(
        override_usage = "logbook admin dead drop <MESSAGE_ID> [--peer <PEER>]\n       logbook admin dead drop --peer <PEER>\n       logbook admin dead drop --all"
    )]
    Drop {
        #[arg(required_unless_present_any = ["peer", "all"], conflicts_with = "all")]
        message_id: Option<String>,
        /// Every dead message of this peer (with an id: only if it is this peer's).
        #[arg(long, conflicts_with = "all")]
        peer: Option<String>,
        /// Every dead message of every peer.
        #[arg(long)]
        all: bool,
    },
}

// The variants are the subcommands `rotate-hmac`, `rotate-rsa`, `rotate-log`.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// New events get a new HMAC key (and key id); old events still verify.
    /// The old generated key moves to <data_dir>/hmac-retired/.
    RotateHmac,
    /// New federation key pair. Every peer is told the new public key in a
    /// message signed with the old key; the old key moves to
    /// <data_dir>/federation-retired/.
    RotateRsa,
    /// New Ed25519 log key for plan checkpoints. The old vkey stays listed
    /// (GET /api/v1/log/keys) as retired, so old checkpoints still verify.
    RotateLog,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PlansCommand {
    /// Every plan with its head.
    List,
    /// One plan's head: seq, signature, count, first and last time.
    Show { plan: String },
    /// Delete a plan and its events. A tombstone (who, when, head signature)
    /// is recorded in the system journal, which cannot be deleted. Asks
    /// first on a terminal; elsewhere --yes is required.
    Delete {
        plan: String,
        /// Delete without asking.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Create a token; it is printed once and stored only as a hash.
    Create {
        /// Comma-separated scopes: read, append, admin.
        #[arg(long, value_delimiter = ',', required = true,
              value_parser = ["read", "append", "admin"])]
        scope: Vec<String>,
        /// A name for the token [default: token-<id>].
        #[arg(long)]
        name: Option<String>,
    },
    /// Tokens from config.toml and from the admin socket (never the secrets).
    List,
    /// Revoke a token created here, by name or id. It stops working at once.
    Revoke { name_or_id: String },
}
