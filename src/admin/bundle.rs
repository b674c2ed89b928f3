//! The witnessed bundle, checked offline (`logbook verify --export FILE
//! --bundle FILE --log-key VKEY --witness VKEY… [--quorum K]`, issue 11).
//!
//! The instance vkey is given (`--log-key`), never taken from the bundle:
//! it is the one key the auditor pins, and both the heads checkpoint
//! (origin and key name `{origin_prefix}`) and the plan checkpoint (the
//! derived plan key) must verify with it. The checks, in order:
//! 1. the heads checkpoint is signed by the log key under its own origin;
//! 2. the heads entry is the one the plan checkpoint makes (recomputed
//!    here from the plan checkpoint's origin, size and root);
//! 3. the entry is included at `heads_index` in the heads checkpoint's tree,
//!    and it is the plan's latest there: `later_entries` are every entry
//!    after it (with the left side of the inclusion path they rebuild the
//!    tree's root), and none records the plan. Without this a log could
//!    show an old entry of the plan inside a freshly cosigned tree;
//! 4. at least `quorum` distinct `--witness` keys cosigned that checkpoint
//!    (cosignature/v1);
//! 5. the quorum is fresh: the `quorum`-th newest of those cosignatures is
//!    at most `--max-age` old (a rolled-back log keeps serving the last
//!    checkpoint its witnesses cosigned, and only its age shows that they
//!    have not cosigned anything since). One dated more than
//!    [`MAX_AHEAD_SECS`] ahead of this clock does not count.
//!
//! The plan checkpoint itself is checked against the export by
//! `offline.rs`, as a `--checkpoint` is.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use logbook_journal::checkpoint::plan_verifier;
use logbook_journal::store::heads_entry_bytes;
use logbook_tlog::checkpoint::verify_checkpoint;
use logbook_tlog::cosignature::CosignatureVerifier;
use logbook_tlog::merkle::{Hash, StreamingRoot, leaf_hash, verify_inclusion};
use logbook_tlog::note::{Note, Verifier};
use serde::Deserialize;
use uuid::Uuid;

/// Largest bundle read: a few notes, a proof of at most 64 hashes, and at
/// most `MAX_LATER_ENTRIES` (2,048) later entries of about 140 bytes.
pub(crate) const MAX_BUNDLE_BYTES: usize = 1024 * 1024;
/// Most hashes an inclusion proof can have (a tree of 2^64 leaves).
const MAX_PROOF: usize = 64;
/// `--max-age`'s default, in seconds: the viewer's bound too
/// (`MAX_COSIGNATURE_AGE` in `src/ui/plan.js`). Witnesses that see the log
/// grow cosign again within a minute or so.
pub(crate) const DEFAULT_MAX_AGE_SECS: u64 = 10 * 60;
/// A cosignature dated further ahead of this clock than this is not
/// counted: it would stay "fresh" for as long as its date is ahead.
const MAX_AHEAD_SECS: u64 = 10 * 60;

/// The JSON shape of `GET /api/plans/{plan_id}/checkpoint?witnessed=1`
/// (docs/http-api.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Bundle {
    pub(crate) plan_id: Uuid,
    pub(crate) plan_checkpoint: String,
    pub(crate) heads_index: u64,
    pub(crate) heads_entry: String,
    pub(crate) inclusion_proof: Vec<String>,
    /// Every heads-log entry after `heads_index`, up to the heads
    /// checkpoint's size.
    pub(crate) later_entries: Vec<String>,
    pub(crate) heads_checkpoint: String,
}

/// What the bundle proves once its signatures and proof hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Witnessed {
    /// The plan checkpoint's size: what the witnesses saw of the plan.
    pub(crate) plan_size: u64,
    pub(crate) heads_size: u64,
    pub(crate) heads_index: u64,
    /// The times (Unix seconds) of the cosignatures of distinct
    /// `--witness` keys that verified, newest first.
    pub(crate) cosigned: Vec<u64>,
    /// The plan was deleted at this checkpoint.
    pub(crate) deleted: bool,
}

/// Parses a bundle file's bytes.
pub(crate) fn parse(bytes: &[u8]) -> Result<Bundle, String> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(format!(
            "the bundle is larger than {MAX_BUNDLE_BYTES} bytes"
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("not a witnessed bundle: {e}"))
}

