//! The permits of `/incoming/*`, which anyone can reach: at most
//! `[federation] incoming_concurrency` requests at once, and each client
//! address at most a quarter of them. The HTTP intake
//! (`http::federation::intake`) takes them before it reads a body.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Requests on `/incoming/*` in progress per client IP address, so that
/// one address (anyone can reach these routes) cannot take every one of
/// the `[federation] incoming_concurrency` permits: each gets at most a
/// quarter of them (at least one).
pub(crate) struct PerClient {
    counts: Mutex<HashMap<IpAddr, usize>>,
    cap: usize,
}

impl PerClient {
    pub(crate) fn new(incoming_concurrency: usize) -> Arc<PerClient> {
        Arc::new(PerClient {
            counts: Mutex::new(HashMap::new()),
            cap: (incoming_concurrency / 4).max(1),
        })
    }

    /// How many requests one address may have in progress.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// One of `ip`'s slots, or None if it holds all of them.
    pub(crate) fn take(self: &Arc<PerClient>, ip: IpAddr) -> Option<ClientSlot> {
        // An IPv4 client over an IPv6 socket is the same client.
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            table: self.clone(),
            ip,
        })
    }
}

/// A request slot of one client address, given back when dropped.
pub(crate) struct ClientSlot {
    table: Arc<PerClient>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The permits of `[federation] incoming_concurrency`.
pub(crate) fn semaphore(permits: usize) -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(permits))
}
