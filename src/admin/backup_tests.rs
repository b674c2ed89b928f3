//! Tests of the backup file: its reader's refusals, the MAC, the vectors.

use super::*;

fn container(files: Vec<KeyFile>, store: &[u8]) -> Vec<u8> {
    let header = Header {
        keys: true,
        files,
        store: StoreInfo {
            size: store.len() as u64,
            sha256: hex::encode(&logbook_base::canonical::sha256(store)),
        },
    };
    let mut out = encode_header(&header, SECRET);
    out.extend_from_slice(store);
    out
}

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn read_header(reader: &mut impl BufRead) -> Result<Header, BackupError> {
    read_container(reader).map(|c| c.header)
}

/// One case of docs/vectors/backup-mac.json: name, secret, header, how
/// the written head is then changed, whether its MAC verifies.
type VectorCase = (
    &'static str,
    &'static [u8],
    Header,
    fn(String) -> String,
    bool,
);

fn vector_cases() -> Vec<VectorCase> {
    let store = |size: u64| StoreInfo {
        size,
        sha256: hex::encode(&logbook_base::canonical::sha256(b"STORE")),
    };
    let without_keys = Header {
        keys: false,
        files: vec![],
        store: store(5),
    };
    let with_keys = Header {
        keys: true,
        files: vec![KeyFile {
            path: "hmac.key".into(),
            content_base64: b"0123456789abcdef0123456789abcdef\n".to_vec(),
        }],
        store: store(5),
    };
    let same: fn(String) -> String = |head| head;
    vec![
        ("without keys", SECRET, without_keys.clone(), same, true),
        ("with keys", SECRET, with_keys, same, true),
        (
            "an environment secret",
            b"a secret given in $LOGBOOK_HMAC_SECRET",
            without_keys.clone(),
            same,
            true,
        ),
        (
            "the store's hash changed",
            SECRET,
            without_keys.clone(),
            |head| {
                let at = head.find("\"sha256\":\"").unwrap() + 10;
                let digit = if &head[at..=at] == "0" { "1" } else { "0" };
                format!("{}{digit}{}", &head[..at], &head[at + 1..])
            },
            false,
        ),
        (
            "keys false made true",
            SECRET,
            without_keys.clone(),
            |head| head.replacen("\"keys\":false", "\"keys\":true", 1),
            false,
        ),
        (
            "a MAC under the signing key itself, not the derived key",
            SECRET,
            without_keys,
            |head| {
                use hmac::Mac;
                let signed_end = head.find("}\n").unwrap() + 2;
                let raw = keyed(SECRET)
                    .chain_update(&head.as_bytes()[..signed_end])
                    .finalize();
                let line = MacLine {
                    key_id: logbook_journal::keys::key_id(SECRET),
                    hmac_sha256: hex::encode(&raw.into_bytes()),
                };
                format!(
                    "{}{}\n",
                    &head[..signed_end],
                    serde_json::to_string(&line).unwrap()
                )
            },
            false,
        ),
    ]
}

#[test]
fn the_backup_vectors_match() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/vectors/backup-mac.json");
    let cases: Vec<serde_json::Value> = vector_cases()
        .into_iter()
        .map(|(name, secret, header, change, valid)| {
            let head = change(String::from_utf8(encode_header(&header, secret)).unwrap());
            let mut file = head.clone().into_bytes();
            file.extend_from_slice(b"STORE");
            let read = read_container(&mut &file[..]).unwrap();
            assert_eq!(read.mac_verifies(secret), valid, "{name}");
            serde_json::json!({
                "name": name,
                "secret": String::from_utf8(secret.to_vec()).unwrap(),
                "head": head,
                "store": "STORE",
                "valid": valid,
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "description": "logbook backup files, format 2 (docs/journal-format.md, \"The backup file\"): the three lines before the store, written under an HMAC secret, and whether their MAC verifies. Checked by docs/vectors/verify_backup_vectors.py.",
        "mac_key_label": std::str::from_utf8(MAC_KEY_LABEL).unwrap(),
        "cases": cases,
    }))
    .unwrap() + "\n";
    if std::env::var_os("LOGBOOK_WRITE_VECTORS").is_some() {
        std::fs::write(path, &text).unwrap();
    }
    let stored = std::fs::read_to_string(path).expect("docs/vectors/backup-mac.json");
    assert_eq!(
        stored, text,
        "the vectors are stale: rerun with LOGBOOK_WRITE_VECTORS=1"
    );
}

