//! How recwatch writes a time (in the database, the payload and the logs alike), the one
//! place a stored or received RFC 3339 text is read ([`Timestamp::parse`]), and the duration
//! arithmetic the poller's back-off and the delivery worker's retries share.

use chrono::{DateTime, SecondsFormat, Utc};
use std::fmt;
use std::time::Duration;

/// RFC 3339 in UTC with milliseconds, the format the API itself uses. Text in this form sorts
/// in time order, which the database's range queries rely on.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An RFC 3339 time with any offset, in UTC and at full precision, or chrono's reason why not:
/// what an operator typed (`silence add --until`, the API's `until`), whose refusal quotes the
/// reason. Every other reader goes through [`Timestamp::parse`], which comes here.
pub fn read_rfc3339(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc))
}

/// A moment as recwatch keeps it: UTC, to the millisecond (what [`timestamp`] writes, so
/// nothing stored is lost), eight bytes. Every row's time is one of these, read from its
/// text once at the store's edge (`store::codec`) and written back in exactly the text
/// [`timestamp`] makes (`Display`, `Serialize`): the stored form and every output are the
/// same as when rows carried the text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A text that is not an RFC 3339 time (or one outside chrono's range), named in the error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an RFC 3339 time")]
pub struct NotATime(pub String);

impl Timestamp {
    /// Now, by the system clock.
    pub fn now() -> Timestamp {
        Timestamp::from(Utc::now())
    }

    /// Milliseconds since the Unix epoch; `None` outside the range a `DateTime` can hold.
    pub fn from_millis(ms: i64) -> Option<Timestamp> {
        DateTime::<Utc>::from_timestamp_millis(ms).map(|_| Timestamp(ms))
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(self.0).expect("made from a DateTime in range")
    }

    /// Reads an RFC 3339 time with any offset, to the millisecond (finer digits are cut, as
    /// [`timestamp`] cuts them). The one RFC 3339 reader of the daemon: rows, payloads read
    /// back, the command line and the HTTP API come through here. recwatch's own form
    /// (`2026-01-01T00:00:00.000Z`, every stored time) is read without chrono's general
    /// parser: a status page or a watch list reads thousands.
    pub fn parse(text: &str) -> Result<Timestamp, NotATime> {
        if let Some(ms) = own_form(text.as_bytes()) {
            return Ok(Timestamp(ms));
        }
        read_rfc3339(text)
            .map(Timestamp::from)
            .map_err(|_| NotATime(text.to_string()))
    }
}

impl From<DateTime<Utc>> for Timestamp {
    /// Cut to the millisecond, as [`timestamp`] writes it.
    fn from(t: DateTime<Utc>) -> Timestamp {
        Timestamp(t.timestamp_millis())
    }
}

impl From<Timestamp> for DateTime<Utc> {
    fn from(t: Timestamp) -> DateTime<Utc> {
        t.to_datetime()
    }
}

impl std::str::FromStr for Timestamp {
    type Err = NotATime;
    fn from_str(s: &str) -> Result<Timestamp, NotATime> {
        Timestamp::parse(s)
    }
}

impl fmt::Display for Timestamp {
    /// [`timestamp`]'s text, byte for byte (a table test holds the two together).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match own_text(self.0) {
            Some(b) => f.write_str(std::str::from_utf8(&b).expect("ASCII digits")),
            None => f.write_str(&timestamp(self.to_datetime())),
        }
    }
}

