//! HTTP against a test daemon: request builders with a bounded timeout, the
//! journal API calls the tests repeat, raw HTTP/1.1 for requests a client
//! library will not send, and the RFC 9457 problem check.

use std::fmt::Display;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::Daemon;

/// Longest wait for any single HTTP request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

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
    pub(super) async fn read(response: reqwest::Response) -> Resp {
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

/// Sends a request and reads the whole response.
pub async fn send(request: reqwest::RequestBuilder) -> Resp {
    let response = request.send().await.expect("HTTP request failed");
    Resp::read(response).await
}

impl Daemon {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).timeout(REQUEST_TIMEOUT)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).timeout(REQUEST_TIMEOUT)
    }

    /// `GET path` → status and body.
    pub async fn get_json(&self, path: &str) -> Resp {
        send(self.get(path)).await
    }

    /// The value of the `/metrics` sample named `sample` (labels included,
    /// as exposed), if there is one.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let text = self
            .get("/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    /// `GET path` with `Authorization: Bearer token`.
    pub async fn get_as(&self, path: &str, token: &str) -> Resp {
        send(self.get(path).bearer_auth(token)).await
    }

    /// `POST /api/plans/{plan}/events` with a JSON body.
    pub async fn append(&self, plan: impl Display, body: Value) -> Resp {
        send(self.post(&format!("/api/plans/{plan}/events")).json(&body)).await
    }

    /// Like [`Daemon::append`], with `Authorization: Bearer token`.
    pub async fn append_as(&self, plan: impl Display, body: Value, token: &str) -> Resp {
        let auth = format!("Bearer {token}");
        self.append_with(plan, body, &[("authorization", &auth)])
            .await
    }

    /// Like [`Daemon::append`], with extra headers.
    pub async fn append_with(
        &self,
        plan: impl Display,
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
    pub async fn append_ok(&self, plan: impl Display, body: Value) -> Value {
        let resp = self.append(plan, body).await;
        assert_eq!(resp.status, 201, "append failed: {}", resp.text);
        resp.json
    }

    /// Every event of a plan, following `next_after` pages.
    pub async fn all_events(&self, plan: impl Display) -> Vec<Value> {
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

    /// `GET /api/plans/{plan}/events?verify=full` (the whole chain, not
    /// just the one-event page) → the whole body.
    pub async fn verify(&self, plan: impl Display) -> Value {
        let resp = self
            .get_json(&format!("/api/plans/{plan}/events?verify=full&limit=1"))
            .await;
        assert_eq!(resp.status, 200, "verify: {}", resp.text);
        resp.json
    }

    /// `GET /api/plans/{plan}`: `None` for 404 (no events) and 410 (deleted).
    pub async fn head(&self, plan: impl Display) -> Option<Value> {
        let resp = self.get_json(&format!("/api/plans/{plan}")).await;
        match resp.status {
            200 => Some(resp.json),
            404 => {
                assert_problem(&resp, 404);
                None
            }
            410 => {
                assert_eq!(
                    assert_problem(&resp, 410),
                    "urn:logbook:problem:plan-deleted"
                );
                None
            }
            other => panic!("GET plan head: unexpected {other}: {}", resp.text),
        }
    }

    /// The heads log's entries `[0, size)`, from its entry tile (C2SP
    /// tlog-tiles: each a big-endian u16 length and its bytes); one
    /// partial tile, so `size` is below 256.
    pub async fn heads_log_entries(&self, size: u64) -> Vec<Vec<u8>> {
        assert!(size > 0 && size < 256);
        let resp = self
            .get(&format!("/api/v1/log/tile/entries/000.p/{size}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let bytes = resp.bytes().await.unwrap();
        let mut out = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            out.push(rest[2..2 + len].to_vec());
            rest = &rest[2 + len..];
        }
        assert_eq!(out.len() as u64, size);
        out
    }

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
