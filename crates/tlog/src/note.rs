//! C2SP signed-note: a text ending in a newline, a blank line, then one or
//! more lines `— <name> base64(key id ‖ signature)`. Ed25519 (type 0x01)
//! keys, named and identified as the spec recommends, with verifier keys in
//! the `<name>+<hex key id>+<base64(0x01 ‖ public key)>` form that Go's
//! `golang.org/x/mod/sumdb/note` reads.
//!
//! Verification follows the spec's rules: signatures by unknown keys (name
//! and id not both matching) are ignored; a known key whose signature fails
//! rejects the whole note, even when another line by the same key verifies
//! (the spec's MUST; Go's `note.Open` skips such repeats); a note with no
//! verified known signature is rejected.

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD as BASE64};
use ed25519_dalek::{Signature as Ed25519Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signature type byte of plain Ed25519 note signatures.
pub const ALG_ED25519: u8 = 0x01;
/// Largest note accepted, in bytes. The spec asks verifiers to take at
/// least 16 signatures, which may be post-quantum ones of nearly 5 kB each
/// (6.6 kB in base64); this leaves room for that and bounds a parser's work.
pub const MAX_NOTE_BYTES: usize = 128 * 1024;
/// Most signature lines accepted (the spec asks for at least 16).
pub const MAX_SIGNATURES: usize = 100;

const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Signature lines are decoded as Go's `encoding/base64` does (padding
/// required, stray trailing bits allowed), so that a line from an unknown
/// signer that Go tolerates cannot make this verifier drop the note.
const SIGNATURE_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    /// The signature bytes after the key id.
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The line as it appears in a note, with its newline.
    pub fn to_line(&self) -> String {
        let mut bytes = self.key_id.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, BASE64.encode(bytes))
    }
}

/// A parsed note. `text` includes its final newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

/// Why a note, key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteError {
    /// Not a well-formed signed note (the detail says what is wrong).
    Malformed(&'static str),
    /// Not a well-formed verifier or signer key.
    BadKey(&'static str),
    /// A signature by a known key did not verify.
    BadSignature { name: String },
    /// No signature by a known key.
    NoKnownSignature,
    /// A well-formed checkpoint of another log: its origin is not the
    /// name of the key it was checked with.
    OtherLog { origin: String, expected: String },
}

impl std::fmt::Display for NoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoteError::Malformed(what) => write!(f, "malformed note: {what}"),
            NoteError::BadKey(what) => write!(f, "malformed key: {what}"),
            NoteError::BadSignature { name } => {
                write!(f, "the signature by {name:?} does not verify")
            }
            NoteError::NoKnownSignature => write!(f, "the note has no signature by a known key"),
            NoteError::OtherLog { origin, expected } => write!(
                f,
                "a checkpoint of another log: its origin is {origin:?}, the key's name {expected:?}"
            ),
        }
    }
}

impl std::error::Error for NoteError {}

/// A key name: non-empty, no Unicode spaces, no `+`.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

impl Note {
    /// Parses a signed note (at most [`MAX_NOTE_BYTES`]).
    pub fn parse(bytes: &[u8]) -> Result<Note, NoteError> {
        use NoteError::Malformed;
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(Malformed("larger than the limit"));
        }
        let all = std::str::from_utf8(bytes).map_err(|_| Malformed("not UTF-8"))?;
        if all.chars().any(|c| c < ' ' && c != '\n') {
            return Err(Malformed("control character"));
        }
        // The text ends at the last blank line, which ends at "\n\n".
        let split = all
            .rfind("\n\n")
            .ok_or(Malformed("no blank line before the signatures"))?;
        let (text, signatures) = (&all[..split + 1], &all[split + 2..]);
        if !signatures.ends_with('\n') {
            return Err(Malformed("signature lines must end in a newline"));
        }
        let mut parsed = Vec::new();
        for line in signatures[..signatures.len() - 1].split('\n') {
            if parsed.len() == MAX_SIGNATURES {
                return Err(Malformed("too many signatures"));
            }
            parsed.push(parse_signature_line(line)?);
        }
        Ok(Note {
            text: text.to_string(),
            signatures: parsed,
        })
    }

    /// The note as bytes: text, blank line, signature lines.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for signature in &self.signatures {
            out.push_str(&signature.to_line());
        }
        out
    }

    /// Checks the signatures against `verifiers` (see the module comment
    /// for the rules) and returns the verifiers whose signature verified.
    ///
    /// `Ok` means *some* listed key signed: the caller must look at which.
    /// To check a log's checkpoint, use [`crate::checkpoint::verify_checkpoint`],
    /// which requires the log's own signature.
    #[must_use = "Ok names the keys that signed; check that the one you need is among them"]
    pub fn verify<'k>(&self, verifiers: &'k [Verifier]) -> Result<Vec<&'k Verifier>, NoteError> {
        let mut verified: Vec<&Verifier> = Vec::new();
        for signature in &self.signatures {
            let Some(key) = verifiers
                .iter()
                .find(|v| v.name == signature.name && v.key_id == signature.key_id)
            else {
                continue;
            };
            if !key.verifies(self.text.as_bytes(), &signature.signature) {
                return Err(NoteError::BadSignature {
                    name: signature.name.clone(),
                });
            }
            if !verified.iter().any(|v| std::ptr::eq(*v, key)) {
                verified.push(key);
            }
        }
        if verified.is_empty() {
            return Err(NoteError::NoKnownSignature);
        }
        Ok(verified)
    }
}

