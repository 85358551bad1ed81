//! SDK-HMAC-SHA256, the AK/SK request signature of Huawei Cloud's API gateway.
//!
//! Every step is a pure function so a test can hold each one against the vectors that the
//! official SDK's own signer produced (`shared/vectors/sdk-hmac-sha256.json`). The client signs
//! exactly the headers it sends; the simulator verifies with the same functions.

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// Header carrying the signing time, `YYYYMMDDTHHMMSSZ`.
pub const DATE_HEADER: &str = "X-Sdk-Date";
pub const DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Everything but RFC 3986 unreserved characters is encoded; the SDK keeps `~` as well.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one path segment or query part the way the SDK does.
pub fn encode(part: &str) -> String {
    utf8_percent_encode(part, UNRESERVED).to_string()
}

/// The canonical URI: decode the path, split on `/`, encode each segment, always end in `/`.
///
/// Decoding first means a `%2F` inside an id becomes a separator here, as it does in the SDK
/// (the vector `extra_slash_in_path_param_quirk`); the gateway verifies the same way.
pub fn canonical_uri(path: &str) -> String {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let mut out = decoded.split('/').map(encode).collect::<Vec<_>>().join("/");
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The canonical query: pairs sorted by key then value, each part encoded, joined by `&`.
pub fn canonical_query(pairs: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> =
        pairs.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Headers that take part in the signature: every header without `_`, lower-cased and sorted.
fn signable(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| !name.contains('_'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    out.sort();
    out
}

/// The `SignedHeaders` list: lower-cased names joined by `;`.
pub fn signed_headers(headers: &[(&str, &str)]) -> String {
    signable(headers)
        .into_iter()
        .map(|(name, _)| name)
        .collect::<Vec<_>>()
        .join(";")
}

/// The canonical request, lines joined by `\n`. `headers` must include `Host` and `X-Sdk-Date`.
pub fn canonical_request(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    let signable = signable(headers);
    let mut canonical_headers = String::new();
    for (name, value) in &signable {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
    }
    let names = signable
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        canonical_uri(path),
        canonical_query(query),
        canonical_headers,
        names,
        hex::encode(Sha256::digest(body)),
    )
}

/// `SDK-HMAC-SHA256\n{date}\n{hex sha256(canonical request)}`.
pub fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{sdk_date}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// Hex HMAC-SHA256 of `message`, keyed with the raw key bytes.
pub fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    hex::encode(hmac_raw(key, message))
}

/// Raw HMAC-SHA256 (Standard Webhooks wants base64 of the raw bytes).
pub fn hmac_raw(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// `SDK-HMAC-SHA256 Access={ak}, SignedHeaders={list}, Signature={hex}`.
pub fn authorization(access_key: &str, signed_headers: &str, signature: &str) -> String {
    format!(
        "{ALGORITHM} Access={access_key}, SignedHeaders={signed_headers}, Signature={signature}"
    )
}

/// The result of signing a request, every intermediate step kept for tests and debugging.
#[derive(Clone, PartialEq, Eq)]
pub struct Signed {
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signed_headers: String,
    pub signature: String,
    pub authorization: String,
}

/// Signs a request. `headers` are exactly the headers that will be sent, `Host` and
/// `X-Sdk-Date` included; the returned `authorization` is added after signing.
pub fn sign(
    access_key: &str,
    secret_key: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(&str, &str)],
    body: &[u8],
) -> Signed {
    let sdk_date = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(DATE_HEADER))
        .map(|(_, v)| *v)
        .unwrap_or_default();
    let canonical_request = canonical_request(method, path, query, headers, body);
    let string_to_sign = string_to_sign(sdk_date, &canonical_request);
    let signature = hmac_hex(secret_key.as_bytes(), string_to_sign.as_bytes());
    let signed_headers = signed_headers(headers);
    let authorization = authorization(access_key, &signed_headers, &signature);
    Signed {
        canonical_request,
        string_to_sign,
        signed_headers,
        signature,
        authorization,
    }
}

/// The parts of an `Authorization: SDK-HMAC-SHA256 ...` header, for verification.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthorizationHeader<'a> {
    pub access_key: &'a str,
    pub signed_headers: &'a str,
    pub signature: &'a str,
}

