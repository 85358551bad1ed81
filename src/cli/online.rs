//! `recwatch check --online`: one signed request with each account (`[api]`, or each of
//! `[[accounts]]`), and what its answer says about the endpoint and the credentials. The request is a job GET for an id that does
//! not exist: RTC's "not found" (RTC.00001003) comes only after the gateway accepted the
//! signature, so it proves both without touching a real job. What an answer means is decided
//! by [`verdict`] (pure, table test).

use super::emit;
use crate::config::Config;
use crate::exit::{EXIT_CONFIG, EXIT_UNAVAILABLE, StartError};
use recwatch_rtc::client::{ErrorKind, RtcClient, RtcError};

/// The job id asked for: no RTC job has it (RTC's ids are 32 hex digits).
const PROBE_JOB: &str = "recwatch-check-online";

/// What one answer says: fine, or the problem with the exit code `check` ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Works(String),
    Fails(StartError),
}

/// Makes the request with each account and prints each verdict, naming the account when
/// there are several; the first problem, if any.
pub(super) async fn check_online(c: &Config) -> std::io::Result<Option<StartError>> {
    if !c.several_accounts() {
        return check_account(c, &Probed::api()).await;
    }
    let mut first = None;
    for (i, a) in c.all_accounts().enumerate() {
        let Some(narrowed) = c.narrowed(&a.name) else {
            continue;
        };
        let probed = Probed::account(i, &a.name);
        let problem = check_account(&narrowed, &probed).await?;
        first = first.or(problem);
    }
    Ok(first)
}

/// Which account a verdict is about: how its line starts and how its keys are named.
struct Probed {
    /// After `online`: "" for `[api]`, else "account NAME: ".
    prefix: String,
    /// The account's section as an error names its keys: `api`, or `accounts[1] ("south")`.
    section: String,
}

impl Probed {
    fn api() -> Probed {
        Probed {
            prefix: String::new(),
            section: "api".into(),
        }
    }

    fn account(i: usize, name: &str) -> Probed {
        Probed {
            prefix: format!("account {name}: "),
            section: format!("accounts[{i}] ({name:?})"),
        }
    }
}

/// The request with `c.api` (the account's, `c` narrowed to it); the problem, if any.
async fn check_account(c: &Config, probed: &Probed) -> std::io::Result<Option<StartError>> {
    let prefix = &probed.prefix;
    let client = match RtcClient::new(&c.api.client_config()) {
        Ok(client) => client,
        Err(e) => {
            let e = StartError {
                exit: EXIT_CONFIG,
                message: format!("{prefix}cannot build the HTTP client: {e:#}"),
            };
            out!("  online     ERROR {e}")?;
            return Ok(Some(e));
        }
    };
    // An app of this configuration, so a refusal about the app itself is not mistaken for one
    // about the account; any app id will do when there is none.
    let app = c
        .jobs
        .first()
        .map(|j| j.app_id())
        .or_else(|| {
            c.apps
                .iter()
                .find(|a| c.account_of_app(&a.app_id).name == c.api.name)
                .or(c.apps.first())
                .map(|a| a.app_id.as_str())
        })
        .unwrap_or("recwatch-check");
    let answer = client.get_job(app, PROBE_JOB).await.map(|_| ());
    match verdict(&answer, c.api.endpoint.as_str(), &probed.section) {
        Verdict::Works(text) => {
            out!("  online     {prefix}{text}")?;
            Ok(None)
        }
        Verdict::Fails(mut e) => {
            e.message = format!("{prefix}{}", e.message);
            out!("  online     ERROR {e}")?;
            Ok(Some(e))
        }
    }
}

