//! RFC 9162 §2.1 Merkle trees over a log whose perfect subtrees are stored.
//!
//! Invariant: a log of `n` leaves has stored, for every level `l` and index
//! `i` with `(i + 1) << l <= n`, the hash of the perfect subtree covering
//! leaves `[i << l, (i + 1) << l)`. [`hashes_to_store`] yields exactly the new
//! ones when leaf `n` is appended (one leaf hash plus one per completed
//! subtree: two per append on average), so any subtree hash is one read and
//! every root or proof below costs O(log n) reads. Nothing rescans the log.
//!
//! A C2SP hash tile at tile level `L` is a run of stored hashes at tree level
//! `8 * L`, so tiles are range reads of the same store.
//!
//! Proof generation follows the recursive definitions of RFC 9162 §2.1.3.1
//! and §2.1.4.1; verification follows §2.1.3.2 and §2.1.4.2 step by step.

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf, an interior node or a root.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || entry)`: the hash of a leaf (RFC 6962 §2.1).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(entry);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree: `SHA-256()` of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Where a stored hash lives: the perfect subtree of `2^level` leaves
/// starting at leaf `index << level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub fn new(level: u8, index: u64) -> NodeId {
        NodeId { level, index }
    }
}

/// Reads a stored perfect-subtree hash. Storage errors pass through.
pub trait HashReader {
    type Error;
    fn read_hash(&mut self, node: NodeId) -> Result<Hash, Self::Error>;
}

impl<E, F: FnMut(NodeId) -> Result<Hash, E>> HashReader for F {
    type Error = E;
    fn read_hash(&mut self, node: NodeId) -> Result<Hash, E> {
        self(node)
    }
}

/// The hashes to store when appending leaf number `n` (0-based) with hash
/// `leaf`: the leaf itself, then the root of each perfect subtree that this
/// leaf completes, each from its stored left sibling. Reads
/// `trailing_ones(n)` earlier hashes.
pub fn hashes_to_store<R: HashReader>(
    n: u64,
    leaf: Hash,
    reader: &mut R,
) -> Result<Vec<(NodeId, Hash)>, R::Error> {
    let completed = n.trailing_ones() as u8;
    let mut out = Vec::with_capacity(1 + usize::from(completed));
    let mut hash = leaf;
    out.push((NodeId::new(0, n), hash));
    for level in 0..completed {
        let index = n >> level;
        let left = reader.read_hash(NodeId::new(level, index - 1))?;
        hash = node_hash(&left, &hash);
        out.push((NodeId::new(level + 1, index >> 1), hash));
    }
    Ok(out)
}

/// Largest power of two strictly below `n` (`n >= 2`): RFC 9162's `k`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[lo:hi]) for `lo < hi`. Invariant (holds for every call the proof
/// recursions make): `lo` is a multiple of the smallest power of two that is
/// at least `hi - lo`, so a power-of-two range is one stored subtree.
fn subtree<R: HashReader>(lo: u64, hi: u64, reader: &mut R) -> Result<Hash, R::Error> {
    debug_assert!(lo < hi);
    let size = hi - lo;
    if size.is_power_of_two() {
        let level = size.trailing_zeros() as u8;
        debug_assert_eq!(lo % size, 0, "unaligned subtree [{lo}, {hi})");
        return reader.read_hash(NodeId::new(level, lo >> level));
    }
    let k = split_point(size);
    let left = subtree(lo, lo + k, reader)?;
    let right = subtree(lo + k, hi, reader)?;
    Ok(node_hash(&left, &right))
}

/// The root of the tree of the first `size` leaves.
pub fn root<R: HashReader>(size: u64, reader: &mut R) -> Result<Hash, R::Error> {
    if size == 0 {
        return Ok(empty_root());
    }
    subtree(0, size, reader)
}

/// The root of the tree of `size` leaves, taking the leaves
/// `[first, first + leaves.len())` from `leaves` and every other subtree
/// from the store: a range proof. It equals [`root`] exactly when those
/// leaves are the stored ones, at O(leaves + log size) reads and hashes.
/// `None` when the range does not lie within the tree.
pub fn root_over_range<R: HashReader>(
    size: u64,
    first: u64,
    leaves: &[Hash],
    reader: &mut R,
) -> Result<Option<Hash>, R::Error> {
    let Some(end) = first
        .checked_add(leaves.len() as u64)
        .filter(|&end| end <= size)
    else {
        return Ok(None);
    };
    if size == 0 {
        return Ok(Some(empty_root()));
    }
    ranged(0, size, first, end, leaves, reader).map(Some)
}

