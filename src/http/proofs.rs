//! Log proofs and tiles (issue 10, "Proofs and tiles"; issue 11, the heads
//! log): RFC 9162 inclusion and consistency proofs as JSON, and the C2SP
//! tlog-tiles resources (hash tiles, entry bundles), for a plan log under
//! the log prefix `/api/plans/{plan_id}/` and for the heads log under
//! `/api/v1/log/`. One handler body per resource serves both ([`LogId`]).
//!
//! Precedence of refusals, as the contract lists it: a malformed plan id,
//! then an unknown plan (404; a deleted one 410) before any other parameter
//! is looked at, then
//! malformed numbers, `seq > tree_size`, a size beyond the head, `from > to`.

use axum::Json;
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::decimal::decimal;
use super::extract::Path;
use super::problem::Problem;
use logbook_journal::event::parse_plan_id;
use logbook_journal::store::{AsyncStore, Inclusion, LogId, TileError, TreeRequestError};
use logbook_tlog::merkle::{Hash, ProofRequestError};
use logbook_tlog::tile::TilePath;

/// What the log routes read: the store only.
#[derive(Clone)]
pub(crate) struct ProofState {
    store: AsyncStore,
}

impl FromRef<AppState> for ProofState {
    fn from_ref(state: &AppState) -> ProofState {
        ProofState {
            store: state.store.clone(),
        }
    }
}

/// Full tiles never change: the spec asks that they be cached forever.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// A partial tile is replaced by the full one as the log grows.
const SHORT_LIVED: &str = "public, max-age=5";

/// `GET /api/plans/{plan_id}/events/{seq}/inclusion?tree_size=N`.
pub(crate) async fn inclusion(
    State(state): State<ProofState>,
    Path((plan, seq)): Path<(String, String)>,
    uri: Uri,
) -> Result<Json<Value>, Problem> {
    let plan_id = known_plan(&state, &plan).await?;
    let seq = decimal(&seq).filter(|seq| *seq >= 1).ok_or_else(|| {
        Problem::bad_request(
            "invalid-seq",
            "Invalid seq",
            format!("seq {seq:?} is not a decimal integer of at least 1"),
        )
    })?;
    let found = inclusion_in(&state, LogId::Plan(plan_id), seq - 1, &uri).await?;
    Ok(Json(json!({
        "plan_id": plan_id.to_string(),
        "seq": seq,
        "leaf_index": seq - 1,
        "tree_size": found.size,
        "leaf_hash": BASE64.encode(found.leaf),
        "proof": encode(&found.proof),
    })))
}

/// `GET /api/v1/log/entries/{index}/inclusion?tree_size=N` (heads log).
pub(crate) async fn heads_inclusion(
    State(state): State<ProofState>,
    Path(index): Path<String>,
    uri: Uri,
) -> Result<Json<Value>, Problem> {
    let index = decimal(&index).ok_or_else(|| {
        Problem::bad_request(
            "invalid-index",
            "Invalid index",
            format!("index {index:?} is not a decimal integer from 0 to 2^64-1"),
        )
    })?;
    let found = inclusion_in(&state, LogId::Heads, index, &uri).await?;
    Ok(Json(json!({
        "leaf_index": index,
        "tree_size": found.size,
        "leaf_hash": BASE64.encode(found.leaf),
        "proof": encode(&found.proof),
    })))
}

/// The inclusion proof of leaf `index` of `log` at the query's `tree_size`.
async fn inclusion_in(
    state: &ProofState,
    log: LogId,
    index: u64,
    uri: &Uri,
) -> Result<Inclusion, Problem> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct InclusionQuery {
        tree_size: Option<String>,
    }
    let q: InclusionQuery = query(uri)?;
    let tree_size = q
        .tree_size
        .map(|t| query_number("tree_size", &t))
        .transpose()?;
    if let Some(size) = tree_size
        && index >= size
    {
        return Err(leaf_beyond(log, index, size));
    }
    // The tree API names leaves by seq (index + 1); the last u64 index is
    // beyond every tree, and the size it is refused at is the head's (a
    // `tree_size` given was refused above).
    let Some(seq) = index.checked_add(1) else {
        let (head, _) = state
            .store
            .run(move |s| s.log_tree(log).root(None))
            .await?
            .map_err(|e| refusal(log, e))?;
        return Err(leaf_beyond(log, index, head));
    };
    state
        .store
        .run(move |s| s.log_tree(log).inclusion(seq, tree_size))
        .await?
        .map_err(|e| refusal(log, e))
}

/// `GET /api/plans/{plan_id}/consistency?from=M&to=N`.
pub(crate) async fn consistency(
    State(state): State<ProofState>,
    Path(plan): Path<String>,
    uri: Uri,
) -> Result<Json<Value>, Problem> {
    let plan_id = known_plan(&state, &plan).await?;
    let mut body = consistency_in(&state, LogId::Plan(plan_id), &uri).await?;
    body["plan_id"] = json!(plan_id.to_string());
    Ok(Json(body))
}

/// `GET /api/v1/log/consistency?from=M&to=N` (heads log).
pub(crate) async fn heads_consistency(
    State(state): State<ProofState>,
    uri: Uri,
) -> Result<Json<Value>, Problem> {
    consistency_in(&state, LogId::Heads, &uri).await.map(Json)
}

