//! `[callback]` and `[[apps]]`: where recwatch receives RTC's record callbacks, and the apps
//! whose callbacks it accepts (each with the `auth_key` that verifies `X-Rtc-Signature`).

use super::defaults;
use super::raw::Table;
use super::{ConfigError, NotifyConfig};
use crate::secret::Secret;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct CallbackConfig {
    /// `None` turns the receiver off (the default).
    pub listen: Option<SocketAddr>,
    /// The one path that takes POSTs; anything else is 404.
    pub path: String,
}

impl Default for CallbackConfig {
    fn default() -> CallbackConfig {
        CallbackConfig {
            listen: None,
            path: defaults::CALLBACK_PATH.to_string(),
        }
    }
}

/// One RTC app whose callbacks recwatch accepts.
#[derive(Clone, Debug)]
pub struct AppConfig {
    pub app_id: String,
    /// Verifies `X-Rtc-Signature`; prints as `***`.
    pub auth_key: Secret,
    pub name: Option<String>,
    /// Channels for this app's discovered jobs (checked to exist).
    pub notify: Option<Vec<String>>,
    /// Where each verified event is relayed, byte for byte and re-signed with `auth_key`
    /// (through the outbox: `deliver::forward`). It may carry a token: never logged.
    pub forward_to: Option<url::Url>,
    /// `discover = true`: a verified callback for a job nobody watches starts watching it
    /// (run-time list, source `callback`).
    pub discover: bool,
    /// `max_discovered`: the most jobs discovery may add for this app (run-time entries of
    /// source `callback`); past it discovery stops for the app.
    pub max_discovered: u64,
    /// `account`: the account that polls this app's jobs (a job's own `account` wins); `None`:
    /// the first account.
    pub account: Option<super::AccountRef>,
}

pub(super) fn read_callback(mut t: Table) -> Result<CallbackConfig, ConfigError> {
    let listen = match t.string("listen")? {
        None => None,
        Some(s) if s.trim().is_empty() => None,
        Some(s) => Some(s.trim().parse().map_err(|_| {
            t.err("listen", format!("{s:?} is not an address; use IP:PORT like \"0.0.0.0:9188\", or \"\" to turn the receiver off"))
        })?),
    };
    let path = match t.string("path")? {
        None => defaults::CALLBACK_PATH.to_string(),
        Some(p) => {
            if !p.starts_with('/') || p.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(t.err(
                    "path",
                    format!("{p:?} is not a URL path; use one that starts with / and has no spaces, like \"{}\"", defaults::CALLBACK_PATH),
                ));
            }
            p
        }
    };
    t.finish()?;
    Ok(CallbackConfig { listen, path })
}

/// The keys an `[[apps]]` entry may have.
const APP_KEYS: &[&str] = &[
    "app_id",
    "auth_key",
    "auth_key_file",
    "name",
    "notify",
    "forward_to",
    "discover",
    "max_discovered",
    "remediate",
    "account",
];

pub(super) fn read_apps(
    tables: Vec<Table>,
    notify: &NotifyConfig,
    callback: &CallbackConfig,
    base: Option<&Path>,
    remediate: &mut std::collections::BTreeMap<String, bool>,
    accounts: &[super::AccountRef],
) -> Result<Vec<AppConfig>, ConfigError> {
    let channels = notify.channel_names();
    let mut seen = BTreeSet::new();
    let mut apps = Vec::new();
    for mut t in tables {
        let app = read_app(&mut t, &channels, base, remediate, accounts)?;
        if !seen.insert(app.app_id.clone()) {
            return Err(t.err(
                "app_id",
                format!(
                    "{:?} is configured twice; keep one [[apps]] entry per app",
                    app.app_id
                ),
            ));
        }
        apps.push(app);
    }
    if callback.listen.is_some() && apps.is_empty() {
        return Err(ConfigError::new(
            "callback.listen",
            "is set but no [[apps]] is configured, so every callback would be refused; add an [[apps]] entry with app_id and auth_key, or remove callback.listen",
        ));
    }
    Ok(apps)
}

