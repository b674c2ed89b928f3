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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

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

/// The number after `name` (say `"seq":`) in `text`, if any.
fn number_after(text: &str, name: &str) -> Option<u64> {
    let digits = text[text.find(name)? + name.len()..].trim_start_matches(' ');
    let len = digits.bytes().take_while(u8::is_ascii_digit).count();
    digits[..len].parse().ok()
}

struct Follower {
    latencies_us: Vec<u64>,
    received: u64,
    gaps: u64,
}

/// Opens one stream; returns it once the response headers are read, with
/// the body bytes read past them.
async fn connect(addr: &str, plan: &str) -> std::io::Result<(TcpStream, Vec<u8>)> {
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
    let early = reader.buffer().to_vec();
    Ok((reader.into_inner(), early))
}

/// Reads chunked SSE until `events` data lines arrived or `stop` fires.
/// Lean on purpose: the client shares the 2 cores with the daemon, and at
/// 10,000 followers every microsecond it spends per event is taken from
/// the daemon it measures. So one buffer per follower, parsed in place,
/// and no timer per read (`stop` is one token for every follower).
async fn follow(
    (mut stream, early): (TcpStream, Vec<u8>),
    events: u64,
    stop: CancellationToken,
) -> Follower {
    let mut out = Follower {
        latencies_us: Vec::with_capacity(events as usize),
        received: 0,
        gaps: 0,
    };
    let mut last_seq = 0;
    // Raw bytes of the chunked body not parsed yet.
    let mut raw: Vec<u8> = Vec::with_capacity(16 << 10);
    raw.extend_from_slice(&early);
    // The SSE text of the chunks, up to the last complete line.
    let mut text: Vec<u8> = Vec::with_capacity(16 << 10);
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    'read: while out.received < events {
        let read = tokio::select! {
            biased;
            _ = &mut stopped => break,
            read = stream.read_buf(&mut raw) => read,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // Chunks: hex size CRLF, data, CRLF.
        let mut at = 0;
        while let Some(eol) = crlf(&raw[at..]) {
            let Some(size) = hex(&raw[at..at + eol]) else {
                break 'read;
            };
            if size == 0 {
                break 'read;
            }
            let data = at + eol + 2;
            if raw.len() < data + size + 2 {
                break;
            }
            text.extend_from_slice(&raw[data..data + size]);
            at = data + size + 2;
        }
        raw.drain(..at);
        // SSE lines.
        let mut line_start = 0;
        while let Some(end) = text[line_start..].iter().position(|b| *b == b'\n') {
            let line = &text[line_start..line_start + end];
            line_start += end + 1;
            let Some(Ok(data)) = line.strip_prefix(b"data:").map(std::str::from_utf8) else {
                continue;
            };
            let arrived = now_micros();
            if let Some(sent) = number_after(data, "\"t\":") {
                out.latencies_us.push(arrived.saturating_sub(sent));
            }
            let seq = number_after(data, "\"seq\":").unwrap_or(0);
            if seq != last_seq + 1 {
                out.gaps += 1;
            }
            last_seq = seq;
            out.received += 1;
        }
        text.drain(..line_start);
    }
    out
}

/// Where the first CRLF in `bytes` starts.
fn crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

fn hex(digits: &[u8]) -> Option<usize> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| usize::from_str_radix(d.trim(), 16).ok())
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

    // Fired DRAIN after the appender finishes: followers still short stop.
    let stop = CancellationToken::new();
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
            Ok(reader) => tasks.push(tokio::spawn(follow(reader, events, stop.clone()))),
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
    let drained = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(DRAIN).await;
        drained.cancel();
    });
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
