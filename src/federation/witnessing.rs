//! Being witnessed: one task per witness sends our heads checkpoints to be
//! cosigned over c2sp.org/tlog-witness, and keeps the cosignatures.
//!
//! Invariant: a cosignature is stored only after it verified under the
//! witness's key, over the exact checkpoint we serve; and a witness is only
//! ever shown our log growing (each request carries the consistency proof
//! from the size it last cosigned). A witness that knows a larger size, or
//! refuses our proof, has seen a history we no longer serve: that is a
//! rollback or a fork of this instance, reported loudly, never papered over.
//!
//! The algorithm, per witness, one request at a time (a witness answers 409
//! to anything but its own latest size, so concurrent requests would only
//! fight each other):
//! 1. Read the heads checkpoint. Nothing new since the last cosignature and
//!    that cosignature younger than [`REFRESH`]: sleep.
//! 2. POST `old N`, the proof from N, and the note. On 409, take the size
//!    the witness reports and go again (bounded); on 200, verify and store.
//! 3. Failures back off as the outbox does; one slow witness never delays
//!    another, nor an append (appends never wait on witnesses).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logbook_journal::store::{PeerStatus, WitnessedBy};
use reqwest::StatusCode;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Federation;
use logbook_tlog::cosignature::CosignatureVerifier;

use super::witness_api::{self, HeadsLog};

/// A witness's cosignature older than this is refreshed even when the heads
/// log did not grow, so that the age of the newest quorum measures the
/// witnesses' liveness, not the journal's traffic.
pub(crate) const REFRESH: Duration = Duration::from_secs(60);

/// How far ahead of our clock a cosignature's timestamp may be.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(600);

/// 409 rounds in one attempt before backing off: a witness whose size keeps
/// moving is being fed by someone else (a fork) or is broken.
const MAX_CONFLICTS: usize = 3;

/// Largest answer read from a witness (cosignature lines, a size).
const MAX_ANSWER: usize = 16 * 1024;

/// Where a witness's cosignature key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// A peer's `witnessKey`, from its pinned instance document.
    Peer { instance_id: String },
    /// An outside witness's vkey from `[[witnesses]]`.
    Fixed(String),
}

/// One witness of our heads log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// `peer:<instance id>`, or `witness:<vkey name>` for an outside one.
    pub(crate) name: String,
    /// The submission prefix; requests go to `{prefix}/add-checkpoint`.
    pub(crate) prefix: String,
    pub(crate) key: KeySource,
}

/// What the sender knows of one witness, for `logbook admin status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct WitnessStatus {
    pub(crate) name: String,
    pub(crate) url: String,
    /// Heads-log size it last cosigned, and when (Unix seconds).
    pub(crate) size: u64,
    pub(crate) cosigned_at: u64,
    /// The last failure, if the last attempt failed.
    pub(crate) error: Option<String>,
    /// Set when the witness refused our history (rollback or fork): the
    /// loudest thing this instance can report. Cleared by a cosignature.
    pub(crate) refused: Option<String>,
    pub(crate) attempts: u32,
    /// Its cosignature public key (hex), once read in this run: two
    /// targets answering with one key, under any names, are one witness
    /// for the quorum.
    #[serde(skip)]
    pub(crate) key: Option<String>,
}

/// The witnessing tasks and what they last saw.
#[derive(Default)]
pub(crate) struct Witnessing {
    tasks: Mutex<HashMap<String, (Target, JoinHandle<()>)>>,
    status: Mutex<HashMap<String, WitnessStatus>>,
}

