//! Where the keys a request is signed with come from, the four ways the official SDK gets
//! them (`huaweicloudsdkcore/auth/provider.py`): written in the configuration (`static`),
//! the environment (`env`), the SDK's credentials file (`profile`), or an ECS instance's
//! metadata service (`ecs-metadata`, temporary keys renewed before they expire).
//!
//! [`Credentials`] is the handle: a cheap clone (an `Arc`) that [`RtcClient`](crate::RtcClient)
//! asks for the current [`Signing`] keys per request, so a renewal changes the keys without a
//! new client. The first three sources are read once, when the configuration is (a reload
//! reads them again); only `ecs-metadata` changes under a running client.
//!
//! - [`renew`]: when temporary keys are renewed, the back-off, `expires_at` (pure, tables).
//! - [`profile`]: the INI credentials file.
//! - `metadata`: the metadata service's provider (I/O around `renew`).

mod metadata;
pub mod profile;
pub mod renew;

pub use metadata::{DEFAULT_METADATA_URL, MetadataConfig};

use crate::client::RtcError;
use crate::secret::{Redactor, Secret};
use crate::{Auth, sign};
use chrono::{DateTime, Utc};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The variables the SDK's `EnvCredentialProvider` reads.
pub const ENV_AK: &str = "HUAWEICLOUD_SDK_AK";
pub const ENV_SK: &str = "HUAWEICLOUD_SDK_SK";
pub const ENV_SECURITY_TOKEN: &str = "HUAWEICLOUD_SDK_SECURITY_TOKEN";
pub const ENV_PROJECT_ID: &str = "HUAWEICLOUD_SDK_PROJECT_ID";
/// Where the SDK's `ProfileCredentialProvider` looks first.
pub const ENV_CREDENTIALS_FILE: &str = "HUAWEICLOUD_SDK_CREDENTIALS_FILE";

/// Which of the four sources, as `[api.auth] source` spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKind {
    Static,
    Env,
    Profile,
    EcsMetadata,
}

impl SourceKind {
    /// Every source, in the order the documentation lists them.
    pub const ALL: [SourceKind; 4] = [
        SourceKind::Static,
        SourceKind::Env,
        SourceKind::Profile,
        SourceKind::EcsMetadata,
    ];

