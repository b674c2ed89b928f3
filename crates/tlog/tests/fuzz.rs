//! Property-based fuzzing of every parser here that takes outside input:
//! signed notes, checkpoints, verifier keys and tile paths. Each must answer
//! (never panic), accept only what it can write back byte for byte, and
//! round-trip what it writes. CI runs a bounded number of cases;
//! `PROPTEST_CASES=1000000 cargo test -p logbook-tlog --test fuzz` runs
//! long (see docs/testing.md).

use logbook_tlog::checkpoint::{Checkpoint, verify_checkpoint};
use logbook_tlog::note::{Note, Signer25519, Verifier};
use logbook_tlog::tile::TilePath;
use proptest::prelude::*;

/// `cases` per property in CI, unless `PROPTEST_CASES` says otherwise.
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// Text made of the pieces notes are made of, so that mutations reach the
/// interesting paths rather than failing at the first byte.
fn note_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\n".to_string()),
        Just("\n\n".to_string()),
        Just("\u{2014} ".to_string()),
        Just(" ".to_string()),
        Just("+".to_string()),
        Just("=".to_string()),
        "[a-z./]{1,12}",
        "[A-Za-z0-9+/]{4,90}={0,2}",
        "[0-9]{1,20}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

fn signer() -> Signer25519 {
    Signer25519::new("example.com/log", &[5; 32]).unwrap()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn notes_parse_or_refuse_and_round_trip(text in note_like()) {
        if let Ok(note) = Note::parse(text.as_bytes()) {
            // What is accepted is written back as it came, except that
            // signature lines are re-encoded canonically.
            let again = Note::parse(note.to_text().as_bytes()).expect("re-parses");
            prop_assert_eq!(&again, &note);
            prop_assert!(text.starts_with(&note.text));
        }
        let _ = Checkpoint::parse(&text);
        let _ = Verifier::parse(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Note::parse(&bytes);
        let _ = verify_checkpoint(&bytes, signer().verifier());
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = Checkpoint::parse(text);
            let _ = TilePath::parse(text);
            let _ = Verifier::parse(text);
        }
    }

    #[test]
    fn signed_checkpoints_verify_and_any_change_fails(
        size in any::<u64>(),
        root in any::<[u8; 32]>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let s = signer();
        let text = Checkpoint::new("example.com/log", size, root).unwrap().to_text();
        let note = Note { signatures: vec![s.sign(&text).unwrap()], text }.to_text();
        let got = verify_checkpoint(note.as_bytes(), s.verifier()).expect("verifies");
        prop_assert_eq!((got.size, got.root), (size, root));
        // Flip one bit anywhere in the note: it must not verify as the
        // same checkpoint.
        let mut bytes = note.into_bytes();
        let i = flip.index(bytes.len());
        bytes[i] ^= 1;
        if let Ok(other) = verify_checkpoint(&bytes, s.verifier()) {
            // Only a change inside the signature's base64 padding bits can
            // leave it valid; the checkpoint itself is then unchanged.
            prop_assert_eq!((other.size, other.root), (size, root));
        }
    }

    #[test]
    fn tile_paths_parse_or_refuse_and_round_trip(
        text in "(entries|[0-9]{1,3})/((x[0-9]{3}/){0,7})[0-9]{1,4}(\\.p/[0-9]{1,4})?"
    ) {
        if let Ok(tile) = TilePath::parse(&text) {
            prop_assert_eq!(tile.to_path(), text);
        }
    }

    #[test]
    fn every_tile_formats_to_a_path_that_parses_back(
        level in 0u8..=63,
        index in any::<u64>(),
        width in prop::option::of(1u8..=255),
        entries in any::<bool>(),
    ) {
        use logbook_tlog::tile::TileKind;
        let kind = if entries { TileKind::Entries } else { TileKind::Hashes { level } };
        let tile = TilePath { kind, index, width };
        prop_assert_eq!(TilePath::parse(&tile.to_path()), Ok(tile));
    }
}
