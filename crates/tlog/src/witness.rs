//! c2sp.org/tlog-witness `add-checkpoint`: the request body and the pure
//! witness rule. The caller finds the log's key by origin (404 when it has
//! none), verifies the note's signature (403), then asks [`check`] what to
//! answer given the latest checkpoint it cosigned for that origin.
//!
//! The body is `old <size>\n`, at most 63 base64 proof hashes, one per
//! line, an empty line, then the signed checkpoint note.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::checkpoint::Checkpoint;
use crate::merkle::{Hash, empty_root, verify_consistency};
use crate::note::MAX_NOTE_BYTES;

/// The spec's limit on consistency proof lines.
pub const MAX_PROOF_LINES: usize = 63;
/// The largest body that can be well formed: the old line, 63 proof lines
/// and the largest note accepted.
pub const MAX_REQUEST_BYTES: usize = 32 + MAX_PROOF_LINES * 45 + 1 + MAX_NOTE_BYTES;
/// The `Content-Type` of a 409's body.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// One add-checkpoint request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, as sent.
    pub note: Vec<u8>,
}

/// Why a request body is not an add-checkpoint request (400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedRequest(pub &'static str);

impl std::fmt::Display for MalformedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed add-checkpoint request: {}", self.0)
    }
}

impl std::error::Error for MalformedRequest {}

impl AddCheckpoint {
    /// Parses a request body of at most [`MAX_REQUEST_BYTES`]. The note is
    /// only split off here; the caller parses and verifies it.
    pub fn parse(body: &[u8]) -> Result<AddCheckpoint, MalformedRequest> {
        if body.len() > MAX_REQUEST_BYTES {
            return Err(MalformedRequest("larger than the limit"));
        }
        let mut rest = body;
        let mut next_line = || -> Result<&[u8], MalformedRequest> {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or(MalformedRequest("every line ends in a newline"))?;
            let line = &rest[..end];
            rest = &rest[end + 1..];
            Ok(line)
        };
        let old = next_line()?
            .strip_prefix(b"old ")
            .ok_or(MalformedRequest("the first line is `old <size>`"))
            .and_then(parse_size)?;
        let mut proof = Vec::new();
        loop {
            let line = next_line()?;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(MalformedRequest("more than 63 proof lines"));
            }
            proof.push(parse_hash(line)?);
        }
        if rest.is_empty() {
            return Err(MalformedRequest("no checkpoint after the empty line"));
        }
        Ok(AddCheckpoint {
            old,
            proof,
            note: rest.to_vec(),
        })
    }

    /// The request body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old).into_bytes();
        for hash in &self.proof {
            out.extend_from_slice(BASE64.encode(hash).as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.note);
        out
    }
}

/// A decimal size without leading zeros (`0` itself is fine).
pub fn parse_size(digits: &[u8]) -> Result<u64, MalformedRequest> {
    let bad = MalformedRequest("a size is a decimal number without leading zeros");
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return Err(bad);
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(bad)
}

fn parse_hash(line: &[u8]) -> Result<Hash, MalformedRequest> {
    let bad = MalformedRequest("a proof line is one base64 SHA-256 hash");
    let bytes = BASE64.decode(line).map_err(|_| bad.clone())?;
    bytes.try_into().map_err(|_| bad)
}

/// The 409 body: the witness's size in decimal and a newline.
pub fn size_body(size: u64) -> String {
    format!("{size}\n")
}

/// The latest checkpoint a witness cosigned for one origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latest {
    pub size: u64,
    pub root: Hash,
}

/// What a validly signed checkpoint proves against the witness's latest
/// one: the log signed two histories that cannot both be true, or sent a
/// proof that fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvidenceKind {
    /// A checkpoint smaller than the one cosigned.
    Rollback,
    /// The same size with another root.
    Fork,
    /// A consistency proof from the cosigned checkpoint that fails.
    BadProof,
}

