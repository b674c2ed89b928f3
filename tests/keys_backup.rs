//! Keys travel with backups (issue 12): `admin backup` carries the key
//! files and `restore` puts them back; `--without-keys` carries none; a
//! start names the key ids the keyring lacks and verify says `missing-key`;
//! `logbook tokens create` works offline before a non-loopback first start.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use common::{Daemon, DaemonOpts, fill, free_port, logbook, new_plan, run};
use serde_json::Value;

fn generated_key() -> DaemonOpts {
    DaemonOpts::default().unset_env("LOGBOOK_HMAC_SECRET")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `logbook restore FILE --data-dir DIR`.
async fn restore(file: &Path, data_dir: &Path) -> common::CommandOutput {
    restore_with(file, data_dir, &[]).await
}

/// `logbook restore FILE --data-dir DIR ARGS…`, with no HMAC secret in the
/// environment.
async fn restore_with(file: &Path, data_dir: &Path, args: &[&str]) -> common::CommandOutput {
    restore_env(file, data_dir, args, None).await
}

/// `logbook restore FILE --data-dir DIR ARGS…` with `$LOGBOOK_HMAC_SECRET`
/// set to the key file `secret` (its text without the final newline), or
/// unset.
async fn restore_env(
    file: &Path,
    data_dir: &Path,
    args: &[&str],
    secret: Option<&[u8]>,
) -> common::CommandOutput {
    let mut command = logbook();
    command
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("LOGBOOK_HMAC_SECRET");
    if let Some(secret) = secret {
        let text = std::str::from_utf8(secret).unwrap().trim_end();
        command.env("LOGBOOK_HMAC_SECRET", text);
    }
    run(command).await
}

/// A format 2 backup file split: its header (as JSON), its MAC line (with
/// the newline) and its store bytes.
fn split_backup(bytes: &[u8]) -> (Value, Vec<u8>, Vec<u8>) {
    assert!(bytes.starts_with(b"logbook-backup 2\n"));
    let line = |from: usize| from + bytes[from..].iter().position(|&b| b == b'\n').unwrap();
    let header_end = line(17);
    let mac_end = line(header_end + 1);
    (
        serde_json::from_slice(&bytes[17..header_end]).unwrap(),
        bytes[header_end + 1..=mac_end].to_vec(),
        bytes[mac_end + 1..].to_vec(),
    )
}

/// A format 2 file from its parts, as [`split_backup`] gives them.
fn join_backup(header: &Value, mac_line: &[u8], store: &[u8]) -> Vec<u8> {
    let mut out = b"logbook-backup 2\n".to_vec();
    out.extend(serde_json::to_vec(header).unwrap());
    out.push(b'\n');
    out.extend_from_slice(mac_line);
    out.extend_from_slice(store);
    out
}

/// What someone who can write `file` but knows no key does: one byte of
/// the store changed (its padding) and the header's hash made to match,
/// the MAC line kept.
fn store_changed(file: &Path) -> Vec<u8> {
    let (mut header, mac_line, mut store) = split_backup(&std::fs::read(file).unwrap());
    let last = store.len() - 1;
    store[last] ^= 0x01;
    header["store"]["sha256"] = Value::String(logbook_base::hex::encode(
        &logbook_base::canonical::sha256(&store),
    ));
    join_backup(&header, &mac_line, &store)
}

/// Whether `haystack` holds the file `content`: its text (without the final
/// newline) as raw bytes, or the whole file in base64.
fn holds(haystack: &[u8], content: &[u8]) -> bool {
    let text = content.strip_suffix(b"\n").unwrap_or(content);
    let b64 = base64::engine::general_purpose::STANDARD.encode(content);
    let find = |n: &[u8]| haystack.windows(n.len()).any(|w| w == n);
    find(text) || find(b64.as_bytes())
}

/// The same contents as an older build's format 1 file: no MAC line.
fn format_1(header: &Value, store: &[u8]) -> Vec<u8> {
    let mut out = b"logbook-backup 1\n".to_vec();
    out.extend(serde_json::to_vec(header).unwrap());
    out.push(b'\n');
    out.extend_from_slice(store);
    out
}

#[tokio::test]
async fn a_backup_restores_the_keys_and_one_without_keys_holds_none() {
    let mut daemon = Daemon::start(generated_key());
    let plan = new_plan();
    fill(&daemon, plan, 3).await;
    // A retired key too: the backup must carry hmac-retired/.
    daemon.admin_json(&["keys", "rotate-hmac"]).await;
    fill(&daemon, plan, 1).await;
    let data = daemon.data_dir();
    let key_files = ["hmac.key", "log.key", "log-keys.json"];
    let witness_key = std::fs::read(data.join("witness.key")).unwrap();
    let mut secrets: Vec<(String, Vec<u8>)> = key_files
        .iter()
        .map(|f| (f.to_string(), std::fs::read(data.join(f)).unwrap()))
        .collect();
    for entry in std::fs::read_dir(data.join("hmac-retired")).unwrap() {
        let path = entry.unwrap().path();
        let name = format!(
            "hmac-retired/{}",
            path.file_name().unwrap().to_str().unwrap()
        );
        secrets.push((name, std::fs::read(&path).unwrap()));
    }
    assert_eq!(secrets.len(), key_files.len() + 1, "one retired key");

    let out = tempfile::tempdir().unwrap();
    let (full, bare) = (
        out.path().join("full.backup"),
        out.path().join("bare.backup"),
    );
    let full_s = full.to_str().unwrap();
    let bare_s = bare.to_str().unwrap();
    daemon.admin_ok(&["backup", full_s]).await;
    daemon.admin_ok(&["backup", "--without-keys", bare_s]).await;
    assert_eq!(mode(&full), 0o600);
    assert_eq!(mode(&bare), 0o600);

    let full_bytes = std::fs::read(&full).unwrap();
    let bare_bytes = std::fs::read(&bare).unwrap();
    assert!(full_bytes.starts_with(b"logbook-backup 2\n"));
    // The witness key never travels: its memory is the journal's.
    assert!(
        !holds(&full_bytes, &witness_key),
        "witness.key is in the backup"
    );
    for (name, secret) in &secrets {
        assert!(holds(&full_bytes, secret), "{name} is in the backup");
        assert!(
            !holds(&bare_bytes, secret),
            "{name} leaked into --without-keys"
        );
    }

    // Restored: the same key files, 0600, and the chain verifies with them.
    let restored = tempfile::tempdir().unwrap();
    let target = restored.path().join("data");
    // Nothing outside the file holds its key, and the keys it carries
    // cannot vouch for it: restored only when the operator says so.
    let refused = restore(&full, &target).await;
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("cannot vouch for it"),
        "{}",
        refused.stderr
    );
    assert!(!target.join("journal.redb").exists());
    let done = restore_with(&full, &target, &["--allow-unauthenticated"]).await;
    assert!(done.success(), "{}{}", done.stdout, done.stderr);
    assert!(done.stderr.contains("NOT AUTHENTICATED"), "{}", done.stderr);
    for (name, secret) in &secrets {
        let path = target.join(name);
        assert_eq!(&std::fs::read(&path).unwrap(), secret, "{name}");
        assert_eq!(mode(&path), 0o600, "{name}");
    }
    // Running it again over the same keys (which now authenticate it)
    // refuses only the journal.
    let again = restore(&full, &target).await;
    assert!(!again.success());
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    // A data dir holding a journal is refused for that, first: not for a
    // MAC its missing key cannot check.
    let occupied = restored.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("journal.redb"), b"").unwrap();
    let refused = restore(&full, &occupied).await;
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("journal.redb already exists"),
        "{}",
        refused.stderr
    );
    // A restore interrupted after it wrote the keys, before it installed
    // the journal: no daemon starts a new journal under those keys, and
    // the same restore run again finishes it.
    std::fs::rename(
        target.join("journal.redb"),
        target.join("journal.redb.restoring"),
    )
    .unwrap();
    let (status, log) = common::run_expecting_exit_in(restored.path(), generated_key());
    assert!(!status.success());
    assert!(log.contains("journal.redb.restoring exists"), "{log}");
    assert!(!target.join("journal.redb").exists());
    // A second try that fails too (here, a cut backup file) leaves the
    // marker: the keys are still there, with no journal.
    let cut = out.path().join("cut.backup");
    let bytes = std::fs::read(&full).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let failed = restore(&cut, &target).await;
    assert!(!failed.success(), "{}", failed.stdout);
    assert!(target.join("journal.redb.restoring").exists());
    let finished = restore(&full, &target).await;
    assert!(finished.success(), "{}{}", finished.stdout, finished.stderr);
    assert!(!target.join("journal.redb.restoring").exists());
    assert!(daemon.stop().success());
    let restored = Daemon::start_in(restored, generated_key());
    let report = restored.admin_json(&["verify", &plan.to_string()]).await;
    assert_eq!(report["chain_valid"], true, "{report}");
    assert!(!restored.log_text().contains("missing_key_ids"));
    // A new witness key, not the one whose memory the backup rolled back.
    let new_witness_key = std::fs::read(restored.data_dir().join("witness.key")).unwrap();
    assert_ne!(new_witness_key, witness_key);

    // A data dir holding a different key refuses the restore, untouched.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("hmac.key"), "a different secret").unwrap();
    let refused = restore_with(&full, other.path(), &["--allow-unauthenticated"]).await;
    assert!(!refused.success());
    assert!(refused.stderr.contains("hmac.key"), "{}", refused.stderr);
    assert!(!other.path().join("journal.redb").exists());
    assert!(!other.path().join("log.key").exists());
}

