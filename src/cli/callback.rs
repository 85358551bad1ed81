//! `recwatch callback show APP_ID` and `recwatch callback set APP_ID URL`: an app's one
//! record-callback URL at RTC (`GET`/`PUT /v2/apps/{app_id}/record-callback`), read and
//! replaced with the `[api]` credentials and endpoint.
//!
//! RTC keeps one URL per app, and it is often already someone's (the application that
//! fetches its recordings). So `set` reads the URL first, registers the new one with the key
//! from the app's `[[apps]]` entry (the key recwatch verifies the callbacks with), and says
//! what it replaced; when that was another receiver, it says how to keep it fed through
//! `forward_to`. What the replaced URL was is decided by a pure function ([`replaced`]).
//!
//! Exit codes: 0 done; 64 an app id the config has no `[[apps]]` entry for (a name on the
//! command line the config does not know is a usage error, in every command); 78 a config
//! that cannot do it (a key RTC would refuse); 69 the API could not be reached or failed (a retry may help); 1 the API
//! refused (credentials, an unknown app). A URL RTC would refuse is a usage error (2).

use super::{complain, emit, print_table};
use crate::config::{AppConfig, Config, ConfigError};
use crate::exit::{EXIT_UNAVAILABLE, StartError};
use recwatch_rtc::client::{ErrorKind, RtcClient, RtcError};
use recwatch_rtc::registration::{CallbackUpdate, Registration};

#[derive(clap::Subcommand, Debug)]
pub enum CallbackCommand {
    /// Print the URL RTC posts this app's record callbacks to, and whether they are signed
    /// with the app's `[[apps]]` auth_key.
    Show {
        /// The RTC app id.
        app_id: String,
    },
    /// Register URL as the app's record-callback URL (RTC keeps one per app), signed with
    /// the auth_key of the app's `[[apps]]` entry; prints the URL it replaces.
    Set {
        /// The RTC app id; it needs an `[[apps]]` entry with its auth_key.
        app_id: String,
        /// Where RTC should POST the events: recwatch's receiver as the internet reaches it,
        /// e.g. <https://recwatch.example.com/rtc/record-callback>.
        #[arg(value_parser = parse_url)]
        url: String,
    },
}

fn parse_url(s: &str) -> Result<String, String> {
    CallbackUpdate::new(s, None).map(|u| u.url)
}

pub(super) async fn callback(config: &Config, command: CallbackCommand) -> anyhow::Result<()> {
    let client = RtcClient::new(&config.api.client_config())?;
    match command {
        CallbackCommand::Show { app_id } => show(config, &client, &app_id).await,
        CallbackCommand::Set { app_id, url } => set(config, &client, &app_id, &url).await,
    }
}

async fn show(config: &Config, client: &RtcClient, app_id: &str) -> anyhow::Result<()> {
    let app = config.apps.iter().find(|a| a.app_id == app_id);
    let r = client
        .get_record_callback(app_id)
        .await
        .map_err(|e| api_error(e, app_id, "read the record callback of"))?;
    let rows = vec![
        vec!["app_id".into(), app_id.to_string()],
        vec![
            "url".into(),
            r.url.clone().unwrap_or_else(|| "(none registered)".into()),
        ],
        vec!["auth_key".into(), key_note(&r, app)],
        vec![
            "events".into(),
            match r.notify_event_subscription.is_empty() {
                true => "-".into(),
                false => r.notify_event_subscription.join(", "),
            },
        ],
        vec![
            "updated".into(),
            r.update_time.clone().unwrap_or_else(|| "-".into()),
        ],
        vec![
            "request_id".into(),
            r.request_id.clone().unwrap_or_else(|| "-".into()),
        ],
    ];
    print_table(&rows)?;
    Ok(())
}

/// What to say about the registered key, never the key itself.
fn key_note(r: &Registration, app: Option<&AppConfig>) -> String {
    match (&r.auth_key, app) {
        (None, _) => "not set: RTC sends the callbacks unsigned, and recwatch refuses unsigned callbacks (401); `recwatch callback set` registers the [[apps]] auth_key".into(),
        (Some(_), None) => "set (there is no [[apps]] entry for this app in this config: recwatch refuses its callbacks)".into(),
        (Some(k), Some(a)) if k.expose() == a.auth_key.expose() => "set, the same as this app's [[apps]] auth_key".into(),
        (Some(_), Some(_)) => "set, but not this app's [[apps]] auth_key: recwatch refuses these callbacks (401); put the app's key in auth_key, or run `recwatch callback set`".into(),
    }
}

