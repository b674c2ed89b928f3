//! Store operations behind the admin socket: API tokens kept in the store,
//! deleting a plan (with a tombstone in the system journal), totals for
//! `status`, and consistent backups and their restore.
//!
//! Tables (created with all the others by `tables::create_all`):
//! - `api_tokens`: token id → name, SHA-256 of the secret, scopes, creation time
//! - `auth_state`: `"latch"` → when and why auth became required for good
//!   (`[auth] required = "auto"`: once a token existed, revoking the last one
//!   must not reopen the API)

use std::path::Path;

use base64::Engine;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{
    AppendRequest, EVENTS, HEADS, Job, PlanHead, Store, StoreError, Tables, WriterLoop, decode,
    encode, event_key,
};
use crate::Event;
use crate::chain::CanonicalPayload;
use crate::event::Timestamp;
use logbook_base::hex;

pub(super) const API_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
pub(super) const AUTH_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("auth_state");
const LATCH_KEY: &str = "latch";

/// The plan holding the system journal: tombstones of deleted plans and key
/// rotations. It is hash-chained like any plan and can never be deleted.
pub const SYSTEM_PLAN: Uuid = Uuid::nil();
/// Event type of a tombstone in the system journal.
pub(crate) const TOMBSTONE_TYPE: &str = "system.plan_deleted";

/// Creates this module's tables inside the store's opening transaction.
/// The auth latch: set the first time any API token exists, never cleared
/// by revoking tokens. Only `[auth] required = false` overrides it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthLatch {
    /// Milliseconds since the Unix epoch.
    pub since: i64,
    /// What set it, e.g. "a token was created over the admin socket".
    pub reason: String,
}

/// Sets the latch inside `txn` unless it is already set.
fn set_latch(txn: &redb::WriteTransaction, reason: &str) -> Result<AuthLatch, StoreError> {
    let mut table = txn.open_table(AUTH_STATE)?;
    if let Some(existing) = table.get(LATCH_KEY)? {
        return decode(existing.value());
    }
    let latch = AuthLatch {
        since: Timestamp::now().millis(),
        reason: reason.to_string(),
    };
    table.insert(LATCH_KEY, encode(&latch).as_slice())?;
    Ok(latch)
}

/// What a bearer token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Append,
    /// Federation management: peers, subscriptions, publishing, retries.
    Admin,
}

/// An API token created over the admin socket. Only the hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub id: String,
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<Scope>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// Why deleting a plan did not happen.
#[derive(Debug)]
pub enum DeleteError {
    NotFound,
    /// The system journal itself.
    Protected,
    /// The writer has stopped; the daemon is shutting down.
    Unavailable,
    Storage(StoreError),
}

impl From<StoreError> for DeleteError {
    fn from(e: StoreError) -> Self {
        DeleteError::Storage(e)
    }
}

impl std::fmt::Display for DeleteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeleteError::NotFound => f.write_str("no such plan"),
            DeleteError::Protected => f.write_str("the system journal cannot be deleted"),
            DeleteError::Unavailable => f.write_str("the journal is shutting down"),
            DeleteError::Storage(e) => write!(f, "{e}"),
        }
    }
}

/// What a deletion removed, and the tombstone that records it.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub head: PlanHead,
    pub tombstone: std::sync::Arc<Event>,
}

/// A token of that name (or id) is stored already; holds the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExists(pub String);

impl std::fmt::Display for TokenExists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} is already a token's name or id", self.0)
    }
}

impl std::error::Error for TokenExists {}

impl Store {
    /// The keyring in force: it signs new events and verifies old ones.
    pub fn keyring(&self) -> std::sync::Arc<crate::keys::Keyring> {
        self.keyring.current()
    }

    /// Makes `keyring` sign every batch from the next one on.
    pub fn replace_keyring(&self, keyring: crate::keys::Keyring) {
        self.keyring.replace(keyring);
    }

    /// Plans and events currently stored.
    pub fn totals(&self) -> Result<(u64, u64), StoreError> {
        let txn = self.db.begin_read()?;
        let plans = txn.open_table(HEADS)?.len()?;
        let events = txn.open_table(EVENTS)?.len()?;
        Ok((plans, events))
    }

