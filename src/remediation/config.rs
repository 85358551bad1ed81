//! `[remediate]`: re-creating a recording that died (issue 15), opt-in and bounded. The
//! section's switches, and the per-job (`[[jobs]] remediate`) and per-app (`[[apps]]
//! remediate`, for discovered jobs) overrides of `enabled`. What is done with them is decided
//! by `remediation::rules` (pure) and carried out by the worker (`remediation::Remediator`).

use crate::config::defaults;
use crate::config::{ConfigError, Table, check_range};
use crate::domain::JobKey;
use recwatch_rtc::model::StopReason;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct RemediateConfig {
    /// Off by default: a re-creation makes a billable job.
    pub enabled: bool,
    /// The stop reasons that trigger a re-creation (never TENANT_STOP: the tenant asked).
    pub on: Vec<StopReason>,
    /// Re-creations per lineage (a job and the jobs that replaced it) within `window`.
    pub max_restarts: u32,
    pub window: Duration,
    /// Say what would be done, do nothing.
    pub dry_run: bool,
    /// `[[jobs]] remediate = true|false`, overriding `enabled` for that job.
    pub jobs: BTreeMap<JobKey, bool>,
    /// `[[apps]] remediate = true|false`, overriding `enabled` for that app's other jobs
    /// (discovered or added at run time).
    pub apps: BTreeMap<String, bool>,
}

impl Default for RemediateConfig {
    fn default() -> RemediateConfig {
        RemediateConfig {
            enabled: defaults::REMEDIATE_ENABLED,
            on: vec![StopReason::InternalError],
            max_restarts: defaults::REMEDIATE_MAX_RESTARTS,
            window: defaults::REMEDIATE_WINDOW,
            dry_run: defaults::REMEDIATE_DRY_RUN,
            jobs: BTreeMap::new(),
            apps: BTreeMap::new(),
        }
    }
}

impl RemediateConfig {
    /// Whether remediation is on for `key`: the job's own override, else (for a job that
    /// replaced another) the override of the job its lineage started with, else its app's,
    /// else `enabled`.
    pub fn enabled_for(&self, key: &JobKey, lineage: &JobKey) -> bool {
        self.jobs
            .get(key)
            .or_else(|| self.jobs.get(lineage))
            .or_else(|| self.apps.get(&key.app_id))
            .copied()
            .unwrap_or(self.enabled)
    }
}

pub(crate) fn read_remediate(mut t: Table) -> Result<RemediateConfig, ConfigError> {
    let d = RemediateConfig::default();
    let enabled = t.boolean("enabled")?.unwrap_or(d.enabled);
    let on = match t.string_list("on")? {
        None => d.on,
        Some(list) => {
            let mut on = Vec::new();
            for s in list {
                let reason = parse_reason(&s).map_err(|m| t.err("on", m))?;
                if !on.contains(&reason) {
                    on.push(reason);
                }
            }
            on
        }
    };
    let max_restarts = match t.integer("max_restarts")? {
        None => d.max_restarts,
        Some(n) if n == 0 || n > defaults::MAX_REMEDIATE_RESTARTS as u64 => {
            return Err(t.err(
                "max_restarts",
                format!(
                    "{n} is out of range; use 1 to {} (set enabled = false to turn remediation off), e.g. 3",
                    defaults::MAX_REMEDIATE_RESTARTS
                ),
            ));
        }
        Some(n) => n as u32,
    };
    let window = t.duration("window")?.unwrap_or(d.window);
    check_range(
        &t,
        "window",
        window,
        defaults::MAX_REMEDIATE_WINDOW,
        "max_restarts are counted over it",
        "\"1h\"",
    )?;
    let dry_run = t.boolean("dry_run")?.unwrap_or(d.dry_run);
    t.finish()?;
    Ok(RemediateConfig {
        enabled,
        on,
        max_restarts,
        window,
        dry_run,
        jobs: BTreeMap::new(),
        apps: BTreeMap::new(),
    })
}

/// A stop reason `on` may list: the API's spelling of INTERNAL_ERROR or EXCEED_MAX_IDLE_TIME.
fn parse_reason(s: &str) -> Result<StopReason, String> {
    match StopReason::parse(s) {
        StopReason::TenantStop => Err(format!(
            "{s:?}: a job the tenant stopped is never re-created (it would undo the stop); use \"INTERNAL_ERROR\" and/or \"EXCEED_MAX_IDLE_TIME\""
        )),
        StopReason::Other(_) => Err(format!(
            "{s:?} is not a stop reason recwatch can act on; use \"INTERNAL_ERROR\" and/or \"EXCEED_MAX_IDLE_TIME\""
        )),
        known if known.as_str() == s => Ok(known),
        known => Err(format!(
            "{s:?} is not spelt as the API spells it; write {:?}",
            known.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_on_may_list_table() {
        let cases = [
            (
                "internal error",
                "INTERNAL_ERROR",
                Ok(StopReason::InternalError),
            ),
            (
                "idle",
                "EXCEED_MAX_IDLE_TIME",
                Ok(StopReason::ExceedMaxIdleTime),
            ),
            ("the tenant's stop", "TENANT_STOP", Err("never re-created")),
            ("unknown", "DISK_FULL", Err("not a stop reason")),
            (
                "lower case",
                "internal_error",
                Err("write \"INTERNAL_ERROR\""),
            ),
        ];
        for (name, text, want) in cases {
            match (parse_reason(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{name}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{name}: {got}"),
                (got, want) => panic!("{name}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_job_then_its_lineage_then_its_app_then_enabled_decide_table() {
        let key = |j: &str| JobKey::new("app", j);
        let mut c = RemediateConfig {
            enabled: false,
            ..Default::default()
        };
        c.jobs.insert(key("on"), true);
        c.jobs.insert(key("off"), false);
        c.apps.insert("app".into(), true);
        c.apps.insert("quiet".into(), false);
        let cases = [
            ("the job's own true", key("on"), key("on"), true),
            (
                "the job's own false beats the app's true",
                key("off"),
                key("off"),
                false,
            ),
            (
                "a replacement follows its lineage's job",
                key("new"),
                key("off"),
                false,
            ),
            ("else the app's", key("x"), key("x"), true),
            (
                "an app opted out",
                JobKey::new("quiet", "x"),
                JobKey::new("quiet", "x"),
                false,
            ),
            (
                "else enabled",
                JobKey::new("other", "x"),
                JobKey::new("other", "x"),
                false,
            ),
        ];
        for (name, k, lineage, want) in cases {
            assert_eq!(c.enabled_for(&k, &lineage), want, "{name}");
        }
    }
}
