//! Offline verification of an NDJSON export (`logbook verify --export FILE`):
//! checks the chain with no daemon and no store, with the HMAC secret(s),
//! and, with `--log-key` and `--checkpoint`, the export against a signed
//! checkpoint of its plan's log, with no HMAC key at all.

use std::io::BufRead;
use std::ops::ControlFlow;

use logbook_base::ordered_pool::{cores, run_in_order_bounded};
use logbook_journal::Event;
use logbook_journal::chain::{
    BrokenReason, ChainLink, ChainVerifier, PayloadVerdict, SignatureScratch,
};
use logbook_journal::checkpoint::plan_verifier;
use logbook_journal::event::Timestamp;
use logbook_journal::event_wire::WireEvent;
use logbook_journal::keys::{Keyring, SECRET_ENV_VARS};
use logbook_tlog::checkpoint::{Checkpoint, verify_checkpoint};
use logbook_tlog::merkle::{self, StreamingRoot};
use logbook_tlog::note::Verifier;
use uuid::Uuid;

/// The result of checking an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Valid {
        count: u64,
        head_signature: Option<[u8; 32]>,
        /// Events whose payload was erased: verified, and reported.
        redacted: u64,
        /// The seqs of the first [`LISTED_REDACTIONS`] of them.
        redacted_seqs: Vec<u64>,
    },
    /// The first seq that does not verify, and why.
    Broken { seq: u64, line: u64, reason: String },
}

/// How many erased events' seqs a report names (it counts them all).
const LISTED_REDACTIONS: usize = 100;

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

/// What `--log-key` and `--checkpoint` ask to check: the export's first
/// `size` events must be the log of the checkpoint, signed by the plan key
/// derived from the instance vkey.
pub(crate) struct LogCheck {
    pub(crate) instance: Verifier,
    pub(crate) checkpoint: Vec<u8>,
}

/// What checking the export against its checkpoint found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogOutcome {
    /// The first `size` events rebuild the checkpoint's root.
    Ok { size: u64 },
    /// The export is shorter than the checkpoint: its tail was cut off.
    Truncated { export: u64, checkpoint: u64 },
    /// The events do not rebuild the checkpoint's root.
    RootMismatch,
    /// The checkpoint is not one of this plan signed by the log key (the
    /// chain outcome says why).
    BadCheckpoint,
}

/// The chain's verdict (format and order always; HMAC when a keyring is
/// given) and, when asked, the log's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    pub(crate) chain: Outcome,
    pub(crate) log: Option<LogOutcome>,
}

/// Lines handed to a worker at a time: enough that handing over costs
/// little per line, few enough that a batch stays in cache.
const BATCH_LINES: usize = 256;

/// Bytes of line text after which a batch is handed over even with fewer
/// than [`BATCH_LINES`] lines: the batches in flight (a few per core) then
/// hold a few MiB of the export, not hundreds of its longest lines each
/// (256 lines of 1 MiB payloads per batch is 256 MiB).
const BATCH_BYTES: usize = 1 << 20;

/// Bytes of line text out with the workers at once, at most (one batch
/// more if it alone is larger): with lines near [`MAX_LINE_BYTES`], the
/// batches in flight on every core would otherwise hold several of them.
/// Batches of ordinary lines (about 1 MiB each) never reach it.
const MAX_BYTES_OUT: usize = 64 << 20;

/// The longest line taken: longer than any event line an export holds.
/// A payload is at most `limits.max_body_bytes` (at most
/// [`crate::config::MAX_BODY_BYTES`]) as sent, and its canonical form at
/// most four times that (`1e15`, four bytes, is written as sixteen
/// digits; strings never grow); the event's other fields fit in 1 MiB.
/// Without a bound, one line with no end would be read into memory whole.
const MAX_LINE_BYTES: usize = 4 * crate::config::MAX_BODY_BYTES + (1 << 20);

/// Non-empty lines as read, end to end in one string, with their line
/// numbers (from 1) and where each ends.
struct LineBatch {
    text: String,
    lines: Vec<(u64, usize)>,
}

