//! The RTC API: request signing, the job model, and the HTTP client.

pub mod client;
pub mod model;
pub mod sign;
