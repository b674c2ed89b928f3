//! Federation delivery rate to one subscribed peer (issue 14), driven by
//! `bench/federation.sh`, which documents the output line.
//!
//!   federation LOGBOOK_BINARY [EVENTS] [DEADLINE_SECS]
//!
//! Starts two daemons on loopback (`alpha` sends, `beta` receives), with the
//! shipped config.toml (default settings) plus one token and the other as a
//! `[[peers]]` entry; `beta` subscribes to `>` on `alpha`. Then EVENTS
//! events of 1 KiB are appended to one plan on `alpha` by 64 clients, as
//! fast as it takes them, while `beta`'s message stream counts what
//! arrives. The rate is events delivered over the time from the first
//! append to the last delivery (or to the deadline: then it is what arrived
//! by then). The sender's RSS is sampled every 100 ms.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use logbook_federation::identity;

const TOKEN: &str = "lbk_federation-bench-token-with-all-scopes";
const PLAN: &str = "0192f3a4-5b6c-7d8e-9f00-000000000001";
/// Appending clients, unless `FEDERATION_CLIENTS` says otherwise.
const CLIENTS: u64 = 64;

struct Daemon {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn token_config() -> String {
    let hash = logbook_base::hex::encode(&logbook_base::canonical::sha256(TOKEN.as_bytes()));
    format!(
        "[[auth.tokens]]\nname = \"bench\"\nsha256 = \"{hash}\"\nscopes = [\"read\", \"append\", \"admin\"]\n"
    )
}

fn start(binary: &Path, name: &str, port: u16, key_pem: &str, peer: (&str, u16, &str)) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    logbook_base::private_file::write_private_file(
        &data.join(identity::KEY_FILE),
        key_pem.as_bytes(),
    )
    .unwrap();
    // BENCH_CONFIG: another config.toml (an older release's, for a before/after).
    let base = std::env::var("BENCH_CONFIG")
        .map(|path| std::fs::read_to_string(path).expect("reading BENCH_CONFIG"))
        .unwrap_or_else(|_| include_str!("../config.toml").to_string());
    let mut config = base.replace("instance_id = \"\"", &format!("instance_id = \"{name}\""));
    config.push('\n');
    config.push_str(&token_config());
    config.push_str(&format!(
        "\n[[peers]]\ninstance_id = \"{}\"\nbase_url = \"http://127.0.0.1:{}\"\nallow = [\">\"]\nwitness = false\npublic_key = '''\n{}'''\n",
        peer.0, peer.1, peer.2
    ));
    std::fs::write(dir.path().join("config.toml"), &config).unwrap();
    let log = std::fs::File::create(dir.path().join("log.txt")).unwrap();
    let child = Command::new(binary)
        .arg("serve")
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&data)
        .arg("--admin-socket")
        .arg(dir.path().join("admin.sock"))
        .env(
            "LOGBOOK_HMAC_SECRET",
            format!("bench-secret-of-{name}-at-least-32-bytes"),
        )
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting logbook");
    Daemon {
        child,
        port,
        _dir: dir,
    }
}

async fn wait_healthy(http: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the daemon on port {port} did not start");
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Cached keys (3072-bit generation takes seconds).
fn key(name: &str) -> String {
    let dir = PathBuf::from(std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into()))
        .join("logbook-federation-bench-keys");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.pem"));
    if let Ok(pem) = std::fs::read_to_string(&path)
        && identity::private_key_from_pem(&pem).is_ok()
    {
        return pem;
    }
    let pem = identity::private_key_pem(&identity::generate_private_key().unwrap()).unwrap();
    logbook_base::private_file::write_private_file(&path, pem.as_bytes()).unwrap();
    pem
}

