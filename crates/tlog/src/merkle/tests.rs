use super::*;

#[test]
fn a_streaming_root_is_the_root_at_every_size() {
    let leaves: Vec<Hash> = (0..70u8).map(|i| leaf_hash(&[i])).collect();
    let mut store = std::collections::HashMap::new();
    let mut streaming = StreamingRoot::new();
    assert_eq!(streaming.root(), empty_root());
    for (n, leaf) in leaves.iter().enumerate() {
        let new =
            hashes_to_store(n as u64, *leaf, &mut |id: NodeId| Ok::<_, ()>(store[&id])).unwrap();
        store.extend(new);
        streaming.push(*leaf);
        let mut read = |id: NodeId| Ok::<_, ()>(store[&id]);
        assert_eq!(streaming.size(), n as u64 + 1);
        assert_eq!(streaming.root(), root(n as u64 + 1, &mut read).unwrap());
    }
}

#[test]
fn a_range_of_leaves_reproduces_the_root_only_when_unchanged() {
    let leaves: Vec<Hash> = (0..40u8).map(|i| leaf_hash(&[i])).collect();
    let mut store = std::collections::HashMap::new();
    for (n, leaf) in leaves.iter().enumerate() {
        let new =
            hashes_to_store(n as u64, *leaf, &mut |id: NodeId| Ok::<_, ()>(store[&id])).unwrap();
        store.extend(new);
    }
    let mut read = |id: NodeId| Ok::<_, ()>(store[&id]);
    let beyond = root_over_range(3, 2, &leaves[..2], &mut read).unwrap();
    assert_eq!(beyond, None, "a range past the size is no root");
    for size in 1..=40u64 {
        let want = root(size, &mut read).unwrap();
        for first in 0..size {
            for end in first..=size.min(first + 9) {
                let range = &leaves[first as usize..end as usize];
                assert_eq!(
                    root_over_range(size, first, range, &mut read).unwrap(),
                    Some(want)
                );
                if let Some(bad) = range.len().checked_sub(1) {
                    let mut changed = range.to_vec();
                    changed[bad][0] ^= 1;
                    assert_ne!(
                        root_over_range(size, first, &changed, &mut read).unwrap(),
                        Some(want)
                    );
                }
            }
        }
    }
}
use std::collections::HashMap;
use std::convert::Infallible;

/// MTH straight from the RFC's definition, over leaf hashes.
fn naive_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
        }
    }
}

/// A log built only through `hashes_to_store`, as the store builds it.
struct Log {
    stored: HashMap<NodeId, Hash>,
    leaves: Vec<Hash>,
}

impl Log {
    fn with(n: u64) -> Log {
        let mut log = Log {
            stored: HashMap::new(),
            leaves: Vec::new(),
        };
        for i in 0..n {
            let leaf = leaf_hash(format!("entry {i}").as_bytes());
            let mut read = |id: NodeId| Ok::<_, Infallible>(log.stored[&id]);
            let new = hashes_to_store(i, leaf, &mut read).unwrap();
            assert_eq!(new.len(), 1 + i.trailing_ones() as usize);
            log.stored.extend(new);
            log.leaves.push(leaf);
        }
        log
    }

    fn reader(&self) -> impl FnMut(NodeId) -> Result<Hash, Infallible> + '_ {
        |id| Ok(self.stored[&id])
    }
}

const N: u64 = 70;

/// Built one leaf longer than the sizes checked, for the next size's root.
const BUILT: u64 = N + 1;

#[test]
fn stored_hashes_are_the_perfect_subtrees() {
    let log = Log::with(N);
    for (id, hash) in &log.stored {
        let lo = (id.index << id.level) as usize;
        let hi = lo + (1 << id.level);
        assert!(hi as u64 <= N);
        assert_eq!(*hash, naive_root(&log.leaves[lo..hi]), "{id:?}");
    }
    // Two per append on average: n leaves store 2n - popcount(n) hashes.
    assert_eq!(log.stored.len() as u64, 2 * N - u64::from(N.count_ones()));
}

#[test]
fn roots_match_the_definition_at_every_size() {
    let log = Log::with(N);
    for size in 0..=N {
        let expected = naive_root(&log.leaves[..size as usize]);
        assert_eq!(
            root(size, &mut log.reader()).unwrap(),
            expected,
            "size {size}"
        );
    }
}

