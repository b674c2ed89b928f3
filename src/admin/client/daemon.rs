//! Commands about the daemon itself: status, tokens, the log level, key
//! rotation and config reload.

use hyper::Method;
use serde_json::json;

use super::args::{KeysCommand, TokensCommand};
use super::output::{count, items, join, pretty, print_secret_once, print_status, text};
use super::transport::segment;
use super::{Client, Failure};

impl Client {
    pub(crate) async fn status(&self) -> Result<(), Failure> {
        let v = self.call(Method::GET, "/status", None).await?;
        self.show(&v, print_status);
        Ok(())
    }

    pub(crate) async fn tokens(&self, command: TokensCommand) -> Result<(), Failure> {
        match command {
            TokensCommand::Create { scope, name } => {
                let v = self
                    .call(
                        Method::POST,
                        "/tokens",
                        Some(json!({"scopes": scope, "name": name})),
                    )
                    .await?;
                // Either form holds the token, shown only this once.
                let name = v["name"].as_str().unwrap_or_default();
                if self.json {
                    print_secret_once(&pretty(&v), name);
                } else {
                    eprintln!(
                        "created token {:?} (id {}, scopes {}); it is shown only this once:",
                        text(&v["name"]),
                        text(&v["id"]),
                        join(&v["scopes"])
                    );
                    print_secret_once(v["token"].as_str().unwrap_or_default(), name);
                }
            }
            TokensCommand::List => {
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
            TokensCommand::Revoke { name_or_id } => {
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
        }
        Ok(())
    }

    pub(crate) async fn log_level(&self, level: Option<String>) -> Result<(), Failure> {
        let v = match level {
            Some(level) => {
                self.call(Method::PUT, "/log-level", Some(json!({"level": level})))
                    .await?
            }
            None => self.call(Method::GET, "/log-level", None).await?,
        };
        self.show(&v, |v| println!("log level: {}", text(&v["level"])));
        Ok(())
    }

    pub(crate) async fn keys(&self, command: KeysCommand) -> Result<(), Failure> {
        match command {
            KeysCommand::RotateHmac => {
                let v = self.call(Method::POST, "/keys/rotate-hmac", None).await?;
                self.show(&v, |v| {
                    println!(
                        "HMAC key rotated: new events use key {} (was {}); old events still verify",
                        text(&v["new_key_id"]),
                        text(&v["old_key_id"])
                    );
                });
            }
            KeysCommand::RotateRsa => {
                let v = self.call(Method::POST, "/keys/rotate-rsa", None).await?;
                self.show(&v, |v| {
                    println!(
                        "federation key rotated: key {} (was {}), fingerprint {}; announced to {}",
                        text(&v["new_key_id"]),
                        text(&v["old_key_id"]),
                        text(&v["fingerprint"]),
                        count(v["peers_notified"].as_u64().unwrap_or(0), "peer", "peers")
                    );
                });
            }
            KeysCommand::RotateLog => {
                let v = self.call(Method::POST, "/keys/rotate-log", None).await?;
                self.show(&v, |v| {
                    println!(
                        "log key rotated: checkpoints are signed by {} (was {}, still listed as retired)",
                        text(&v["new_vkey"]),
                        text(&v["old_vkey"])
                    );
                });
            }
        }
        Ok(())
    }

    pub(crate) async fn reload(&self) -> Result<(), Failure> {
        let v = self.call(Method::POST, "/reload", None).await?;
        self.show(&v, |v| {
            let none = |key: &str| v[key].as_array().is_none_or(Vec::is_empty);
            if none("applied") {
                println!("configuration reloaded: nothing changed that applies now");
            } else {
                println!("configuration reloaded: changed {}", join(&v["applied"]));
            }
            if !none("needs_restart") {
                println!(
                    "changed in the file, but read only at start (restart to apply): {}",
                    join(&v["needs_restart"])
                );
            }
        });
        Ok(())
    }
}
