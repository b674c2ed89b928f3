//! Offline verification of an NDJSON export (`logbook verify --export FILE`):
//! checks the chain with no daemon and no store, with the HMAC secret(s),
//! and, with `--log-key` and `--checkpoint`, the export against a signed
//! checkpoint of its plan's log, with no HMAC key at all.

use std::io::BufRead;

use logbook_journal::Event;
use logbook_journal::chain::{ChainVerifier, PayloadVerdict, log_entry};
use logbook_journal::checkpoint::plan_verifier;
use logbook_journal::keys::{Keyring, SECRET_ENV_VARS};
use logbook_tlog::checkpoint::{Checkpoint, verify_checkpoint};
use logbook_tlog::merkle::{self, StreamingRoot};
use logbook_tlog::note::Verifier;
use uuid::Uuid;

/// The result of checking an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Valid {
        count: u64,
        head_signature: Option<[u8; 32]>,
        /// Events whose payload was erased: verified, and reported.
        redacted: u64,
    },
    /// The first seq that does not verify, and why.
    Broken { seq: u64, line: u64, reason: String },
}

/// Builds a keyring from the named environment variables (all that are set;
/// the first signs, which does not matter here). With no names, the daemon's
/// own variables are tried in its order.
pub(crate) fn keyring_from_env(
    vars: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Keyring, String> {
    let names: Vec<String> = if vars.is_empty() {
        SECRET_ENV_VARS.iter().map(|s| s.to_string()).collect()
    } else {
        vars.to_vec()
    };
    let mut keyring: Option<Keyring> = None;
    for name in &names {
        let Some(secret) = env(name).filter(|s| !s.is_empty()) else {
            if !vars.is_empty() {
                return Err(format!("--key-env {name}: the variable is not set"));
            }
            continue;
        };
        // Taken as the daemon takes it, byte for byte.
        let secret = secret.into_bytes();
        match &mut keyring {
            Some(k) => k
                .add_verification_key(secret)
                .map_err(|e| format!("--key-env {name}: {e}"))?,
            None => keyring = Some(Keyring::from_secret(secret)),
        }
    }
    keyring.ok_or_else(|| {
        format!(
            "no HMAC secret: set one of {} or name a variable with --key-env",
            SECRET_ENV_VARS.join(", ")
        )
    })
}

/// What `--log-key` and `--checkpoint` ask to check: the export's first
/// `size` events must be the log of the checkpoint, signed by the plan key
/// derived from the instance vkey.
pub(crate) struct LogCheck {
    pub(crate) instance: Verifier,
    pub(crate) checkpoint: Vec<u8>,
}

/// What checking the export against its checkpoint found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogOutcome {
    /// The first `size` events rebuild the checkpoint's root.
    Ok { size: u64 },
    /// The export is shorter than the checkpoint: its tail was cut off.
    Truncated { export: u64, checkpoint: u64 },
    /// The events do not rebuild the checkpoint's root.
    RootMismatch,
    /// The checkpoint is not one of this plan signed by the log key (the
    /// chain outcome says why).
    BadCheckpoint,
}

/// The chain's verdict (format and order always; HMAC when a keyring is
/// given) and, when asked, the log's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    pub(crate) chain: Outcome,
    pub(crate) log: Option<LogOutcome>,
}

/// Lines parsed and hashed per round; each round's lines are spread over
/// every core, then taken in order.
const CHUNK: usize = 8192;

