//! `[api.auth]` (and each `[accounts.auth]`): which of the SDK's credential sources the keys
//! come from, read into a [`recwatch_rtc::Credentials`] handle.
//!
//! `source = "static"` (the default, so files written before sources existed read as they
//! did) takes the keys written here; `"env"` the SDK's `HUAWEICLOUD_SDK_*` variables;
//! `"profile"` the SDK's credentials file; `"ecs-metadata"` an ECS instance's metadata service,
//! whose temporary keys are renewed while recwatch runs. The first three are read now, so a
//! missing variable or file is an error at load, not at the first poll; a reload reads them
//! again. A key of another source is an error naming the source it belongs to.

use super::ConfigError;
use super::duration::format_duration;
use super::raw::Table;
use super::validate::{check_range, parse_http_url};
use recwatch_rtc::credentials::{DEFAULT_METADATA_URL, MetadataConfig, SourceKind, renew};
use recwatch_rtc::{Auth, Credentials};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The keys of each source; `source` itself goes with all.
const STATIC_KEYS: &[&str] = &[
    "access_key",
    "secret_key",
    "secret_key_file",
    "security_token",
    "security_token_file",
    "token",
    "token_file",
];
const PROFILE_KEYS: &[&str] = &["path"];
const METADATA_KEYS: &[&str] = &["renew_before", "metadata_url"];

/// Temporary keys from the metadata service live 24 hours: renewing more than that ahead
/// cannot be meant.
const MAX_RENEW_BEFORE: Duration = Duration::from_secs(24 * 60 * 60);

/// The auth table at `t` (`api.auth`, `accounts[0].auth`, ...) read into the credentials it
/// names, the environment being this process's. A relative `*_file` or `path` is taken from
/// `base`, the configuration file's folder.
pub fn read_auth(t: Table, base: Option<&Path>) -> Result<Credentials, ConfigError> {
    read_auth_in(t, base, &|name| std::env::var(name).ok())
}

/// [`read_auth`] with the environment given (a test's).
pub(crate) fn read_auth_in(
    mut t: Table,
    base: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, ConfigError> {
    let all: Vec<&str> = std::iter::once("source")
        .chain(STATIC_KEYS.iter().copied())
        .chain(PROFILE_KEYS.iter().copied())
        .chain(METADATA_KEYS.iter().copied())
        .collect();
    t.known(&all)?;
    let source = match t.nonempty_string("source")? {
        None => SourceKind::Static,
        Some(s) => SourceKind::parse(&s).ok_or_else(|| {
            t.err(
                "source",
                format!("{s:?} is not a credential source; use \"static\" (keys written here), \"env\" (HUAWEICLOUD_SDK_AK/_SK), \"profile\" (~/.huaweicloud/credentials) or \"ecs-metadata\" (the ECS instance's agency)"),
            )
        })?,
    };
    misplaced(&t, source)?;
    let creds = match source {
        SourceKind::Static => Credentials::from(read_static(&mut t, base)?),
        SourceKind::Env => Credentials::from_env(env).map_err(|e| t.err("source", e.0))?,
        SourceKind::Profile => read_profile(&mut t, base, env)?,
        SourceKind::EcsMetadata => Credentials::ecs_metadata(read_metadata(&mut t)?),
    };
    t.finish()?;
    if let Some(p) = creds.project_id() {
        if p.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(t.err(
                "source",
                format!("the project id it gives ({p:?}) has a space or control character; copy the project ID from the console (My Credentials > Projects)"),
            ));
        }
    }
    Ok(creds)
}

/// An error for a key that belongs to another source than `source`.
fn misplaced(t: &Table, source: SourceKind) -> Result<(), ConfigError> {
    let owners = [
        (SourceKind::Static, STATIC_KEYS),
        (SourceKind::Profile, PROFILE_KEYS),
        (SourceKind::EcsMetadata, METADATA_KEYS),
    ];
    for key in t.keys() {
        let Some((owner, _)) = owners.iter().find(|(_, keys)| keys.contains(&key.as_str())) else {
            continue;
        };
        if *owner == source {
            continue;
        }
        let fix = match source {
            SourceKind::Static => format!("remove it, or set source = \"{}\"", owner.as_str()),
            SourceKind::Env => format!(
                "source = \"env\" reads the keys from HUAWEICLOUD_SDK_AK, HUAWEICLOUD_SDK_SK and HUAWEICLOUD_SDK_SECURITY_TOKEN; remove it, or set source = \"{}\"",
                owner.as_str()
            ),
            _ => format!("remove it, or set source = \"{}\"", owner.as_str()),
        };
        return Err(t.err(
            &key,
            format!(
                "only goes with source = \"{}\", and source is \"{}\"; {fix}",
                owner.as_str(),
                source.as_str()
            ),
        ));
    }
    Ok(())
}

