//! The local admin interface: an HTTP server on a Unix socket that only the
//! daemon's own user, root and (optionally) one configured group may use.
//!
//! The socket is created mode 0600 (0660 with `server.admin_group`), and
//! every connection's peer uid is read with SO_PEERCRED and checked by
//! [`peer_allowed`] before a byte of HTTP is read. Because it speaks plain
//! HTTP, `curl --unix-socket` works; [`client`] is the `logbook admin` CLI.

pub(crate) mod backup;
pub(crate) mod bundle;
pub(crate) mod client;
pub(crate) mod commands;
pub(crate) mod keys;
pub(crate) mod logging;
pub(crate) mod offline;
pub(crate) mod restore;
pub(crate) mod tokens;
pub(crate) mod tokens_offline;

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::federation::Federation;
use crate::http::auth::Tokens;
use crate::http::serve::LocalPeer;
use logbook_base::reloadable::Reloadable;
use logbook_journal::fanout::{Fanout, StreamStats};
use logbook_journal::store::AsyncStore;

/// Everything the admin commands work on: the parts they share with the
/// HTTP API, and the admin-only ones. Part of `crate::app::App`, which
/// also runs the config reload on it.
pub(crate) struct Context {
    pub(crate) store: AsyncStore,
    /// The API tokens in force: the same set the HTTP auth check reads.
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) federation: Arc<Federation>,
    pub(crate) stream_stats: Arc<StreamStats>,
    /// The fan-out, for its count of followed plans.
    pub(crate) fanout: Fanout,
    pub(crate) started: Instant,
    pub(crate) listen: SocketAddr,
    pub(crate) admin_socket: PathBuf,
    pub(crate) data_dir: PathBuf,
    /// Path of the config file, or `None` for the embedded default.
    pub(crate) config_path: Option<PathBuf>,
    pub(crate) config: Reloadable<Config>,
    /// Where the tokens in `tokens` come from (config.toml, the store).
    pub(crate) token_sources: tokens::TokenSources,
    /// Serializes config reloads and token changes.
    pub(crate) changes: tokio::sync::Mutex<()>,
    /// The log key that signs plan checkpoints (`keys rotate-log`).
    pub(crate) log: Arc<crate::http::log::LogState>,
}

/// The group allowed besides the daemon's user and root, as resolved from
/// `/etc/group` and `/etc/passwd` when a connection arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllowedGroup {
    pub(crate) gid: u32,
    /// Uids listed as members, or whose primary group it is.
    pub(crate) member_uids: Vec<u32>,
}

/// The admin socket's access rule: the daemon's own uid, root, and members
/// of the configured group (by the peer's gid or by membership).
pub(crate) fn peer_allowed(
    peer: &LocalPeer,
    daemon_uid: u32,
    group: Option<&AllowedGroup>,
) -> bool {
    if peer.uid == 0 || peer.uid == daemon_uid {
        return true;
    }
    group.is_some_and(|g| peer.gid == g.gid || g.member_uids.contains(&peer.uid))
}

/// Resolves `server.admin_group` (a name or a numeric gid).
pub(crate) fn resolve_group(spec: &str) -> Result<AllowedGroup, String> {
    let group_file = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let passwd_file = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    resolve_group_from(spec, &group_file, &passwd_file)
}

fn resolve_group_from(
    spec: &str,
    group_file: &str,
    passwd_file: &str,
) -> Result<AllowedGroup, String> {
    let numeric: Option<u32> = spec.parse().ok();
    // name:password:gid:member,member
    let entry = group_file.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let gid: u32 = fields.get(2)?.parse().ok()?;
        (fields[0] == spec || numeric == Some(gid))
            .then(|| (gid, fields.get(3).copied().unwrap_or("")))
    });
    let (gid, members) = match (entry, numeric) {
        (Some(found), _) => found,
        (None, Some(gid)) => (gid, ""),
        (None, None) => {
            return Err(format!(
                "server.admin_group: no group named {spec:?} in /etc/group"
            ));
        }
    };
    let names: Vec<&str> = members
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    // name:password:uid:gid:...
    let member_uids = passwd_file
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let uid: u32 = fields.get(2)?.parse().ok()?;
            let primary: u32 = fields.get(3)?.parse().ok()?;
            (names.contains(&fields[0]) || primary == gid).then_some(uid)
        })
        .collect();
    Ok(AllowedGroup { gid, member_uids })
}

/// The user name of `uid` from `/etc/passwd`, for the record.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| fields[0].to_string())
    })
}

/// A bound admin socket, with the rule for who may connect.
pub(crate) struct AdminListener {
    listener: UnixListener,
    path: PathBuf,
    daemon_uid: u32,
    group: Option<String>,
}

