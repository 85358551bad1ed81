//! recwatch: watches Huawei Cloud RTC individual stream recording jobs, records every state
//! change in SQLite and alerts when a recording stops unexpectedly.
//!
//! The modules follow the data's path: config -> rtc (client) -> poller -> detect -> store ->
//! rules + outbox -> deliver -> notify. `domain` holds the types all of them speak (phases,
//! rules, alerts). Around them the shell: `startup` wires `run` together, `http` serves the
//! endpoint, `dbfile` prepares the SQLite file's place on disk and holds its owner lock (`store`
//! is everything inside the database), `runtime_list` is the watch list a running recwatch
//! follows, `cli` is the command line (`main.rs` only calls it). The simulator, a fake RTC API for the demo,
//! the tests and the benchmarks, is the crate `recwatch-sim`.

pub mod callback;
pub mod cli;
pub mod config;
pub mod dbfile;
pub mod deliver;
pub mod detect;
pub mod domain;
pub mod exit;
pub mod heartbeat;
pub mod hold;
pub mod http;
pub mod leader;
pub mod memory;
pub mod metric_catalogue;
pub mod notify;
pub mod outbox;
pub mod poller;
pub mod remediation;
pub mod rules;
pub mod runtime_list;
pub mod secret;
pub mod startup;
pub mod status;
pub mod store;
pub mod systemd;
pub mod telemetry;
/// The tests' deadline and wait, shared with the integration tests by `#[path]`.
#[cfg(test)]
mod testing;
pub mod view;
pub mod vitals;
