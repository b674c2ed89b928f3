//! Offline verification of an NDJSON export (`logbook verify --export FILE`):
//! checks the chain with no daemon and no store, only the HMAC secret(s).

use std::io::BufRead;

use logbook_journal::Event;
use logbook_journal::chain::ChainVerifier;
use logbook_journal::keys::{Keyring, SECRET_ENV_VARS};

/// The result of checking an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Valid {
        count: u64,
        head_signature: Option<[u8; 32]>,
    },
    /// The first seq that does not verify, and why.
    Broken { seq: u64, line: u64, reason: String },
}

/// Builds a keyring from the named environment variables (all that are set;
/// the first signs, which does not matter here). With no names, the daemon's
/// own variables are tried in its order.
pub(crate) fn keyring_from_env(
    vars: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Keyring, String> {
    let names: Vec<String> = if vars.is_empty() {
        SECRET_ENV_VARS.iter().map(|s| s.to_string()).collect()
    } else {
        vars.to_vec()
    };
    let mut keyring: Option<Keyring> = None;
    for name in &names {
        let Some(secret) = env(name).filter(|s| !s.is_empty()) else {
            if !vars.is_empty() {
                return Err(format!("--key-env {name}: the variable is not set"));
            }
            continue;
        };
        // Taken as the daemon takes it, byte for byte.
        let secret = secret.into_bytes();
        match &mut keyring {
            Some(k) => k
                .add_verification_key(secret)
                .map_err(|e| format!("--key-env {name}: {e}"))?,
            None => keyring = Some(Keyring::from_secret(secret)),
        }
    }
    keyring.ok_or_else(|| {
        format!(
            "no HMAC secret: set one of {} or name a variable with --key-env",
            SECRET_ENV_VARS.join(", ")
        )
    })
}

/// Verifies an export read line by line. Lines must be one plan's events
/// from seq 1 in order, as `logbook admin export` writes them.
pub(crate) fn verify_export(reader: impl BufRead, keyring: &Keyring) -> Result<Outcome, String> {
    let mut verifier = ChainVerifier::default();
    let mut plan = None;
    for (index, line) in reader.lines().enumerate() {
        let line_no = index as u64 + 1;
        let line = line.map_err(|e| format!("reading line {line_no}: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let expected = verifier.last_seq() + 1;
        let event: Event = match serde_json::from_str(&line) {
            Ok(event) => event,
            Err(e) => {
                return Ok(Outcome::Broken {
                    seq: expected,
                    line: line_no,
                    reason: format!("malformed event: {e}"),
                });
            }
        };
        // Exactly as `logbook admin export` writes it: no unknown member, no
        // other spelling of an id or hash. The signature covers the values,
        // not their spelling, so a reader of the file could otherwise see
        // data that nothing signed.
        if serde_json::to_string(&event).ok().as_deref() != Some(line.as_str()) {
            return Ok(Outcome::Broken {
                seq: event.seq,
                line: line_no,
                reason: "not_canonical_line: the line is not as logbook writes it (an unknown member, or another spelling of an id, hash or time)".into(),
            });
        }
        if *plan.get_or_insert(event.plan_id) != event.plan_id {
            return Ok(Outcome::Broken {
                seq: event.seq,
                line: line_no,
                reason: "plan_id differs from the first event's".into(),
            });
        }
        if let Err(reason) = verifier.check(&event, keyring) {
            let mut reason = reason.as_str().to_string();
            if reason == "signature" && keyring.get(&event.key_id).is_none() {
                reason.push_str(&format!(" (no secret for key_id {})", event.key_id));
            }
            return Ok(Outcome::Broken {
                seq: event.seq,
                line: line_no,
                reason,
            });
        }
    }
    // Every plan has at least one event: an empty file is not an export.
    if verifier.last_seq() == 0 {
        return Ok(Outcome::Broken {
            seq: 1,
            line: 0,
            reason: "the export holds no events".into(),
        });
    }
    Ok(Outcome::Valid {
        count: verifier.last_seq(),
        head_signature: verifier.last_signature(),
    })
}
