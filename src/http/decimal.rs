//! Numbers in paths, queries and `Last-Event-ID`: one spelling each.
//!
//! Rust's integer parser also takes a leading `+` and leading zeros, so
//! `after=007` and `after=+7` would name the cursor `7` under three URLs,
//! which this server never sends and a cache or a log line would not match.
//! Every number a client sends is ASCII digits, without a leading zero
//! unless it is `0` itself.

use serde::{Deserialize, Deserializer, de::Error as _};

/// A plain decimal u64: digits only, no sign, no spaces, no leading zero.
pub(crate) fn decimal(text: &str) -> Option<u64> {
    if text.is_empty()
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse().ok()
}

fn parse<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    decimal(&text).ok_or_else(|| {
        D::Error::custom(format!(
            "{text:?} is not a decimal integer from 0 to 2^64-1 (digits only, without a sign or a leading zero)"
        ))
    })
}

/// `#[serde(deserialize_with = "decimal::u64")]` for a query number.
pub(crate) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    parse(d)
}

/// As [`u64`], for an optional one (with `#[serde(default)]`).
pub(crate) fn option_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    parse(d).map(Some)
}

/// As [`option_u64`], for a count.
pub(crate) fn option_usize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    parse(d).map(|n| Some(usize::try_from(n).unwrap_or(usize::MAX)))
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn one_spelling_per_number() {
        assert_eq!(decimal("0"), Some(0));
        assert_eq!(decimal("7"), Some(7));
        assert_eq!(decimal("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "007",
            "00",
            "+7",
            "-0",
            " 7",
            "7 ",
            "1e3",
            "0x10",
            "18446744073709551616",
            "٣",
        ] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
    }
}
