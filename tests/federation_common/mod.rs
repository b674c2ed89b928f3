//! Harness for the federation tests: several real `logbook` daemons on
//! loopback ports, each with its own data dir, instance id and RSA key, and
//! small HTTP helpers with bounded waits.

#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use logbook_federation::identity;
use rsa::PrivateKey;
use serde_json::Value;

/// Longest wait for a daemon to answer /healthz after starting.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A test key, generated once and cached under the target dir (3072-bit
/// generation takes seconds).
pub fn test_key(name: &str) -> PrivateKey {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("federation-keys");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.pem"));
    if let Ok(pem) = std::fs::read_to_string(&path)
        && let Ok(key) = identity::private_key_from_pem(&pem)
    {
        return key;
    }
    let key = identity::generate_private_key().unwrap();
    let tmp = dir.join(format!(
        "{name}.{}.{:?}.tmp",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, identity::private_key_pem(&key).unwrap()).unwrap();
    // The first writer wins: tests running at once on a cold cache each
    // generate a key, and a rename would let a later one replace the key a
    // node of an earlier test already pinned (its peer then refuses the
    // acks). A hard link does not replace; the losers read the winner's.
    let linked = std::fs::hard_link(&tmp, &path);
    std::fs::remove_file(&tmp).unwrap();
    match linked {
        Ok(()) => key,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            identity::private_key_from_pem(&std::fs::read_to_string(&path).unwrap()).unwrap()
        }
        Err(e) => panic!("caching the test key {path:?}: {e}"),
    }
}

pub fn public_pem(key: &PrivateKey) -> String {
    identity::spki_pem(&key.to_public_key()).unwrap()
}

pub fn key_fingerprint(key: &PrivateKey) -> String {
    identity::fingerprint(&identity::spki_der(&key.to_public_key()).unwrap())
}

pub fn key_id(key: &PrivateKey) -> String {
    identity::key_id(&identity::spki_der(&key.to_public_key()).unwrap())
}

// A binary may include two harnesses, each with its copy: the port locks
// keep the copies apart.
#[allow(clippy::duplicate_mod)]
#[path = "../ports/mod.rs"]
mod ports;
pub use ports::free_port;

/// The API token every test node accepts, with every scope; `Node::http`
/// sends it on every request.
pub const HARNESS_TOKEN: &str = "lbk_federation-harness-token-with-all-scopes";

/// The `[[auth.tokens]]` entry for [`HARNESS_TOKEN`].
pub fn harness_token_config() -> String {
    let hash =
        logbook_base::hex::encode(&logbook_base::canonical::sha256(HARNESS_TOKEN.as_bytes()));
    format!(
        "[[auth.tokens]]\nname = \"harness\"\nsha256 = \"{hash}\"\nscopes = [\"read\", \"append\", \"admin\"]\n"
    )
}

/// A peer entry for `[[peers]]` that may subscribe to everything (`>`).
/// Tests of least privilege use [`peer_config_allowing`].
pub fn peer_config(instance_id: &str, port: u16, key: &PrivateKey) -> String {
    peer_config_allowing(instance_id, port, key, &[">"])
}

/// A peer entry for `[[peers]]` granted the patterns `allow`.
pub fn peer_config_allowing(
    instance_id: &str,
    port: u16,
    key: &PrivateKey,
    allow: &[&str],
) -> String {
    format!(
        "[[peers]]\ninstance_id = \"{instance_id}\"\nbase_url = \"http://127.0.0.1:{port}\"\nallow = {allow:?}\npublic_key = '''\n{}'''\n",
        public_pem(key)
    )
}

pub struct Node {
    pub name: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    config: String,
    child: Option<Child>,
    pub http: reqwest::Client,
}

impl Node {
    /// Starts a daemon with instance id `name`, its cached key, the
    /// `[federation]` overrides in `federation` (TOML lines) and `peers`.
    /// The HMAC secret this node signs with (`LOGBOOK_HMAC_SECRET`).
    pub fn hmac_secret(&self) -> String {
        format!("secret-of-{}-at-least-32-bytes-long", self.name)
    }

    pub fn start(name: &str, port: u16, federation: &str, peers: &str) -> Node {
        Node::start_with_data(name, port, federation, peers, None)
    }

