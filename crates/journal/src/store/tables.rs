//! Every table in the store, declared once. Creating the tables at open,
//! the backup copy and the backup's known-table check all come from this
//! list, so a new table cannot be left out of a backup by forgetting one of
//! three places (a bug that happened once: backups refused every store).

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableHandle, WriteTransaction};

use super::StoreError;

/// Calls macro `$m` with every table definition, comma-separated.
macro_rules! for_each_table {
    ($m:ident) => {
        $m!(
            super::EVENTS,
            super::HEADS,
            super::POSITIONS,
            super::IDEMPOTENCY,
            super::admin::API_TOKENS,
            super::admin::AUTH_STATE,
            super::federation::FED_PEERS,
            super::federation::FED_SUBS,
            super::federation::FED_OUTBOX,
            super::federation::FED_OUTBOX_IDS,
            super::federation::FED_OUTBOX_EVENTS,
            super::federation::FED_INBOX,
            super::federation::FED_INBOX_POSITIONS,
            super::federation::FED_ORIGIN_EVENTS,
            super::federation::FED_ORIGIN_HEADS,
            super::federation::FED_PENDING_ROTATIONS,
            super::federation::FED_KEY_ROTATIONS,
            super::federation::FED_RETIRED_PEER_KEYS,
            super::retention::FED_PEER_USAGE,
            super::tree::TREE_HASHES,
            super::deleted::DELETED_PLANS,
            super::witnessed::WITNESSED_BY,
            super::heads_log::HEADS_LOG_ENTRIES,
            super::heads_log::HEADS_LOG_PLANS,
            super::heads_log::HEADS_LOG_HASHES,
            super::heads_log::HEADS_LOG_CURSOR,
            super::signed::SIGNED_CHECKPOINTS,
            super::signed::HEADS_COSIGNATURES,
            super::witness::WITNESS_LATEST,
            super::witness::WITNESS_EVIDENCE,
            super::witness::WITNESS_OWNERS,
        )
    };
}

/// Creates every table, so that readers never meet a missing one.
pub(super) fn create_all(txn: &WriteTransaction) -> Result<(), StoreError> {
    macro_rules! create {
        ($($table:expr),* $(,)?) => {
            $( txn.open_table($table)?; )*
        };
    }
    for_each_table!(create);
    Ok(())
}

/// The names of every table this build knows.
pub(super) fn names() -> Vec<String> {
    macro_rules! names {
        ($($table:expr),* $(,)?) => {
            vec![$( $table.name().to_string() ),*]
        };
    }
    for_each_table!(names)
}

/// Copies every row of every table from `read` into `write`; returns the
/// number of rows. Refuses a store holding a table this build does not
/// know, rather than write a backup that silently leaves it behind.
pub(super) fn copy_all(
    read: &ReadTransaction,
    write: &WriteTransaction,
) -> Result<u64, StoreError> {
    let known = names();
    for table in read.list_tables()? {
        if !known.iter().any(|name| name == table.name()) {
            return Err(StoreError(format!(
                "backup does not know how to copy the table {:?}; refusing to write an incomplete backup",
                table.name()
            )));
        }
    }
    let mut rows = 0u64;
    macro_rules! copy {
        ($($table:expr),* $(,)?) => {
            $({
                let mut to = write.open_table($table)?;
                // Only a table that is not there (a store from before it)
                // is skipped: any other failure to open one fails the
                // copy, which a compaction would otherwise install.
                match read.open_table($table) {
                    Ok(from) => {
                        for entry in from.iter()? {
                            let (k, v) = entry?;
                            to.insert(k.value(), v.value())?;
                            rows += 1;
                        }
                        if to.len()? != from.len()? {
                            return Err(StoreError(format!(
                                "copying the table {:?}: {} rows read, {} written",
                                $table.name(), from.len()?, to.len()?
                            )));
                        }
                    }
                    Err(redb::TableError::TableDoesNotExist(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            })*
        };
    }
    for_each_table!(copy);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    /// Names are unique: two definitions of one name would be one table.
    #[test]
    fn every_table_is_listed_once() {
        let mut names = super::names();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    /// The tables declared with `&[u8; N]` keys or values (`EVENTS`,
    /// `HEADS`, `POSITIONS`, the tree hashes, the inbox and the other
    /// tables keyed by ids and hashes) open the ones written by builds that declared
    /// `[u8; N]`, and read the same rows: redb gives both the same type
    /// name and the same bytes.
    #[test]
    fn tables_written_with_array_keys_open_with_reference_keys() {
        use redb::ReadableDatabase;
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("old.redb")).unwrap();
        let (key, plan) = ([7u8; 24], [1u8; 16]);
        let txn = db.begin_write().unwrap();
        {
            let events = redb::TableDefinition::<[u8; 24], &[u8]>::new("events");
            let mut events = txn.open_table(events).unwrap();
            events.insert(key, b"row".as_slice()).unwrap();
            let positions = redb::TableDefinition::<u64, [u8; 24]>::new("positions");
            txn.open_table(positions).unwrap().insert(1, key).unwrap();
            let heads = redb::TableDefinition::<[u8; 16], &[u8]>::new("plan_heads");
            let mut heads = txn.open_table(heads).unwrap();
            heads.insert(plan, b"head".as_slice()).unwrap();
            let tree = redb::TableDefinition::<[u8; 25], [u8; 32]>::new("tree_hashes");
            txn.open_table(tree)
                .unwrap()
                .insert([2; 25], [3; 32])
                .unwrap();
            let inbox = redb::TableDefinition::<[u8; 16], &[u8]>::new("fed_inbox");
            let mut inbox = txn.open_table(inbox).unwrap();
            inbox.insert([4; 16], b"message".as_slice()).unwrap();
        }
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let events = txn.open_table(super::super::EVENTS).unwrap();
        assert_eq!(events.get(&key).unwrap().unwrap().value(), b"row");
        let positions = txn.open_table(super::super::POSITIONS).unwrap();
        assert_eq!(*positions.get(1).unwrap().unwrap().value(), key);
        let heads = txn.open_table(super::super::HEADS).unwrap();
        assert_eq!(heads.get(&plan).unwrap().unwrap().value(), b"head");
        let tree = txn.open_table(super::super::tree::TREE_HASHES).unwrap();
        assert_eq!(*tree.get(&[2; 25]).unwrap().unwrap().value(), [3; 32]);
        let inbox = txn.open_table(super::super::federation::FED_INBOX).unwrap();
        assert_eq!(inbox.get(&[4; 16]).unwrap().unwrap().value(), b"message");
    }

    /// Every table defined anywhere in the store is in the list: counts the
    /// definitions in the store's sources, so a new table left out of
    /// `for_each_table!` (and so out of backups) fails here.
    #[test]
    fn every_defined_table_is_listed() {
        fn count(dir: &std::path::Path) -> usize {
            let mut n = 0;
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    n += count(&path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    // Split so that this line is not counted itself.
                    n += text.matches(concat!("TableDefinition", "::new(")).count();
                }
            }
            n
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
        assert_eq!(count(&dir), super::names().len());
    }
}
