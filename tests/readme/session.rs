//! A pasted session: one temp dir laid out like a checkout (`config.toml`,
//! `target/{debug,release}/logbook`), a PATH with the binary under test as
//! `logbook` and the `cargo` and `curl` shims below, loopback ports rewritten
//! to free ones, and
//! every block run by bash in its own process group, killed at the end.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::markdown::Block;

/// How long one block may run (the machine may be busy with other tests).
pub const BLOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a background block's ports may take to answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a `follow` block runs before it gets SIGINT, as from Ctrl-C.
const FOLLOW_FOR: Duration = Duration::from_secs(3);
/// How long `curl -N` follows a stream before the shim ends it as a success.
const STREAM_SECONDS: u32 = 2;

/// The host spellings whose ports are rewritten.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost:", "127.0.0.1:", "[::1]:"];

const CARGO_SHIM: &str = r#"#!/usr/bin/env bash
# readme-test shim: `cargo run [--release] [--] ARGS` runs the binary under
# test, so that a block does not build; `cargo build` has nothing to do.
case "$1" in
  build) exit 0 ;;
  run) shift ;;
  *) echo "readme-test cargo shim: only 'cargo run' and 'cargo build' are available, not: cargo $*" >&2; exit 97 ;;
esac
while [ $# -gt 0 ]; do
  case "$1" in
    --release|-q|--quiet|--locked) shift ;;
    --) shift; break ;;
    -*) echo "readme-test cargo shim: unknown flag $1" >&2; exit 97 ;;
    *) break ;;
  esac
done
exec logbook "$@"
"#;

/// `@CURL@` is replaced by the real curl's path.
const CURL_SHIM: &str = r#"#!/usr/bin/env bash
# readme-test shim: curl without ~/.curlrc, where an HTTP error (>= 400)
# fails the command as --fail-with-body does, and a stream (-N) is followed
# for @SECONDS@ s and then ends as a success.
fail=(--fail-with-body)
stream=()
for arg in "$@"; do
  case "$arg" in
    --fail|--fail-with-body) fail=() ;;
    --no-buffer) stream=(--max-time @SECONDS@) ;;
    --*) ;;
    -*f*N*|-*N*f*) fail=(); stream=(--max-time @SECONDS@) ;;
    -*f*) fail=() ;;
    -*N*) stream=(--max-time @SECONDS@) ;;
  esac
done
@CURL@ -q "${fail[@]}" "${stream[@]}" "$@"
rc=$?
if [ "$rc" = 28 ] && [ "${#stream[@]}" -gt 0 ]; then rc=0; fi
exit "$rc"
"#;

