//! `GET /api/plans/{plan_id}/events?after=&limit=&verify=`: a page of a
//! plan's events.
//!
//! A page holds up to 1,000 events of up to `max_body_bytes` each, far more
//! than one request may hold in memory. So a page is written as it is read:
//! from storage in runs of at most [`READ_PAGE_BYTES`] of records, each run
//! encoded and sent before the next is read, and a slow reader holds one run.
//! A store error after the first run cuts the body short (the client sees
//! broken JSON, never a shorter valid page, whose length means "the end").
//!
//! `verify=full` checks the whole chain first and then writes the page the
//! same way: its report is about the chain, not the page. `verify=1`
//! checks the page's own events from one snapshot, so they are held
//! together: such a page is refused (400, with the count that fits) when
//! its records pass [`VERIFIED_PAGE_BYTES`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::response::Response;
use logbook_journal::chain::{BrokenReason, ChainReport};
use logbook_journal::store::{AsyncStore, READ_PAGE_BYTES};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::api::{ApiState, missing_plan, page_limit, plan_head};
use super::decimal;
use super::extract::{PlanId, Query};
use super::json_array::{self, Items, Runs};
use super::problem::Problem;

/// Most bytes of stored records a `verify=1` page holds (16 events of the
/// largest default body; 1,000 events of 16 KiB).
pub(crate) const VERIFIED_PAGE_BYTES: usize = 16 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    #[serde(default, deserialize_with = "decimal::u64")]
    after: u64,
    #[serde(default, deserialize_with = "decimal::option_usize")]
    limit: Option<usize>,
    verify: Option<String>,
}

/// What `?verify=` asks for.
enum Verify {
    No,
    /// `1`: this page, in O(page + log n) (`Store::verify_page`).
    Page,
    /// `full`: the whole chain from seq 1.
    Full,
}

/// The members after `events`. Serialized as an object whose `{` becomes
/// the `,` that follows the events array.
#[derive(Serialize)]
struct Tail {
    next_after: u64,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    verification: Option<Verification>,
}

#[derive(Serialize)]
struct Verification {
    chain_valid: bool,
    broken_at: Option<u64>,
    broken_reason: Option<BrokenReason>,
    /// With `broken_reason` `missing-key`: the key id the keyring lacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    missing_key_id: Option<String>,
    verified_count: u64,
    /// Of the verified events, those whose payload was erased: they
    /// verify (their `payload_hash` is signed), and are counted here.
    redacted_count: u64,
    /// With `verify=1`: the signed checkpoint of the head the page was
    /// checked against.
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<String>,
}

impl Verification {
    fn new(report: &ChainReport, checkpoint: Option<String>) -> Verification {
        Verification {
            chain_valid: report.is_valid(),
            broken_at: report.broken.map(|b| b.0),
            broken_reason: report.broken.map(|b| b.1),
            missing_key_id: report
                .broken
                .and_then(|b| b.1.missing_key())
                .map(|id| id.to_string()),
            verified_count: report.verified,
            redacted_count: report.redacted,
            checkpoint,
        }
    }
}

pub(crate) async fn list_events(
    State(state): State<ApiState>,
    PlanId(plan_id): PlanId,
    Query(q): Query<EventsQuery>,
) -> Result<Response, Problem> {
    let limit = page_limit(q.limit)?;
    let verify = match q.verify.as_deref() {
        None | Some("0" | "false") => Verify::No,
        Some("1" | "true") => Verify::Page,
        Some("full") => Verify::Full,
        Some(other) => {
            return Err(Problem::bad_request(
                "invalid-query",
                "Invalid query string",
                format!("verify={other:?}: use 1 (this page), full (the whole chain) or 0"),
            ));
        }
    };
    plan_head(&state, plan_id).await?;
    let after = q.after;
    let verification = match verify {
        Verify::No => None,
        Verify::Page => return checked_page(&state, plan_id, after, limit).await,
        // The whole-chain walk, then the page; one walk at a time. The
        // permit goes with the walk, which stops soon after the client
        // leaves (this future is dropped) but not at once.
        Verify::Full => {
            let walk = state.whole_walk.clone().try_acquire_owned().map_err(|_| {
                Problem::unavailable(
                    "a whole-chain verify (verify=full) is already running; retry when it ends, or check this page with verify=1",
                )
            })?;
            let keyring = state.store.keyring();
            let client_left = AbandonOnDrop::default();
            let abandoned = client_left.0.clone();
            let report = state
                .store
                .run(move |s| {
                    let _walk = walk;
                    s.verify_plan_until(&plan_id, &keyring, &abandoned)
                })
                .await?
                .ok_or_else(|| Problem::internal("the whole-chain walk was abandoned"))?;
            drop(client_left); // Held until here: the walk's own future was kept.
            Some(Verification::new(&report, None))
        }
    };
    let page = Page {
        store: state.store.clone(),
        plan_id,
        after,
        sent: None,
        remaining: limit,
        verification,
    };
    json_array::respond(page_head(&plan_id), page).await
}