/// Creates the socket at `path`: replaces a stale socket file, refuses to
/// replace anything else or a socket someone is still serving on, then sets
/// mode 0600 (0660 and the group when `group` is set).
pub(crate) async fn bind(path: &Path, group: Option<&str>) -> Result<AdminListener, String> {
    let shown = path.display();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!(
                "admin socket {shown}: a file that is not a socket is in the way"
            ));
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(format!(
                "admin socket {shown}: another process is serving on it (is another logbook running?)"
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("removing the stale admin socket {shown}: {e}"))?;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        logbook_base::private_file::ensure_private_dir(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("binding the admin socket {shown}: {e}"))?;
    let group = match group.filter(|g| !g.is_empty()) {
        Some(spec) => {
            let resolved = resolve_group(spec)?;
            std::os::unix::fs::chown(path, None, Some(resolved.gid)).map_err(|e| {
                format!(
                    "server.admin_group: giving {shown} to gid {}: {e}",
                    resolved.gid
                )
            })?;
            Some(spec.to_string())
        }
        None => None,
    };
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("setting the mode of {shown}: {e}"))?;
    // The socket was just created by this process, so its owner is our uid.
    let daemon_uid = std::fs::metadata(path)
        .map_err(|e| format!("{shown}: {e}"))?
        .uid();
    Ok(AdminListener {
        listener,
        path: path.to_path_buf(),
        daemon_uid,
        group,
    })
}

impl AdminListener {
    /// Serves `router` (see [`commands::router`]) until `shutdown`, then
    /// removes the socket file.
    pub(crate) async fn serve(self, router: axum::Router, shutdown: CancellationToken) {
        // No connection cap: only the daemon's user, root and the admin
        // group get past the peer check.
        crate::http::serve::serve(self, router, shutdown, None).await;
    }
}

impl crate::http::serve::Acceptor for AdminListener {
    type Io = UnixStream;
    type Peer = LocalPeer;
    const NAME: &'static str = "admin connection";

    /// The next connection whose peer (SO_PEERCRED) may use the socket; a
    /// refused one gets a 403, one without credentials is dropped.
    async fn accept(&mut self) -> (UnixStream, LocalPeer) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let peer = match stream.peer_cred() {
                Ok(cred) => LocalPeer {
                    uid: cred.uid(),
                    gid: cred.gid(),
                    pid: cred.pid(),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "admin connection without peer credentials; refused");
                    continue;
                }
            };
            // Resolved per connection, so changes to /etc/group apply at once.
            let group = match &self.group {
                Some(spec) => match resolve_group(spec) {
                    Ok(g) => Some(g),
                    Err(e) => {
                        tracing::warn!(error = %e, "resolving the admin group");
                        None
                    }
                },
                None => None,
            };
            if !peer_allowed(&peer, self.daemon_uid, group.as_ref()) {
                tracing::warn!(
                    uid = peer.uid,
                    gid = peer.gid,
                    pid = peer.pid,
                    "admin connection refused: uid not allowed"
                );
                tokio::spawn(refuse(stream));
                continue;
            }
            return (stream, peer);
        }
    }

    /// Removes the socket file before open connections are waited for.
    fn close(self) {
        drop(self.listener);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers a refused peer with a 403 so that curl shows why.
async fn refuse(mut stream: UnixStream) {
    let body = serde_json::json!({
        "type": "urn:logbook:problem:forbidden",
        "title": "Forbidden",
        "status": 403,
        "detail": "this uid may not use the admin socket (allowed: the daemon's user, root, and server.admin_group)",
    })
    .to_string();
    let response = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        crate::http::serve::read_request_head(&mut stream).await;
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> LocalPeer {
        LocalPeer {
            uid,
            gid,
            pid: None,
        }
    }

    #[test]
    fn only_the_daemon_user_root_and_the_group_may_connect() {
        let group = AllowedGroup {
            gid: 900,
            member_uids: vec![1002],
        };
        assert!(
            peer_allowed(&peer(1000, 1000), 1000, None),
            "the daemon's own uid"
        );
        assert!(peer_allowed(&peer(0, 0), 1000, None), "root");
        assert!(!peer_allowed(&peer(1001, 1001), 1000, None), "another user");
        assert!(
            !peer_allowed(&peer(1001, 900), 1000, None),
            "group ignored when none is configured"
        );
        assert!(
            peer_allowed(&peer(1001, 900), 1000, Some(&group)),
            "primary gid is the group"
        );
        assert!(
            peer_allowed(&peer(1002, 1002), 1000, Some(&group)),
            "listed member"
        );
        assert!(
            !peer_allowed(&peer(1003, 1003), 1000, Some(&group)),
            "not a member"
        );
    }

    #[test]
    fn groups_resolve_by_name_or_gid_with_members() {
        let group = "root:x:0:\nlogbook-admin:x:900:alice,bob\n";
        let passwd = "root:x:0:0::/root:/bin/sh\nalice:x:1001:1001::/h:/bin/sh\nbob:x:1002:1002::/h:/bin/sh\ncarol:x:1003:900::/h:/bin/sh\ndave:x:1004:1004::/h:/bin/sh\n";
        let g = resolve_group_from("logbook-admin", group, passwd).unwrap();
        assert_eq!(g.gid, 900);
        assert_eq!(g.member_uids, vec![1001, 1002, 1003]);
        assert_eq!(resolve_group_from("900", group, passwd).unwrap(), g);
        assert_eq!(resolve_group_from("4242", group, passwd).unwrap().gid, 4242);
        assert!(
            resolve_group_from("nope", group, passwd)
                .unwrap_err()
                .contains("server.admin_group")
        );
    }
}
