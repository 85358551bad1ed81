//! One integration-test binary: the real daemon against real servers on loopback (the RTC
//! simulator, webhook receivers, an SMTP server), each test with its own SQLite file.

mod abuse;
mod accounts;
mod accounts_shown;
mod accounts_view;
mod alerts;
mod answers;
mod blind_job;
mod browser;
mod callbacks;
mod chat;
mod checks;
mod core;
mod delivery;
mod endpoint;
mod faults;
mod ha;
mod ha_pg;
mod harness;
mod heartbeat;
mod ingest;
mod metrics;
mod mix;
mod notify;
mod operator;
mod pacing;
mod page;
mod postgres;
mod push;
mod remediation;
mod robust;
mod secrets;
mod service;
mod shared;
mod silences;
mod sim_push;
mod starvation;
mod storage;
mod support;
/// The tests' throwaway PostgreSQL, shared with the store's unit tests.
#[path = "../../src/store/test_pg.rs"]
mod test_pg;
/// The tests' deadline and wait, shared with the unit tests.
#[path = "../../src/testing.rs"]
mod testing;
mod watchlist;
