//! c2sp.org/tlog-cosignature `cosignature/v1` with Ed25519: a witness's
//! timestamped signature over a checkpoint, carried as one more signed-note
//! line.
//!
//! - key id: `SHA-256(name ‖ "\n" ‖ 0x04 ‖ 32-byte public key)[:4]`, so the
//!   same key can never be mistaken for a plain note key (type 0x01);
//! - signed message: `"cosignature/v1\ntime <secs>\n"` followed by the whole
//!   checkpoint note text (with its final newline, without signature lines);
//! - signature bytes after the key id: `timestamp (u64, big-endian) ‖
//!   Ed25519 signature (64 bytes)`; the timestamp is at most 2^63 - 1.
//!
//! The message does not commit to the cosigner's name (the spec says so):
//! one key must serve one cosigner only.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature as Ed25519Signature, Signer, SigningKey, VerifyingKey};

use crate::note::{
    Note, NoteError, NoteSignature, Signer25519, check_text, key_id, valid_key_name,
};

/// Signature type byte of Ed25519 cosignature/v1 keys.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// Largest timestamp the spec allows.
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;
/// Bytes of a cosignature after the key id: timestamp and Ed25519 signature.
pub const COSIGNATURE_BYTES: usize = 8 + 64;

/// The bytes the Ed25519 key signs for `text` (a checkpoint note body) at
/// `timestamp`.
pub fn signed_message(text: &str, timestamp: u64) -> Vec<u8> {
    let mut message = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    message.extend_from_slice(text.as_bytes());
    message
}

/// A witness's cosigning key: a name and an Ed25519 private key.
pub struct Cosigner {
    key: SigningKey,
    verifier: CosignatureVerifier,
}

impl std::fmt::Debug for Cosigner {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cosigner")
            .field("vkey", &self.verifier.to_vkey())
            .finish_non_exhaustive()
    }
}

impl Cosigner {
    /// A cosigner named `name` for the 32-byte Ed25519 private key `seed`.
    pub fn new(name: &str, seed: &[u8; 32]) -> Result<Cosigner, NoteError> {
        let key = SigningKey::from_bytes(seed);
        let verifier = CosignatureVerifier::new(name, key.verifying_key())?;
        Ok(Cosigner { key, verifier })
    }

    /// A cosigner named `name` with the private key of `signer`, so that a
    /// witness key is kept in the same file form (Go's note signer text) as
    /// the log key. The two must be different keys: the caller loads it
    /// from its own file.
    pub fn from_note_signer(name: &str, signer: &Signer25519) -> Result<Cosigner, NoteError> {
        Cosigner::new(name, &signer.key.to_bytes())
    }

    pub fn verifier(&self) -> &CosignatureVerifier {
        &self.verifier
    }

    /// Cosigns the checkpoint note text `text` (origin, size, root and any
    /// extension lines, ending in a newline) as of `timestamp`.
    pub fn cosign(&self, text: &str, timestamp: u64) -> Result<NoteSignature, NoteError> {
        check_text(text)?;
        if timestamp > MAX_TIMESTAMP {
            return Err(NoteError::Malformed("a timestamp is at most 2^63 - 1"));
        }
        let signature = self.key.sign(&signed_message(text, timestamp));
        let mut bytes = Vec::with_capacity(COSIGNATURE_BYTES);
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        debug_assert_eq!(bytes.len(), COSIGNATURE_BYTES);
        Ok(NoteSignature {
            name: self.verifier.name.clone(),
            key_id: self.verifier.key_id,
            signature: bytes,
        })
    }
}

/// A witness's public cosignature/v1 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    pub name: String,
    pub key_id: u32,
    pub key: VerifyingKey,
}

impl CosignatureVerifier {
    pub fn new(name: &str, key: VerifyingKey) -> Result<CosignatureVerifier, NoteError> {
        if !valid_key_name(name) {
            return Err(NoteError::BadKey("bad key name"));
        }
        Ok(CosignatureVerifier {
            name: name.to_string(),
            key_id: key_id(name, ALG_COSIGNATURE_V1, key.as_bytes()),
            key,
        })
    }

