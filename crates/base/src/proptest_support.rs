//! What the property tests of every crate share: byte edits of a text
//! that is known good, to hunt what slips through a parser. Built only for
//! tests (this crate's, or another's through the `proptest-support` feature).

use proptest::prelude::*;
use proptest::sample::Index;

/// `n` cases, unless `PROPTEST_CASES` says otherwise.
pub fn cases(n: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = n;
    }
    config
}

/// One edit of a byte string: where, which (0 replace, 1 insert, 2 remove)
/// and the byte.
pub type Edit = (Index, u8, u8);

/// Up to three edits, with bytes drawn mostly from `alphabet` (the ones
/// most likely to slip through a parser).
pub fn edits(alphabet: &'static [u8]) -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        (
            any::<Index>(),
            0u8..3,
            prop_oneof![prop::sample::select(alphabet.to_vec()), any::<u8>()],
        ),
        1..4,
    )
}

/// `bytes` with `edits` applied in order.
pub fn apply(mut bytes: Vec<u8>, edits: Vec<Edit>) -> Vec<u8> {
    for (at, op, byte) in edits {
        let i = at.index(bytes.len() + 1);
        match op {
            0 if i < bytes.len() => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            _ if i < bytes.len() => {
                bytes.remove(i);
            }
            _ => bytes.push(byte),
        }
    }
    bytes
}
