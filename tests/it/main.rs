//! One integration-test binary: the real daemon against real servers on loopback.

mod core;
mod harness;
