//! C2SP tlog-checkpoint: the note text `origin\nsize\nbase64(root)\n`, plus
//! optional non-empty extension lines (parsed and kept; logbook writes none).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::merkle::Hash;
use crate::note::NoteError;

/// A log's tree head at one size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub extensions: Vec<String>,
}

impl Checkpoint {
    pub fn new(origin: &str, size: u64, root: Hash) -> Checkpoint {
        Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions: Vec::new(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let c = Checkpoint::new("example.com/log", 20_852_163, [7; 32]);
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
        ] {
            assert!(Checkpoint::parse(&bad).is_err(), "{bad:?}");
        }
    }
}