/// Reads up to [`BATCH_LINES`] non-empty lines, fewer once they hold
/// [`BATCH_BYTES`]; `None` at the end. A line longer than `max_line` bytes
/// (without its end) is refused once a few more than that are read.
fn read_batch(
    reader: &mut impl BufRead,
    line_no: &mut u64,
    max_line: usize,
) -> Result<Option<LineBatch>, String> {
    let mut batch = LineBatch {
        text: String::with_capacity(BATCH_LINES * 1400),
        lines: Vec::with_capacity(BATCH_LINES),
    };
    while batch.lines.len() < BATCH_LINES && batch.text.len() < BATCH_BYTES {
        let start = batch.text.len();
        *line_no += 1;
        // Room for the line, its `\r\n`, and one byte more to tell a longer one.
        let limit = u64::try_from(max_line)
            .unwrap_or(u64::MAX)
            .saturating_add(3);
        // `take` on the reference, so that the reader is still ours after.
        let mut line = std::io::Read::take(&mut *reader, limit);
        let read = line.read_line(&mut batch.text).map_err(|e| {
            // The cut can split a character: a line read to the limit is
            // too long, whatever else is wrong with it.
            if line.limit() == 0 {
                too_long(*line_no, max_line)
            } else {
                format!("reading line {line_no}: {e}")
            }
        })?;
        if read == 0 {
            break;
        }

        // As `lines()` takes them: without the `\n` or `\r\n`.
        let mut end = batch.text.len();
        if batch.text[..end].ends_with('\n') {
            end -= 1;
            if batch.text[..end].ends_with('\r') {
                end -= 1;
            }
        }
        if end - start > max_line {
            return Err(too_long(*line_no, max_line));
        }
        batch.text.truncate(end);
        // Only an empty line is skipped: one of spaces (or NBSP, U+2028…)
        // is no line `admin export` writes, and is judged as any other.
        if end == start {
            batch.text.truncate(start);
        } else {
            batch.lines.push((*line_no, end));
        }
    }
    Ok((!batch.lines.is_empty()).then_some(batch))
}

fn too_long(line_no: u64, max_line: usize) -> String {
    format!(
        "line {line_no} is longer than {max_line} bytes, longer than any event line of an export"
    )
}

impl LineBatch {
    /// Each line with its number.
    fn lines(&self) -> impl Iterator<Item = (u64, &str)> {
        let starts = std::iter::once(0).chain(self.lines.iter().map(|&(_, end)| end));
        self.lines
            .iter()
            .zip(starts)
            .map(|(&(line_no, end), start)| (line_no, &self.text[start..end]))
    }
}

