//! The cron schedule (`poll.schedule`): parsed once, the way tokio-cron-scheduler reads it.
//!
//! croner is the one cron library: tokio-cron-scheduler parses with it too. The scheduler
//! takes the expression as text ([`Schedule::as_str`]); the budget asks the parsed
//! [`croner::Cron`] how often it fires ([`Schedule::min_period`]).

use chrono::Timelike;
use std::fmt;
use std::time::Duration;

/// A cron expression with its seconds field, known to parse.
#[derive(Clone)]
pub struct Schedule {
    /// As written: what `check` shows and what tokio-cron-scheduler is given (croner keeps
    /// only an upper-cased, rewritten form).
    text: String,
    cron: croner::Cron,
}

impl Schedule {
    /// Parses `expr` with the options tokio-cron-scheduler uses, so what passes here runs
    /// there. The error is the message for `poll.schedule`.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let fields = expr.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(format!(
                "{expr:?} has {fields} fields; recwatch schedules need 6 or 7 (seconds first), e.g. \"*/30 * * * * *\""
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(expr)
            .map_err(|e| format!("{expr:?} is not a valid cron schedule: {e}"))?;
        Ok(Schedule {
            text: expr.to_string(),
            cron,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The shortest gap between two runs, looked at over the next few runs from now; at
    /// least a second (the scheduler's resolution).
    pub fn min_period(&self) -> Duration {
        // One occurrence after another: croner 3.0's iterator steps over every other
        // second ("* * * * * *" came out as 2 s, halving the demand the budget saw).
        let mut at = chrono::Utc::now()
            .with_nanosecond(0)
            .unwrap_or_else(chrono::Utc::now);
        let mut times = Vec::with_capacity(8);
        while times.len() < 8 {
            let Ok(next) = self.cron.find_next_occurrence(&at, false) else {
                break;
            };
            times.push(next);
            at = next;
        }
        times
            .windows(2)
            .filter_map(|w| (w[1] - w[0]).to_std().ok())
            .min()
            .unwrap_or(Duration::from_secs(60))
            .max(Duration::from_secs(1))
    }
}

impl Schedule {
    /// The number of fields as written (6, or 7 with a year).
    pub fn fields(&self) -> usize {
        self.text.split_whitespace().count()
    }

    /// The first run strictly after `t` (whole seconds), in `t`'s time zone; None if there is
    /// none within croner's search (a year).
    pub fn next_after<Tz: chrono::TimeZone>(
        &self,
        t: &chrono::DateTime<Tz>,
    ) -> Option<chrono::DateTime<Tz>> {
        let mut from = t.clone();
        for _ in 0..4 {
            let r = self.cron.find_next_occurrence(&from, false).ok()?;
            if r > *t {
                return Some(r);
            }
            // Asked from inside a DST fold, croner gives a local time that occurs twice as
            // its first instant, which lies before `t`. A fixed-time schedule ran then and
            // does not run again at the second instant (croner's rule, and cron's); an
            // interval schedule does run at the second.
            let second = r
                .timezone()
                .from_local_datetime(&r.naive_local())
                .latest()?;
            let fixed = self.cron.determine_job_type() == croner::JobType::FixedTime;
            if second > *t && !fixed {
                return Some(second);
            }
            from = if second > from {
                second
            } else {
                from + chrono::Duration::minutes(1)
            };
        }
        None
    }

    /// The last run at or before `t`, as croner finds it going backward (see
    /// `MaintenanceWindow::active_until` for why that is checked going forward).
    pub fn last_at_or_before<Tz: chrono::TimeZone>(
        &self,
        t: &chrono::DateTime<Tz>,
    ) -> Option<chrono::DateTime<Tz>> {
        self.cron.find_previous_occurrence(t, true).ok()
    }
}

/// Two schedules are the same when written the same: a reload that changes the text
/// restarts the scheduler.
impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.text == other.text
    }
}

impl Eq for Schedule {}

/// As the quoted text, the way the operator wrote it (log lines and `check` show it so).
impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (case, expression, the shortest gap or the phrase of the error)
    #[test]
    fn schedules_table() {
        let ok: &[(&str, &str, u64)] = &[
            ("every second", "* * * * * *", 1),
            ("every 30 s", "*/30 * * * * *", 30),
            ("every 20 s on weekdays", "*/20 * * * * Mon-Fri", 20),
            ("once a minute, with a year field", "0 * * * * * *", 60),
        ];
        for (name, expr, secs) in ok {
            let s = Schedule::parse(expr).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.as_str(), *expr, "{name}");
            assert_eq!(format!("{s:?}"), format!("{expr:?}"), "{name}");
            assert_eq!(s.min_period(), Duration::from_secs(*secs), "{name}");
        }
        let bad: &[(&str, &str, &str)] = &[
            ("five fields: no seconds", "*/5 * * * *", "has 5 fields"),
            ("eight fields", "* * * * * * * *", "has 8 fields"),
            (
                "second out of range",
                "99 * * * * *",
                "not a valid cron schedule",
            ),
        ];
        for (name, expr, want) in bad {
            let e = Schedule::parse(expr).expect_err(name);
            assert!(e.contains(want), "{name}: {e}");
        }
    }

    /// What passes here, tokio-cron-scheduler accepts.
    #[test]
    fn the_scheduler_takes_what_passes() {
        for expr in ["*/20 * * * * Mon-Fri", "0 0 3 * * * 2030"] {
            let s = Schedule::parse(expr).unwrap();
            tokio_cron_scheduler::Job::new_async(s.as_str(), |_, _| Box::pin(async {}))
                .unwrap_or_else(|e| panic!("{expr}: {e}"));
        }
    }
}
