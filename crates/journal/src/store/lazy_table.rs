//! `LazyTable`: a table of a write transaction, opened on first use.
//!
//! Opening a redb table looks it up in the table of tables. The journal
//! writer's transaction names a table for each kind of row, but before a
//! batch's frames are written (`writer.rs`) an append usually reads only its plan's head
//! row, and a batch without idempotency keys or subscribed peers never
//! touches their tables. Opening each table when first used keeps the rest
//! off the append's path, or until the rows are written while the frames
//! go to disk.

use super::StoreError;

pub(super) struct LazyTable<'txn, K: redb::Key + 'static, V: redb::Value + 'static> {
    txn: &'txn redb::WriteTransaction,
    definition: redb::TableDefinition<'static, K, V>,
    table: Option<redb::Table<'txn, K, V>>,
}

impl<'txn, K: redb::Key + 'static, V: redb::Value + 'static> LazyTable<'txn, K, V> {
    pub(super) fn new(
        txn: &'txn redb::WriteTransaction,
        definition: redb::TableDefinition<'static, K, V>,
    ) -> Self {
        LazyTable {
            txn,
            definition,
            table: None,
        }
    }

    /// The table, opened now if this is its first use.
    pub(super) fn table(&mut self) -> Result<&mut redb::Table<'txn, K, V>, StoreError> {
        if self.table.is_none() {
            self.table = Some(self.txn.open_table(self.definition)?);
        }
        Ok(self.table.as_mut().expect("opened above"))
    }
}