/// Checks 1 to 4 above, at `now` (Unix seconds); the quorum and its age
/// are [`report`]'s to judge. An `Err` names the first check that failed.
pub(crate) fn check(
    bundle: &Bundle,
    instance: &Verifier,
    witnesses: &[CosignatureVerifier],
    now: u64,
) -> Result<Witnessed, String> {
    let heads = verify_checkpoint(bundle.heads_checkpoint.as_bytes(), instance).map_err(|e| {
        let origin = bundle.heads_checkpoint.lines().next().unwrap_or_default();
        format!(
            "bad-bundle: the heads checkpoint (origin {origin:?}) is not signed by the --log-key, whose name {:?} must be its origin: {e}",
            instance.name
        )
    })?;
    let plan_key = plan_verifier(instance, &bundle.plan_id).map_err(|e| {
        format!(
            "bad-bundle: deriving the key of plan {}: {e}",
            bundle.plan_id
        )
    })?;
    let plan = verify_checkpoint(bundle.plan_checkpoint.as_bytes(), &plan_key).map_err(|e| {
        format!(
            "bad-bundle: the plan checkpoint is not one of plan {} signed by the --log-key: {e}",
            bundle.plan_id
        )
    })?;
    let entry = bundle.heads_entry.as_bytes();
    let deleted = if entry == heads_entry_bytes(&bundle.plan_id, plan.size, &plan.root, false) {
        false
    } else if entry == heads_entry_bytes(&bundle.plan_id, plan.size, &plan.root, true) {
        true
    } else {
        return Err("bad-bundle: heads_entry is not the entry of the plan checkpoint".into());
    };
    if bundle.inclusion_proof.len() > MAX_PROOF {
        return Err("bad-bundle: the inclusion proof is too long".into());
    }
    let proof = bundle
        .inclusion_proof
        .iter()
        .map(|h| {
            BASE64
                .decode(h)
                .ok()
                .and_then(|b| Hash::try_from(b.as_slice()).ok())
                .ok_or_else(|| "bad-bundle: a proof hash is not 32 bytes of base64".to_string())
        })
        .collect::<Result<Vec<Hash>, String>>()?;
    if !verify_inclusion(
        bundle.heads_index,
        heads.size,
        &leaf_hash(entry),
        &proof,
        &heads.root,
    ) {
        return Err(format!(
            "bad-bundle: the entry is not included at index {} in the heads log of size {}",
            bundle.heads_index, heads.size
        ));
    }
    latest(bundle, &proof, heads.size, &heads.root)?;
    let note = Note::parse(bundle.heads_checkpoint.as_bytes())
        .map_err(|e| format!("bad-bundle: the heads checkpoint: {e}"))?;
    let mut counted: Vec<&CosignatureVerifier> = Vec::new();
    let mut cosigned = Vec::new();
    for witness in witnesses {
        // One key counts once, under whatever names it is given: the
        // cosigned message does not include the witness's name.
        if counted.iter().any(|w| w.key == witness.key) {
            continue;
        }
        if let Ok(time) = witness.verify_note(&note)
            && time <= now.saturating_add(MAX_AHEAD_SECS)
        {
            counted.push(witness);
            cosigned.push(time);
        }
    }
    cosigned.sort_unstable_by(|a, b| b.cmp(a));
    Ok(Witnessed {
        plan_size: plan.size,
        heads_size: heads.size,
        heads_index: bundle.heads_index,
        cosigned,
        deleted,
    })
}

