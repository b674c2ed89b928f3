//! The plain sections of the config file: `[server]`, `[log]`, `[limits]`,
//! `[sse]`, `[http]`, `[registry]` and `[storage]`. Every key has a default
//! (the shipped `config.toml`'s value), so a file may name only what it
//! changes; an unknown key is an error.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use logbook_journal::registry::EventType;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Server {
    #[serde(deserialize_with = "super::listen::deserialize")]
    pub(crate) listen: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) admin_socket: String,
    /// Group (name or gid) whose members may also use the admin socket.
    pub(crate) admin_group: String,
    pub(crate) shutdown_grace_secs: u64,
    /// Host names (besides loopback) the API answers to while no token is
    /// required: a guard against DNS rebinding.
    pub(crate) allowed_hosts: Vec<String>,
    /// Most HTTP connections open at once on the TCP listener.
    pub(crate) max_connections: usize,
    /// Most of them from one client (an IPv4 address or an IPv6 /64);
    /// loopback is not counted.
    pub(crate) max_connections_per_ip: usize,
    /// Seconds a response may wait on a client that takes no byte before
    /// the connection is reset (`http::send_timeout`).
    pub(crate) send_timeout_secs: u64,
    /// Pending connections the kernel queues before accept (listen(2)'s
    /// backlog; the kernel caps it at net.core.somaxconn).
    pub(crate) listen_backlog: u32,
}

impl Default for Server {
    fn default() -> Server {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 7411)),
            data_dir: PathBuf::from("./data"),
            admin_socket: String::new(),
            admin_group: String::new(),
            shutdown_grace_secs: 4,
            allowed_hosts: Vec::new(),
            max_connections: 16_384,
            max_connections_per_ip: 1024,
            send_timeout_secs: 60,
            listen_backlog: 4096,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Log {
    /// A filter in tracing syntax, checked by `log_filter::parse`.
    pub(crate) level: String,
    pub(crate) format: LogFormat,
}

impl Default for Log {
    fn default() -> Log {
        Log {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Limits {
    pub(crate) max_body_bytes: usize,
    /// Most bytes of request bodies held at once, over every TCP request
    /// (`http::body_budget`).
    pub(crate) max_buffered_body_bytes: usize,
    pub(crate) max_json_depth: usize,
    pub(crate) max_type_len: usize,
    pub(crate) max_actor_len: usize,
    pub(crate) request_timeout_secs: u64,
    /// Days an Idempotency-Key is remembered after its event was appended.
    pub(crate) idempotency_keep_days: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 1 << 20,
            max_buffered_body_bytes: 256 << 20,
            max_json_depth: 32,
            max_type_len: 128,
            max_actor_len: 256,
            request_timeout_secs: 30,
            idempotency_keep_days: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Sse {
    pub(crate) keepalive_secs: u64,
    /// Most SSE streams open at once over TCP; more get 503.
    pub(crate) max_streams: usize,
}

impl Default for Sse {
    fn default() -> Sse {
        Sse {
            keepalive_secs: 15,
            max_streams: 15_000,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Http {
    pub(crate) cors_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RegistryConfig {
    pub(crate) strict: bool,
    pub(crate) types: Vec<EventType>,
}

impl Default for RegistryConfig {
    fn default() -> RegistryConfig {
        RegistryConfig {
            strict: true,
            types: Vec::new(),
        }
    }
}

/// `[storage]`: how the journal database is written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StorageConfig {
    /// redb quick repair: every durable commit records the allocator
    /// state, so a start after a crash skips the full repair. Appends
    /// commit through the write-ahead segment, so only checkpoints pay its
    /// second fsync (see docs/benchmarks.md, "Recovery after a crash").
    pub(crate) quick_repair: bool,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig { quick_repair: true }
    }
}
