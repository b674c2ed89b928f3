//! `verify_plan` (stored bytes read in place by `EventRecordView`,
//! checks made ahead on every core) against the owned walk it replaced:
//! `decode_event` and `event_from_record` on each record in key order, then
//! `ChainVerifier::check`, then the head record. An attacker who can write
//! the database file but lacks the HMAC key edits one record's bytes (or
//! moves, drops or re-encodes it); both walks must give the same report,
//! or the same error, whatever the edit. `PROPTEST_CASES=N` raises the count.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redb::ReadableTable;
use uuid::Uuid;

use super::records::{EventRecord, REDACTED_EVENT_VERSION};
use super::{AppendRequest, EVENTS, Store, StoreError, decode_event, event_from_record, event_key};
use crate::chain::{CanonicalPayload, ChainReport, ChainVerifier};
use crate::keys::Keyring;

/// Events in the plan: three ranges of `plan_verify`'s 256 seqs, the last
/// one short.
const EVENTS_IN_PLAN: u64 = 600;

/// Seqs at the ends of the walk and of its ranges.
const EDGES: &[u64] = &[1, 2, 255, 256, 257, 511, 512, 513, 599, 600];

/// Seqs outside the plan's that a record is copied to.
const OUTSIDE: &[u64] = &[0, EVENTS_IN_PLAN + 1, 1 << 60];

/// The walk `verify_plan` replaced, on owned events.
fn owned_walk(store: &Store, plan: &Uuid, keyring: &Keyring) -> Result<ChainReport, StoreError> {
    let txn = store.db.begin_read()?;
    let events = txn.open_table(EVENTS)?;
    let mut verifier = ChainVerifier::default();
    for entry in events.range::<&[u8; 24]>(&event_key(plan, 0)..=&event_key(plan, u64::MAX))? {
        let (key, value) = entry?;
        let event = event_from_record(key.value(), decode_event(value.value())?)?;
        if let Err(reason) = verifier.check(&event, keyring) {
            return Ok(ChainReport {
                verified: verifier.last_seq(),
                broken: Some((event.seq, reason)),
                head_signature: verifier.last_signature(),
                redacted: verifier.redacted(),
            });
        }
    }
    Ok(ChainReport {
        verified: verifier.last_seq(),
        broken: super::plan_verify::head_break(&txn, plan, &verifier)?,
        head_signature: verifier.last_signature(),
        redacted: verifier.redacted(),
    })
}

/// One edit of the stored records by an attacker without the key.
#[derive(Debug, Clone)]
enum Edit {
    /// XOR a byte of the record (index taken modulo its length).
    Flip(usize, u8),
    /// Cut the record short.
    Truncate(usize),
    /// Insert a byte.
    Insert(usize, u8),
    /// Bytes after the record's end.
    Trailing(Vec<u8>),
    /// Another version byte.
    Version(u8),
    /// The record re-encoded as version 2 with this payload (`None`:
    /// erased).
    Payload(Option<String>),
    /// The record copied over another seq, or to one outside the plan's
    /// (0, the next, one far past the head: [`OUTSIDE`]).
    CopyTo(u64),
    /// The record removed.
    Remove,
}

