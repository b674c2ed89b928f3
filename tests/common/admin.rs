//! Runs commands to completion with a time limit: the `logbook` CLI
//! (`admin`, `restore`, `verify --export`, …) and other tools such as curl.
//! The waits run on tokio's blocking pool, so a test can keep other work
//! (appends, an SSE stream) going while a command runs.

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::Daemon;
use super::daemon::wait_child;

/// Longest a command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A finished command: its exit status and output (both must be UTF-8).
#[derive(Debug)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Asserts success; returns stdout.
    pub fn ok(self, what: &str) -> String {
        assert!(
            self.success(),
            "{what} failed ({}): {}{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self.stdout
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("the command printed non-JSON ({e}): {}", self.stdout))
    }
}

/// A command for the `logbook` binary under test.
pub fn logbook() -> Command {
    Command::new(env!("CARGO_BIN_EXE_logbook"))
}

/// Runs `logbook ARGS` (see [`run`]).
pub async fn run_logbook<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> CommandOutput {
    let mut command = logbook();
    command.args(args);
    run(command).await
}

/// Runs a command with no stdin to completion, panicking if it takes
/// longer than 30 s.
pub async fn run(command: Command) -> CommandOutput {
    tokio::task::spawn_blocking(move || run_blocking(command))
        .await
        .expect("the command's thread panicked")
}

fn run_blocking(mut command: Command) -> CommandOutput {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawning a command");
    // Read both pipes on threads so a large output cannot block the child.
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8(buf).expect("command output is UTF-8")
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));
    let Some(status) = wait_child(&mut child, COMMAND_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command:?} did not finish within {COMMAND_TIMEOUT:?}");
    };
    CommandOutput {
        status,
        stdout: stdout.join().expect("reading stdout"),
        stderr: stderr.join().expect("reading stderr"),
    }
}

impl Daemon {
    /// Runs `logbook admin --socket SOCKET ARGS` against this daemon.
    pub async fn admin(&self, args: &[&str]) -> CommandOutput {
        let mut command = logbook();
        command
            .arg("admin")
            .arg("--socket")
            .arg(self.admin_socket())
            .args(args);
        run(command).await
    }

    /// Runs an admin command that must succeed; returns stdout.
    pub async fn admin_ok(&self, args: &[&str]) -> String {
        self.admin(args)
            .await
            .ok(&format!("logbook admin {args:?}"))
    }

    /// Runs an admin command with `--json` that must succeed; returns its JSON.
    pub async fn admin_json(&self, args: &[&str]) -> Value {
        let with_json = [args, &["--json"]].concat();
        let out = self.admin(&with_json).await;
        let text = out.ok(&format!("logbook admin {with_json:?}"));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("admin {args:?} --json printed non-JSON ({e}): {text}"))
    }
}
