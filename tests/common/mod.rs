//! Test harness: runs the real `logbook` binary on a loopback port against a
//! real store in a temp dir, plus small HTTP and SSE clients with bounded
//! waits so that no test can hang.

#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use reqwest::header::HeaderMap;
use serde_json::Value;
use uuid::Uuid;

/// The HMAC secret every test daemon signs with (via `LOGBOOK_HMAC_SECRET`),
/// so tests can build the same keyring offline.
pub const TEST_SECRET: &str = "integration-test-secret-not-for-production";
/// Longest wait for the daemon to say it is listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for any single HTTP request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for one SSE read.
pub const SSE_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run a test daemon.
#[derive(Debug, Clone, Default)]
pub struct DaemonOpts {
    /// Extra environment variables (they override the defaults, e.g. the secret).
    pub env: Vec<(String, String)>,
    /// Text appended to the config file (e.g. `[[auth.tokens]]` entries).
    pub extra_config: String,
    /// Literal replacements applied to the embedded default config.
    pub replace: Vec<(String, String)>,
    /// `--listen` (default `127.0.0.1:0`).
    pub listen: Option<String>,
}

impl DaemonOpts {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn config(mut self, text: &str) -> Self {
        self.extra_config.push('\n');
        self.extra_config.push_str(text);
        self
    }

    pub fn replace(mut self, from: &str, to: &str) -> Self {
        self.replace.push((from.into(), to.into()));
        self
    }

    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = Some(addr.into());
        self
    }
}

/// A running (or stopped) daemon with its own temp dir holding
/// `config.toml` and `data/`. The dir outlives restarts; dropping the
/// `Daemon` kills the process and removes the dir.
pub struct Daemon {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    opts: DaemonOpts,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    // Last so that the process is killed before the dir goes.
    dir: tempfile::TempDir,
}

fn install_crypto_provider() {
    // reqwest is built without a default provider; it is only needed for
    // https, but the client refuses to build without one.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("building the HTTP client")
}

/// Builds the config text for `opts` from the embedded default.
fn config_text(opts: &DaemonOpts) -> String {
    let mut text =
        logbook::config::EMBEDDED_DEFAULT.replace("format = \"text\"", "format = \"json\"");
    assert!(
        text.contains("format = \"json\""),
        "the default config no longer has format = \"text\""
    );
    for (from, to) in &opts.replace {
        assert!(
            text.contains(from.as_str()),
            "config replacement: {from:?} not found"
        );
        text = text.replace(from.as_str(), to);
    }
    text.push_str(&opts.extra_config);
    text.push('\n');
    text
}

/// A spawned process whose stderr is forwarded line by line to the test's
/// stderr and kept in `log`. The receiver gets the address from the
/// "logbook listening" line.
fn spawn(
    dir: &std::path::Path,
    opts: &DaemonOpts,
    log: Arc<Mutex<Vec<String>>>,
) -> (Child, mpsc::Receiver<SocketAddr>) {
    let config = dir.join("config.toml");
    std::fs::write(&config, config_text(opts)).expect("writing config.toml");
    let mut command = Command::new(env!("CARGO_BIN_EXE_logbook"));
    command
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(opts.listen.as_deref().unwrap_or("127.0.0.1:0"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .current_dir(dir)
        .env_remove("EVENT_BUS_HMAC_SECRET")
        .env_remove("SESSION_SECRET")
        .env("LOGBOOK_HMAC_SECRET", TEST_SECRET)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in &opts.env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawning the logbook binary");
    let pid = child.id();
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[logbook {pid}] {line}");
            if let Some(addr) = listening_addr(&line) {
                let _ = tx.send(addr);
            }
            log.lock().unwrap().push(line);
        }
    });
    (child, rx)
}

/// The `addr` of a JSON "logbook listening" log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let value: Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != "logbook listening" {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}

/// Polls until the child exits or `timeout` passes.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the daemon") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a daemon that is expected to refuse to start; returns its exit
/// status and everything it wrote to stderr.
pub fn run_expecting_exit(opts: DaemonOpts) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (mut child, rx) = spawn(dir.path(), &opts, log.clone());
    let status = wait_child(&mut child, START_TIMEOUT);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the daemon did not exit within {START_TIMEOUT:?}");
    };
    assert!(
        rx.try_recv().is_err(),
        "the daemon said it was listening before exiting"
    );
    // The reader thread stops at the end of the pipe, which the exit closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&log) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let text = log.lock().unwrap().join("\n");
    (status, text)
}

