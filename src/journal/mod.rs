//! The journal domain: what an event is, how the chain over a plan's events is
//! signed and checked, which event types exist, and where events are stored.
//!
//! Everything that gives the journal its guarantees lives here; the HTTP and
//! streaming layers only translate to and from it.

pub mod chain;
pub mod event;
pub mod keys;
pub mod registry;
pub mod store;

pub use event::Event;
