//! One HTTP request per command over the admin socket, and its answer as
//! JSON, as a stream, or as the problem it reports.

use std::io::Write;
use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::Failure;

/// Where the socket is looked for when neither --socket nor
/// $LOGBOOK_ADMIN_SOCKET says: the systemd location, then the default data dir.
const DEFAULT_SOCKETS: [&str; 2] = ["/run/logbook/admin.sock", "./data/admin.sock"];

pub(crate) fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    if let Some(path) = flag {
        return path;
    }
    if let Some(path) = std::env::var_os("LOGBOOK_ADMIN_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    DEFAULT_SOCKETS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKETS[1]))
}

pub(crate) struct Client {
    pub(crate) socket: PathBuf,
    pub(crate) json: bool,
}

impl Client {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Response<Incoming>, Failure> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| {
            Failure::new(format!(
                "cannot connect to the admin socket {}: {e} (is the daemon running? use --socket PATH)",
                self.socket.display()
            ))
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "logbook-admin");
        let body = match body {
            Some(value) => {
                request = request.header("content-type", "application/json");
                Bytes::from(value.to_string())
            }
            None => Bytes::new(),
        };
        Ok(sender.send_request(request.body(Full::new(body))?).await?)
    }

    /// Sends a request and returns its JSON body, or fails with the problem.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"detail": String::from_utf8_lossy(&bytes)}));
        if !status.is_success() {
            return Err(problem_failure(status, &value));
        }
        Ok(value)
    }

    /// GETs a JSON document that may not exist: `None` on 404.
    pub(crate) async fn get_optional(&self, path: &str) -> Result<Option<Value>, Failure> {
        let response = self.send(Method::GET, path, None).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"detail": String::from_utf8_lossy(&bytes)}));
        if !status.is_success() {
            return Err(problem_failure(status, &value));
        }
        Ok(Some(value))
    }

    /// Sends a request whose answer is read as a stream: the body on
    /// success, else the problem.
    pub(crate) async fn open(&self, method: Method, path: &str) -> Result<Incoming, Failure> {
        self.try_open(method, path)
            .await?
            .map_err(|(_, failure)| failure)
    }

    /// Like [`Client::open`], but tells the two failures apart: the outer
    /// error is the daemon out of reach (worth a retry), the inner one the
    /// problem it answered, with its status.
    pub(crate) async fn try_open(
        &self,
        method: Method,
        path: &str,
    ) -> Result<Result<Incoming, (StatusCode, Failure)>, Failure> {
        let response = self.send(method, path, None).await?;
        let status = response.status();
        let body = response.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            let problem = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Ok(Err((status, problem_failure(status, &problem))));
        }
        Ok(Ok(body))
    }
}

/// Writes a streamed body to `out`; returns how many bytes. `what` names the
/// stream in the error when it is cut short.
pub(crate) async fn copy_body(
    body: &mut Incoming,
    out: &mut impl Write,
    what: &str,
) -> Result<u64, Failure> {
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::new(format!("the {what} was cut short: {e}")))?;
        if let Some(data) = frame.data_ref() {
            out.write_all(data)?;
            bytes += data.len() as u64;
        }
    }
    Ok(bytes)
}

fn problem_failure(status: StatusCode, v: &Value) -> Failure {
    let title = v["title"]
        .as_str()
        .unwrap_or(status.canonical_reason().unwrap_or("error"));
    let detail = v["detail"].as_str().unwrap_or("");
    Failure {
        message: format!("{title}: {detail} ({})", status.as_u16()),
        problem: Some(v.clone()),
    }
}

/// Keeps a user-typed path segment from adding segments or a query.
pub(crate) fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