    /// Appends waiting for the writer right now.
    pub fn queue_depth(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    pub fn stored_tokens(&self) -> Result<Vec<StoredToken>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(API_TOKENS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Stores a token; refuses a name or id already in use.
    pub fn insert_token(&self, token: &StoredToken) -> Result<Result<(), TokenExists>, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        if let Err(exists) = insert_token_in(&txn, token)? {
            return Ok(Err(exists));
        }
        // In the same transaction: a token that exists has latched auth on.
        set_latch(&txn, "a token was created over the admin socket")?;
        self.db.commit(txn)?;
        Ok(Ok(()))
    }

    /// The auth latch, if a token has ever existed.
    pub fn auth_latch(&self) -> Result<Option<AuthLatch>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(AUTH_STATE)?;
        table.get(LATCH_KEY)?.map(|v| decode(v.value())).transpose()
    }

    /// Sets the auth latch (fsynced) unless it is set; returns it.
    pub fn latch_auth(&self, reason: &str) -> Result<AuthLatch, StoreError> {
        if let Some(latch) = self.auth_latch()? {
            return Ok(latch);
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let latch = set_latch(&txn, reason)?;
        self.db.commit(txn)?;
        Ok(latch)
    }

    /// Removes the token with this id, or else the one with this name,
    /// returning it. The id is looked up first: a store written before
    /// names and ids were kept apart may hold a token named like another's
    /// id, and the id is what names one token for sure.
    pub fn remove_token(&self, name_or_id: &str) -> Result<Option<StoredToken>, StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let removed = {
            let mut table = txn.open_table(API_TOKENS)?;
            let mut found = table
                .get(name_or_id)?
                .map(|v| decode::<StoredToken>(v.value()))
                .transpose()?;
            if found.is_none() {
                for entry in table.iter()? {
                    let token: StoredToken = decode(entry?.1.value())?;
                    if token.name == name_or_id {
                        found = Some(token);
                        break;
                    }
                }
            }
            if let Some(token) = &found {
                table.remove(token.id.as_str())?;
            }
            found
        };
        self.db.commit(txn)?;
        Ok(removed)
    }

    /// Deletes a plan: its events, positions, idempotency records and head
    /// go, and a tombstone (who, head seq, head signature) is appended to
    /// the system journal, all in one writer transaction. So a deletion is
    /// never unrecorded, a tombstone never describes a deletion that did not
    /// happen, and no append can land in between.
    pub async fn delete_plan(
        &self,
        plan_id: Uuid,
        who: serde_json::Value,
    ) -> Result<Deleted, DeleteError> {
        if plan_id == SYSTEM_PLAN {
            return Err(DeleteError::Protected);
        }
        let (reply, wait) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job::DeletePlan(plan_id, who, reply))
            .await
            .map_err(|_| DeleteError::Unavailable)?;
        let outcome = wait.await.unwrap_or(Err(DeleteError::Unavailable));
        self.wait_for_signers().await;
        outcome
    }

    /// Writes a consistent snapshot of the whole store into a file that has
    /// no name in `dir` (`snapshot_file`) and returns it, rewound, to be
    /// streamed. Every table is copied from one read transaction, so appends
    /// keep flowing and the copy shows exactly one committed state. The
    /// snapshot's blocks are freed when the file is closed, or when the
    /// process dies, so a crash mid-backup leaves nothing behind.
    pub fn backup_to_unnamed(&self, dir: &Path) -> Result<(std::fs::File, u64), StoreError> {
        use std::io::Seek;
        let file = snapshot_file(dir)
            .map_err(|e| StoreError(format!("creating a snapshot in {}: {e}", dir.display())))?;
        // redb owns (and closes) the handle it gets; this one keeps the file.
        let mut keep = file
            .try_clone()
            .map_err(|e| StoreError(format!("duplicating the snapshot handle: {e}")))?;
        let out = redb::backends::FileBackend::new(file)
            .and_then(|backend| {
                redb::Builder::new()
                    .set_cache_size(super::handle::CACHE_BYTES)
                    .create_with_backend(backend)
            })
            .map_err(|e| StoreError(format!("creating the snapshot: {e}")))?;
        let rows = self.backup_into(out)?;
        keep.rewind()
            .map_err(|e| StoreError(format!("rewinding the snapshot: {e}")))?;
        Ok((keep, rows))
    }

    /// Copies every table into `out` and closes it.
    fn backup_into(&self, out: Database) -> Result<u64, StoreError> {
        let read = self.db.begin_read()?;
        let mut write = out.begin_write()?;
        write.set_durability(Durability::Immediate)?;
        super::handle::commit_settings(&mut write, false);
        let rows = super::tables::copy_all(&read, &write)?;
        write.commit()?;
        // Closing writes the clean-shutdown header, so the copy opens without repair.
        out.close()?;
        Ok(rows)
    }
}

