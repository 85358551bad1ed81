//! Durations as an operator writes them: parsed with humantime, printed in their largest
//! whole unit.

use std::time::Duration;

/// Formats a duration in its largest whole unit ("90d", "30s", "1500ms"), the way an operator
/// writes it in the config file.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    if ms >= 10_000 {
        return format!("{}s", (ms as f64 / 1000.0).round());
    }
    format!("{ms}ms")
}

/// Parses a humantime duration ("30s", "1h 30m", "90d").
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"90d\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_the_way_they_are_written() {
        let cases = [
            (90 * 86_400_000, "90d"),
            (30_000, "30s"),
            (1_500, "1500ms"),
            (4 * 3_600_000, "4h"),
            (300_000, "5m"),
            (61_000, "61s"),
            (12_345, "12s"),
        ];
        for (ms, want) in cases {
            assert_eq!(format_duration(Duration::from_millis(ms)), want);
        }
    }
}