#[test]
fn the_mac_line_verifies_only_under_its_key_and_over_its_lines() {
    let bytes = container(vec![key("log.key")], b"STORE");
    let read = read_container(&mut &bytes[..]).unwrap();
    let line = read.mac.clone().unwrap();
    assert_eq!(line.key_id, logbook_journal::keys::key_id(SECRET));
    assert!(read.mac_verifies(SECRET));
    assert!(!read.mac_verifies(b"another secret, also 32 bytes ok"));
    // One byte of the header changed (the store's hash, say): refused.
    let text = String::from_utf8_lossy(&bytes).replacen("\"size\":5", "\"size\":6", 1);
    let changed = read_container(&mut text.as_bytes()).unwrap();
    assert!(!changed.mac_verifies(SECRET));
    // Format 1 (no MAC line) still reads, and authenticates nothing.
    let first = bytes.iter().position(|&b| b == b'\n').unwrap();
    let second = first + 1 + bytes[first + 1..].iter().position(|&b| b == b'\n').unwrap();
    let third = second
        + 1
        + bytes[second + 1..]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap();
    let mut old = b"logbook-backup 1\n".to_vec();
    old.extend_from_slice(&bytes[first + 1..=second]);
    old.extend_from_slice(&bytes[third + 1..]);
    assert!(is_container(&old));
    let mut reader = &old[..];
    let read = read_container(&mut reader).unwrap();
    assert!(read.mac.is_none() && !read.mac_verifies(SECRET));
    let mut store = Vec::new();
    copy_store(&mut reader, &mut store, &read.header.store).unwrap();
    assert_eq!(store, b"STORE");
}

fn key(path: &str) -> KeyFile {
    KeyFile {
        path: path.into(),
        content_base64: b"secret\n".to_vec(),
    }
}

#[test]
fn round_trip_and_refusals() {
    let bytes = container(vec![key("hmac.key"), key("hmac-retired/a.key")], b"STORE");
    let mut reader = &bytes[..];
    let header = read_header(&mut reader).unwrap();
    assert_eq!(header.files.len(), 2);
    let mut store = Vec::new();
    copy_store(&mut reader, &mut store, &header.store).unwrap();
    assert_eq!(store, b"STORE");

    for bad in [
        "../hmac.key",
        "hmac-retired/../x",
        "journal.redb",
        "hmac-retired/.x",
        "x/y",
    ] {
        let bytes = container(vec![key(bad)], b"S");
        assert!(read_header(&mut &bytes[..]).is_err(), "{bad}");
    }
    let twice = container(vec![key("log.key"), key("log.key")], b"S");
    assert!(read_header(&mut &twice[..]).is_err());

    // Cut short, changed, or followed by more bytes.
    let mut cut = container(vec![], b"STORE");
    cut.pop();
    let mut changed = container(vec![], b"STORE");
    *changed.last_mut().unwrap() = b'X';
    let mut longer = container(vec![], b"STORE");
    longer.push(b'!');
    for bytes in [cut, changed, longer] {
        let mut reader = &bytes[..];
        let header = read_header(&mut reader).unwrap();
        assert!(copy_store(&mut reader, &mut Vec::new(), &header.store).is_err());
    }
    assert!(!is_container(b"redb\x1a\x0a\xa9\x0d\x0a"));
}