/// Inserts `token` unless its name or id is taken, as a name or as an id:
/// `revoke` takes either, so each must name one token only.
fn insert_token_in(
    txn: &redb::WriteTransaction,
    token: &StoredToken,
) -> Result<Result<(), TokenExists>, StoreError> {
    let mut table = txn.open_table(API_TOKENS)?;
    for entry in table.iter()? {
        let (k, v) = entry?;
        let existing: StoredToken = decode(v.value())?;
        let taken = [existing.name.as_str(), k.value()];
        if taken.contains(&token.name.as_str()) || taken.contains(&token.id.as_str()) {
            return Ok(Err(TokenExists(token.name.clone())));
        }
    }
    table.insert(token.id.as_str(), encode(token).as_slice())?;
    Ok(Ok(()))
}

/// Stores a token in the store file at `path` (created if missing, mode
/// 0600) with no daemon running: `logbook tokens create` before a first
/// start. redb locks the file, so while a daemon has it open this fails
/// (the daemon's admin socket is the way then). Latches auth on, as a token
/// created over the admin socket does.
pub fn insert_token_offline(
    path: &Path,
    token: &StoredToken,
) -> Result<Result<(), TokenExists>, StoreError> {
    super::replay::refuse_orphan_segment(path)?;
    if let Some(why) = path.parent().and_then(super::restore::unfinished_restore) {
        return Err(StoreError(why));
    }
    let db = super::handle::open_database(path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError(format!("making {} private: {e}", path.display())))?;
    }
    // A store the daemon left with a non-empty write-ahead segment gets
    // its events back first, as the daemon's next start would.
    {
        let mut txn = db.begin_write()?;
        super::handle::commit_settings(&mut txn, false);
        super::tables::create_all(&txn)?;
        txn.commit()?;
    }
    super::replay::replay_and_empty(&db, path, false, None)?;
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    super::handle::commit_settings(&mut txn, false);
    if let Err(exists) = insert_token_in(&txn, token)? {
        return Ok(Err(exists));
    }
    set_latch(&txn, "a token was created offline")?;
    txn.commit()?;
    Ok(Ok(()))
}

/// Prefix of the named snapshot files older builds wrote into the data dir
/// (`.backup-<uuid>.redb`), and this one only where O_TMPFILE is missing.
const SNAPSHOT_PREFIX: &str = ".backup-";

/// A new, empty file for a backup snapshot, mode 0600, with no name in
/// `dir`: O_TMPFILE, so the kernel frees it with its last handle, even after
/// a crash. Where the file system lacks O_TMPFILE, a named file unlinked at
/// once; the instant between leaves a name only a crash right then can
/// strand, and [`remove_stale_snapshots`] removes it at the next start.
pub(crate) fn snapshot_file(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let unnamed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match unnamed {
        Ok(file) => Ok(file),
        // Kernels and file systems without O_TMPFILE answer one of these.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            let path = dir.join(format!("{SNAPSHOT_PREFIX}{}.redb", Uuid::new_v4()));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(file)
        }
        Err(e) => Err(e),
    }
}

