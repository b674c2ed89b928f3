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
//! 3. the entry is included at `heads_index` in the heads checkpoint's tree;
//! 4. at least `quorum` distinct `--witness` keys cosigned that checkpoint
//!    (cosignature/v1).
//!
//! The plan checkpoint itself is checked against the export by
//! `offline.rs`, as a `--checkpoint` is.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use logbook_journal::checkpoint::plan_verifier;
use logbook_journal::store::heads_entry_bytes;
use logbook_tlog::checkpoint::verify_checkpoint;
use logbook_tlog::cosignature::CosignatureVerifier;
use logbook_tlog::merkle::{Hash, leaf_hash, verify_inclusion};
use logbook_tlog::note::{Note, Verifier};
use serde::Deserialize;
use uuid::Uuid;

/// Largest bundle read: a few notes and a proof of at most 64 hashes.
pub(crate) const MAX_BUNDLE_BYTES: usize = 64 * 1024;
/// Most hashes an inclusion proof can have (a tree of 2^64 leaves).
const MAX_PROOF: usize = 64;

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
    pub(crate) heads_checkpoint: String,
}

/// What the bundle proves once its signatures and proof hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Witnessed {
    /// The plan checkpoint's size: what the witnesses saw of the plan.
    pub(crate) plan_size: u64,
    pub(crate) heads_size: u64,
    pub(crate) heads_index: u64,
    /// Distinct `--witness` keys whose cosignature verified.
    pub(crate) cosigned: usize,
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

/// Checks 1 to 4 above (the quorum is the caller's to judge: it gets the
/// count). An `Err` names the first check that failed.
pub(crate) fn check(
    bundle: &Bundle,
    instance: &Verifier,
    witnesses: &[CosignatureVerifier],
) -> Result<Witnessed, String> {
    let heads = verify_checkpoint(bundle.heads_checkpoint.as_bytes(), instance).map_err(|e| {
        format!("bad-bundle: the heads checkpoint is not signed by the --log-key under its origin {:?}: {e}", instance.name)
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
    let note = Note::parse(bundle.heads_checkpoint.as_bytes())
        .map_err(|e| format!("bad-bundle: the heads checkpoint: {e}"))?;
    let mut cosigned: Vec<&CosignatureVerifier> = Vec::new();
    for witness in witnesses {
        // One key counts once, under whatever names it is given: the
        // cosigned message does not include the witness's name.
        if cosigned.iter().any(|w| w.key == witness.key) {
            continue;
        }
        if witness.verify_note(&note).is_ok() {
            cosigned.push(witness);
        }
    }
    Ok(Witnessed {
        plan_size: plan.size,
        heads_size: heads.size,
        heads_index: bundle.heads_index,
        cosigned: cosigned.len(),
        deleted,
    })
}

/// Prints the bundle's verdict; whether it holds with `quorum`.
pub(crate) fn report(outcome: &Result<Witnessed, String>, quorum: usize) -> bool {
    match outcome {
        Err(reason) => {
            println!("{reason}");
            false
        }
        Ok(w) => {
            println!(
                "witnessed: plan size {} is entry {} of the heads log of size {}{}; {} of the given witnesses cosigned (quorum {quorum})",
                w.plan_size,
                w.heads_index,
                w.heads_size,
                if w.deleted { " (its deletion)" } else { "" },
                w.cosigned
            );
            if w.cosigned < quorum {
                println!(
                    "no-quorum: {} cosignature(s) from the given witnesses, {quorum} needed",
                    w.cosigned
                );
                return false;
            }
            true
        }
    }
}
