//! Lowercase hexadecimal, the encoding of every hash and signature on the wire.

use serde::{Deserialize, Deserializer, Serializer};

/// Encodes bytes as lowercase hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Lowercase hex of a 32-byte hash into `out`, with no allocation: the
/// serde helpers below write three of these for every event served.
fn encode_hash<'a>(bytes: &[u8; 32], out: &'a mut [u8; 64]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
    std::str::from_utf8(out).expect("hex digits are ASCII")
}

/// Decodes exactly `N` bytes of hex. Upper-case digits are accepted; anything
/// else, or the wrong length, is `None`.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `serde(with = "crate::hex::hash")`: a 32-byte hash as a 64-digit hex string.
pub mod hash {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(encode_hash(bytes, &mut [0; 64]))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        decode_array(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// `serde(with = "crate::hex::opt_hash")`: an optional 32-byte hash, `null` when absent.
pub mod opt_hash {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(encode_hash(b, &mut [0; 64])),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => decode_array(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits or null")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let bytes = [0x00, 0x7f, 0x80, 0xff, 0x12];
        assert_eq!(encode(&bytes), "007f80ff12");
        assert_eq!(decode_array::<5>("007F80ff12"), Some(bytes));
        assert_eq!(decode_array::<5>("007f80ff1"), None);
        assert_eq!(decode_array::<2>("zz00"), None);
    }

    #[test]
    fn a_hash_encodes_on_the_stack_as_encode_does() {
        let hash: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        assert_eq!(encode_hash(&hash, &mut [0; 64]), encode(&hash));
    }
}
