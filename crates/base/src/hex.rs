//! Lowercase hexadecimal, the encoding of every hash and signature on the wire.

use serde::de::Visitor;
use serde::{Deserializer, Serializer};

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
    // Branch-free: every digit through the table, one check at the end
    // (verification decodes three hashes per event read).
    let mut bad = 0u8;
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (high, low) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
        bad |= high | low;
        *byte = (high << 4) | (low & 0x0f);
    }
    (bad & NOT_HEX == 0).then_some(out)
}

/// Marks a byte that is not a hex digit in [`NIBBLE`].
const NOT_HEX: u8 = 0x80;

/// Each byte's value as a hex digit, or [`NOT_HEX`].
const NIBBLE: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = match c as u8 {
            d @ b'0'..=b'9' => d - b'0',
            d @ b'a'..=b'f' => d - b'a' + 10,
            d @ b'A'..=b'F' => d - b'A' + 10,
            _ => NOT_HEX,
        };
        c += 1;
    }
    table
};

/// Reads a 32-byte hash from a string without copying the string (most
/// deserializers lend it): every event read from an export or a peer has
/// three of them.
struct HashVisitor;

impl<'de> Visitor<'de> for HashVisitor {
    type Value = [u8; 32];

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("64 hex digits")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<[u8; 32], E> {
        decode_array(text).ok_or_else(|| E::custom("expected 64 hex digits"))
    }
}

/// `serde(with = "crate::hex::hash")`: a 32-byte hash as a 64-digit hex string.
pub mod hash {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(encode_hash(bytes, &mut [0; 64]))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        d.deserialize_str(HashVisitor)
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
        d.deserialize_option(OptHashVisitor)
    }

    /// `null`, or a hash read as [`super::hash`] reads it.
    struct OptHashVisitor;

    impl<'de> Visitor<'de> for OptHashVisitor {
        type Value = Option<[u8; 32]>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("64 hex digits or null")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(HashVisitor)
                .map(Some)
                .map_err(|_| serde::de::Error::custom("expected 64 hex digits or null"))
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
        // Every byte that is not a digit is refused, in either place.
        for c in 0..=255u8 {
            let digit = c.is_ascii_hexdigit();
            let text = String::from_utf8(vec![c, b'0']).ok();
            if let Some(text) = text {
                assert_eq!(decode_array::<1>(&text).is_some(), digit, "{c:#x} first");
                let text: String = text.chars().rev().collect();
                assert_eq!(decode_array::<1>(&text).is_some(), digit, "{c:#x} second");
            }
        }
        let all: String = (0..=255u8).map(|b| format!("{b:02X}")).collect();
        let want: Vec<u8> = (0..=255u8).collect();
        assert_eq!(decode_array::<256>(&all).map(|a| a.to_vec()), Some(want));
    }

    #[test]
    fn a_hash_encodes_on_the_stack_as_encode_does() {
        let hash: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        assert_eq!(encode_hash(&hash, &mut [0; 64]), encode(&hash));
    }
}
