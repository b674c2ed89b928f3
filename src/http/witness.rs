//! `POST /api/v1/witness/add-checkpoint` (c2sp.org/tlog-witness): this
//! instance cosigns its active peers' heads logs. The request format and
//! the rule are `logbook_tlog::witness`'s; the peers' log keys come from
//! `federation::peer_logs`; this module orders the checks, keeps the state
//! and the evidence, and answers.
//!
//! Order: body cap (413), request and note syntax (400), origin of an
//! active peer (404), the log's signature (403), the origin's bond to that
//! peer (403), the rate (429, charged by what the checkpoint would do),
//! then the rule (400, 409 with `text/x.tlog.size`, 422, or 200 with the
//! cosignature line). Requests for one origin that may write run one at a
//! time, so a check and the write after it are atomic (the spec's race);
//! the checkpoint cosigned last, sent again, is answered from memory
//! without that lock (`WitnessState::cosign_if_last` says why that is
//! safe).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use logbook_federation::inbox::RateLimiter;
use logbook_federation::message::BoundKey;
use logbook_journal::event::Timestamp;
use logbook_journal::store::{
    EvidenceStored, MAX_ORIGINS_PER_PEER, PeerStatus, WitnessEvidence, WitnessLatest,
};
use logbook_tlog::checkpoint::{Checkpoint, verify_checkpoint};
use logbook_tlog::cosignature::Cosigner;
use logbook_tlog::note::{Note, NoteError};
use logbook_tlog::witness::{self, AddCheckpoint, Latest, SIZE_CONTENT_TYPE, Verdict};

use super::AppState;
use super::extract::read_body;
use super::log::BindingCache;
use super::problem::Problem;
use crate::config::WitnessConfig;
use crate::federation::peer_logs::{PeerLog, PeerLogs};

pub(crate) const ADD_CHECKPOINT_PATH: &str = "/api/v1/witness/add-checkpoint";
/// The rate bucket that unknown origins share.
const UNKNOWN_ORIGIN_BUCKET: &str = "";

/// The witness key and what the route keeps between requests.
pub(crate) struct WitnessState {
    cosigner: Cosigner,
    binding: BindingCache,
    peers: PeerLogs,
    limiter: RateLimiter,
    max_body: usize,
    /// One lock per origin in use (at most [`MAX_ORIGINS`] kept idle).
    origins: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The checkpoint last cosigned per origin in this run, and for which
    /// peer: what the store holds. A request that moves an origin's state
    /// forgets it here before it writes, and records the new one after.
    /// A cache of at most [`MAX_ORIGINS`] origins.
    cosigned: Mutex<HashMap<String, Cosigned>>,
}

/// Origins whose lock and last cosigned checkpoint are kept in memory: far
/// more than there are peers, while a peer renaming its log at every read
/// of its document cannot grow them without bound.
const MAX_ORIGINS: usize = 1024;

/// A checkpoint cosigned, as [`WitnessState::cosigned`] remembers it.
#[derive(Clone, PartialEq, Eq)]
struct Cosigned {
    size: u64,
    root: [u8; 32],
    owner: String,
}

