//! C2SP tlog-checkpoint: the note text `origin\nsize\nbase64(root)\n`, plus
//! optional non-empty extension lines (parsed and kept; logbook writes none),
//! and [`verify_checkpoint`], which checks one as a log's signed note.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::merkle::Hash;
use crate::note::{Note, NoteError, Verifier, check_text};

/// A log's tree head at one size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines. The origin must be one
    /// non-empty line without control characters.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Checkpoint, NoteError> {
        if origin.is_empty() || origin.chars().any(char::is_control) {
            return Err(NoteError::Malformed("an origin is one non-empty line"));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// The note text, ending in a newline.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        );
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Parses a note text (the part before the blank line).
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        use NoteError::Malformed;
        check_text(text)?;
        let body = text
            .strip_suffix('\n')
            .ok_or(Malformed("a checkpoint ends in a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(Malformed(
                "a checkpoint has an origin, a size and a root hash",
            ));
        };
        if origin.is_empty() {
            return Err(Malformed("empty origin"));
        }
        let canonical = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size = canonical
            .then(|| size.parse::<u64>().ok())
            .flatten()
            .ok_or(Malformed(
                "the tree size must be a decimal without leading zeros",
            ))?;
        let root: Hash = BASE64
            .decode(root)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(Malformed("the root hash must be 32 bytes in base64"))?;
        let extensions: Vec<String> = lines.map(str::to_string).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(Malformed("extension lines must not be empty"));
        }
        let checkpoint = Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions,
        };
        // One spelling: the root's base64 must be the canonical one.
        if checkpoint.to_text() != text {
            return Err(Malformed("not in canonical form"));
        }
        Ok(checkpoint)
    }
}

/// Verifies `note` as a checkpoint of the log whose key is `log`: the log's
/// own signature must verify, and the origin must be the key's name, as
/// tlog-checkpoint asks. Other signatures (witnesses) are ignored here; a
/// bad one from an unrelated key does not matter.
pub fn verify_checkpoint(note: &[u8], log: &Verifier) -> Result<Checkpoint, NoteError> {
    let note = Note::parse(note)?;
    let checkpoint = Checkpoint::parse(&note.text)?;
    if checkpoint.origin != log.name {
        return Err(NoteError::OtherLog {
            origin: checkpoint.origin,
            expected: log.name.clone(),
        });
    }
    let verified = note.verify(std::slice::from_ref(log))?;
    debug_assert!(verified.contains(&log));
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::Signer25519;

    #[test]
    fn round_trip_and_refusals() {
        let c = Checkpoint::new("example.com/log", 20_852_163, [7; 32]).unwrap();
        let text = c.to_text();
        assert_eq!(Checkpoint::parse(&text), Ok(c.clone()));
        let root = BASE64.encode([7; 32]);
        let ext = format!("example.com/log\n1\n{root}\nextension\n");
        assert_eq!(Checkpoint::parse(&ext).unwrap().extensions, ["extension"]);
        for bad in [
            String::new(),
            format!("example.com/log\n1\n{root}"),
            format!("\n1\n{root}\n"),
            format!("o\n01\n{root}\n"),
            format!("o\n-1\n{root}\n"),
            format!("o\n\n{root}\n"),
            format!("o\n1\n{}\n", BASE64.encode([7; 31])),
            format!("o\n1\n{}\n", &root[..root.len() - 1]),
            format!("o\n1\n{root}\n\n"),
            "o\n1\n".to_string(),
            format!("o\r\n1\n{root}\n"),
            format!("o\n1\n{root}\next\u{0}\n"),
        ] {
            assert!(Checkpoint::parse(&bad).is_err(), "{bad:?}");
        }
        for origin in ["", "a\nb", "a\u{0}"] {
            assert!(Checkpoint::new(origin, 1, [0; 32]).is_err(), "{origin:?}");
        }
    }

    #[test]
    fn verify_checkpoint_needs_the_logs_own_signature() {
        let log = Signer25519::new("example.com/log", &[1; 32]).unwrap();
        let witness = Signer25519::new("example.com/w", &[2; 32]).unwrap();
        let text = Checkpoint::new("example.com/log", 5, [3; 32])
            .unwrap()
            .to_text();
        let note = |signers: &[&Signer25519]| {
            Note {
                text: text.clone(),
                signatures: signers.iter().map(|s| s.sign(&text).unwrap()).collect(),
            }
            .to_text()
        };
        let both = note(&[&witness, &log]);
        let got = verify_checkpoint(both.as_bytes(), log.verifier()).unwrap();
        assert_eq!((got.size, got.root), (5, [3; 32]));
        // Signed by a witness alone: not the log's checkpoint.
        let only_witness = note(&[&witness]);
        assert_eq!(
            verify_checkpoint(only_witness.as_bytes(), log.verifier()),
            Err(NoteError::NoKnownSignature)
        );
        // The log's key under another name does not vouch for this origin.
        let renamed = log.renamed("example.com/other").unwrap();
        assert_eq!(
            verify_checkpoint(both.as_bytes(), renamed.verifier()),
            Err(NoteError::OtherLog {
                origin: "example.com/log".into(),
                expected: "example.com/other".into()
            })
        );
    }
}