impl Daemon {
    /// Starts a daemon in a fresh temp dir and waits until it listens.
    pub fn start(opts: DaemonOpts) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut daemon = Daemon {
            addr: "127.0.0.1:0".parse().unwrap(),
            client: client(),
            opts,
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
            dir,
        };
        daemon.spawn_and_wait();
        daemon
    }

    fn spawn_and_wait(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        let (mut child, rx) = spawn(self.dir.path(), &self.opts, self.log.clone());
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                self.addr = addr;
                self.child = Some(child);
            }
            Err(_) => {
                let status = wait_child(&mut child, Duration::from_millis(100));
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the daemon did not report listening within {START_TIMEOUT:?} (exit status {status:?}); its log:\n{}",
                    self.log_text()
                );
            }
        }
    }

    /// Stops the daemon if it runs (SIGTERM, must exit 0), then starts it
    /// again on the same data dir and config. The port changes.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop();
            assert!(
                status.success(),
                "the daemon exited with {status} on SIGTERM"
            );
        }
        // Fresh connections for the new port.
        self.client = client();
        self.spawn_and_wait();
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join(logbook::journal::store::DB_FILE)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is not running").id()
    }

    /// Everything the daemon (all its runs) wrote to stderr.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`TERM`, `INT`, …) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGKILL, and reap the process.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the daemon is not running");
        child.kill().expect("kill -9");
        child.wait().expect("reaping the daemon");
    }

    /// Waits for the process to exit; `None` if it is still running after
    /// `timeout` (it is left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("the daemon is not running");
        let status = wait_child(child, timeout)?;
        self.child = None;
        Some(status)
    }

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.sigterm();
        match self.wait_exit(Duration::from_secs(15)) {
            Some(status) => status,
            None => panic!("the daemon did not exit within 15 s of SIGTERM"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).timeout(REQUEST_TIMEOUT)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).timeout(REQUEST_TIMEOUT)
    }

    /// `GET path` → status and JSON body.
    pub async fn get_json(&self, path: &str) -> Resp {
        send(self.get(path)).await
    }

    /// `POST /api/plans/{plan}/events` with a JSON body.
    pub async fn append(&self, plan: impl std::fmt::Display, body: Value) -> Resp {
        send(self.post(&format!("/api/plans/{plan}/events")).json(&body)).await
    }

    /// Like [`Daemon::append`], with extra headers.
    pub async fn append_with(
        &self,
        plan: impl std::fmt::Display,
        body: Value,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut request = self.post(&format!("/api/plans/{plan}/events")).json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(request).await
    }

    /// Appends and asserts 201; returns the event.
    pub async fn append_ok(&self, plan: impl std::fmt::Display, body: Value) -> Value {
        let resp = self.append(plan, body).await;
        assert_eq!(resp.status, 201, "append failed: {}", resp.text);
        resp.json
    }

    /// Every event of a plan, following `next_after` pages.
    pub async fn all_events(&self, plan: impl std::fmt::Display) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let resp = self
                .get_json(&format!(
                    "/api/plans/{plan}/events?after={after}&limit=1000"
                ))
                .await;
            assert_eq!(resp.status, 200, "listing events: {}", resp.text);
            let page = resp.json["events"]
                .as_array()
                .expect("events array")
                .clone();
            if page.is_empty() {
                return out;
            }
            after = resp.json["next_after"].as_u64().expect("next_after");
            out.extend(page);
        }
    }

    /// `GET /api/plans/{plan}/events?verify=1` → the whole body.
    pub async fn verify(&self, plan: impl std::fmt::Display) -> Value {
        let resp = self
            .get_json(&format!("/api/plans/{plan}/events?verify=1&limit=1"))
            .await;
        assert_eq!(resp.status, 200, "verify: {}", resp.text);
        resp.json
    }

    /// `GET /api/plans/{plan}`: `None` for 404.
    pub async fn head(&self, plan: impl std::fmt::Display) -> Option<Value> {
        let resp = self.get_json(&format!("/api/plans/{plan}")).await;
        match resp.status {
            200 => Some(resp.json),
            404 => {
                assert_problem(&resp, 404);
                None
            }
            other => panic!("GET plan head: unexpected {other}: {}", resp.text),
        }
    }

    /// Opens an SSE stream; a non-200 answer comes back as `Err`.
    pub async fn sse(&self, path: &str, headers: &[(&str, &str)]) -> Result<SseClient, Resp> {
        // No total timeout: the stream is long-lived; each read is bounded instead.
        let mut request = self
            .client
            .get(self.url(path))
            .header("accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(REQUEST_TIMEOUT, request.send())
            .await
            .expect("SSE connect timed out")
            .expect("SSE connect failed");
        if response.status() != 200 {
            return Err(Resp::read(response).await);
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(
            content_type.starts_with("text/event-stream"),
            "SSE content-type is {content_type:?}"
        );
        Ok(SseClient {
            stream: response
                .bytes_stream()
                .map(|chunk| chunk.map(|b| b.to_vec()).map_err(|e| e.to_string()))
                .boxed(),
            buf: Vec::new(),
        })
    }

    /// Opens an SSE stream that must be accepted.
    pub async fn sse_ok(&self, path: &str, headers: &[(&str, &str)]) -> SseClient {
        match self.sse(path, headers).await {
            Ok(stream) => stream,
            Err(resp) => panic!("SSE {path} refused with {}: {}", resp.status, resp.text),
        }
    }
}

impl Daemon {
    /// Sends raw bytes on a fresh connection and reads one HTTP/1.1 response.
    /// For requests a well-behaved client library will not send, such as a
    /// head that announces a body larger than the limit and then waits.
    pub async fn raw_http(&self, request: &[u8]) -> Resp {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let exchange = async {
            let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", self.addr.port()))
                .await
                .expect("connecting");
            socket
                .write_all(request)
                .await
                .expect("sending the raw request");
            let mut received = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                if let Some(resp) = parse_raw_response(&received) {
                    return resp;
                }
                let n = socket
                    .read(&mut chunk)
                    .await
                    .expect("reading the raw response");
                assert!(
                    n > 0,
                    "connection closed before a full response: {:?}",
                    String::from_utf8_lossy(&received)
                );
                received.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .expect("raw HTTP exchange timed out")
    }
}

/// A complete response (head and `content-length` body) from `bytes`, if there is one yet.
fn parse_raw_response(bytes: &[u8]) -> Option<Resp> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.append(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
            value.trim().parse().ok()?,
        );
    }
    let length: usize = headers.get("content-length")?.to_str().ok()?.parse().ok()?;
    if body.len() < length {
        return None;
    }
    let text = body[..length].to_string();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Some(Resp {
        status,
        headers,
        text,
        json,
    })
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A finished HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl Resp {
    async fn read(response: reqwest::Response) -> Resp {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("reading the response body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> Resp {
    let response = request.send().await.expect("HTTP request failed");
    Resp::read(response).await
}

/// Asserts an RFC 9457 problem: status, content type and the four members.
/// Returns the problem's `type`.
pub fn assert_problem(resp: &Resp, status: u16) -> String {
    assert_eq!(
        resp.status, status,
        "unexpected status; body: {}",
        resp.text
    );
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json"),
        "problem content type; body: {}",
        resp.text
    );
    let body = &resp.json;
    assert_eq!(
        body["status"], status,
        "problem status member: {}",
        resp.text
    );
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "problem title: {}",
        resp.text
    );
    assert!(
        body["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "problem detail: {}",
        resp.text
    );
    let kind = body["type"]
        .as_str()
        .unwrap_or_else(|| panic!("problem type: {}", resp.text));
    assert!(
        kind.starts_with("urn:logbook:problem:"),
        "problem type {kind}"
    );
    kind.to_string()
}

/// One SSE frame: a dispatched event, or a comment-only frame (keep-alive).
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comments: Vec<String>,
}

impl Frame {
    pub fn is_comment_only(&self) -> bool {
        self.id.is_none() && self.event.is_none() && self.data.is_empty()
    }
}

/// A minimal SSE reader over a response body.
pub struct SseClient {
    stream: BoxStream<'static, Result<Vec<u8>, String>>,
    buf: Vec<u8>,
}

impl SseClient {
    /// The next frame. `Ok(None)` at a clean end of stream; `Err` on a
    /// transport error or when nothing arrives within `timeout`.
    pub async fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(frame) = self.take_frame() {
                return Ok(Some(frame));
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Err(format!("no SSE frame within {timeout:?}")),
                Ok(None) if self.buf.iter().all(|b| b.is_ascii_whitespace()) => return Ok(None),
                Ok(None) => {
                    return Err(format!(
                        "stream ended inside a frame: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
                Ok(Some(Err(e))) => return Err(format!("SSE transport error: {e}")),
                Ok(Some(Ok(bytes))) => self.buf.extend(bytes.into_iter().filter(|&b| b != b'\r')),
            }
        }
    }

    fn take_frame(&mut self) -> Option<Frame> {
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let block = String::from_utf8(self.buf[..end].to_vec()).expect("SSE frames are UTF-8");
        self.buf.drain(..end + 2);
        let mut frame = Frame::default();
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(comment) = line.strip_prefix(':') {
                frame.comments.push(comment.trim_start().to_string());
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => frame.id = Some(value.to_string()),
                "event" => frame.event = Some(value.to_string()),
                "data" => data.push(value.to_string()),
                _ => {}
            }
        }
        frame.data = data.join("\n");
        Some(frame)
    }

    /// The next event (skipping keep-alive comments) as `(id, data JSON)`;
    /// panics on timeout, end of stream or a non-message event.
    pub async fn next_event(&mut self) -> (u64, Value) {
        loop {
            let frame = match self.next_frame(SSE_READ_TIMEOUT).await {
                Ok(Some(frame)) => frame,
                Ok(None) => panic!("the SSE stream ended while an event was expected"),
                Err(e) => panic!("{e}"),
            };
            if frame.is_comment_only() {
                continue;
            }
            assert_eq!(
                frame.event, None,
                "unexpected SSE event name; data: {}",
                frame.data
            );
            let id = frame
                .id
                .as_deref()
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("SSE frame without a numeric id: {frame:?}"));
            let data = serde_json::from_str(&frame.data)
                .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", frame.data));
            return (id, data);
        }
    }

    /// Reads `n` events.
    pub async fn take_events(&mut self, n: usize) -> Vec<(u64, Value)> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_event().await);
        }
        out
    }

    /// Asserts that the stream ends cleanly (after any keep-alives) within
    /// `timeout`; returns the events received before the end.
    pub async fn expect_end(&mut self, timeout: Duration) -> Vec<(u64, Value)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await {
                Ok(None) => return events,
                Ok(Some(frame)) if frame.is_comment_only() => {}
                Ok(Some(frame)) => {
                    let id = frame
                        .id
                        .as_deref()
                        .and_then(|id| id.parse().ok())
                        .unwrap_or(0);
                    let data = serde_json::from_str(&frame.data).unwrap_or(Value::Null);
                    events.push((id, data));
                }
                Err(e) => panic!("the SSE stream did not end cleanly: {e}"),
            }
        }
    }
}