#[tokio::test]
async fn missing_keys_are_named_at_start_and_verify_says_missing_key() {
    let mut daemon = Daemon::start(generated_key());
    let plan = new_plan();
    fill(&daemon, plan, 2).await;
    let old_id = daemon.admin_json(&["status"]).await["signing_key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("bare.backup");
    daemon
        .admin_ok(&["backup", "--without-keys", file.to_str().unwrap()])
        .await;
    assert!(daemon.stop().success());

    // A bare store, as builds before format 1 wrote backups, still restores.
    let old_style = out.path().join("old.redb");
    std::fs::copy(daemon.db_path(), &old_style).unwrap();
    // It carries no MAC: restored only when the operator says so.
    let elsewhere = tempfile::tempdir().unwrap();
    let refused = restore(&old_style, elsewhere.path()).await;
    assert!(!refused.success());
    assert!(refused.stderr.contains("bare store"), "{}", refused.stderr);
    assert!(!elsewhere.path().join("journal.redb").exists());
    let done = restore_with(&old_style, elsewhere.path(), &["--allow-unauthenticated"]).await;
    assert!(done.success(), "{}", done.stderr);
    assert!(done.stdout.contains("restored 2 events"), "{}", done.stdout);
    assert!(done.stderr.contains("holds no keys"), "{}", done.stderr);
    assert!(done.stderr.contains("NOT AUTHENTICATED"), "{}", done.stderr);

    // Without its key nothing here can check its MAC: the same.
    let restored = tempfile::tempdir().unwrap();
    let refused = restore(&file, &restored.path().join("data")).await;
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("--allow-unauthenticated"),
        "{}",
        refused.stderr
    );
    let done = restore_with(
        &file,
        &restored.path().join("data"),
        &["--allow-unauthenticated"],
    )
    .await;
    assert!(done.success(), "{}", done.stderr);
    assert!(done.stderr.contains("holds no keys"), "{}", done.stderr);
    // The start generates a new key, and says which one the journal needs.
    let restored = Daemon::start_in(restored, generated_key());
    assert!(
        restored
            .wait_log(
                &["ERROR", "missing_key_ids", &old_id],
                std::time::Duration::from_secs(30)
            )
            .await,
        "{}",
        restored.log_text()
    );
    // And that the journal's identity is new: a new log key, federation
    // key and instance id beside an old history.
    assert!(
        restored
            .wait_log(
                &[
                    "WARN",
                    "identity files were missing",
                    "log.key",
                    "instance_id"
                ],
                std::time::Duration::from_secs(30)
            )
            .await,
        "{}",
        restored.log_text()
    );
    // A daemon's first start on an empty data dir generates them in silence.
    assert!(!daemon.log_text().contains("identity files were missing"));

    let page = restored
        .get_json(&format!("/api/plans/{plan}/events?verify=1"))
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    let v: &Value = &page.json;
    assert_eq!(v["broken_reason"], "missing-key", "{v}");
    assert_eq!(v["missing_key_id"], old_id.as_str(), "{v}");
    assert_eq!(v["broken_at"], 1, "{v}");

    let admin = restored.admin(&["verify", &plan.to_string()]).await;
    assert!(!admin.success());
    assert!(admin.stdout.contains("missing-key"), "{}", admin.stdout);
    assert!(admin.stdout.contains(&old_id), "{}", admin.stdout);
    assert!(!admin.stdout.contains("(signature)"), "{}", admin.stdout);
}

