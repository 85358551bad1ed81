//! Remediation (issue 15): a dead recording re-created, exactly once or not at all. The
//! feature in one folder, one file per layer it reaches, each keeping that layer's rules
//! (`tests/layout.rs` places `remediation/config.rs` in `config`, `remediation/rules.rs` in
//! `rules`, and so on, and checks their dependencies as it checks the layers'):
//! - `domain.rs`: a remediation's life, `RemediationState`;
//! - `config.rs`: `[remediate]` and its per-job and per-app overrides' table;
//! - `rules.rs`: the decision, `remediation` (pure, a table test);
//! - `outbox.rs`: the intent (or why not) written in the death's transaction, the death's alert
//!   held for the outcome, and the outcome told;
//! - `worker.rs`: the worker that POSTs the intents, started by `startup/roles.rs`;
//! - `cli.rs`: `recwatch remediations`.
//!
//! Its SQL is `store/remediations.rs` (all SQL lives in `store/`); the rest of the daemon
//! reaches it through one line each where a layer lists its parts (the `[remediate]` field of
//! `Config`, the call in `outbox/transition.rs`, the worker in `ActiveSet::start`, the command
//! in `cli`). Files here name one another by `crate::remediation::...`, never `super::`, so the
//! layout test sees every dependency.

pub mod cli;
pub mod config;
pub mod domain;
pub mod outbox;
pub mod rules;
mod worker;

pub use worker::Remediator;
