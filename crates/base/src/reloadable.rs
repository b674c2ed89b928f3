//! The one swap cell behind every value that changes while the daemon runs
//! (tokens, limits, CORS, the HMAC keyring, the federation key, routes).
//!
//! Readers take an `Arc` snapshot and keep using it for the whole request;
//! a writer replaces the value whole. A poisoned lock is recovered: the cell
//! only ever holds a complete value, so poisoning cannot leave it torn.

use std::sync::{Arc, RwLock};

/// A value read per request and replaced as a whole.
#[derive(Debug, Default)]
pub struct Reloadable<T>(RwLock<Arc<T>>);

impl<T> Reloadable<T> {
    pub fn new(value: T) -> Reloadable<T> {
        Reloadable(RwLock::new(Arc::new(value)))
    }

    pub fn current(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, value: T) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
    }
}
