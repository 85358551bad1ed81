//! The cron schedule (`poll.schedule`): checked the way tokio-cron-scheduler reads it.

use std::time::Duration;

/// Checks a cron expression the way tokio-cron-scheduler will read it: seconds field required.
pub fn validate_cron(expr: &str) -> Result<(), String> {
    let fields = expr.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(format!(
            "{expr:?} has {fields} fields; recwatch schedules need 6 or 7 (seconds first), e.g. \"*/30 * * * * *\""
        ));
    }
    parse_cron(expr)
        .map(|_| ())
        .map_err(|e| format!("{expr:?} is not a valid cron schedule: {e}"))
}

/// Parses with the options tokio-cron-scheduler uses, so what passes here runs there.
fn parse_cron(expr: &str) -> Result<croner::Cron, croner::errors::CronError> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
}

/// The shortest gap between two runs of a cron schedule, looked at over the next few runs.
pub fn cron_min_period(schedule: Option<&str>) -> Duration {
    let Some(expr) = schedule else {
        return Duration::from_secs(1);
    };
    let Ok(cron) = parse_cron(expr) else {
        return Duration::from_secs(1);
    };
    let now = chrono::Utc::now();
    let times: Vec<_> = cron.iter_after(now).take(8).collect();
    times
        .windows(2)
        .filter_map(|w| (w[1] - w[0]).to_std().ok())
        .min()
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_secs(1))
}
