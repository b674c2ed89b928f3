//! Chain verification on every core. The checks that need no earlier event
//! (the payload's canonical text and hash, the HMAC) run on all cores over a
//! window of events; then [`ChainVerifier`] walks the window in order and
//! applies every rule itself, taking those results instead of computing
//! them. So the rules and their order live in one place (`chain.rs`), and
//! a window reports exactly what checking its events one by one would.
//! [`PayloadVerdict`] is the same split for a caller that has its own
//! threads (the offline export check parses lines on every core).

use crate::chain::{
    BrokenReason, ChainLink, ChainVerifier, Signable, SignatureScratch, payload_check,
    payload_text_check, signable_check, signature_check, signature_check_reusing,
};
use crate::event::{Event, Timestamp};
use crate::event_wire::WireEvent;
use crate::keys::Keyring;

/// Fewer events than this per thread: one thread, as spawning costs more.
const MIN_PER_THREAD: usize = 64;

/// What one event's independent checks found.
struct Precheck {
    payload: Result<(), BrokenReason>,
    signature: Result<(), BrokenReason>,
    signed_at: Timestamp,
}

/// One event's payload check (canonical text, hash), made ahead on any
/// thread by [`PayloadVerdict::of`] and spent on that same event by
/// [`ChainVerifier::check_prechecked`] (or `check_prechecked_with`). Only
/// its constructors make one, each computing it, so a caller cannot hand
/// the verifier a verdict it did not compute.
#[derive(Debug)]
pub struct PayloadVerdict {
    seq: u64,
    payload_hash: [u8; 32],
    result: Result<(), BrokenReason>,
    /// The HMAC checked at the event's own date, when a keyring was given.
    /// Used only if the walk dates the signature the same (dates never go
    /// back in a chain the daemon wrote); otherwise checked again in order.
    signature: Option<(Timestamp, Result<(), BrokenReason>)>,
}

impl PayloadVerdict {
    pub fn of(event: &Event) -> PayloadVerdict {
        PayloadVerdict {
            seq: event.seq,
            payload_hash: event.payload_hash,
            result: payload_check(event),
            signature: None,
        }
    }

    /// [`PayloadVerdict::of`], plus the HMAC under `keyring` at the
    /// event's own date, also made ahead.
    pub fn of_signed(event: &Event, keyring: &Keyring) -> PayloadVerdict {
        PayloadVerdict::of_signed_reusing(event, keyring, &mut SignatureScratch::default())
    }

    /// [`PayloadVerdict::of_signed`] for a thread that checks many events
    /// in a row, reusing `scratch` from one to the next.
    pub fn of_signed_reusing<'k>(
        event: &Event,
        keyring: &'k Keyring,
        scratch: &mut SignatureScratch<'k>,
    ) -> PayloadVerdict {
        let at = event.created_at;
        PayloadVerdict {
            signature: Some((at, signature_check_reusing(event, at, keyring, scratch))),
            ..PayloadVerdict::of(event)
        }
    }

    /// [`PayloadVerdict::of_signed`] from the event's parts, for a walk
    /// that reads them borrowed from the stored record instead of building
    /// an [`Event`]: the payload's text (`null` once redacted), whether it
    /// was redacted, the signed object and the claimed signature, reusing
    /// `scratch` from one event to the next.
    pub(crate) fn of_signed_parts<'k>(
        text: &str,
        redacted: bool,
        signed: &Signable<'_>,
        signature: &[u8; 32],
        keyring: &'k Keyring,
        scratch: &mut SignatureScratch<'k>,
    ) -> PayloadVerdict {
        let at = signed.created_at;
        PayloadVerdict {
            seq: signed.seq,
            payload_hash: *signed.payload_hash,
            result: payload_text_check(text, redacted, signed.payload_hash),
            signature: Some((at, signable_check(signed, signature, at, keyring, scratch))),
        }
    }

    /// [`PayloadVerdict::of`] (no keyring) or
    /// [`PayloadVerdict::of_signed_reusing`] on an event's wire fields, for
    /// a reader that has them borrowed from an export line.
    pub fn of_wire<'k>(
        wire: &WireEvent<'_>,
        keyring: Option<&'k Keyring>,
        scratch: &mut SignatureScratch<'k>,
    ) -> PayloadVerdict {
        match keyring {
            Some(keyring) => PayloadVerdict::of_signed_parts(
                wire.payload,
                wire.redacted,
                &wire.signable(),
                &wire.signature,
                keyring,
                scratch,
            ),
            None => PayloadVerdict {
                seq: wire.seq,
                payload_hash: wire.payload_hash,
                result: payload_text_check(wire.payload, wire.redacted, &wire.payload_hash),
                signature: None,
            },
        }
    }

    /// The payload's verdict: a walk that finds the text not canonical
    /// may have more to say about it first (see `store::plan_verify`).
    pub fn payload_result(&self) -> Result<(), BrokenReason> {
        self.result
    }

    /// Panics unless this verdict was made for `event`.
    fn assert_for(&self, link: &ChainLink) {
        assert!(
            self.seq == link.seq && self.payload_hash == link.payload_hash,
            "a payload verdict is spent on the event it was made for"
        );
    }
}