/// What the answer to the probe says about `endpoint` and the credentials of the account
/// whose keys are `section`'s (`api`, or `accounts[i] ("name")`). Pure.
fn verdict(answer: &Result<(), RtcError>, endpoint: &str, section: &str) -> Verdict {
    let fails = |exit: u8, message: String| Verdict::Fails(StartError { exit, message });
    let e = match answer {
        Ok(()) => {
            return Verdict::Works(format!(
                "{endpoint} answered a signed request: endpoint and credentials work"
            ));
        }
        Err(e) => e,
    };
    let html = [e.error_msg.as_deref(), e.detail.as_deref()]
        .into_iter()
        .flatten()
        .any(|t| {
            let t = t.to_ascii_lowercase();
            t.contains("<html") || t.contains("<!doctype")
        });
    match e.kind {
        ErrorKind::NotFound => Verdict::Works(format!(
            "{endpoint} answered a signed request (\"not found\" for a job id that does not exist, as expected): endpoint and credentials work"
        )),
        ErrorKind::Unauthorized => fails(
            EXIT_CONFIG,
            format!(
                "credentials refused by {endpoint}: check {section}.auth (access_key and secret_key, or token) and {section}.project_id ({e}); after 5 refusals the gateway locks the key for 5 minutes"
            ),
        ),
        ErrorKind::EndpointNotFound
        | ErrorKind::Redirect
        | ErrorKind::BadResponse
        | ErrorKind::NoState
        | ErrorKind::WrongJob
        | ErrorKind::Rejected
            if html =>
        {
            fails(
                EXIT_CONFIG,
                format!(
                    "{endpoint} answers with an HTML page, not the RTC API: check {section}.endpoint (a proxy or login page in the way?) ({e})"
                ),
            )
        }
        ErrorKind::EndpointNotFound
        | ErrorKind::Redirect
        | ErrorKind::BadResponse
        | ErrorKind::NoState
        | ErrorKind::WrongJob => fails(
            EXIT_CONFIG,
            format!("{endpoint} does not answer like the RTC API: check {section}.endpoint ({e})"),
        ),
        ErrorKind::Rejected => fails(
            EXIT_CONFIG,
            format!(
                "{endpoint} refused the request: check {section}.endpoint and {section}.project_id ({e})"
            ),
        ),
        ErrorKind::Connection => fails(
            EXIT_UNAVAILABLE,
            format!(
                "cannot connect to {endpoint} ({e}): check {section}.endpoint, DNS and the firewall"
            ),
        ),
        ErrorKind::Timeout => fails(
            EXIT_UNAVAILABLE,
            format!("{endpoint} did not answer within {section}.timeout ({e})"),
        ),
        ErrorKind::Throttled | ErrorKind::Server => fails(
            EXIT_UNAVAILABLE,
            format!("{endpoint} could not answer now ({e}); try again"),
        ),
        // Nothing was sent: the credential source (the ECS metadata service) gave no keys.
        ErrorKind::CredentialsUnavailable => fails(
            EXIT_UNAVAILABLE,
            format!(
                "no credentials to sign a request to {endpoint} with: {}",
                e.cause()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: ErrorKind, status: Option<u16>, msg: Option<&str>) -> Result<(), RtcError> {
        Err(RtcError {
            kind,
            status,
            error_code: None,
            error_msg: msg.map(String::from),
            request_id: None,
            detail: None,
            clock_skew_minutes: None,
            not_sent: false,
        })
    }

    #[test]
    fn each_answer_names_what_works_or_what_to_fix() {
        let cases = [
            ("a job", Ok(()), None, "endpoint and credentials work"),
            (
                "not found",
                error(ErrorKind::NotFound, Some(404), None),
                None,
                "endpoint and credentials work",
            ),
            (
                "a wrong secret key",
                error(ErrorKind::Unauthorized, Some(401), None),
                Some(EXIT_CONFIG),
                "credentials refused",
            ),
            (
                "an HTML page",
                error(ErrorKind::BadResponse, Some(200), Some("<HTML><body>hi")),
                Some(EXIT_CONFIG),
                "answers with an HTML page",
            ),
            (
                "an HTML 404",
                error(
                    ErrorKind::EndpointNotFound,
                    Some(404),
                    Some("<!DOCTYPE html>"),
                ),
                Some(EXIT_CONFIG),
                "answers with an HTML page",
            ),
            (
                "another API",
                error(ErrorKind::EndpointNotFound, Some(404), None),
                Some(EXIT_CONFIG),
                "does not answer like the RTC API",
            ),
            (
                "connection refused",
                error(ErrorKind::Connection, None, None),
                Some(EXIT_UNAVAILABLE),
                "cannot connect",
            ),
            (
                "a timeout",
                error(ErrorKind::Timeout, None, None),
                Some(EXIT_UNAVAILABLE),
                "did not answer within api.timeout",
            ),
            (
                "a server error",
                error(ErrorKind::Server, Some(500), None),
                Some(EXIT_UNAVAILABLE),
                "try again",
            ),
        ];
        for (name, answer, exit, says) in cases {
            let (got_exit, text) = match verdict(&answer, "https://e.example/", "api") {
                Verdict::Works(t) => (None, t),
                Verdict::Fails(e) => (Some(e.exit), e.message),
            };
            assert_eq!(got_exit, exit, "{name}: {text}");
            assert!(text.contains(says), "{name}: {text}");
        }
        // With several accounts, the fix names the account's own keys.
        let south = "accounts[1] (\"south\")";
        let refused = error(ErrorKind::Unauthorized, Some(401), None);
        match verdict(&refused, "https://e.example/", south) {
            Verdict::Fails(e) => assert!(
                e.message
                    .contains("check accounts[1] (\"south\").auth (access_key"),
                "{}",
                e.message
            ),
            Verdict::Works(t) => panic!("refused credentials work: {t}"),
        }
    }
}
