//! `admin tail`: follows a plan's events, or every plan's, over the journal's
//! SSE streams until Ctrl-C. The last `id:` seen is the cursor: when the
//! stream ends or the daemon is out of reach (a restart), the client waits
//! with backoff and asks again from that cursor, so nothing is missed and
//! nothing is printed twice.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Method;
use hyper::body::Incoming;
use logbook_journal::registry::TypeFilter;
use serde_json::Value;

use super::events::{payload_summary, type_filter};
use super::output::{compact, text};
use super::transport::segment;
use super::{Client, Failure};
use logbook_base::terminal::inert;

/// First wait before a reconnection; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest SSE line kept: far above the largest event the daemon accepts.
const MAX_LINE: usize = 16 << 20;

/// What `admin tail` follows.
pub(crate) struct TailQuery {
    /// `None`: every plan (`--all`).
    pub(crate) plan: Option<String>,
    pub(crate) type_pattern: Option<String>,
    pub(crate) after: Option<u64>,
}

/// How one connection ended.
enum Ended {
    /// The stream closed or the daemon went away: try again.
    Lost(String),
    /// The daemon refused or ended the stream for good.
    Fatal(Failure),
}

impl Client {
    pub(crate) async fn tail(&self, q: TailQuery) -> Result<(), Failure> {
        let filter = type_filter(q.type_pattern.as_deref())?;
        let mut cursor = match q.after {
            Some(after) => after,
            None => self.head(q.plan.as_deref()).await?,
        };
        if !self.json {
            let what = match &q.plan {
                Some(plan) => format!("plan {plan} after seq {cursor}"),
                None => format!("every plan after position {cursor}"),
            };
            eprintln!("following {what} (Ctrl-C to stop)");
        }
        let mut backoff = FIRST_BACKOFF;
        let mut lost_since: Option<String> = None;
        loop {
            let path = self.stream_path(&q, cursor);
            let ended = match self.try_open(Method::GET, &path).await {
                Err(failure) => Ended::Lost(failure.message),
                Ok(Err((status, failure))) if status.is_server_error() => {
                    Ended::Lost(failure.message)
                }
                Ok(Err((_, failure))) => Ended::Fatal(failure),
                Ok(Ok(body)) => {
                    if lost_since.take().is_some() && !self.json {
                        eprintln!("reconnected; resuming after {cursor}");
                    }
                    backoff = FIRST_BACKOFF;
                    self.follow(body, &filter, q.plan.is_none(), &mut cursor)
                        .await
                }
            };
            match ended {
                Ended::Fatal(failure) => return Err(failure),
                Ended::Lost(why) => {
                    if lost_since.is_none() && !self.json {
                        eprintln!("stream lost ({}); reconnecting", inert(&why));
                    }
                    lost_since.get_or_insert(why);
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The cursor of the current head, so that only new events are shown.
    async fn head(&self, plan: Option<&str>) -> Result<u64, Failure> {
        match plan {
            Some(plan) => {
                let path = format!("/api/plans/{}", segment(plan));
                Ok(self
                    .get_optional(&path)
                    .await?
                    .and_then(|head| head["head_seq"].as_u64())
                    .unwrap_or(0))
            }
            None => {
                let status = self.call(Method::GET, "/status", None).await?;
                status["last_position"]
                    .as_u64()
                    .ok_or_else(|| Failure::new("the daemon did not say its last position".into()))
            }
        }
    }

    fn stream_path(&self, q: &TailQuery, cursor: u64) -> String {
        match &q.plan {
            Some(plan) => format!("/api/plans/{}/events/stream?after={cursor}", segment(plan)),
            None => {
                let mut path = format!("/api/events/stream?after={cursor}");
                if let Some(pattern) = &q.type_pattern {
                    path.push_str(&format!("&types={}", segment(pattern)));
                }
                path
            }
        }
    }

    /// Prints the stream's events until it ends; `cursor` follows every
    /// `id:`, printed or filtered out.
    async fn follow(
        &self,
        mut body: Incoming,
        filter: &TypeFilter,
        all: bool,
        cursor: &mut u64,
    ) -> Ended {
        let mut parser = SseParser::default();
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => return Ended::Lost(e.to_string()),
            };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            let messages = match parser.push(data) {
                Ok(messages) => messages,
                Err(e) => return Ended::Fatal(e),
            };
            for message in messages {
                if message.event.as_deref() == Some("error") {
                    return stream_error(&message.data);
                }
                let Some(id) = message.id.as_deref().and_then(|id| id.parse::<u64>().ok()) else {
                    continue;
                };
                let Ok(event) = serde_json::from_str::<Value>(&message.data) else {
                    return Ended::Fatal(Failure::new(format!("event {id} is not JSON")));
                };
                // Only ever forward: a resumed stream starts after `cursor`.
                assert!(id > *cursor, "the stream went back from {cursor} to {id}");
                *cursor = id;
                if filter.matches(event["type"].as_str().unwrap_or("")) {
                    self.print_event(&event, all);
                }
            }
        }
        Ended::Lost("the daemon closed the stream".into())
    }

    fn print_event(&self, event: &Value, all: bool) {
        if self.json {
            println!("{}", compact(event));
            return;
        }
        let plan = if all {
            format!("{}  ", text(&event["plan_id"]))
        } else {
            String::new()
        };
        println!(
            "{plan}{:>6}  {}  {:<24}  {:<16}  {}",
            text(&event["seq"]),
            text(&event["created_at"]),
            text(&event["type"]),
            text(&event["actor"]),
            payload_summary(event)
        );
    }
}

/// An `event: error`: a deleted plan (410) ends the tail, anything else
/// (a storage error, shutdown) is worth another try.
fn stream_error(data: &str) -> Ended {
    let problem: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let detail = text(&problem["detail"]);
    if problem["status"] == 410 {
        return Ended::Fatal(Failure::new(detail));
    }
    Ended::Lost(detail)
}

/// One SSE message.
#[derive(Debug, Default, PartialEq)]
struct Message {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// The SSE wire format, fed bytes as they come: lines of `field: value`,
/// messages ended by an empty line, comments (keep-alives) skipped.
#[derive(Default)]
struct SseParser {
    line: Vec<u8>,
    current: Message,
    has_data: bool,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<Message>, Failure> {
        let mut done = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                if self.line.len() > MAX_LINE {
                    return Err(Failure::new(format!(
                        "an SSE line is longer than {MAX_LINE} bytes"
                    )));
                }
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = String::from_utf8(line)
                .map_err(|_| Failure::new("the stream sent a line that is not UTF-8".into()))?;
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if self.has_data || self.current.event.is_some() {
                    done.push(std::mem::take(&mut self.current));
                }
                self.current = Message::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = Some(value.to_string()),
                "event" => self.current.event = Some(value.to_string()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages_split_anywhere() {
        let wire = b": keep-alive\n\nid: 7\ndata: {\"a\":1}\n\nevent: error\ndata: {\"status\":410}\r\n\r\n";
        for split in 0..wire.len() {
            let mut parser = SseParser::default();
            let mut got = parser.push(&wire[..split]).unwrap();
            got.extend(parser.push(&wire[split..]).unwrap());
            assert_eq!(
                got,
                vec![
                    Message {
                        id: Some("7".into()),
                        event: None,
                        data: "{\"a\":1}".into()
                    },
                    Message {
                        id: None,
                        event: Some("error".into()),
                        data: "{\"status\":410}".into()
                    },
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_deleted_plan_ends_the_tail_and_other_errors_retry() {
        assert!(matches!(
            stream_error(r#"{"status":410,"detail":"gone"}"#),
            Ended::Fatal(_)
        ));
        assert!(matches!(
            stream_error(r#"{"status":500,"detail":"disk"}"#),
            Ended::Lost(_)
        ));
    }
}