/// Verifies an export read line by line. Lines must be one plan's events
/// from seq 1 in order, as `logbook admin export` writes them. Parsing and
/// hashing (the payload hash, the log leaf) use every core; the chain
/// links are checked in order.
pub(crate) fn verify_export(
    reader: impl BufRead,
    keyring: Option<&Keyring>,
    log: Option<&LogCheck>,
) -> Result<Verified, String> {
    let mut verifier = ChainVerifier::default();
    let mut plan: Option<Uuid> = None;
    let mut count = 0u64;
    let mut leaves = StreamingRoot::new();
    // (checkpoint, the root of the export's first `size` events)
    let mut checkpoint: Option<(Checkpoint, Option<[u8; 32]>)> = None;
    let mut first_break: Option<Outcome> = None;
    let mut lines = reader.lines().enumerate();
    let broken = |seq, line, reason: String| Outcome::Broken { seq, line, reason };
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        for (index, line) in lines.by_ref() {
            let line_no = index as u64 + 1;
            let line = line.map_err(|e| format!("reading line {line_no}: {e}"))?;
            if !line.trim().is_empty() {
                chunk.push((line_no, line));
            }
            if chunk.len() == CHUNK {
                break;
            }
        }
        if chunk.is_empty() {
            break;
        }
        for (parsed, (line_no, _)) in parse_all(&chunk, keyring).into_iter().zip(&chunk) {
            let line_no = *line_no;
            let expected = count + 1;
            let (event, leaf, payload) = match parsed {
                Ok(parsed) => parsed,
                Err(reason) => {
                    return Ok(stop(broken(expected, line_no, reason), log, &checkpoint));
                }
            };
            if *plan.get_or_insert(event.plan_id) != event.plan_id {
                let reason = "plan_id differs from the first event's".to_string();
                return Ok(stop(broken(event.seq, line_no, reason), log, &checkpoint));
            }
            if checkpoint.is_none()
                && let Some(log) = log
            {
                match open_checkpoint(log, &event.plan_id) {
                    Ok(cp) => checkpoint = Some((cp, None)),
                    Err(reason) => {
                        return Ok(Verified {
                            chain: broken(event.seq, line_no, reason),
                            log: Some(LogOutcome::BadCheckpoint),
                        });
                    }
                }
            }
            // Without a key every check but the HMAC still runs: the
            // payload is outside the log's leaves.
            // The payload was checked with the parse, on every core.
            let checked = match first_break {
                Some(_) => Ok(()),
                None => verifier
                    .check_prechecked(&event, payload, keyring)
                    .map_err(|reason| match reason.missing_key() {
                        Some(id) => format!(
                            "missing-key (no secret for key_id {id}: its signature cannot be checked)"
                        ),
                        None => reason.as_str().to_string(),
                    }),
            };
            if let Err(reason) = checked {
                let at = broken(event.seq, line_no, reason);
                if log.is_none() {
                    return Ok(Verified {
                        chain: at,
                        log: None,
                    });
                }
                // Against a checkpoint the root decides; the first break
                // only names where the export went wrong.
                first_break = Some(at);
            }
            count += 1;
            leaves.push(leaf);
            if let Some((cp, root @ None)) = &mut checkpoint
                && cp.size == count
            {
                *root = Some(leaves.root());
            }
        }
    }
    // Every plan has at least one event: an empty file is not an export.
    if count == 0 {
        let reason = "the export holds no events".to_string();
        return Ok(stop(broken(1, 0, reason), log, &checkpoint));
    }
    let log = checkpoint.map(|(cp, root)| match root {
        _ if cp.size > count => LogOutcome::Truncated {
            export: count,
            checkpoint: cp.size,
        },
        Some(root) if root == cp.root => LogOutcome::Ok { size: cp.size },
        // A checkpoint of size 0 is the empty tree, whatever the export holds.
        None if cp.size == 0 && cp.root == merkle::empty_root() => LogOutcome::Ok { size: 0 },
        _ => LogOutcome::RootMismatch,
    });
    Ok(Verified {
        chain: first_break.unwrap_or(Outcome::Valid {
            count,
            head_signature: keyring.and(verifier.last_signature()),
            redacted: verifier.redacted(),
        }),
        log,
    })
}

/// A chain break ends the check. With a checkpoint asked for, the export
/// matches the log only if the checkpoint's events all came before it.
fn stop(
    chain: Outcome,
    log: Option<&LogCheck>,
    state: &Option<(Checkpoint, Option<[u8; 32]>)>,
) -> Verified {
    let log = log.map(|_| match state {
        Some((cp, Some(root))) if *root == cp.root => LogOutcome::Ok { size: cp.size },
        _ => LogOutcome::RootMismatch,
    });
    Verified { chain, log }
}

/// The checkpoint, verified with the plan's key derived from the instance vkey.
fn open_checkpoint(log: &LogCheck, plan: &Uuid) -> Result<Checkpoint, String> {
    let plan_key = plan_verifier(&log.instance, plan)
        .map_err(|e| format!("bad-checkpoint: deriving the key of plan {plan}: {e}"))?;
    verify_checkpoint(&log.checkpoint, &plan_key).map_err(|e| {
        format!("bad-checkpoint: not a checkpoint of plan {plan} signed by the --log-key: {e}")
    })
}

/// Parses each line, checks it is exactly as logbook writes it, computes
/// its log leaf and checks its payload (and, with a keyring, its HMAC at
/// its own date), on every core; results in line order.
fn parse_all(chunk: &[(u64, String)], keyring: Option<&Keyring>) -> Vec<Result<Parsed, String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = chunk.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = chunk
            .chunks(per)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(_, l)| parse_line(l, keyring))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().expect("parsing a line does not panic"))
            .collect()
    })
}

/// An event, its log leaf and its payload's verdict.
type Parsed = (Event, [u8; 32], PayloadVerdict);

fn parse_line(line: &str, keyring: Option<&Keyring>) -> Result<Parsed, String> {
    let event: Event = serde_json::from_str(line).map_err(|e| format!("malformed event: {e}"))?;
    // Exactly as `logbook admin export` writes it: no unknown member, no
    // other spelling of an id or hash. The signature covers the values,
    // not their spelling, so a reader of the file could otherwise see
    // data that nothing signed.
    if serde_json::to_string(&event).ok().as_deref() != Some(line) {
        return Err("not_canonical_line: the line is not as logbook writes it (an unknown member, or another spelling of an id, hash or time)".into());
    }
    let leaf = merkle::leaf_hash(log_entry(&event).as_bytes());
    let payload = match keyring {
        Some(keyring) => PayloadVerdict::of_signed(&event, keyring),
        None => PayloadVerdict::of(&event),
    };
    Ok((event, leaf, payload))
}
