//! How answers are shown: the daemon's JSON with `--json`, else text for
//! people.

use logbook_base::terminal::{inert, inert_json};
use serde_json::Value;

use super::Client;

impl Client {
    pub(super) fn print_json(&self, value: &Value) {
        println!("{}", pretty(value));
    }

    /// Prints `v` as JSON with --json, else as `human` renders it for people.
    pub(crate) fn show(&self, v: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            self.print_json(v);
        } else {
            human(v);
        }
    }

    pub(crate) fn print_object(&self, v: &Value) {
        self.show(v, |v| {
            for (key, value) in v.as_object().into_iter().flatten() {
                println!("{key}: {}", text(value));
            }
        });
    }
}

/// Writes to stdout (the client's `println!` and `print!`). A reader that
/// went away ends the command at once and quietly, with the exit status a
/// shell gives a command killed by SIGPIPE (141); another failure is said
/// once.
pub(crate) fn print_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("logbook admin: writing the output: {e}");
        std::process::exit(1);
    }
}

/// Writes a secret that is shown only this once (a new token) and a
/// newline to stdout. If it cannot be written whole (a closed pipe: `|
/// head -0`), nobody has it: says so on stderr with how to revoke it, and
/// exits 1, rather than end as quietly as a listing cut short.
pub(crate) fn print_secret_once(secret: &str, name: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{secret}").and_then(|()| out.flush()) {
        eprintln!(
            "logbook: the new token {:?} could not be written to stdout ({e}), so nobody has it; revoke it (`logbook admin tokens revoke {}`) and create another",
            inert(name),
            inert(name)
        );
        std::process::exit(1);
    }
}

/// A value for people: strings unquoted, null as "-". What an appender or
/// a peer wrote cannot act on the terminal (`logbook_base::terminal`).
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => inert(s).into_owned(),
        Value::Null => "-".into(),
        other => compact(other),
    }
}

/// `v` as one line of JSON that cannot act on the terminal.
pub(crate) fn compact(v: &Value) -> String {
    inert_json(&v.to_string()).into_owned()
}

/// `v` as indented JSON that cannot act on the terminal.
pub(crate) fn pretty(v: &Value) -> String {
    inert_json(&serde_json::to_string_pretty(v).unwrap_or_default()).into_owned()
}

/// The elements of a JSON array; none for anything else.
pub(crate) fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

pub(crate) fn join(v: &Value) -> String {
    v.as_array()
        .map(|items| items.iter().map(text).collect::<Vec<_>>().join(","))
        .unwrap_or_else(|| text(v))
}

pub(crate) fn print_status(v: &Value) {
    // First and in capitals: a witness has seen a history of this instance
    // that it no longer serves.
    for name in items(&v["witnessing"]["refused"]) {
        println!(
            "WITNESS REFUSED: {} refuses this instance's heads log (a rollback or fork of this data dir; see `logbook admin witness evidence` on that witness)",
            text(name)
        );
    }
    // And as a witness: a peer's log showed this instance a history it
    // later contradicted.
    for log in items(&v["witness_for"]).filter(|l| l["evidence"].as_u64() > Some(0)) {
        println!(
            "EVIDENCE against {} (the heads log of peer {}): {} row(s), see `logbook admin witness evidence`",
            text(&log["origin"]),
            text(&log["owner"]),
            text(&log["evidence"])
        );
    }
    let lines = [
        ("version", text(&v["version"])),
        ("uptime", format!("{}s", text(&v["uptime_secs"]))),
        ("listen", join(&v["listen"])),
        ("admin socket", text(&v["admin_socket"])),
        ("data dir", text(&v["data_dir"])),
        ("plans", text(&v["plans"])),
        ("events", text(&v["events"])),
        ("last position", text(&v["last_position"])),
        ("disk bytes", disk_bytes(v)),
        (
            "peers",
            v["peers"].as_array().map_or(0, Vec::len).to_string(),
        ),
        ("queue depths", queue_depths(v)),
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
    print_witnessing(&v["witnessing"]);
    print_witness_for(&v["witness_for"]);
    if let Some(more) = v["witness_for_not_listed"].as_u64().filter(|n| *n > 0) {
        println!("  and {more} more without evidence, cosigned least recently: not listed");
    }
}

/// The peers' logs this instance witnesses: what it cosigned last of each.
fn print_witness_for(logs: &Value) {
    if items(logs).next().is_none() {
        println!("{:<13} no peer's log yet", "witness for");
        return;
    }
    println!("{:<13} the heads logs of peers", "witness for");
    for log in items(logs) {
        let evidence = match log["evidence"].as_u64() {
            Some(0) | None => "ok".to_string(),
            Some(n) => format!("EVIDENCE: {n} row(s)"),
        };
        let at = log["cosigned_at"].as_i64().map_or_else(
            || "never".to_string(),
            |ms| logbook_journal::event::Timestamp(ms).to_string(),
        );
        println!(
            "  {:<32} peer {:<16} size {:<8} cosigned at {:<24} {evidence}",
            text(&log["origin"]),
            text(&log["owner"]),
            text(&log["size"]),
            at
        );
    }
}

/// `disk_bytes`, and what it sums (`disk_files`): "N (journal.redb A, journal.wal B)".
fn disk_bytes(v: &Value) -> String {
    let files: Vec<String> = v["disk_files"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, bytes)| format!("{} {}", inert(name), text(bytes)))
        .collect();
    if files.is_empty() {
        return text(&v["disk_bytes"]);
    }
    format!("{} ({})", text(&v["disk_bytes"]), files.join(", "))
}