#[tokio::test]
async fn an_offline_token_allows_a_non_loopback_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut command = logbook();
    command
        .args([
            "tokens",
            "create",
            "--scope",
            "read,append",
            "--name",
            "first",
        ])
        .arg("--data-dir")
        .arg(&data);
    let created = run(command).await;
    assert!(created.success(), "{}", created.stderr);
    let token = created.stdout.trim().to_string();
    assert!(token.starts_with("lbk_"), "{token}");
    assert_eq!(token.len(), 4 + 64);
    assert!(token[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("journal.redb")), 0o600);

    let port = free_port();
    let daemon = Daemon::start_in(
        dir,
        DaemonOpts::default().listen(&format!("0.0.0.0:{port}")),
    );
    let url = format!("http://127.0.0.1:{port}/api/plans");
    let client = reqwest::Client::new();
    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let authorized = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(authorized.status(), 200);

    // While the daemon holds the data dir, the offline command refuses.
    let mut command = logbook();
    command
        .args(["tokens", "create", "--scope", "read", "--name", "second"])
        .arg("--data-dir")
        .arg(daemon.data_dir());
    let refused = run(command).await;
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("logbook admin tokens create"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn a_non_loopback_start_without_tokens_suggests_the_offline_command() {
    let (status, log) = common::run_expecting_exit(DaemonOpts::default().listen("0.0.0.0:0"));
    assert!(!status.success());
    assert!(log.contains("logbook tokens create --data-dir"), "{log}");
}

/// The offline command reads the config the daemon will read: a name that
/// `auth.tokens` already has is refused, and nothing is created.
#[tokio::test]
async fn an_offline_token_cannot_take_a_config_tokens_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nscopes = [\"read\"]\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let create = |name: &str| {
        let mut command = logbook();
        command
            .args(["tokens", "create", "--scope", "read", "--name", name])
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&config);
        command
    };
    let refused = run(create("ops")).await;
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("already has a token named \"ops\""),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty(), "no token is printed");
    assert!(!data.exists(), "nothing is created");
    let created = run(create("ops-2")).await;
    assert!(created.success(), "{}", created.stderr);
    assert!(created.stdout.starts_with("lbk_"), "{}", created.stdout);
}

