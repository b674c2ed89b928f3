//! `logbook admin`: the command-line client of the admin socket. It sends one
//! HTTP request per command over the Unix socket and prints the answer for
//! people, or as JSON with `--json`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// Where the socket is looked for when neither --socket nor
/// $LOGBOOK_ADMIN_SOCKET says: the systemd location, then the default data dir.
const DEFAULT_SOCKETS: [&str; 2] = ["/run/logbook/admin.sock", "./data/admin.sock"];

// Federation commands use the federation API, which the admin socket serves
// under the same paths with every scope.
const FED_PEERS: &str = "/api/v1/federation/peers";
const FED_SUBSCRIPTIONS: &str = "/api/v1/federation/events/subscriptions";
const FED_MESSAGES: &str = "/api/v1/federation/events/messages";
const FED_RETRY: &str = "/api/v1/federation/events/messages/retry";
const FED_DROP: &str = "/api/v1/federation/events/messages/drop";

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Path of the admin socket [default: $LOGBOOK_ADMIN_SOCKET, else
    /// /run/logbook/admin.sock if it exists, else ./data/admin.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the daemon's JSON answer instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Version, uptime, listen addresses, plans, events, disk bytes, peers,
    /// queue depths and the last fsync latency.
    Status,
    /// List, show or delete plans.
    #[command(subcommand)]
    Plans(PlansCommand),
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
    },
    /// Write a consistent snapshot of the store to FILE while the daemon
    /// keeps serving. Restore with `logbook restore FILE --data-dir DIR`.
    Backup {
        /// Where to write the snapshot; must not exist yet.
        file: PathBuf,
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
}

#[derive(Debug, Subcommand)]
pub enum PeersCommand {
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
}

#[derive(Debug, Subcommand)]
pub enum SubscriptionsCommand {
    /// Inbound and outbound subscriptions by peer and event-type pattern.
    List,
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// Dead outbound messages, optionally of one peer.
    List {
        #[arg(long)]
        peer: Option<String>,
    },
    /// Queue dead messages again: one by id, or all of --peer.
    Retry {
        #[arg(required_unless_present = "peer", conflicts_with = "peer")]
        message_id: Option<String>,
        #[arg(long)]
        peer: Option<String>,
    },
    /// Delete dead messages for good: one by id, all of --peer, or --all.
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

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// New events get a new HMAC key (and key id); old events still verify.
    /// The old generated key moves to <data_dir>/hmac-retired/.
    RotateHmac,
    /// New federation key pair. Every peer is told the new public key in a
    /// message signed with the old key; the old key moves to
    /// <data_dir>/federation-retired/.
    RotateRsa,
}

#[derive(Debug, Subcommand)]
pub enum PlansCommand {
    /// Every plan with its head.
    List,
    /// One plan's head: seq, signature, count, first and last time.
    Show { plan: String },
    /// Delete a plan and its events. A tombstone (who, when, head signature)
    /// is recorded in the system journal, which cannot be deleted.
    Delete { plan: String },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token; it is printed once and stored only as a hash.
    Create {
        /// Comma-separated scopes: read, append.
        #[arg(long, value_delimiter = ',', required = true)]
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

struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

/// Runs one admin command; the exit code is 0 on success, 1 otherwise.
pub fn run(args: AdminArgs) -> ExitCode {
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
        Err(Failure(message)) => {
            eprintln!("logbook admin: {message}");
            ExitCode::FAILURE
        }
    }
}

fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    if let Some(path) = flag {
        return path;
    }
    if let Some(path) = std::env::var_os("LOGBOOK_ADMIN_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    DEFAULT_SOCKETS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKETS[1]))
}

struct Client {
    socket: PathBuf,
    json: bool,
}

impl Client {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Response<Incoming>, Failure> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| {
            Failure(format!(
                "cannot connect to the admin socket {}: {e} (is the daemon running? use --socket PATH)",
                self.socket.display()
            ))
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "logbook-admin");
        let body = match body {
            Some(value) => {
                request = request.header("content-type", "application/json");
                Bytes::from(value.to_string())
            }
            None => Bytes::new(),
        };
        Ok(sender.send_request(request.body(Full::new(body))?).await?)
    }

