//! C2SP tlog-tiles paths: `tile/<L>/<N>[.p/<W>]` and
//! `tile/entries/<N>[.p/<W>]`, parsed strictly so that every resource has
//! exactly one spelling (caches and mirrors key on the path).
//!
//! A hash tile at level `L` holds the stored hashes at tree level `8 * L`
//! (see [`crate::merkle`]); [`TilePath::stored_hashes`] says which ones.

/// Hashes in a full tile, and entries in a full bundle.
pub const TILE_WIDTH: u64 = 256;
/// Tree levels a tile spans.
pub const TILE_HEIGHT: u8 = 8;
/// Highest tile level the spec allows.
pub const MAX_TILE_LEVEL: u8 = 63;

/// What a tile path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileKind {
    /// Merkle tree hashes at tile level `L`.
    Hashes { level: u8 },
    /// The entry bundle (level-0 data).
    Entries,
}

/// A parsed tile path. `width` is `None` for a full tile, or the partial
/// width (1 to 255).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePath {
    pub kind: TileKind,
    pub index: u64,
    pub width: Option<u8>,
}

/// Why a tile path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilePathError {
    /// Not of the form the spec defines (the detail names the part at fault).
    Malformed(&'static str),
}

impl std::fmt::Display for TilePathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TilePathError::Malformed(what) => write!(f, "malformed tile path: {what}"),
        }
    }
}

impl std::error::Error for TilePathError {}

impl TilePath {
    /// Parses the part after `tile/`, e.g. `0/x001/234.p/7` or `entries/005`.
    pub fn parse(rest: &str) -> Result<TilePath, TilePathError> {
        let (first, rest) = rest
            .split_once('/')
            .ok_or(TilePathError::Malformed("missing index"))?;
        let kind = if first == "entries" {
            TileKind::Entries
        } else {
            let level = parse_decimal(first, u64::from(MAX_TILE_LEVEL))
                .ok_or(TilePathError::Malformed("level must be 0 to 63"))?;
            TileKind::Hashes { level: level as u8 }
        };
        let (index_part, width) = match rest.split_once(".p/") {
            Some((index, width)) => {
                let w = parse_decimal(width, TILE_WIDTH - 1)
                    .filter(|w| *w >= 1)
                    .ok_or(TilePathError::Malformed("partial width must be 1 to 255"))?;
                (index, Some(w as u8))
            }
            None => (rest, None),
        };
        let index = parse_index(index_part)?;
        Ok(TilePath { kind, index, width })
    }

    /// The canonical path after `tile/`.
    pub fn to_path(&self) -> String {
        let mut out = match self.kind {
            TileKind::Hashes { level } => level.to_string(),
            TileKind::Entries => "entries".to_string(),
        };
        out.push('/');
        out.push_str(&format_index(self.index));
        if let Some(w) = self.width {
            out.push_str(&format!(".p/{w}"));
        }
        out
    }

    /// Number of hashes or entries this tile holds.
    pub fn count(&self) -> u64 {
        self.width.map_or(TILE_WIDTH, u64::from)
    }

    /// The tree level of the hashes in this tile (0 for entry bundles);
    /// above 63 for the highest tile levels, where nothing ever exists.
    pub fn tree_level(&self) -> u32 {
        match self.kind {
            TileKind::Hashes { level } => u32::from(level) * u32::from(TILE_HEIGHT),
            TileKind::Entries => 0,
        }
    }

    /// The first hash (at [`TilePath::tree_level`]) or entry index it holds.
    pub fn first(&self) -> u64 {
        self.index.saturating_mul(TILE_WIDTH)
    }

    /// The stored hashes this hash tile holds, as the first one's
    /// [`NodeId`](crate::merkle::NodeId) and the count, if a log of
    /// `tree_size` leaves has them all; `None` for entry bundles and for
    /// tiles that do not exist.
    pub fn stored_hashes(&self, tree_size: u64) -> Option<(crate::merkle::NodeId, u64)> {
        let TileKind::Hashes { .. } = self.kind else {
            return None;
        };
        let level = u8::try_from(self.tree_level()).ok()?;
        self.exists_in(tree_size).then(|| {
            (
                crate::merkle::NodeId::new(level, self.first()),
                self.count(),
            )
        })
    }

    /// Whether a log of `tree_size` leaves has every hash or entry of this
    /// tile. A partial tile narrower than what exists is a tile of an
    /// earlier tree size: hashes never change, so it exists too.
    pub fn exists_in(&self, tree_size: u64) -> bool {
        let level = self.tree_level();
        let available = tree_size.checked_shr(level).unwrap_or(0);
        self.first()
            .checked_add(self.count())
            .is_some_and(|end| end <= available)
    }
}

/// An entry too long for an entry bundle's 2-byte length prefix; the
/// value is its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryTooLong(pub usize);

impl std::fmt::Display for EntryTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "an entry of {} bytes is longer than a bundle allows (65535)",
            self.0
        )
    }
}

impl std::error::Error for EntryTooLong {}

/// Appends `entry` to an entry bundle: its length as a big-endian u16,
/// then its bytes. A longer entry is refused, never truncated.
pub fn push_bundle_entry(bundle: &mut Vec<u8>, entry: &[u8]) -> Result<(), EntryTooLong> {
    let len = u16::try_from(entry.len()).map_err(|_| EntryTooLong(entry.len()))?;
    bundle.extend_from_slice(&len.to_be_bytes());
    bundle.extend_from_slice(entry);
    Ok(())
}

