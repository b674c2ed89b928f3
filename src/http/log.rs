//! Plan checkpoints and the log keys (issue 10): `GET
//! /api/plans/{plan_id}/checkpoint`, `GET /api/plans/{plan_id}/log-key` and
//! `GET /api/v1/log/keys`, all behind the `read` scope. The signing, the
//! names and the cache are `logbook_journal::checkpoint`'s; this module
//! only reads the tree head and shapes the answers.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use logbook_base::reloadable::Reloadable;
use logbook_federation::identity::OwnKey;
use logbook_federation::message::{BoundKey, sign_key_binding};
use logbook_journal::checkpoint::CheckpointSigner;
use logbook_journal::event::Timestamp;
use logbook_journal::log_key::{LogKeys, RetiredLogKey};
use logbook_journal::store::{AsyncStore, LogId, SigningRefused};
use serde_json::{Value, json};
use uuid::Uuid;

use super::AppState;
use super::auth;
use super::extract::{NoQuery, PlanId};
use super::problem::Problem;

/// The log key in use (replaced whole by a rotation), and the instance
/// document's binding signature (RSA-PSS is slow; it is made once per RSA
/// key and log key).
pub(crate) struct LogState {
    current: Reloadable<CurrentLogKey>,
    binding: BindingCache,
}

/// A key binding signature of the instance document (`logKeySignature`,
/// `witnessKeySignature`), made once per RSA key and vkey: RSA-PSS is slow.
pub(crate) struct BindingCache {
    kind: BoundKey,
    /// (RSA key id, vkey, signature).
    signed: Mutex<Option<(String, String, String)>>,
}

impl BindingCache {
    pub(crate) fn new(kind: BoundKey) -> BindingCache {
        BindingCache {
            kind,
            signed: Mutex::new(None),
        }
    }

    /// The signature over `vkey` by `key`.
    pub(crate) fn signature(
        &self,
        instance_id: &str,
        key: &OwnKey,
        vkey: &str,
    ) -> Result<String, Problem> {
        let mut signed = self.signed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((key_id, bound, signature)) = signed.as_ref()
            && *key_id == key.key_id
            && bound == vkey
        {
            return Ok(signature.clone());
        }
        let signature = sign_key_binding(key, self.kind, instance_id, vkey).map_err(|e| {
            Problem::internal(format!("signing {}: {e}", self.kind.signature_member()))
        })?;
        *signed = Some((key.key_id.clone(), vkey.to_string(), signature.clone()));
        Ok(signature)
    }
}

/// One log key with its history; a rotation starts a new signer (and so a
/// new checkpoint cache).
pub(crate) struct CurrentLogKey {
    signer: CheckpointSigner,
    from: Timestamp,
    retired: Vec<RetiredLogKey>,
}

impl LogState {
    pub(crate) fn new(keys: LogKeys) -> LogState {
        LogState {
            current: Reloadable::new(CurrentLogKey::new(keys)),
            binding: BindingCache::new(BoundKey::Log),
        }
    }

    /// Signs with `keys` from now on.
    pub(crate) fn replace(&self, keys: LogKeys) {
        self.current.replace(CurrentLogKey::new(keys));
    }

    /// The signed note text of `plan_id`'s checkpoint at `size` with
    /// `root`, once the store agreed it is consistent with every checkpoint
    /// signed before for the plan.
    pub(crate) async fn checkpoint_text(
        &self,
        store: &AsyncStore,
        plan_id: &Uuid,
        size: u64,
        root: [u8; 32],
    ) -> Result<String, Problem> {
        check_signing(store, LogId::Plan(*plan_id), size, root).await?;
        self.sign(plan_id, size, root)
    }

