//! logbook: a tamper-evident, append-only event journal.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library. The library is
//! split by concern; `ARCHITECTURE.md` at the repository root is the map.

pub mod admin;
pub(crate) mod app;
pub mod config;
pub(crate) mod federation;
pub mod http;
pub(crate) mod notify;
pub(crate) mod retention;
pub mod server;
