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
use logbook_journal::store::restore::{
    Access, refuse_occupied, restore as restore_bare, stage_restore,
};

/// What a restore installed.
#[derive(Debug)]
pub(crate) struct Restored {
    pub(crate) events: u64,
    /// The API tokens and federation peers it holds.
    pub(crate) access: Access,
    /// Key files written, or None for a backup without keys.
    pub(crate) keys: Option<KeysRestored>,
    pub(crate) authenticity: Authenticity,
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
pub(crate) fn run(file: &Path, data_dir: &Path, allow_unauthenticated: bool) -> ExitCode {
    match restore(file, data_dir, allow_unauthenticated) {
        Ok(restored) => {
            println!(
                "restored {} into {}",
                count(restored.events, "event", "events"),
                data_dir.display()
            );
            match &restored.authenticity {
                Authenticity::Key(id) => {
                    println!("authenticated: its MAC verifies under HMAC key {id}")
                }
                Authenticity::Unchecked(why) => {
                    eprintln!(
                        "WARNING: NOT AUTHENTICATED ({why}); anyone who could write the file could have put in tokens, peers, events and key files of their own"
                    )
                }
            }
            match restored.keys {
                Some(keys) => {
                    if !keys.written.is_empty() {
                        println!(
                            "restored {}: {}",
                            count(keys.written.len() as u64, "key file", "key files"),
                            keys.written.join(", ")
                        );
                    }
                    if !keys.kept.is_empty() {
                        println!("already there, identical: {}", keys.kept.join(", "));
                    }
                    if !keys.left_out.is_empty() {
                        println!("not restored: {}", keys.left_out.join(", "));
                    }
                }
                None => {
                    // Name only what the data dir still lacks.
                    let missing: Vec<&str> = [
                        "hmac.key",
                        "hmac-retired/",
                        "federation.key",
                        "federation-retired/",
                        "instance_id",
                        "log.key",
                        "log-keys.json",
                    ]
                    .into_iter()
                    .filter(|name| !data_dir.join(name).exists())
                    .collect();
                    if !missing.is_empty() {
                        eprintln!(
                            "note: this backup holds no keys; put back those of {} that you keep elsewhere{}",
                            missing.join(", "),
                            if missing.contains(&"hmac.key") {
                                " (or set $LOGBOOK_HMAC_SECRET for the HMAC key)"
                            } else {
                                ""
                            }
                        );
                    }
                }
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

/// How a restore knows the backup is the one an instance wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Authenticity {
    /// Its MAC verifies under this HMAC key: the signing key here (the
    /// environment's secret or the data dir's `hmac.key`).
    Key(String),
    /// Not checked (`--allow-unauthenticated`), and why not.
    Unchecked(String),
}

/// Checks a container's MAC with the HMAC key the daemon would sign with
/// here (the environment's secret, else the data dir's `hmac.key`), never
/// with a key the file carries (whoever could write the file could have
/// written it, and named it in the MAC) nor with a retired one (it may have
/// leaked, and its window is in the store being restored). Without that
/// key the backup is refused unless `allow_unauthenticated`; a MAC that does
/// not verify under the key it names, when this host holds that key, is
/// refused always.
fn authenticate(
    container: &backup::Container,
    data_dir: &Path,
    allow_unauthenticated: bool,
) -> Result<Authenticity, BackupError> {
    use logbook_journal::keys::{key_id, secret_here, signing_secret_here};
    let env = |name: &str| std::env::var(name).ok();
    let unchecked = |why: String| {
        if allow_unauthenticated {
            Ok(Authenticity::Unchecked(why))
        } else {
            Err(BackupError::Unauthenticated(why))
        }
    };
    let Some(mac) = &container.mac else {
        return unchecked(
            "it is a format 1 backup (an older build's), which carries no MAC".into(),
        );
    };
    let current = signing_secret_here(data_dir, env)
        .map_err(|e| BackupError::Io("reading the HMAC key to check the backup with".into(), e))?;
    let carried = if container.header.keys {
        "; the keys the file carries cannot vouch for it (whoever could write the file could have written them)"
    } else {
        ""
    };
    let Some(secret) = current else {
        return unchecked(format!(
            "neither $LOGBOOK_HMAC_SECRET nor {} holds the HMAC signing key to check its MAC with{carried}",
            data_dir
                .join(logbook_journal::keys::GENERATED_KEY_FILE)
                .display()
        ));
    };
    let current_id = key_id(&secret);
    if mac.key_id != current_id {
        // A retired key here cannot vouch, but it can refuse.
        let named = secret_here(data_dir, env, &mac.key_id)
            .map_err(|e| BackupError::Io("reading the HMAC keys".into(), e))?;
        let verdict = match named {
            Some(named) if !container.mac_verifies(&named) => {
                return Err(BackupError::Forged(mac.key_id.clone()));
            }
            Some(_) => {
                "it verifies under that key, which is not the signing key (a retired key, say, which may have leaked), so it does not vouch: a backup taken before a key rotation"
            }
            None => {
                "a backup taken under another key (if the daemon took its key from $LOGBOOK_HMAC_SECRET, set the same here), or before a key rotation"
            }
        };
        return unchecked(format!(
            "its MAC names HMAC key {}, not the signing key here ({current_id}); {verdict}{carried}",
            mac.key_id.escape_debug()
        ));
    }
    if !container.mac_verifies(&secret) {
        return Err(BackupError::Forged(mac.key_id.clone()));
    }
    Ok(Authenticity::Key(current_id))
}

/// Restores `file` into `data_dir`: a container (this build's backups) or
/// a bare store (older builds', key-less). One whose MAC cannot be checked
/// is refused unless `allow_unauthenticated`.
pub(crate) fn restore(
    file: &Path,
    data_dir: &Path,
    allow_unauthenticated: bool,
) -> Result<Restored, BackupError> {
    refuse_occupied(data_dir).map_err(BackupError::Store)?;
    let open = || {
        std::fs::File::open(file)
            .map_err(|e| BackupError::Io(format!("opening {}", file.display()), e))
    };
    let mut start = [0u8; backup::MAGIC.len()];
    let n = read_up_to(&mut open()?, &mut start)
        .map_err(|e| BackupError::Io(format!("reading {}", file.display()), e))?;
    if !backup::is_container(&start[..n]) {
        if !allow_unauthenticated {
            return Err(BackupError::Unauthenticated(
                "it is a bare store (a backup by a build before backup files), which carries no MAC".into(),
            ));
        }
        let (events, access) = restore_bare(file, data_dir).map_err(BackupError::Store)?;
        return Ok(Restored {
            events,
            access,
            keys: None,
            authenticity: Authenticity::Unchecked("a bare store carries no MAC".into()),
        });
    }
    let mut reader = BufReader::new(open()?);
    let container = backup::read_container(&mut reader)?;
    // Refuse before anything is written.
    let authenticity = authenticate(&container, data_dir, allow_unauthenticated)?;
    let header = container.header;
    let plan = plan_keys(&header, data_dir)?;
    let mut staged = stage_restore(data_dir, |out| {
        backup::copy_store(&mut reader, out, &header.store)
    })
    .map_err(BackupError::Store)?;
    if !plan.written.is_empty() {
        staged.keep_on_failure();
    }
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
        authenticity,
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
