//! The logbook federation protocol: signed event pub/sub between
//! instances (`docs/federation-protocol.md` is its spec), without the
//! network. It knows messages, keys, peers and the federation tables of the
//! journal's store; it knows nothing of HTTP (no axum, hyper, tower or
//! reqwest: `.ci/run` checks it). Refusals are typed errors; the daemon's
//! HTTP edge maps them to problem answers.
//!
//! - [`config`]: `[federation]` and `[[peers]]` settings and their checks;
//! - [`identity`]: the instance id, RSA key pairs, key files, fingerprints;
//! - [`message`]: `EventMessage`/`EventAck`, RSASSA-PSS over JCS;
//! - [`batch`]: signed batches, one signature for a delivery request and one ack;
//!   `message_text` writes their messages' JCS texts directly;
//! - [`Instance`]: identity, settings and inbox rate limits, lent to:
//! - [`inbox`]: checking, storing and acking what peers send ([`inbox::InboxError`]);
//! - [`outbox`]: what is due, signing a batch, checking acks, recording outcomes;
//! - [`peers`]: peer definitions, grants, pinning checks, storing peers;
//! - [`peer_keys`]: a peer's log and witness vkeys from its instance document;
//! - [`rotation`]: rotating our key, announcements, crash recovery.

pub mod batch;
pub mod config;
pub mod identity;
pub mod inbox;
mod instance;
pub mod message;
mod message_text;
pub mod outbox;
pub mod peer_keys;
pub mod peers;
pub mod rotation;

pub use instance::{Instance, SigningKeyError};