impl ChainVerifier {
    /// [`ChainVerifier::check`] (with a keyring) or
    /// [`ChainVerifier::check_without_key`] (without), taking the payload's
    /// verdict computed ahead. The rules and their order are theirs.
    pub fn check_prechecked(
        &mut self,
        event: &Event,
        payload: PayloadVerdict,
        keyring: Option<&Keyring>,
    ) -> Result<(), BrokenReason> {
        match keyring {
            Some(keyring) => {
                self.check_prechecked_with(&ChainLink::of(event), payload, |signed_at| {
                    signature_check(event, signed_at, keyring)
                })
            }
            None => {
                let link = ChainLink::of(event);
                payload.assert_for(&link);
                self.check_without_key_with(&link, || payload.result)
            }
        }
    }

    /// [`ChainVerifier::check_prechecked`] on the fields its rules read,
    /// for a walk that holds no [`Event`]: `recheck` checks the HMAC at the
    /// walk's date when the verdict's does not serve (see
    /// `check_prechecked_with`); it is not called without a keyring.
    pub fn check_prechecked_link(
        &mut self,
        link: &ChainLink,
        payload: PayloadVerdict,
        keyring: Option<&Keyring>,
        recheck: impl FnOnce(Timestamp, &Keyring) -> Result<(), BrokenReason>,
    ) -> Result<(), BrokenReason> {
        match keyring {
            Some(keyring) => self.check_prechecked_with(link, payload, |at| recheck(at, keyring)),
            None => {
                payload.assert_for(link);
                self.check_without_key_with(link, || payload.result)
            }
        }
    }

    /// [`ChainVerifier::check`] on the fields its rules read (a whole-chain
    /// walk passes no [`Event`]), with the verdict made ahead. An HMAC the
    /// verdict checked at the date the walk signs at is taken; otherwise
    /// (no HMAC checked, or an event dated before one accepted earlier)
    /// `recheck` checks it at the walk's date, as `check` would.
    pub(crate) fn check_prechecked_with(
        &mut self,
        link: &ChainLink,
        payload: PayloadVerdict,
        recheck: impl FnOnce(Timestamp) -> Result<(), BrokenReason>,
    ) -> Result<(), BrokenReason> {
        payload.assert_for(link);
        self.check_with(
            link,
            || payload.result,
            |signed_at| match payload.signature {
                Some((at, verdict)) if at == signed_at => verdict,
                _ => recheck(signed_at),
            },
        )
    }