/// A restore names the API tokens (with scopes) and peers the backup brings
/// back, and warns that one revoked since the backup was taken is back.
#[tokio::test]
async fn a_restore_names_the_tokens_it_brings_back() {
    let daemon = Daemon::start(generated_key());
    fill(&daemon, new_plan(), 1).await;
    daemon
        .admin_json(&[
            "tokens",
            "create",
            "--name",
            "leaked",
            "--scope",
            "read,append",
        ])
        .await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("with-token.backup");
    daemon.admin_ok(&["backup", file.to_str().unwrap()]).await;
    daemon.admin_ok(&["tokens", "revoke", "leaked"]).await;

    let target = out.path().join("data");
    let done = restore_with(&file, &target, &["--allow-unauthenticated"]).await;
    assert!(done.success(), "{}{}", done.stdout, done.stderr);
    assert!(
        done.stdout
            .contains("API tokens restored: leaked (read, append)"),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout.contains("federation peers restored: none"),
        "{}",
        done.stdout
    );
    assert!(done.stderr.contains("a token revoked"), "{}", done.stderr);
}

/// A witness key must not outlive its memory of what it cosigned, which is
/// in the store: a restore never writes one (older backups carry it), and
/// refuses a data dir that still holds the one of the journal it replaces.
#[tokio::test]
async fn a_restore_never_brings_back_a_witness_key() {
    let mut daemon = Daemon::start(generated_key());
    fill(&daemon, new_plan(), 2).await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("full.backup");
    daemon.admin_ok(&["backup", file.to_str().unwrap()]).await;
    let witness_key = std::fs::read(daemon.data_dir().join("witness.key")).unwrap();
    assert!(daemon.stop().success());

    // An older build's backup (format 1), with the witness key in its header.
    let (mut header, _, store) = split_backup(&std::fs::read(&file).unwrap());
    header["files"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "path": "witness.key",
            "content_base64": base64::engine::general_purpose::STANDARD.encode(&witness_key),
        }));
    let older_file = out.path().join("older.backup");
    std::fs::write(&older_file, format_1(&header, &store)).unwrap();

    let target = tempfile::tempdir().unwrap();
    let done = restore_with(&older_file, target.path(), &["--allow-unauthenticated"]).await;
    assert!(done.success(), "{}{}", done.stdout, done.stderr);
    assert!(
        done.stdout.contains("not restored: witness.key"),
        "{}",
        done.stdout
    );
    assert!(
        done.stderr.contains("witness key is never restored"),
        "{}",
        done.stderr
    );
    assert!(target.path().join("hmac.key").exists());
    assert!(!target.path().join("witness.key").exists());

    // The journal is gone but its witness key is still there: refused,
    // nothing written.
    let lost = tempfile::tempdir().unwrap();
    std::fs::write(lost.path().join("witness.key"), &witness_key).unwrap();
    let refused = restore_with(&file, lost.path(), &["--allow-unauthenticated"]).await;
    assert!(!refused.success());
    assert!(
        refused.stderr.contains("witness.key is in the data dir"),
        "{}",
        refused.stderr
    );
    assert!(!lost.path().join("journal.redb").exists());
    assert!(!lost.path().join("hmac.key").exists());
}

