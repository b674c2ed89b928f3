//! Harness for the operations tests: runs the real `logbook` binary (daemon
//! and `logbook admin` client) against a real data dir in a temp dir, with a
//! tiny blocking HTTP client. Every wait is bounded.

#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SECRET: &str = "ops-test-secret-not-for-production";
const START_TIMEOUT: Duration = Duration::from_secs(20);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(15);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_logbook")
}

/// A running daemon in its own temp dir (`config.toml`, `data/`).
pub struct Ops {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

/// The embedded default config with JSON logs and `extra` appended, with
/// literal replacements applied first.
pub fn config_text(replace: &[(&str, &str)], extra: &str) -> String {
    let mut text =
        logbook::config::EMBEDDED_DEFAULT.replace("format = \"text\"", "format = \"json\"");
    for (from, to) in replace {
        assert!(text.contains(from), "config replacement {from:?} not found");
        text = text.replace(from, to);
    }
    text.push('\n');
    text.push_str(extra);
    text.push('\n');
    text
}

impl Ops {
    pub fn start() -> Ops {
        Ops::start_with(&config_text(&[], ""))
    }

    pub fn start_with(config: &str) -> Ops {
        let dir = tempfile::tempdir().expect("temp dir");
        Ops::start_in(dir, config)
    }

    /// Starts a daemon on an existing dir (its `data/` may hold a store).
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Ops {
        Ops::start_in_with(dir, config, Some("info"))
    }

    /// Like [`Ops::start_in`]; `rust_log: None` leaves the level to the config.
    pub fn start_in_with(dir: tempfile::TempDir, config: &str, rust_log: Option<&str>) -> Ops {
        Ops::launch(dir, config, rust_log, Some(SECRET))
    }

    /// The most general start: `secret: None` makes the daemon generate (or
    /// reuse) `data/hmac.key`.
    pub fn launch(
        dir: tempfile::TempDir,
        config: &str,
        rust_log: Option<&str>,
        secret: Option<&str>,
    ) -> Ops {
        Ops::launch_on(dir, config, rust_log, secret, "127.0.0.1:0")
    }

    /// [`Ops::launch`] with `--listen ADDR`.
    pub fn launch_on(
        dir: tempfile::TempDir,
        config: &str,
        rust_log: Option<&str>,
        secret: Option<&str>,
        listen: &str,
    ) -> Ops {
        std::fs::write(dir.path().join("config.toml"), config).expect("writing config.toml");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut command = Command::new(bin());
        match rust_log {
            Some(level) => command.env("RUST_LOG", level),
            None => command.env_remove("RUST_LOG"),
        };
        match secret {
            Some(secret) => command.env("LOGBOOK_HMAC_SECRET", secret),
            None => command.env_remove("LOGBOOK_HMAC_SECRET"),
        };
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .current_dir(dir.path())
            .env_remove("EVENT_BUS_HMAC_SECRET")
            .env_remove("SESSION_SECRET")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning logbook");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        let pid = child.id();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[logbook {pid}] {line}");
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the daemon did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Ops {
            addr,
            dir,
            child: Some(child),
            log,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Stops the daemon (SIGTERM, must exit 0) and hands back its dir.
    pub fn into_dir(mut self) -> tempfile::TempDir {
        assert!(
            self.stop().success(),
            "the daemon did not exit 0 on SIGTERM"
        );
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"))
    }

    pub fn socket(&self) -> PathBuf {
        self.data_dir().join("admin.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains every one of `needles`.
    pub fn wait_log(&self, needles: &[&str], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|line| needles.iter().all(|n| line.contains(n)))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGTERM, and the exit status (bounded wait).
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().expect("running");
        wait_child(&mut child, Duration::from_secs(15))
            .expect("the daemon did not exit within 15 s of SIGTERM")
    }

    /// Runs `logbook admin --socket S ARGS` (bounded), returning its output.
    pub fn admin(&self, args: &[&str]) -> Output {
        let mut command = Command::new(bin());
        command
            .arg("admin")
            .arg("--socket")
            .arg(self.socket())
            .args(args);
        run(command)
    }

    /// Runs an admin command that must succeed, returning stdout.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(
            out.status.success(),
            "logbook admin {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Runs an admin command with `--json` that must succeed.
    pub fn admin_json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let text = self.admin_ok(&with_json);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("admin {args:?} --json printed non-JSON ({e}): {text}"))
    }

    /// One HTTP/1.1 request on the TCP listener; returns status and body.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut headers = vec![];
        if let Some(token) = token {
            headers.push(format!("authorization: Bearer {token}"));
        }
        http_request(self.addr, method, path, &headers, body)
    }

    /// Appends one event; returns the status and body.
    pub fn append(
        &self,
        plan: &str,
        event_type: &str,
        payload: &str,
        token: Option<&str>,
    ) -> (u16, String) {
        let body = format!(r#"{{"type":"{event_type}","actor":"ops-test","payload":{payload}}}"#);
        self.http(
            "POST",
            &format!("/api/plans/{plan}/events"),
            token,
            Some(&body),
        )
    }
}

impl Drop for Ops {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a command to completion within the time limit.
pub fn run(mut command: Command) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawning a command");
    // Read both pipes on threads so a large output cannot block the child.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let Some(status) = wait_child(&mut child, COMMAND_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("a command did not finish within {COMMAND_TIMEOUT:?}");
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let value: Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != "logbook listening" {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}

/// A minimal HTTP/1.1 client: one request per connection, `Connection:
/// close`, body read to EOF (chunked bodies are decoded).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connecting");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    if let Some(body) = body {
        request.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream
        .write_all(request.as_bytes())
        .expect("sending the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("reading the response");
    parse_response(&raw)
}

/// Splits a raw HTTP/1.1 response into status and (de-chunked) body.
pub fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a complete HTTP response");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if !chunked {
        return (status, body.to_string());
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    (status, out)
}

/// A fresh plan id.
pub fn plan() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Appends `n` events to `plan`, asserting each is created.
pub fn fill(ops: &Ops, plan: &str, n: usize) {
    for i in 0..n {
        let (status, body) = ops.append(
            plan,
            "step.completed",
            &format!(r#"{{"i":{i},"note":"event number {i}"}}"#),
            None,
        );
        assert_eq!(status, 201, "append {i}: {body}");
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