    /// The name in the configuration and in `check`'s output.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Static => "static",
            SourceKind::Env => "env",
            SourceKind::Profile => "profile",
            SourceKind::EcsMetadata => "ecs-metadata",
        }
    }

    pub fn parse(text: &str) -> Option<SourceKind> {
        SourceKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// The keys one request is signed with, as held when it was signed: the credentials, the
/// secret key made ready for HMAC once, and a [`Redactor`] for the answers.
pub struct Signing {
    auth: Auth,
    /// With AK/SK, the secret key made ready for HMAC once rather than per request.
    key: Option<sign::SigningKey>,
    /// Temporary keys' end.
    expires_at: Option<DateTime<Utc>>,
    /// These keys' secrets and the previous keys': an answer to a request signed just before a
    /// renewal may echo the old ones.
    redactor: Redactor,
}

impl Signing {
    /// Keys that do not expire.
    pub fn new(auth: Auth) -> Signing {
        Signing::make(auth, None, None)
    }

    pub(crate) fn temporary(
        auth: Auth,
        expires_at: DateTime<Utc>,
        previous: Option<&Signing>,
    ) -> Signing {
        Signing::make(auth, Some(expires_at), previous)
    }

    fn make(auth: Auth, expires_at: Option<DateTime<Utc>>, previous: Option<&Signing>) -> Signing {
        let key = match &auth {
            Auth::AkSk { secret_key, .. } => {
                Some(sign::SigningKey::new(secret_key.expose().as_bytes()))
            }
            Auth::Token { .. } => None,
        };
        let old: Vec<&Secret> = previous.map(|p| p.auth.secrets()).unwrap_or_default();
        let redactor = Redactor::new(auth.secrets().into_iter().chain(old));
        Signing {
            auth,
            key,
            expires_at,
            redactor,
        }
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The HMAC key of AK/SK credentials.
    pub fn signing_key(&self) -> Option<&sign::SigningKey> {
        self.key.as_ref()
    }

    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The keys for a log line: their kind, the access key's first characters and the
    /// expiry; never a secret.
    pub fn describe_keys(&self) -> String {
        match self.expires_at {
            Some(at) => format!(
                "{}, expires {}",
                self.auth.describe(),
                at.format("%Y-%m-%dT%H:%M:%SZ")
            ),
            None => self.auth.describe(),
        }
    }
}

impl fmt::Debug for Signing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Auth's Debug prints its secrets as ***.
        f.debug_struct("Signing")
            .field("auth", &self.auth)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A source that cannot give credentials when the configuration is read: what is missing
/// and where, never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// The handle a client signs with (see the module's text). `Debug` and
/// [`describe`](Credentials::describe) never print a secret.
#[derive(Clone)]
pub struct Credentials {
    inner: Arc<Inner>,
}

enum Inner {
    /// `static`, `env` and `profile`: read once.
    Fixed {
        source: SourceKind,
        /// Where they were read (the profile's path), for `describe`.
        origin: Option<PathBuf>,
        /// `HUAWEICLOUD_SDK_PROJECT_ID`, or the profile's `project_id`.
        project_id: Option<String>,
        keys: Arc<Signing>,
    },
    /// Boxed: far larger than the others (its locks), and behind the `Arc` anyway.
    EcsMetadata(Box<metadata::Provider>),
}

impl From<Auth> for Credentials {
    /// Keys written in the configuration (`source = "static"`).
    fn from(auth: Auth) -> Credentials {
        Credentials::fixed(SourceKind::Static, None, None, auth)
    }
}

impl Credentials {
    fn fixed(
        source: SourceKind,
        origin: Option<PathBuf>,
        project_id: Option<String>,
        auth: Auth,
    ) -> Credentials {
        Credentials {
            inner: Arc::new(Inner::Fixed {
                source,
                origin,
                project_id,
                keys: Arc::new(Signing::new(auth)),
            }),
        }
    }

    /// The SDK's environment variables, read through `var` (the process's environment, or a
    /// test's map): `HUAWEICLOUD_SDK_AK` and `_SK` (both needed), `_SECURITY_TOKEN` and
    /// `_PROJECT_ID` when set. An empty variable counts as unset, as in the SDK.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Credentials, SourceError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let (ak, sk) = (get(ENV_AK), get(ENV_SK));
        let missing: Vec<&str> = [(ENV_AK, ak.is_none()), (ENV_SK, sk.is_none())]
            .into_iter()
            .filter_map(|(name, gone)| gone.then_some(name))
            .collect();
        let (Some(access_key), Some(secret_key)) = (ak, sk) else {
            return Err(SourceError(format!(
                "{} not set in recwatch's environment; set {ENV_AK} and {ENV_SK} (and {ENV_SECURITY_TOKEN} for temporary keys), e.g. in the unit's EnvironmentFile=, or choose another source",
                missing.join(" and ")
            )));
        };
        let auth = Auth::AkSk {
            access_key: access_key.trim().to_string(),
            secret_key: Secret::new(secret_key.trim()),
            security_token: get(ENV_SECURITY_TOKEN).map(|t| Secret::new(t.trim())),
        };
        let project = get(ENV_PROJECT_ID).map(|p| p.trim().to_string());
        Ok(Credentials::fixed(SourceKind::Env, None, project, auth))
    }

    /// Where the SDK reads its credentials file: `HUAWEICLOUD_SDK_CREDENTIALS_FILE`, else
    /// `~/.huaweicloud/credentials` (`None` without a home directory).
    pub fn profile_path(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
        if let Some(p) = var(ENV_CREDENTIALS_FILE).filter(|p| !p.trim().is_empty()) {
            return Some(PathBuf::from(p));
        }
        var("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| Path::new(&h).join(".huaweicloud").join("credentials"))
    }

    /// The `[basic]` section of the SDK's credentials file at `path`: `ak` and `sk` (both
    /// needed), `security_token` and `project_id` when present.
    pub fn from_profile(path: &Path) -> Result<Credentials, SourceError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SourceError(format!(
                "cannot read the credentials file {}: {e}; create it with a [basic] section (ak, sk, project_id) or set path",
                path.display()
            ))
        })?;
        Credentials::from_profile_text(path, &text)
    }

    /// [`from_profile`](Self::from_profile) of text already read (pure).
    pub fn from_profile_text(path: &Path, text: &str) -> Result<Credentials, SourceError> {
        let at = path.display();
        let sections = profile::parse(text).map_err(|e| SourceError(format!("{at}: {e}")))?;
        let Some(basic) = sections.get(profile::SECTION) else {
            return Err(SourceError(format!(
                "{at} has no [{}] section; add one with ak, sk and project_id",
                profile::SECTION
            )));
        };
        let get = |k: &str| basic.get(k).filter(|v| !v.is_empty()).cloned();
        let (Some(access_key), Some(secret_key)) = (get("ak"), get("sk")) else {
            return Err(SourceError(format!(
                "{at} [{}] needs both ak and sk",
                profile::SECTION
            )));
        };
        let auth = Auth::AkSk {
            access_key,
            secret_key: Secret::new(secret_key),
            security_token: get("security_token").map(Secret::new),
        };
        let origin = Some(path.to_path_buf());
        Ok(Credentials::fixed(
            SourceKind::Profile,
            origin,
            get("project_id"),
            auth,
        ))
    }

    /// Temporary keys from the ECS metadata service, fetched at the first request and renewed
    /// ahead of their expiry. Sends nothing now.
    pub fn ecs_metadata(config: MetadataConfig) -> Credentials {
        Credentials::ecs_metadata_with_clock(config, Arc::new(Utc::now))
    }

    pub(crate) fn ecs_metadata_with_clock(
        config: MetadataConfig,
        clock: metadata::Clock,
    ) -> Credentials {
        Credentials {
            inner: Arc::new(Inner::EcsMetadata(Box::new(metadata::Provider::new(
                config, clock,
            )))),
        }
    }

    pub fn source(&self) -> SourceKind {
        match &*self.inner {
            Inner::Fixed { source, .. } => *source,
            Inner::EcsMetadata(_) => SourceKind::EcsMetadata,
        }
    }

    /// The project id the source gave (the environment's, the profile's), for a configuration
    /// that names none.
    pub fn project_id(&self) -> Option<&str> {
        match &*self.inner {
            Inner::Fixed { project_id, .. } => project_id.as_deref(),
            Inner::EcsMetadata(_) => None,
        }
    }

    /// Whether requests are signed with AK/SK (which the API wants with `X-Project-Id`), not
    /// sent with an IAM token.
    pub fn signs(&self) -> bool {
        match &*self.inner {
            Inner::Fixed { keys, .. } => matches!(keys.auth, Auth::AkSk { .. }),
            Inner::EcsMetadata(_) => true,
        }
    }

    /// The credentials themselves when they never change (`static`, `env`, `profile`).
    pub fn fixed_auth(&self) -> Option<&Auth> {
        match &*self.inner {
            Inner::Fixed { keys, .. } => Some(&keys.auth),
            Inner::EcsMetadata(_) => None,
        }
    }

    /// What a request budget belongs to beyond its configuration entry: the access key of
    /// permanent keys (`static`, `env`, `profile` without a security token), so entries with
    /// the same key can share one budget (the limit is the key's). `None` for an IAM token and
    /// for temporary keys (a security token, `ecs-metadata`): a budget belongs to the entry
    /// then, never to a key that a renewal or a reload replaces.
    pub fn budget_identity(&self) -> Option<&str> {
        match self.fixed_auth() {
            Some(Auth::AkSk {
                access_key,
                security_token: None,
                ..
            }) => Some(access_key),
            _ => None,
        }
    }

    /// For logs and `check`: the source, where it read from, the kind of keys and the access
    /// key's first characters, and the expiry of temporary ones; never a secret.
    ///
    /// ```
    /// use recwatch_rtc::{Auth, Credentials, Secret};
    /// let creds = Credentials::from(Auth::AkSk {
    ///     access_key: "HPUAEXAMPLEAK0000001".into(),
    ///     secret_key: Secret::new("sk"),
    ///     security_token: None,
    /// });
    /// assert_eq!(creds.describe(), "static: AK/SK (SDK-HMAC-SHA256), access key HPUA…");
    /// ```
    pub fn describe(&self) -> String {
        match &*self.inner {
            Inner::Fixed {
                source,
                origin,
                keys,
                ..
            } => match origin {
                Some(path) => format!(
                    "{} {} [{}]: {}",
                    source.as_str(),
                    path.display(),
                    profile::SECTION,
                    keys.describe_keys()
                ),
                None => format!("{}: {}", source.as_str(), keys.describe_keys()),
            },
            Inner::EcsMetadata(p) => {
                let held = match p.held() {
                    Some(keys) => keys.describe_keys(),
                    None => "none fetched yet".into(),
                };
                format!(
                    "ecs-metadata {} (renewed {} before expiry): {held}",
                    p.config.url.as_str().trim_end_matches('/'),
                    humanize(p.config.renew_before)
                )
            }
        }
    }

    /// The keys to sign one request with: at once for keys that never change; for temporary
    /// ones, renewed first when due. An error is
    /// [`CredentialsUnavailable`](crate::ErrorKind::CredentialsUnavailable): no usable keys,
    /// nothing sent.
    pub async fn current(&self) -> Result<Arc<Signing>, RtcError> {
        match &*self.inner {
            Inner::Fixed { keys, .. } => Ok(keys.clone()),
            Inner::EcsMetadata(p) => p.current().await,
        }
    }

    /// The keys held now, without asking anyone (`None` before the first fetch).
    pub fn held(&self) -> Option<Arc<Signing>> {
        match &*self.inner {
            Inner::Fixed { keys, .. } => Some(keys.clone()),
            Inner::EcsMetadata(p) => p.held(),
        }
    }
}