async fn set(config: &Config, client: &RtcClient, app_id: &str, url: &str) -> anyhow::Result<()> {
    let (index, app) = config
        .apps
        .iter()
        .enumerate()
        .find(|(_, a)| a.app_id == app_id)
        .ok_or_else(|| {
            StartError::usage(format!("no [[apps]] entry has app_id {app_id:?}; add one with the app's auth_key (32 to 64 characters, the key RTC will sign the callbacks with), so recwatch can verify them"))
        })?;
    let update = CallbackUpdate::new(url, Some(app.auth_key.clone()))
        .map_err(|why| ConfigError::new(format!("apps[{index}] ({app_id:?}).auth_key"), why))?;
    for warning in receiver_warnings(config, url) {
        complain(&format!("warning: {warning}"));
    }
    let before = client
        .get_record_callback(app_id)
        .await
        .map_err(|e| api_error(e, app_id, "read the record callback of"))?;
    let after = client
        .put_record_callback(app_id, &update)
        .await
        .map_err(|e| api_error(e, app_id, "register the record callback of"))?;
    let now = after.url.as_deref().unwrap_or(url);
    out!(
        "app {app_id}: RTC now posts its record callbacks to {now}, signed with the [[apps]] auth_key"
    )?;
    let replaced = replaced(
        before.url.as_deref(),
        url,
        app.forward_to.as_ref().map(url::Url::as_str),
        &config.callback.path,
    );
    emit(&describe(&replaced, app_id))?;
    Ok(())
}

/// What `set` replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replaced {
    /// No URL was registered.
    Nothing,
    /// The same URL was registered already (the key was registered again).
    Same,
    /// The URL the app's `forward_to` relays to: it keeps getting the events.
    Forwarded(String),
    /// Another address of recwatch's own receiver (its `[callback] path`).
    Recwatch(String),
    /// Someone else's receiver, which no longer gets the events.
    Other(String),
}

/// What the URL `old` was, now that `new` replaced it. Pure.
pub fn replaced(
    old: Option<&str>,
    new: &str,
    forward_to: Option<&str>,
    callback_path: &str,
) -> Replaced {
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    let Some(old) = old.map(str::trim).filter(|o| !o.is_empty()) else {
        return Replaced::Nothing;
    };
    if same(old, new) {
        Replaced::Same
    } else if forward_to.is_some_and(|f| same(f, old)) {
        Replaced::Forwarded(old.to_string())
    } else if url::Url::parse(old).is_ok_and(|u| same(u.path(), callback_path)) {
        Replaced::Recwatch(old.to_string())
    } else {
        Replaced::Other(old.to_string())
    }
}

/// The lines `set` prints about what it replaced.
fn describe(replaced: &Replaced, app_id: &str) -> String {
    match replaced {
        Replaced::Nothing => "no URL was registered before\n".into(),
        Replaced::Same => {
            "unchanged: this URL was already registered (its key was registered again)\n".into()
        }
        Replaced::Forwarded(old) => {
            format!("replaced {old}, which this app's forward_to keeps receiving every event\n")
        }
        Replaced::Recwatch(old) => {
            format!("replaced {old} (recwatch's receiver path at another address)\n")
        }
        Replaced::Other(old) => format!(
            "replaced {old}\n\
             That was another receiver, and RTC keeps one URL per app: it gets no more events. To keep it fed, add to the [[apps]] entry with app_id = {app_id:?}:\n    \
             forward_to = {old:?}\n\
             and reload recwatch: it relays every verified event to it, re-signed with the app's key.\n"
        ),
    }
}

/// What in this config would keep the URL from reaching recwatch's receiver.
fn receiver_warnings(config: &Config, url: &str) -> Vec<String> {
    let mut out = Vec::new();
    if config.callback.listen.is_none() {
        out.push("callback.listen is not set in this config, so recwatch is not receiving callbacks; set it (e.g. \"0.0.0.0:9188\") and restart".to_string());
    }
    if let Ok(u) = url::Url::parse(url) {
        if u.path().trim_end_matches('/') != config.callback.path.trim_end_matches('/') {
            out.push(format!(
                "the URL's path {:?} is not callback.path {:?}; recwatch answers 404 on any other path",
                u.path(),
                config.callback.path
            ));
        }
    }
    out
}

