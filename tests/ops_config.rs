//! The config layers: a partial file, `logbook config check` and its
//! sources, log filters checked at start, on reload and by `admin
//! log-level`, `--listen` with a host name, and a failed first start that
//! leaves the data dir as it found it.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, DaemonOpts, TEST_SECRET, logbook, run};
use serde_json::{Value, json};

const TOKEN: &str = "lbk_config-test-token";

fn token_hash() -> String {
    logbook_base::hex::encode(&logbook_base::canonical::sha256(TOKEN.as_bytes()))
}

/// `logbook serve` in `dir` with the test secret and `args`; no RUST_LOG
/// unless `env` sets it.
fn serve(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = logbook();
    command
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("EVENT_BUS_HMAC_SECRET")
        .env_remove("SESSION_SECRET")
        .env("LOGBOOK_HMAC_SECRET", TEST_SECRET);
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// Spawns `command` and waits (bounded) for its JSON "logbook listening"
/// line; returns the child and the address.
fn spawn_listening(mut command: Command) -> (Child, SocketAddr) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning logbook");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[logbook] {line}");
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "logbook listening" {
                let _ = tx.send(v["fields"]["addr"].as_str().unwrap().parse().unwrap());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(addr) => (child, addr),
        Err(_) => {
            let _ = child.kill();
            panic!("the daemon did not report listening");
        }
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_config_holding_only_a_token_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nformat = \"json\"\n\n[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"read\", \"append\"]\n",
            token_hash()
        ),
    )
    .unwrap();
    let (child, addr) = spawn_listening(serve(
        dir.path(),
        &["--config", "config.toml", "--listen", "127.0.0.1:0"],
        &[],
    ));
    let client = common::client();
    let url = format!("http://{addr}/api/plans/{}/events", common::new_plan());
    let body = json!({"type": "step.started", "actor": "t", "payload": {}});
    let refused = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(refused.status(), 401, "the file's token is in force");
    let ok = client
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    assert!(dir.path().join("data").is_dir(), "the default data dir");
    stop(child);
}

#[tokio::test]
async fn config_check_names_the_source_of_each_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("partial.toml");
    std::fs::write(
        &file,
        format!(
            "[sse]\nkeepalive_secs = 5\n\n[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"read\"]\n",
            token_hash()
        ),
    )
    .unwrap();
    let check = |json: bool| {
        let mut command = logbook();
        command
            .args(["config", "check", "--config"])
            .arg(&file)
            .args(["--data-dir", "/nonexistent/logbook-data"])
            .env("RUST_LOG", "warn,logbook=debug")
            .env("LOGBOOK_HMAC_SECRET", TEST_SECRET);
        if json {
            command.arg("--json");
        }
        run(command)
    };
    let out = check(false).await;
    let text = out.ok("config check");
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
            .to_string()
    };
    assert!(line("sse.keepalive_secs").ends_with("# file"), "{text}");
    assert!(line("sse.max_streams").ends_with("# default"), "{text}");
    assert!(
        line("log.level").contains("\"warn,logbook=debug\"")
            && line("log.level").ends_with("# environment $RUST_LOG"),
        "{text}"
    );
    assert!(
        line("server.data_dir").ends_with("# flag --data-dir"),
        "{text}"
    );
    assert!(line("auth.tokens").contains("<redacted>"), "{text}");
    assert!(!text.contains(&token_hash()), "the token hash is printed");
    assert!(!text.contains(TEST_SECRET), "the HMAC secret is printed");
    assert!(text.contains("environment $LOGBOOK_HMAC_SECRET"), "{text}");

    let v = check(true).await.json();
    assert_eq!(v["valid"], true);
    let source = |key: &str| {
        v["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .unwrap_or_else(|| panic!("no {key}: {v}"))
            .clone()
    };
    assert_eq!(source("sse.keepalive_secs")["source"], "file");
    assert_eq!(source("sse.keepalive_secs")["value"], 5);
    assert_eq!(source("limits.max_json_depth")["source"], "default");
    assert_eq!(source("log.level")["source"], "environment");
    assert_eq!(source("server.data_dir")["source"], "flag");
    assert!(!v.to_string().contains(&token_hash()));
}

