//! Who may write: every endpoint that changes something (`POST`/`DELETE /api/v1/...`) takes a
//! [`WriteAccess`] argument, and that extractor is the one place the bearer token is checked.
//! `Authorization: Bearer <http.token>`: missing or wrong is 401; with no token configured
//! every write is 403 and says how to set one, so an endpoint that anyone on the machine can
//! reach never changes the watch list (or silences alerts) by default.
//!
//! The comparison is of the two values' SHA-256 digests, in constant time: neither the time
//! taken nor an early exit tells a caller how much of a guess was right, or the token's length.

use super::AppState;
use crate::secret::Secret;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use tracing::warn;

/// Proof that the request carried the configured bearer token: a handler that takes this as an
/// argument only runs for authorised writes.
#[derive(Debug, Clone, Copy)]
pub struct WriteAccess;

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header (or another scheme).
    Missing,
    /// A bearer token that is not `http.token`.
    Wrong,
    /// `http.token` is not set: writes are off.
    NotConfigured,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Missing | Refusal::Wrong => StatusCode::UNAUTHORIZED,
            Refusal::NotConfigured => StatusCode::FORBIDDEN,
        }
    }

    /// The `result` label of `recwatch_api_writes_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Missing | Refusal::Wrong => "unauthorized",
            Refusal::NotConfigured => "forbidden",
        }
    }

    /// What the caller is told: the fix, never the token.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "this endpoint changes things and needs `Authorization: Bearer <token>` with the token set as [http] token (or token_file) in recwatch's configuration"
            }
            Refusal::Wrong => "the bearer token is not the one set as [http] token",
            Refusal::NotConfigured => {
                "writes are off: no [http] token is configured. Set [http] token = \"...\" (or token_file = \"/path\", or RECWATCH_HTTP__TOKEN), reload recwatch, and send it as `Authorization: Bearer <token>`"
            }
        }
    }
}

/// Whether `authorization` carries `token`. Pure: the table test below covers each case.
pub fn check(token: Option<&Secret>, authorization: Option<&HeaderValue>) -> Result<(), Refusal> {
    let token = token.ok_or(Refusal::NotConfigured)?;
    let given = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or(Refusal::Missing)?;
    if same(given.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::Wrong)
    }
}

/// The credentials of a `Bearer` authorization (the scheme is case-insensitive, RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty()).then_some(rest)
}

/// Equal, compared in constant time over fixed-length digests.
fn same(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Counts one answer of a write endpoint in `recwatch_api_writes_total{result}`.
pub fn count_write(result: &'static str) {
    metrics::counter!("recwatch_api_writes_total", "result" => result).increment(1);
}

impl FromRequestParts<AppState> for WriteAccess {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<WriteAccess, Response> {
        let token = state.config.borrow().http.token.clone();
        match check(token.as_ref(), parts.headers.get(header::AUTHORIZATION)) {
            Ok(()) => Ok(WriteAccess),
            Err(refusal) => {
                let peer = parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.to_string())
                    .unwrap_or_default();
                warn!(
                    %peer,
                    method = %parts.method,
                    path = %parts.uri.path(),
                    status = refusal.status().as_u16(),
                    "API write refused: {}",
                    refusal.message()
                );
                count_write(refusal.label());
                let mut response =
                    (refusal.status(), format!("{}\n", refusal.message())).into_response();
                if refusal.status() == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"recwatch\""),
                    );
                }
                Err(response)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_check_table() {
        let token = Secret::new("s3cret-token");
        let h = |s: &'static str| Some(HeaderValue::from_static(s));
        type Case<'a> = (
            &'a str,
            Option<&'a Secret>,
            Option<HeaderValue>,
            Result<(), Refusal>,
        );
        let cases: [Case; 9] = [
            (
                "right token",
                Some(&token),
                h("Bearer s3cret-token"),
                Ok(()),
            ),
            (
                "scheme in any case, extra spaces",
                Some(&token),
                h("bearer   s3cret-token "),
                Ok(()),
            ),
            ("no header", Some(&token), None, Err(Refusal::Missing)),
            (
                "another scheme",
                Some(&token),
                h("Basic czNjcmV0LXRva2Vu"),
                Err(Refusal::Missing),
            ),
            (
                "empty bearer",
                Some(&token),
                h("Bearer "),
                Err(Refusal::Missing),
            ),
            (
                "wrong token",
                Some(&token),
                h("Bearer nope"),
                Err(Refusal::Wrong),
            ),
            (
                "a prefix of the token",
                Some(&token),
                h("Bearer s3cret"),
                Err(Refusal::Wrong),
            ),
            (
                "no token configured, even with a header",
                None,
                h("Bearer s3cret-token"),
                Err(Refusal::NotConfigured),
            ),
            (
                "no token configured",
                None,
                None,
                Err(Refusal::NotConfigured),
            ),
        ];
        for (name, token, header, want) in cases {
            assert_eq!(check(token, header.as_ref()), want, "{name}");
        }
    }

    #[test]
    fn refusals_have_their_status_and_never_the_token() {
        assert_eq!(Refusal::Missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(Refusal::Wrong.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(Refusal::NotConfigured.status(), StatusCode::FORBIDDEN);
        assert!(Refusal::NotConfigured.message().contains("[http] token"));
    }
}