/// The writer's queue, then each peer's outbox: "writer 0; beta 20
/// queued, 1 dead; gamma 0 queued, 0 dead (suspended)".
fn queue_depths(v: &Value) -> String {
    let mut out = format!("writer {}", text(&v["queue_depths"]["writer"]));
    for p in items(&v["peers"]) {
        out.push_str(&format!(
            "; {} {} queued, {} dead",
            text(&p["peer"]),
            text(&p["queued"]),
            text(&p["dead"])
        ));
        if p["status"] != "active" {
            out.push_str(&format!(" ({})", text(&p["status"])));
        }
    }
    out
}

/// The witnessing lines of `status`: the quorum's age, then each witness
/// (its refusals are printed first of all, by `print_status`).
fn print_witnessing(w: &Value) {
    if items(&w["witnesses"]).next().is_none() {
        println!(
            "{:<13} quorum {}, but no witness: heads checkpoints are not witnessed (peers witness by default; see [[witnesses]])",
            "witnessing",
            text(&w["quorum"])
        );
        return;
    }
    let age = match w["quorum_age_secs"].as_u64() {
        Some(age) => format!("newest quorum checkpoint {age}s old"),
        None if w["nothing_to_witness"] == true => {
            "nothing to witness yet (no plan has events, so the heads log is empty)".to_string()
        }
        None => "no checkpoint has a quorum yet".to_string(),
    };
    let stale = if w["stale"] == true && w["quorum"] != 0 {
        " (STALE: warning)"
    } else {
        ""
    };
    println!(
        "{:<13} quorum {}, {age}{stale}",
        "witnessing",
        text(&w["quorum"])
    );
    for s in items(&w["witnesses"]) {
        let state = match (&s["refused"], &s["error"]) {
            (Value::String(r), _) => format!("REFUSED: {}", inert(r)),
            (_, Value::String(e)) => format!("failing: {}", inert(e)),
            _ => "ok".to_string(),
        };
        // Unix seconds, shown as the other times are (RFC 3339, UTC).
        let at = match s["cosigned_at"].as_i64() {
            Some(secs) if secs > 0 => {
                logbook_journal::event::Timestamp(secs.saturating_mul(1000)).to_string()
            }
            _ => "never".to_string(),
        };
        println!(
            "  {:<32} size {:<8} cosigned at {:<24} {state}",
            text(&s["name"]),
            text(&s["size"]),
            at
        );
    }
}

pub(crate) fn print_verify(v: &Value) {
    if v["chain_valid"] == true {
        println!(
            "{}: ok, {}, head signature {}",
            text(&v["plan_id"]),
            count(v["verified"].as_u64().unwrap_or(0), "event", "events"),
            text(&v["head_signature"])
        );
        if v["redacted"].as_u64().is_some_and(|n| n > 0) {
            println!("redacted: {}", text(&v["redacted"]));
        }
    } else {
        let reason = match v["missing_key_id"].as_str() {
            Some(id) => format!("missing-key {}: the keyring lacks this HMAC key", inert(id)),
            None => text(&v["broken_reason"]),
        };
        println!(
            "{}: BROKEN at seq {} ({reason}); {} verified before it",
            text(&v["plan_id"]),
            text(&v["broken_at"]),
            count(v["verified"].as_u64().unwrap_or(0), "event", "events")
        );
    }
}

/// `1 plan`, `2 plans`: a count with its noun in the right number.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A table for people: every column as wide as its widest cell, the last
/// one left ragged so that long values do not pad every line.
pub(crate) struct Table {
    header: Vec<&'static str>,
    /// Columns aligned to the right (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Column names; a name starting with `>` is right-aligned (the `>` is
    /// not printed).
    pub(crate) fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.iter().map(|h| h.trim_start_matches('>')).collect(),
            right: header.iter().map(|h| h.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        assert_eq!(
            cells.len(),
            self.header.len(),
            "a row has one cell per column"
        );
        self.rows.push(cells);
    }

    pub(crate) fn print(&self) {
        let mut out = String::new();
        self.render(&mut out);
        print!("{out}");
    }

    fn render(&self, out: &mut String) {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for cells in std::iter::once(&header).chain(&self.rows) {
            let last = cells.len() - 1;
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                if self.right[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if i < last {
                        line.push_str(&" ".repeat(pad));
                    }
                }
                if i < last {
                    line.push_str("  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// `s` cut to at most `max` characters, with `…` when something was cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    assert!(max > 0);
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_content() {
        let mut table = Table::new(&[">SEQ", "TYPE", "PAYLOAD"]);
        table.row(vec!["1".into(), "plan.created".into(), "{}".into()]);
        table.row(vec!["10".into(), "x".into(), "{\"a\":1}".into()]);
        let mut out = String::new();
        table.render(&mut out);
        assert_eq!(
            out,
            "SEQ  TYPE          PAYLOAD\n  1  plan.created  {}\n 10  x             {\"a\":1}\n"
        );
    }

    #[test]
    fn counts_and_truncation() {
        assert_eq!(count(1, "plan", "plans"), "1 plan");
        assert_eq!(count(0, "plan", "plans"), "0 plans");
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo world", 5), "héll…");
    }
}