/// MTH(D[lo:hi]) with the leaves of `[first, end)` taken from `leaves`.
fn ranged<R: HashReader>(
    lo: u64,
    hi: u64,
    first: u64,
    end: u64,
    leaves: &[Hash],
    reader: &mut R,
) -> Result<Hash, R::Error> {
    if hi <= first || lo >= end {
        return subtree(lo, hi, reader);
    }
    if hi - lo == 1 {
        return Ok(leaves[(lo - first) as usize]);
    }
    let k = split_point(hi - lo);
    let left = ranged(lo, lo + k, first, end, leaves, reader)?;
    let right = ranged(lo + k, hi, first, end, leaves, reader)?;
    Ok(node_hash(&left, &right))
}

/// The root of a log computed while its leaves stream past, in O(log n)
/// memory: the roots of the perfect subtrees that make up the leaves so
/// far (the binary digits of the size), merged as leaves complete them.
#[derive(Debug, Clone, Default)]
pub struct StreamingRoot {
    /// (level, hash), levels strictly decreasing from the bottom.
    stack: Vec<(u8, Hash)>,
    size: u64,
}

impl StreamingRoot {
    pub fn new() -> StreamingRoot {
        StreamingRoot::default()
    }

    /// Appends the next leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut level = 0u8;
        let mut hash = leaf;
        while let Some(&(top, left)) = self.stack.last() {
            if top != level {
                break;
            }
            self.stack.pop();
            hash = node_hash(&left, &hash);
            level += 1;
        }
        self.stack.push((level, hash));
        self.size += 1;
    }

    /// The state after the first `index` leaves of a tree of `size`
    /// leaves, rebuilt from the left siblings on leaf `index`'s inclusion
    /// path (RFC 9162 §2.1.3.2, whose walk this follows): they are the
    /// perfect subtrees covering `[0, index)`. Pushing the tree's leaves
    /// from `index` on then gives its root, which proves that those are all
    /// of its leaves from there: one left out or added changes the root.
    /// The right siblings are not used. None if the proof cannot be one of
    /// leaf `index` in a tree of `size` leaves.
    pub fn before_leaf(index: u64, size: u64, proof: &[Hash]) -> Option<StreamingRoot> {
        if index >= size || proof.len() > MAX_PROOF_HASHES {
            return None;
        }
        let (mut f, mut s, mut level) = (index, size - 1, 0u8);
        let mut left = Vec::new();
        for p in proof {
            if s == 0 {
                return None;
            }
            if f & 1 == 1 || f == s {
                // At the right edge with no sibling here: the sibling is
                // the left one, further up.
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                    level += 1;
                }
                if f == 0 {
                    return None;
                }
                left.push((level, *p));
            }
            f >>= 1;
            s >>= 1;
            level += 1;
        }
        if s != 0 {
            return None;
        }
        left.reverse();
        // One subtree per bit of `index`, the largest first.
        let covered = left.iter().try_fold(0u64, |sum, (level, _)| {
            sum.checked_add(1u64.checked_shl(u32::from(*level))?)
        })?;
        if covered != index || left.windows(2).any(|w| w[0].0 <= w[1].0) {
            return None;
        }
        Some(StreamingRoot {
            stack: left,
            size: index,
        })
    }

    /// Leaves pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// MTH of the leaves pushed so far (RFC 9162 §2.1.1): the perfect
    /// subtrees merged from the right.
    pub fn root(&self) -> Hash {
        let mut subtrees = self.stack.iter().rev();
        let Some(&(_, mut hash)) = subtrees.next() else {
            return empty_root();
        };
        for (_, left) in subtrees {
            hash = node_hash(left, &hash);
        }
        hash
    }
}

/// Why a proof cannot be made: the arguments are outside the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofRequestError {
    /// `index >= size` for an inclusion proof.
    IndexOutOfRange { index: u64, size: u64 },
    /// `from > to` for a consistency proof.
    FromAfterTo { from: u64, to: u64 },
}

