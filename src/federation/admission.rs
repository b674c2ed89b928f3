//! The permits of `/incoming/*`, which anyone can reach: at most
//! `[federation] incoming_concurrency` requests at once, and each client
//! (an IPv4 address or an IPv6 /64) at most a quarter of them. The HTTP
//! intake (`http::federation::intake`) takes them before it reads a body.

use std::sync::Arc;

use logbook_base::per_client::PerClient;

pub(crate) use logbook_base::per_client::ClientSlot;

/// Requests on `/incoming/*` in progress per client, so that one client
/// (anyone can reach these routes) cannot take every one of the
/// `[federation] incoming_concurrency` permits: each gets at most a
/// quarter of them (at least one).
pub(crate) fn per_client(incoming_concurrency: usize) -> Arc<PerClient> {
    PerClient::new((incoming_concurrency / 4).max(1))
}

/// The permits of `[federation] incoming_concurrency`.
pub(crate) fn semaphore(permits: usize) -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(permits))
}