    /// The signed note text of deleted `plan_id`'s final checkpoint, at
    /// `size` with `root`: its tree is gone, so the deletion's record, and
    /// the final checkpoint the deletion recorded as signed after checking
    /// it against the last one signed, are what it must match.
    pub(crate) async fn deleted_checkpoint_text(
        &self,
        store: &AsyncStore,
        plan_id: &Uuid,
        size: u64,
        root: [u8; 32],
    ) -> Result<String, Problem> {
        let id = *plan_id;
        store
            .run(move |s| s.check_deleted_signing(&id, size, root))
            .await?
            .map_err(|reason| {
                Problem::new(
                    StatusCode::CONFLICT,
                    "inconsistent-checkpoint",
                    "Inconsistent checkpoint",
                    reason,
                )
            })?;
        self.sign(plan_id, size, root)
    }

    /// `plan_id`'s checkpoint at (`size`, `root`), signed: the callers
    /// have checked it may be.
    fn sign(&self, plan_id: &Uuid, size: u64, root: [u8; 32]) -> Result<String, Problem> {
        let note = self
            .current
            .current()
            .signer
            .sign(plan_id, size, root)
            .map_err(|e| Problem::internal(format!("signing the checkpoint: {e}")))?;
        Ok(note.to_text())
    }

    /// The heads log's signed checkpoint at (`size`, `root`), with the
    /// cosignature lines collected for it after the log's signature.
    pub(crate) async fn heads_checkpoint_text(
        &self,
        store: &AsyncStore,
        size: u64,
        root: [u8; 32],
    ) -> Result<String, Problem> {
        let current = self.current.current();
        store
            .run(move |s| s.heads_checkpoint(&current.signer, size, root))
            .await?
            .map_err(refusal)
    }

    /// The instance vkey, named `{origin_prefix}`.
    pub(crate) fn instance_vkey(&self) -> String {
        self.current.current().signer.instance_verifier().to_vkey()
    }

    /// `{origin_prefix}`, the name the log key signs under.
    pub(crate) fn origin_prefix(&self) -> String {
        self.current
            .current()
            .signer
            .instance_verifier()
            .name
            .clone()
    }

    /// `logKeySignature` for the instance document, by `key`.
    pub(crate) fn binding_signature(
        &self,
        instance_id: &str,
        key: &OwnKey,
        vkey: &str,
    ) -> Result<String, Problem> {
        self.binding.signature(instance_id, key, vkey)
    }
}

/// Refuses to sign a checkpoint inconsistent with one signed before under
/// the same origin (the store counted and logged it).
async fn check_signing(
    store: &AsyncStore,
    log: LogId,
    size: u64,
    root: [u8; 32],
) -> Result<(), Problem> {
    let checked = store.run(move |s| s.check_signing(log, size, root)).await?;
    checked.map_err(refusal)
}

fn refusal(refused: SigningRefused) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "inconsistent-checkpoint",
        "Inconsistent checkpoint",
        refused.to_string(),
    )
    .with("signed_size", refused.last_size)
}

impl CurrentLogKey {
    fn new(keys: LogKeys) -> CurrentLogKey {
        CurrentLogKey {
            signer: CheckpointSigner::new(keys.signer),
            from: keys.from,
            retired: keys.retired,
        }
    }
}

/// What the log routes read.
#[derive(Clone)]
pub(crate) struct LogApi {
    pub(crate) store: AsyncStore,
    pub(crate) log: Arc<LogState>,
    /// For the witness quorum a bundle is proved against (`witnessed.rs`).
    pub(crate) federation: Arc<crate::federation::Federation>,
}

impl FromRef<AppState> for LogApi {
    fn from_ref(state: &AppState) -> LogApi {
        LogApi {
            store: state.store.clone(),
            log: state.log.clone(),
            federation: state.federation.clone(),
        }
    }
}

pub(crate) fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/plans/{plan_id}/checkpoint", get(checkpoint))
        .route("/api/plans/{plan_id}/log-key", get(plan_log_key))
        .route("/api/v1/log/keys", get(log_keys))
        .route(
            "/api/v1/log/checkpoint",
            get(super::witnessed::heads_checkpoint),
        )
        .route_layer(from_fn_with_state(state.tokens.clone(), auth::require_read))
}

