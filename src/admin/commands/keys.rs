//! `keys rotate-hmac`, `keys rotate-rsa`, `keys rotate-log`, and `backup`.

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::{Context, Ctx, who};
use crate::http::problem::Problem;
use crate::http::serve::LocalPeer;
use logbook_journal::store::StoreError;

/// Records a key rotation in the system journal, signed with the current
/// key; returns its seq there.
async fn record_key_rotation(cx: &Context, payload: &Value) -> Result<u64, Problem> {
    super::record_admin_event(
        cx,
        logbook_journal::retirements::KEY_ROTATED,
        payload,
        "the key rotated",
    )
    .await
}

/// `POST /backup[?keys=false]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackupQuery {
    /// false: a backup without key material, for off-site copies.
    #[serde(default = "yes")]
    keys: bool,
}

fn yes() -> bool {
    true
}

pub(super) async fn backup(
    State(cx): Ctx,
    Query(query): Query<BackupQuery>,
) -> Result<Response, Problem> {
    use crate::admin::backup::{Header, StoreInfo, collect_key_files, encode_header, hash_file};
    // No rotation runs while the keys and the snapshot are taken, so the
    // keys are the ones that signed the snapshot's events.
    let _serialized = cx.changes.lock().await;
    // The snapshot is written next to the store (the one place the daemon
    // may write under systemd) as a file with no name, and streamed to the
    // client, which owns FILE. Closing it (or a crash) frees it.
    let dir = cx.data_dir.clone();
    let with_keys = query.keys;
    let (contents, file) = cx
        .store
        .run(move |store| {
            let files = match with_keys {
                true => collect_key_files(&dir)
                    .map_err(|e| Problem::internal(format!("reading the key files: {e}")))?,
                false => Vec::new(),
            };
            let (mut file, _rows) = store.backup_to_unnamed(&dir)?;
            let hashed = hash_file(&mut file).and_then(|(size, hash)| {
                use std::io::Seek;
                file.rewind()?;
                Ok((size, hash))
            });
            let (size, hash) =
                hashed.map_err(|e| Problem::internal(format!("hashing the snapshot: {e}")))?;
            let header = Header {
                keys: with_keys,
                files,
                store: StoreInfo {
                    size,
                    sha256: logbook_base::hex::encode(&hash),
                },
            };
            Ok::<_, Problem>((header, file))
        })
        .await?;
    // MACed under the signing key: a restore that holds it (its data dir's
    // or the environment's) can tell the file is this instance's.
    let keyring = cx.store.keyring();
    let secret = keyring
        .get(keyring.current_id())
        .expect("the keyring holds its current key");
    let head = encode_header(&contents, secret);
    let length = head.len() as u64 + contents.store.size;
    let mut file = tokio::fs::File::from_std(file);
    let chunks = async_stream::stream! {
        use tokio::io::AsyncReadExt;
        yield Ok(Bytes::from(head));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => yield Ok(Bytes::copy_from_slice(&buf[..n])),
                Err(e) => {
                    yield Err(e);
                    return;
                }
            }
        }
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.logbook.backup".to_string(),
            ),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

pub(super) async fn rotate_hmac(
    State(cx): Ctx,
    Extension(peer): Extension<LocalPeer>,
) -> Result<Json<Value>, Problem> {
    if let Some(var) = crate::admin::keys::env_secret_in_use(|name| std::env::var(name).ok()) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "key-from-environment",
            "Signing key comes from the environment",
            format!(
                "the signing key comes from ${var}; to rotate it, put the old secret in a file under <data_dir>/hmac-retired/, set a new ${var} and restart"
            ),
        ));
    }
    let _serialized = cx.changes.lock().await;
    let data_dir = cx.data_dir.clone();
    let current = cx.store.keyring().current_id().to_string();
    let rotated = tokio::task::spawn_blocking(move || {
        crate::admin::keys::rotate_generated_key(&data_dir, &current)
    })
    .await
    .map_err(|e| Problem::internal(e.to_string()))?
    .map_err(|e| Problem::internal(format!("rotating the HMAC key: {e}")))?;
    // The keys retired before keep their windows from the first moment,
    // even if recording this rotation fails below: taken from the keyring
    // in service, which needs no read that could fail after the key file
    // was swapped.
    let mut keyring = rotated.keyring.clone();
    keyring.keep_windows_of(&cx.store.keyring());
    cx.store.replace_keyring(keyring);
    tracing::warn!(
        old_key_id = rotated.old_key_id,
        new_key_id = rotated.new_key_id,
        uid = peer.uid,
        "HMAC signing key rotated"
    );
    // Recorded in the system journal, signed with the new key.
    let payload = json!({
        "old_key_id": rotated.old_key_id,
        "new_key_id": rotated.new_key_id,
        "rotated_by": who(&peer),
    });
    let recorded_seq = record_key_rotation(&cx, &payload).await?;
    // From now on the old key verifies only events dated up to that record.
    let keyring = windowed(&cx, rotated.keyring.clone()).await?;
    cx.store.replace_keyring(keyring);
    Ok(Json(json!({
        "old_key_id": rotated.old_key_id,
        "new_key_id": rotated.new_key_id,
        "recorded_at_system_seq": recorded_seq,
    })))
}

