//! The journal: what an event is, how the chain over a plan's events is
//! signed and checked, which event types exist, where events are stored, and
//! how committed events reach live readers.
//!
//! Everything that gives the journal its guarantees lives here. It knows
//! nothing of HTTP, SSE framing, federation transport or the daemon's
//! configuration file; the binary translates to and from it.

pub mod chain;
mod chain_canonical;
mod chain_window;
pub mod event;
pub mod event_wire;
mod event_wire_read;
pub mod fanout;
pub mod follow;
pub mod keys;
pub mod registry;
pub mod retirements;
pub mod store;
pub mod validate;
// Verifiable plan logs: the log key and the signed checkpoints.
pub mod checkpoint;
pub mod log_key;
// Being a witness: the key that cosigns peers' heads logs.
pub mod witness_key;

pub use event::Event;