/// One `[[apps]]` entry, every key checked in the order its errors are told; `t.path` names
/// the app from its id on.
fn read_app(
    t: &mut Table,
    channels: &[&str],
    base: Option<&Path>,
    remediate: &mut std::collections::BTreeMap<String, bool>,
    accounts: &[super::AccountRef],
) -> Result<AppConfig, ConfigError> {
    // Before the required keys: a misspelt `appid` is the error, not a missing `app_id`.
    t.known(APP_KEYS)?;
    let app_id = t.required_string("app_id")?;
    super::validate::check_id(t, "app_id", &app_id)?;
    t.path = format!("{} ({app_id:?})", t.path);
    let auth_key = read_auth_key(t, base)?;
    let name = read_name(t)?;
    let forward_to = match t.nonempty_string("forward_to")? {
        None => None,
        Some(u) => Some(super::validate::parse_http_url(&u).map_err(|e| {
            t.err(
                "forward_to",
                format!("{e}; give the URL of your own callback receiver, which gets each event re-signed with this app's auth_key"),
            )
        })?),
    };
    let discover = t.boolean("discover")?.unwrap_or(false);
    let max_discovered =
        super::list_bounds::read_cap(t, "max_discovered", defaults::APP_MAX_DISCOVERED)?;
    // `remediate = true|false` overrides `[remediate] enabled` for this app's jobs that
    // have no `[[jobs]]` entry of their own (discovered, or added at run time).
    if let Some(on) = t.boolean("remediate")? {
        remediate.insert(app_id.clone(), on);
    }
    let notify_names = t.string_list("notify")?;
    super::validate::check_channels(t, channels, notify_names.as_deref())?;
    let account = super::accounts::read_account_ref(t, accounts)?;
    t.finish()?;
    Ok(AppConfig {
        account,
        app_id,
        auth_key,
        name,
        notify: notify_names,
        forward_to,
        discover,
        max_discovered,
    })
}

/// The app's callback key: required, and of a length RTC's console takes.
fn read_auth_key(t: &mut Table, base: Option<&Path>) -> Result<Secret, ConfigError> {
    let auth_key = t.secret("auth_key", base)?.ok_or_else(|| {
        t.err(
            "auth_key",
            "missing: set auth_key (or auth_key_file), the app's callback key from the RTC console; recwatch refuses callbacks it cannot verify",
        )
    })?;
    // RTC's console takes only 32 to 64 characters: a shorter key is a typo or a
    // placeholder, and `run` would verify every callback against a key RTC never signs with.
    let chars = auth_key.expose().chars().count();
    if !recwatch_rtc::registration::AUTH_KEY_CHARS.contains(&chars) {
        return Err(t.err(
            "auth_key",
            format!(
                "has {chars} characters; RTC's console takes 32 to 64: copy the app's callback key from the console whole"
            ),
        ));
    }
    Ok(auth_key)
}

/// The app's display name, printable: names go into log lines.
fn read_name(t: &mut Table) -> Result<Option<String>, ConfigError> {
    let name = t.nonempty_string("name")?;
    if name
        .as_deref()
        .is_some_and(|n| n.chars().any(char::is_control))
    {
        return Err(t.err(
            "name",
            "has a control character; names go into log lines, so use printable text",
        ));
    }
    Ok(name)
}

/// A warning for each group of apps that share one `auth_key` (issue 22, item 5): their
/// callbacks still land (the receiver takes the app the body names among the keys that
/// verify), but a body that names no app is credited to the first, and a leaked key speaks
/// for all of them. Names the apps, never the key.
pub fn shared_key_warnings(apps: &[AppConfig]) -> Vec<String> {
    let mut out = Vec::new();
    let mut grouped = vec![false; apps.len()];
    for (i, a) in apps.iter().enumerate() {
        if grouped[i] {
            continue;
        }
        let mut same = Vec::new();
        for (j, b) in apps.iter().enumerate().skip(i + 1) {
            if !grouped[j] && b.auth_key.expose() == a.auth_key.expose() {
                grouped[j] = true;
                same.push(b.app_id.as_str());
            }
        }
        if !same.is_empty() {
            out.push(format!(
                "apps {:?} and {} share one auth_key: a callback whose body names no app_id is taken as {:?}'s, and whoever holds the key can sign for all of them; give each app its own key (PUT /v2/apps/{{app_id}}/record-callback)",
                a.app_id,
                same.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "),
                a.app_id
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str, key: &str) -> AppConfig {
        AppConfig {
            account: None,
            app_id: id.into(),
            auth_key: Secret::new(key),
            name: None,
            notify: None,
            forward_to: None,
            discover: false,
            max_discovered: crate::config::defaults::APP_MAX_DISCOVERED,
        }
    }

    #[test]
    fn apps_sharing_a_key_are_named_without_the_key() {
        let k1 = "0123456789abcdef0123456789abcdef";
        let k2 = "fedcba9876543210fedcba9876543210";
        let cases: [(&str, Vec<AppConfig>, usize); 4] = [
            ("one app", vec![app("a", k1)], 0),
            ("distinct keys", vec![app("a", k1), app("b", k2)], 0),
            (
                "two share",
                vec![app("a", k1), app("b", k2), app("c", k1)],
                1,
            ),
            (
                "two pairs",
                vec![app("a", k1), app("b", k2), app("c", k1), app("d", k2)],
                2,
            ),
        ];
        for (name, apps, n) in cases {
            let w = shared_key_warnings(&apps);
            assert_eq!(w.len(), n, "{name}: {w:?}");
            assert!(
                w.iter().all(|w| !w.contains(k1) && !w.contains(k2)),
                "{name}"
            );
        }
        let w = shared_key_warnings(&[app("a", k1), app("b", k2), app("c", k1)]);
        assert!(w[0].contains("\"a\" and \"c\""), "{w:?}");
    }
}