/// A renewal threshold the way the configuration writes it ("40m", "90s").
fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

impl PartialEq for Credentials {
    /// The same source with the same keys (or the same metadata service and threshold): a
    /// reload that changes neither keeps the client.
    fn eq(&self, other: &Credentials) -> bool {
        match (&*self.inner, &*other.inner) {
            (
                Inner::Fixed {
                    source: a,
                    origin: ao,
                    project_id: ap,
                    keys: ak,
                },
                Inner::Fixed {
                    source: b,
                    origin: bo,
                    project_id: bp,
                    keys: bk,
                },
            ) => a == b && ao == bo && ap == bp && ak.auth == bk.auth,
            (Inner::EcsMetadata(a), Inner::EcsMetadata(b)) => a.config == b.config,
            _ => false,
        }
    }
}

impl Eq for Credentials {}

impl fmt::Debug for Credentials {
    /// The keys through `Signing`'s `Debug`, whose secrets print as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Credentials");
        d.field("source", &self.source().as_str());
        match &*self.inner {
            Inner::Fixed {
                origin,
                project_id,
                keys,
                ..
            } => d
                .field("origin", origin)
                .field("project_id", project_id)
                .field("keys", keys),
            Inner::EcsMetadata(p) => d.field("config", &p.config).field("keys", &p.held()),
        }
        .finish()
    }
}

#[cfg(test)]
mod tests;
