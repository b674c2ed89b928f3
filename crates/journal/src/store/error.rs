//! StoreError, its Fault classification, and the conversions from redb errors.

#[derive(Debug, Clone)]
pub struct StoreError {
    message: String,
    fault: Fault,
}

/// What kind of failure a [`StoreError`] is: the HTTP edge answers 507 or
/// 503 for the first three (nothing was written, retry later) and 500 for
/// the rest; the writer reopens the database after `Full` and `Io`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The disk (or the quota) is full.
    Full,
    /// Another I/O error; redb refuses the handle from now on.
    Io,
    /// The database is being reopened, or is closed.
    Unavailable,
    /// Anything else: a corrupt record, a broken invariant.
    Other,
}

/// `StoreError(message)`: the spelling the whole store uses for an error
/// that is not an I/O fault (a struct with named fields leaves the value
/// namespace free for this function).
#[allow(non_snake_case)]
pub(super) fn StoreError(message: String) -> StoreError {
    StoreError::with_fault(message, Fault::Other)
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    pub(crate) fn with_fault(message: String, fault: Fault) -> StoreError {
        StoreError { message, fault }
    }

    /// Nothing was written because the data changed under the caller too
    /// often (a race lost repeatedly): [`Fault::Unavailable`], to retry.
    pub fn retry_later(message: String) -> StoreError {
        StoreError::with_fault(message, Fault::Unavailable)
    }

    /// A blocking read task that panicked or was cancelled.
    pub(crate) fn from_join(e: &tokio::task::JoinError) -> StoreError {
        StoreError(format!("read task failed: {e}"))
    }

    pub fn fault(&self) -> Fault {
        self.fault
    }
}

/// The I/O fault inside a redb error, if any.
pub(super) trait Faulty {
    fn fault(&self) -> Fault;
}

impl Faulty for redb::StorageError {
    fn fault(&self) -> Fault {
        use std::io::ErrorKind;
        match self {
            redb::StorageError::Io(io)
                if matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) =>
            {
                Fault::Full
            }
            redb::StorageError::Io(_) | redb::StorageError::PreviousIo => Fault::Io,
            redb::StorageError::DatabaseClosed => Fault::Unavailable,
            _ => Fault::Other,
        }
    }
}

impl Faulty for redb::Error {
    fn fault(&self) -> Fault {
        use std::io::ErrorKind;
        match self {
            redb::Error::Io(io)
                if matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) =>
            {
                Fault::Full
            }
            redb::Error::Io(_) | redb::Error::PreviousIo => Fault::Io,
            redb::Error::DatabaseClosed => Fault::Unavailable,
            _ => Fault::Other,
        }
    }
}

macro_rules! storage_inside {
    ($($t:ident),*) => {$(
        impl Faulty for redb::$t {
            fn fault(&self) -> Fault {
                match self {
                    redb::$t::Storage(e) => e.fault(),
                    _ => Fault::Other,
                }
            }
        }
    )*};
}
storage_inside!(DatabaseError, TransactionError, TableError, CommitError);

impl Faulty for redb::SetDurabilityError {
    fn fault(&self) -> Fault {
        Fault::Other
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                let fault = e.fault();
                StoreError::with_fault(format!("storage: {e}"), fault)
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_apart_from_other_io_errors() {
        let io = |errno| redb::StorageError::Io(std::io::Error::from_raw_os_error(errno));
        let fault = |e: redb::StorageError| StoreError::from(e).fault();
        assert_eq!(fault(io(libc::ENOSPC)), Fault::Full);
        assert_eq!(fault(io(libc::EDQUOT)), Fault::Full);
        assert_eq!(fault(io(libc::EIO)), Fault::Io);
        assert_eq!(fault(redb::StorageError::PreviousIo), Fault::Io);
        assert_eq!(
            fault(redb::StorageError::DatabaseClosed),
            Fault::Unavailable
        );
        assert_eq!(
            fault(redb::StorageError::Corrupted("x".into())),
            Fault::Other
        );
        let commit = redb::CommitError::Storage(io(libc::ENOSPC));
        assert_eq!(StoreError::from(commit).fault(), Fault::Full);
        assert_eq!(StoreError("corrupt record".into()).fault(), Fault::Other);
    }
}