    /// Like [`Node::start`], on a copy of `data` (a stopped node's data
    /// dir, keys included): a restored backup, or a forked twin.
    pub fn start_with_data(
        name: &str,
        port: u16,
        federation: &str,
        peers: &str,
        data: Option<&Path>,
    ) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("data");
        if let Some(from) = data {
            copy_dir(from, &dest);
        } else {
            std::fs::create_dir_all(&dest).unwrap();
            let key = test_key(name);
            logbook_base::private_file::write_private_file(
                &dest.join(identity::KEY_FILE),
                identity::private_key_pem(&key).unwrap().as_bytes(),
            )
            .unwrap();
        }
        let mut config = include_str!("../../config.toml")
            .replace("instance_id = \"\"", &format!("instance_id = \"{name}\""));
        for line in federation.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let key = line.split('=').next().unwrap().trim();
            // `[federation]`'s own key first: some names (send_timeout_secs)
            // are also keys of an earlier section.
            let needle = format!("\n{key} = ");
            let section = config.find("\n[federation]").unwrap_or(0);
            let start = config[section..]
                .find(&needle)
                .map(|at| section + at)
                .or_else(|| config.find(&needle))
                .unwrap_or_else(|| panic!("no key {key}"))
                + 1;
            let end = start + config[start..].find('\n').unwrap();
            config.replace_range(start..end, line);
        }
        config.push('\n');
        config.push_str(&harness_token_config());
        config.push('\n');
        config.push_str(peers);
        std::fs::write(dir.path().join("config.toml"), &config).unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Federation management is never open over TCP without a token, so
        // every node has an all-scopes token that its client sends.
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {HARNESS_TOKEN}").parse().unwrap(),
        );
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .default_headers(headers)
            .build()
            .unwrap();
        let mut node = Node {
            name: name.into(),
            port,
            dir,
            config,
            child: None,
            http,
        };
        node.spawn();
        node
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("log.txt"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_logbook"))
            .arg("serve")
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--admin-socket")
            .arg(self.dir.path().join("admin.sock"))
            .env("LOGBOOK_HMAC_SECRET", self.hmac_secret())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning logbook");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited at start ({status}):\n{}", self.name, self.log());
            }
            // The port is bound before the store opens (a connection then
            // waits in the backlog), so a connect proves nothing: ask /readyz.
            if ready(self.port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log.txt")).unwrap_or_default()
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGKILL, and reap the process: a crash, with no shutdown path run
    /// (no checkpoint, no flush). [`Node::restart`] then starts it again
    /// on the same data dir.
    pub fn kill_9(&mut self) {
        let mut child = self.child.take().expect("the daemon is running");
        child.kill().expect("kill -9");
        child.wait().expect("reaping the daemon");
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `logbook admin --socket … ARGS` against this node (bounded in
    /// time, off the async threads) and returns its output.
    pub async fn admin(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_logbook"));
        command
            .arg("admin")
            .arg("--socket")
            .arg(self.dir.path().join("admin.sock"))
            .args(args)
            .stdin(Stdio::null());
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            tokio::task::spawn_blocking(move || command.output().expect("running logbook admin")),
        )
        .await
        .expect("the admin command did not finish in time")
        .unwrap()
    }

    /// `logbook admin ARGS --json`: whether it succeeded, and its JSON.
    pub async fn admin_json(&self, args: &[&str]) -> (bool, Value) {
        let out = self.admin(&[args, &["--json"]].concat()).await;
        let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.success(), json)
    }

    /// `logbook admin ARGS`, which must succeed; returns its stdout.
    pub async fn admin_text(&self, args: &[&str]) -> String {
        let out = self.admin(args).await;
        assert!(
            out.status.success(),
            "logbook admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `POST path` with `text` as the JSON body, exactly as given.
    pub async fn post_text(&self, path: &str, text: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(text.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Subscribes this node to `peer`'s events of `pattern` (201 expected).
    pub async fn subscribe(&self, peer: &str, pattern: &str) {
        let (status, body) = self
            .post(
                "/api/v1/federation/events/subscribe",
                &serde_json::json!({"peer": peer, "eventType": pattern}),
            )
            .await;
        assert_eq!(status, 201, "subscribing to {peer}'s {pattern}: {body}");
    }

    /// `GET …/events/messages` with the given query.
    pub async fn messages(&self, query: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!(
                "/api/v1/federation/events/messages?limit=10000&{query}"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body["messages"].as_array().unwrap().clone()
    }
}

impl Node {
    /// The daemon's process id (it must be running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is running").id()
    }
}

/// The peak resident set size of process `pid` so far (`VmHWM` in
/// `/proc/<pid>/status`), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Alpha and beta, each listing the other, with beta subscribed to
/// alpha's `step.>` events; `alpha_fed` holds alpha's `[federation]` lines.
pub async fn subscribed_pair(alpha_fed: &str) -> (Node, Node) {
    let (pa, pb) = (free_port(), free_port());
    let (ka, kb) = (test_key("alpha"), test_key("beta"));
    let alpha = Node::start("alpha", pa, alpha_fed, &peer_config("beta", pb, &kb));
    let beta = Node::start("beta", pb, "", &peer_config("alpha", pa, &ka));
    beta.subscribe("alpha", "step.>").await;
    (alpha, beta)
}

/// Copies a directory tree (a stopped daemon's data dir), keeping modes.
pub fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a {from:?} {to:?}");
}

/// Appends `n` `step.completed` events (`{"i": 0..n}`) to `plan` on `node`.
pub async fn append_steps(node: &Node, plan: &str, n: usize) {
    for i in 0..n {
        let (status, body) = node
            .post(
                &format!("/api/plans/{plan}/events"),
                &serde_json::json!({"type": "step.completed", "payload": {"i": i}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

/// `node`'s heads checkpoint (`GET /api/v1/log/checkpoint`), as text.
pub async fn heads_checkpoint(node: &Node) -> String {
    let r = node
        .http
        .get(node.url("/api/v1/log/checkpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The tree size of a checkpoint note (its second line).
pub fn checkpoint_size(note: &str) -> u64 {
    note.lines().nth(1).unwrap().parse().unwrap()
}

/// Polls `check` until it returns Some, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn now_ms() -> i64 {
    logbook_federation::message::now_ms()
}

/// Whether the daemon on `port` answers `GET /readyz` with 200.
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// A loopback TCP relay in front of a daemon that can hold back its
/// answers: requests pass at once, so the daemon acts on them, but while
/// holding, an answer is never forwarded, and the relay reports that it
/// kept one. A node that lists the relay's port as its peer's then waits
/// for an answer the peer has already acted on: the moment a crash test
/// wants to kill the one or the other.
pub struct HoldingRelay {
    pub port: u16,
    hold: std::sync::Arc<std::sync::atomic::AtomicBool>,
    kept: std::sync::Arc<tokio::sync::Notify>,
}

impl HoldingRelay {
    /// Starts relaying from a fresh port to `127.0.0.1:target`.
    pub async fn start(target: u16) -> HoldingRelay {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let kept = std::sync::Arc::new(tokio::sync::Notify::new());
        let (h, k) = (hold.clone(), kept.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let (hold, kept) = (h.clone(), k.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match server_read.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if hold.load(Ordering::SeqCst) {
                            kept.notify_one();
                            // Never forwarded. The client's connection
                            // stays open (closing it is an answer of sorts)
                            // until the daemon's side closes, as when the
                            // daemon is killed: then the client sees the
                            // connection end with no answer.
                            while let Ok(1..) = server_read.read(&mut buf).await {}
                            return;
                        }
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HoldingRelay { port, hold, kept }
    }

    /// Starts or stops holding answers back.
    pub fn hold(&self, on: bool) {
        self.hold.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits (bounded) until an answer has been kept.
    pub async fn wait_kept(&self) {
        tokio::time::timeout(Duration::from_secs(60), self.kept.notified())
            .await
            .expect("no answer was held back within 60 s");
    }
}

/// The `messageId`s of a message listing.
pub fn message_ids(messages: &[Value]) -> std::collections::HashSet<&str> {
    messages
        .iter()
        .map(|m| m["messageId"].as_str().unwrap())
        .collect()
}

/// One HTTP/1.1 request's head and body (by Content-Length), for the
/// tests' own fake peers.
pub fn read_request(stream: &mut std::net::TcpStream) -> (String, String) {
    use std::io::Read;
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&seen[..end]).to_string();
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            })
            .unwrap_or(0);
        if seen.len() >= end + 4 + length {
            let body = String::from_utf8_lossy(&seen[end + 4..end + 4 + length]).to_string();
            return (head, body);
        }
    }
    (String::from_utf8_lossy(&seen).to_string(), String::new())
}
