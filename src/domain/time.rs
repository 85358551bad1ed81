//! How recwatch writes a time: in the database, the payload and the logs alike.

use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339 in UTC with milliseconds, the format the API itself uses. Text in this form sorts
/// in time order, which the database's range queries rely on.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

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
