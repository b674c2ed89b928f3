//! The messages listing (both directions, paged by one cursor) and the
//! continuity anomalies of received journal events.
//!
//! A message's payload can be as large as a request body and a page holds
//! up to [`MAX_LIST`] of them, so both listings are written as they are
//! read (`json_array`): one storage page per run, bounded in bytes. A
//! filter that matches little reads on one run at a time, as the client
//! takes the answer, and stops when it leaves.

use axum::extract::State;
use axum::response::Response;
use logbook_journal::store::{
    AsyncStore, ContinuityKind, DeliveryStatus, InboxEntry, OutboxEntry, READ_PAGE_BYTES,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

use super::messages::{STREAM_PAGE, inbound};
use crate::http::AppState;
use crate::http::decimal::{self, decimal};
use crate::http::extract::Query;
use crate::http::json_array::{self, Items, Runs};
use crate::http::problem::Problem;

/// Largest page of the messages listing (the default is 100).
const MAX_LIST: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MessagesQuery {
    direction: Option<String>,
    status: Option<String>,
    peer: Option<String>,
    #[serde(default, deserialize_with = "decimal::option_usize")]
    limit: Option<usize>,
    after: Option<String>,
}

/// Where a page of the messages listing starts: after an outbound row
/// (`o:SEQ:PEER`) or after an inbound position (`i:POSITION`). Outbound
/// rows are listed first (by peer, then seq), then inbound ones.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MessagesCursor {
    Outbound(String, u64),
    Inbound(u64),
}

impl MessagesCursor {
    fn parse(text: &str) -> Option<MessagesCursor> {
        match text.split_once(':')? {
            ("i", position) => decimal(position).map(MessagesCursor::Inbound),
            ("o", rest) => {
                let (seq, peer) = rest.split_once(':')?;
                Some(MessagesCursor::Outbound(peer.to_string(), decimal(seq)?))
            }
            _ => None,
        }
    }

    fn text(&self) -> String {
        match self {
            MessagesCursor::Outbound(peer, seq) => format!("o:{seq}:{peer}"),
            MessagesCursor::Inbound(position) => format!("i:{position}"),
        }
    }
}

/// An outbound message as the listing shows it. The payload, stored as
/// canonical JSON, is embedded as it is.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutboundMessage<'a> {
    direction: &'static str,
    message_id: Uuid,
    peer: &'a str,
    seq: u64,
    event_type: &'a str,
    /// `null` for a stored text that is not JSON (never written so).
    payload: Option<&'a RawValue>,
    status: &'static str,
    attempts: u32,
    last_error: &'a Option<String>,
    created_at: i64,
    updated_at: i64,
    /// Unix ms, only while `retrying`.
    next_attempt_at: Option<i64>,
}

fn outbound(e: &OutboxEntry) -> OutboundMessage<'_> {
    let r = &e.record;
    OutboundMessage {
        direction: "outbound",
        message_id: Uuid::from_bytes(r.message_id),
        peer: &e.peer,
        seq: e.seq,
        event_type: &r.event_type,
        payload: serde_json::from_str(&r.payload).ok(),
        status: r.status.as_str(),
        attempts: r.attempts,
        last_error: &r.last_error,
        created_at: r.created_at,
        updated_at: r.updated_at,
        next_attempt_at: (r.status == DeliveryStatus::Retrying).then_some(r.next_attempt_at),
    }
}