impl EvidenceKind {
    /// The name used in records, metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::Rollback => "rollback",
            EvidenceKind::Fork => "fork",
            EvidenceKind::BadProof => "bad_proof",
        }
    }

    pub fn parse(name: &str) -> Option<EvidenceKind> {
        [
            EvidenceKind::Rollback,
            EvidenceKind::Fork,
            EvidenceKind::BadProof,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

/// The witness's answer to a validly signed checkpoint of a known log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 200: store it as the latest, then cosign it.
    Cosign,
    /// 400: `old` is larger than the checkpoint's size.
    OldTooLarge,
    /// 409 with the witness's size: `old` is not it, or the same size
    /// came with another root.
    Conflict { size: u64 },
    /// 422: the consistency proof does not verify.
    BadProof,
}

/// The tlog-witness rule. `evidence` is set whenever the checkpoint, which
/// the caller has verified as the log's, contradicts `latest`, whatever
/// the answer: a witness keeps it even when it must refuse for another
/// reason first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub evidence: Option<EvidenceKind>,
}

/// Decides on `new`, sent with `old` and `proof`, given the latest
/// checkpoint cosigned for its origin (`None` before the first).
pub fn check(latest: Option<&Latest>, old: u64, new: &Checkpoint, proof: &[Hash]) -> Outcome {
    let current = latest.map_or(0, |l| l.size);
    let mut evidence = match latest {
        Some(l) if new.size < l.size => Some(EvidenceKind::Rollback),
        Some(l) if new.size == l.size && new.root != l.root => Some(EvidenceKind::Fork),
        _ => None,
    };
    let verdict = if old > new.size {
        Verdict::OldTooLarge
    } else if old != current || evidence.is_some() {
        // A fork with the right `old` is a 409 too (the spec's same-size
        // rule); a rollback always has `old` below the witness's size.
        Verdict::Conflict { size: current }
    } else {
        let consistent = match latest {
            // Trust on first use: the spec asks for an empty proof from 0,
            // and an empty tree has only one root.
            None => proof.is_empty() && (new.size > 0 || new.root == empty_root()),
            Some(l) => verify_consistency(current, new.size, &l.root, &new.root, proof),
        };
        // The checkpoint already cosigned, sent again with a proof where
        // none belongs: refused, but the log did nothing wrong.
        let cosigned = latest.is_some_and(|l| l.size == new.size && l.root == new.root);
        if consistent {
            Verdict::Cosign
        } else {
            if latest.is_some() && !cosigned {
                evidence = Some(EvidenceKind::BadProof);
            }
            Verdict::BadProof
        }
    };
    debug_assert!(verdict != Verdict::Cosign || evidence.is_none());
    Outcome { verdict, evidence }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{StreamingRoot, leaf_hash};

    const HASH: Hash = [9; 32];

    #[test]
    fn requests_round_trip() {
        let request = AddCheckpoint {
            old: 20_852_014,
            proof: vec![[1; 32], [2; 32]],
            note: b"o\n1\nAA==\n\n\xe2\x80\x94 o AAAA\n".to_vec(),
        };
        let bytes = request.to_bytes();
        assert!(bytes.starts_with(b"old 20852014\nAQEB"));
        assert_eq!(AddCheckpoint::parse(&bytes), Ok(request));
        let empty = b"old 0\n\nnote\n";
        assert_eq!(
            AddCheckpoint::parse(empty).unwrap().proof,
            Vec::<Hash>::new()
        );
    }

    #[test]
    fn malformed_requests_are_refused() {
        let h = BASE64.encode(HASH);
        let proof = format!("{h}\n").repeat(MAX_PROOF_LINES);
        assert!(AddCheckpoint::parse(format!("old 1\n{proof}\nn").as_bytes()).is_ok());
        for bad in [
            String::new(),
            "old 1".into(),
            "old 1\n".into(),
            "old 1\n\n".into(),
            "old 01\n\nn".into(),
            "old -1\n\nn".into(),
            "old  1\n\nn".into(),
            "old 1 \n\nn".into(),
            "new 1\n\nn".into(),
            "old 99999999999999999999\n\nn".into(),
            format!("old 1\n{}\n\nn", &h[1..]),
            format!("old 1\n{h}x\n\nn"),
            format!("old 1\n{}\n\nn", BASE64.encode([1; 31])),
            format!("old 1\n{proof}{h}\n\nn"),
        ] {
            assert!(AddCheckpoint::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let huge = vec![b'a'; MAX_REQUEST_BYTES + 1];
        assert!(AddCheckpoint::parse(&huge).is_err());
    }

    fn tree(size: u64) -> Checkpoint {
        let mut root = StreamingRoot::new();
        for i in 0..size {
            root.push(leaf_hash(&i.to_be_bytes()));
        }
        Checkpoint::new("example.com/log", size, root.root()).unwrap()
    }

    fn latest(c: &Checkpoint) -> Latest {
        Latest {
            size: c.size,
            root: c.root,
        }
    }

    fn outcome(verdict: Verdict, evidence: Option<EvidenceKind>) -> Outcome {
        Outcome { verdict, evidence }
    }

    #[test]
    fn the_first_checkpoint_is_trusted_with_old_zero() {
        let c = tree(5);
        assert_eq!(check(None, 0, &c, &[]), outcome(Verdict::Cosign, None));
        assert_eq!(
            check(None, 3, &c, &[]),
            outcome(Verdict::Conflict { size: 0 }, None)
        );
        assert_eq!(
            check(None, 0, &c, &[HASH]),
            outcome(Verdict::BadProof, None)
        );
        assert_eq!(check(None, 6, &c, &[]), outcome(Verdict::OldTooLarge, None));
        let empty = Checkpoint::new("example.com/log", 0, empty_root()).unwrap();
        assert_eq!(check(None, 0, &empty, &[]), outcome(Verdict::Cosign, None));
        let mut bad_empty = empty.clone();
        bad_empty.root = HASH;
        assert_eq!(
            check(None, 0, &bad_empty, &[]),
            outcome(Verdict::BadProof, None)
        );
    }

    #[test]
    fn growth_needs_a_proof_from_the_cosigned_size() {
        let (old, new) = (tree(3), tree(7));
        // The proof from 3 to 7 (RFC 9162 SUBPROOF), built by hand.
        let leaves: Vec<Hash> = (0..7u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let node = crate::merkle::node_hash;
        let proof = [
            leaves[2],
            leaves[3],
            node(&leaves[0], &leaves[1]),
            node(&node(&leaves[4], &leaves[5]), &leaves[6]),
        ];
        let l = latest(&old);
        assert_eq!(
            check(Some(&l), 3, &new, &proof),
            outcome(Verdict::Cosign, None)
        );
        // The same checkpoint again is cosigned again; with a proof, where
        // none belongs, it is refused, and it is no evidence against the log.
        let same = latest(&new);
        assert_eq!(
            check(Some(&same), 7, &new, &[]),
            outcome(Verdict::Cosign, None)
        );
        assert_eq!(
            check(Some(&same), 7, &new, &proof),
            outcome(Verdict::BadProof, None)
        );
        // A stale old: 409 with the witness's size, no evidence.
        assert_eq!(
            check(Some(&l), 2, &new, &proof),
            outcome(Verdict::Conflict { size: 3 }, None)
        );
        // A failing proof under a valid signature is evidence.
        let mut bad = proof;
        bad[0][0] ^= 1;
        assert_eq!(
            check(Some(&l), 3, &new, &bad),
            outcome(Verdict::BadProof, Some(EvidenceKind::BadProof))
        );
    }

    #[test]
    fn rollback_and_fork_are_evidence() {
        let (small, big) = (tree(3), tree(7));
        let l = latest(&big);
        assert_eq!(
            check(Some(&l), 3, &small, &[]),
            outcome(Verdict::Conflict { size: 7 }, Some(EvidenceKind::Rollback))
        );
        assert_eq!(
            check(Some(&l), 7, &small, &[]),
            outcome(Verdict::OldTooLarge, Some(EvidenceKind::Rollback))
        );
        let mut fork = big.clone();
        fork.root[0] ^= 1;
        assert_eq!(
            check(Some(&l), 7, &fork, &[]),
            outcome(Verdict::Conflict { size: 7 }, Some(EvidenceKind::Fork))
        );
        for kind in [
            EvidenceKind::Rollback,
            EvidenceKind::Fork,
            EvidenceKind::BadProof,
        ] {
            assert_eq!(EvidenceKind::parse(kind.as_str()), Some(kind));
        }
    }
}
