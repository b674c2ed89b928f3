//! The event: the one record the journal keeps, and the small value types it
//! is made of (timestamps, plan ids).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// A stored, signed journal event, exactly as clients see it.
///
/// `payload` holds the RFC 8785 canonical JSON text of the payload, which is
/// what `payload_hash` covers, so serving an event never re-encodes it; once
/// the payload was erased it is `null` and `redacted` is true.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: Uuid,
    pub plan_id: Uuid,
    pub seq: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub actor: Option<String>,
    pub payload: Box<RawValue>,
    #[serde(with = "logbook_base::hex::hash")]
    pub payload_hash: [u8; 32],
    #[serde(with = "logbook_base::hex::opt_hash")]
    pub prev_hash: Option<[u8; 32]>,
    #[serde(with = "logbook_base::hex::hash")]
    pub signature: [u8; 32],
    pub key_id: String,
    pub created_at: Timestamp,
    /// Store-wide position (the `id:` of the all-plans SSE stream). It is a
    /// property of this store, not of the event, so it is not signed and not
    /// part of the wire form.
    #[serde(skip)]
    pub position: u64,
    /// The payload was erased (`payload` is then JSON `null`); the event
    /// keeps `payload_hash`, so its signature and leaf still verify. Shown
    /// only when true, so the wire form of other events is unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
}

/// Milliseconds since the Unix epoch, shown as RFC 3339 in UTC with exactly
/// three fractional digits and a `Z` (`2026-11-23T18:46:42.123Z`). That text
/// is what the signature covers, so it has exactly one spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses exactly the format [`Timestamp`] prints, and nothing looser.
    pub fn parse(text: &str) -> Option<Timestamp> {
        let b = text.as_bytes();
        if b.len() != 24
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'.'
            || b[23] != b'Z'
        {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let s = &text[range];
            s.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| s.parse().ok())?
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second, milli) =
            (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        Some(Timestamp(
            ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + milli,
        ))
    }
}

impl Timestamp {
    /// Appends the text [`Timestamp`]'s `Display` writes, with the digits
    /// placed directly (verification writes two per event; `fmt` was
    /// about 5% of an offline check). Years outside 0..=9999 go through
    /// `Display`, the reference.
    pub fn push_to(self, out: &mut String) {
        let days = self.0.div_euclid(86_400_000);
        let ms_of_day = self.0.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            use std::fmt::Write;
            write!(out, "{self}").expect("writing to a String");
            return;
        }
        let digits = |n: i64, width: usize, buf: &mut [u8]| {
            let mut n = n;
            for slot in buf[..width].iter_mut().rev() {
                *slot = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        let mut text = *b"0000-00-00T00:00:00.000Z";
        digits(year, 4, &mut text[0..]);
        digits(month, 2, &mut text[5..]);
        digits(day, 2, &mut text[8..]);
        digits(ms_of_day / 3_600_000, 2, &mut text[11..]);
        digits(ms_of_day / 60_000 % 60, 2, &mut text[14..]);
        digits(ms_of_day / 1000 % 60, 2, &mut text[17..]);
        digits(ms_of_day % 1000, 3, &mut text[20..]);
        out.push_str(std::str::from_utf8(&text).expect("ASCII digits"));
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days = self.0.div_euclid(86_400_000);
        let ms_of_day = self.0.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        let (h, m, s, ms) = (
            ms_of_day / 3_600_000,
            ms_of_day / 60_000 % 60,
            ms_of_day / 1000 % 60,
            ms_of_day % 1000,
        );
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z"
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Read from the lent string, not a copy: one per event read.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Timestamp, E> {
                Timestamp::parse(text).ok_or_else(|| {
                    E::custom("expected an RFC 3339 UTC time like 2026-01-02T03:04:05.678Z")
                })
            }
        }
        d.deserialize_str(Text)
    }
}

// Howard Hinnant's algorithms for the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses a plan id: a UUID in its 36-character hyphenated form (either
/// case). Other spellings that `uuid` would accept are refused, so a plan has
/// exactly one name in URLs.
pub fn parse_plan_id(text: &str) -> Option<Uuid> {
    if text.len() != 36 {
        return None;
    }
    Uuid::try_parse(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_formats_and_parses() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        let t = Timestamp(1_795_459_602_123);
        assert_eq!(t.to_string(), "2026-11-23T18:46:42.123Z");
        assert_eq!(Timestamp::parse(&t.to_string()), Some(t));
        assert_eq!(
            Timestamp::parse("2024-02-29T23:59:59.999Z"),
            Some(Timestamp(1_709_251_199_999))
        );
        for bad in [
            "2023-02-29T00:00:00.000Z",
            "2026-11-23T18:46:42Z",
            "2026-11-23T18:46:42.123+00:00",
            "2026-13-01T00:00:00.000Z",
            "2026-11-23t18:46:42.123Z",
            "+026-11-23T18:46:42.123Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn push_to_writes_what_display_writes() {
        let mut millis = -62_167_219_200_000 - 86_400_000 * 400; // before year 0
        while millis < 253_402_300_799_999 + 86_400_000 * 400 {
            let t = Timestamp(millis);
            let mut out = String::from("kept:");
            t.push_to(&mut out);
            assert_eq!(out, format!("kept:{t}"), "{millis}");
            millis += 86_399_999 * 37 + 1234;
        }
        for t in [Timestamp(0), Timestamp(-1), Timestamp(1_700_000_000_123)] {
            let mut out = String::new();
            t.push_to(&mut out);
            assert_eq!(out, t.to_string());
        }
    }

    #[test]
    fn timestamp_round_trips_over_a_wide_range() {
        let mut ms = -62_135_596_800_000i64; // 0001-01-01
        while ms < 253_402_300_799_000 {
            // 9999-12-31
            let t = Timestamp(ms);
            assert_eq!(Timestamp::parse(&t.to_string()), Some(t));
            ms += 86_400_000 * 37 + 3_723_456;
        }
    }

    #[test]
    fn plan_ids_have_one_spelling() {
        let id = "0192f3a4-5b6c-7d8e-9f00-112233445566";
        assert!(parse_plan_id(id).is_some());
        assert!(parse_plan_id(&id.to_uppercase()).is_some());
        assert!(parse_plan_id("0192f3a45b6c7d8e9f00112233445566").is_none());
        assert!(parse_plan_id("not-a-uuid").is_none());
    }
}