/// Removes backup snapshots a crash left in `dir` (`.backup-*.redb`).
/// Returns how many there were.
pub(crate) fn remove_stale_snapshots(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(SNAPSHOT_PREFIX)
            && name.ends_with(".redb")
            && entry.file_type()?.is_file()
        {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

impl WriterLoop {
    /// Runs a plan deletion as its own transaction in the writer thread.
    pub(super) fn delete_plan(
        &mut self,
        plan_id: Uuid,
        who: serde_json::Value,
    ) -> Result<Deleted, DeleteError> {
        debug_assert_ne!(plan_id, SYSTEM_PLAN, "checked by Store::delete_plan");
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(StoreError::from)?;
        let mut position = self.position;
        let (deleted, enqueued) = {
            let mut tables = Tables::open(&txn, &self.fed)?;
            let super::head::HeadRow { head, tail } =
                tables.head_row(&plan_id)?.ok_or(DeleteError::NotFound)?;
            // The final checkpoint's size and root: whoever kept an export
            // can still prove the deleted history against them.
            let root = super::tree::root_in(tables.tree.table()?, &plan_id, &tail, head.last_seq)?;
            let payload = json!({
                "plan_id": plan_id,
                "head_seq": head.last_seq,
                "head_signature": hex::encode(&head.last_signature),
                "count": head.count,
                "tree_size": head.last_seq,
                "tree_root": base64::engine::general_purpose::STANDARD.encode(root),
                "deleted_by": who,
            });
            let tombstone = AppendRequest {
                plan_id: SYSTEM_PLAN,
                event_type: TOMBSTONE_TYPE.into(),
                actor: Some("logbook-admin".into()),
                payload: CanonicalPayload::new(&payload),
                expected_seq: None,
                idempotency: None,
            };
            let keyring = self.keyring.current();
            let appended = tables
                .apply(&tombstone, &keyring, Timestamp::now(), &mut position)?
                .map_err(|e| StoreError(format!("appending the tombstone: {e:?}")))?;
            // Its final checkpoint as signed, for the deletion's bundle.
            let unsealed =
                super::signed::seal_deleted(&txn, &plan_id, head.last_seq, root, |size| {
                    super::tree::root_in(tables.tree.table()?, &plan_id, &tail, size)
                })?;
            tables.remove_plan(&plan_id)?;
            let gone = super::deleted::DeletedPlan {
                tombstone_seq: appended.event.seq,
                tree_size: head.last_seq,
                tree_root: Some(root),
            };
            super::deleted::record(tables.deleted.table()?, &plan_id, &gone)?;
            // The heads log records the final checkpoint at once, so no
            // witness can be shown a later history under the plan's origin.
            super::heads_log::append(&txn, &plan_id, head.last_seq, root, true)?;
            let (removed, blanked) = tables.fed.forget_plan(&plan_id)?;
            if removed + blanked > 0 {
                tracing::info!(%plan_id, removed, blanked, "forgot the deleted plan's federation messages");
            }
            tables.write_staged()?;
            (
                Deleted {
                    head,
                    tombstone: appended.event,
                },
                (tables.fed.enqueued, removed, blanked, unsealed),
            )
        };
        txn.commit().map_err(StoreError::from)?;
        self.position = position;
        let (enqueued, removed, blanked, unsealed) = enqueued;
        // Counted and logged once, for a deletion that happened: its
        // bundle will be refused.
        if let Some(r) = unsealed {
            super::signed::refused(r.log, r.last_size, r.size);
        }
        // A removed row's seq may be given again (to a peer's newest row):
        // the workers, whose cursors may be past it, read from the start.
        if removed > 0 {
            self.fed.outbox.requeued();
        }
        // A worker may hold some of these rows: it must not sign them now
        // (a blanked row was delivered meanwhile, its copy still open there).
        if removed + blanked > 0 {
            self.fed.outbox.rewritten();
        }
        if enqueued + removed > 0 {
            self.fed.outbox_grew();
        }
        self.fanout
            .publish_tombstone(deleted.tombstone.clone(), plan_id);
        Ok(deleted)
    }
}

impl Tables<'_> {
    /// Removes every row of a plan: head, events, positions, idempotency,
    /// tree hashes.
    fn remove_plan(&mut self, plan_id: &Uuid) -> Result<(), StoreError> {
        self.remove_head(plan_id)?;
        super::tree::remove_plan(self.tree.table()?, plan_id)?;
        // One pass over the plan's rows removes them and reads each one's
        // position in place. A record that does not decode fails the
        // deletion: its transaction is then never committed.
        let (from, to) = (event_key(plan_id, 0), event_key(plan_id, u64::MAX));
        let mut doomed = Vec::new();
        let mut corrupt = None;
        self.events
            .table()?
            .retain_in::<&[u8; 24], _>(&from..=&to, |_, record| {
                match super::records::decode_event_view(record) {
                    Ok(view) => doomed.push(view.position),
                    Err(e) => corrupt = Some(e),
                }
                false
            })?;
        if let Some(e) = corrupt {
            return Err(e);
        }
        let positions = self.positions.table()?;
        for position in doomed {
            positions.remove(position)?;
        }
        let idempotency = self.idempotency.table()?;
        let prefix = plan_id.as_bytes().to_vec();
        let mut keys = Vec::new();
        for entry in idempotency.range(prefix.as_slice()..)? {
            let (k, _) = entry?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            keys.push(k.value().to_vec());
        }
        for key in keys {
            idempotency.remove(key.as_slice())?;
        }
        Ok(())
    }
}