/// Verifies an export read line by line. Lines must be one plan's events
/// from seq 1 in order, as `logbook admin export` writes them. Reading
/// stays on this thread; parsing and every check that needs no earlier
/// event (the line's exact form, the payload, the HMAC, the log leaf) run
/// on every core (`ordered_pool`); the chain is then walked in order.
pub(crate) fn verify_export(
    mut reader: impl BufRead,
    keyring: Option<&Keyring>,
    log: Option<&LogCheck>,
) -> Result<Verified, String> {
    let mut walk = Walk::new(keyring, log);
    let mut line_no = 0u64;
    let mut verdict = None;
    run_in_order_bounded(
        cores(),
        MAX_BYTES_OUT,
        |batch: &LineBatch| batch.text.len(),
        || read_batch(&mut reader, &mut line_no, MAX_LINE_BYTES),
        |batch| parse_batch(batch, keyring, log.is_some()),
        |(batch, parsed): (LineBatch, Vec<Result<Parsed, String>>)| {
            for ((line_no, line), parsed) in batch.lines().zip(parsed) {
                if let Some(done) = walk.take(line_no, line, parsed) {
                    verdict = Some(done);
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        },
    )?;
    Ok(verdict.unwrap_or_else(|| walk.finish()))
}

/// The walk over an export's events in order: what `verify_export` knows
/// between lines.
struct Walk<'a> {
    keyring: Option<&'a Keyring>,
    log: Option<&'a LogCheck>,
    verifier: ChainVerifier,
    plan: Option<Uuid>,
    count: u64,
    leaves: StreamingRoot,
    /// The checkpoint and the root of the export's first `size` events.
    checkpoint: Option<(Checkpoint, Option<[u8; 32]>)>,
    first_break: Option<Outcome>,
    /// The first [`LISTED_REDACTIONS`] erased events verified.
    redacted_seqs: Vec<u64>,
}

impl<'a> Walk<'a> {
    fn new(keyring: Option<&'a Keyring>, log: Option<&'a LogCheck>) -> Walk<'a> {
        Walk {
            keyring,
            log,
            verifier: ChainVerifier::default(),
            plan: None,
            count: 0,
            leaves: StreamingRoot::new(),
            checkpoint: None,
            first_break: None,
            redacted_seqs: Vec::new(),
        }
    }

    /// Takes the next line's parse; `Some` when the verdict is reached.
    fn take(
        &mut self,
        line_no: u64,
        line: &str,
        parsed: Result<Parsed, String>,
    ) -> Option<Verified> {
        let broken = |seq, line, reason: String| Outcome::Broken { seq, line, reason };
        let expected = self.count + 1;
        let Parsed {
            plan_id,
            link,
            payload,
            leaf,
            fast,
        } = match parsed {
            Ok(parsed) => parsed,
            Err(reason) => {
                return Some(stop(
                    broken(expected, line_no, reason),
                    self.log,
                    &self.checkpoint,
                ));
            }
        };
        if *self.plan.get_or_insert(plan_id) != plan_id {
            let reason = "plan_id differs from the first event's".to_string();
            return Some(stop(
                broken(link.seq, line_no, reason),
                self.log,
                &self.checkpoint,
            ));
        }
        if self.checkpoint.is_none()
            && let Some(log) = self.log
        {
            match open_checkpoint(log, &plan_id) {
                Ok(cp) => self.checkpoint = Some((cp, None)),
                Err(reason) => {
                    return Some(Verified {
                        chain: broken(link.seq, line_no, reason),
                        log: Some(LogOutcome::BadCheckpoint),
                    });
                }
            }
        }
        // Without a key every check but the HMAC still runs: the
        // payload is outside the log's leaves.
        // The payload was checked with the parse, on every core.
        let checked = match self.first_break {
            Some(_) => Ok(()),
            None => self
                .verifier
                .check_prechecked_link(&link, payload, self.keyring, |at, keyring| {
                    recheck(line, fast, at, keyring)
                })
                .map_err(|reason| match reason.missing_key() {
                    Some(id) => format!(
                        "missing-key (no secret for key_id {id}: its signature cannot be checked)"
                    ),
                    None => reason.as_str().to_string(),
                }),
        };
        if let Err(reason) = checked {
            let at = broken(link.seq, line_no, reason);
            if self.log.is_none() {
                return Some(Verified {
                    chain: at,
                    log: None,
                });
            }
            // Against a checkpoint the root decides; the first break
            // only names where the export went wrong.
            self.first_break = Some(at);
        } else if link.redacted && self.redacted_seqs.len() < LISTED_REDACTIONS {
            self.redacted_seqs.push(link.seq);
        }
        self.count += 1;
        if let Some((cp, root @ None)) = &mut self.checkpoint {
            let leaf = leaf.expect("a leaf is computed whenever a log is checked");
            self.leaves.push(leaf);
            if cp.size == self.count {
                *root = Some(self.leaves.root());
            }
        }
        None
    }

    /// The verdict once every line was taken.
    fn finish(self) -> Verified {
        // Every plan has at least one event: an empty file is not an export.
        if self.count == 0 {
            let reason = "the export holds no events".to_string();
            let chain = Outcome::Broken {
                seq: 1,
                line: 0,
                reason,
            };
            return stop(chain, self.log, &self.checkpoint);
        }
        let count = self.count;
        let log = self.checkpoint.map(|(cp, root)| match root {
            _ if cp.size > count => LogOutcome::Truncated {
                export: count,
                checkpoint: cp.size,
            },
            Some(root) if root == cp.root => LogOutcome::Ok { size: cp.size },
            // A checkpoint of size 0 is the empty tree, whatever the export holds.
            None if cp.size == 0 && cp.root == merkle::empty_root() => LogOutcome::Ok { size: 0 },
            _ => LogOutcome::RootMismatch,
        });
        Verified {
            chain: self.first_break.unwrap_or(Outcome::Valid {
                count,
                head_signature: self.keyring.and(self.verifier.last_signature()),
                redacted: self.verifier.redacted(),
                redacted_seqs: self.redacted_seqs,
            }),
            log,
        }
    }
}

