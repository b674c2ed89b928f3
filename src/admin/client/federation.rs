//! Federation commands: peers, their grants, subscriptions and dead letters.

use hyper::Method;
use serde_json::{Value, json};

use super::args::{DeadCommand, PeersCommand, SubscriptionsCommand, Switch, WitnessCommand};
use super::output::{compact, count, items, join, text};
use super::transport::segment;
use super::{Client, Failure};

// Federation commands use the federation API, which the admin socket serves
// under the same paths with every scope.
const FED_PEERS: &str = "/api/v1/federation/peers";
const FED_SUBSCRIPTIONS: &str = "/api/v1/federation/events/subscriptions";
const FED_MESSAGES: &str = "/api/v1/federation/events/messages";
const FED_RETRY: &str = "/api/v1/federation/events/messages/retry";
const FED_DROP: &str = "/api/v1/federation/events/messages/drop";
/// Dead letters asked for per page by `dead list` (each up to a request
/// body's size).
const DEAD_PAGE: usize = 100;

impl Client {
    pub(crate) async fn subscriptions(&self, command: SubscriptionsCommand) -> Result<(), Failure> {
        match command {
            SubscriptionsCommand::List => {
                let v = self.call(Method::GET, FED_SUBSCRIPTIONS, None).await?;
                self.show(&v, |v| {
                    println!("{:<9}  {:<36}  EVENT TYPES", "DIRECTION", "PEER");
                    for sub in items(&v["subscriptions"]) {
                        println!(
                            "{:<9}  {:<36}  {}",
                            text(&sub["direction"]),
                            text(&sub["peer"]),
                            text(&sub["eventType"])
                        );
                    }
                });
            }
        }
        Ok(())
    }

    /// `witness evidence`: both signed notes of each refusal, as they are.
    pub(crate) async fn witness(&self, command: WitnessCommand) -> Result<(), Failure> {
        match command {
            WitnessCommand::Evidence => {
                let v = self.call(Method::GET, "/witness/evidence", None).await?;
                self.show(&v, |v| {
                    let rows: Vec<&Value> = items(&v["evidence"]).collect();
                    if rows.is_empty() {
                        println!("no evidence: no witnessed log contradicted itself");
                    }
                    for e in rows {
                        println!(
                            "{}  {}  {}: cosigned size {}, refused size {}",
                            text(&e["at"]),
                            text(&e["reason"]).to_uppercase(),
                            text(&e["origin"]),
                            text(&e["cosignedSize"]),
                            text(&e["refusedSize"])
                        );
                        println!("--- cosigned note\n{}", note_lines(&e["cosignedNote"]));
                        println!("--- refused note\n{}", note_lines(&e["refusedNote"]));
                    }
                });
            }
        }
        Ok(())
    }

    /// `dead list`: page by page, each shown as it arrives, to the end. A
    /// dead letter can be as large as a request body, and nothing caps
    /// how many there are, so no more than a page is held. With `--json`
    /// the answer is one object, `{"messages": [...]}`, written a message
    /// per line.
    async fn dead_list(&self, peer: Option<String>) -> Result<(), Failure> {
        let mut query = format!("{FED_MESSAGES}?direction=outbound&status=dead&limit={DEAD_PAGE}");
        if let Some(peer) = peer {
            query.push_str(&format!("&peer={}", segment(&peer)));
        }
        if self.json {
            println!("{{\"messages\": [");
        } else {
            println!(
                "{:<36}  {:<20}  {:<24}  {:>8}  LAST ERROR",
                "MESSAGE", "PEER", "TYPE", "ATTEMPTS"
            );
        }
        let mut after = String::new();
        let mut first = true;
        loop {
            let mut page = self
                .call(
                    Method::GET,
                    &format!("{query}&after={}", segment(&after)),
                    None,
                )
                .await?;
            let messages = match page["messages"].take() {
                Value::Array(messages) => messages,
                _ => Vec::new(),
            };
            for m in &messages {
                if self.json {
                    let comma = if first { "" } else { "," };
                    println!("{comma}{}", compact(m));
                } else {
                    println!(
                        "{:<36}  {:<20}  {:<24}  {:>8}  {}",
                        text(&m["messageId"]),
                        text(&m["peer"]),
                        text(&m["eventType"]),
                        text(&m["attempts"]),
                        text(&m["lastError"])
                    );
                }
                first = false;
            }
            match page["next_after"].as_str() {
                Some(next) if messages.len() == DEAD_PAGE => after = next.to_string(),
                _ => break,
            }
        }
        if self.json {
            println!("]}}");
        }
        Ok(())
    }

    pub(crate) async fn dead(&self, command: DeadCommand) -> Result<(), Failure> {
        match command {
            DeadCommand::List { peer } => self.dead_list(peer).await?,
            DeadCommand::Retry { message_id, peer } => {
                let v = self
                    .call(
                        Method::POST,
                        FED_RETRY,
                        Some(json!({"messageId": message_id, "peer": peer})),
                    )
                    .await?;
                self.show(&v, |v| {
                    println!(
                        "{} queued again",
                        count(
                            v["requeued"].as_u64().unwrap_or(0),
                            "dead message",
                            "dead messages"
                        )
                    )
                });
            }
            DeadCommand::Drop {
                message_id,
                peer,
                all,
            } => {
                let v = self
                    .call(
                        Method::POST,
                        FED_DROP,
                        Some(json!({"messageId": message_id, "peer": peer, "all": all})),
                    )
                    .await?;
                self.show(&v, |v| {
                    println!(
                        "{} dropped",
                        count(
                            v["dropped"].as_u64().unwrap_or(0),
                            "dead message",
                            "dead messages"
                        )
                    )
                });
            }
        }
        Ok(())
    }

    pub(crate) async fn peers(&self, command: PeersCommand) -> Result<(), Failure> {
        let (v, done) = match command {
            PeersCommand::List => {
                let v = self.call(Method::GET, FED_PEERS, None).await?;
                self.show(&v, |v| {
                    println!(
                        "{:<36}  {:<9}  {:<32}  {:<64}  ALLOW",
                        "INSTANCE", "STATUS", "BASE URL", "FINGERPRINT"
                    );
                    for p in items(&v["peers"]) {
                        println!(
                            "{:<36}  {:<9}  {:<32}  {:<64}  {}",
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
                        .map_err(|e| Failure::new(format!("reading {}: {e}", path.display())))?,
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
            PeersCommand::Witness {
                instance_id,
                switch,
            } => return self.peer_witness(&instance_id, switch).await,
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

    async fn peer_witness(&self, instance_id: &str, switch: Switch) -> Result<(), Failure> {
        let path = format!("/peers/{}/witness", segment(instance_id));
        let on = switch == Switch::On;
        let v = self
            .call(Method::POST, &path, Some(json!({"witness": on})))
            .await?;
        self.show(&v, |v| {
            println!(
                "peer {} {} this instance's heads log",
                text(&v["instanceId"]),
                if v["witness"] == true {
                    "witnesses"
                } else {
                    "no longer witnesses"
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
}

/// A signed note as it is, one line per line, each made inert: the notes
/// come from a peer, and an operator may copy one out to check it.
fn note_lines(note: &Value) -> String {
    match note.as_str() {
        Some(note) => note
            .split('\n')
            .map(|line| logbook_base::terminal::inert(line))
            .collect::<Vec<_>>()
            .join("\n"),
        None => text(note),
    }
}