    /// Sends a request and returns its JSON body, or fails with the problem.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"detail": String::from_utf8_lossy(&bytes)}));
        if !status.is_success() {
            return Err(problem_failure(status, &value));
        }
        Ok(value)
    }

    fn print_json(&self, value: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    }

    /// Prints `v` as JSON with --json, else as `human` renders it for people.
    fn show(&self, v: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            self.print_json(v);
        } else {
            human(v);
        }
    }

    async fn dispatch(&self, command: AdminCommand) -> Result<ExitCode, Failure> {
        match command {
            AdminCommand::Status => {
                let v = self.call(Method::GET, "/status", None).await?;
                self.show(&v, print_status);
            }
            AdminCommand::Plans(PlansCommand::List) => {
                let v = self.call(Method::GET, "/plans", None).await?;
                self.show(&v, |v| {
                    println!(
                        "{:<36}  {:>10}  {:<24}  HEAD SIGNATURE",
                        "PLAN", "HEAD SEQ", "LAST EVENT"
                    );
                    for plan in items(&v["plans"]) {
                        println!(
                            "{:<36}  {:>10}  {:<24}  {}{}",
                            text(&plan["plan_id"]),
                            text(&plan["head_seq"]),
                            text(&plan["last_at"]),
                            text(&plan["head_signature"]),
                            if plan["system"] == true {
                                "  (system journal)"
                            } else {
                                ""
                            }
                        );
                    }
                });
            }
            AdminCommand::Plans(PlansCommand::Show { plan }) => {
                let v = self
                    .call(Method::GET, &format!("/plans/{}", segment(&plan)), None)
                    .await?;
                self.print_object(&v);
            }
            AdminCommand::Plans(PlansCommand::Delete { plan }) => {
                let v = self
                    .call(Method::DELETE, &format!("/plans/{}", segment(&plan)), None)
                    .await?;
                self.show(&v, |v| {
                    println!(
                        "deleted plan {} ({} events, head seq {}); tombstone at system journal seq {}",
                        text(&v["plan_id"]),
                        text(&v["deleted_events"]),
                        text(&v["head_seq"]),
                        text(&v["tombstone"]["seq"])
                    );
                });
            }
            AdminCommand::Verify {
                plan: Some(plan), ..
            } => {
                let v = self
                    .call(
                        Method::POST,
                        &format!("/plans/{}/verify", segment(&plan)),
                        None,
                    )
                    .await?;
                self.show(&v, print_verify);
                if v["chain_valid"] != true {
                    return Ok(ExitCode::FAILURE);
                }
            }
            AdminCommand::Verify { plan: None, .. } => return self.verify_all().await,
            AdminCommand::Tokens(TokensCommand::Create { scope, name }) => {
                let v = self
                    .call(
                        Method::POST,
                        "/tokens",
                        Some(json!({"scopes": scope, "name": name})),
                    )
                    .await?;
                self.show(&v, |v| {
                    eprintln!(
                        "created token {:?} (id {}, scopes {}); it is shown only this once:",
                        text(&v["name"]),
                        text(&v["id"]),
                        join(&v["scopes"])
                    );
                    println!("{}", text(&v["token"]));
                });
            }
            AdminCommand::Tokens(TokensCommand::List) => {
                let v = self.call(Method::GET, "/tokens", None).await?;
                self.show(&v, |v| {
                    println!(
                        "{:<10}  {:<24}  {:<14}  {:<7}  CREATED",
                        "ID", "NAME", "SCOPES", "SOURCE"
                    );
                    for t in items(&v["tokens"]) {
                        println!(
                            "{:<10}  {:<24}  {:<14}  {:<7}  {}",
                            text(&t["id"]),
                            text(&t["name"]),
                            join(&t["scopes"]),
                            text(&t["source"]),
                            text(&t["created_at"])
                        );
                    }
                });
            }
            AdminCommand::Tokens(TokensCommand::Revoke { name_or_id }) => {
                let v = self
                    .call(
                        Method::DELETE,
                        &format!("/tokens/{}", segment(&name_or_id)),
                        None,
                    )
                    .await?;
                self.show(&v, |v| {
                    println!(
                        "revoked token {:?} (id {})",
                        text(&v["name"]),
                        text(&v["id"])
                    );
                });
            }
            AdminCommand::Export { plan } => self.export(&plan).await?,
            AdminCommand::Backup { file } => self.backup(&file).await?,
            AdminCommand::LogLevel { level } => {
                let v = match level {
                    Some(level) => {
                        self.call(Method::PUT, "/log-level", Some(json!({"level": level})))
                            .await?
                    }
                    None => self.call(Method::GET, "/log-level", None).await?,
                };
                self.show(&v, |v| println!("log level: {}", text(&v["level"])));
            }
            AdminCommand::Keys(KeysCommand::RotateHmac) => {
                let v = self.call(Method::POST, "/keys/rotate-hmac", None).await?;
                self.show(&v, |v| {
                    println!(
                        "HMAC key rotated: new events use key {} (was {}); old events still verify",
                        text(&v["new_key_id"]),
                        text(&v["old_key_id"])
                    );
                });
            }
            AdminCommand::Keys(KeysCommand::RotateRsa) => {
                let v = self.call(Method::POST, "/keys/rotate-rsa", None).await?;
                self.show(&v, |v| {
                println!(
                    "federation key rotated: key {} (was {}), fingerprint {}; announced to {} peers",
                    text(&v["new_key_id"]),
                    text(&v["old_key_id"]),
                    text(&v["fingerprint"]),
                    text(&v["peers_notified"])
                );
                });
            }
            AdminCommand::Dead(DeadCommand::Drop {
                message_id,
                peer,
                all,
            }) => {
                let v = self
                    .call(
                        Method::POST,
                        FED_DROP,
                        Some(json!({"messageId": message_id, "peer": peer, "all": all})),
                    )
                    .await?;
                self.show(&v, |v| {
                    println!("{} dead messages dropped", text(&v["dropped"]))
                });
            }
            AdminCommand::Peers(command) => self.peers(command).await?,
            AdminCommand::Subscriptions(SubscriptionsCommand::List) => {
                let v = self.call(Method::GET, FED_SUBSCRIPTIONS, None).await?;
                self.show(&v, |v| {
                    println!("{:<9}  {:<24}  EVENT TYPES", "DIRECTION", "PEER");
                    for sub in items(&v["subscriptions"]) {
                        println!(
                            "{:<9}  {:<24}  {}",
                            text(&sub["direction"]),
                            text(&sub["peer"]),
                            text(&sub["eventType"])
                        );
                    }
                });
            }
            AdminCommand::Dead(DeadCommand::List { peer }) => {
                let mut path = format!("{FED_MESSAGES}?direction=outbound&status=dead&limit=10000");
                if let Some(peer) = peer {
                    path.push_str(&format!("&peer={}", segment(&peer)));
                }
                let v = self.call(Method::GET, &path, None).await?;
                self.show(&v, |v| {
                    println!(
                        "{:<36}  {:<20}  {:<24}  {:>8}  LAST ERROR",
                        "MESSAGE", "PEER", "TYPE", "ATTEMPTS"
                    );
                    for m in items(&v["messages"]) {
                        println!(
                            "{:<36}  {:<20}  {:<24}  {:>8}  {}",
                            text(&m["messageId"]),
                            text(&m["peer"]),
                            text(&m["eventType"]),
                            text(&m["attempts"]),
                            text(&m["lastError"])
                        );
                    }
                });
            }
            AdminCommand::Dead(DeadCommand::Retry { message_id, peer }) => {
                let v = self
                    .call(
                        Method::POST,
                        FED_RETRY,
                        Some(json!({"messageId": message_id, "peer": peer})),
                    )
                    .await?;
                self.show(&v, |v| {
                    println!("{} dead messages queued again", text(&v["requeued"]))
                });
            }
            AdminCommand::Reload => {
                let v = self.call(Method::POST, "/reload", None).await?;
                self.show(&v, |v| {
                    println!("configuration reloaded: {}", join(&v["applied"]))
                });
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn peers(&self, command: PeersCommand) -> Result<(), Failure> {
        let (v, done) = match command {
            PeersCommand::List => {
                let v = self.call(Method::GET, FED_PEERS, None).await?;
                self.show(&v, |v| {
                    println!(
                        "{:<24}  {:<9}  {:<32}  {:<64}  ALLOW",
                        "INSTANCE", "STATUS", "BASE URL", "FINGERPRINT"
                    );
                    for p in items(&v["peers"]) {
                        println!(
                            "{:<24}  {:<9}  {:<32}  {:<64}  {}",
                            text(&p["instanceId"]),
                            text(&p["status"]),
                            text(&p["baseUrl"]),
                            text(&p["fingerprint"]),
                            join(&p["allow"])
                        );
                    }
                });
                return Ok(());
            }
            PeersCommand::Add {
                instance_id,
                base_url,
                fingerprint,
                public_key,
            } => {
                let public_key = match public_key {
                    Some(path) => std::fs::read_to_string(&path)
                        .map_err(|e| Failure(format!("reading {}: {e}", path.display())))?,
                    None => String::new(),
                };
                let body = json!({
                    "instanceId": instance_id,
                    "baseUrl": base_url,
                    "publicKey": public_key,
                    "fingerprint": fingerprint.unwrap_or_default(),
                });
                (
                    self.call(Method::POST, FED_PEERS, Some(body)).await?,
                    "added",
                )
            }
            PeersCommand::Suspend { instance_id } => (
                self.peer_status(&instance_id, "suspended").await?,
                "suspended",
            ),
            PeersCommand::Resume { instance_id } => {
                (self.peer_status(&instance_id, "active").await?, "resumed")
            }
            PeersCommand::Remove { instance_id } => {
                (self.peer_status(&instance_id, "removed").await?, "removed")
            }
            PeersCommand::Allow {
                instance_id,
                patterns,
            } => return self.peer_grants(&instance_id, "allow", patterns).await,
            PeersCommand::Disallow {
                instance_id,
                patterns,
            } => return self.peer_grants(&instance_id, "disallow", patterns).await,
        };
        self.show(&v, |v| {
            println!(
                "peer {} {done} (status {}, fingerprint {})",
                text(&v["instanceId"]),
                text(&v["status"]),
                text(&v["fingerprint"])
            );
        });
        Ok(())
    }

    async fn peer_grants(
        &self,
        instance_id: &str,
        change: &str,
        patterns: Vec<String>,
    ) -> Result<(), Failure> {
        let path = format!("/peers/{}/{change}", segment(instance_id));
        let v = self
            .call(Method::POST, &path, Some(json!({"patterns": patterns})))
            .await?;
        self.show(&v, |v| {
            let granted = join(&v["allow"]);
            println!(
                "peer {} may subscribe to: {}",
                text(&v["instanceId"]),
                if granted.is_empty() {
                    "nothing".to_string()
                } else {
                    granted
                }
            );
        });
        Ok(())
    }

    async fn peer_status(&self, instance_id: &str, status: &str) -> Result<Value, Failure> {
        let path = format!("{FED_PEERS}/{}/status", segment(instance_id));
        self.call(Method::POST, &path, Some(json!({"status": status})))
            .await
    }

    fn print_object(&self, v: &Value) {
        self.show(v, |v| {
            for (key, value) in v.as_object().into_iter().flatten() {
                println!("{key}: {}", text(value));
            }
        });
    }

    /// Verifies plan by plan, so a terminal can show progress.
    async fn verify_all(&self) -> Result<ExitCode, Failure> {
        let list = self.call(Method::GET, "/plans", None).await?;
        let plans: Vec<String> = items(&list["plans"]).map(|p| text(&p["plan_id"])).collect();
        let progress = std::io::stderr().is_terminal() && !self.json;
        let mut results = Vec::new();
        let mut broken = 0;
        for (i, plan) in plans.iter().enumerate() {
            if progress {
                eprint!("\rverifying {}/{} plans", i + 1, plans.len());
            }
            // A plan deleted since the listing is not a failure.
            let v = match self
                .call(Method::POST, &format!("/plans/{plan}/verify"), None)
                .await
            {
                Ok(v) => v,
                Err(Failure(e)) if e.starts_with("Not found") => continue,
                Err(e) => return Err(e),
            };
            if v["chain_valid"] != true {
                broken += 1;
            }
            results.push(v);
        }
        if progress {
            eprintln!();
        }
        let summary = json!({"plans": results, "verified": results.len(), "broken": broken});
        self.show(&summary, |_| {
            for v in results.iter().filter(|v| v["chain_valid"] != true) {
                print_verify(v);
            }
            println!("{} plans verified, {broken} broken", results.len());
        });
        Ok(if broken == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// Sends a request whose answer is read as a stream: the body on
    /// success, else the problem.
    async fn open(&self, method: Method, path: &str) -> Result<Incoming, Failure> {
        let response = self.send(method, path, None).await?;
        let status = response.status();
        let body = response.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            return Err(problem_failure(
                status,
                &serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ));
        }
        Ok(body)
    }

    async fn export(&self, plan: &str) -> Result<(), Failure> {
        let mut body = self
            .open(Method::GET, &format!("/plans/{}/export", segment(plan)))
            .await?;
        let mut out = std::io::stdout().lock();
        copy_body(&mut body, &mut out, "export").await?;
        out.flush()?;
        Ok(())
    }

    async fn backup(&self, file: &Path) -> Result<(), Failure> {
        if file.exists() {
            return Err(Failure(format!("{} already exists", file.display())));
        }
        let partial = file.with_extension("partial");
        let mut body = self.open(Method::POST, "/backup").await?;
        let write = async {
            use std::os::unix::fs::OpenOptionsExt;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&partial)?;
            let bytes = copy_body(&mut body, &mut out, "backup").await?;
            out.sync_all()?;
            std::fs::rename(&partial, file)?;
            Ok::<u64, Failure>(bytes)
        };
        match write.await {
            Ok(bytes) => {
                let written = json!({"file": file.display().to_string(), "bytes": bytes});
                self.show(&written, |_| {
                    println!("backup written to {} ({bytes} bytes)", file.display());
                });
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(e)
            }
        }
    }
}

/// Writes a streamed body to `out`; returns how many bytes. `what` names the
/// stream in the error when it is cut short.
async fn copy_body(body: &mut Incoming, out: &mut impl Write, what: &str) -> Result<u64, Failure> {
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure(format!("the {what} was cut short: {e}")))?;
        if let Some(data) = frame.data_ref() {
            out.write_all(data)?;
            bytes += data.len() as u64;
        }
    }
    Ok(bytes)
}