/// A backup is MACed under the HMAC signing key: restored where that key
/// is (the data dir's files, or the environment), a file changed after it
/// was written is refused, even with --allow-unauthenticated, and so is
/// one turned back into a format without a MAC, unless the operator says so.
#[tokio::test]
async fn a_backup_changed_after_it_was_written_is_refused() {
    let mut daemon = Daemon::start(generated_key());
    fill(&daemon, new_plan(), 3).await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("offsite.backup");
    daemon
        .admin_ok(&["backup", "--without-keys", file.to_str().unwrap()])
        .await;
    let hmac_key = std::fs::read(daemon.data_dir().join("hmac.key")).unwrap();
    assert!(daemon.stop().success());
    let with_key = || {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hmac.key"), &hmac_key).unwrap();
        dir
    };

    // The key put in place first: authenticated.
    let target = with_key();
    let done = restore(&file, target.path()).await;
    assert!(done.success(), "{}", done.stderr);
    assert!(
        done.stdout
            .contains("authenticated: its MAC verifies under HMAC key"),
        "{}",
        done.stdout
    );
    // The same key from the environment.
    let env_target = tempfile::tempdir().unwrap();
    let done = restore_env(&file, env_target.path(), &[], Some(&hmac_key)).await;
    assert!(done.success(), "{}", done.stderr);
    assert!(done.stdout.contains("authenticated"), "{}", done.stdout);

    assert!(done.success(), "{}", done.stderr);
    assert!(done.stdout.contains("authenticated"), "{}", done.stdout);

    // Someone who can write the file changes the store and its hash.
    let forged = store_changed(&file);
    let forged_file = out.path().join("forged.backup");
    std::fs::write(&forged_file, &forged).unwrap();
    for args in [&[][..], &["--allow-unauthenticated"][..]] {
        let target = with_key();
        let refused = restore_with(&forged_file, target.path(), args).await;
        assert!(!refused.success(), "{args:?}");
        assert!(
            refused.stderr.contains("MAC does not verify"),
            "{}",
            refused.stderr
        );
        assert!(!target.path().join("journal.redb").exists());
    }
    // Turned into format 1 to shed the MAC: refused unless the operator says so.
    let (header, _, store) = split_backup(&forged);
    let downgraded = out.path().join("downgraded.backup");
    std::fs::write(&downgraded, format_1(&header, &store)).unwrap();
    let target = with_key();
    let refused = restore(&downgraded, target.path()).await;
    assert!(!refused.success());
    assert!(refused.stderr.contains("format 1"), "{}", refused.stderr);
    assert!(!target.path().join("journal.redb").exists());
}

