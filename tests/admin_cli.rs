//! The CLI for people: `admin events` (table, --json, --full, --type),
//! `admin tail` across a daemon restart, `plans delete` confirmation,
//! valid choices in errors, completions, the man page and the hint of an
//! unknown type.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Daemon, DaemonOpts, fill, logbook, new_plan, run, run_logbook};
use serde_json::{Value, json};

/// Longest wait for a line of `admin tail`.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_prints_an_aligned_table_json_and_whole_events() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan().to_string();
    daemon
        .append_ok(
            &plan,
            json!({"type": "plan.created", "actor": "alice", "payload": {"title": "x"}}),
        )
        .await;
    fill(&daemon, &plan, 2).await;
    let long = "y".repeat(200);
    daemon
        .append_ok(
            &plan,
            json!({"type": "step.completed", "payload": {"long": long}}),
        )
        .await;

    let table = daemon.admin_ok(&["events", &plan]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "a header and four rows: {table}");
    assert!(lines[0].starts_with("SEQ  TIME"), "{table}");
    // Every column starts where its header does: widths fit the content.
    for header in ["TIME", "TYPE", "ACTOR", "PAYLOAD"] {
        let at = lines[0].find(header).unwrap();
        for line in &lines[1..] {
            let before = &line[..at];
            assert!(
                before.ends_with("  ") && !line[at..].starts_with(' '),
                "{header} is not aligned in {line:?}:\n{table}"
            );
        }
    }
    assert!(lines[1].contains("plan.created") && lines[1].contains("alice"));
    assert!(lines[1].contains(r#"{"title":"x"}"#), "{table}");
    // No actor is shown as "-"; a long payload is cut short.
    assert!(lines[4].contains(" - "), "{table}");
    assert!(
        lines[4].ends_with('…') && !lines[4].contains(&long),
        "{table}"
    );

    let page = daemon.admin_json(&["events", &plan]).await;
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(page["next_after"], 4);
    assert_eq!(page["events"][3]["payload"]["long"], long.as_str());

    // --after and --limit page; --type keeps the matching types only.
    let page = daemon
        .admin_json(&["events", &plan, "--after", "1", "--limit", "2"])
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert_eq!(page["events"][0]["seq"], 2);
    assert_eq!(page["next_after"], 3);
    let page = daemon
        .admin_json(&["events", &plan, "--type", "plan.*"])
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["type"], "plan.created");
    let bad = daemon.admin(&["events", &plan, "--type", "plan..x"]).await;
    assert!(!bad.success() && bad.stderr.contains("--type"), "{bad:?}");

    // --full prints every field, the payload whole.
    let full = daemon.admin_ok(&["events", &plan, "--full"]).await;
    assert!(
        full.contains("\"payload_hash\"") && full.contains(&long),
        "{full}"
    );
}

