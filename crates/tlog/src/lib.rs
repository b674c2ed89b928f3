//! Transparency-log building blocks for logbook, spec first and storage
//! agnostic: the RFC 9162 Merkle tree over stored perfect-subtree hashes
//! ([`merkle`]), C2SP signed notes with Ed25519 keys ([`note`]),
//! tlog-checkpoint texts ([`checkpoint`]), witness cosignatures
//! ([`cosignature`]), tlog-tiles paths ([`tile`]) and the tlog-witness
//! add-checkpoint request and rule ([`witness`]).
//!
//! This crate knows nothing of events, HTTP or the store: callers hand it
//! hashes through [`merkle::HashReader`] and persist what
//! [`merkle::hashes_to_store`] returns.

pub mod checkpoint;
pub mod cosignature;
pub mod merkle;
pub mod note;
pub mod tile;
pub mod witness;