fn payload_texts(original: String) -> impl Strategy<Value = Option<String>> {
    let edited = original.clone();
    prop_oneof![
        Just(None),
        Just(Some("null".to_string())),
        Just(Some(format!(" {original}"))),
        Just(Some(format!("{original}\n"))),
        Just(Some(format!("{original}x"))),
        Just(Some(original.replacen(':', " : ", 1))),
        Just(Some(original.replacen('{', "{\"a\":1,", 1))),
        // A member name's opening quote changed: not JSON.
        Just(Some(original.replacen("\"pad", "#pad", 1))),
        Just(Some(original.replacen("{\"", "{", 1))),
        Just(Some(format!("{}{}", "[".repeat(200), "]".repeat(200)))),
        Just(Some(r#"{"s":"\ud800"}"#.to_string())),
        Just(Some(r#"{"s":"a\/b"}"#.to_string())),
        Just(Some("\u{feff}{}".to_string())),
        Just(Some(String::new())),
        (0..edited.len().max(1), any::<char>()).prop_map(move |(at, c)| {
            let mut text = edited.clone();
            let at = (0..=at)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text.insert(at, c);
            Some(text)
        }),
    ]
}

fn edits() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..=u8::MAX).prop_map(|(at, x)| Edit::Flip(at, x)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Insert(at, b)),
        proptest::collection::vec(any::<u8>(), 1..8).prop_map(Edit::Trailing),
        any::<u8>().prop_map(Edit::Version),
        payload_texts(r#"{"n":7,"pad":"xyz"}"#.to_string()).prop_map(Edit::Payload),
        prop::sample::select([EDGES, OUTSIDE].concat()).prop_map(Edit::CopyTo),
        Just(Edit::Remove),
    ]
}

/// Applies `edit` to the record of `seq`.
fn apply(store: &Store, plan: &Uuid, seq: u64, edit: &Edit) {
    let txn = store.db.begin_write().unwrap();
    {
        let mut events = txn.open_table(EVENTS).unwrap();
        let original = events
            .get(&event_key(plan, seq))
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        let mut bytes = original.clone();
        let index = |at: usize, len: usize| at % len.max(1);
        match edit {
            Edit::Flip(at, x) => {
                let at = index(*at, bytes.len());
                bytes[at] ^= x;
            }
            Edit::Truncate(at) => bytes.truncate(index(*at, bytes.len())),
            Edit::Insert(at, b) => bytes.insert(index(*at, bytes.len() + 1), *b),
            Edit::Trailing(more) => bytes.extend(more),
            Edit::Version(v) => bytes[0] = *v,
            Edit::Payload(text) => {
                let mut record: EventRecord = decode_event(&original).unwrap();
                record.payload = text.clone();
                bytes = vec![REDACTED_EVENT_VERSION];
                bytes.extend(postcard::to_stdvec(&record).unwrap());
            }
            Edit::CopyTo(to) => {
                events
                    .insert(&event_key(plan, *to), original.as_slice())
                    .unwrap();
            }
            Edit::Remove => {
                events.remove(&event_key(plan, seq)).unwrap();
            }
        }
        if !matches!(edit, Edit::CopyTo(_) | Edit::Remove) {
            events
                .insert(&event_key(plan, seq), bytes.as_slice())
                .unwrap();
        }
    }
    txn.commit().unwrap();
}

/// Puts every record back as it was, and removes any copied outside the
/// plan's seqs.
fn restore(store: &Store, plan: &Uuid, originals: &[Vec<u8>]) {
    let txn = store.db.begin_write().unwrap();
    {
        let mut events = txn.open_table(EVENTS).unwrap();
        for &seq in OUTSIDE {
            events.remove(&event_key(plan, seq)).unwrap();
        }
        for (at, bytes) in originals.iter().enumerate() {
            events
                .insert(&event_key(plan, at as u64 + 1), bytes.as_slice())
                .unwrap();
        }
    }
    txn.commit().unwrap();
}

/// A store holding one plan of [`EVENTS_IN_PLAN`] events, with its
/// records as first written.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    writer: super::Writer,
    keyring: std::sync::Arc<Keyring>,
    plan: Uuid,
    originals: Vec<Vec<u8>>,
}

impl Fixture {
    fn new() -> Fixture {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let keyring = std::sync::Arc::new(Keyring::from_secret(b"differential".to_vec()));
        let (store, writer) = Store::open(
            &dir.path().join("j.redb"),
            keyring.clone(),
            crate::fanout::fanout(),
        )
        .unwrap();
        let plan = Uuid::from_u128(7);
        runtime.block_on(async {
            for n in 0..EVENTS_IN_PLAN {
                let mut request = AppendRequest::empty(plan);
                request.actor = (n % 3 == 0).then(|| format!("actor-{n}"));
                request.payload =
                    CanonicalPayload::new(&serde_json::json!({ "n": n, "pad": "xyz" }));
                store.append(request).await.unwrap();
            }
        });
        let originals = {
            let txn = store.db.begin_read().unwrap();
            let events = txn.open_table(EVENTS).unwrap();
            (1..=EVENTS_IN_PLAN)
                .map(|seq| {
                    let value = events.get(&event_key(&plan, seq)).unwrap().unwrap();
                    value.value().to_vec()
                })
                .collect()
        };
        let fixture = Fixture {
            _dir: dir,
            store,
            writer,
            keyring,
            plan,
            originals,
        };
        let (fast, owned) = fixture.both();
        assert!(fast.as_ref().is_ok_and(ChainReport::is_valid), "{fast:?}");
        assert_eq!(fast, owned);
        fixture
    }

    /// Both walks' answers.
    fn both(&self) -> (Result<ChainReport, String>, Result<ChainReport, String>) {
        let fast = self.store.verify_plan(&self.plan, &self.keyring);
        let owned = owned_walk(&self.store, &self.plan, &self.keyring);
        (
            fast.map_err(|e| e.to_string()),
            owned.map_err(|e| e.to_string()),
        )
    }

    /// Both walks' answers with `edit` made to the record of `seq`; the
    /// records are put back after.
    fn edited(
        &self,
        seq: u64,
        edit: &Edit,
    ) -> (Result<ChainReport, String>, Result<ChainReport, String>) {
        apply(&self.store, &self.plan, seq, edit);
        let answers = self.both();
        restore(&self.store, &self.plan, &self.originals);
        answers
    }

    fn close(self) {
        let (fast, owned) = self.both();
        assert!(fast.as_ref().is_ok_and(ChainReport::is_valid), "{fast:?}");
        assert_eq!(fast, owned);
        drop(self.store);
        self.writer.shutdown();
    }
}

/// Payload texts the borrowed walk must judge as building the event
/// judges them, at the ends of the walk and of a range.
#[test]
fn edited_payload_texts_get_the_owned_walks_report() {
    let fixture = Fixture::new();
    let original = r#"{"n":7,"pad":"xyz"}"#;
    let texts = [
        None,
        Some("null".to_string()),
        Some(format!(" {original}")),
        Some(format!("{original}x")),
        Some(original.replacen(':', " : ", 1)),
        // A member name without its opening quote: not JSON.
        Some(original.replacen("\"pad", "#pad", 1)),
        Some(original.replacen("{\"", "{", 1)),
        Some(format!("{}{}", "[".repeat(200), "]".repeat(200))),
        Some(r#"{"s":"\ud800"}"#.to_string()),
    ];
    for seq in [1, 256, EVENTS_IN_PLAN] {
        for text in &texts {
            let edit = Edit::Payload(text.clone());
            let (fast, owned) = fixture.edited(seq, &edit);
            assert!(!fast.as_ref().is_ok_and(ChainReport::is_valid) || text.is_none());
            assert_eq!(fast, owned, "{edit:?} at {seq}");
        }
    }
    fixture.close();
}

/// Records copied to seqs inside and outside the plan's, and removed, at
/// the ends of the walk and of its ranges.
#[test]
fn copied_and_removed_records_get_the_owned_walks_report() {
    let fixture = Fixture::new();
    for seq in [1, 256, 257, EVENTS_IN_PLAN] {
        let mut edits = vec![Edit::Remove, Edit::Trailing(vec![0])];
        edits.extend([EDGES, OUTSIDE].concat().into_iter().map(Edit::CopyTo));
        for edit in edits {
            let (fast, owned) = fixture.edited(seq, &edit);
            // Both decoders stop at the record's end; a copy over itself
            // changes nothing. Every other edit breaks the chain.
            let unchanged = match edit {
                Edit::Trailing(_) => true,
                Edit::CopyTo(to) => to == seq,
                _ => false,
            };
            assert_eq!(
                fast.as_ref().is_ok_and(ChainReport::is_valid),
                unchanged,
                "{edit:?} at {seq}: {fast:?}"
            );
            assert_eq!(fast, owned, "{edit:?} at {seq}");
        }
    }
    fixture.close();
}

/// Random edits of the bytes of one record.
#[test]
fn edited_records_get_the_owned_walks_report() {
    let fixture = Fixture::new();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config::with_cases(cases));
    let outcomes = std::cell::RefCell::new(std::collections::BTreeSet::new());
    runner
        .run(
            &(prop::sample::select(EDGES.to_vec()), edits()),
            |(seq, edit)| {
                let (fast, owned) = fixture.edited(seq, &edit);
                outcomes.borrow_mut().insert(match &fast {
                    Ok(r) => format!("{:?}", r.broken.map(|(_, reason)| reason)),
                    Err(e) => e.split(':').next().unwrap_or_default().to_string(),
                });
                prop_assert_eq!(fast, owned, "{:?} at {}", edit, seq);
                Ok(())
            },
        )
        .unwrap();
    // The edits reach every kind of verdict, not only decoding errors.
    let outcomes = outcomes.into_inner();
    assert!(outcomes.len() >= 5, "{outcomes:?}");
    fixture.close();
}