fn parse_signature_line(line: &str) -> Result<NoteSignature, NoteError> {
    use NoteError::Malformed;
    let rest = line.strip_prefix(SIGNATURE_PREFIX).ok_or(Malformed(
        "a signature line must start with an em dash and a space",
    ))?;
    let (name, encoded) = rest
        .split_once(' ')
        .ok_or(Malformed("a signature line needs a name and a signature"))?;
    if !valid_key_name(name) {
        return Err(Malformed("bad key name in a signature line"));
    }
    let bytes = SIGNATURE_BASE64
        .decode(encoded)
        .map_err(|_| Malformed("a signature is not base64"))?;
    if bytes.len() < 5 {
        return Err(Malformed("a signature is shorter than its key id"));
    }
    Ok(NoteSignature {
        name: name.to_string(),
        key_id: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        signature: bytes[4..].to_vec(),
    })
}

/// `SHA-256(name ‖ "\n" ‖ type ‖ public key)[:4]`, big-endian.
pub fn key_id(name: &str, alg: u8, public_key: &[u8]) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', alg]);
    hasher.update(public_key);
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Splits a vkey `<name>+<8 lowercase hex digits>+<base64(alg ‖ 32-byte
/// Ed25519 key)>` of key type `alg` into its name, key id and key. The
/// caller checks that the id is the one the name and key give.
pub(crate) fn parse_vkey(vkey: &str, alg: u8) -> Result<(&str, u32, VerifyingKey), NoteError> {
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
    let Some((&found, public)) = bytes.split_first() else {
        return Err(BadKey("the key is empty"));
    };
    if found != alg {
        return Err(if alg == ALG_ED25519 {
            BadKey("only Ed25519 (type 0x01) keys are supported")
        } else {
            BadKey("a cosignature/v1 key has type 0x04")
        });
    }
    let public: [u8; 32] = public
        .try_into()
        .map_err(|_| BadKey("an Ed25519 key is 32 bytes"))?;
    let public = VerifyingKey::from_bytes(&public).map_err(|_| BadKey("not an Ed25519 key"))?;
    Ok((name, id, public))
}

/// An Ed25519 note verifier: a name and a public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub name: String,
    pub key_id: u32,
    pub key: VerifyingKey,
}

impl Verifier {
    pub fn new(name: &str, key: VerifyingKey) -> Result<Verifier, NoteError> {
        if !valid_key_name(name) {
            return Err(NoteError::BadKey("bad key name"));
        }
        Ok(Verifier {
            name: name.to_string(),
            key_id: key_id(name, ALG_ED25519, key.as_bytes()),
            key,
        })
    }

    /// Parses `<name>+<8 hex digits>+<base64(0x01 ‖ 32-byte key)>`,
    /// checking that the id matches the name and key.
    pub fn parse(vkey: &str) -> Result<Verifier, NoteError> {
        let (name, id, public) = parse_vkey(vkey, ALG_ED25519)?;
        let verifier = Verifier::new(name, public)?;
        if verifier.key_id != id {
            return Err(NoteError::BadKey(
                "the key id does not match the name and key",
            ));
        }
        Ok(verifier)
    }

    /// The same key under another name (its id changes with the name).
    pub fn renamed(&self, name: &str) -> Result<Verifier, NoteError> {
        Verifier::new(name, self.key)
    }

    /// The vkey string.
    pub fn to_vkey(&self) -> String {
        let mut key = vec![ALG_ED25519];
        key.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(key))
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Ed25519Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(message, &signature).is_ok()
    }
}

/// An Ed25519 note signer: a name and a private key.
pub struct Signer25519 {
    name: String,
    /// Crate-visible so a cosigner can be made from the same key file form.
    pub(crate) key: SigningKey,
    verifier: Verifier,
}

impl std::fmt::Debug for Signer25519 {
    /// Never prints the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer25519")
            .field("vkey", &self.verifier.to_vkey())
            .finish_non_exhaustive()
    }
}

