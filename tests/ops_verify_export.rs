//! `logbook verify --export FILE`: an export verifies offline, and a one-byte
//! edit at seq K is reported at K with a non-zero exit.

mod common;

use common::{Daemon, DaemonOpts, TEST_SECRET, fill, logbook, new_plan, run};

/// `logbook verify --export FILE ARGS` with only `env`'s secrets set;
/// returns success, stdout and stderr.
async fn verify(
    file: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (bool, String, String) {
    let mut command = logbook();
    command
        .arg("verify")
        .arg("--export")
        .arg(file)
        .args(args)
        .env_remove("LOGBOOK_HMAC_SECRET")
        .env_remove("EVENT_BUS_HMAC_SECRET")
        .env_remove("SESSION_SECRET");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = run(command).await;
    (out.success(), out.stdout, out.stderr)
}

#[tokio::test]
async fn export_verifies_offline_and_a_one_byte_edit_is_located() {
    let daemon = Daemon::start(DaemonOpts::default());
    let p = new_plan().to_string();
    fill(&daemon, &p, 6).await;
    let export = daemon.admin_ok(&["export", &p]).await;
    let head = daemon.admin_json(&["plans", "show", &p]).await["head_signature"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.ndjson");
    std::fs::write(&file, &export).unwrap();
    drop(daemon); // no daemon from here on

    let (ok, stdout, stderr) = verify(&file, &[("LOGBOOK_HMAC_SECRET", TEST_SECRET)], &[]).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("6 events") && stdout.contains(&head),
        "{stdout}"
    );

    // A named variable works too; a wrong secret breaks at seq 1.
    let (ok, _, _) = verify(&file, &[("MY_KEY", TEST_SECRET)], &["--key-env", "MY_KEY"]).await;
    assert!(ok);
    let (ok, stdout, _) = verify(&file, &[("LOGBOOK_HMAC_SECRET", "wrong")], &[]).await;
    assert!(!ok);
    assert!(
        stdout.contains("broken at seq 1") && stdout.contains("signature"),
        "{stdout}"
    );
    let (ok, _, stderr) = verify(&file, &[], &[]).await;
    assert!(!ok && stderr.contains("no HMAC secret"), "{stderr}");

    // One byte changed inside the payload of seq K: "event number 3" → "event number 8".
    let k = 4u64;
    let mut bytes = export.clone().into_bytes();
    let line_start: usize = export
        .lines()
        .take((k - 1) as usize)
        .map(|l| l.len() + 1)
        .sum();
    let line = export.lines().nth((k - 1) as usize).unwrap();
    assert!(line.contains(&format!("\"seq\":{k}")));
    let offset = line_start + line.find("event number 3").unwrap() + "event number ".len();
    bytes[offset] = b'8';
    let tampered = dir.path().join("tampered.ndjson");
    std::fs::write(&tampered, &bytes).unwrap();
    let (ok, stdout, _) = verify(&tampered, &[("LOGBOOK_HMAC_SECRET", TEST_SECRET)], &[]).await;
    assert!(!ok, "a tampered export must fail: {stdout}");
    assert!(stdout.contains(&format!("broken at seq {k}")), "{stdout}");
    assert!(stdout.contains("payload_hash"), "{stdout}");

    // A byte that breaks the JSON itself is also located at K.
    let mut broken = export.clone().into_bytes();
    broken[line_start] = b'[';
    std::fs::write(&tampered, &broken).unwrap();
    let (ok, stdout, _) = verify(&tampered, &[("LOGBOOK_HMAC_SECRET", TEST_SECRET)], &[]).await;
    assert!(!ok);
    assert!(stdout.contains(&format!("broken at seq {k}")), "{stdout}");
}

/// The signature covers an event's values, not their spelling: a line with
/// an unsigned extra member, or an id or hash spelled another way, is not
/// what logbook wrote, and an empty file is not an export.
#[tokio::test]
async fn only_lines_as_logbook_writes_them_verify() {
    let (_dir, file, export) = exported(3).await;
    let secret = [("LOGBOOK_HMAC_SECRET", TEST_SECRET)];
    assert!(
        verify(&file, &secret, &[]).await.0,
        "the export itself verifies"
    );

    let second = export.lines().nth(1).unwrap();
    let signature = second.split("\"signature\":\"").nth(1).unwrap()[..64].to_string();
    let edits = [
        // An unsigned member that a reader of the file would see.
        second.replacen('{', "{\"approved_by\":\"cfo\",", 1),
        // The same signature in upper case.
        second.replace(&signature, &signature.to_uppercase()),
    ];
    for edited in edits {
        assert_ne!(edited, second);
        let text = export.replace(second, &edited);
        std::fs::write(&file, &text).unwrap();
        let (ok, stdout, _) = verify(&file, &secret, &[]).await;
        assert!(!ok, "{edited}: {stdout}");
        assert!(
            stdout.contains("broken at seq 2") && stdout.contains("not_canonical_line"),
            "{stdout}"
        );
    }

    std::fs::write(&file, "").unwrap();
    let (ok, stdout, _) = verify(&file, &secret, &[]).await;
    assert!(!ok && stdout.contains("no events"), "{stdout}");
}

/// A plan of `events` events exported by a daemon that is then stopped:
/// the export's text, written to `plan.ndjson` in the returned directory.
async fn exported(events: usize) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let daemon = Daemon::start(DaemonOpts::default());
    let p = new_plan().to_string();
    fill(&daemon, &p, events).await;
    let export = daemon.admin_ok(&["export", &p]).await;
    drop(daemon);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.ndjson");
    std::fs::write(&file, &export).unwrap();
    (dir, file, export)
}