impl Witnessing {
    /// Each current witness's status, by name.
    pub(crate) fn status(&self) -> Vec<WitnessStatus> {
        let running: Vec<String> = lock(&self.tasks).keys().cloned().collect();
        let status = lock(&self.status);
        let mut out: Vec<WitnessStatus> = running
            .iter()
            .filter_map(|name| status.get(name).cloned())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn update(&self, target: &Target, change: impl FnOnce(&mut WitnessStatus)) {
        let mut status = lock(&self.status);
        let entry = status
            .entry(target.name.clone())
            .or_insert_with(|| WitnessStatus {
                name: target.name.clone(),
                url: target.prefix.clone(),
                ..WitnessStatus::default()
            });
        change(entry);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a task for each target that has none, and stops the tasks of
/// witnesses no longer listed. Called at start, on reload, on an admin
/// switch and when peers change.
pub(crate) fn supervise(fed: &Arc<Federation>, targets: Vec<Target>) {
    let Some(heads) = fed.heads.get().cloned() else {
        return; // not started yet: `start` supervises once it is
    };
    let mut tasks = lock(&fed.witnessing.tasks);
    tasks.retain(|name, (target, handle)| {
        let keep = targets.iter().any(|t| t == target) && !handle.is_finished();
        if !keep {
            tracing::info!(witness = %name, "no longer sending heads checkpoints to this witness");
            handle.abort();
        }
        keep
    });
    for target in targets {
        if tasks.contains_key(&target.name) {
            continue;
        }
        let handle = tokio::spawn(run(
            fed.clone(),
            heads.clone(),
            target.clone(),
            fed.shutdown.clone(),
        ));
        tasks.insert(target.name.clone(), (target, handle));
    }
}

/// The witnesses of this instance now: active peers whose switch is on
/// (the admin's, else `[[peers]] witness`, else on), then `[[witnesses]]`.
pub(crate) async fn targets(fed: &Federation) -> Result<Vec<Target>, String> {
    let config_switch = fed.witness_settings.current();
    let (peers, states) = fed
        .store
        .run(|s| {
            Ok::<_, logbook_journal::store::StoreError>((s.peers().list()?, s.witnessed_by()?))
        })
        .await
        .map_err(|e| e.to_string())?;
    let states: HashMap<String, WitnessedBy> = states.into_iter().collect();
    let mut out = Vec::new();
    for peer in peers {
        if peer.status != PeerStatus::Active {
            continue;
        }
        let name = peer_witness_name(&peer.instance_id);
        let switch = states
            .get(&name)
            .and_then(|s| s.switch)
            .or_else(|| config_switch.peers.get(&peer.instance_id).copied())
            .unwrap_or(true);
        if switch {
            out.push(Target {
                name,
                prefix: format!("{}{}", peer.base_url, witness_api::PEER_WITNESS_PREFIX),
                key: KeySource::Peer {
                    instance_id: peer.instance_id.clone(),
                },
            });
        }
    }
    for w in &config_switch.outside {
        out.push(Target {
            name: format!("witness:{}", w.name),
            prefix: w.url.clone(),
            key: KeySource::Fixed(w.vkey.clone()),
        });
    }
    Ok(out)
}

/// The sender's name for a peer as a witness.
pub(crate) fn peer_witness_name(instance_id: &str) -> String {
    format!("peer:{instance_id}")
}

/// The config's part in who witnesses us, swapped on reload.
#[derive(Debug, Default, Clone)]
pub(crate) struct WitnessSettings {
    /// `[[peers]] witness`, by instance id.
    pub(crate) peers: HashMap<String, bool>,
    pub(crate) outside: Vec<OutsideWitness>,
    /// How often the heads log may grow (`[checkpoints] interval_secs`):
    /// how often a task looks for a new checkpoint.
    pub(crate) interval: Duration,
    /// `[checkpoints] witness_quorum`.
    pub(crate) quorum: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct OutsideWitness {
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) vkey: String,
}

/// The witness settings in `config`, checked.
pub(crate) fn settings(config: &crate::config::Config) -> Result<WitnessSettings, String> {
    let mut outside = Vec::new();
    for w in &config.witnesses {
        outside.push(OutsideWitness {
            name: w.name()?,
            url: w.url.clone(),
            vkey: w.vkey.clone(),
        });
    }
    Ok(WitnessSettings {
        peers: config
            .peers
            .iter()
            .map(|p| (p.instance_id.clone(), p.witness))
            .collect(),
        outside,
        interval: Duration::from_secs(config.checkpoints.interval_secs),
        quorum: config.checkpoints.witness_quorum,
    })
}

/// Starts witnessing: from now on the heads log's checkpoints go to every
/// witness. Called once, by the composition root, when the log key and the
/// heads-log pass exist.
pub(crate) fn start(fed: &Arc<Federation>, heads: HeadsLog) {
    if fed.heads.set(heads).is_ok() {
        tokio::spawn(supervisor(fed.clone()));
    }
}

/// Keeps one task per witness: peers come and go (added, suspended,
/// removed) without telling us, so the set is recomputed every interval.
async fn supervisor(fed: Arc<Federation>) {
    loop {
        fed.resupervise_witnesses().await;
        let wait = fed
            .witness_settings
            .current()
            .interval
            .max(Duration::from_secs(1));
        tokio::select! {
            () = fed.shutdown.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    for (_, (_, handle)) in lock(&fed.witnessing.tasks).drain() {
        handle.abort();
    }
}

async fn run(fed: Arc<Federation>, heads: HeadsLog, target: Target, shutdown: CancellationToken) {
    let mut grown = heads.grown.clone();
    let mut attempt = 0u32;
    let mut key: Option<CosignatureVerifier> = None;
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = round(&fed, &heads, &target, &mut key) => outcome,
        };
        let wait = match outcome {
            Ok(()) => {
                attempt = 0;
                // Until the heads log grows, or the cosignature is due a refresh.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = grown.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(REFRESH) => {}
                }
                continue;
            }
            Err(failure) => {
                attempt = attempt.saturating_add(1);
                if failure.refused {
                    tracing::error!(witness = %target.name, url = %target.prefix, error = %failure.text, "a witness REFUSED this instance's heads log: it has seen a history this instance no longer serves (a rollback or a fork); see docs/verifiable-logs.md#witnessing");
                } else {
                    tracing::warn!(witness = %target.name, url = %target.prefix, error = %failure.text, "sending the heads checkpoint to a witness failed; retrying with backoff");
                }
                if failure.forget_key {
                    key = None;
                }
                fed.witnessing.update(&target, |s| {
                    s.error = Some(failure.text.clone());
                    s.attempts = attempt;
                    if failure.refused {
                        s.refused = Some(failure.text.clone());
                    }
                });
                logbook_base::metrics::observe_witness_failure(&target.name, failure.reason);
                logbook_federation::outbox::backoff(fed.config(), attempt)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Why one round failed.
struct Failure {
    text: String,
    /// For the metric: transport, status, key, cosignature, refused.
    reason: &'static str,
    /// The witness refused our history (rollback or fork).
    refused: bool,
    /// Fetch the witness's key again before the next round.
    forget_key: bool,
}

impl Failure {
    fn new(reason: &'static str, text: impl Into<String>) -> Failure {
        Failure {
            text: text.into(),
            reason,
            refused: false,
            forget_key: false,
        }
    }

    fn refused(text: impl Into<String>) -> Failure {
        Failure {
            refused: true,
            ..Failure::new("refused", text)
        }
    }
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One attempt to bring `target` up to our current heads checkpoint.
async fn round(
    fed: &Arc<Federation>,
    heads: &HeadsLog,
    target: &Target,
    key: &mut Option<CosignatureVerifier>,
) -> Result<(), Failure> {
    let (name, signer) = (target.name.clone(), heads.signer.clone());
    let (checkpoint, state) = fed
        .store
        .run(move |s| {
            let checkpoint = witness_api::heads_checkpoint(s, &*signer);
            Ok::<_, logbook_journal::store::StoreError>((checkpoint, s.witnessed_by_one(&name)?))
        })
        .await
        .map_err(|e| Failure::new("storage", e.to_string()))?;
    let checkpoint = checkpoint.map_err(|e| Failure::new("signing", e))?;
    fed.witnessing.update(target, |s| {
        s.size = state.size;
        s.cosigned_at = state.cosigned_at;
    });
    let Some(checkpoint) = checkpoint else {
        return Ok(()); // an empty heads log: nothing to witness yet
    };
    let fresh = unix_now().saturating_sub(state.cosigned_at) < REFRESH.as_secs();
    if state.size == checkpoint.size && fresh {
        return Ok(());
    }
    if key.is_none() {
        let known = witness_api::witness_key(fed, &target.key)
            .await
            .map_err(|e| Failure::new("key", format!("the witness's key: {e}")))?;
        // The quorum counts keys, not targets, from now on: the public key
        // itself, since a cosignature does not sign the key's name.
        let public = logbook_base::hex::encode(known.key.as_bytes());
        fed.witnessing.update(target, |s| s.key = Some(public));
        *key = Some(known);
    }
    let verifier = key.as_ref().expect("set above");
    let mut old = state.size;
    for _ in 0..MAX_CONFLICTS {
        if old > checkpoint.size {
            return Err(Failure::refused(format!(
                "the witness cosigned size {old} of our heads log, but it now has size {}",
                checkpoint.size
            )));
        }
        let proof = if old == 0 || old == checkpoint.size {
            Vec::new()
        } else {
            let size = checkpoint.size;
            fed.store
                .run(move |s| {
                    Ok::<_, logbook_journal::store::StoreError>(witness_api::heads_consistency(
                        s, old, size,
                    ))
                })
                .await
                .map_err(|e| Failure::new("storage", e.to_string()))?
                .map_err(|e| Failure::new("storage", e))?
        };
        let body = witness_api::add_checkpoint_body(old, &proof, &checkpoint.note);
        match post(fed, target, body).await? {
            Answer::Cosigned(text) => {
                let (line, time) = witness_api::verify_cosignatures(verifier, &checkpoint, &text)
                    .map_err(|e| Failure {
                    forget_key: true,
                    ..Failure::new("cosignature", format!("its answer: {e}"))
                })?;
                // Liveness is measured by our clock: a witness that dates its
                // cosignatures ahead would otherwise never look stale.
                let now = unix_now();
                if time > now.saturating_add(MAX_CLOCK_SKEW.as_secs()) {
                    return Err(Failure::new(
                        "cosignature",
                        format!("its cosignature is dated {time}, ahead of our clock ({now})"),
                    ));
                }
                let time = now;
                let (name, size, root) = (target.name.clone(), checkpoint.size, checkpoint.root);
                let stored = fed
                    .store
                    .run(move |s| {
                        if let Err(refused) = s.add_heads_cosignature(size, root, &line)? {
                            return Ok(Err(refused));
                        }
                        s.update_witnessed_by(&name, |w| {
                            w.size = size;
                            w.cosigned_at = time;
                        })
                        .map(Ok)
                    })
                    .await
                    .map_err(|e| Failure::new("storage", e.to_string()))?
                    .map_err(|e| {
                        Failure::new("storage", format!("keeping the cosignature: {e:?}"))
                    })?;
                tracing::debug!(witness = %target.name, size, "heads checkpoint cosigned");
                fed.witnessing.update(target, |s| {
                    s.size = stored.size;
                    s.cosigned_at = stored.cosigned_at;
                    s.error = None;
                    s.refused = None;
                    s.attempts = 0;
                });
                return Ok(());
            }
            Answer::Conflict(size) if size == old => {
                // The witness holds this very size with another root.
                return Err(Failure::refused(format!(
                    "the witness holds another heads checkpoint at size {size}"
                )));
            }
            Answer::Conflict(size) => {
                tracing::info!(witness = %target.name, ours = old, theirs = size, "the witness knows another size of our heads log; proving from it");
                old = size;
            }
        }
    }
    Err(Failure::new(
        "conflict",
        format!("the witness answered 409 {MAX_CONFLICTS} times in a row"),
    ))
}

enum Answer {
    /// 200: the body (cosignature lines).
    Cosigned(String),
    /// 409: the size the witness has.
    Conflict(u64),
}

async fn post(fed: &Federation, target: &Target, body: String) -> Result<Answer, Failure> {
    let url = format!("{}/add-checkpoint", target.prefix);
    let response = fed
        .client
        .post(&url)
        .body(body)
        .send()
        .await
        .map_err(|e| Failure::new("transport", format!("POST {url}: {e}")))?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = read_text(response)
        .await
        .map_err(|e| Failure::new("transport", format!("POST {url}: {e}")))?;
    match status {
        StatusCode::OK => Ok(Answer::Cosigned(text)),
        StatusCode::CONFLICT if content_type.starts_with("text/x.tlog.size") => text
            .trim_end_matches('\n')
            .parse::<u64>()
            .ok()
            .filter(|_| text.len() <= 21)
            .map(Answer::Conflict)
            .ok_or_else(|| Failure::new("status", format!("POST {url}: 409 without a size"))),
        // tlog-witness: 409 without the size type is a refusal of the
        // checkpoint itself (the same size with another root).
        StatusCode::CONFLICT => Err(Failure::refused(format!(
            "POST {url}: 409 {}",
            excerpt(&text)
        ))),
        StatusCode::UNPROCESSABLE_ENTITY => Err(Failure::refused(format!(
            "POST {url}: 422, the witness refused our consistency proof: {}",
            excerpt(&text)
        ))),
        StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => Err(Failure {
            forget_key: true,
            ..Failure::new(
                "status",
                format!(
                    "POST {url}: {status}: the witness does not know our origin or log key yet: {}",
                    excerpt(&text)
                ),
            )
        }),
        _ => Err(Failure::new(
            "status",
            format!("POST {url}: {status}: {}", excerpt(&text)),
        )),
    }
}

/// The first line of an answer, shortened, as inert text for a log line.
fn excerpt(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    logbook_journal::store::inert_text(&line.chars().take(200).collect::<String>())
}

async fn read_text(mut response: reqwest::Response) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(format!("the answer is larger than {MAX_ANSWER} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "the answer is not UTF-8".to_string())
}