    /// Parses `<name>+<8 hex digits>+<base64(0x04 ‖ 32-byte key)>`, checking
    /// that the id matches the name and key.
    pub fn parse(vkey: &str) -> Result<CosignatureVerifier, NoteError> {
        use NoteError::BadKey;
        // Names have no '+' and ids are hex, but base64 keys may hold '+'.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(BadKey("a verifier key is <name>+<key id>+<key>"));
        };
        if id.len() != 8
            || !id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(BadKey("the key id must be 8 lowercase hex digits"));
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| BadKey("bad key id"))?;
        let bytes = BASE64
            .decode(key)
            .map_err(|_| BadKey("the key is not base64"))?;
        let Some((&ALG_COSIGNATURE_V1, public)) = bytes.split_first() else {
            return Err(BadKey("a cosignature/v1 key has type 0x04"));
        };
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| BadKey("an Ed25519 key is 32 bytes"))?;
        let public = VerifyingKey::from_bytes(&public).map_err(|_| BadKey("not an Ed25519 key"))?;
        let verifier = CosignatureVerifier::new(name, public)?;
        if verifier.key_id != id {
            return Err(BadKey("the key id does not match the name and key"));
        }
        Ok(verifier)
    }

    /// The vkey string.
    pub fn to_vkey(&self) -> String {
        let mut key = vec![ALG_COSIGNATURE_V1];
        key.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(key))
    }

    /// Whether `signature` is this key's line (same name and key id).
    pub fn is_mine(&self, signature: &NoteSignature) -> bool {
        signature.name == self.name && signature.key_id == self.key_id
    }

    /// Verifies this key's cosignature line over the checkpoint note text
    /// `text` and returns its timestamp.
    pub fn verify(&self, text: &str, signature: &NoteSignature) -> Result<u64, NoteError> {
        let bad = || NoteError::BadSignature {
            name: signature.name.clone(),
        };
        if !self.is_mine(signature) {
            return Err(NoteError::NoKnownSignature);
        }
        if signature.signature.len() != COSIGNATURE_BYTES {
            return Err(bad());
        }
        let (timestamp, sig) = signature.signature.split_at(8);
        let timestamp = u64::from_be_bytes(timestamp.try_into().expect("8 bytes"));
        if timestamp > MAX_TIMESTAMP {
            return Err(bad());
        }
        let sig = Ed25519Signature::from_slice(sig).map_err(|_| bad())?;
        self.key
            .verify_strict(&signed_message(text, timestamp), &sig)
            .map_err(|_| bad())?;
        Ok(timestamp)
    }

    /// Finds and verifies this key's cosignature in a signed note, with the
    /// signed-note rule that any failing line by this key rejects the note.
    /// Returns the latest timestamp among its lines.
    pub fn verify_note(&self, note: &Note) -> Result<u64, NoteError> {
        let mut latest = None;
        for signature in note.signatures.iter().filter(|s| self.is_mine(s)) {
            let timestamp = self.verify(&note.text, signature)?;
            latest = latest.max(Some(timestamp));
        }
        latest.ok_or(NoteError::NoKnownSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "example.com/log\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";

    fn witness() -> Cosigner {
        Cosigner::new("witness.example/w1", &[5; 32]).unwrap()
    }

    #[test]
    fn cosign_then_verify_in_a_note() {
        let w = witness();
        let log = Signer25519::new("example.com/log", &[7; 32]).unwrap();
        let line = w.cosign(TEXT, 1_679_315_147).unwrap();
        assert_eq!(line.signature.len(), COSIGNATURE_BYTES);
        assert_eq!(&line.signature[..8], &1_679_315_147u64.to_be_bytes());
        let note = Note {
            text: TEXT.into(),
            signatures: vec![log.sign(TEXT).unwrap(), line],
        };
        let parsed = Note::parse(note.to_text().as_bytes()).unwrap();
        assert_eq!(w.verifier().verify_note(&parsed), Ok(1_679_315_147));
        // The log's own verifier still reads the note; the cosignature is an
        // unknown line to it.
        assert!(parsed.verify(&[log.verifier().clone()]).is_ok());
    }

    #[test]
    fn the_signed_message_is_the_specs() {
        assert_eq!(
            signed_message("o\n1\nAA==\n", 1_679_315_147),
            b"cosignature/v1\ntime 1679315147\no\n1\nAA==\n"
        );
        assert_eq!(signed_message("o\n", 0), b"cosignature/v1\ntime 0\no\n");
    }

    #[test]
    fn the_key_id_uses_type_0x04() {
        let w = witness();
        let v = w.verifier();
        assert_eq!(v.key_id, key_id(&v.name, 0x04, v.key.as_bytes()));
        assert_ne!(v.key_id, key_id(&v.name, 0x01, v.key.as_bytes()));
        let vkey = v.to_vkey();
        assert_eq!(&CosignatureVerifier::parse(&vkey).unwrap(), v);
        // The same key as a plain note key (type 0x01) is refused.
        let plain = Signer25519::new(&v.name, &[5; 32]).unwrap();
        assert!(CosignatureVerifier::parse(&plain.verifier().to_vkey()).is_err());
        let (name, rest) = vkey.split_once('+').unwrap();
        for bad in [
            format!("other+{rest}"),
            format!("{name}+{}", rest.to_uppercase()),
            format!("{vkey}A"),
            String::new(),
        ] {
            assert!(CosignatureVerifier::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tampering_fails() {
        let w = witness();
        let v = w.verifier();
        let line = w.cosign(TEXT, 100).unwrap();
        assert_eq!(v.verify(TEXT, &line), Ok(100));
        // Another text, another timestamp, a flipped signature bit, a short
        // signature, another key id: all fail.
        assert!(v.verify("example.com/log\n4\nAAAA\n", &line).is_err());
        let mut later = line.clone();
        later.signature[7] ^= 1;
        assert!(v.verify(TEXT, &later).is_err());
        let mut flipped = line.clone();
        flipped.signature[40] ^= 1;
        assert!(v.verify(TEXT, &flipped).is_err());
        let mut short = line.clone();
        short.signature.pop();
        assert!(v.verify(TEXT, &short).is_err());
        let mut other = line.clone();
        other.key_id ^= 1;
        assert_eq!(v.verify(TEXT, &other), Err(NoteError::NoKnownSignature));
        // A bad line by this key rejects the note even beside a good one.
        let note = Note {
            text: TEXT.into(),
            signatures: vec![line, flipped],
        };
        assert!(v.verify_note(&note).is_err());
    }

    #[test]
    fn limits_are_kept() {
        let w = witness();
        assert!(w.cosign(TEXT, MAX_TIMESTAMP).is_ok());
        assert!(w.cosign(TEXT, MAX_TIMESTAMP + 1).is_err());
        assert!(w.cosign("no newline", 1).is_err());
        // A line claiming a timestamp above 2^63 - 1 is refused.
        let mut line = w.cosign(TEXT, 1).unwrap();
        line.signature[0] = 0x80;
        assert!(w.verifier().verify(TEXT, &line).is_err());
        assert!(!format!("{w:?}").contains("[5"));
    }
}
