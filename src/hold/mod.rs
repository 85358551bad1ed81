//! Holds: silences (added at run time by `recwatch silence` or `/api/v1/silences`) and
//! maintenance windows (`[[maintenance]]` in the config) keep notifications back, never polling
//! or recording. The feature in one folder, one file per layer it reaches, each keeping that
//! layer's rules (`tests/layout.rs` places `hold/config.rs` in `config`, `hold/rules.rs` in
//! `rules`, and so on):
//! - `domain.rs`: a silence, its matchers and status, what holds a notice (`HeldBy`) and what
//!   a released notice becomes (`AfterHold`);
//! - `config.rs`: `[[maintenance]]` windows, active as a pure function of the time;
//! - `rules.rs`: `after_hold`, what a held notice becomes when its hold ends (pure, a table
//!   test);
//! - `deliver.rs`: the gate the delivery lanes ask before each send, the release pass and the
//!   watch on windows' edges;
//! - `http.rs`: `POST`/`DELETE /api/v1/silences`;
//! - `cli.rs`: `recwatch silence add|list|expire`.
//!
//! Its SQL is `store/silences.rs` (all SQL lives in `store/`); a held delivery's state is
//! `domain::DeliveryState::Silenced`, the outbox's. The rest of the daemon reaches it through
//! one line each where a layer lists its parts (`Config::maintenance`, the delivery worker's
//! gate and release, the lane's check, the routes, the command, the page's list). Files here
//! name one another by `crate::hold::...`, never `super::`, so the layout test sees every
//! dependency.

pub mod cli;
pub mod config;
pub mod deliver;
pub mod domain;
pub mod http;
pub mod rules;