/// A chain break ends the check. With a checkpoint asked for, the export
/// matches the log only if the checkpoint's events all came before it.
fn stop(
    chain: Outcome,
    log: Option<&LogCheck>,
    state: &Option<(Checkpoint, Option<[u8; 32]>)>,
) -> Verified {
    let log = log.map(|_| match state {
        Some((cp, Some(root))) if *root == cp.root => LogOutcome::Ok { size: cp.size },
        _ => LogOutcome::RootMismatch,
    });
    Verified { chain, log }
}

/// The checkpoint, verified with the plan's key derived from the instance vkey.
fn open_checkpoint(log: &LogCheck, plan: &Uuid) -> Result<Checkpoint, String> {
    let plan_key = plan_verifier(&log.instance, plan)
        .map_err(|e| format!("bad-checkpoint: deriving the key of plan {plan}: {e}"))?;
    verify_checkpoint(&log.checkpoint, &plan_key).map_err(|e| {
        format!("bad-checkpoint: not a checkpoint of plan {plan} signed by the --log-key: {e}")
    })
}

/// What the in-order walk takes of a line: its plan, what the chain's
/// rules read, the checks made ahead on a worker, and its log leaf
/// (computed only when a log is checked).
struct Parsed {
    plan_id: Uuid,
    link: ChainLink,
    payload: PayloadVerdict,
    leaf: Option<[u8; 32]>,
    /// Read by [`WireEvent::read`], not by serde_json: a recheck reads the
    /// line again the same way.
    fast: bool,
}

/// Parses each line of a batch, on a worker thread; results in line order,
/// handed back with the batch (the walk reads a line again in the rare
/// case it must check an HMAC at a later date).
fn parse_batch(
    batch: LineBatch,
    keyring: Option<&Keyring>,
    with_leaf: bool,
) -> (LineBatch, Vec<Result<Parsed, String>>) {
    // One buffer for every line's expected spelling, one scratch for
    // every line's HMAC.
    let mut expected = String::with_capacity(2048);
    let mut scratch = SignatureScratch::default();
    let parsed = batch
        .lines()
        .map(|(_, line)| parse_line(line, keyring, with_leaf, &mut expected, &mut scratch))
        .collect();
    (batch, parsed)
}

const NOT_CANONICAL: &str = "not_canonical_line: the line is not as logbook writes it (an unknown member, or another spelling of an id, hash or time)";