/// An export of several batches (lines are parsed and checked on every
/// core, in batches of 256, then walked in order): one byte flipped in the
/// payload or the signature of the middle event or of the last one is
/// reported at exactly that seq and line, with its reason.
#[tokio::test]
async fn one_flipped_byte_in_a_long_export_is_located() {
    const EVENTS: usize = 600;
    let (_dir, file, export) = exported(EVENTS).await;
    let secret = [("LOGBOOK_HMAC_SECRET", TEST_SECRET)];
    let (ok, stdout, _) = verify(&file, &secret, &[]).await;
    assert!(
        ok && stdout.contains(&format!("{EVENTS} events")),
        "{stdout}"
    );

    let lines: Vec<&str> = export.lines().collect();
    assert_eq!(lines.len(), EVENTS);
    // "event number N" → "event number N" with its first digit changed:
    // still canonical, another payload hash.
    let flip_payload = |line: &str| {
        let at = line.find("event number ").unwrap() + "event number ".len();
        let mut bytes = line.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
        String::from_utf8(bytes).unwrap()
    };
    // One lowercase hex digit of the signature changed: the line is still
    // spelled as logbook writes it.
    let flip_signature = |line: &str| {
        let at = line.find("\"signature\":\"").unwrap() + "\"signature\":\"".len() + 10;
        let mut bytes = line.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
        String::from_utf8(bytes).unwrap()
    };
    type Flip<'a> = &'a dyn Fn(&str) -> String;
    let flips: [(Flip, &str); 2] = [
        (&flip_payload, "payload_hash"),
        (&flip_signature, "signature"),
    ];
    for (flip, reason) in flips {
        for seq in [EVENTS / 2, EVENTS] {
            let mut tampered = lines.clone();
            let edited = flip(lines[seq - 1]);
            assert_ne!(edited, lines[seq - 1]);
            tampered[seq - 1] = &edited;
            std::fs::write(&file, tampered.join("\n") + "\n").unwrap();
            let (ok, stdout, _) = verify(&file, &secret, &[]).await;
            assert!(!ok, "{reason} at {seq}: {stdout}");
            assert_eq!(
                stdout.trim(),
                format!("broken at seq {seq} (line {seq}): {reason}"),
                "{reason} at {seq}"
            );
        }
    }
}

/// A line whose payload is not JSON is refused as a malformed event, even
/// when its hash and HMAC match (made here with the key, as a signer that
/// must never sign such a text would): a reader of the file could not parse
/// it. The one-pass canonical check once took a member name with its
/// opening quote replaced (`{"n":1,#pad":"x"}`), and such a line verified.
#[tokio::test]
async fn a_signed_line_whose_payload_is_not_json_is_refused() {
    use logbook_base::canonical::sha256;
    use logbook_journal::event_wire::WireEvent;

    let (_dir, file, export) = exported(1).await;
    let line = export.lines().next().unwrap();
    let secret = [("LOGBOOK_HMAC_SECRET", TEST_SECRET)];
    for payload in [r#"{"n":1,#pad":"x"}"#, r#"{n":1}"#, r#"{"n":1"#] {
        let mut wire = WireEvent::read(line).expect("logbook's own line");
        wire.payload = payload;
        wire.payload_hash = sha256(payload.as_bytes());
        wire.signature = wire.signable().sign(TEST_SECRET.as_bytes());
        let mut signed = String::new();
        wire.write(&mut signed);
        std::fs::write(&file, signed + "\n").unwrap();
        let (ok, stdout, _) = verify(&file, &secret, &[]).await;
        assert!(!ok, "{payload}: {stdout}");
        assert!(
            stdout.starts_with("broken at seq 1 (line 1): malformed event"),
            "{payload}: {stdout}"
        );
    }
}