fn problem_failure(status: StatusCode, v: &Value) -> Failure {
    let title = v["title"]
        .as_str()
        .unwrap_or(status.canonical_reason().unwrap_or("error"));
    let detail = v["detail"].as_str().unwrap_or("");
    Failure(format!("{title}: {detail} ({})", status.as_u16()))
}

/// A value for people: strings unquoted, null as "-".
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The elements of a JSON array; none for anything else.
fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn join(v: &Value) -> String {
    v.as_array()
        .map(|items| items.iter().map(text).collect::<Vec<_>>().join(","))
        .unwrap_or_else(|| text(v))
}

/// Keeps a user-typed path segment from adding segments or a query.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn print_status(v: &Value) {
    let lines = [
        ("version", text(&v["version"])),
        ("uptime", format!("{}s", text(&v["uptime_secs"]))),
        ("listen", join(&v["listen"])),
        ("admin socket", text(&v["admin_socket"])),
        ("data dir", text(&v["data_dir"])),
        ("plans", text(&v["plans"])),
        ("events", text(&v["events"])),
        ("disk bytes", text(&v["disk_bytes"])),
        (
            "peers",
            v["peers"].as_array().map_or(0, Vec::len).to_string(),
        ),
        (
            "queue depths",
            format!("writer {}", text(&v["queue_depths"]["writer"])),
        ),
        (
            "last fsync",
            format!("{} µs", text(&v["last_fsync_micros"])),
        ),
        ("sse clients", text(&v["sse_clients"])),
        ("signing key", text(&v["signing_key_id"])),
        ("log level", text(&v["log_level"])),
        (
            "auth",
            format!(
                "{} (setting {}: {})",
                if v["auth"]["required"] == true {
                    "required"
                } else {
                    "not required"
                },
                v["auth"]["setting"],
                text(&v["auth"]["reason"])
            ),
        ),
    ];
    for (key, value) in lines {
        println!("{key:<13} {value}");
    }
}

fn print_verify(v: &Value) {
    if v["chain_valid"] == true {
        println!(
            "{}: ok, {} events, head signature {}",
            text(&v["plan_id"]),
            text(&v["verified"]),
            text(&v["head_signature"])
        );
    } else {
        println!(
            "{}: BROKEN at seq {} ({}); {} events verified before it",
            text(&v["plan_id"]),
            text(&v["broken_at"]),
            text(&v["broken_reason"]),
            text(&v["verified"])
        );
    }
}
