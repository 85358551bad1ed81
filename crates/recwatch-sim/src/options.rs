//! What a simulator serves and how strict it is: [`SimOptions`], and the credentials its
//! gateway demands, [`SimAuth`].

use std::fmt;
use std::time::Duration;

/// What the simulator serves and how strict it is.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub app_id: String,
    /// Jobs `job-0000`, `job-0001`, ... created at start.
    pub jobs: usize,
    /// Phase length of the script (see the crate docs); a created job is INIT this long.
    pub step: Duration,
    /// `true`: jobs walk the script; `false`: they start RUNNING and stay until changed.
    pub scripted: bool,
    pub auth: SimAuth,
    /// Like the gateway: a request beyond N accepted in the trailing second gets 429 APIG.0308.
    pub rate_limit: Option<u32>,
    /// More than this many failed AK/SK checks in a row lock the access key...
    pub lockout_after: u32,
    /// ...for this long; every request is refused with 401 APIG.0301 meanwhile.
    pub lockout: Duration,
    /// Benchmark mode: change this many random jobs per second, logging each change.
    pub churn: Option<f64>,
    pub seed: u64,
    /// With AK/SK, the only `X-Project-Id` accepted (403 otherwise); `None` accepts any, but
    /// one must be sent (400 `RTC.00001001` otherwise).
    pub project_id: Option<String>,
    /// Seconds the simulator's clock is ahead of this machine's (negative: behind).
    pub clock_offset: i64,
    /// The fraction of record callbacks not sent (0.0 sends all, 1.0 none), decided by an RNG
    /// seeded with `seed`: proves that polling still catches what push misses.
    pub callback_drop: f64,
    /// How long after a stop's `CLOUD_RECORD_SERVER_OVER` the API still shows the job's
    /// previous state (the real API may lag its event); zero shows STOPPED at once.
    pub callback_lag: Duration,
    /// Callbacks waiting to be sent at most; beyond it one is dropped and counted
    /// (`overflowed`), never waited for.
    pub callback_queue: usize,
    /// A registration for `app_id` from the start, as a `PUT .../record-callback` would make
    /// it: the URL and, optionally, the key callbacks are signed with.
    pub callback_url: Option<String>,
    pub callback_key: Option<recwatch_rtc::Secret>,
    /// Fault rules for creates from the start (more can be added through the control API).
    pub create_faults: Vec<crate::create::CreateFault>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            app_id: "demo-app".into(),
            jobs: 12,
            step: Duration::from_secs(5),
            scripted: true,
            auth: SimAuth::None,
            rate_limit: None,
            lockout_after: 5,
            lockout: Duration::from_secs(5 * 60),
            churn: None,
            seed: 0,
            project_id: None,
            clock_offset: 0,
            callback_drop: 0.0,
            callback_lag: Duration::ZERO,
            callback_queue: 10_000,
            callback_url: None,
            callback_key: None,
            create_faults: Vec::new(),
        }
    }
}

/// What an API request must carry.
#[derive(Clone, PartialEq, Eq)]
pub enum SimAuth {
    None,
    /// An SDK-HMAC-SHA256 signature made with this key pair.
    AkSk {
        access_key: String,
        secret_key: String,
    },
    /// `X-Auth-Token` equal to this.
    Token(String),
}

impl fmt::Debug for SimAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimAuth::None => f.write_str("None"),
            SimAuth::AkSk { access_key, .. } => {
                write!(f, "AkSk {{ access_key: {access_key:?}, secret_key: *** }}")
            }
            SimAuth::Token(_) => f.write_str("Token(***)"),
        }
    }
}
