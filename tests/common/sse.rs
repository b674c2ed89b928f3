//! Server-sent events from a test daemon: opening a stream and a minimal
//! frame reader whose every read is bounded.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;

use super::Daemon;
use super::http::{REQUEST_TIMEOUT, Resp};

/// Longest wait for one SSE read.
pub const SSE_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl Daemon {
    /// Opens an SSE stream; a non-200 answer comes back as `Err`.
    pub async fn sse(&self, path: &str, headers: &[(&str, &str)]) -> Result<SseClient, Resp> {
        // No total timeout: the stream is long-lived; each read is bounded instead.
        let mut request = self
            .client
            .get(self.url(path))
            .header("accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(REQUEST_TIMEOUT, request.send())
            .await
            .expect("SSE connect timed out")
            .expect("SSE connect failed");
        if response.status() != 200 {
            return Err(Resp::read(response).await);
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(
            content_type.starts_with("text/event-stream"),
            "SSE content-type is {content_type:?}"
        );
        Ok(SseClient {
            stream: response
                .bytes_stream()
                .map(|chunk| chunk.map(|b| b.to_vec()).map_err(|e| e.to_string()))
                .boxed(),
            buf: Vec::new(),
        })
    }

    /// Opens an SSE stream that must be accepted.
    pub async fn sse_ok(&self, path: &str, headers: &[(&str, &str)]) -> SseClient {
        match self.sse(path, headers).await {
            Ok(stream) => stream,
            Err(resp) => panic!("SSE {path} refused with {}: {}", resp.status, resp.text),
        }
    }

    /// Opens an SSE stream that must be refused; returns the refusal.
    pub async fn sse_refused(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        match self.sse(path, headers).await {
            Ok(_) => panic!("SSE {path} was accepted; expected a refusal"),
            Err(resp) => resp,
        }
    }
}

/// One SSE frame: a dispatched event, or a comment-only frame (keep-alive).
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub comments: Vec<String>,
}

impl Frame {
    pub fn is_comment_only(&self) -> bool {
        self.id.is_none() && self.event.is_none() && self.data.is_empty()
    }
}

/// A minimal SSE reader over a response body.
pub struct SseClient {
    stream: BoxStream<'static, Result<Vec<u8>, String>>,
    buf: Vec<u8>,
}

impl SseClient {
    /// The next frame. `Ok(None)` at a clean end of stream; `Err` on a
    /// transport error or when nothing arrives within `timeout`.
    pub async fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(frame) = self.take_frame() {
                return Ok(Some(frame));
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Err(format!("no SSE frame within {timeout:?}")),
                Ok(None) if self.buf.iter().all(|b| b.is_ascii_whitespace()) => return Ok(None),
                Ok(None) => {
                    return Err(format!(
                        "stream ended inside a frame: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
                Ok(Some(Err(e))) => return Err(format!("SSE transport error: {e}")),
                Ok(Some(Ok(bytes))) => self.buf.extend(bytes.into_iter().filter(|&b| b != b'\r')),
            }
        }
    }

    fn take_frame(&mut self) -> Option<Frame> {
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let block = String::from_utf8(self.buf[..end].to_vec()).expect("SSE frames are UTF-8");
        self.buf.drain(..end + 2);
        let mut frame = Frame::default();
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(comment) = line.strip_prefix(':') {
                frame.comments.push(comment.trim_start().to_string());
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => frame.id = Some(value.to_string()),
                "event" => frame.event = Some(value.to_string()),
                "data" => data.push(value.to_string()),
                _ => {}
            }
        }
        frame.data = data.join("\n");
        Some(frame)
    }

    /// The next event (skipping keep-alive comments) as `(id, data JSON)`;
    /// panics on timeout, end of stream or a non-message event.
    pub async fn next_event(&mut self) -> (u64, Value) {
        let frame = self.next_message_frame(SSE_READ_TIMEOUT).await;
        assert_eq!(
            frame.event, None,
            "unexpected SSE event name; data: {}",
            frame.data
        );
        let id = frame
            .id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("SSE frame without a numeric id: {frame:?}"));
        let data = serde_json::from_str(&frame.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", frame.data));
        (id, data)
    }

    /// The next frame that is not a keep-alive comment, each read within
    /// `timeout`; panics on timeout or end of stream.
    pub async fn next_message_frame(&mut self, timeout: Duration) -> Frame {
        loop {
            match self.next_frame(timeout).await {
                Ok(Some(frame)) if frame.is_comment_only() => {}
                Ok(Some(frame)) => return frame,
                Ok(None) => panic!("the SSE stream ended while an event was expected"),
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Reads `n` events.
    pub async fn take_events(&mut self, n: usize) -> Vec<(u64, Value)> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_event().await);
        }
        out
    }

    /// The ids (`id:` lines) of the next `n` events.
    pub async fn take_ids(&mut self, n: usize) -> Vec<u64> {
        self.take_events(n)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// Asserts that the stream ends cleanly (after any keep-alives) within
    /// `timeout`; returns the events received before the end.
    pub async fn expect_end(&mut self, timeout: Duration) -> Vec<(u64, Value)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame(left).await {
                Ok(None) => return events,
                Ok(Some(frame)) if frame.is_comment_only() => {}
                Ok(Some(frame)) => {
                    let id = frame
                        .id
                        .as_deref()
                        .and_then(|id| id.parse().ok())
                        .unwrap_or(0);
                    let data = serde_json::from_str(&frame.data).unwrap_or(Value::Null);
                    events.push((id, data));
                }
                Err(e) => panic!("the SSE stream did not end cleanly: {e}"),
            }
        }
    }
}