fn public_pem(private_pem: &str) -> String {
    let key = identity::private_key_from_pem(private_pem).unwrap();
    identity::spki_pem(&key.to_public_key()).unwrap()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let binary = PathBuf::from(
        args.get(1)
            .expect("usage: federation LOGBOOK [EVENTS] [SECS]"),
    );
    let events: u64 = args.get(2).map_or(20_000, |a| a.parse().unwrap());
    let deadline_secs: u64 = args.get(3).map_or(90, |a| a.parse().unwrap());
    let _ = rustls::crypto::ring::default_provider().install_default();
    // What a subscribed peer costs the sender's appends: the same run with
    // FEDERATION_SUBSCRIBE=0 appends with no peer subscribed (and ends with
    // the appends), FEDERATION_CLIENTS=1 at one client.
    let client_count: u64 =
        std::env::var("FEDERATION_CLIENTS").map_or(CLIENTS, |c| c.parse().unwrap());
    let subscribe = std::env::var("FEDERATION_SUBSCRIBE").map_or(true, |s| s != "0");

    let (alpha_key, beta_key) = (key("alpha"), key("beta"));
    let (alpha_port, beta_port) = (free_port(), free_port());
    let alpha = start(
        &binary,
        "alpha",
        alpha_port,
        &alpha_key,
        ("beta", beta_port, &public_pem(&beta_key)),
    );
    let beta = start(
        &binary,
        "beta",
        beta_port,
        &beta_key,
        ("alpha", alpha_port, &public_pem(&alpha_key)),
    );
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    wait_healthy(&http, alpha.port).await;
    wait_healthy(&http, beta.port).await;

    if subscribe {
        let r = http
            .post(format!(
                "http://127.0.0.1:{beta_port}/api/v1/federation/events/subscribe"
            ))
            .json(&serde_json::json!({"peer": "alpha", "eventType": ">"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "subscribe: {}", r.status());
    }

    // Count what beta receives, from its message stream.
    let delivered = Arc::new(AtomicU64::new(0));
    let stream = {
        let (http, delivered) = (http.clone(), delivered.clone());
        let response = reqwest::Client::builder()
            .default_headers({
                let mut h = reqwest::header::HeaderMap::new();
                h.insert(
                    reqwest::header::AUTHORIZATION,
                    format!("Bearer {TOKEN}").parse().unwrap(),
                );
                h
            })
            .build()
            .unwrap()
            .get(format!(
                "http://127.0.0.1:{beta_port}/api/v1/federation/events/stream"
            ))
            .send()
            .await
            .unwrap();
        drop(http);
        assert!(
            response.status().is_success(),
            "stream: {}",
            response.status()
        );
        tokio::spawn(async move {
            let mut body = response.bytes_stream();
            // 0: at a line start, 1: after an "i" there, 2: elsewhere.
            let mut state = 0u8;
            while let Some(Ok(chunk)) = body.next().await {
                let mut n = 0;
                for b in chunk.iter() {
                    state = match (state, *b) {
                        (_, b'\n') => 0,
                        (0, b'i') => 1,
                        (1, b'd') => {
                            n += 1;
                            2
                        }
                        _ => 2,
                    };
                }
                delivered.fetch_add(n, Ordering::Relaxed);
            }
        })
    };

    let sender_pid = alpha.child.id();
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let pad = "x".repeat(960);
    let mut clients = Vec::new();
    for _ in 0..client_count {
        let (http, next, pad) = (http.clone(), next.clone(), pad.clone());
        clients.push(tokio::spawn(async move {
            let url = format!("http://127.0.0.1:{alpha_port}/api/plans/{PLAN}/events");
            while next.fetch_add(1, Ordering::Relaxed) < events {
                let r = http
                    .post(&url)
                    .json(&serde_json::json!({"type": "ledger.transaction", "actor": "bench", "payload": {"pad": pad}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201, "append");
            }
        }));
    }
    let mut appended_at = None;
    let mut delivered_when_appended = 0;
    let mut rss_max = 0u64;
    let deadline = start + Duration::from_secs(deadline_secs);
    let done_at = loop {
        rss_max = rss_max.max(rss_kib(sender_pid));
        if appended_at.is_none() && clients.iter().all(|c| c.is_finished()) {
            appended_at = Some(start.elapsed());
            delivered_when_appended = delivered.load(Ordering::Relaxed);
        }
        let nothing_to_wait_for = !subscribe && appended_at.is_some();
        if delivered.load(Ordering::Relaxed) >= events
            || nothing_to_wait_for
            || Instant::now() >= deadline
        {
            break start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let got = delivered.load(Ordering::Relaxed);
    let secs = done_at.as_secs_f64();
    let receiver_rss = rss_kib(beta.child.id());
    stream.abort();
    // The backlog left when the appends ended, and how fast it drained.
    let appended_secs = appended_at.map_or(secs, |d| d.as_secs_f64());
    let backlog = events.saturating_sub(delivered_when_appended);
    let drain_secs = secs - appended_secs;
    let drain_per_sec = if drain_secs > 0.0 {
        (got.saturating_sub(delivered_when_appended)) as f64 / drain_secs
    } else {
        f64::NAN
    };
    println!(
        "federation events={events} delivered={got} appended_secs={appended_secs:.2} secs={secs:.2} delivered_per_sec={:.0} sender_rss_max_mib={} receiver_rss_mib={} complete={} backlog_at_appended={backlog} drain_per_sec={drain_per_sec:.0} appends_per_sec={:.0}",
        got as f64 / secs,
        rss_max / 1024,
        receiver_rss / 1024,
        got >= events,
        events as f64 / appended_secs,
    );
}