/// Parses a line, checks it is exactly as logbook writes it, computes its
/// log leaf (when asked) and checks its payload (and, with a keyring, its
/// HMAC at its own date).
///
/// Exactly as `logbook admin export` writes it: no unknown member, no
/// other spelling of an id or hash. The signature covers the values, not
/// their spelling, so a reader of the file could otherwise see data that
/// nothing signed. A line is accepted only if `write(fields) == line`, on
/// both paths below.
///
/// The usual line is read by [`WireEvent::read`], borrowing its strings and
/// payload, with no owned `Event` and no scan of the payload by serde_json.
/// Why that accepts exactly what serde_json would, meaning the same: if
/// the reader gives fields E' and `write(E') == line`, then serde_json
/// parses the line into E' too, because `write` is serde_json's own
/// spelling (`event_wire`'s tests) and every field survives it: ids,
/// numbers, hashes and plain strings trivially, the time because `read`
/// took it with the very parser serde uses, and the payload because it is
/// JSON: the payload check vouches for that unless it finds the text not
/// canonical, and then the line goes to serde_json, which says whether it
/// is JSON at all (a "malformed event") or only not canonical. (A
/// canonical text has no surrounding whitespace, and serde_json keeps a
/// `RawValue`'s exact text, skipping it with no depth limit, so a deep
/// canonical payload parses in the line too.) Any line
/// the reader declines goes to serde_json, as every line did before, so
/// its error is the one it always was. `offline/differential.rs` holds
/// the two paths to the same verdicts on mutated lines.
fn parse_line<'k>(
    line: &str,
    keyring: Option<&'k Keyring>,
    with_leaf: bool,
    expected: &mut String,
    scratch: &mut SignatureScratch<'k>,
) -> Result<Parsed, String> {
    if let Some(parsed) = parse_fast(line, keyring, with_leaf, expected, scratch) {
        return Ok(parsed);
    }
    parse_serde(line, keyring, with_leaf, expected, scratch)
}

/// [`parse_line`] by [`WireEvent::read`]; `None` when it declines.
fn parse_fast<'k>(
    line: &str,
    keyring: Option<&'k Keyring>,
    with_leaf: bool,
    expected: &mut String,
    scratch: &mut SignatureScratch<'k>,
) -> Option<Parsed> {
    let wire = WireEvent::read(line)?;
    if !is_written_as(&wire, line, expected) {
        return None;
    }
    let payload = PayloadVerdict::of_wire(&wire, keyring, scratch);
    if payload.payload_result() == Err(BrokenReason::PayloadNotCanonical) {
        // Perhaps not JSON at all: serde_json says which.
        return None;
    }
    Some(parsed(&wire, payload, with_leaf, true))
}

/// [`parse_line`] by serde_json: every line the fast reader declines.
fn parse_serde<'k>(
    line: &str,
    keyring: Option<&'k Keyring>,
    with_leaf: bool,
    expected: &mut String,
    scratch: &mut SignatureScratch<'k>,
) -> Result<Parsed, String> {
    let event: Event = serde_json::from_str(line).map_err(|e| format!("malformed event: {e}"))?;
    let wire = WireEvent::of(&event);
    if !is_written_as(&wire, line, expected) {
        return Err(NOT_CANONICAL.into());
    }
    let payload = PayloadVerdict::of_wire(&wire, keyring, scratch);
    Ok(parsed(&wire, payload, with_leaf, false))
}

/// `write(wire) == line`: its head and tail written into a reused buffer,
/// the payload's text compared where the line holds it, not copied.
fn is_written_as(wire: &WireEvent<'_>, line: &str, expected: &mut String) -> bool {
    expected.clear();
    wire.write_head(expected);
    let Some(rest) = line.strip_prefix(expected.as_str()) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(wire.payload) else {
        return false;
    };
    expected.clear();
    wire.write_tail(expected);
    rest == expected
}

fn parsed(wire: &WireEvent<'_>, payload: PayloadVerdict, with_leaf: bool, fast: bool) -> Parsed {
    Parsed {
        plan_id: wire.plan_id,
        link: wire.link(),
        payload,
        leaf: with_leaf.then(|| merkle::leaf_hash(wire.log_entry().as_bytes())),
        fast,
    }
}

/// The HMAC of an accepted line checked at the walk's date, later than
/// its own (an event dated before one accepted earlier): the line is read
/// again by the path that accepted it.
fn recheck(line: &str, fast: bool, at: Timestamp, keyring: &Keyring) -> Result<(), BrokenReason> {
    if fast && let Some(wire) = WireEvent::read(line) {
        return wire.signature_check(at, keyring);
    }
    let event: Event = serde_json::from_str(line).expect("an accepted line parses again");
    WireEvent::of(&event).signature_check(at, keyring)
}

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests;
