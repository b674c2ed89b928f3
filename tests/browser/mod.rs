//! A real Chromium for the viewer's tests: Debian's `chromium` driven
//! through `chromedriver` (W3C WebDriver) by fantoccini. Installs both with
//! apt-get when missing and possible (root, apt); otherwise the tests are
//! skipped with a loud message, except under CI (`CI` set, or
//! `LOGBOOK_BROWSER_TESTS=required` as `.ci/run` sets it), where a missing
//! browser fails them.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Longest wait for anything the page does (generous: 2 busy cores).
pub const DEADLINE: Duration = Duration::from_secs(45);

/// The plan view's rows, newest first, as [seq, state] (see [`rows`]).
pub const ROWS: &str = "return [...document.querySelectorAll('#events tbody tr')].map(r => [Number(r.dataset.seq), r.dataset.state]);";

/// The result of [`ROWS`]: [(seq, state)], newest first.
pub fn rows(value: &Value) -> Vec<(u64, String)> {
    value
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r[0].as_u64().unwrap_or(0),
                        r[1].as_str().unwrap_or("").into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

// A binary may include two harnesses, each with its copy: the port locks
// keep the copies apart.
#[allow(clippy::duplicate_mod)]
#[path = "../ports/mod.rs"]
mod ports;
pub use ports::free_port;

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure chromium and chromedriver exist; false when they cannot
/// (outside CI only: under CI that is a failure).
pub fn ensure_chromium() -> bool {
    if have("chromium") && have("chromedriver") {
        return true;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root && have("apt-get") {
        eprintln!("browser tests: installing chromium and chromium-driver with apt-get");
        let ok = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if ok && have("chromium") && have("chromedriver") {
            return true;
        }
    }
    let message = "!!! BROWSER TESTS SKIPPED: chromium and chromedriver are missing and could not be installed (needs root and apt-get) !!!";
    if std::env::var_os("CI").is_some()
        || std::env::var("LOGBOOK_BROWSER_TESTS").is_ok_and(|v| v == "required")
    {
        panic!("{message} (CI or LOGBOOK_BROWSER_TESTS=required is set, so this is a failure)");
    }
    eprintln!("\n{message}\n");
    false
}

/// Console entries that are errors, without the HTTP refusal the page
/// expects and handles (the bundle's 409 before the first heads-log pass) and, if `restarting`, the refused
/// connections while the daemon was down.
pub fn errors(entries: &[Value], restarting: bool) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .filter(|m| {
            let expected = m.contains("status of 409")
                || (restarting
                    && (m.contains("ERR_CONNECTION_REFUSED")
                        || m.contains("ERR_EMPTY_RESPONSE")
                        || m.contains("ERR_CONNECTION_RESET")
                        || m.contains("ERR_INCOMPLETE_CHUNKED_ENCODING")));
            !expected
        })
        .collect()
}

/// A chromedriver process and one headless Chromium session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        let port = free_port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let caps = match caps {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if started.elapsed() < DEADLINE => {
                    if let Ok(Some(status)) = driver.try_wait() {
                        panic!("chromedriver exited with {status}");
                    }
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    let _ = driver.kill();
                    panic!("no WebDriver session within {DEADLINE:?}: {e}");
                }
            }
        };
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Polls `script` (a function body returning a value) until `ok` holds
    /// for its result; panics with the last value after [`DEADLINE`].
    pub async fn wait_for(&self, what: &str, script: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            // A script may fail while the page is still loading (an element
            // not there yet): that is "not yet", until the deadline.
            let last = match self.client.execute(script, vec![]).await {
                Ok(value) if ok(&value) => return value,
                Ok(value) => value.to_string(),
                Err(e) => format!("script error: {e}"),
            };
            if started.elapsed() > DEADLINE {
                panic!("{what}: not within {DEADLINE:?}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Opens a page of the viewer on `port` (its modules load from there,
    /// in a secure context: loopback) and runs `script` in it with `args`
    /// (WebDriver's executeAsyncScript).
    pub async fn run_on_page(&self, port: u16, script: &str, args: Vec<Value>) -> Value {
        self.client
            .goto(&format!("http://127.0.0.1:{port}/ui/keys"))
            .await
            .expect("open");
        self.client
            .execute_async(script, args)
            .await
            .unwrap_or_else(|e| panic!("the page script: {e}"))
    }

    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script {script}: {e}"))
    }

    pub async fn click(&self, css: &str) {
        let started = Instant::now();
        loop {
            match self.client.find(Locator::Css(css)).await {
                Ok(element) if element.click().await.is_ok() => return,
                _ if started.elapsed() < DEADLINE => {
                    tokio::time::sleep(Duration::from_millis(150)).await
                }
                _ => panic!("could not click {css} within {DEADLINE:?}"),
            }
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self
            .client
            .wait()
            .at_most(DEADLINE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        element.clear().await.expect("clear");
        element.send_keys(text).await.expect("send keys");
    }

    /// The browser console since the last call (chromedriver's log).
    pub async fn console(&self) -> Vec<Value> {
        match self.client.issue_cmd(BrowserLog).await {
            Ok(Value::Array(entries)) => entries,
            other => panic!("reading the browser log: {other:?}"),
        }
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

fn chromium_binary() -> String {
    // Debian's /usr/bin/chromium is a wrapper script; chromedriver wants the binary.
    for path in ["/usr/lib/chromium/chromium", "/usr/bin/chromium"] {
        if std::path::Path::new(path).exists() {
            return path.into();
        }
    }
    "chromium".into()
}

/// chromedriver's `POST /session/{id}/se/log` for the console entries.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or("")))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// One browser at a time: three at once would crowd 2 cores.
pub async fn one_browser() -> tokio::sync::MutexGuard<'static, ()> {
    // tokio's Mutex works across the tests' separate runtimes and is not
    // poisoned by a failed test.
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE.lock().await
}
