//! SSE fan-out for `bench/run.sh`: N followers of one plan, one appender at
//! a fixed rate, and how long each event took from the appender's clock to
//! each follower's.
//!
//! `sse-fanout ADDR PLAN FOLLOWERS EVENTS RATE_PER_SEC`
//!
//! Prints one line: `followers=… events=… delivered=… expected=… gaps=…
//! p50_ms=… p99_ms=… max_ms=…`. Every follower must see every event once, in
//! seq order (`gaps` counts a missing, repeated or reordered seq). Written
//! with plain tokio sockets (HTTP/1.1, chunked) because a Python or a full
//! HTTP client saturates a core at a few hundred streams, and this client
//! shares the machine with the daemon it measures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Connections opened at once: more only fills the daemon's listen backlog.
const CONNECT_CONCURRENCY: usize = 256;
/// How long after the last append a follower may still wait for events.
const DRAIN: Duration = Duration::from_secs(15);

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// The number after `"name":` in `text`, if any.
fn number_after(text: &str, name: &str) -> Option<u64> {
    let at = text.find(name)? + name.len();
    let digits: String = text[at..]
        .chars()
        .skip_while(|c| *c == ' ')
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

struct Follower {
    latencies_us: Vec<u64>,
    received: u64,
    gaps: u64,
}

/// Opens one stream and returns once the response headers are read.
async fn connect(addr: &str, plan: &str) -> std::io::Result<BufReader<TcpStream>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!(
                "GET /api/plans/{plan}/events/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "stream refused: {}",
            line.trim()
        )));
    }
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 || line == "\r\n" {
            break;
        }
    }
    Ok(reader)
}

/// Reads chunked SSE until `events` data lines arrived or `deadline`.
async fn follow(
    mut reader: BufReader<TcpStream>,
    events: u64,
    deadline: Arc<AtomicU64>,
) -> Follower {
    let mut out = Follower {
        latencies_us: Vec::with_capacity(events as usize),
        received: 0,
        gaps: 0,
    };
    let mut last_seq = 0;
    let mut pending = Vec::new();
    let mut size_line = String::new();
    while out.received < events {
        let wait = deadline.load(Ordering::Relaxed);
        let left = Duration::from_micros(wait.saturating_sub(now_micros()));
        size_line.clear();
        let read = tokio::time::timeout(left, reader.read_line(&mut size_line)).await;
        let Ok(Ok(n)) = read else { break };
        if n == 0 {
            break;
        }
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            continue;
        };
        if size == 0 {
            break;
        }
        let mut chunk = vec![0; size + 2];
        if reader.read_exact(&mut chunk).await.is_err() {
            break;
        }
        pending.extend_from_slice(&chunk[..size]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let text = String::from_utf8_lossy(data);
            let arrived = now_micros();
            if let Some(sent) = number_after(&text, "\"t\":") {
                out.latencies_us.push(arrived.saturating_sub(sent));
            }
            let seq = number_after(&text, "\"seq\":").unwrap_or(0);
            if seq != last_seq + 1 {
                out.gaps += 1;
            }
            last_seq = seq;
            out.received += 1;
        }
    }
    out
}

/// Appends `events` at `rate` per second over one keep-alive connection.
async fn append(addr: &str, plan: &str, events: u64, rate: u64) -> std::io::Result<()> {
    let mut stream = BufReader::new(TcpStream::connect(addr).await?);
    let pad = "x".repeat(900);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut line = String::new();
    for _ in 0..events {
        tick.tick().await;
        let body = format!(
            r#"{{"type":"ledger.transaction","payload":{{"t":{},"pad":"{pad}"}}}}"#,
            now_micros()
        );
        let request = format!(
            "POST /api/plans/{plan}/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nPrefer: return=minimal\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.get_mut().write_all(request.as_bytes()).await?;
        line.clear();
        stream.read_line(&mut line).await?;
        if !line.starts_with("HTTP/1.1 201") {
            return Err(std::io::Error::other(format!(
                "append refused: {}",
                line.trim()
            )));
        }
        let mut length = 0;
        loop {
            line.clear();
            stream.read_line(&mut line).await?;
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await?;
    }
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, plan, followers, events, rate] = &args[..] else {
        eprintln!("usage: sse-fanout ADDR PLAN FOLLOWERS EVENTS RATE_PER_SEC");
        std::process::exit(2);
    };
    let (addr, plan) = (addr.clone(), plan.clone());
    let followers: usize = followers.parse().expect("FOLLOWERS");
    let events: u64 = events.parse().expect("EVENTS");
    let rate: u64 = rate.parse().expect("RATE_PER_SEC");

    // Generous until the appender finishes; then DRAIN more.
    let deadline = Arc::new(AtomicU64::new(u64::MAX));
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut connecting = Vec::with_capacity(followers);
    for _ in 0..followers {
        let (addr, plan, gate) = (addr.clone(), plan.clone(), gate.clone());
        connecting.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore");
            connect(&addr, &plan).await
        }));
    }
    let mut tasks = Vec::with_capacity(followers);
    for c in connecting {
        match c.await.expect("connect task") {
            Ok(reader) => tasks.push(tokio::spawn(follow(reader, events, deadline.clone()))),
            Err(e) => {
                eprintln!("sse-fanout: {e}");
                std::process::exit(1);
            }
        }
    }
    eprintln!(
        "sse-fanout: {followers} followers connected in {:.1?}",
        started.elapsed()
    );
    if let Err(e) = append(&addr, &plan, events, rate).await {
        eprintln!("sse-fanout: {e}");
        std::process::exit(1);
    }
    deadline.store(now_micros() + DRAIN.as_micros() as u64, Ordering::Relaxed);
    let mut latencies = Vec::with_capacity(followers * events as usize);
    let (mut delivered, mut gaps) = (0, 0);
    for task in tasks {
        let f = task.await.expect("follower task");
        delivered += f.received;
        gaps += f.gaps;
        latencies.extend(f.latencies_us);
    }
    latencies.sort_unstable();
    println!(
        "followers={followers} events={events} delivered={delivered} expected={} gaps={gaps} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        followers as u64 * events,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
}