/// Set when dropped: the handler's future is dropped when its client
/// leaves, and a walk running on a blocking thread sees it there.
#[derive(Default)]
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `verify=1`: the page and its check from one snapshot, held together.
async fn checked_page(
    state: &ApiState,
    plan_id: Uuid,
    after: u64,
    limit: usize,
) -> Result<Response, Problem> {
    let keyring = state.store.keyring();
    let page = state
        .store
        .run(move |s| s.verify_page(&plan_id, after, limit, VERIFIED_PAGE_BYTES, &keyring))
        .await?
        .map_err(|too_large| {
            Problem::bad_request(
                "invalid-query",
                "Invalid query string",
                format!(
                    "limit={limit} with verify=1: these events hold more than {} MiB, checked together; ask limit={} or less",
                    VERIFIED_PAGE_BYTES >> 20,
                    too_large.fits
                ),
            )
            .with("maxLimit", too_large.fits)
        })?;
    // The plan was there when the handler looked; a snapshot without it
    // means it was deleted since: not an empty, valid plan.
    if page.tree_size == 0 {
        return Err(missing_plan(&state.store, plan_id).await);
    }
    // Never sign a root the page just showed the events do not make.
    let checkpoint = match page.report.broken {
        Some((_, BrokenReason::RootMismatch)) => None,
        _ => Some(
            state
                .log
                .checkpoint_text(&state.store, &plan_id, page.tree_size, page.root)
                .await?,
        ),
    };
    let tail = Tail {
        next_after: page.events.last().map_or(after, |e| e.seq),
        verification: Some(Verification::new(&page.report, checkpoint)),
    };
    json_array::whole(
        page_head(&plan_id),
        |items| page.events.iter().try_for_each(|e| items.push(e)),
        &tail,
    )
}

/// `{"plan_id":"…","events":[`
fn page_head(plan_id: &Uuid) -> Vec<u8> {
    format!(r#"{{"plan_id":"{plan_id}","events":["#).into_bytes()
}

/// A page being written: where the next run starts and how many events
/// may still follow.
struct Page {
    store: AsyncStore,
    plan_id: Uuid,
    after: u64,
    /// The signature of the event at `after`, once one was sent: each later
    /// run checks it is still there.
    sent: Option<[u8; 32]>,
    remaining: usize,
    verification: Option<Verification>,
}

impl Runs for Page {
    type Tail = Tail;

    /// The first run (of at most [`READ_PAGE_BYTES`] of records) comes
    /// with the plan's existence in the same snapshot: 410 if it was
    /// deleted since the handler looked. Each later run checks that the
    /// last event sent is still there: an empty run would end the page as
    /// if the plan ended there.
    async fn next_run(&mut self, items: &mut Items) -> Result<bool, Problem> {
        let (plan_id, after, remaining, sent) =
            (self.plan_id, self.after, self.remaining, self.sent);
        let run = self
            .store
            .run(move |s| match sent {
                None => s.live_plan_events_page(&plan_id, after, remaining, READ_PAGE_BYTES),
                Some(sent) => {
                    s.plan_events_page_after(&plan_id, after, &sent, remaining, READ_PAGE_BYTES)
                }
            })
            .await?;
        let (events, more) = match (run, sent) {
            (Some(run), _) => run,
            (None, None) => return Err(missing_plan(&self.store, plan_id).await),
            (None, Some(_)) => {
                return Err(Problem::not_found(format!(
                    "plan {plan_id} was deleted while a page of it was being written"
                )));
            }
        };
        assert!(events.len() <= self.remaining, "a run within the page");
        for event in &events {
            items.push(event)?;
        }
        self.remaining -= events.len();
        if let Some(last) = events.last() {
            self.after = last.seq;
            self.sent = Some(last.signature);
        }
        // A run ends short of its limits only at the plan's end.
        Ok(self.remaining == 0 || !more)
    }

    fn tail(&mut self) -> Tail {
        Tail {
            next_after: self.after,
            verification: self.verification.take(),
        }
    }

    fn what(&self) -> String {
        format!("a page of plan {}'s events", self.plan_id)
    }
}
