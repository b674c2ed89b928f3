//! The bottom layer of logbook: small pieces every other crate may use.
//!
//! Nothing here knows what an event, a plan, a peer or an HTTP request is.
//! Each module is one concern:
//! - [`canonical`]: RFC 8785 canonical JSON, SHA-256, and the JSON number
//!   and depth rules that keep canonical forms exact across languages;
//! - [`canonical_check`]: whether a text is already its canonical form;
//! - [`hex`]: lowercase hex, and serde helpers for 32-byte hashes;
//! - [`private_file`]: files created 0600 and directories 0700, fsynced;
//! - [`fresh_dir`]: a new directory put back as found when a first start fails;
//! - [`reloadable`]: [`reloadable::Reloadable`], a value read per use and replaced whole;
//! - [`metrics`]: the process-wide Prometheus instruments;
//! - [`ordered_pool`]: batches worked on every core, taken back in order;
//! - [`per_client`]: slots counted per client address (IPv4, or an IPv6 /64);
//! - [`terminal`]: text from outside made safe to print on a terminal;
//! - `proptest_support` (tests only): byte edits for property tests.

pub mod canonical;
pub mod canonical_check;
pub mod fresh_dir;
pub mod hex;
pub mod metrics;
pub mod ordered_pool;
pub mod per_client;
pub mod private_file;
#[cfg(any(test, feature = "proptest-support"))]
pub mod proptest_support;
pub mod reloadable;
pub mod terminal;
