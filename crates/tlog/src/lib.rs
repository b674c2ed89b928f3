//! Transparency-log building blocks for logbook, spec first and storage
//! agnostic: the RFC 9162 Merkle tree over stored perfect-subtree hashes
//! ([`merkle`]) and C2SP tlog-tiles paths ([`tile`]).
//!
//! This crate knows nothing of events, HTTP or the store: callers hand it
//! hashes through [`merkle::HashReader`] and persist what
//! [`merkle::hashes_to_store`] returns.

pub mod merkle;
pub mod tile;
