//! `[http] read_token`: when set, the status page and the read API (`/`, `/jobs/...`,
//! `/alerts`, `GET /api/v1/...`) answer only a request that carries it, as
//! `Authorization: Bearer <token>` or as the cookie that `?token=<token>` sets once (then a
//! redirect drops the token from the address bar and the history). `/healthz`, `/readyz`,
//! `/metrics` and the page's CSS and script stay open. Not set: everything is open, as before.
//!
//! The cookie never holds the token itself but an HMAC of a fixed text under it, so a copied
//! cookie does not reveal the token, and changing the token logs every browser out. Tokens and
//! cookies are compared in constant time. This guard is separate from the write endpoints'
//! `[http] token`: a wall screen can read without being able to change anything.

use super::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "recwatch_read";
/// The cookie lasts this long (a wall screen restarts rarely); a new token ends it sooner.
const COOKIE_MAX_AGE_S: u64 = 30 * 24 * 3600;

/// What a request may do, decided from its credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    /// No read token is configured, or the request carries it.
    Allowed,
    /// `?token=` carried it: set the cookie and send the browser to `location`, the same
    /// address without the token.
    SetCookie { location: String },
    /// Missing or wrong.
    Denied,
}

/// The cookie's value for a token: hex HMAC-SHA256 of a fixed text, keyed by the token.
pub fn cookie_value(token: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(b"recwatch read cookie v1");
    hex::encode(mac.finalize().into_bytes())
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The decision for a request to `path` with `query`, given its `Authorization` and `Cookie`
/// headers. Pure; the table test below names each case.
pub fn decide(
    token: Option<&str>,
    authorization: Option<&str>,
    cookies: Option<&str>,
    path: &str,
    query: Option<&str>,
) -> Access {
    let Some(token) = token else {
        return Access::Allowed;
    };
    if let Some(bearer) = authorization.and_then(|h| h.strip_prefix("Bearer ")) {
        if same(bearer.trim(), token) {
            return Access::Allowed;
        }
    }
    let want = cookie_value(token);
    let cookie_ok = cookies
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && same(value, &want));
    let pairs: Vec<(String, String)> = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let given = pairs.iter().find(|(k, _)| k == "token").map(|(_, v)| v);
    match given {
        // The token in the address: take it out whether or not a cookie is already set.
        Some(t) if same(t, token) => {
            let rest: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| k != "token").collect();
            let location = if rest.is_empty() {
                path.to_string()
            } else {
                let mut s = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in rest {
                    s.append_pair(k, v);
                }
                format!("{path}?{}", s.finish())
            };
            Access::SetCookie { location }
        }
        Some(_) => Access::Denied,
        None if cookie_ok => Access::Allowed,
        None => Access::Denied,
    }
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The guard in front of the read routes.
pub(super) async fn read_guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let (token, secure) = {
        let config = s.config.borrow();
        (
            config
                .http
                .read_token
                .as_ref()
                .map(|t| t.expose().to_string()),
            config
                .http
                .public_url
                .as_ref()
                .is_some_and(|u| u.scheme() == "https"),
        )
    };
    let access = decide(
        token.as_deref(),
        header_str(req.headers(), header::AUTHORIZATION),
        header_str(req.headers(), header::COOKIE),
        req.uri().path(),
        req.uri().query(),
    );
    match access {
        Access::Allowed => next.run(req).await,
        Access::SetCookie { location } => {
            let token = token.expect("only with a token");
            let cookie = format!(
                "{COOKIE}={}; Path=/; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Lax{}",
                cookie_value(&token),
                if secure { "; Secure" } else { "" }
            );
            (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, cookie),
                    (header::LOCATION, location),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                    (header::REFERRER_POLICY, "no-referrer".to_string()),
                ],
            )
                .into_response()
        }
        Access::Denied => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"recwatch\"")],
            "this page needs the read token ([http] read_token): send Authorization: Bearer <token>, or open the page once with ?token=<token> in a browser (it sets a cookie)\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_table() {
        let good = format!("{COOKIE}={}", cookie_value("s3cret"));
        let other = format!("{COOKIE}={}", cookie_value("old-token"));
        let both = format!("theme=dark; {good}");
        let allowed = || Access::Allowed;
        let to = |l: &str| Access::SetCookie {
            location: l.to_string(),
        };
        #[allow(clippy::type_complexity)]
        let cases: [(
            &str,
            Option<&str>,
            Option<&str>,
            Option<&str>,
            Option<&str>,
            Access,
        ); 13] = [
            (
                "no token configured: open",
                None,
                None,
                None,
                None,
                allowed(),
            ),
            (
                "no token configured, junk given: open",
                None,
                Some("Bearer x"),
                None,
                Some("token=y"),
                allowed(),
            ),
            (
                "nothing given",
                Some("s3cret"),
                None,
                None,
                None,
                Access::Denied,
            ),
            (
                "bearer",
                Some("s3cret"),
                Some("Bearer s3cret"),
                None,
                None,
                allowed(),
            ),
            (
                "wrong bearer",
                Some("s3cret"),
                Some("Bearer s3cre"),
                None,
                None,
                Access::Denied,
            ),
            (
                "basic is not bearer",
                Some("s3cret"),
                Some("Basic czNjcmV0"),
                None,
                None,
                Access::Denied,
            ),
            (
                "cookie among others",
                Some("s3cret"),
                None,
                Some(&both),
                None,
                allowed(),
            ),
            (
                "cookie of an old token",
                Some("s3cret"),
                None,
                Some(&other),
                None,
                Access::Denied,
            ),
            (
                "the token itself as cookie is not the cookie",
                Some("s3cret"),
                None,
                Some("recwatch_read=s3cret"),
                None,
                Access::Denied,
            ),
            (
                "?token= alone",
                Some("s3cret"),
                None,
                None,
                Some("token=s3cret"),
                to("/jobs"),
            ),
            (
                "?token= with filters kept",
                Some("s3cret"),
                None,
                None,
                Some("state=STOPPED&token=s3cret&q=a+b"),
                to("/jobs?state=STOPPED&q=a+b"),
            ),
            (
                "wrong ?token=",
                Some("s3cret"),
                None,
                Some(&good),
                Some("token=nope"),
                Access::Denied,
            ),
            (
                "percent-encoded ?token=",
                Some("s 3"),
                None,
                None,
                Some("token=s%203"),
                to("/jobs"),
            ),
        ];
        for (name, token, auth, cookie, query, want) in cases {
            assert_eq!(decide(token, auth, cookie, "/jobs", query), want, "{name}");
        }
    }

    #[test]
    fn the_cookie_does_not_hold_the_token() {
        let v = cookie_value("s3cret");
        assert_eq!(v.len(), 64);
        assert!(!v.contains("s3cret"));
        assert_ne!(v, cookie_value("s3cret2"));
    }
}
