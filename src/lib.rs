//! recwatch: watches Huawei Cloud RTC individual stream recording jobs, records every state
//! change in SQLite and alerts when a recording stops unexpectedly.
//!
//! The modules follow the data's path: config -> rtc (client) -> poll -> detect -> store ->
//! notify. `simulate` is a fake RTC API for the demo, the tests and the benchmarks.

pub mod alert;
pub mod config;
pub mod rtc;
pub mod secret;
pub mod simulate;