/// The plan's head (tree size) and root; 404 when it has no events, 410
/// when it was deleted.
async fn head_root(store: &AsyncStore, plan_id: Uuid) -> Result<(u64, [u8; 32]), Problem> {
    let outcome = store
        .run(move |s| s.tree(&plan_id).root(None))
        .await?
        .map_err(|e| Problem::internal(format!("reading the head's root: {e}")))?;
    match outcome {
        (0, _) => Err(super::api::missing_plan(store, plan_id).await),
        found => Ok(found),
    }
}

/// `text/plain; charset=utf-8` with a cache policy.
pub(crate) fn text(body: String, cache: &'static str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/plans/{plan_id}/checkpoint`: the signed note of the head;
/// with `?witnessed=1`, the bundle (`witnessed.rs`), which a deleted plan
/// has too: its deletion's entry. An unknown plan is 404 before the query
/// is read, as on the proof routes; a deleted one is 410 once the query
/// (not `witnessed=1`) is read, or before it while the heads log has not
/// recorded the deletion yet.
async fn checkpoint(
    State(state): State<LogApi>,
    PlanId(plan_id): PlanId,
    uri: Uri,
) -> Result<Response, Problem> {
    let head = head_root(&state.store, plan_id).await;
    // No head: an unknown plan, or a deleted one (whose bundle is kept).
    if let Err(no_head) = &head {
        let entry = state.store.run(move |s| s.heads_entry(&plan_id)).await?;
        if !entry.is_some_and(|entry| entry.deleted) {
            return Err(no_head.clone());
        }
    }
    let query: CheckpointQuery = super::proofs::query(&uri)?;
    match query.witnessed.as_deref() {
        None | Some("0") => {}
        Some("1") => return super::witnessed::bundle(&state, plan_id).await,
        Some(other) => {
            return Err(Problem::bad_request(
                "invalid-query",
                "Invalid query string",
                format!("witnessed={other:?} must be 1 or 0"),
            ));
        }
    }
    // A deleted plan has no head to sign: 410.
    let (size, root) = head?;
    let note = state
        .log
        .checkpoint_text(&state.store, &plan_id, size, root)
        .await?;
    // The head moves with every append: revalidate each time.
    Ok(text(note, "no-cache"))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointQuery {
    witnessed: Option<String>,
}

/// `GET /api/plans/{plan_id}/log-key`: the plan's vkey, derived from the
/// instance vkey (it changes only with a key rotation).
async fn plan_log_key(
    State(state): State<LogApi>,
    PlanId(plan_id): PlanId,
    _: NoQuery,
) -> Result<Response, Problem> {
    head_root(&state.store, plan_id).await?;
    let verifier = state
        .log
        .current
        .current()
        .signer
        .plan_verifier(&plan_id)
        .map_err(|e| Problem::internal(format!("deriving the plan's key: {e}")))?;
    Ok(text(verifier.to_vkey(), "no-cache"))
}

/// `GET /api/v1/log/keys`: the current instance vkey and the retired ones,
/// with when each was in use.
async fn log_keys(State(state): State<LogApi>) -> Response {
    let log = state.log.current.current();
    let body: Value = json!({
        "current": {"vkey": log.signer.instance_verifier().to_vkey(), "from": log.from},
        "retired": log.retired,
    });
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        axum::Json(body),
    )
        .into_response()
}

/// The witnessing sender signs heads checkpoints with the current log key.
impl crate::federation::witness_api::HeadsSigner for LogState {
    fn heads_checkpoint(
        &self,
        store: &logbook_journal::store::Store,
        size: u64,
        root: [u8; 32],
    ) -> Result<
        Result<String, logbook_journal::store::SigningRefused>,
        logbook_journal::store::StoreError,
    > {
        store.heads_checkpoint(&self.current.current().signer, size, root)
    }
}