/// An API failure as an error that says which app and what to check, with the exit code it
/// means: 69 when trying again may help, 1 when the API refused.
fn api_error(e: RtcError, app_id: &str, what: &str) -> anyhow::Error {
    let message = match e.kind {
        ErrorKind::NotFound => format!(
            "cannot {what} app {app_id}: RTC says the app does not exist ({e}); check the app id in the RTC console"
        ),
        _ => format!("cannot {what} app {app_id}: {}", e.cause()),
    };
    match e.kind {
        ErrorKind::Connection
        | ErrorKind::Timeout
        | ErrorKind::Server
        | ErrorKind::Throttled
        | ErrorKind::CredentialsUnavailable => anyhow::Error::new(StartError {
            exit: EXIT_UNAVAILABLE,
            message,
        }),
        _ => anyhow::anyhow!(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_table() {
        let path = "/rtc/record-callback";
        let new = "https://recwatch.example.com/rtc/record-callback";
        let mine = "https://my-app.example.com/rtc-callback";
        let cases = [
            ("nothing registered", None, None, Replaced::Nothing),
            ("an empty URL", Some(" "), None, Replaced::Nothing),
            ("the same URL", Some(new), None, Replaced::Same),
            (
                "the same URL but a trailing slash",
                Some("https://recwatch.example.com/rtc/record-callback/"),
                None,
                Replaced::Same,
            ),
            (
                "the user's receiver",
                Some(mine),
                None,
                Replaced::Other(mine.into()),
            ),
            (
                "the user's receiver, already forwarded to",
                Some(mine),
                Some(mine),
                Replaced::Forwarded(mine.into()),
            ),
            (
                "recwatch at its old address",
                Some("http://10.0.0.5:9188/rtc/record-callback"),
                None,
                Replaced::Recwatch("http://10.0.0.5:9188/rtc/record-callback".into()),
            ),
            (
                "not a URL at all",
                Some("my-app"),
                None,
                Replaced::Other("my-app".into()),
            ),
        ];
        for (name, old, forward_to, want) in cases {
            assert_eq!(replaced(old, new, forward_to, path), want, "{name}");
        }
    }

    #[test]
    fn describe_suggests_forward_to_only_for_another_receiver() {
        let other = describe(&Replaced::Other("https://a.example/cb".into()), "app-1");
        assert!(other.contains("replaced https://a.example/cb"), "{other}");
        assert!(
            other.contains("forward_to = \"https://a.example/cb\""),
            "{other}"
        );
        assert!(other.contains("app_id = \"app-1\""), "{other}");
        for r in [
            Replaced::Nothing,
            Replaced::Same,
            Replaced::Forwarded("https://a.example/cb".into()),
            Replaced::Recwatch("http://10.0.0.5:9188/rtc/record-callback".into()),
        ] {
            assert!(!describe(&r, "app-1").contains("forward_to ="), "{r:?}");
        }
    }

    #[test]
    fn key_note_table() {
        use crate::secret::Secret;
        let app = AppConfig {
            account: None,
            app_id: "a".into(),
            auth_key: Secret::new("the-configured-key"),
            name: None,
            notify: None,
            forward_to: None,
            discover: false,
            max_discovered: 1,
        };
        let with = |key: Option<&str>| Registration {
            auth_key: key.map(Secret::new),
            ..Registration::default()
        };
        let cases = [
            ("unsigned", with(None), Some(&app), "not set"),
            (
                "no [[apps]] entry",
                with(Some("k")),
                None,
                "no [[apps]] entry",
            ),
            (
                "the configured key",
                with(Some("the-configured-key")),
                Some(&app),
                "the same as",
            ),
            ("another key", with(Some("k")), Some(&app), "not this app's"),
        ];
        for (name, r, app, want) in cases {
            let note = key_note(&r, app);
            assert!(note.contains(want), "{name}: {note}");
            assert!(!note.contains("the-configured-key"), "{name}: {note}");
        }
    }

    #[test]
    fn urls_rtc_refuses_are_usage_errors() {
        assert!(parse_url("https://r.example/rtc/record-callback").is_ok());
        for bad in [
            "r.example/cb",
            "ftp://r.example/cb",
            "https://r.example/a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
