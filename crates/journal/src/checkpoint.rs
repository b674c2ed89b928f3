//! Plan checkpoints: every plan is a C2SP transparency log whose origin is
//! `{origin_prefix}/{plan_id}`, signed by the instance's one Ed25519 log key.
//!
//! tlog-checkpoint asks that the key name match the origin, so the key is
//! named `{origin_prefix}` in the instance vkey and signs each plan under
//! the name `{origin_prefix}/{plan_id}`, whose signed-note key id is
//! `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)[:4]`. Anyone holding the
//! instance vkey derives a plan's vkey ([`plan_verifier`]): same key, new
//! name, recomputed id. `docs/verifiable-logs.md` is the description.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use logbook_tlog::checkpoint::Checkpoint;
use logbook_tlog::merkle::Hash;
use logbook_tlog::note::{Note, NoteError, Signer25519, Verifier};
use uuid::Uuid;

/// Signed checkpoints kept, one per (plan, size): enough for every plan
/// that is being polled, and a bound on memory (each is ~250 bytes).
pub const CACHE_ENTRIES: usize = 4096;

/// The origin (and key name) of a plan's log.
pub fn plan_origin(origin_prefix: &str, plan: &Uuid) -> String {
    format!("{origin_prefix}/{plan}")
}

/// A plan's verifier, derived from the instance's: the same public key
/// under the name `{instance name}/{plan_id}`.
pub fn plan_verifier(instance: &Verifier, plan: &Uuid) -> Result<Verifier, NoteError> {
    instance.renamed(&plan_origin(&instance.name, plan))
}

/// Signs plan checkpoints with the log key, caching each signed note per
/// (plan, size) so that polling a head costs one lookup.
pub struct CheckpointSigner {
    /// Named `{origin_prefix}`.
    signer: Signer25519,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

/// First in, first out: the (plan, size) pairs still polled are the heads,
/// which are signed again after eviction at the cost of one signature.
#[derive(Default)]
struct Cache {
    /// The root is kept to serve a note only for the tree it was signed
    /// over, whatever happened to the plan in between.
    notes: HashMap<(Uuid, u64), (Hash, Arc<Note>)>,
    order: VecDeque<(Uuid, u64)>,
}

impl CheckpointSigner {
    /// `signer` must be named `{origin_prefix}`.
    pub fn new(signer: Signer25519) -> CheckpointSigner {
        CheckpointSigner {
            signer,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The instance verifier, named `{origin_prefix}`.
    pub fn instance_verifier(&self) -> &Verifier {
        self.signer.verifier()
    }

    /// The verifier of `plan`'s checkpoints.
    pub fn plan_verifier(&self, plan: &Uuid) -> Result<Verifier, NoteError> {
        plan_verifier(self.signer.verifier(), plan)
    }

    /// The signed checkpoint of `plan`'s tree of `size` leaves and `root`.
    /// The note's signature list is open: witnesses' cosignature lines are
    /// appended after the log's own.
    pub fn sign(&self, plan: &Uuid, size: u64, root: Hash) -> Result<Arc<Note>, NoteError> {
        let key = (*plan, size);
        if let Some((cached_root, note)) = self.lock().notes.get(&key)
            && *cached_root == root
        {
            return Ok(note.clone());
        }
        let origin = plan_origin(&self.signer.verifier().name, plan);
        let text = Checkpoint::new(&origin, size, root)?.to_text();
        let signature = self.signer.renamed(&origin)?.sign(&text)?;
        let note = Arc::new(Note {
            text,
            signatures: vec![signature],
        });
        let mut cache = self.lock();
        if cache.notes.insert(key, (root, note.clone())).is_none() {
            cache.order.push_back(key);
        }
        while cache.order.len() > CACHE_ENTRIES {
            if let Some(old) = cache.order.pop_front() {
                cache.notes.remove(&old);
            }
        }
        Ok(note)
    }

    /// The signed checkpoint of the heads log (origin `{origin_prefix}`,
    /// the key's own name). Not cached: it is signed once per request of a
    /// new heads size, and the heads log grows once per interval at most.
    pub fn sign_heads(&self, size: u64, root: Hash) -> Result<Note, NoteError> {
        let text = Checkpoint::new(&self.signer.verifier().name, size, root)?.to_text();
        let signature = self.signer.sign(&text)?;
        Ok(Note {
            text,
            signatures: vec![signature],
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache holds no invariant a panic could break halfway.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        self.lock().notes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logbook_tlog::checkpoint::verify_checkpoint;

    fn signer() -> CheckpointSigner {
        CheckpointSigner::new(Signer25519::new("logbook/test", &[5; 32]).unwrap())
    }

    #[test]
    fn a_plan_checkpoint_verifies_with_the_derived_vkey_only() {
        let s = signer();
        let plan = Uuid::from_u128(7);
        let note = s.sign(&plan, 3, [9; 32]).unwrap().to_text();
        // Derived from the published instance vkey string, as a verifier would.
        let instance = Verifier::parse(&s.instance_verifier().to_vkey()).unwrap();
        let derived = plan_verifier(&instance, &plan).unwrap();
        assert_eq!(
            derived.name,
            "logbook/test/00000000-0000-0000-0000-000000000007"
        );
        let checkpoint = verify_checkpoint(note.as_bytes(), &derived).unwrap();
        assert_eq!((checkpoint.size, checkpoint.root), (3, [9; 32]));
        // The instance vkey itself does not vouch for a plan's origin.
        assert!(verify_checkpoint(note.as_bytes(), &instance).is_err());
        // Another plan's vkey does not either.
        let other = plan_verifier(&instance, &Uuid::from_u128(8)).unwrap();
        assert!(verify_checkpoint(note.as_bytes(), &other).is_err());
    }

    #[test]
    fn the_cache_is_per_plan_size_and_root_and_bounded() {
        let s = signer();
        let plan = Uuid::from_u128(1);
        let a = s.sign(&plan, 1, [1; 32]).unwrap();
        assert!(Arc::ptr_eq(&a, &s.sign(&plan, 1, [1; 32]).unwrap()));
        // Same size, another root (never for one live plan): signed anew.
        let b = s.sign(&plan, 1, [2; 32]).unwrap();
        assert_ne!(a.text, b.text);
        for size in 0..(CACHE_ENTRIES as u64 + 10) {
            s.sign(&plan, size + 2, [3; 32]).unwrap();
        }
        assert_eq!(s.cached(), CACHE_ENTRIES);
    }
}