    /// Checks `events` in order, as [`ChainVerifier::check`] on each would,
    /// hashing on every core. Returns the first break (seq, reason); the
    /// verifier has then accepted the events before it.
    pub fn check_window(
        &mut self,
        events: &[Event],
        keyring: &Keyring,
    ) -> Result<(), (u64, BrokenReason)> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        // The date each signature is checked at, as `check` computes it
        // once every earlier event is accepted (after a break, the rest of
        // the window is not used).
        let mut at = self.signed_at(&ChainLink::of(first));
        let dates: Vec<Timestamp> = events
            .iter()
            .map(|event| {
                at = at.max(event.created_at);
                at
            })
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = events.len().div_ceil(threads).max(MIN_PER_THREAD);
        let prechecks: Vec<Precheck> = std::thread::scope(|scope| {
            let parts: Vec<_> = events
                .chunks(per)
                .zip(dates.chunks(per))
                .map(|(events, dates)| {
                    scope.spawn(move || {
                        events
                            .iter()
                            .zip(dates)
                            .map(|(event, &signed_at)| Precheck {
                                payload: payload_check(event),
                                signature: signature_check(event, signed_at, keyring),
                                signed_at,
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|part| part.join().expect("checking an event does not panic"))
                .collect()
        });
        for (event, pre) in events.iter().zip(prechecks) {
            self.check_with(
                &ChainLink::of(event),
                || pre.payload,
                |signed_at| {
                    assert_eq!(
                        signed_at, pre.signed_at,
                        "the window's dates follow check's"
                    );
                    pre.signature
                },
            )
            .map_err(|reason| (event.seq, reason))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{CanonicalPayload, Signable};
    use serde_json::value::RawValue;
    use uuid::Uuid;

    fn chain(n: u64, keyring: &Keyring) -> Vec<Event> {
        let plan = Uuid::from_u128(5);
        let mut out: Vec<Event> = Vec::new();
        for seq in 1..=n {
            let payload = CanonicalPayload::new(&serde_json::json!({ "seq": seq }));
            let mut event = Event {
                id: Uuid::from_u128(seq.into()),
                plan_id: plan,
                seq,
                event_type: "step.done".into(),
                actor: None,
                payload: payload.json,
                payload_hash: payload.hash,
                prev_hash: out.last().map(|e| e.signature),
                signature: [0; 32],
                key_id: keyring.current_id().to_string(),
                // Dates go back once: the window must date signatures as
                // `check` does, by the latest accepted so far.
                created_at: Timestamp(1_700_000_000_000 + (seq as i64 % 7) * 1000),
                position: seq,
                redacted: false,
            };
            event.signature = Signable::of(&event).sign(keyring.current_secret());
            out.push(event);
        }
        out
    }

    /// The first break, the last accepted seq and the redacted count.
    type Walk = (Result<(), (u64, BrokenReason)>, u64, u64);

    fn one_by_one(events: &[Event], keyring: &Keyring) -> Walk {
        let mut verifier = ChainVerifier::default();
        for event in events {
            if let Err(reason) = verifier.check(event, keyring) {
                let seq = verifier.last_seq();
                return (Err((event.seq, reason)), seq, verifier.redacted());
            }
        }
        (Ok(()), verifier.last_seq(), verifier.redacted())
    }

    fn windowed(events: &[Event], keyring: &Keyring) -> Walk {
        let mut verifier = ChainVerifier::default();
        for window in events.chunks(300) {
            if let Err(e) = verifier.check_window(window, keyring) {
                return (Err(e), verifier.last_seq(), verifier.redacted());
            }
        }
        (Ok(()), verifier.last_seq(), verifier.redacted())
    }

    /// The offline export's walk: payload verdicts made ahead, spent in order.
    fn prechecked(events: &[Event], keyring: Option<&Keyring>) -> Walk {
        let verdicts: Vec<PayloadVerdict> = match keyring {
            Some(keyring) => events
                .iter()
                .map(|e| PayloadVerdict::of_signed(e, keyring))
                .collect(),
            None => events.iter().map(PayloadVerdict::of).collect(),
        };
        let mut verifier = ChainVerifier::default();
        for (event, verdict) in events.iter().zip(verdicts) {
            if let Err(reason) = verifier.check_prechecked(event, verdict, keyring) {
                return (
                    Err((event.seq, reason)),
                    verifier.last_seq(),
                    verifier.redacted(),
                );
            }
        }
        (Ok(()), verifier.last_seq(), verifier.redacted())
    }

    /// What `check_without_key` on each event reports.
    fn one_by_one_without_key(events: &[Event]) -> Walk {
        let mut verifier = ChainVerifier::default();
        for event in events {
            if let Err(reason) = verifier.check_without_key(event) {
                return (
                    Err((event.seq, reason)),
                    verifier.last_seq(),
                    verifier.redacted(),
                );
            }
        }
        (Ok(()), verifier.last_seq(), verifier.redacted())
    }

    /// Erases the payload of `events[i]` as the redaction does: the text
    /// becomes `null`, the hash and signature stay.
    fn redact(events: &mut [Event], i: usize) {
        events[i].redacted = true;
        events[i].payload = RawValue::from_string("null".into()).unwrap();
    }

    /// Redacted events in several windows and threads are all counted,
    /// once each, and a break after them keeps the count of those before.
    #[test]
    fn windows_count_redacted_events_across_windows() {
        let keyring = Keyring::from_secret(b"window".to_vec());
        let mut events = chain(1000, &keyring);
        let erased = [0, 1, 63, 64, 299, 300, 301, 640, 999];
        for i in erased {
            redact(&mut events, i);
        }
        let all = (Ok(()), 1000, erased.len() as u64);
        assert_eq!(one_by_one(&events, &keyring), all);
        assert_eq!(windowed(&events, &keyring), all);
        // A redacted event still showing a payload breaks; the count is of
        // the redacted events accepted before it.
        events[700].redacted = true;
        let want = one_by_one(&events, &keyring);
        assert_eq!(
            want,
            (Err((701, BrokenReason::PayloadNotCanonical)), 700, 8)
        );
        assert_eq!(windowed(&events, &keyring), want);
    }

    /// Each kind of break, early, late and at a window's edge: the windowed
    /// walk reports what the walk one event at a time reports.
    #[test]
    fn windows_report_what_one_by_one_reports() {
        let keyring = Keyring::from_secret(b"window".to_vec());
        let good = chain(1000, &keyring);
        assert_eq!(windowed(&good, &keyring), (Ok(()), 1000, 0));
        type Tamper = fn(&mut Vec<Event>, usize);
        let tampers: [(&str, Tamper); 6] = [
            ("payload hash", |c, i| c[i].payload_hash[0] ^= 1),
            ("payload text", |c, i| {
                c[i].payload = RawValue::from_string("{ \"seq\": 1 }".into()).unwrap()
            }),
            ("signature", |c, i| c[i].signature[0] ^= 1),
            ("prev hash", |c, i| c[i].prev_hash = Some([9; 32])),
            ("removed", |c, i| {
                c.remove(i);
            }),
            ("unknown key", |c, i| c[i].key_id = "ffffffff".into()),
        ];
        for (name, tamper) in tampers {
            for at in [0, 1, 299, 300, 301, 777, 998] {
                let mut events = good.clone();
                tamper(&mut events, at);
                let want = one_by_one(&events, &keyring);
                assert!(want.0.is_err(), "{name} at {at} breaks the chain");
                assert_eq!(windowed(&events, &keyring), want, "{name} at {at}");
                assert_eq!(prechecked(&events, Some(&keyring)), want, "{name} at {at}");
                assert_eq!(
                    prechecked(&events, None),
                    one_by_one_without_key(&events),
                    "{name} at {at}, without the key"
                );
            }
        }
    }
}
