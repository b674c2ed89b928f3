//! The tlog-tiles vectors in `docs/vectors/tlog-tiles.json`: tile paths,
//! which tiles exist at a tree size, and the bytes of hash tiles and entry
//! bundles (full and partial) over the entries of `tlog-merkle.json`. This
//! crate must reproduce them exactly, and
//! `docs/vectors/verify_tile_vectors.py` checks them independently (CI runs
//! both). Regenerate after a deliberate change with
//! `LOGBOOK_WRITE_VECTORS=1 cargo test -p logbook-tlog --test tile_vectors`.

use std::collections::HashMap;
use std::convert::Infallible;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use logbook_tlog::merkle::{Hash, NodeId, hashes_to_store, leaf_hash};
use logbook_tlog::tile::{TileKind, TilePath, push_bundle_entry};

const PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/vectors/tlog-tiles.json"
);
/// One full level-0 tile and one entry past it.
const SIZE: u64 = 257;
/// Paths with their parsed (level or "entries", index, width).
const PATHS: &[&str] = &[
    "0/000",
    "0/x001/x234/067",
    "1/x001/000.p/17",
    "63/999",
    "entries/005.p/255",
    "entries/x018/x446/x744/x073/x709/x551/615",
];
const REFUSED: &[&str] = &[
    "0/67",
    "0/0067",
    "0/x000/067",
    "00/000",
    "64/000",
    "0/000.p/0",
    "0/000.p/256",
    "0/000.p/07",
    "entry/000",
    "0/x018/x446/x744/x073/x709/x551/616",
];
/// Tiles that exist in the tree of SIZE entries, served here in full.
const PRESENT: &[&str] = &[
    "0/000",
    "0/000.p/5",
    "0/001.p/1",
    "1/000.p/1",
    "entries/000",
    "entries/000.p/3",
    "entries/001.p/1",
];
const ABSENT: &[&str] = &[
    "0/001",
    "0/001.p/2",
    "0/002.p/1",
    "1/000",
    "1/000.p/2",
    "2/000.p/1",
    "entries/001",
    "entries/001.p/2",
];

fn entry(i: u64) -> String {
    format!("logbook tlog vector entry {i}")
}

fn render() -> String {
    let mut stored: HashMap<NodeId, Hash> = HashMap::new();
    for i in 0..SIZE {
        let mut read = |id: NodeId| Ok::<_, Infallible>(stored[&id]);
        let new = hashes_to_store(i, leaf_hash(entry(i).as_bytes()), &mut read).unwrap();
        stored.extend(new);
    }
    let mut out = String::from("{\n");
    out.push_str("  \"description\": \"C2SP tlog-tiles vectors over the entries of tlog-merkle.json ('logbook tlog vector entry i'); contents are standard base64\",\n");
    out.push_str(&format!(
        "  \"entry_template\": \"logbook tlog vector entry {{i}}\",\n  \"tree_size\": {SIZE},\n"
    ));
    let paths: Vec<String> = PATHS
        .iter()
        .map(|p| {
            let tile = TilePath::parse(p).unwrap();
            assert_eq!(tile.to_path(), *p);
            let level = match tile.kind {
                TileKind::Hashes { level } => level.to_string(),
                TileKind::Entries => "\"entries\"".to_string(),
            };
            let width = tile.width.map_or("null".to_string(), |w| w.to_string());
            format!(
                "    {{\"path\": \"{p}\", \"level\": {level}, \"index\": {}, \"width\": {width}}}",
                tile.index
            )
        })
        .collect();
    out.push_str(&format!("  \"paths\": [\n{}\n  ],\n", paths.join(",\n")));
    for p in REFUSED {
        assert!(TilePath::parse(p).is_err(), "{p}");
    }
    let quoted = |list: &[&str]| {
        list.iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!("  \"refused\": [{}],\n", quoted(REFUSED)));
    let present: Vec<String> = PRESENT
        .iter()
        .map(|p| {
            let tile = TilePath::parse(p).unwrap();
            assert!(tile.exists_in(SIZE), "{p}");
            let mut bytes = Vec::new();
            match tile.kind {
                TileKind::Hashes { .. } => {
                    let (first, count) = tile.stored_hashes(SIZE).unwrap();
                    for index in first.index..first.index + count {
                        bytes.extend_from_slice(&stored[&NodeId::new(first.level, index)]);
                    }
                }
                TileKind::Entries => {
                    for i in tile.first()..tile.first() + tile.count() {
                        push_bundle_entry(&mut bytes, entry(i).as_bytes()).unwrap();
                    }
                }
            }
            format!(
                "    {{\"path\": \"{p}\", \"content\": \"{}\"}}",
                BASE64.encode(&bytes)
            )
        })
        .collect();
    out.push_str(&format!(
        "  \"present\": [\n{}\n  ],\n",
        present.join(",\n")
    ));
    for p in ABSENT {
        assert!(!TilePath::parse(p).unwrap().exists_in(SIZE), "{p}");
    }
    out.push_str(&format!("  \"absent\": [{}]\n}}\n", quoted(ABSENT)));
    out
}

#[test]
fn vectors_are_reproduced() {
    let rendered = render();
    if std::env::var_os("LOGBOOK_WRITE_VECTORS").is_some() {
        std::fs::write(PATH, &rendered).unwrap();
    }
    let stored = std::fs::read_to_string(PATH).expect("docs/vectors/tlog-tiles.json");
    assert_eq!(
        stored, rendered,
        "the tile vectors changed; see this file's header"
    );
}