/// Check 3's second half: the bundle's entry is the plan's last in the
/// heads tree of `size` leaves with `root`.
fn latest(bundle: &Bundle, proof: &[Hash], size: u64, root: &Hash) -> Result<(), String> {
    let after = size - bundle.heads_index - 1;
    if bundle.later_entries.len() as u64 != after {
        return Err(format!(
            "bad-bundle: later_entries holds {} entries, but the heads log of size {size} has {after} after entry {}",
            bundle.later_entries.len(),
            bundle.heads_index
        ));
    }
    let mut tree = StreamingRoot::before_leaf(bundle.heads_index, size, proof)
        .ok_or("bad-bundle: the inclusion proof has not the shape of one")?;
    tree.push(leaf_hash(bundle.heads_entry.as_bytes()));
    for (i, entry) in bundle.later_entries.iter().enumerate() {
        let index = bundle.heads_index + 1 + i as u64;
        let plan = entry_plan(entry)
            .ok_or_else(|| format!("bad-bundle: later entry {index} is not a heads-log entry"))?;
        if plan == bundle.plan_id {
            return Err(format!(
                "bad-bundle: heads-log entry {index} records plan {plan} again, after entry {}: the bundle's plan checkpoint is not its latest (an older history is being shown)",
                bundle.heads_index
            ));
        }
        tree.push(leaf_hash(entry.as_bytes()));
    }
    if tree.root() != *root {
        return Err(format!(
            "bad-bundle: later_entries are not the heads log's entries after {}: with the inclusion path they do not rebuild its root",
            bundle.heads_index
        ));
    }
    Ok(())
}

/// The plan a heads-log entry records, if `entry` is exactly one
/// (`heads_entry_bytes` of what it says).
fn entry_plan(entry: &str) -> Option<Uuid> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        plan_id: Uuid,
        size: u64,
        root: String,
        #[serde(default)]
        deleted: bool,
    }
    let parsed: Entry = serde_json::from_str(entry).ok()?;
    let root = Hash::try_from(BASE64.decode(&parsed.root).ok()?.as_slice()).ok()?;
    let exact = heads_entry_bytes(&parsed.plan_id, parsed.size, &root, parsed.deleted);
    (exact == entry.as_bytes()).then_some(parsed.plan_id)
}

/// What a bundle is held to: `--quorum` and `--max-age`, at `now`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bar {
    pub(crate) quorum: usize,
    pub(crate) max_age_secs: u64,
    pub(crate) now: u64,
}

/// Prints the bundle's verdict; whether it holds to `bar`.
pub(crate) fn report(outcome: &Result<Witnessed, String>, bar: Bar) -> bool {
    let Bar {
        quorum,
        max_age_secs,
        now,
    } = bar;
    match outcome {
        Err(reason) => {
            // It may quote the bundle, which is anyone's text.
            println!("{}", logbook_base::terminal::inert(reason));
            false
        }
        Ok(w) => {
            // The quorum's time: the quorum-th newest cosignature.
            let quorum_time = quorum
                .checked_sub(1)
                .and_then(|i| w.cosigned.get(i).copied());
            println!(
                "witnessed: plan size {} is entry {} of the heads log of size {}{}; {} of the given witnesses cosigned (quorum {quorum}){}",
                w.plan_size,
                w.heads_index,
                w.heads_size,
                if w.deleted { " (its deletion)" } else { "" },
                w.cosigned.len(),
                match quorum_time {
                    Some(t) => format!(
                        ", the quorum at {} ({} ago)",
                        rfc3339(t),
                        age(now.saturating_sub(t))
                    ),
                    None => String::new(),
                }
            );
            if quorum == 0 {
                println!(
                    "unwitnessed: --quorum 0 asks for no witness: the log key's signatures and the proof were checked, nothing shows that others saw this history"
                );
            }
            if w.cosigned.len() < quorum {
                println!(
                    "no-quorum: {} cosignature(s) from the given witnesses, {quorum} needed",
                    w.cosigned.len()
                );
                return false;
            }
            if let Some(t) = quorum_time
                && now.saturating_sub(t) > max_age_secs
            {
                println!(
                    "stale: the quorum cosigned this {} ago, more than --max-age {max_age_secs}s: the witnesses may have seen more of this log since (a rollback looks like this); fetch a fresh bundle, or raise --max-age to check an archived one",
                    age(now.saturating_sub(t))
                );
                return false;
            }
            true
        }
    }
}

/// RFC 3339, UTC, as the other times the CLI shows.
fn rfc3339(secs: u64) -> String {
    let ms = i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000);
    logbook_journal::event::Timestamp(ms).to_string()
}

/// `42s`, `5m 3s`, `3h 12m`, `2d 4h`.
fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86400, secs % 86400 / 3600),
    }
}
