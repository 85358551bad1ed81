//! Remediation's rule (issue 15): whether and how a death is re-created. Pure, a table test;
//! the outbox asks it in the death's transaction (`crate::remediation::outbox`).

use crate::domain::{Phase, State, StopReason};

/// What `[remediate]` does about a transition (issue 15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remediation {
    /// Not a death remediation acts on (not STOPPED, a reason not in `remediate.on`, or
    /// remediation off for this job): nothing is written or said.
    Leave,
    /// Re-create the job: an intent is written with the transition.
    Recreate,
    /// Acted on, but not re-created: said in the death's alert and listed.
    Skip(SkipReason),
    /// The lineage was re-created `max_restarts` times within the window: not again, and a
    /// `remediation_exhausted` alert.
    Exhausted,
}

/// Why a death remediation would act on was not re-created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// `remediate.dry_run`: what would have been done is said, nothing is done.
    DryRun,
    /// The last Show answer lacks a field the create call needs (the text says which).
    CannotRebuild(String),
}

impl SkipReason {
    /// The payload's `reason` and the `remediations` row's.
    pub fn as_text(&self) -> String {
        match self {
            SkipReason::DryRun => "dry_run".into(),
            SkipReason::CannotRebuild(why) => format!("cannot_rebuild: {why}"),
        }
    }
}

/// What remediation knows when a job's transition is written.
#[derive(Clone, Debug)]
pub struct RemediationInput<'a> {
    pub to: &'a Phase,
    /// `remediate.on`.
    pub on: &'a [StopReason],
    /// `remediate.enabled` after the job's, its lineage's or its app's override.
    pub enabled: bool,
    pub dry_run: bool,
    /// The lineage's re-creations (made or attempted) within `remediate.window`.
    pub restarts: u32,
    pub max_restarts: u32,
    /// Whether the last Show answer carries what the create call needs (else why not).
    pub rebuild: Result<(), String>,
}

/// Whether and how to re-create a job that just changed phase. Pure. Order matters: a death
/// not asked for is left alone before anything else is looked at; the bound is checked before
/// dry_run so a dry run says what a real run would (nothing, once exhausted).
pub fn remediation(input: &RemediationInput<'_>) -> Remediation {
    let listed = matches!(input.to.state, State::Stopped)
        && input
            .to
            .stop_reason
            .as_ref()
            .is_some_and(|r| input.on.contains(r));
    if !listed || !input.enabled {
        return Remediation::Leave;
    }
    if input.restarts >= input.max_restarts {
        return Remediation::Exhausted;
    }
    if let Err(why) = &input.rebuild {
        return Remediation::Skip(SkipReason::CannotRebuild(why.clone()));
    }
    if input.dry_run {
        return Remediation::Skip(SkipReason::DryRun);
    }
    Remediation::Recreate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remediation_table() {
        let stopped = |r: &str| Phase::parse("STOPPED", Some(r));
        let internal = stopped("INTERNAL_ERROR");
        let idle = stopped("EXCEED_MAX_IDLE_TIME");
        let tenant = stopped("TENANT_STOP");
        let running = Phase::parse("RUNNING", None);
        let no_reason = Phase::parse("STOPPED", None);
        let on = [StopReason::InternalError];
        let base = RemediationInput {
            to: &internal,
            on: &on,
            enabled: true,
            dry_run: false,
            restarts: 0,
            max_restarts: 3,
            rebuild: Ok(()),
        };
        let cannot = Err("no user_id".to_string());
        let cases: Vec<(&str, RemediationInput, Remediation)> = vec![
            (
                "a listed death is re-created",
                base.clone(),
                Remediation::Recreate,
            ),
            (
                "the last restart allowed",
                RemediationInput {
                    restarts: 2,
                    ..base.clone()
                },
                Remediation::Recreate,
            ),
            (
                "max_restarts reached: exhausted",
                RemediationInput {
                    restarts: 3,
                    ..base.clone()
                },
                Remediation::Exhausted,
            ),
            (
                "an unlisted reason is left alone",
                RemediationInput {
                    to: &idle,
                    ..base.clone()
                },
                Remediation::Leave,
            ),
            (
                "a listed idle timeout",
                RemediationInput {
                    to: &idle,
                    on: &[StopReason::InternalError, StopReason::ExceedMaxIdleTime],
                    ..base.clone()
                },
                Remediation::Recreate,
            ),
            (
                "the tenant's stop is never in the list",
                RemediationInput {
                    to: &tenant,
                    ..base.clone()
                },
                Remediation::Leave,
            ),
            (
                "a stop without a reason is not listed",
                RemediationInput {
                    to: &no_reason,
                    ..base.clone()
                },
                Remediation::Leave,
            ),
            (
                "not a death",
                RemediationInput {
                    to: &running,
                    ..base.clone()
                },
                Remediation::Leave,
            ),
            (
                "opted out (or not enabled)",
                RemediationInput {
                    enabled: false,
                    ..base.clone()
                },
                Remediation::Leave,
            ),
            (
                "opted out beats exhausted",
                RemediationInput {
                    enabled: false,
                    restarts: 9,
                    ..base.clone()
                },
                Remediation::Leave,
            ),
            (
                "dry run",
                RemediationInput {
                    dry_run: true,
                    ..base.clone()
                },
                Remediation::Skip(SkipReason::DryRun),
            ),
            (
                "a dry run past the bound says exhausted, as a real run would",
                RemediationInput {
                    dry_run: true,
                    restarts: 3,
                    ..base.clone()
                },
                Remediation::Exhausted,
            ),
            (
                "cannot be rebuilt from the Show answer",
                RemediationInput {
                    rebuild: cannot.clone(),
                    ..base.clone()
                },
                Remediation::Skip(SkipReason::CannotRebuild("no user_id".into())),
            ),
            (
                "cannot be rebuilt, in a dry run: the real reason",
                RemediationInput {
                    rebuild: cannot,
                    dry_run: true,
                    ..base.clone()
                },
                Remediation::Skip(SkipReason::CannotRebuild("no user_id".into())),
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(remediation(&input), want, "{name}");
        }
    }
}