/// The outcome of a block that ran to its end.
pub struct Ran {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub struct Session {
    dir: tempfile::TempDir,
    ports: BTreeMap<u16, u16>,
    env: Vec<(String, String)>,
    groups: Vec<i32>,
    /// The bash of each background block, reaped at the end (a zombie
    /// leader would keep its group "alive").
    background: Vec<Child>,
    count: usize,
}

impl Session {
    /// A session for blocks taken from `texts` (their loopback ports are
    /// given free ones), with the repository's `config.toml` rewritten alike.
    pub fn new(repo: &Path, texts: &[&str]) -> Session {
        let dir = tempfile::Builder::new()
            .prefix("readme")
            .tempdir()
            .expect("temp dir");
        let root = &dir.path().to_path_buf();
        let config = fs::read_to_string(repo.join("config.toml")).expect("config.toml");
        let mut ports = BTreeMap::new();
        for port in texts
            .iter()
            .chain([&config.as_str()])
            .flat_map(|t| loopback_ports(t))
        {
            ports.entry(port).or_insert_with(super::ports::free_port);
        }
        let mut session = Session {
            dir,
            ports,
            env: Vec::new(),
            groups: Vec::new(),
            background: Vec::new(),
            count: 0,
        };
        let bin = root.join("bin");
        fs::create_dir_all(&bin).unwrap();
        let logbook = PathBuf::from(env!("CARGO_BIN_EXE_logbook"));
        symlink(&logbook, bin.join("logbook")).unwrap();
        for profile in ["debug", "release"] {
            let out = root.join("target").join(profile);
            fs::create_dir_all(&out).unwrap();
            symlink(&logbook, out.join("logbook")).unwrap();
        }
        let curl = find_in_path("curl").expect("curl is needed to run the README's blocks");
        write_script(&bin.join("cargo"), CARGO_SHIM);
        write_script(
            &bin.join("curl"),
            &CURL_SHIM
                .replace("@CURL@", &curl.display().to_string())
                .replace("@SECONDS@", &STREAM_SECONDS.to_string()),
        );
        fs::write(root.join("config.toml"), session.rewrite(&config)).unwrap();
        fs::create_dir_all(root.join("tmp")).unwrap();

        let path = std::env::var("PATH").unwrap_or_default();
        session.set_env("PATH", &format!("{}:{path}", bin.display()));
        session.set_env(
            "HOME",
            &std::env::var("HOME").unwrap_or_else(|_| "/".into()),
        );
        session.set_env("TMPDIR", &root.join("tmp").display().to_string());
        session.set_env("NO_PROXY", "localhost,127.0.0.1,::1");
        // The admin client's fallback is ./data/admin.sock; say it outright
        // so that a real /run/logbook/admin.sock on this host is never used.
        let socket = root.join("data").join("admin.sock");
        session.set_env("LOGBOOK_ADMIN_SOCKET", &socket.display().to_string());
        session
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// `text` with every loopback port of the docs replaced by its free one.
    pub fn rewrite(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        'scan: while !rest.is_empty() {
            for host in LOOPBACK_HOSTS {
                if let Some(after) = rest.strip_prefix(host) {
                    let digits = after.chars().take_while(char::is_ascii_digit).count();
                    if let Some(free) = after[..digits]
                        .parse()
                        .ok()
                        .and_then(|p| self.ports.get(&p))
                    {
                        out.push_str(host);
                        out.push_str(&free.to_string());
                        rest = &after[digits..];
                        continue 'scan;
                    }
                }
            }
            let ch = rest.chars().next().unwrap();
            out.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
        out
    }

    /// Runs `block` (already a shell script) to its end, or within
    /// [`BLOCK_TIMEOUT`]; a background block is left running once its ports
    /// answer `/readyz`.
    pub fn run(&mut self, block: &Block) -> Result<Ran, String> {
        let script = self.rewrite(&block.script);
        self.count += 1;
        let base = self.dir().join(format!("block-{:02}", self.count));
        let script_path = base.with_extension("sh");
        fs::write(&script_path, format!("set -euo pipefail\n{script}\n")).unwrap();
        let (out_path, err_path) = (base.with_extension("out"), base.with_extension("err"));
        let mut child = self.spawn(&script_path, &out_path, &err_path)?;
        let ran = |status| Ran {
            status,
            stdout: fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: fs::read_to_string(&err_path).unwrap_or_default(),
        };
        if block.markers.background {
            let ports = loopback_ports(&script);
            if ports.is_empty() {
                return Err("a background block must name the loopback port it serves".into());
            }
            let deadline = Instant::now() + READY_TIMEOUT;
            while !ports.iter().all(|&p| ready(p)) {
                if let Some(status) = child.try_wait().unwrap() {
                    let r = ran(status);
                    return Err(format!(
                        "the background block ended ({}) before it was ready\n--- stdout\n{}--- stderr\n{}",
                        r.status, r.stdout, r.stderr
                    ));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "ports {ports:?} not ready within {READY_TIMEOUT:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            self.background.push(child);
            return Ok(ran(std::process::ExitStatus::default()));
        }
        let follow = block.markers.follow;
        let deadline = Instant::now() + if follow { FOLLOW_FOR } else { BLOCK_TIMEOUT };
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Ok(ran(status));
            }
            if follow && Instant::now() > deadline {
                // Still following: that is what it should do. Ctrl-C it.
                kill_group(child.id() as i32, libc::SIGINT);
                let stop = Instant::now() + Duration::from_secs(10);
                while child.try_wait().unwrap().is_none() && Instant::now() < stop {
                    std::thread::sleep(Duration::from_millis(50));
                }
                kill_group(child.id() as i32, libc::SIGKILL);
                let _ = child.wait();
                return Ok(ran(std::process::ExitStatus::default()));
            }
            if Instant::now() > deadline {
                kill_group(child.id() as i32, libc::SIGKILL);
                let r = ran(child.wait().expect("reaping the killed block"));
                return Err(format!(
                    "did not finish within {BLOCK_TIMEOUT:?} (a command that runs until \
                     Ctrl-C needs a follow or skip marker)\n--- stdout\n{}--- stderr\n{}",
                    r.stdout, r.stderr
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// bash running `script` in its own process group (so that whatever it
    /// leaves in the background is found and stopped at the end), output to
    /// files (a daemon left running would hold a pipe open).
    fn spawn(&mut self, script: &Path, out: &Path, err: &Path) -> Result<Child, String> {
        let mut command = Command::new("bash");
        command
            .arg(script)
            .current_dir(self.dir())
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(fs::File::create(out).unwrap())
            .stderr(fs::File::create(err).unwrap())
            .process_group(0);
        let child = command.spawn().map_err(|e| format!("running bash: {e}"))?;
        self.groups.push(child.id() as i32);
        Ok(child)
    }
}

impl Drop for Session {
    /// Stops every process the blocks started: SIGTERM (a daemon exits
    /// cleanly), then SIGKILL whatever is left after a few seconds.
    fn drop(&mut self) {
        for &group in &self.groups {
            kill_group(group, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for child in &mut self.background {
                let _ = child.try_wait();
            }
            if !self.groups.iter().any(|&g| group_alive(g)) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for &group in &self.groups {
            kill_group(group, libc::SIGKILL);
        }
        for child in &mut self.background {
            let _ = child.wait();
        }
    }
}

fn kill_group(group: i32, signal: i32) {
    assert!(group > 1, "a process group of our own");
    // SAFETY: kill(2) with a negative pid signals that process group only.
    unsafe { libc::kill(-group, signal) };
}

fn group_alive(group: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    unsafe { libc::kill(-group, 0) == 0 }
}

/// The ports that follow a loopback host in `text` (`localhost:7411`).
pub fn loopback_ports(text: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    for host in LOOPBACK_HOSTS {
        for (at, _) in text.match_indices(host) {
            let after = &text[at + host.len()..];
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(port) = digits.parse::<u16>()
                && port != 0
                && !ports.contains(&port)
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// Whether `GET /readyz` on the port answers 200.
fn ready(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn write_script(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}
