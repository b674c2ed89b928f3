//! `logbook restore FILE --data-dir DIR`: installs a backup (see
//! [`super::backup`]) into a data dir that has no journal yet, keys first.
//!
//! Order: the store is copied, fsynced and checked under a temporary name;
//! then the key files are written (mode 0600, fsynced); then the store is
//! renamed into place. So a failed restore never leaves a journal without
//! its keys (a start would generate a new HMAC key), and running it again
//! finishes it. A key file already in the data dir is kept when it is the
//! backup's byte for byte, and the restore is refused when it differs.

use std::io::{BufReader, Read};
use std::path::Path;
use std::process::ExitCode;

use super::backup::{self, BackupError, Header, KeyFile};
use super::client::count;
use logbook_base::private_file::{ensure_private_dir, write_private_file};
use logbook_journal::store::restore::{Access, restore as restore_bare, stage_restore};

/// What a restore installed.
#[derive(Debug)]
pub(crate) struct Restored {
    pub(crate) events: u64,
    /// The API tokens and federation peers it holds.
    pub(crate) access: Access,
    /// Key files written, or None for a backup without keys.
    pub(crate) keys: Option<KeysRestored>,
}

#[derive(Debug, Default)]
pub(crate) struct KeysRestored {
    pub(crate) written: Vec<String>,
    /// Already in the data dir, identical.
    pub(crate) kept: Vec<String>,
    /// In the backup (an older build's) and deliberately not written.
    pub(crate) left_out: Vec<String>,
}

/// The `logbook restore` command.
pub(crate) fn run(file: &Path, data_dir: &Path) -> ExitCode {
    match restore(file, data_dir) {
        Ok(restored) => {
            println!(
                "restored {} into {}",
                count(restored.events, "event", "events"),
                data_dir.display()
            );
            match restored.keys {
                Some(keys) => {
                    println!(
                        "restored {} ({} already there): {}",
                        count(
                            (keys.written.len() + keys.kept.len()) as u64,
                            "key file",
                            "key files"
                        ),
                        keys.kept.len(),
                        keys.written
                            .iter()
                            .chain(&keys.kept)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    if !keys.left_out.is_empty() {
                        println!("not restored: {}", keys.left_out.join(", "));
                    }
                }
                None => eprintln!(
                    "note: this backup holds no keys; restore hmac.key and hmac-retired/ (and federation.key, federation-retired/, instance_id, log.key, log-keys.json) too, or set $LOGBOOK_HMAC_SECRET"
                ),
            }
            eprintln!(
                "note: the witness key is never restored (the journal it would remember may be older than what it cosigned); the first start generates a new one: peers that follow this instance's document take it from there, but update any `[[witnesses]] vkey` and auditors' --witness that pin the old one"
            );
            print_access(&restored.access);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("logbook restore: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Names the tokens and peers the restored store lets in: a backup brings
/// back those revoked or removed since it was taken (and a backup file
/// changed by someone else could add its own), so the operator checks them.
fn print_access(access: &Access) {
    let tokens: Vec<String> = access
        .tokens
        .iter()
        .map(|(name, scopes)| {
            let scopes: Vec<String> = scopes
                .iter()
                .map(|s| format!("{s:?}").to_lowercase())
                .collect();
            // Names from a file someone else may have written: escaped, so
            // no control character can hide or fake a line.
            format!("{} ({})", name.escape_debug(), scopes.join(", "))
        })
        .collect();
    println!(
        "API tokens restored: {}",
        if tokens.is_empty() {
            "none".to_string()
        } else {
            tokens.join("; ")
        }
    );
    println!(
        "federation peers restored: {}",
        if access.peers.is_empty() {
            "none".to_string()
        } else {
            let peers: Vec<String> = access
                .peers
                .iter()
                .map(|p| p.escape_debug().to_string())
                .collect();
            peers.join(", ")
        }
    );
    if !tokens.is_empty() || !access.peers.is_empty() {
        eprintln!(
            "note: these are as the backup holds them; a token revoked or a peer removed since the backup was taken is back: revoke or remove it again (logbook admin tokens revoke, logbook admin peers remove) before serving"
        );
    }
}

/// Restores `file` into `data_dir`: a container (this build's backups) or
/// a bare store (older builds', key-less).
pub(crate) fn restore(file: &Path, data_dir: &Path) -> Result<Restored, BackupError> {
    let open = || {
        std::fs::File::open(file)
            .map_err(|e| BackupError::Io(format!("opening {}", file.display()), e))
    };
    let mut start = [0u8; backup::MAGIC.len()];
    let n = read_up_to(&mut open()?, &mut start)
        .map_err(|e| BackupError::Io(format!("reading {}", file.display()), e))?;
    if !backup::is_container(&start[..n]) {
        let (events, access) = restore_bare(file, data_dir).map_err(BackupError::Store)?;
        return Ok(Restored {
            events,
            access,
            keys: None,
        });
    }
    let mut reader = BufReader::new(open()?);
    let header = backup::read_header(&mut reader)?;
    // Refuse before anything is written.
    let plan = plan_keys(&header, data_dir)?;
    let staged = stage_restore(data_dir, |out| {
        backup::copy_store(&mut reader, out, &header.store)
    })
    .map_err(BackupError::Store)?;
    for key in &plan.written {
        write_key(data_dir, key)?;
    }
    let access = staged.access().clone();
    let events = staged.install().map_err(BackupError::Store)?;
    Ok(Restored {
        events,
        access,
        keys: header.keys.then(|| KeysRestored {
            written: plan.written.iter().map(|k| k.path.clone()).collect(),
            kept: plan.kept,
            left_out: plan.left_out,
        }),
    })
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

struct KeyPlan<'a> {
    written: Vec<&'a KeyFile>,
    kept: Vec<String>,
    left_out: Vec<String>,
}

/// Sorts the backup's key files into those to write, those the data dir
/// already holds identically and those never restored (an older build's
/// `witness.key`); any that differ refuse the whole restore.
fn plan_keys<'a>(header: &'a Header, data_dir: &Path) -> Result<KeyPlan<'a>, BackupError> {
    let mut plan = KeyPlan {
        written: Vec::new(),
        kept: Vec::new(),
        left_out: Vec::new(),
    };
    let mut conflicts = Vec::new();
    for key in &header.files {
        if backup::NEVER_RESTORED.contains(&key.path.as_str()) {
            plan.left_out.push(key.path.clone());
            continue;
        }
        let target = data_dir.join(&key.path);
        match std::fs::read(&target) {
            Ok(existing) if existing == key.content_base64 => plan.kept.push(key.path.clone()),
            Ok(_) => conflicts.push(key.path.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => plan.written.push(key),
            Err(e) => return Err(BackupError::Io(format!("reading {}", target.display()), e)),
        }
    }
    if !conflicts.is_empty() {
        return Err(BackupError::Conflict(conflicts));
    }
    Ok(plan)
}

/// Writes one key file, mode 0600 and fsynced with its directory (a new
/// retired-keys directory 0700, fsynced in the data dir).
fn write_key(data_dir: &Path, key: &KeyFile) -> Result<(), BackupError> {
    let target = data_dir.join(&key.path);
    let dir = target.parent().unwrap_or(data_dir);
    let write = || -> std::io::Result<()> {
        ensure_private_dir(dir)?;
        write_private_file(&target, &key.content_base64)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| BackupError::Io(format!("writing {}", target.display()), e))
}