impl Signer25519 {
    /// A signer named `name` for the 32-byte Ed25519 private key `seed`.
    pub fn new(name: &str, seed: &[u8; 32]) -> Result<Signer25519, NoteError> {
        let key = SigningKey::from_bytes(seed);
        let verifier = Verifier::new(name, key.verifying_key())?;
        Ok(Signer25519 {
            name: name.to_string(),
            key,
            verifier,
        })
    }

    /// The same private key under another name.
    pub fn renamed(&self, name: &str) -> Result<Signer25519, NoteError> {
        Signer25519::new(name, &self.key.to_bytes())
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Signs `text`, which must be a valid note text.
    pub fn sign(&self, text: &str) -> Result<NoteSignature, NoteError> {
        check_text(text)?;
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.verifier.key_id,
            signature: self.key.sign(text.as_bytes()).to_bytes().to_vec(),
        })
    }
}

/// Go's `golang.org/x/mod/sumdb/note` signer key text prefix.
const SKEY_PREFIX: &str = "PRIVATE+KEY+";

impl Signer25519 {
    /// The private key as Go's `note.NewSigner` reads it:
    /// `PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 ‖ 32-byte seed)>`.
    /// This is the secret: write it only to a private file.
    pub fn to_skey(&self) -> String {
        let mut key = vec![ALG_ED25519];
        key.extend_from_slice(&self.key.to_bytes());
        format!(
            "{SKEY_PREFIX}{}+{:08x}+{}",
            self.name,
            self.verifier.key_id,
            BASE64.encode(key)
        )
    }

    /// Parses a signer key in Go's form (see [`Signer25519::to_skey`]),
    /// checking that the id matches the name and the key's public half.
    pub fn parse_skey(skey: &str) -> Result<Signer25519, NoteError> {
        use NoteError::BadKey;
        let rest = skey
            .strip_prefix(SKEY_PREFIX)
            .ok_or(BadKey("a signer key starts with PRIVATE+KEY+"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(BadKey("a signer key is PRIVATE+KEY+<name>+<key id>+<key>"));
        };
        let id = parse_key_id(id)?;
        let bytes = BASE64
            .decode(key)
            .map_err(|_| BadKey("the key is not base64"))?;
        let Some((&ALG_ED25519, seed)) = bytes.split_first() else {
            return Err(BadKey("only Ed25519 (type 0x01) keys are supported"));
        };
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| BadKey("an Ed25519 private key is 32 bytes"))?;
        let signer = Signer25519::new(name, &seed)?;
        if signer.verifier.key_id != id {
            return Err(BadKey("the key id does not match the name and key"));
        }
        Ok(signer)
    }
}

/// Eight lowercase hex digits, as Go writes key ids.
fn parse_key_id(id: &str) -> Result<u32, NoteError> {
    if id.len() != 8
        || !id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(NoteError::BadKey(
            "the key id must be 8 lowercase hex digits",
        ));
    }
    u32::from_str_radix(id, 16).map_err(|_| NoteError::BadKey("bad key id"))
}