// A time in a log line or an assertion's message reads as its text, not as a number.
impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (`civil_from_days`, the inverse of the above).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` read directly; `None` for any other text (chrono reads it).
fn own_form(b: &[u8]) -> Option<i64> {
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
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, s, ms) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    // A leap second (`:60`) and every impossible date go to chrono, which knows what to do.
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * MS_PER_DAY + ((h * 60 + mi) * 60 + s) * 1000 + ms)
}

/// [`timestamp`]'s text written directly, for years 0000 to 9999 (`None` outside: chrono
/// writes those).
fn own_text(ms: i64) -> Option<[u8; 24]> {
    let (y, mo, d) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    if !(0..=9999).contains(&y) {
        return None;
    }
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, mo);
    put(8, 2, d);
    put(11, 2, in_day / 3_600_000);
    put(14, 2, in_day / 60_000 % 60);
    put(17, 2, in_day / 1000 % 60);
    put(20, 3, in_day % 1000);
    Some(b)
}

/// `d * f`, saturating at `Duration::MAX` instead of panicking (an absurd interval or
/// back-off from the config, jittered, must not bring the daemon down).
pub fn mul_saturating(d: Duration, f: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * f).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Config values that would overflow a `Duration` saturate instead.
    #[test]
    fn mul_saturating_table() {
        let mul = [
            (
                "small",
                Duration::from_secs(10),
                1.2,
                Duration::from_secs(12),
            ),
            ("Duration::MAX * 1.2", Duration::MAX, 1.2, Duration::MAX),
            (
                "times infinity",
                Duration::from_secs(1),
                f64::INFINITY,
                Duration::MAX,
            ),
            ("times NaN", Duration::from_secs(1), f64::NAN, Duration::MAX),
        ];
        for (name, d, f, want) in mul {
            assert_eq!(mul_saturating(d, f), want, "{name}");
        }
    }

    #[test]
    fn timestamp_table() {
        let cases = [
            (
                "whole second gets milliseconds",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00.000Z",
            ),
            (
                "microseconds are cut to milliseconds",
                "2026-01-01T00:00:00.123456Z",
                "2026-01-01T00:00:00.123Z",
            ),
            (
                "an offset becomes UTC",
                "2026-01-01T08:00:00+08:00",
                "2026-01-01T00:00:00.000Z",
            ),
        ];
        for (name, input, want) in cases {
            let t: DateTime<Utc> = input.parse().unwrap();
            assert_eq!(timestamp(t), want, "{name}");
        }
    }

    /// `Timestamp`'s text is `timestamp`'s, and its reader gives back what chrono's does, for
    /// times spread over the years 0000 to 9999 (a fixed-seed LCG, so a failure repeats).
    #[test]
    fn own_form_agrees_with_chrono() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let lo = "0000-01-01T00:00:00Z"
            .parse::<DateTime<Utc>>()
            .unwrap()
            .timestamp_millis();
        let hi = "9999-12-31T23:59:59.999Z"
            .parse::<DateTime<Utc>>()
            .unwrap()
            .timestamp_millis();
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let ms = lo + (x >> 11) as i64 % (hi - lo + 1);
            let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
            let text = timestamp(t);
            let ts = Timestamp::from(t);
            assert_eq!(ts.to_string(), text, "{ms}");
            assert_eq!(Timestamp::parse(&text), Ok(ts), "{text}");
            assert_eq!(ts.to_datetime(), t);
        }
    }

    #[test]
    fn parse_table() {
        let ms = |s: &str| s.parse::<DateTime<Utc>>().unwrap().timestamp_millis();
        let cases = [
            (
                "own form",
                "2026-03-01T12:34:56.789Z",
                Some(ms("2026-03-01T12:34:56.789Z")),
            ),
            (
                "no fraction",
                "2026-01-01T00:00:00Z",
                Some(ms("2026-01-01T00:00:00Z")),
            ),
            (
                "micros cut",
                "2026-01-01T00:00:00.123999Z",
                Some(ms("2026-01-01T00:00:00.123Z")),
            ),
            (
                "an offset",
                "2026-01-01T08:00:00+08:00",
                Some(ms("2026-01-01T00:00:00Z")),
            ),
            (
                "leap day",
                "2024-02-29T00:00:00.000Z",
                Some(ms("2024-02-29T00:00:00Z")),
            ),
            ("not a leap day", "2026-02-29T00:00:00.000Z", None),
            ("hour 24", "2026-01-01T24:00:00.000Z", None),
            ("month 13", "2026-13-01T00:00:00.000Z", None),
            ("a sign in a field", "2026-+1-01T00:00:00.000Z", None),
            ("empty", "", None),
            ("words", "yesterday", None),
        ];
        for (name, text, want) in cases {
            let got = Timestamp::parse(text).ok().map(Timestamp::millis);
            assert_eq!(got, want, "{name}");
        }
        assert_eq!(
            Timestamp::parse("soon").unwrap_err().to_string(),
            "`soon` is not an RFC 3339 time"
        );
    }

    /// Serialized as its text (the payload, `--json`), read back from any RFC 3339 text.
    #[test]
    fn serde_is_the_text() {
        let t = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-01-01T00:00:00.000Z\""
        );
        let back: Timestamp = serde_json::from_str("\"2026-01-01T08:00:00+08:00\"").unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<Timestamp>("\"later\"").is_err());
        assert_eq!(format!("{t:?}"), "2026-01-01T00:00:00.000Z");
    }
}