/// An appender chooses the actor and the payload: printed for people or as
/// JSON, they must not reach the operator's terminal as control characters
/// (an escape that recolours or retitles it, a newline that fakes a row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_an_appender_chose_cannot_act_on_the_terminal() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let plan_id = new_plan();
    let plan = plan_id.to_string();
    let actor = "\u{1b}[31mRED\u{1b}]0;owned\u{7}admin\u{200b}";
    let fake_row = "a\n 9  2026-01-01T00:00:00Z  plan.approved  admin\rb";
    let payload = json!({"x": "\u{9b}2J\u{7f}\u{202e}dlrow"});
    // The API refuses control characters in an actor; a store written by
    // an earlier release may still hold them, so they are put there
    // through the store itself, signed as any append.
    let refused = daemon
        .append(&plan, json!({"type": "plan.created", "actor": actor}))
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert!(daemon.stop().success());
    let stored = payload.clone();
    common::with_offline_store(&daemon, move |store| {
        for (actor, payload) in [(actor, stored), (fake_row, json!({}))] {
            let request = logbook_journal::store::AppendRequest {
                plan_id,
                event_type: "plan.created".into(),
                actor: Some(actor.into()),
                payload: logbook_journal::chain::CanonicalPayload::new(&payload),
                expected_seq: None,
                idempotency: None,
            };
            tokio::runtime::Handle::current()
                .block_on(store.append(request))
                .expect("an append through the store");
        }
    })
    .await;
    daemon.restart();
    let acts = |text: &str| -> Vec<char> {
        text.chars()
            .filter(|&c| c != '\n' && logbook_base::terminal::acts_on_terminal(c))
            .collect()
    };

    let table = daemon.admin_ok(&["events", &plan]).await;
    assert_eq!(acts(&table), [] as [char; 0], "{table:?}");
    assert_eq!(table.lines().count(), 3, "a header and two rows: {table}");
    assert!(table.contains("\\u{1b}[31mRED"), "{table}");
    // An invisible character is shown too: `admin\u{200b}` is not `admin`.
    assert!(table.contains("admin\\u{200b}"), "{table}");
    assert!(!table.contains('\u{200b}'), "{table}");
    assert!(table.contains("a\\u{a} 9"), "{table}");
    let full = daemon.admin_ok(&["events", &plan, "--full"]).await;
    assert_eq!(acts(&full), [] as [char; 0], "{full:?}");
    let page = daemon.admin_ok(&["events", &plan, "--json"]).await;
    assert_eq!(acts(&page), [] as [char; 0], "{page:?}");
    // Escaped as JSON escapes: the same values.
    let page: Value = serde_json::from_str(&page).unwrap_or_else(|e| panic!("{e}: {page}"));
    assert_eq!(page["events"][0]["actor"], actor);
    assert_eq!(page["events"][0]["payload"], payload);

    for options in [&[][..], &["--json"][..]] {
        let (mut child, rx) = spawn_tail_as(&daemon, options, &[&plan, "--after", "0"]);
        let lines: Vec<String> = (0..2)
            .map(|_| rx.recv_timeout(LINE_TIMEOUT).expect("a tail line"))
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        for line in &lines {
            assert_eq!(acts(line), [] as [char; 0], "{options:?}: {line:?}");
        }
        if options.is_empty() {
            assert!(lines[1].contains("a\\u{a} 9"), "{lines:?}");
        } else {
            let event: Value = serde_json::from_str(&lines[0]).unwrap();
            assert_eq!(event["actor"], actor);
        }
    }
}

/// Output piped into a reader that leaves early (`| head -1`) ends the
/// command quietly, with SIGPIPE's status, not with a panic's backtrace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_leaves_early_ends_the_command_quietly() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan().to_string();
    fill(&daemon, &plan, 600).await;
    // About 180 KiB of output: more than a pipe holds.
    let mut child = logbook()
        .arg("admin")
        .arg("--socket")
        .arg(daemon.admin_socket())
        .args(["events", &plan, "--full", "--limit", "600"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "{", "{first}");
    // The reader is gone (dropped above): the next writes fail.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// A new token that cannot be written (stdout a pipe nobody reads) is
/// never seen by anyone: the command says so, names how to revoke it and
/// fails, for the daemon's `admin tokens create` and the offline one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_cannot_be_shown_is_said_to_be_lost() {
    let daemon = Daemon::start(DaemonOpts::default());
    let offline = tempfile::tempdir().unwrap();
    let socket = daemon.admin_socket();
    let online = [
        "admin",
        "--socket",
        socket.to_str().unwrap(),
        "tokens",
        "create",
    ];
    let online_json = [
        "admin",
        "--json",
        "--socket",
        socket.to_str().unwrap(),
        "tokens",
        "create",
    ];
    let offline_args = [
        "tokens",
        "create",
        "--data-dir",
        offline.path().to_str().unwrap(),
    ];
    for (i, args) in [&online[..], &online_json[..], &offline_args[..]]
        .into_iter()
        .enumerate()
    {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = logbook()
            .args(args)
            .args(["--scope", "read", "--name", &format!("ci{i}")])
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("could not be written to stdout")
                && stderr.contains(&format!("logbook admin tokens revoke ci{i}")),
            "{args:?}: {stderr}"
        );
    }
}

/// `logbook admin --json tail ARGS`, its stdout lines arriving on a channel.
fn spawn_tail(daemon: &Daemon, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    spawn_tail_as(daemon, &["--json"], args)
}

