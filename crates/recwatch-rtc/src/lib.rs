//! A client for the Huawei Cloud RTC recording API: request signing exactly as the official
//! SDK signs (`SDK-HMAC-SHA256`), the job model (individual- and mix-stream jobs), and an
//! HTTP client for `GET /v2/apps/{app_id}/{individual,mix}-stream-jobs/{job_id}`, creating
//! and stopping jobs, whose every failure is a typed [`client::ErrorKind`].
//!
//! - [`sign`]: SDK-HMAC-SHA256, each step a pure function, checked against the official SDK's
//!   vectors (GETs, and requests with a body: the crate's `tests/sdk_vectors.rs`).
//! - [`model`]: [`JobSnapshot`], with [`State`] and [`StopReason`] as typed values that keep
//!   any value the API invents instead of failing the parse.
//! - [`client`]: [`RtcClient`], configured by a [`ClientConfig`], answering [`Fetched`] or an
//!   [`RtcError`] whose [`ErrorKind`] says how to react.
//! - [`jobs`]: the two [`Kind`]s of job (individual and mix), creating a job from a
//!   [`CreateRequest`] built from what a Show answer reported, stopping one, and
//!   [`CreateFailure`]: what a failed create proves (nothing made, refused, or unknown).
//! - [`callback`]: RTC's record callbacks: [`RecordEvent`] parsed from the raw body, the
//!   `X-Rtc-Signature` verified in constant time and made again for relaying, checked against
//!   the shared signing vector (`tests/callback_vectors.rs`).
//! - [`registration`]: an app's record-callback registration (`GET`/`PUT
//!   /v2/apps/{app_id}/record-callback`), through the same client and typed errors.
//! - [`credentials`]: [`Credentials`], the handle a client signs with, from one of the SDK's
//!   four sources (static keys, the environment, its credentials file, an ECS instance's
//!   metadata service, whose temporary keys are renewed before they expire).
//! - [`secret`]: [`Secret`], which never prints, and [`Redactor`], which removes secrets from
//!   text that came from outside.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use recwatch_rtc::{Auth, ClientConfig, RtcClient, Secret};
//!
//! let config = ClientConfig::new(
//!     "https://rtc-api.myhuaweicloud.com".parse()?,
//!     Auth::AkSk {
//!         access_key: "AK".into(),
//!         secret_key: Secret::new("SK"),
//!         security_token: None,
//!     },
//! );
//! let client = RtcClient::new(&config)?;
//! let fetched = client.get_job("app", "job").await?;
//! println!("{:?}", fetched.job.state);
//! # Ok(())
//! # }
//! ```

pub mod callback;
pub mod client;
pub mod credentials;
pub mod jobs;
pub mod model;
pub mod registration;
pub mod secret;
pub mod sign;
mod transport;

pub use callback::{
    EventError, EventType, RecordEvent, RecordedFile, SignatureError, SignatureHeaders,
};
pub use client::{ClientConfig, ErrorKind, Fetched, RtcClient, RtcError};
pub use credentials::{Credentials, MetadataConfig, Signing, SourceError, SourceKind};
pub use jobs::{CreateFailure, CreateRequest, Created, Kind, NotRecreatable, Stopped};
pub use model::{JobSnapshot, State, StopReason};
pub use registration::{CallbackUpdate, Registration};
pub use secret::{Redactor, Secret};

/// The credentials a request is sent with. `Debug` prints the secrets as `***`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// AK/SK, signed with SDK-HMAC-SHA256.
    AkSk {
        /// The access key id (an identifier, not a secret).
        access_key: String,
        secret_key: Secret,
        /// Temporary credentials' token, sent (and signed) as `X-Security-Token`.
        security_token: Option<Secret>,
    },
    /// An IAM token sent as `X-Auth-Token`.
    Token { token: Secret },
}

impl Auth {
    /// The secrets these credentials send, for redacting an answer that echoes them.
    pub fn secrets(&self) -> Vec<&Secret> {
        match self {
            Auth::AkSk {
                secret_key,
                security_token,
                ..
            } => std::iter::once(secret_key)
                .chain(security_token.as_ref())
                .collect(),
            Auth::Token { token } => vec![token],
        }
    }

    /// How requests are authenticated, for a startup log line: the kind of credentials and
    /// the access key's first characters, never a secret.
    ///
    /// ```
    /// use recwatch_rtc::{Auth, Secret};
    /// let auth = Auth::AkSk {
    ///     access_key: "HPUAEXAMPLEAK0000001".into(),
    ///     secret_key: Secret::new("sk"),
    ///     security_token: None,
    /// };
    /// assert_eq!(auth.describe(), "AK/SK (SDK-HMAC-SHA256), access key HPUA…");
    /// ```
    pub fn describe(&self) -> String {
        match self {
            Auth::AkSk {
                access_key,
                security_token: None,
                ..
            } => {
                format!(
                    "AK/SK (SDK-HMAC-SHA256), access key {}",
                    redact_ak(access_key)
                )
            }
            Auth::AkSk {
                access_key,
                security_token: Some(_),
                ..
            } => format!(
                "temporary AK/SK with security token (SDK-HMAC-SHA256), access key {}",
                redact_ak(access_key)
            ),
            Auth::Token { .. } => "IAM token (X-Auth-Token)".into(),
        }
    }
}

/// The access key is an identifier, not a secret, but the first characters are plenty to
/// recognise it in output.
fn redact_ak(ak: &str) -> String {
    let head: String = ak.chars().take(4).collect();
    format!("{head}…")
}