/// The attacker of a_backup_changed_after_it_was_written_is_refused,
/// better equipped: their own instance's whole backup (their HMAC key,
/// their admin token), or the victim's file re-MACed under their own key
/// with that key among its retired ones. Wherever the victim's key is (the
/// data dir or the environment), the restore refuses; where no key is,
/// the file's own keys do not vouch for it.
#[tokio::test]
async fn a_backup_vouched_for_only_by_the_keys_it_carries_is_refused() {
    let mut victim = Daemon::start(generated_key());
    fill(&victim, new_plan(), 2).await;
    let out = tempfile::tempdir().unwrap();
    let genuine = out.path().join("genuine.backup");
    victim
        .admin_ok(&["backup", "--without-keys", genuine.to_str().unwrap()])
        .await;
    let victim_key = std::fs::read(victim.data_dir().join("hmac.key")).unwrap();
    assert!(victim.stop().success());

    let mut attacker = Daemon::start(generated_key());
    fill(&attacker, new_plan(), 1).await;
    attacker
        .admin_json(&[
            "tokens",
            "create",
            "--name",
            "evil",
            "--scope",
            "read,append,admin",
        ])
        .await;
    let theirs = out.path().join("theirs.backup");
    attacker
        .admin_ok(&["backup", theirs.to_str().unwrap()])
        .await;
    let attacker_key = std::fs::read(attacker.data_dir().join("hmac.key")).unwrap();
    assert!(attacker.stop().success());

    // The victim's off-site file replaced by the attacker's whole backup.
    let forged = out.path().join("forged.backup");
    std::fs::copy(&theirs, &forged).unwrap();
    // (A) into an empty data dir, no key anywhere.
    let empty = tempfile::tempdir().unwrap();
    let refused = restore(&forged, empty.path()).await;
    assert!(!refused.success(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("cannot vouch for it"),
        "{}",
        refused.stderr
    );
    // (B) with the victim's secret in the environment.
    let env_dir = tempfile::tempdir().unwrap();
    let refused = restore_env(&forged, env_dir.path(), &[], Some(&victim_key)).await;
    assert!(!refused.success(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("not the signing key here"),
        "{}",
        refused.stderr
    );
    assert!(!env_dir.path().join("journal.redb").exists());
    // (C) into a data dir holding the victim's key, the attacker's key
    // smuggled in as a retired one and the head re-MACed under it.
    let (mut header, _, store) = split_backup(&std::fs::read(&theirs).unwrap());
    header["files"] = serde_json::json!([{
        "path": "hmac-retired/old",
        "content_base64": base64::engine::general_purpose::STANDARD.encode(&attacker_key),
    }]);
    let mut head = b"logbook-backup 2\n".to_vec();
    head.extend(serde_json::to_vec(&header).unwrap());
    head.push(b'\n');
    let secret = String::from_utf8(attacker_key).unwrap();
    let secret = secret.trim_end().as_bytes();
    let mac = {
        use hmac::{Mac, digest::KeyInit};
        let keyed = |key: &[u8], data: &[u8]| {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        };
        keyed(&keyed(secret, b"logbook backup mac v1"), &head)
    };
    head.extend(
        serde_json::to_vec(&serde_json::json!({
            "key_id": logbook_journal::keys::key_id(secret),
            "hmac_sha256": logbook_base::hex::encode(&mac),
        }))
        .unwrap(),
    );
    head.push(b'\n');
    head.extend_from_slice(&store);
    std::fs::write(&forged, &head).unwrap();
    let holding = tempfile::tempdir().unwrap();
    std::fs::write(holding.path().join("hmac.key"), &victim_key).unwrap();
    let refused = restore(&forged, holding.path()).await;
    assert!(!refused.success(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("not the signing key here"),
        "{}",
        refused.stderr
    );
    assert!(!holding.path().join("hmac-retired").exists());
    assert!(!holding.path().join("journal.redb").exists());

    // The genuine file restores there, authenticated.
    let done = restore(&genuine, holding.path()).await;
    assert!(done.success(), "{}", done.stderr);
    assert!(done.stdout.contains("authenticated"), "{}", done.stdout);
}

/// A retired HMAC key may have leaked (its window is in the store, which a
/// restore has not got yet), so only the signing key vouches for a
/// backup: one MACed under a retired key, the operator's own from before a
/// rotation or an attacker's under a leaked key, needs the flag.
#[tokio::test]
async fn a_backup_under_a_retired_key_does_not_vouch() {
    let mut daemon = Daemon::start(generated_key());
    fill(&daemon, new_plan(), 2).await;
    let out = tempfile::tempdir().unwrap();
    let before = out.path().join("before-rotation.backup");
    daemon
        .admin_ok(&["backup", "--without-keys", before.to_str().unwrap()])
        .await;
    daemon.admin_json(&["keys", "rotate-hmac"]).await;
    let after = out.path().join("after-rotation.backup");
    daemon
        .admin_ok(&["backup", "--without-keys", after.to_str().unwrap()])
        .await;
    let data = daemon.data_dir();
    assert!(daemon.stop().success());
    // The operator's key files, current and retired, put in place first.
    let with_keys = || {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(data.join("hmac.key"), dir.path().join("hmac.key")).unwrap();
        let retired = dir.path().join("hmac-retired");
        std::fs::create_dir(&retired).unwrap();
        for entry in std::fs::read_dir(data.join("hmac-retired")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), retired.join(entry.file_name())).unwrap();
        }
        dir
    };
    let target = with_keys();
    let refused = restore(&before, target.path()).await;
    assert!(!refused.success(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("not the signing key here"),
        "{}",
        refused.stderr
    );
    assert!(!target.path().join("journal.redb").exists());
    // The retired key cannot vouch, but it can refuse: that file changed
    // is refused even with the flag.
    let changed = store_changed(&before);
    let changed_file = out.path().join("changed.backup");
    std::fs::write(&changed_file, &changed).unwrap();
    let refused = restore_with(&changed_file, target.path(), &["--allow-unauthenticated"]).await;
    assert!(!refused.success(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("MAC does not verify"),
        "{}",
        refused.stderr
    );
    // The genuine one, with the flag: restored, not authenticated.
    let done = restore_with(&before, target.path(), &["--allow-unauthenticated"]).await;
    assert!(done.success(), "{}", done.stderr);
    assert!(
        done.stderr
            .contains("verifies under that key, which is not the signing key"),
        "{}",
        done.stderr
    );
    assert!(done.stderr.contains("NOT AUTHENTICATED"), "{}", done.stderr);

    let target = with_keys();
    let done = restore(&after, target.path()).await;
    assert!(done.success(), "{}", done.stderr);
    assert!(done.stdout.contains("authenticated"), "{}", done.stdout);
}