impl WitnessState {
    pub(crate) fn new(cosigner: Cosigner, config: &WitnessConfig) -> WitnessState {
        WitnessState {
            cosigner,
            binding: BindingCache::new(BoundKey::Witness),
            peers: PeerLogs::default(),
            limiter: RateLimiter::new(config.rate_per_sec, config.rate_burst),
            max_body: config.max_body_bytes,
            origins: Mutex::new(HashMap::new()),
            cosigned: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `checkpoint`, sent with `old` and an empty proof by `owner`,
    /// is the one cosigned last for its origin: the sender refreshing its
    /// cosignature, or anyone replaying it.
    fn is_last(
        cosigned: &HashMap<String, Cosigned>,
        owner: &str,
        old: u64,
        proof_len: usize,
        checkpoint: &Checkpoint,
    ) -> bool {
        cosigned.get(&checkpoint.origin).is_some_and(|c| {
            c.owner == owner
                && c.size == checkpoint.size
                && c.root == checkpoint.root
                && old == checkpoint.size
                && proof_len == 0
        })
    }

    /// The cosignature line over `checkpoint` if it is the one cosigned last
    /// ([`WitnessState::is_last`]), signed while the map is held: a request
    /// moving the origin on forgets it under the same lock before writing,
    /// so a checkpoint already superseded in the store is never signed.
    fn cosign_if_last(
        &self,
        owner: &str,
        old: u64,
        proof_len: usize,
        checkpoint: &Checkpoint,
        checkpoint_text: &str,
    ) -> Result<Option<String>, Problem> {
        let cosigned = self.cosigned.lock().unwrap_or_else(|e| e.into_inner());
        if !Self::is_last(&cosigned, owner, old, proof_len, checkpoint) {
            return Ok(None);
        }
        cosignature_line(self, checkpoint_text).map(Some)
    }

    fn forget(&self, origin: &str) {
        let mut all = self.cosigned.lock().unwrap_or_else(|e| e.into_inner());
        all.remove(origin);
    }

    fn remember(&self, origin: &str, cosigned: Cosigned) {
        let mut all = self.cosigned.lock().unwrap_or_else(|e| e.into_inner());
        if all.len() >= MAX_ORIGINS && !all.contains_key(origin) {
            all.clear();
        }
        all.insert(origin.to_string(), cosigned);
    }

    /// The witness vkey (type 0x04, named `{origin_prefix}`).
    pub(crate) fn vkey(&self) -> String {
        self.cosigner.verifier().to_vkey()
    }

    /// `witnessKeySignature` for the instance document, by `key`.
    pub(crate) fn binding_signature(
        &self,
        instance_id: &str,
        key: &logbook_federation::identity::OwnKey,
    ) -> Result<String, Problem> {
        self.binding.signature(instance_id, key, &self.vkey())
    }

    fn origin_lock(&self, origin: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        if origins.len() >= MAX_ORIGINS && !origins.contains_key(origin) {
            // Only locks nobody holds or waits for go.
            origins.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        origins.entry(origin.to_string()).or_default().clone()
    }
}

pub(crate) fn router() -> Router<AppState> {
    Router::new().route(ADD_CHECKPOINT_PATH, post(add_checkpoint))
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn bad_request(detail: impl Into<String>) -> Problem {
    Problem::bad_request(
        "invalid-checkpoint",
        "Invalid add-checkpoint request",
        detail,
    )
}

async fn add_checkpoint(State(state): State<AppState>, req: Request) -> Response {
    match handle(&state, req).await {
        Ok(response) => response,
        Err(problem) => {
            let retry = problem.extra.get("retryAfter").and_then(|v| v.as_u64());
            let mut response = problem.into_response();
            if let Some(seconds) = retry {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
    }
}

async fn handle(state: &AppState, req: Request) -> Result<Response, Problem> {
    let witness = &state.witness;
    // A slow sender gets the JSON routes' time limit.
    let timeout = Duration::from_secs(state.limits.current().request_timeout_secs);
    let body = read_body(req, witness.max_body, timeout).await?;
    let request = AddCheckpoint::parse(&body).map_err(|e| bad_request(e.to_string()))?;
    let note = Note::parse(&request.note).map_err(|e| bad_request(e.to_string()))?;
    let checkpoint = Checkpoint::parse(&note.text).map_err(|e| bad_request(e.to_string()))?;
    let origin = checkpoint.origin.as_str();
    // Our own origins (the heads log and every plan log) are never a
    // peer's, whatever key name a peer's document binds; an origin the
    // store cannot keep is no peer's either.
    let own = state.log.origin_prefix();
    if origin == own
        || origin
            .strip_prefix(own.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
        || origin.len() > logbook_journal::store::MAX_ORIGIN_BYTES
    {
        return Err(unknown_origin(origin));
    }

    let rate = |bucket: &str| {
        witness.limiter.take(bucket, 1).map_err(|wait| {
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                "too many add-checkpoint requests; retry later",
            )
            .with("retryAfter", wait)
        })
    };
    // An origin not known yet costs a read of the peers' documents, at most
    // one per `peer_logs::MIN_REFRESH` for all requests together; only
    // then do unknown origins share one bucket, so that a flood of them
    // cannot keep a peer whose origin was not read yet from being found.
    let peer = match witness.peers.lookup(origin) {
        Some(peer) => peer,
        None => match resolve(state, origin, false).await? {
            Some(peer) => peer,
            None => {
                rate(UNKNOWN_ORIGIN_BUCKET)?;
                return Err(unknown_origin(origin));
            }
        },
    };
    // Buckets other than the peer's own are named with a '/', which no
    // instance id holds.
    let replay_bucket = format!("replay/{}", peer.instance_id);
    // A note the pinned key refuses costs a refetch of the peer's key
    // document, bounded by a bucket of its own.
    let refresh_bucket = format!("refresh/{}", peer.instance_id);
    let peer = verified_peer(state, peer, &request.note, || rate(&refresh_bucket)).await?;

    // The checkpoint cosigned last, again: answered without the origin's
    // lock, a bucket or a write, so that a flood of replays (anyone can
    // send the peer's public checkpoints) queues nothing in front of the
    // peer's next one. The peer must still be active; a checkpoint
    // superseded meanwhile goes on to the full check.
    let last = |cosigned: &HashMap<String, Cosigned>| {
        WitnessState::is_last(
            cosigned,
            &peer.instance_id,
            request.old,
            request.proof.len(),
            &checkpoint,
        )
    };
    if last(&witness.cosigned.lock().unwrap_or_else(|e| e.into_inner())) {
        let instance_id = peer.instance_id.clone();
        let active = state
            .store
            .run(move |s| s.peers().get(&instance_id))
            .await?
            .is_some_and(|p| p.status == PeerStatus::Active);
        if !active {
            rate(&replay_bucket)?;
            return Err(unknown_origin(origin));
        }
        if let Some(line) = witness.cosign_if_last(
            &peer.instance_id,
            request.old,
            request.proof.len(),
            &checkpoint,
            &note.text,
        )? {
            return Ok(cosigned_answer(line));
        }
    }

    // Taken by the write that may follow, so it is held until that write
    // has committed even if this request is dropped while it waits.
    let mut serialised = Some(witness.origin_lock(origin).lock_owned().await);
    let (key, instance_id) = (origin.to_string(), peer.instance_id.clone());
    let (stored, owner, active, owned) = state
        .store
        .run(move |s| {
            let status = |id: &str| {
                Ok::<_, logbook_journal::store::StoreError>(s.peers().get(id)?.map(|p| p.status))
            };
            // The owner keeps its origin until it is removed: a peer
            // suspended for a while comes back to find it still its own.
            let owner = match s.witness_owner(&key)? {
                Some(owner) => {
                    let holds = owner == instance_id
                        || status(&owner)?.is_some_and(|s| s != PeerStatus::Removed);
                    Some((owner, holds))
                }
                None => None,
            };
            let stored = s.witness_latest(&key)?;
            // A log new here: how many this peer has had already.
            let owned = match (&stored, &owner) {
                (None, None) => s.witness_origins_owned(&instance_id, MAX_ORIGINS_PER_PEER)?,
                _ => 0,
            };
            Ok::<_, logbook_journal::store::StoreError>((
                stored,
                owner,
                status(&instance_id)? == Some(PeerStatus::Active),
                owned,
            ))
        })
        .await?;
    let bound_elsewhere = match &owner {
        Some((owner, true)) if *owner != peer.instance_id => Some(owner),
        _ => None,
    };
    let bound_here = owner.as_ref().is_some_and(|(o, _)| *o == peer.instance_id);
    // The peer must still be active: it may have been removed meanwhile.
    if !active {
        rate(&replay_bucket)?;
        return Err(unknown_origin(origin));
    }
    // An origin stays with the peer it was cosigned for until that peer is
    // removed: another peer whose document names it (or a restart that
    // could not read the owner's document) does not take it over. Charged,
    // so that the warning below is bounded too.
    if let Some(owner) = bound_elsewhere {
        rate(&replay_bucket)?;
        tracing::warn!(origin = %logbook_journal::store::inert_text(origin), %owner, claimant = %peer.instance_id, "a peer sent a checkpoint of an origin cosigned for another active peer; refused");
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "origin-bound",
            "Origin bound to another peer",
            format!(
                "{:?} is the heads log of another peer (one not removed)",
                logbook_journal::store::inert_text(origin)
            ),
        ));
    }
    // Each log's latest checkpoint is kept for good, so a peer renaming its
    // log again and again would grow them without end.
    if owned >= MAX_ORIGINS_PER_PEER {
        rate(&replay_bucket)?;
        return Err(super::witness_origins::over_limit(
            origin,
            &peer.instance_id,
        ));
    }
    let latest = stored.as_ref().map(|l| Latest {
        size: l.size,
        root: l.root,
    });
    let outcome = witness::check(latest.as_ref(), request.old, &checkpoint, &request.proof);
    let unchanged = latest
        .as_ref()
        .is_some_and(|l| l.size == checkpoint.size && l.root == checkpoint.root);
    // The peer's own allowance is spent only by a checkpoint that moves its
    // state. Anyone can resend the peer's signed checkpoints with any proof:
    // what writes evidence of a kind anyone can cause (a rollback, a bad
    // proof, a fork already kept) takes a bucket of its own. What writes
    // nothing (the checkpoint cosigned again, a 409 telling a peer the size
    // it must extend, a 400) takes none, so that draining that bucket
    // cannot lock the peer out.
    let evidence = match (outcome.evidence, &stored) {
        (Some(kind), Some(cosigned)) => Some((
            kind,
            evidence_row(&checkpoint, kind, cosigned, &request.note),
        )),
        _ => None,
    };
    match (&outcome.verdict, &evidence) {
        (Verdict::Cosign, _) if unchanged => {}
        (Verdict::Cosign, _) => rate(&peer.instance_id)?,
        // A fork this witness would keep is kept whatever the bucket: it
        // only holds back the same fork again, or one past the caps.
        (_, Some((witness::EvidenceKind::Fork, row))) => {
            if let Err(limited) = rate(&replay_bucket) {
                let row = row.clone();
                let room = state
                    .store
                    .run(move |s| s.witness_evidence_room(&row))
                    .await?;
                if room != EvidenceStored::New {
                    return Err(limited);
                }
            }
        }
        (_, Some(_)) => rate(&replay_bucket)?,
        _ => {}
    }
    if let Some((kind, row)) = evidence {
        keep_evidence(state, kind, row, serialised.take()).await?;
    }
    match outcome.verdict {
        Verdict::OldTooLarge => Err(bad_request(format!(
            "old {} is larger than the checkpoint's size {}",
            request.old, checkpoint.size
        ))),
        Verdict::Conflict { size } => Ok(text(
            StatusCode::CONFLICT,
            SIZE_CONTENT_TYPE,
            witness::size_body(size),
        )),
        Verdict::BadProof => Err(Problem::unprocessable(
            "bad-proof",
            "Bad consistency proof",
            format!(
                "the proof does not show size {} extends the cosigned size {}",
                checkpoint.size, request.old
            ),
        )),
        Verdict::Cosign => {
            let now = Timestamp::now();
            // The state moves, durably, before the answer: a crash after it
            // keeps the state. The same size and root again writes nothing,
            // once the origin's bond to the peer is recorded.
            let cosigned = Cosigned {
                size: checkpoint.size,
                root: checkpoint.root,
                owner: peer.instance_id.clone(),
            };
            if !unchanged || !bound_here {
                witness.forget(origin);
                let record = WitnessLatest {
                    size: checkpoint.size,
                    root: checkpoint.root,
                    // Parsed as UTF-8 above.
                    note: String::from_utf8_lossy(&request.note).into_owned(),
                    cosigned_at: now.millis(),
                };
                let (key, owner) = (origin.to_string(), peer.instance_id.clone());
                let remember = state.witness.clone();
                // The origin's lock goes with the write, and is released
                // once it has committed and its checkpoint is remembered: a
                // request dropped while its write waits must not let the
                // next one read (and move on from) the state before it.
                state
                    .store
                    .run(move |s| {
                        let _serialised = serialised.take();
                        s.put_witness_latest(&key, &record, &owner)?;
                        remember.remember(&key, cosigned);
                        Ok::<_, logbook_journal::store::StoreError>(())
                    })
                    .await?;
            } else {
                witness.remember(origin, cosigned);
            }
            if stored.is_none() {
                super::witness_origins::warn_if_renamed(state, origin, &peer.instance_id).await;
            }
            cosignature_line(witness, &note.text).map(cosigned_answer)
        }
    }
}

/// This witness's cosignature line over `checkpoint_text`, now.
fn cosignature_line(witness: &WitnessState, checkpoint_text: &str) -> Result<String, Problem> {
    let seconds = u64::try_from(Timestamp::now().millis() / 1000).unwrap_or(0);
    let line = witness
        .cosigner
        .cosign(checkpoint_text, seconds)
        .map_err(|e| Problem::internal(format!("cosigning: {e}")))?;
    Ok(line.to_line())
}

/// The 200 answer with the cosignature line.
fn cosigned_answer(line: String) -> Response {
    text(StatusCode::OK, "text/plain; charset=utf-8", line)
}

/// The peer whose heads log is `origin`, read again from the documents
/// (`PeerLogs::find`), or, when several claim it, the one its checkpoints
/// were cosigned for.
async fn resolve(
    state: &AppState,
    origin: &str,
    refetch: bool,
) -> Result<Option<PeerLog>, Problem> {
    // A contested origin is settled from what is known before anything is
    // read again: its owner's requests do not wait on the documents.
    if !refetch && let Some(owner) = owner_among_claimants(state, origin).await? {
        return Ok(Some(owner));
    }
    if let Some(peer) = state
        .witness
        .peers
        .find(&state.federation, origin, refetch)
        .await
    {
        return Ok(Some(peer));
    }
    owner_among_claimants(state, origin).await
}

/// The peer among those whose documents all name `origin` (so that none
/// is found for it by name) whose checkpoints this witness cosigned for
/// it: a peer that claims another's origin cannot stop it being witnessed.
async fn owner_among_claimants(state: &AppState, origin: &str) -> Result<Option<PeerLog>, Problem> {
    let claimants = state.witness.peers.claimants(origin);
    if claimants.len() < 2 {
        return Ok(None);
    }
    let key = origin.to_string();
    let owner = state.store.run(move |s| s.witness_owner(&key)).await?;
    Ok(claimants
        .into_iter()
        .find(|c| owner.as_deref() == Some(c.instance_id.as_str())))
}

fn unknown_origin(origin: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "unknown-origin",
        "Unknown origin",
        format!(
            "{:?} is not the heads log of an active peer",
            logbook_journal::store::inert_text(origin)
        ),
    )
}

/// Checks `note` against the peer's pinned log key; if that fails, takes
/// `refresh` (the refetch's rate) and checks it against the key the peer
/// publishes now, which may have rotated.
async fn verified_peer(
    state: &AppState,
    peer: PeerLog,
    note: &[u8],
    refresh: impl FnOnce() -> Result<(), Problem>,
) -> Result<PeerLog, Problem> {
    let forbidden = |e: NoteError| {
        Problem::new(
            StatusCode::FORBIDDEN,
            "bad-signature",
            "Bad checkpoint signature",
            format!("the checkpoint is not signed by the peer's log key: {e}"),
        )
    };
    match verify_checkpoint(note, &peer.verifier) {
        Ok(_) => return Ok(peer),
        Err(NoteError::Malformed(what)) => return Err(bad_request(what)),
        Err(_) => {}
    }
    refresh()?;
    let origin = peer.verifier.name.clone();
    let again = resolve(state, &origin, true)
        .await?
        .ok_or_else(|| unknown_origin(&origin))?;
    verify_checkpoint(note, &again.verifier).map_err(forbidden)?;
    Ok(again)
}

/// The evidence row of `refused`, which contradicts `cosigned`.
fn evidence_row(
    refused: &Checkpoint,
    kind: witness::EvidenceKind,
    cosigned: &WitnessLatest,
    refused_note: &[u8],
) -> WitnessEvidence {
    WitnessEvidence {
        origin: refused.origin.clone(),
        kind: kind.as_str().to_string(),
        cosigned_note: cosigned.note.clone(),
        cosigned_size: cosigned.size,
        refused_note: String::from_utf8_lossy(refused_note).into_owned(),
        refused_size: refused.size,
        at: Timestamp::now().millis(),
    }
}

/// Keeps both signed notes, counts and logs them.
async fn keep_evidence(
    state: &AppState,
    kind: witness::EvidenceKind,
    evidence: WitnessEvidence,
    serialised: Option<tokio::sync::OwnedMutexGuard<()>>,
) -> Result<(), Problem> {
    let (cosigned_size, refused_size) = (evidence.cosigned_size, evidence.refused_size);
    let row = evidence.clone();
    // The origin's lock, if held, goes with the write (see `handle`).
    let stored = state
        .store
        .run(move |s| {
            let _serialised = serialised;
            s.add_witness_evidence(&row)
        })
        .await?;
    let origin = logbook_journal::store::inert_text(&evidence.origin);
    match stored {
        EvidenceStored::Known => tracing::warn!(
            %origin, reason = kind.as_str(), cosigned_size, refused_size,
            "a witnessed log sent a checkpoint already kept as evidence"
        ),
        EvidenceStored::New | EvidenceStored::Full => {
            logbook_base::metrics::observe_witness_evidence(&origin, kind.as_str());
            tracing::error!(
                %origin, reason = kind.as_str(), cosigned_size, refused_size,
                kept = stored == EvidenceStored::New,
                "a witnessed log contradicts the checkpoint cosigned before; refused, evidence kept (logbook admin witness evidence)"
            );
        }
    }
    Ok(())
}