/// `keyring` with the validity windows the system journal records.
async fn windowed(
    cx: &super::Context,
    mut keyring: logbook_journal::keys::Keyring,
) -> Result<logbook_journal::keys::Keyring, Problem> {
    Ok(cx
        .store
        .run(move |store| {
            crate::admin::keys::apply_retirements(store, &mut keyring)?;
            Ok::<_, StoreError>(keyring)
        })
        .await?)
}

/// `keys rotate-rsa`: a new federation key pair, announced to every peer in
/// a message signed with the old key (see `logbook_federation::rotation`).
pub(super) async fn rotate_rsa(
    State(cx): Ctx,
    Extension(peer): Extension<LocalPeer>,
) -> Result<Json<Value>, Problem> {
    let _serialized = cx.changes.lock().await;
    let rotated = cx
        .federation
        .rotate()
        .await
        .map_err(|e| Problem::internal(format!("rotating the federation key: {e}")))?;
    tracing::warn!(
        old_key_id = rotated.old_key_id,
        new_key_id = rotated.new_key_id,
        peers_notified = rotated.peers_notified,
        uid = peer.uid,
        "federation RSA key rotated"
    );
    let payload = json!({
        "key": "federation",
        "old_key_id": rotated.old_key_id,
        "new_key_id": rotated.new_key_id,
        "fingerprint": rotated.fingerprint,
        "peers_notified": rotated.peers_notified,
        "rotated_by": who(&peer),
    });
    let recorded_seq = record_key_rotation(&cx, &payload).await?;
    Ok(Json(json!({
        "old_key_id": rotated.old_key_id,
        "new_key_id": rotated.new_key_id,
        "fingerprint": rotated.fingerprint,
        "peers_notified": rotated.peers_notified,
        "recorded_at_system_seq": recorded_seq,
    })))
}

/// `keys rotate-log`: a new Ed25519 log key for plan checkpoints. The old
/// vkey stays listed in `GET /api/v1/log/keys` as retired, so checkpoints
/// it signed stay verifiable (see `logbook_journal::log_key`).
pub(super) async fn rotate_log(
    State(cx): Ctx,
    Extension(peer): Extension<LocalPeer>,
) -> Result<Json<Value>, Problem> {
    let _serialized = cx.changes.lock().await;
    let (dir, prefix) = (cx.data_dir.clone(), cx.log.origin_prefix());
    let old_vkey = cx.log.instance_vkey();
    let keys = tokio::task::spawn_blocking(move || {
        logbook_journal::log_key::LogKeys::rotate(&dir, &prefix)
    })
    .await
    .map_err(|e| Problem::internal(e.to_string()))?
    .map_err(|e| Problem::internal(format!("rotating the log key: {e}")))?;
    let new_vkey = keys.signer.verifier().to_vkey();
    cx.log.replace(keys);
    tracing::warn!(%old_vkey, %new_vkey, uid = peer.uid, "log key rotated");
    let payload = json!({
        "key": "log",
        "old_vkey": old_vkey,
        "new_vkey": new_vkey,
        "rotated_by": who(&peer),
    });
    let recorded_seq = record_key_rotation(&cx, &payload).await?;
    Ok(Json(json!({
        "old_vkey": old_vkey,
        "new_vkey": new_vkey,
        "recorded_at_system_seq": recorded_seq,
    })))
}
