//! Plan commands: list, show, delete, verify, export, and the store backup.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use hyper::Method;
use serde_json::json;

use super::args::PlansCommand;
use super::output::{count, items, print_verify, text};
use super::transport::{copy_body, segment};
use super::{Client, Failure};

impl Client {
    pub(crate) async fn plans(&self, command: PlansCommand) -> Result<(), Failure> {
        match command {
            PlansCommand::List => {
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
            PlansCommand::Show { plan } => {
                let v = self
                    .call(Method::GET, &format!("/plans/{}", segment(&plan)), None)
                    .await?;
                self.print_object(&v);
            }
            PlansCommand::Delete { plan, yes } => {
                if !yes && !confirm_delete(self, &plan).await? {
                    return Err(Failure::new(format!("plan {plan} not deleted")));
                }
                let v = self
                    .call(Method::DELETE, &format!("/plans/{}", segment(&plan)), None)
                    .await?;
                self.show(&v, |v| {
                    println!(
                        "deleted plan {} ({}, head seq {}); tombstone at system journal seq {}",
                        text(&v["plan_id"]),
                        count(v["deleted_events"].as_u64().unwrap_or(0), "event", "events"),
                        text(&v["head_seq"]),
                        text(&v["tombstone"]["seq"])
                    );
                });
            }
        }
        Ok(())
    }

    pub(crate) async fn verify(&self, plan: &str) -> Result<ExitCode, Failure> {
        let v = self
            .call(
                Method::POST,
                &format!("/plans/{}/verify", segment(plan)),
                None,
            )
            .await?;
        self.show(&v, print_verify);
        if v["chain_valid"] != true {
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Verifies plan by plan, so a terminal can show progress.
    pub(crate) async fn verify_all(&self) -> Result<ExitCode, Failure> {
        let list = self.call(Method::GET, "/plans", None).await?;
        let plans: Vec<String> = items(&list["plans"]).map(|p| text(&p["plan_id"])).collect();
        let progress = std::io::stderr().is_terminal() && !self.json;
        let mut results = Vec::new();
        let mut broken = 0;
        for (i, plan) in plans.iter().enumerate() {
            if progress {
                eprint!(
                    "\rverifying {}/{}",
                    i + 1,
                    count(plans.len() as u64, "plan", "plans")
                );
            }
            // A plan deleted since the listing is not a failure.
            let v = match self
                .call(Method::POST, &format!("/plans/{plan}/verify"), None)
                .await
            {
                Ok(v) => v,
                Err(e) if plan_gone(&e) => continue,
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
            println!(
                "{} verified, {broken} broken",
                count(results.len() as u64, "plan", "plans")
            );
        });
        Ok(if broken == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    pub(crate) async fn export(
        &self,
        plan: &str,
        checkpoint: Option<&Path>,
    ) -> Result<(), Failure> {
        let mut body = self
            .open(Method::GET, &format!("/plans/{}/export", segment(plan)))
            .await?;
        let mut out = LineCount(std::io::stdout().lock(), 0);
        copy_body(&mut body, &mut out, "export").await?;
        out.flush()?;
        let Some(file) = checkpoint else {
            return Ok(());
        };
        // The checkpoint of exactly the events written: one per line.
        let path = format!("/plans/{}/checkpoint?size={}", segment(plan), out.1);
        let mut note = self.open(Method::GET, &path).await?;
        let mut text = Vec::new();
        copy_body(&mut note, &mut text, "checkpoint").await?;
        std::fs::write(file, text)
            .map_err(|e| Failure::new(format!("writing {}: {e}", file.display())))?;
        Ok(())
    }

    pub(crate) async fn redact(&self, plan: &str, seq: u64, reason: &str) -> Result<(), Failure> {
        let path = format!("/plans/{}/events/{seq}/redact", segment(plan));
        let v = self
            .call(Method::POST, &path, Some(json!({"reason": reason})))
            .await?;
        self.show(&v, |v| {
            println!(
                "redacted {}/{}; recorded at system journal seq {}",
                text(&v["plan_id"]),
                text(&v["seq"]),
                text(&v["record"]["seq"])
            );
        });
        Ok(())
    }

    pub(crate) async fn compact(&self) -> Result<(), Failure> {
        let v = self.call(Method::POST, "/compact", None).await?;
        self.show(&v, |v| {
            println!(
                "compacted: {} bytes before, {} after ({})",
                text(&v["bytes_before"]),
                text(&v["bytes_after"]),
                count(v["rows"].as_u64().unwrap_or(0), "row", "rows")
            );
        });
        Ok(())
    }

    pub(crate) async fn backup(&self, file: &Path, without_keys: bool) -> Result<(), Failure> {
        if file.exists() {
            return Err(Failure::new(format!("{} already exists", file.display())));
        }
        let partial = file.with_extension("partial");
        let path = match without_keys {
            true => "/backup?keys=false",
            false => "/backup",
        };
        let mut body = self.open(Method::POST, path).await?;
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
                let written = json!({
                    "file": file.display().to_string(),
                    "bytes": bytes,
                    "keys": !without_keys,
                });
                self.show(&written, |_| {
                    let keys = match without_keys {
                        true => "without keys",
                        false => "with the key files",
                    };
                    println!(
                        "backup written to {} ({bytes} bytes, {keys})",
                        file.display()
                    );
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

/// A writer that counts the newlines passing through it.
struct LineCount<W>(W, u64);

impl<W: Write> Write for LineCount<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1 += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Asks on the terminal before a deletion; refuses outright when there is
/// no terminal to ask (a script must say `--yes`).
async fn confirm_delete(client: &Client, plan: &str) -> Result<bool, Failure> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(Failure::new(format!(
            "refusing to delete plan {plan} without confirmation: stdin is not a terminal; pass --yes to delete it"
        )));
    }
    let head = client
        .call(Method::GET, &format!("/plans/{}", segment(plan)), None)
        .await?;
    let events = count(head["count"].as_u64().unwrap_or(0), "event", "events");
    eprint!("delete plan {plan} and its {events} for good? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// A refusal saying the plan is not there any more: 410 for a plan deleted
/// since the listing (404 from a daemon before 410 was answered).
fn plan_gone(failure: &Failure) -> bool {
    let status = failure.problem.as_ref().and_then(|p| p["status"].as_u64());
    matches!(status, Some(404 | 410))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_deleted_since_the_listing_is_gone_and_other_refusals_are_not() {
        let refusal = |status: u64| Failure {
            message: format!("refused ({status})"),
            problem: Some(serde_json::json!({"status": status})),
        };
        for (status, gone) in [(410, true), (404, true), (503, false), (401, false)] {
            assert_eq!(plan_gone(&refusal(status)), gone, "{status}");
        }
        // A failure that is no refusal of the daemon's (a lost connection).
        assert!(!plan_gone(&Failure::new("the plan (410)".into())));
    }
}