/// `static`: an access key with its secret key (and a security token for temporary keys),
/// or an IAM token, as `[api.auth]` always took them.
fn read_static(t: &mut Table, base: Option<&Path>) -> Result<Auth, ConfigError> {
    let access_key = t.nonempty_string("access_key")?;
    let secret_key = t.secret("secret_key", base)?;
    let security_token = t.secret("security_token", base)?;
    let token = t.secret("token", base)?;
    let here = &t.path;
    match (access_key, secret_key, token) {
        (Some(access_key), Some(secret_key), None) => Ok(Auth::AkSk {
            access_key,
            secret_key,
            security_token,
        }),
        (None, None, Some(token)) => {
            if security_token.is_some() {
                return Err(ConfigError::new(
                    format!("{here}.security_token"),
                    "only goes with access_key/secret_key (temporary AK/SK), not with token",
                ));
            }
            Ok(Auth::Token { token })
        }
        (Some(_), None, None) => Err(ConfigError::new(
            format!("{here}.secret_key"),
            "missing: access_key is set, so set secret_key or secret_key_file too",
        )),
        (None, Some(_), None) => Err(ConfigError::new(
            format!("{here}.access_key"),
            "missing: secret_key is set, so set access_key too",
        )),
        (None, None, None) => Err(ConfigError::new(
            here.clone(),
            "no credentials: set access_key with secret_key (or secret_key_file), or token (or token_file); or take them from elsewhere with source = \"env\", \"profile\" or \"ecs-metadata\"",
        )),
        (_, _, Some(_)) => Err(ConfigError::new(
            here.clone(),
            "two authentication methods: set either access_key/secret_key or token, not both",
        )),
    }
}