/// `logbook admin OPTIONS tail ARGS`, its stdout lines arriving on a channel.
fn spawn_tail_as(
    daemon: &Daemon,
    options: &[&str],
    args: &[&str],
) -> (Child, mpsc::Receiver<String>) {
    let mut child = logbook()
        .arg("admin")
        .arg("--socket")
        .arg(daemon.admin_socket())
        .args(options)
        .arg("tail")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning admin tail");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Reads tail lines until `n` events arrived in all (into `seen`).
fn read_until(rx: &mpsc::Receiver<String>, seen: &mut Vec<Value>, n: usize) {
    let deadline = Instant::now() + LINE_TIMEOUT;
    while seen.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("tail printed {} of {n} events: {seen:?}", seen.len()));
        seen.push(serde_json::from_str(&line).expect("tail --json prints JSON lines"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_resumes_across_a_restart_without_gap_or_duplicate() {
    let mut daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan().to_string();
    let other = new_plan().to_string();
    fill(&daemon, &plan, 3).await;
    let (mut tail, rx) = spawn_tail(&daemon, &[&plan, "--after", "0"]);
    let mut seen = Vec::new();
    read_until(&rx, &mut seen, 3);

    // The daemon goes away and comes back on the same data dir and socket.
    tokio::task::block_in_place(|| daemon.restart());
    fill(&daemon, &other, 1).await;
    fill(&daemon, &plan, 3).await;
    read_until(&rx, &mut seen, 6);
    // One more after the resumed ones: a duplicate would have come first.
    fill(&daemon, &plan, 1).await;
    read_until(&rx, &mut seen, 7);
    let _ = tail.kill();
    let _ = tail.wait();

    let seqs: Vec<u64> = seen.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7], "{seen:?}");
    assert!(seen.iter().all(|e| e["plan_id"] == plan.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_all_filters_by_type_from_the_head() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan().to_string();
    // Before the tail starts: not shown, it starts at the head.
    fill(&daemon, &plan, 2).await;
    let (mut tail, rx) = spawn_tail(&daemon, &["--all", "--type", "plan.*"]);
    // The tail reads the head when it starts; wait until it streams.
    let deadline = Instant::now() + LINE_TIMEOUT;
    loop {
        let status = daemon.admin_json(&["status"]).await;
        if status["sse_clients"].as_u64() > Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "the tail never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon
        .append_ok(&plan, json!({"type": "plan.submitted", "payload": {}}))
        .await;
    fill(&daemon, &plan, 1).await;
    daemon
        .append_ok(&plan, json!({"type": "plan.approved", "payload": {}}))
        .await;
    let mut seen = Vec::new();
    read_until(&rx, &mut seen, 2);
    let _ = tail.kill();
    let _ = tail.wait();
    let types: Vec<&str> = seen.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["plan.submitted", "plan.approved"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_without_a_terminal_needs_yes() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan().to_string();
    fill(&daemon, &plan, 1).await;
    // The harness runs commands with stdin from /dev/null: no terminal.
    let refused = daemon.admin(&["plans", "delete", &plan]).await;
    assert!(!refused.success(), "{refused:?}");
    assert!(
        refused.stderr.contains("not a terminal") && refused.stderr.contains("--yes"),
        "{refused:?}"
    );
    assert!(
        daemon.head(&plan).await.is_some(),
        "the plan is still there"
    );
    let deleted = daemon.admin_ok(&["plans", "delete", "--yes", &plan]).await;
    assert!(deleted.contains("(1 event,"), "{deleted}");
    assert!(daemon.head(&plan).await.is_none());
    // A second delete, or a show, says the plan was deleted.
    for args in [
        vec!["plans", "delete", "--yes", &plan],
        vec!["plans", "show", &plan],
    ] {
        let again = daemon.admin(&args).await;
        assert!(!again.success());
        let text = format!("{}{}", again.stdout, again.stderr);
        assert!(
            text.contains(&format!(
                "plan {plan} was deleted at size 1 (system journal seq"
            )),
            "{text}"
        );
    }
    // For scripts, the refusal is the daemon's problem+json on stdout.
    let json = daemon.admin(&["--json", "plans", "show", &plan]).await;
    assert!(!json.success(), "{json:?}");
    let problem: Value =
        serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {json:?}"));
    assert_eq!(
        problem["type"], "urn:logbook:problem:plan-deleted",
        "{problem}"
    );
    assert!(problem["tombstone_seq"].as_u64().is_some(), "{problem}");
    assert!(json.stderr.contains("(410)"), "{json:?}");
}

/// `logbook admin plans delete PLAN` on a pseudo-terminal (util-linux
/// `script`), answering `answer`; `None` when `script` is missing.
async fn delete_on_a_terminal(daemon: &Daemon, plan: &str, answer: &str) -> Option<String> {
    let probe = std::process::Command::new("script")
        .arg("--version")
        .output();
    if probe.is_err() {
        eprintln!("no `script` here to make a terminal; skipping");
        return None;
    }
    let command = format!(
        "{} admin --socket {} plans delete {plan}",
        env!("CARGO_BIN_EXE_logbook"),
        daemon.admin_socket().display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning script");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{answer}\n").as_bytes())
        .unwrap();
    let wait = tokio::task::spawn_blocking(move || child.wait_with_output());
    let out = tokio::time::timeout(LINE_TIMEOUT, wait)
        .await
        .expect("plans delete on a terminal did not finish")
        .unwrap()
        .unwrap();
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_on_a_terminal_asks_first() {
    let daemon = Daemon::start(DaemonOpts::default());
    let plan = new_plan().to_string();
    fill(&daemon, &plan, 2).await;
    let Some(no) = delete_on_a_terminal(&daemon, &plan, "n").await else {
        return;
    };
    assert!(no.contains("and its 2 events for good? [y/N]"), "{no}");
    assert!(no.contains("not deleted"), "{no}");
    assert!(daemon.head(&plan).await.is_some());
    let yes = delete_on_a_terminal(&daemon, &plan, "y").await.unwrap();
    assert!(yes.contains("deleted plan"), "{yes}");
    assert!(daemon.head(&plan).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_agree_with_their_nouns_and_bad_choices_are_listed() {
    let daemon = Daemon::start(DaemonOpts::default());
    fill(&daemon, new_plan(), 1).await;
    let all = daemon.admin_ok(&["verify", "--all"]).await;
    let verified: u64 = all
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{all}"));
    let noun = if verified == 1 { "plan" } else { "plans" };
    assert!(
        all.contains(&format!("{verified} {noun} verified")),
        "{all}"
    );

    let bad = daemon
        .admin(&["tokens", "create", "--scope", "read,bogus"])
        .await;
    assert!(!bad.success());
    assert!(
        bad.stderr.contains("bogus") && bad.stderr.contains("read, append, admin"),
        "{bad:?}"
    );
    // The daemon's own answer names the choices in words too, for a body
    // and for a query string.
    let mut curl = std::process::Command::new("curl");
    curl.arg("-s")
        .arg("--unix-socket")
        .arg(daemon.admin_socket())
        .args(["-H", "content-type: application/json"])
        .args(["-d", r#"{"scopes":["bogus"]}"#, "http://logbook/tokens"]);
    let answer: Value = serde_json::from_str(&run(curl).await.ok("curl")).unwrap();
    assert_eq!(
        answer["detail"],
        "\"bogus\" is not a valid value; the valid values are: read, append, admin"
    );
    let resp = daemon.get_json("/api/events/stream?type=plan.*").await;
    assert_eq!(resp.status, 400);
    let detail: Value = serde_json::from_str(&resp.text).unwrap();
    let detail = detail["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("\"type\" is not a known query parameter") && detail.contains("types"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_type_says_how_to_register_it() {
    let daemon = Daemon::start(DaemonOpts::default());
    let resp = daemon
        .append(new_plan(), json!({"type": "audit.note", "payload": {}}))
        .await;
    assert_eq!(resp.status, 422, "{}", resp.text);
    let body: Value = serde_json::from_str(&resp.text).unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(body["type"].as_str().unwrap().ends_with("unknown-type"));
    assert!(
        detail.contains("[[registry.types]]") && detail.contains("strict = false"),
        "{detail}"
    );
}

#[tokio::test]
async fn completions_and_the_man_page_are_printed() {
    let bash = run_logbook(["completions", "bash"]).await;
    let script = bash.ok("completions bash");
    assert!(
        script.contains("_logbook") && script.contains("complete "),
        "{script}"
    );
    assert!(script.contains("tail") && script.contains("events"));
    let bad = run_logbook(["completions", "tcsh"]).await;
    assert!(!bad.success() && bad.stderr.contains("bash"), "{bad:?}");

    let man = run_logbook(["man"]).await.ok("man");
    assert!(
        man.starts_with(".ie") || man.contains(".TH logbook"),
        "{man}"
    );
    assert!(man.contains("completions"), "{man}");
}