/// A note text: UTF-8 without control characters other than newline, ending
/// in a newline. (Blank lines inside are allowed by the spec.)
pub fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("the text must end in a newline"));
    }
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed("control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(name: &str) -> Signer25519 {
        Signer25519::new(name, &[7; 32]).unwrap()
    }

    #[test]
    fn sign_format_parse_verify() {
        let s = signer("example.com/log");
        let text = "example.com/log\n3\nAAAA\n";
        let note = Note {
            text: text.into(),
            signatures: vec![s.sign(text).unwrap()],
        };
        let bytes = note.to_text();
        let parsed = Note::parse(bytes.as_bytes()).unwrap();
        assert_eq!(parsed, note);
        let verifiers = [s.verifier().clone()];
        assert_eq!(parsed.verify(&verifiers).unwrap().len(), 1);
        // The vkey string round-trips and verifies the same note.
        let again = Verifier::parse(&s.verifier().to_vkey()).unwrap();
        assert_eq!(&again, s.verifier());
    }

    #[test]
    fn the_rules_for_known_and_unknown_keys() {
        let log = signer("example.com/log");
        let other = Signer25519::new("example.com/other", &[9; 32]).unwrap();
        let text = "example.com/log\n3\nAAAA\n";
        let mut note = Note {
            text: text.into(),
            signatures: vec![other.sign(text).unwrap(), log.sign(text).unwrap()],
        };
        // An unknown signature is ignored.
        assert!(note.verify(&[log.verifier().clone()]).is_ok());
        // No known signature: rejected.
        let stranger = Signer25519::new("example.com/log", &[1; 32]).unwrap();
        assert_eq!(
            note.verify(&[stranger.verifier().clone()]),
            Err(NoteError::NoKnownSignature)
        );
        // A known key's bad signature rejects the note.
        note.signatures[1].signature[0] ^= 1;
        assert!(matches!(
            note.verify(&[log.verifier().clone()]),
            Err(NoteError::BadSignature { .. })
        ));
        // A flipped text byte fails too.
        let mut note = Note {
            text: text.into(),
            signatures: vec![log.sign(text).unwrap()],
        };
        note.text = "example.com/log\n4\nAAAA\n".into();
        assert!(note.verify(&[log.verifier().clone()]).is_err());
    }

    #[test]
    fn malformed_notes_are_refused() {
        let good = "a\n\n\u{2014} n AAAAAAA=\n";
        assert!(Note::parse(good.as_bytes()).is_ok());
        for bad in [
            "",
            "a\n",
            "a\n\n",
            "a\n\n\u{2014} n AAAAAAA=",
            "a\n\n- n AAAAAAA=\n",
            "a\n\n\u{2014} n\n",
            "a\n\n\u{2014}  AAAAAAA=\n",
            "a\n\n\u{2014} n+x AAAAAAA=\n",
            "a\n\n\u{2014} n AAAA\n",
            "a\n\n\u{2014} n !!!!\n",
            "a\r\n\n\u{2014} n AAAAAAA=\n",
            "a\n\n\u{2014} n AAAAAAA=\n\n",
        ] {
            assert!(Note::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(Note::parse(b"\xff\n\n").is_err());
        let many = format!(
            "a\n\n{}",
            "\u{2014} n AAAAAAA=\n".repeat(MAX_SIGNATURES + 1)
        );
        assert!(Note::parse(many.as_bytes()).is_err());
    }

    /// Interop with Go (red-team findings): an unknown signer's line with
    /// stray base64 trailing bits, and 16 post-quantum-sized cosignatures,
    /// must not make the log's own signature unreadable.
    #[test]
    fn notes_that_go_accepts_are_read() {
        let log = signer("example.com/log");
        let text = "example.com/log\n3\nAAAA\n";
        let mut bytes = Note {
            text: text.into(),
            signatures: vec![log.sign(text).unwrap()],
        }
        .to_text();
        bytes.push_str("\u{2014} n AAAAAAB=\n");
        let pq = BASE64.encode(vec![7u8; 4 + 3309]);
        for i in 0..16 {
            bytes.push_str(&format!("\u{2014} witness{i}.example/w {pq}\n"));
        }
        assert!(bytes.len() > 64 * 1024);
        let note = Note::parse(bytes.as_bytes()).unwrap();
        assert_eq!(note.verify(&[log.verifier().clone()]).unwrap().len(), 1);
    }

    /// Base64 keys often contain '+', the field separator.
    #[test]
    fn vkeys_with_a_plus_in_the_key_parse() {
        let vkey =
            "example.com/logbook-vectors+3a09a8cb+ASFS+NGbeR0kRTJC4V8uq2y3z/p7al7TAJeWDgaYgdsS";
        let signer = Signer25519::new("example.com/logbook-vectors", &[0x42; 32]).unwrap();
        assert_eq!(signer.verifier().to_vkey(), vkey);
        assert_eq!(&Verifier::parse(vkey).unwrap(), signer.verifier());
    }

    /// Go's `note.GenerateKey` layout; the private text never shows in Debug.
    #[test]
    fn signer_keys_round_trip_in_gos_form() {
        let s = signer("example.com/log");
        let skey = s.to_skey();
        assert!(skey.starts_with("PRIVATE+KEY+example.com/log+"), "{skey}");
        let again = Signer25519::parse_skey(&skey).unwrap();
        assert_eq!(again.verifier(), s.verifier());
        // The key data follows the fourth '+' (base64 may hold a '+' too).
        let data = skey.splitn(5, '+').nth(4).unwrap();
        assert!(data.len() >= 40, "{data}");
        assert!(!format!("{again:?}").contains(data));
        let (head, key) = skey.rsplit_once('+').unwrap();
        for bad in [
            skey.replacen("PRIVATE+KEY+", "", 1),
            skey.replacen("example.com/log", "example.com/other", 1),
            format!("{head}+{}", &key[1..]),
            format!("{head}+AQ=="),
            String::new(),
        ] {
            assert!(Signer25519::parse_skey(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_vkeys_are_refused() {
        let vkey = signer("example.com/log").verifier().to_vkey();
        assert!(Verifier::parse(&vkey).is_ok());
        let (name, rest) = vkey.split_once('+').unwrap();
        for bad in [
            format!("other+{rest}"),
            format!("{name}+{}", rest.replacen('0', "1", 1)),
            format!("{name}+{}", rest.to_uppercase()),
            format!("{vkey}+x"),
            format!("{name}++{rest}"),
            format!("{name}+{rest}A"),
            "a+00000000+AQ==".to_string(),
            String::new(),
        ] {
            assert!(Verifier::parse(&bad).is_err(), "{bad}");
        }
    }
}