pub fn parse_authorization(value: &str) -> Option<AuthorizationHeader<'_>> {
    let rest = value.strip_prefix(ALGORITHM)?.trim_start();
    let (mut access_key, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Access" => access_key = Some(v),
            "SignedHeaders" => signed_headers = Some(v),
            "Signature" => signature = Some(v),
            _ => {}
        }
    }
    Some(AuthorizationHeader {
        access_key: access_key?,
        signed_headers: signed_headers?,
        signature: signature?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The SDK's own vectors: a byte-for-byte copy of shared/vectors kept in tests/data, so a
    /// clean clone (and CI) runs them.
    fn vectors() -> Vec<Value> {
        let text = include_str!("../tests/data/sdk-hmac-sha256.json");
        serde_json::from_str(text).expect("vectors parse")
    }

    fn query_pairs(case: &Value) -> Vec<(String, String)> {
        case["query_params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| {
                let key = pair[0].as_str().unwrap().to_string();
                let value = match &pair[1] {
                    Value::String(s) => s.clone(),
                    // The SDK turns Python values into strings: True -> "true", 10 -> "10".
                    Value::Bool(b) => b.to_string(),
                    other => other.to_string(),
                };
                (key, value)
            })
            .collect()
    }

    #[test]
    fn every_sdk_vector_matches_at_every_step() {
        let cases = vectors();
        assert_eq!(cases.len(), 6, "the SDK produced six cases");
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let mut headers: Vec<(String, String)> = case["headers_given"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            headers.push(("Host".into(), case["host"].as_str().unwrap().into()));
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let query = query_pairs(&case);
            let path = case["path"].as_str().unwrap();

            assert_eq!(
                canonical_uri(path),
                case["canonical_uri"],
                "{name}: canonical uri"
            );
            assert_eq!(
                canonical_query(&query),
                case["query"],
                "{name}: canonical query"
            );
            assert_eq!(
                signed_headers(&headers),
                case["signed_headers"],
                "{name}: signed headers"
            );

            let signed = sign(
                case["ak"].as_str().unwrap(),
                case["sk"].as_str().unwrap(),
                case["method"].as_str().unwrap(),
                path,
                &query,
                &headers,
                b"",
            );
            assert_eq!(
                signed.canonical_request, case["canonical_request"],
                "{name}: canonical request"
            );
            assert_eq!(
                hex::encode(Sha256::digest(signed.canonical_request.as_bytes())),
                case["canonical_request_sha256"],
                "{name}: canonical request hash"
            );
            assert_eq!(
                signed.string_to_sign, case["string_to_sign"],
                "{name}: string to sign"
            );
            assert_eq!(signed.signature, case["signature"], "{name}: signature");
            assert_eq!(
                signed.authorization, case["authorization"],
                "{name}: authorization"
            );
            assert_eq!(
                signed.authorization, case["headers_sent"]["Authorization"],
                "{name}: the header the SDK sent"
            );
        }
    }

    #[test]
    fn the_path_we_send_is_the_path_the_sdk_sends() {
        for case in vectors() {
            let app = encode(case["app_id"].as_str().unwrap());
            let job = encode(case["job_id"].as_str().unwrap());
            assert_eq!(
                format!("/v2/apps/{app}/individual-stream-jobs/{job}"),
                case["path"],
                "{}",
                case["name"]
            );
        }
    }

    #[test]
    fn a_changed_byte_changes_the_signature() {
        let headers = [("Host", "h"), (DATE_HEADER, "20250102T030405Z")];
        let a = sign(
            "ak",
            "sk",
            "GET",
            "/v2/apps/a/individual-stream-jobs/b",
            &[],
            &headers,
            b"",
        );
        let b = sign(
            "ak",
            "sk",
            "GET",
            "/v2/apps/a/individual-stream-jobs/c",
            &[],
            &headers,
            b"",
        );
        let c = sign(
            "ak",
            "sK",
            "GET",
            "/v2/apps/a/individual-stream-jobs/b",
            &[],
            &headers,
            b"",
        );
        assert_ne!(a.signature, b.signature);
        assert_ne!(a.signature, c.signature);
    }

    #[test]
    fn headers_with_underscores_are_not_signed() {
        let headers = [("Host", "h"), ("X_Odd", "v"), ("X-Sdk-Date", "d")];
        assert_eq!(signed_headers(&headers), "host;x-sdk-date");
    }

    #[test]
    fn authorization_round_trips() {
        let header = authorization("AK", "host;x-sdk-date", "abc");
        assert_eq!(
            parse_authorization(&header),
            Some(AuthorizationHeader {
                access_key: "AK",
                signed_headers: "host;x-sdk-date",
                signature: "abc"
            })
        );
        assert_eq!(parse_authorization("Bearer x"), None);
    }
}
