//! The simulator over HTTP: every test starts a simulator on 127.0.0.1 port 0 and speaks to
//! it as a client would, with reqwest or with recwatch's own RTC client. One test binary (one
//! link on a small machine), one file per part of the simulator.

mod harness;
/// The tests' deadline and wait, written once for the whole workspace.
#[path = "../../../../src/testing.rs"]
mod testing;

mod accounts;
mod callbacks;
mod churn;
mod client;
mod control;
mod faults;
mod gateway;
mod jobs;
mod metadata;
mod script;
mod throughput;