/// A fresh plan id.
pub fn new_plan() -> Uuid {
    Uuid::new_v4()
}

/// An append body of a built-in type with a numbered payload.
pub fn event_body(event_type: &str, n: u64) -> Value {
    serde_json::json!({"type": event_type, "actor": "tester", "payload": {"n": n}})
}

/// Asserts that `events` (a plan's, in order) are seq 1..=n, each linking to
/// the previous one's signature.
pub fn assert_linked_chain(events: &[Value]) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], (i + 1) as u64, "seq of event #{i}: {event}");
        if i == 0 {
            assert_eq!(event["prev_hash"], Value::Null, "first event's prev_hash");
        } else {
            assert_eq!(
                event["prev_hash"],
                events[i - 1]["signature"],
                "prev_hash of seq {}",
                i + 1
            );
        }
    }
}

/// Asserts `verify=1` reports an intact chain of `count` events.
pub async fn assert_chain_valid(daemon: &Daemon, plan: impl std::fmt::Display) {
    let report = daemon.verify(&plan).await;
    assert_eq!(report["chain_valid"], true, "chain of {plan}: {report}");
    assert_eq!(
        report["broken_at"],
        Value::Null,
        "chain of {plan}: {report}"
    );
    assert_eq!(
        report["broken_reason"],
        Value::Null,
        "chain of {plan}: {report}"
    );
}

/// The keyring the test daemons sign with.
pub fn test_keyring() -> Arc<logbook::journal::keys::Keyring> {
    Arc::new(logbook::journal::keys::Keyring::from_secret(
        TEST_SECRET.as_bytes().to_vec(),
    ))
}

/// Opens the stopped daemon's store offline, lets `f` change it as an
/// attacker with write access to the file would, and closes it again.
pub async fn with_offline_store<T: Send + 'static>(
    daemon: &Daemon,
    f: impl FnOnce(&logbook::journal::store::Store) -> T + Send + 'static,
) -> T {
    let path = daemon.db_path();
    // The writer's shutdown blocks, which is not allowed on a runtime thread.
    tokio::task::spawn_blocking(move || {
        let (store, writer) =
            logbook::journal::store::Store::open(&path, test_keyring(), logbook::stream::fanout())
                .expect("opening the store offline");
        let out = f(&store);
        drop(store);
        writer.shutdown();
        out
    })
    .await
    .expect("offline store task")
}