async fn consistency_in(state: &ProofState, log: LogId, uri: &Uri) -> Result<Value, Problem> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ConsistencyQuery {
        from: Option<String>,
        to: Option<String>,
    }
    let q: ConsistencyQuery = query(uri)?;
    let required = |name: &str, value: Option<String>| {
        let text = value.ok_or_else(|| {
            Problem::bad_request(
                "invalid-query",
                "Invalid query string",
                format!("{name} is required (consistency?from=M&to=N)"),
            )
        })?;
        query_number(name, &text)
    };
    let from = required("from", q.from)?;
    let to = required("to", q.to)?;
    let found = state
        .store
        .run(move |s| s.log_tree(log).consistency(from, to))
        .await?
        .map_err(|e| refusal(log, e))?;
    Ok(json!({
        "from": from,
        "to": to,
        "proof": encode(&found.proof),
    }))
}

/// `GET /api/plans/{plan_id}/tile/{L}/{N}[.p/{W}]` and
/// `GET /api/plans/{plan_id}/tile/entries/{N}[.p/{W}]`.
pub(crate) async fn tile(
    State(state): State<ProofState>,
    Path((plan, rest)): Path<(String, String)>,
    uri: Uri,
) -> Result<Response, Problem> {
    let plan_id = known_plan(&state, &plan).await?;
    tile_of(&state, LogId::Plan(plan_id), &rest, &uri).await
}

/// `GET /api/v1/log/tile/{L}/{N}[.p/{W}]` and `…/tile/entries/…` (heads log).
pub(crate) async fn heads_tile(
    State(state): State<ProofState>,
    Path(rest): Path<String>,
    uri: Uri,
) -> Result<Response, Problem> {
    tile_of(&state, LogId::Heads, &rest, &uri).await
}

async fn tile_of(
    state: &ProofState,
    log: LogId,
    rest: &str,
    uri: &Uri,
) -> Result<Response, Problem> {
    // One URL per tile, for caches too: a tile takes no parameter.
    if uri.query().is_some() {
        return Err(Problem::bad_request(
            "invalid-query",
            "Invalid query string",
            "a tile takes no query parameters",
        ));
    }
    let tile = TilePath::parse(rest).map_err(|e| {
        Problem::bad_request(
            "invalid-tile-path",
            "Invalid tile path",
            format!("{e} (see c2sp.org/tlog-tiles)"),
        )
    })?;
    let bytes = state
        .store
        .run(move |s| s.log_tree(log).tile(&tile))
        .await?
        .map_err(|e| match e {
            TileError::NotInTree => Problem::not_found(format!(
                "tile/{} is beyond {}'s current tree",
                tile.to_path(),
                log_name(log)
            )),
            TileError::EntryTooLong { .. } => Problem::internal(e.to_string()),
        })?;
    let cache = if tile.width.is_none() {
        IMMUTABLE
    } else {
        SHORT_LIVED
    };
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(response)
}

fn log_name(log: LogId) -> String {
    match log {
        LogId::Plan(plan) => format!("plan {plan}"),
        LogId::Heads => "the heads log".into(),
    }
}

/// The plan id of the path, if the plan has events: a malformed id is 400,
/// an unknown plan 404 (a deleted one 410), before any other parameter is
/// checked.
async fn known_plan(state: &ProofState, text: &str) -> Result<Uuid, Problem> {
    let plan_id = parse_plan_id(text).ok_or_else(|| {
        Problem::bad_request(
            "invalid-plan-id",
            "Invalid plan id",
            format!("{text:?} is not a UUID (expected the hyphenated form, like 0192f3a4-5b6c-7d8e-9f00-112233445566)"),
        )
    })?;
    let head = state.store.run(move |s| s.head(&plan_id)).await?;
    match head {
        Some(_) => Ok(plan_id),
        None => Err(super::api::missing_plan(&state.store, plan_id).await),
    }
}

/// The query string as `T`, unknown or repeated parameters refused.
pub(super) fn query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, Problem> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| {
            Problem::bad_request(
                "invalid-query",
                "Invalid query string",
                super::extract::plain_query(&e.body_text()),
            )
        })
}

fn query_number(name: &str, text: &str) -> Result<u64, Problem> {
    decimal(text).ok_or_else(|| {
        Problem::bad_request(
            "invalid-query",
            "Invalid query string",
            format!("{name}={text:?} is not a decimal integer from 0 to 2^64-1"),
        )
    })
}

/// Leaf `index` is not below `size`: a plan names its leaves by seq
/// (index + 1), the heads log by index.
fn leaf_beyond(log: LogId, index: u64, size: u64) -> Problem {
    match log {
        LogId::Plan(_) => Problem::bad_request(
            "seq-beyond-tree-size",
            "Seq beyond tree size",
            format!("seq {} is beyond tree size {size}", index + 1),
        ),
        LogId::Heads => Problem::bad_request(
            "index-beyond-tree-size",
            "Index beyond tree size",
            format!("index {index} is not below tree size {size}"),
        ),
    }
    .with("tree_size", size)
}

/// The store's refusal of a proof request, as the contract's 400s.
fn refusal(log: LogId, e: TreeRequestError) -> Problem {
    match e {
        TreeRequestError::BeyondHead { size, head } => Problem::bad_request(
            "tree-size-beyond-head",
            "Tree size beyond head",
            e.to_string(),
        )
        .with("tree_size", size)
        .with("head", head),
        TreeRequestError::Proof(ProofRequestError::IndexOutOfRange { index, size }) => {
            leaf_beyond(log, index, size)
        }
        TreeRequestError::Proof(ProofRequestError::FromAfterTo { .. }) => {
            Problem::bad_request("from-after-to", "From after to", e.to_string())
        }
    }
}

fn encode(proof: &[Hash]) -> Vec<String> {
    proof.iter().map(|h| BASE64.encode(h)).collect()
}