/// RFC 9162 §2.1.3.1 PATH(index, D[0:size]), leaf to root.
pub fn inclusion_proof<R: HashReader>(
    index: u64,
    size: u64,
    reader: &mut R,
) -> Result<Result<Vec<Hash>, ProofRequestError>, R::Error> {
    if index >= size {
        return Ok(Err(ProofRequestError::IndexOutOfRange { index, size }));
    }
    let mut proof = Vec::new();
    path(index, 0, size, reader, &mut proof)?;
    Ok(Ok(proof))
}

/// PATH(m, D[lo:hi]) with `m` relative to `lo`, appended to `out`.
fn path<R: HashReader>(
    m: u64,
    lo: u64,
    hi: u64,
    reader: &mut R,
    out: &mut Vec<Hash>,
) -> Result<(), R::Error> {
    let n = hi - lo;
    if n == 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < k {
        path(m, lo, lo + k, reader, out)?;
        out.push(subtree(lo + k, hi, reader)?);
    } else {
        path(m - k, lo + k, hi, reader, out)?;
        out.push(subtree(lo, lo + k, reader)?);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.1 PROOF(from, D[0:to]). Empty when `from == 0` or
/// `from == to`: every tree is consistent with the empty tree and itself.
pub fn consistency_proof<R: HashReader>(
    from: u64,
    to: u64,
    reader: &mut R,
) -> Result<Result<Vec<Hash>, ProofRequestError>, R::Error> {
    if from > to {
        return Ok(Err(ProofRequestError::FromAfterTo { from, to }));
    }
    let mut proof = Vec::new();
    if from > 0 && from < to {
        subproof(from, 0, to, true, reader, &mut proof)?;
    }
    Ok(Ok(proof))
}

/// SUBPROOF(m, D[lo:hi], b) with `m` relative to `lo`, appended to `out`.
fn subproof<R: HashReader>(
    m: u64,
    lo: u64,
    hi: u64,
    whole: bool,
    reader: &mut R,
    out: &mut Vec<Hash>,
) -> Result<(), R::Error> {
    let n = hi - lo;
    if m == n {
        if !whole {
            out.push(subtree(lo, hi, reader)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, lo, lo + k, whole, reader, out)?;
        out.push(subtree(lo + k, hi, reader)?);
    } else {
        subproof(m - k, lo + k, hi, false, reader, out)?;
        out.push(subtree(lo, lo + k, reader)?);
    }
    Ok(())
}

/// No proof in a tree of at most 2^64 leaves has more hashes than this
/// (a consistency proof has at most two per level).
pub const MAX_PROOF_HASHES: usize = 128;

/// RFC 9162 §2.1.3.2: whether `proof` shows leaf `index` with hash `leaf`
/// in the tree of `size` leaves with root `root`.
///
/// A proof does not bind `size` by itself (a leaf's path can have the same
/// shape in trees of several sizes): `size` and `root` must come from the
/// same verified checkpoint.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size || proof.len() > MAX_PROOF_HASHES {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: whether `proof` shows that the tree of `to` leaves
/// with root `to_root` extends the tree of `from` leaves with root
/// `from_root`. The RFC covers `0 < from < to`; `from == to` holds with an
/// empty proof when the roots are equal, and `from == 0` with an empty
/// proof (the empty tree is a prefix of every tree).
pub fn verify_consistency(
    from: u64,
    to: u64,
    from_root: &Hash,
    to_root: &Hash,
    proof: &[Hash],
) -> bool {
    if from > to || proof.len() > MAX_PROOF_HASHES {
        return false;
    }
    // A tree of size 0 has exactly one root; a log that signs another one
    // for size 0 is misbehaving.
    if (from == 0 && *from_root != empty_root()) || (to == 0 && *to_root != empty_root()) {
        return false;
    }
    if from == to {
        return proof.is_empty() && from_root == to_root;
    }
    if from == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if from.is_power_of_two() {
        path.push(*from_root);
    }
    path.extend_from_slice(proof);
    let (mut f, mut s) = (from - 1, to - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *from_root && sr == *to_root && s == 0
}

#[cfg(test)]
mod tests;