/// `GET …/events/messages`: outbound rows (by peer, then seq), then
/// inbound ones (by position), `limit` (default 100, at most 10000) at a
/// time; `after=` the previous page's `next_after` continues.
pub(super) async fn messages(
    State(state): State<AppState>,
    Query(q): Query<MessagesQuery>,
) -> Result<Response, Problem> {
    let bad =
        |detail: String| Problem::bad_request("invalid-query", "Invalid query string", detail);
    let (inbound, outbound) = match q.direction.as_deref() {
        None | Some("") => (true, true),
        Some("inbound") => (true, false),
        Some("outbound") => (false, true),
        Some(other) => return Err(bad(format!("direction={other:?}: use inbound or outbound"))),
    };
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            bad(format!(
                "status={s:?}: use pending, delivered, retrying or dead"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIST {
        return Err(bad(format!("limit={limit} is out of range 1..={MAX_LIST}")));
    }
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(text) => Some(MessagesCursor::parse(text).ok_or_else(|| {
            bad("after= takes the next_after of a previous page (o:SEQ:PEER or i:POSITION)".into())
        })?),
    };
    if matches!(after, Some(MessagesCursor::Inbound(_))) && !inbound
        || matches!(after, Some(MessagesCursor::Outbound(..))) && !outbound
    {
        return Err(bad(
            "after= is a cursor of the other direction than direction= asks for".into(),
        ));
    }
    // Inbound messages are all `delivered`.
    let inbound = inbound && status.is_none_or(|s| s == DeliveryStatus::Delivered);
    let phase = match &after {
        Some(MessagesCursor::Outbound(peer, seq)) => Phase::Outbound(Some((peer.clone(), *seq))),
        Some(MessagesCursor::Inbound(position)) if inbound => Phase::Inbound(*position),
        Some(MessagesCursor::Inbound(_)) => Phase::Done,
        None if outbound => Phase::Outbound(None),
        None if inbound => Phase::Inbound(0),
        None => Phase::Done,
    };
    let listing = MessagesListing {
        store: state.store.clone(),
        peer: q.peer.filter(|p| !p.is_empty()),
        status,
        inbound,
        phase,
        remaining: limit,
        last: after,
    };
    json_array::respond(json_array::head("messages"), listing).await
}

/// The direction a messages listing is reading, and where it goes on.
enum Phase {
    /// After this (peer, seq), or from the start.
    Outbound(Option<(String, u64)>),
    /// After this position.
    Inbound(u64),
    Done,
}

struct MessagesListing {
    store: AsyncStore,
    peer: Option<String>,
    status: Option<DeliveryStatus>,
    /// Whether inbound messages follow the outbound ones.
    inbound: bool,
    phase: Phase,
    remaining: usize,
    /// The cursor of the last message listed, or the one given while none
    /// was: what `next_after` says.
    last: Option<MessagesCursor>,
}

#[derive(Serialize)]
struct MessagesTail {
    next_after: Option<String>,
}

impl Runs for MessagesListing {
    type Tail = MessagesTail;

    async fn next_run(&mut self, items: &mut Items) -> Result<bool, Problem> {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Outbound(from) => {
                let (peer, start) = (self.peer.clone(), from.clone());
                let (page, more) = self
                    .store
                    .run(move |s| {
                        let start = start.as_ref().map(|(p, seq)| (p.as_str(), *seq));
                        s.outbox()
                            .after(peer.as_deref(), start, STREAM_PAGE, READ_PAGE_BYTES)
                    })
                    .await?;
                let mut scanned = from;
                for e in &page {
                    if self.remaining == 0 {
                        break;
                    }
                    scanned = Some((e.peer.clone(), e.seq));
                    if self.status.is_some_and(|s| s != e.record.status) {
                        continue;
                    }
                    items.push(&outbound(e))?;
                    self.remaining -= 1;
                    self.last = Some(MessagesCursor::Outbound(e.peer.clone(), e.seq));
                }
                self.phase = if more && self.remaining > 0 {
                    Phase::Outbound(scanned)
                } else if self.inbound && self.remaining > 0 {
                    Phase::Inbound(0)
                } else {
                    Phase::Done
                };
            }
            Phase::Inbound(from) => {
                let (page, more) = self
                    .store
                    .run(move |s| s.inbox().after(from, STREAM_PAGE, READ_PAGE_BYTES))
                    .await?;
                let mut scanned = from;
                for e in &page {
                    if self.remaining == 0 {
                        break;
                    }
                    scanned = e.record.position;
                    if self.peer.as_deref().is_some_and(|p| p != e.record.peer) {
                        continue;
                    }
                    items.push(&inbound(e))?;
                    self.remaining -= 1;
                    self.last = Some(MessagesCursor::Inbound(e.record.position));
                }
                if more && self.remaining > 0 {
                    self.phase = Phase::Inbound(scanned);
                }
            }
            Phase::Done => {}
        }
        Ok(matches!(self.phase, Phase::Done))
    }

    /// Like the events route: the cursor of the last message listed, or
    /// the one given when the page is empty. A page shorter than `limit`
    /// is the end for now.
    fn tail(&mut self) -> MessagesTail {
        MessagesTail {
            next_after: self.last.as_ref().map(MessagesCursor::text),
        }
    }

    fn what(&self) -> String {
        "the federation messages listing".into()
    }
}

/// `GET …/events/continuity`: received journal events that broke their
/// origin's chain (gaps and forks), in receive order.
pub(super) async fn continuity(State(state): State<AppState>) -> Result<Response, Problem> {
    let anomalies = Anomalies {
        store: state.store.clone(),
        after: Some(0),
    };
    json_array::respond(json_array::head("anomalies"), anomalies).await
}

struct Anomalies {
    store: AsyncStore,
    /// The inbox position read up to; `None` once the inbox ended.
    after: Option<u64>,
}

impl Runs for Anomalies {
    type Tail = Value;

    async fn next_run(&mut self, items: &mut Items) -> Result<bool, Problem> {
        let Some(from) = self.after else {
            return Ok(true);
        };
        let (page, more) = self
            .store
            .run(move |s| s.inbox().after(from, STREAM_PAGE, READ_PAGE_BYTES))
            .await?;
        for e in page.iter().filter(|e| is_anomaly(e)) {
            items.push(&inbound(e))?;
        }
        self.after = page.last().map(|e| e.record.position).filter(|_| more);
        Ok(self.after.is_none())
    }

    fn tail(&mut self) -> Value {
        json!({})
    }

    fn what(&self) -> String {
        "the federation continuity listing".into()
    }
}

fn is_anomaly(e: &InboxEntry) -> bool {
    e.record
        .continuity
        .as_ref()
        .is_some_and(|c| matches!(c.kind, ContinuityKind::Gap | ContinuityKind::Fork))
}

#[cfg(test)]
mod tests {
    use super::MessagesCursor;

    #[test]
    fn messages_cursors_round_trip() {
        for c in [
            MessagesCursor::Inbound(7),
            MessagesCursor::Outbound("peer:with.colons".into(), 12),
        ] {
            assert_eq!(MessagesCursor::parse(&c.text()), Some(c));
        }
        for bad in [
            "",
            "7",
            "i:",
            "i:x",
            "o:12",
            "o:x:beta",
            "x:1",
            "i:01",
            "i:+1",
            "o:01:beta",
        ] {
            assert_eq!(MessagesCursor::parse(bad), None, "{bad}");
        }
    }
}
