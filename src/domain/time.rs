//! How recwatch writes a time (in the database, the payload and the logs alike), and the
//! duration arithmetic the poller's back-off and the delivery worker's retries share.

use chrono::{DateTime, SecondsFormat, Utc};
use std::time::Duration;

/// RFC 3339 in UTC with milliseconds, the format the API itself uses. Text in this form sorts
/// in time order, which the database's range queries rely on.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
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
}