#[tokio::test]
async fn unknown_keys_and_bad_levels_are_refused_by_check_and_start() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needles) in [
        (
            "[sse]\nkeepalive = 3\n",
            &["unknown field `keepalive`", "bad.toml"][..],
        ),
        (
            "[sse]\nkeepalive_secs = 3601\n",
            &["sse.keepalive_secs must be between 1 and 3600"][..],
        ),
        // The hash of an empty token (`$TOKEN` unset when it was hashed),
        // and one token listed twice.
        (
            "[[auth.tokens]]\nname = \"a\"\nsha256 = \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"\nscopes = [\"read\"]\n",
            &["auth.tokens[a].sha256 is the SHA-256 of the empty string"][..],
        ),
        (
            "[[auth.tokens]]\nname = \"a\"\nsha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\nscopes = [\"read\"]\n\n[[auth.tokens]]\nname = \"b\"\nsha256 = \"9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\"\nscopes = [\"read\", \"append\"]\n",
            &["auth.tokens[b].sha256 is another token's"][..],
        ),
        (
            "[log]\nlevel = \"inf\"\n",
            &[
                "log.level",
                "\"inf\" is not a level",
                "trace, debug, info, warn, error, off",
            ][..],
        ),
    ] {
        std::fs::write(dir.path().join("bad.toml"), text).unwrap();
        let mut command = logbook();
        command
            .args(["config", "check", "--config", "bad.toml"])
            .current_dir(dir.path());
        let out = run(command).await;
        assert_eq!(out.status.code(), Some(1), "{text}: {}", out.stderr);
        for n in needles {
            assert!(out.stderr.contains(n), "{text}: {n} in {}", out.stderr);
        }

        let out = run(serve(
            dir.path(),
            &["--config", "bad.toml", "--listen", "127.0.0.1:0"],
            &[],
        ))
        .await;
        assert_eq!(out.status.code(), Some(2), "{text}: {}", out.stderr);
        for n in needles {
            assert_eq!(
                out.stderr.matches(n).count(),
                1,
                "{n} once in: {}",
                out.stderr
            );
        }
        assert!(!dir.path().join("data").exists(), "nothing written");
    }
    // RUST_LOG is checked as strictly as log.level.
    let out = run(serve(
        dir.path(),
        &["--listen", "127.0.0.1:0"],
        &[("RUST_LOG", "loud")],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("$RUST_LOG: \"loud\" is not a level"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_bad_level_on_reload_or_over_admin_keeps_the_old_one() {
    let daemon = Daemon::start(DaemonOpts::default().unset_env("RUST_LOG"));
    assert_eq!(daemon.admin_json(&["log-level"]).await["level"], "info");

    let bad = DaemonOpts::default().replace("level = \"info\"", "level = \"inf\"");
    std::fs::write(daemon.config_path(), bad.config_text()).unwrap();
    daemon.signal("HUP");
    assert!(
        daemon
            .wait_log(
                &["reload rejected", "log.level", "trace, debug, info"],
                Duration::from_secs(10)
            )
            .await,
        "the rejection names log.level and the valid levels"
    );
    assert_eq!(daemon.admin_json(&["log-level"]).await["level"], "info");
    // Logging still works: the old filter is in force.
    common::fill(&daemon, common::new_plan(), 1).await;

    for level in ["inf", "loud"] {
        let out = daemon.admin(&["log-level", level]).await;
        assert!(!out.success(), "log-level {level} was accepted");
        assert!(
            out.stderr.contains("trace, debug, info, warn, error, off"),
            "{}",
            out.stderr
        );
        assert_eq!(daemon.admin_json(&["log-level"]).await["level"], "info");
    }
}

#[tokio::test]
async fn listen_takes_a_host_name() {
    let daemon = Daemon::start(DaemonOpts::default().listen("localhost:0"));
    assert!(daemon.addr.ip().is_loopback(), "{}", daemon.addr);
    common::fill(&daemon, common::new_plan(), 1).await;

    let dir = tempfile::tempdir().unwrap();
    let out = run(serve(
        dir.path(),
        &["--listen", "no-such-host.invalid:7411"],
        &[],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("use an IP address"), "{}", out.stderr);
}

#[tokio::test]
async fn a_failed_first_start_leaves_the_data_dir_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();

    // Port in use: the data dir is never created.
    let out = run(serve(
        dir.path(),
        &["--listen", &port, "--data-dir", "new/data"],
        &[],
    ))
    .await;
    assert!(!out.success());
    assert_eq!(
        out.stderr.matches("binding").count(),
        1,
        "once: {}",
        out.stderr
    );
    assert!(!dir.path().join("new").exists(), "the data dir was created");

    // An empty dir (as systemd's StateDirectory= makes) stays empty.
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let out = run(serve(
        dir.path(),
        &["--listen", &port, "--data-dir", "empty"],
        &[],
    ))
    .await;
    assert!(!out.success());
    assert_eq!(
        std::fs::read_dir(dir.path().join("empty")).unwrap().count(),
        0
    );

    // A refusal after the store opened (no token for a public address):
    // what the start made (keys, journal) is removed again.
    let out = run(serve(
        dir.path(),
        &["--listen", "0.0.0.0:0", "--data-dir", "public"],
        &[],
    ))
    .await;
    assert!(!out.success());
    assert_eq!(
        out.stderr.matches("without authentication").count(),
        1,
        "once: {}",
        out.stderr
    );
    // Its log said to back up the key it generated: it also says that key
    // is gone with the rest.
    assert!(
        out.stderr.contains("this first start failed"),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join("public").exists(), "the data dir was left");
    drop(taken);
}

/// A public `listen` under `auth.required = false` is refused by the start
/// whatever the store holds, so `config check` refuses it too, also beside
/// an existing journal (whose stored tokens excuse only "auto").
#[tokio::test]
async fn config_check_refuses_what_the_start_refuses_beside_a_journal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut create = logbook();
    create
        .args(["tokens", "create", "--data-dir"])
        .arg(&data)
        .args(["--scope", "read", "--name", "t"]);
    run(create).await.ok("tokens create");
    let check = |required: &'static str| {
        let file = dir.path().join(format!("{required}.toml"));
        std::fs::write(&file, format!("[auth]\nrequired = {required}\n")).unwrap();
        let mut command = logbook();
        command
            .args(["config", "check", "--config"])
            .arg(&file)
            .args(["--listen", "0.0.0.0:0", "--data-dir"])
            .arg(&data)
            .env("LOGBOOK_HMAC_SECRET", TEST_SECRET);
        run(command)
    };
    let refused = check("false").await;
    assert!(!refused.success(), "{}{}", refused.stdout, refused.stderr);
    assert!(
        format!("{}{}", refused.stdout, refused.stderr).contains("auth.required = false"),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
    let noted = check("\"auto\"").await;
    let text = noted.ok("config check with auto");
    assert!(text.contains("unless the journal in"), "{text}");
}