/// `profile`: the file at `path` (relative to the configuration's folder), else where the SDK
/// looks.
fn read_profile(
    t: &mut Table,
    base: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, ConfigError> {
    let (path, key) = match t.nonempty_string("path")? {
        Some(p) => {
            let mut p = PathBuf::from(p);
            if let (true, Some(b)) = (p.is_relative(), base) {
                p = b.join(p);
            }
            (p, "path")
        }
        None => match Credentials::profile_path(env) {
            Some(p) => (p, "source"),
            None => {
                return Err(t.err(
                    "path",
                    "missing: HUAWEICLOUD_SDK_CREDENTIALS_FILE and HOME are not set, so there is no ~/.huaweicloud/credentials to read; set path to the credentials file",
                ));
            }
        },
    };
    Credentials::from_profile(&path).map_err(|e| t.err(key, e.0))
}

/// `ecs-metadata`: where the service is and how long ahead its keys are renewed.
fn read_metadata(t: &mut Table) -> Result<MetadataConfig, ConfigError> {
    let url = match t.nonempty_string("metadata_url")? {
        None => DEFAULT_METADATA_URL.parse().expect("the default parses"),
        Some(text) => {
            let url = parse_http_url(&text).map_err(|m| t.err("metadata_url", m))?;
            if url.query().is_some()
                || url.fragment().is_some()
                || !url.username().is_empty()
                || url.password().is_some()
            {
                return Err(t.err(
                    "metadata_url",
                    format!("{text:?} has a query, fragment or user name; give the base address only, e.g. \"{DEFAULT_METADATA_URL}\" (the SDK's paths are appended)"),
                ));
            }
            url
        }
    };
    let mut config = MetadataConfig::new(url);
    if let Some(d) = t.duration("renew_before")? {
        check_range(
            t,
            "renew_before",
            d,
            MAX_RENEW_BEFORE,
            "the metadata service's keys live 24 hours",
            &format!("\"{}\"", format_duration(renew::DEFAULT_RENEW_BEFORE)),
        )?;
        config.renew_before = d;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn table_at(path: &str, toml_text: &str) -> Table {
        let value: toml::Value = toml::from_str(toml_text).unwrap();
        let Value::Object(map) = serde_json::to_value(value).unwrap() else {
            unreachable!()
        };
        Table::new(path, map)
    }

    fn table(toml_text: &str) -> Table {
        table_at("accounts[1].auth", toml_text)
    }

    fn read(toml_text: &str, env: &[(&str, &str)], base: Option<&Path>) -> Result<String, String> {
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        read_auth_in(table(toml_text), base, &lookup)
            .map(|c| c.describe())
            .map_err(|e| format!("{}: {}", e.location, e.message))
    }

    /// Each source read from its table: what `describe` says, or the error's key and the
    /// start of its message. The table is `accounts[1].auth`: errors name the path given.
    #[test]
    fn sources_table() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("credentials"),
            "[basic]\nak = PROFILEAK\nsk = profile-secret\nproject_id = p1\n",
        )
        .unwrap();
        let env_keys: &[(&str, &str)] = &[
            ("HUAWEICLOUD_SDK_AK", "ENVAK"),
            ("HUAWEICLOUD_SDK_SK", "env-secret"),
        ];
        let home: &[(&str, &str)] = &[("HOME", "/nonexistent-home")];
        let file_env = [(
            "HUAWEICLOUD_SDK_CREDENTIALS_FILE",
            dir.path().join("credentials").to_str().unwrap().to_string(),
        )];
        let file_env: Vec<(&str, &str)> = file_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: Vec<(&str, &str, Vars, Result<&str, &str>)> = vec![
            (
                "static by default",
                "access_key = \"HPUAAK\"\nsecret_key = \"s\"\n",
                &[],
                Ok("static: AK/SK (SDK-HMAC-SHA256), access key HPUA…"),
            ),
            (
                "static named",
                "source = \"static\"\ntoken = \"t\"\n",
                &[],
                Ok("static: IAM token (X-Auth-Token)"),
            ),
            (
                "env",
                "source = \"env\"\n",
                env_keys,
                Ok("env: AK/SK (SDK-HMAC-SHA256), access key ENVA…"),
            ),
            (
                "env without its variables",
                "source = \"env\"\n",
                &[],
                Err("accounts[1].auth.source: HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK not set"),
            ),
            (
                "profile at a relative path",
                "source = \"profile\"\npath = \"credentials\"\n",
                &[],
                Ok("profile "),
            ),
            (
                "profile where the variable says",
                "source = \"profile\"\n",
                &file_env,
                Ok("profile "),
            ),
            (
                "profile in a home without one",
                "source = \"profile\"\n",
                home,
                Err(
                    "accounts[1].auth.source: cannot read the credentials file /nonexistent-home/.huaweicloud/credentials",
                ),
            ),
            (
                "profile with nowhere to look",
                "source = \"profile\"\n",
                &[],
                Err("accounts[1].auth.path: missing: HUAWEICLOUD_SDK_CREDENTIALS_FILE and HOME"),
            ),
            (
                "profile at a missing path",
                "source = \"profile\"\npath = \"/nonexistent/creds\"\n",
                &[],
                Err("accounts[1].auth.path: cannot read the credentials file /nonexistent/creds"),
            ),
            (
                "ecs-metadata by default",
                "source = \"ecs-metadata\"\n",
                &[],
                Ok(
                    "ecs-metadata http://169.254.169.254 (renewed 40m before expiry): none fetched yet",
                ),
            ),
            (
                "ecs-metadata tuned",
                "source = \"ecs-metadata\"\nmetadata_url = \"http://127.0.0.1:8090/md/\"\nrenew_before = \"10m\"\n",
                &[],
                Ok(
                    "ecs-metadata http://127.0.0.1:8090/md (renewed 10m before expiry): none fetched yet",
                ),
            ),
            (
                "a metadata url with a query",
                "source = \"ecs-metadata\"\nmetadata_url = \"http://127.0.0.1/?x=1\"\n",
                &[],
                Err("accounts[1].auth.metadata_url: \"http://127.0.0.1/?x=1\" has a query"),
            ),
            (
                "a metadata url that is not http",
                "source = \"ecs-metadata\"\nmetadata_url = \"ftp://x\"\n",
                &[],
                Err(
                    "accounts[1].auth.metadata_url: \"ftp://x\" must be an http:// or https:// URL",
                ),
            ),
            (
                "renew_before zero",
                "source = \"ecs-metadata\"\nrenew_before = \"0s\"\n",
                &[],
                Err("accounts[1].auth.renew_before: must be longer than 0s, e.g. \"40m\""),
            ),
            (
                "renew_before past the keys' life",
                "source = \"ecs-metadata\"\nrenew_before = \"2d\"\n",
                &[],
                Err("accounts[1].auth.renew_before: 2d is longer than 1d"),
            ),
            (
                "an unknown source",
                "source = \"imds\"\n",
                &[],
                Err("accounts[1].auth.source: \"imds\" is not a credential source"),
            ),
            (
                "an unknown key",
                "source = \"env\"\nrenew_befor = \"1m\"\n",
                &[],
                Err(
                    "accounts[1].auth.renew_befor: unknown key renew_befor (did you mean renew_before?)",
                ),
            ),
            (
                "a static key with env",
                "source = \"env\"\naccess_key = \"AK\"\n",
                env_keys,
                Err(
                    "accounts[1].auth.access_key: only goes with source = \"static\", and source is \"env\"; source = \"env\" reads the keys from HUAWEICLOUD_SDK_AK",
                ),
            ),
            (
                "a metadata key with static keys",
                "access_key = \"AK\"\nsecret_key = \"s\"\nmetadata_url = \"http://127.0.0.1\"\n",
                &[],
                Err(
                    "accounts[1].auth.metadata_url: only goes with source = \"ecs-metadata\", and source is \"static\"; remove it, or set source = \"ecs-metadata\"",
                ),
            ),
            (
                "a profile key with ecs-metadata",
                "source = \"ecs-metadata\"\npath = \"/c\"\n",
                &[],
                Err("accounts[1].auth.path: only goes with source = \"profile\""),
            ),
            (
                "a secret file with the profile",
                "source = \"profile\"\npath = \"credentials\"\nsecret_key_file = \"/sk\"\n",
                &[],
                Err("accounts[1].auth.secret_key_file: only goes with source = \"static\""),
            ),
            (
                "static with nothing",
                "",
                &[],
                Err("accounts[1].auth: no credentials"),
            ),
        ];
        for (name, text, env, want) in cases {
            match (read(text, env, Some(dir.path())), want) {
                (Ok(got), Ok(want)) => assert!(got.starts_with(want), "{name}: {got}"),
                (Err(got), Err(want)) => assert!(got.starts_with(want), "{name}: {got}"),
                (got, want) => panic!("{name}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_source_project_id_is_checked_and_secrets_stay_out_of_errors() {
        let env: &[(&str, &str)] = &[
            ("HUAWEICLOUD_SDK_AK", "ENVAK"),
            ("HUAWEICLOUD_SDK_SK", "hunter2-env-secret"),
            ("HUAWEICLOUD_SDK_PROJECT_ID", "p 1"),
        ];
        let e = read("source = \"env\"\n", env, None).unwrap_err();
        assert!(e.contains("has a space or control character"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = read(
            "source = \"env\"\nsecret_key = \"hunter2-inline\"\n",
            env,
            None,
        )
        .unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn every_key_is_known_whatever_the_source() {
        let t = table("source = \"env\"\n");
        let known = t.known_keys();
        let lookup = |name: &str| match name {
            "HUAWEICLOUD_SDK_AK" => Some("AK".to_string()),
            "HUAWEICLOUD_SDK_SK" => Some("SK".to_string()),
            _ => None,
        };
        read_auth_in(t, None, &lookup).unwrap();
        // Entries of arrays are left out of the known keys; an `[api.auth]` table's are kept.
        let t = table_at("api.auth", "source = \"env\"\n");
        let known_api = t.known_keys();
        read_auth_in(t, None, &lookup).unwrap();
        let keys = known_api.borrow();
        for key in [
            "source",
            "metadata_url",
            "renew_before",
            "path",
            "token_file",
        ] {
            assert!(keys.contains(&format!("api.auth.{key}")), "{key}: {keys:?}");
        }
        assert!(known.borrow().is_empty());
    }
}