/// A decimal without extra leading zeros, at most `max`.
fn parse_decimal(text: &str, max: u64) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'))
        && text.len() <= 20;
    let value: u64 = canonical.then(|| text.parse().ok()).flatten()?;
    (value <= max).then_some(value)
}

/// `x001/x234/067` → 1234067. Groups are three digits; all but the last
/// start with `x`; the first group is not `x000` (one spelling per index).
fn parse_index(text: &str) -> Result<u64, TilePathError> {
    let bad = TilePathError::Malformed("index must be 3-digit groups like x001/x234/067");
    let groups: Vec<&str> = text.split('/').collect();
    if groups.len() > 7 {
        return Err(bad);
    }
    let mut value: u64 = 0;
    for (i, group) in groups.iter().enumerate() {
        let last = i + 1 == groups.len();
        let digits = if last {
            *group
        } else {
            group.strip_prefix('x').ok_or(bad)?
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad);
        }
        if i == 0 && !last && digits == "000" {
            return Err(bad);
        }
        let group_value: u64 = digits.parse().map_err(|_| bad)?;
        value = value
            .checked_mul(1000)
            .and_then(|v| v.checked_add(group_value))
            .ok_or(bad)?;
    }
    Ok(value)
}

/// 1234067 → `x001/x234/067`.
fn format_index(mut index: u64) -> String {
    let mut groups = vec![format!("{:03}", index % 1000)];
    index /= 1000;
    while index > 0 {
        groups.push(format!("x{:03}", index % 1000));
        index /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(level: u8, index: u64, width: Option<u8>) -> TilePath {
        TilePath {
            kind: TileKind::Hashes { level },
            index,
            width,
        }
    }

    #[test]
    fn spec_examples_round_trip() {
        for (path, tile) in [
            ("0/x001/x234/067", hashes(0, 1_234_067, None)),
            ("0/000", hashes(0, 0, None)),
            ("1/x001/000.p/17", hashes(1, 1000, Some(17))),
            ("63/999", hashes(63, 999, None)),
            (
                "entries/005.p/255",
                TilePath {
                    kind: TileKind::Entries,
                    index: 5,
                    width: Some(255),
                },
            ),
        ] {
            assert_eq!(TilePath::parse(path), Ok(tile), "{path}");
            assert_eq!(tile.to_path(), path);
        }
        let max = hashes(0, u64::MAX, None);
        assert_eq!(TilePath::parse(&max.to_path()), Ok(max));
    }

    #[test]
    fn every_other_spelling_is_refused() {
        for path in [
            "",
            "0",
            "0/",
            "00/000",
            "64/000",
            "-1/000",
            "0/67",
            "0/0067",
            "0/x000/067",
            "0/001/067",
            "0/x1/067",
            "0/x001/x234",
            "0/000.p/0",
            "0/000.p/256",
            "0/000.p/07",
            "0/000.p/",
            "0/000.p",
            "0/000/",
            "entries/",
            "entry/000",
            "0/x018/x446/x744/x073/x709/x551/616",
            "0/+01",
            "0/0x1",
            " 0/000",
            "0/000 ",
            "0/x001/x002/x003/x004/x005/x006/x007/008",
        ] {
            assert!(TilePath::parse(path).is_err(), "{path:?} was accepted");
        }
    }

    #[test]
    fn bundle_entries_are_length_prefixed() {
        let mut bundle = Vec::new();
        push_bundle_entry(&mut bundle, b"abc").unwrap();
        push_bundle_entry(&mut bundle, &[7; 300]).unwrap();
        assert_eq!(&bundle[..5], b"\x00\x03abc");
        assert_eq!(&bundle[5..7], &[0x01, 0x2c]);
        assert_eq!(bundle.len(), 5 + 2 + 300);
        push_bundle_entry(&mut bundle, &[0; 65535]).unwrap();
        let before = bundle.len();
        assert_eq!(
            push_bundle_entry(&mut bundle, &[0; 65536]),
            Err(EntryTooLong(65536))
        );
        assert_eq!(bundle.len(), before, "nothing is appended");
    }

    /// The spec's example: a tree of 70,000 entries.
    #[test]
    fn which_tiles_exist() {
        let size = 70_000;
        assert!(hashes(0, 272, None).exists_in(size));
        assert!(!hashes(0, 273, None).exists_in(size));
        assert!(hashes(0, 273, Some(112)).exists_in(size));
        assert!(hashes(0, 273, Some(100)).exists_in(size));
        assert!(!hashes(0, 273, Some(113)).exists_in(size));
        assert!(hashes(1, 0, None).exists_in(size));
        assert!(hashes(1, 1, Some(17)).exists_in(size));
        assert!(!hashes(1, 1, Some(18)).exists_in(size));
        assert!(hashes(2, 0, Some(1)).exists_in(size));
        assert!(!hashes(3, 0, Some(1)).exists_in(size));
        assert!(!hashes(63, u64::MAX, None).exists_in(u64::MAX));
        // A tree of 256: one full level-0 tile and a level-1 tile of width 1.
        assert!(hashes(0, 0, None).exists_in(256));
        assert!(hashes(1, 0, Some(1)).exists_in(256));
        // Which stored hashes a tile is; none past tree level 63.
        use crate::merkle::NodeId;
        assert_eq!(
            hashes(1, 1, Some(17)).stored_hashes(size),
            Some((NodeId::new(8, 256), 17))
        );
        assert_eq!(hashes(1, 2, Some(1)).stored_hashes(size), None);
        assert_eq!(hashes(32, 0, Some(1)).stored_hashes(u64::MAX), None);
        let entries = TilePath::parse("entries/000").unwrap();
        assert_eq!(entries.stored_hashes(u64::MAX), None);
    }
}
