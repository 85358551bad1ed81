//! Real receivers on loopback, shared by every integration test; each test file uses only
//! some of their helpers, hence the allow.
#![allow(dead_code)]

pub mod receiver;
pub mod smtp;