#[test]
fn inclusion_proofs_verify_for_every_leaf_and_size() {
    let log = Log::with(BUILT);
    for size in 1..=N {
        let r = root(size, &mut log.reader()).unwrap();
        for index in 0..size {
            let proof = inclusion_proof(index, size, &mut log.reader())
                .unwrap()
                .unwrap();
            let leaf = log.leaves[index as usize];
            assert!(verify_inclusion(index, size, &leaf, &proof, &r));
            // Any change fails: another leaf, index, size, root or proof.
            let other = log.leaves[((index + 1) % size) as usize];
            assert_eq!(size == 1, verify_inclusion(index, size, &other, &proof, &r));
            // A proof does not bind the size on its own (the signed
            // checkpoint does), but it fails against another size's root.
            let next = root(size + 1, &mut log.reader()).unwrap();
            assert!(!verify_inclusion(index, size + 1, &leaf, &proof, &next));
            assert!(!verify_inclusion(
                index,
                size,
                &leaf,
                &proof,
                &leaf_hash(b"x")
            ));
            if let Some(first) = proof.first() {
                let mut bad = proof.clone();
                bad[0] = node_hash(first, first);
                assert!(!verify_inclusion(index, size, &leaf, &bad, &r));
                assert!(!verify_inclusion(index, size, &leaf, &proof[1..], &r));
            }
            let mut longer = proof.clone();
            longer.push(r);
            assert!(!verify_inclusion(index, size, &leaf, &longer, &r));
        }
    }
}

#[test]
fn consistency_proofs_verify_for_every_pair_of_sizes() {
    let log = Log::with(BUILT);
    let roots: Vec<Hash> = (0..=BUILT)
        .map(|s| root(s, &mut log.reader()).unwrap())
        .collect();
    for to in 0..=N {
        for from in 0..=to {
            let proof = consistency_proof(from, to, &mut log.reader())
                .unwrap()
                .unwrap();
            let (fr, tr) = (&roots[from as usize], &roots[to as usize]);
            assert!(verify_consistency(from, to, fr, tr, &proof), "{from}->{to}");
            if from > 0 && from < to {
                assert!(!verify_consistency(from, to, tr, tr, &proof));
                assert!(!verify_consistency(from, to, fr, fr, &proof));
                let mut bad = proof.clone();
                bad[0] = node_hash(&bad[0], &bad[0]);
                assert!(!verify_consistency(from, to, fr, tr, &bad));
                assert!(!verify_consistency(from, to, fr, tr, &proof[1..]));
                let next = &roots[to as usize + 1];
                assert!(!verify_consistency(from, to + 1, fr, next, &proof));
            }
        }
    }
}

#[test]
fn bad_requests_are_errors_not_panics() {
    let log = Log::with(4);
    assert_eq!(
        inclusion_proof(4, 4, &mut log.reader()).unwrap(),
        Err(ProofRequestError::IndexOutOfRange { index: 4, size: 4 })
    );
    assert_eq!(
        consistency_proof(5, 4, &mut log.reader()).unwrap(),
        Err(ProofRequestError::FromAfterTo { from: 5, to: 4 })
    );
    assert!(!verify_inclusion(0, 0, &[0; 32], &[], &[0; 32]));
    assert!(!verify_consistency(3, 2, &[0; 32], &[0; 32], &[]));
    // Size 0 has one root, SHA-256 of nothing.
    let empty = empty_root();
    assert!(verify_consistency(0, 0, &empty, &empty, &[]));
    assert!(!verify_consistency(0, 0, &[9; 32], &[9; 32], &[]));
    assert!(verify_consistency(0, 5, &empty, &[7; 32], &[]));
    assert!(!verify_consistency(0, 5, &[9; 32], &[7; 32], &[]));
    // Oversized proofs are refused before any work.
    let long = vec![[0; 32]; MAX_PROOF_HASHES + 1];
    assert!(!verify_consistency(1, 2, &[0; 32], &[0; 32], &long));
}

/// RFC 6962's empty-tree root and the well-known leaf hash of "".
#[test]
fn known_answers() {
    let hex = |h: Hash| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(empty_root()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hex(leaf_hash(b"")),
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    );
}

#[test]
fn an_inclusion_path_and_the_leaves_after_it_rebuild_the_root() {
    let log = Log::with(BUILT);
    for size in 1..=N {
        let r = root(size, &mut log.reader()).unwrap();
        for index in 0..size {
            let proof = inclusion_proof(index, size, &mut log.reader())
                .unwrap()
                .unwrap();
            let rebuilt = |leaves: &[Hash]| {
                let mut tree = StreamingRoot::before_leaf(index, size, &proof)?;
                for leaf in leaves {
                    tree.push(*leaf);
                }
                Some((tree.size(), tree.root()))
            };
            let after = &log.leaves[index as usize..size as usize];
            assert_eq!(rebuilt(after), Some((size, r)), "{index} of {size}");
            // A leaf left out, added or changed gives another root.
            let (short_size, short_root) = rebuilt(&after[..after.len() - 1]).unwrap();
            assert!(short_size != size || short_root != r);
            let mut longer = after.to_vec();
            longer.push(log.leaves[size as usize]);
            assert_ne!(rebuilt(&longer).unwrap().1, r);
            let mut changed = after.to_vec();
            *changed.last_mut().unwrap() = leaf_hash(b"x");
            assert_ne!(rebuilt(&changed).unwrap().1, r);
            // The left siblings depend on the index alone; a path too long
            // for the tree is refused.
            let mut longer_proof = proof.clone();
            longer_proof.push(r);
            assert!(StreamingRoot::before_leaf(index, size, &longer_proof).is_none());
        }
    }
    assert!(StreamingRoot::before_leaf(3, 3, &[]).is_none());
}
