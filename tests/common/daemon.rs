//! Runs the real `logbook` binary as a daemon in its own temp dir: config
//! text, start and restart, its log, signals and bounded waits for exit.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The HMAC secret every test daemon signs with (via `LOGBOOK_HMAC_SECRET`),
/// so tests can build the same keyring offline.
pub const TEST_SECRET: &str = "integration-test-secret-not-for-production";
/// Longest wait for the daemon to say it is listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for the daemon to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How to run a test daemon. The defaults: the embedded config with JSON
/// logs, `RUST_LOG=info`, [`TEST_SECRET`], `--listen 127.0.0.1:0`, and none
/// of the systemd variables of the test's own environment.
#[derive(Debug, Clone, Default)]
pub struct DaemonOpts {
    /// Extra environment variables (they override the defaults, e.g. the secret).
    pub env: Vec<(String, String)>,
    /// Environment variables removed after the defaults and `env` are set.
    pub unset_env: Vec<String>,
    /// Text appended to the config file (e.g. `[[auth.tokens]]` entries).
    pub extra_config: String,
    /// Literal replacements applied to the embedded default config.
    pub replace: Vec<(String, String)>,
    /// `--listen` (default `127.0.0.1:0`).
    pub listen: Option<String>,
    /// The open-file limit (soft, hard) the daemon starts with.
    pub open_files: Option<(u64, u64)>,
}

impl DaemonOpts {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the daemon without `key` in its environment, e.g.
    /// `LOGBOOK_HMAC_SECRET` (it then generates or reuses `data/hmac.key`)
    /// or `RUST_LOG` (the config's `log.level` is then in force).
    pub fn unset_env(mut self, key: &str) -> Self {
        self.unset_env.push(key.into());
        self
    }

    pub fn config(mut self, text: &str) -> Self {
        self.extra_config.push('\n');
        self.extra_config.push_str(text);
        self
    }

    /// Replaces `from` (which must occur) with `to` in the default config.
    pub fn replace(mut self, from: &str, to: &str) -> Self {
        self.replace.push((from.into(), to.into()));
        self
    }

    /// Configures [`ADMIN_TOKEN`] (every scope); pair with
    /// [`Daemon::send_admin_token`]. Needed for federation management over
    /// TCP, which open mode serves only on the admin socket.
    pub fn with_admin_token(self) -> Self {
        let hash =
            logbook_base::hex::encode(&logbook_base::canonical::sha256(ADMIN_TOKEN.as_bytes()));
        self.config(&format!(
            "[[auth.tokens]]\nname = \"harness-admin\"\nsha256 = \"{hash}\"\nscopes = [\"read\", \"append\", \"admin\"]\n"
        ))
    }

    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// Starts the daemon with RLIMIT_NOFILE set to (`soft`, `hard`).
    pub fn open_files(mut self, soft: u64, hard: u64) -> Self {
        self.open_files = Some((soft, hard));
        self
    }

    /// The `config.toml` text these options produce; also useful to write a
    /// changed config for a running daemon to reload.
    pub fn config_text(&self) -> String {
        let mut text =
            include_str!("../../config.toml").replace("format = \"text\"", "format = \"json\"");
        assert!(
            text.contains("format = \"json\""),
            "the default config no longer has format = \"text\""
        );
        for (from, to) in &self.replace {
            assert!(
                text.contains(from.as_str()),
                "config replacement: {from:?} not found"
            );
            text = text.replace(from.as_str(), to);
        }
        text.push_str(&self.extra_config);
        text.push('\n');
        text
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

/// A fresh HTTP client (connect timeout only; each request sets its own).
pub fn client() -> reqwest::Client {
    client_with(reqwest::header::HeaderMap::new())
}

/// A client that sends `headers` on every request.
pub fn client_with(headers: reqwest::header::HeaderMap) -> reqwest::Client {
    // reqwest is built without a default crypto provider; it is only needed
    // for https, but the client refuses to build without one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .default_headers(headers)
        .build()
        .expect("building the HTTP client")
}

/// A token with every scope, for [`DaemonOpts::with_admin_token`].
pub const ADMIN_TOKEN: &str = "lbk_test-harness-token-with-every-scope";

/// A spawned process whose stderr is forwarded line by line to the test's
/// stderr and kept in `log`. The receiver gets the address from the
/// "logbook listening" line.
fn spawn(
    dir: &Path,
    opts: &DaemonOpts,
    log: Arc<Mutex<Vec<String>>>,
) -> (Child, mpsc::Receiver<SocketAddr>) {
    let config = dir.join("config.toml");
    std::fs::write(&config, opts.config_text()).expect("writing config.toml");
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
        // A test run under systemd must not notify the test runner's unit.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env("LOGBOOK_HMAC_SECRET", TEST_SECRET)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in &opts.env {
        command.env(key, value);
    }
    for key in &opts.unset_env {
        command.env_remove(key);
    }
    if let Some((soft, hard)) = opts.open_files {
        use std::os::unix::process::CommandExt;
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: only setrlimit, which is async-signal-safe, runs between
        // fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
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
pub(super) fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child process") {
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
    run_expecting_exit_in(dir.path(), opts)
}

/// [`run_expecting_exit`] in `dir`, whose `data/` may already hold a store.
pub fn run_expecting_exit_in(dir: &Path, opts: DaemonOpts) -> (ExitStatus, String) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (mut child, rx) = spawn(dir, &opts, log.clone());
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
    /// From now on, this daemon's client sends [`ADMIN_TOKEN`].
    pub fn send_admin_token(mut self) -> Daemon {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {ADMIN_TOKEN}")
            .parse()
            .expect("header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        self.client = client_with(headers);
        self
    }

    pub fn start(opts: DaemonOpts) -> Daemon {
        Daemon::start_in(tempfile::tempdir().expect("temp dir"), opts)
    }

    /// Starts a daemon in an existing dir whose `data/` may already hold a
    /// store (e.g. one `logbook restore` wrote); `config.toml` is
    /// (re)written from `opts`.
    pub fn start_in(dir: tempfile::TempDir, opts: DaemonOpts) -> Daemon {
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

    /// Like [`Daemon::restart`], with new options (the config file is
    /// rewritten from them).
    pub fn restart_with(&mut self, opts: DaemonOpts) {
        self.opts = opts;
        self.restart();
    }

    /// The temp dir holding `config.toml` and `data/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir().join("config.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join(logbook_journal::store::DB_FILE)
    }

    /// The admin socket at its default place (`server.admin_socket = ""`).
    pub fn admin_socket(&self) -> PathBuf {
        self.data_dir().join("admin.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is not running").id()
    }

    /// Everything the daemon (all its runs) wrote to stderr.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until one log line contains every one of `needles`; `false`
    /// if none does within `timeout`.
    pub async fn wait_log(&self, needles: &[&str], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|line| needles.iter().all(|n| line.contains(n)));
            if found {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`TERM`, `HUP`, …) with kill(1).
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
        match self.wait_exit(STOP_TIMEOUT) {
            Some(status) => status,
            None => panic!("the daemon did not exit within {STOP_TIMEOUT:?} of SIGTERM"),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
