//! Log lines an outsider can cause, kept to a trickle (issue 22, item 4): a flood of forged
//! callbacks once wrote 3,077 WARN lines a second. The first occurrence is logged as it is;
//! the ones after it within [`SUMMARY_EVERY`] are only counted (the metrics count every one),
//! and then one line says how many there were and the last cause. [`LogSummary`] is the pure
//! decision (the clock is an argument, so it is tested on paused time); the caller writes the
//! line it is told to, at the level it chose.

use std::time::Duration;
use tokio::time::Instant;

/// At most one line per this long for one kind of event.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// What to log for an occurrence (or a [`LogSummary::flush`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Log this occurrence as it is: none was logged within the last [`SUMMARY_EVERY`].
    First,
    /// Log one line for `count` occurrences held back since the last line (this one included,
    /// when it came with a note), `last_cause` being the latest's.
    Summary { count: u64, last_cause: String },
}

/// One kind of event's line budget. Not a rate limiter for the work itself: only the logging.
#[derive(Debug)]
pub struct LogSummary {
    every: Duration,
    /// When the last line was written; `None` before the first.
    last_line: Option<Instant>,
    /// Occurrences since that line, not logged yet.
    held: u64,
    last_cause: String,
}

impl Default for LogSummary {
    fn default() -> LogSummary {
        LogSummary::new(SUMMARY_EVERY)
    }
}

impl LogSummary {
    pub fn new(every: Duration) -> LogSummary {
        LogSummary {
            every,
            last_line: None,
            held: 0,
            last_cause: String::new(),
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.last_line
            .is_none_or(|at| now.duration_since(at) >= self.every)
    }

    /// One occurrence with its cause: what to log now, if anything.
    pub fn note(&mut self, now: Instant, cause: &str) -> Option<Report> {
        if !self.due(now) {
            self.held += 1;
            cause.clone_into(&mut self.last_cause);
            return None;
        }
        self.last_line = Some(now);
        if self.held == 0 {
            return Some(Report::First);
        }
        let count = std::mem::take(&mut self.held) + 1;
        Some(Report::Summary {
            count,
            last_cause: cause.to_string(),
        })
    }

    /// The summary of what was held back, once it is due: called now and then (a burst that
    /// ends is summarised too, not only when the next one starts).
    pub fn flush(&mut self, now: Instant) -> Option<Report> {
        if self.held == 0 || !self.due(now) {
            return None;
        }
        self.last_line = Some(now);
        Some(Report::Summary {
            count: std::mem::take(&mut self.held),
            last_cause: std::mem::take(&mut self.last_cause),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(count: u64, cause: &str) -> Option<Report> {
        Some(Report::Summary {
            count,
            last_cause: cause.into(),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_is_logged_then_a_summary_at_most_every_ten_seconds() {
        let mut s = LogSummary::default();
        let t0 = Instant::now();
        let s_ = Duration::from_secs;
        // (name, seconds after t0, note (Some cause) or flush (None), expected report)
        let cases: [(&str, u64, Option<&str>, Option<Report>); 9] = [
            ("the first is logged", 0, Some("a"), Some(Report::First)),
            ("the next is held", 1, Some("b"), None),
            ("and the next", 9, Some("c"), None),
            ("a flush before ten seconds says nothing", 9, None, None),
            (
                "ten seconds on: a summary with this one",
                10,
                Some("d"),
                summary(3, "d"),
            ),
            ("held again", 11, Some("e"), None),
            (
                "a flush once due summarises the burst",
                20,
                None,
                summary(1, "e"),
            ),
            ("nothing held: a flush says nothing", 40, None, None),
            (
                "quiet for a while: the next is a first again",
                41,
                Some("f"),
                Some(Report::First),
            ),
        ];
        for (name, at, cause, want) in cases {
            let now = t0 + s_(at);
            let got = match cause {
                Some(c) => s.note(now, c),
                None => s.flush(now),
            };
            assert_eq!(got, want, "{name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_writes_one_line_per_window() {
        let mut s = LogSummary::default();
        let t0 = Instant::now();
        let mut lines = 0;
        // 3,000 a second for 20 s, as in the issue: 61,534 lines then.
        for i in 0..60_000u64 {
            let now = t0 + Duration::from_micros(i * 333);
            if s.note(now, "forged").is_some() {
                lines += 1;
            }
        }
        assert!(lines <= 3, "{lines} lines for a 20 s flood");
    }
}
