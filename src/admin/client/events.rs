//! `admin events`: a plan's events as a table for people, read page by page
//! from the journal API that the admin socket serves under `/api`.

use hyper::Method;
use logbook_journal::registry::TypeFilter;
use serde_json::{Value, json};

use super::output::{Table, compact, items, pretty, text, truncate};
use super::transport::segment;
use super::{Client, Failure};

/// The journal API's largest page.
const PAGE: u64 = 1000;
/// Characters of payload a table row shows.
pub(crate) const PAYLOAD_WIDTH: usize = 60;

/// What `admin events` reads.
pub(crate) struct EventsQuery {
    pub(crate) plan: String,
    pub(crate) after: u64,
    pub(crate) limit: u64,
    pub(crate) type_pattern: Option<String>,
    pub(crate) full: bool,
}

/// `--type`, checked before anything is sent so a typo is named as such.
pub(crate) fn type_filter(pattern: Option<&str>) -> Result<TypeFilter, Failure> {
    TypeFilter::parse(pattern.unwrap_or(""))
        .map_err(|e| Failure::new(format!("--type {:?}: {e}", pattern.unwrap_or(""))))
}

impl Client {
    pub(crate) async fn events(&self, q: EventsQuery) -> Result<(), Failure> {
        let filter = type_filter(q.type_pattern.as_deref())?;
        let plan = segment(&q.plan);
        let mut events: Vec<Value> = Vec::new();
        let mut cursor = q.after;
        // Pages until `limit` events matched or the plan ends; with a type
        // filter the daemon sends every type, and this side keeps the matches.
        loop {
            let want = (q.limit - events.len() as u64).min(PAGE);
            let page_size = if q.type_pattern.is_some() { PAGE } else { want };
            let path = format!("/api/plans/{plan}/events?after={cursor}&limit={page_size}");
            let page = self.call(Method::GET, &path, None).await?;
            let got: Vec<&Value> = items(&page["events"]).collect();
            for event in &got {
                cursor = event["seq"].as_u64().unwrap_or(cursor);
                if filter.matches(event["type"].as_str().unwrap_or(""))
                    && (events.len() as u64) < q.limit
                {
                    events.push((*event).clone());
                }
            }
            if (got.len() as u64) < page_size || events.len() as u64 >= q.limit {
                break;
            }
        }
        let next_after = events
            .last()
            .and_then(|e| e["seq"].as_u64())
            .unwrap_or(q.after);
        let answer = json!({"plan_id": q.plan, "events": events, "next_after": next_after});
        self.show(&answer, |_| {
            if q.full {
                for event in &events {
                    println!("{}", pretty(event));
                }
            } else {
                let mut table = Table::new(&[">SEQ", "TIME", "TYPE", "ACTOR", "PAYLOAD"]);
                for event in &events {
                    table.row(row(event));
                }
                table.print();
            }
            if events.len() as u64 == q.limit {
                eprintln!("(more may follow: --after {next_after})");
            }
        });
        Ok(())
    }
}

/// One event as table cells: seq, time, type, actor, payload summary.
pub(crate) fn row(event: &Value) -> Vec<String> {
    vec![
        text(&event["seq"]),
        text(&event["created_at"]),
        text(&event["type"]),
        text(&event["actor"]),
        payload_summary(event),
    ]
}

/// The payload on one line, cut to [`PAYLOAD_WIDTH`] characters;
/// `(redacted)` for an erased one.
pub(crate) fn payload_summary(event: &Value) -> String {
    if event["redacted"] == true {
        return "(redacted)".into();
    }
    truncate(&compact(&event["payload"]), PAYLOAD_WIDTH)
}
