//! What a simulator serves and how strict it is: [`SimOptions`], the credentials its
//! gateway demands of the default account, [`SimAuth`], the other accounts it serves,
//! [`SimAccount`], and the ECS metadata stand-in, [`SimMetadata`].

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
    /// Accounts besides the default one (`auth`, `project_id` and `rate_limit` above are
    /// account #0, named `default`): each with its own key, project, rate limit and lockout.
    /// The gateway tells them apart by the access key a request is signed with.
    pub accounts: Vec<SimAccount>,
    /// The ECS metadata stand-in (`None`: not served), on the API's own listener.
    pub metadata: Option<SimMetadata>,
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
            accounts: Vec::new(),
            metadata: None,
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

/// The name of account #0, the one `auth`, `project_id` and `rate_limit` describe (the
/// daemon's `[api]` is its account named `default` too).
pub const DEFAULT_ACCOUNT: &str = "default";

/// The real gateway's limit of the job group, per account.
pub const ACCOUNT_RATE_LIMIT: u32 = 10;

/// An account besides the default one: AK/SK only, as a region's or a customer's project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimAccount {
    /// Its name in stats and in the control API (`/_sim/accounts/{name}/...`).
    pub name: String,
    pub access_key: String,
    pub secret_key: recwatch_rtc::Secret,
    /// The only `X-Project-Id` accepted with its key (403 otherwise); `None` accepts any, but
    /// one must be sent, as for the default account.
    pub project_id: Option<String>,
    /// Admitted requests of the job group in any trailing second (429 beyond); `None`: no
    /// limit.
    pub rate_limit: Option<u32>,
}

impl SimAccount {
    /// An account with the real gateway's limit, [`ACCOUNT_RATE_LIMIT`] per second.
    pub fn new(name: &str, access_key: &str, secret_key: &str, project_id: &str) -> SimAccount {
        SimAccount {
            name: name.to_string(),
            access_key: access_key.to_string(),
            secret_key: recwatch_rtc::Secret::new(secret_key),
            project_id: Some(project_id.to_string()).filter(|p| !p.is_empty()),
            rate_limit: Some(ACCOUNT_RATE_LIMIT),
        }
    }

    /// `--account name:ak:sk:project[:rate]` (an empty project accepts any; rate defaults to
    /// 10, `none` lifts the limit). No part may hold a `:`.
    pub fn parse_cli(s: &str) -> Result<SimAccount, String> {
        const FORM: &str = "expected NAME:AK:SK:PROJECT[:RATE], e.g. ap-southeast-1:AKAP:sk-ap:project-ap:10 (an empty PROJECT accepts any)";
        let parts: Vec<&str> = s.split(':').collect();
        let (name, ak, sk, project, rate) = match parts.as_slice() {
            [name, ak, sk, project] => (*name, *ak, *sk, *project, None),
            [name, ak, sk, project, rate] => (*name, *ak, *sk, *project, Some(*rate)),
            // Never echo the argument: it holds a secret key.
            _ => return Err(format!("{} parts; {FORM}", parts.len())),
        };
        if name.is_empty() || ak.is_empty() || sk.is_empty() {
            return Err(format!("NAME, AK and SK must not be empty; {FORM}"));
        }
        let mut account = SimAccount::new(name, ak, sk, project);
        account.rate_limit = match rate {
            None => Some(ACCOUNT_RATE_LIMIT),
            Some("none") => None,
            Some(n) => Some(n.parse().map_err(|_| {
                format!("RATE {n:?} of account {name:?} is not a whole number or \"none\"")
            })?),
        };
        Ok(account)
    }
}

/// The ECS metadata stand-in: `PUT /meta-data/latest/api/token` and
/// `GET /openstack/latest/securitykey`, served on the API's listener (its base address is
/// [`Simulator::metadata_url`](crate::Simulator::metadata_url)), handing out temporary keys of
/// one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimMetadata {
    /// The account whose temporary keys it hands out ([`DEFAULT_ACCOUNT`] or a
    /// [`SimAccount`]'s name): requests signed with them share that account's rate limit and
    /// lockout, and revoking the account refuses them too.
    pub account: String,
    /// How long each temporary key is accepted after it was handed out.
    pub key_lifetime: Duration,
}

impl Default for SimMetadata {
    fn default() -> Self {
        SimMetadata {
            account: DEFAULT_ACCOUNT.to_string(),
            // The real service's keys last a day; tests choose seconds.
            key_lifetime: Duration::from_secs(24 * 60 * 60),
        }
    }
}
