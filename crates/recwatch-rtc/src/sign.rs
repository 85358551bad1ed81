//! SDK-HMAC-SHA256, the AK/SK request signature of Huawei Cloud's API gateway.
//!
//! Every step is a pure function so a test can hold each one against the vectors that the
//! official SDK's own signer produced (`tests/data/sdk-hmac-sha256.json` for GETs with every
//! intermediate step, `tests/data/sdk-hmac-sha256-body.json` for requests with a body). The
//! client signs exactly the headers it sends; the simulator verifies with the same functions.
//!
//! The steps, each a function here:
//! 1. [`canonical_uri`], [`canonical_query`] and [`signed_headers`] put the request in the
//!    form the gateway hashes;
//! 2. [`payload_hash`] hashes the body (an empty body for a GET);
//! 3. [`canonical_request`] joins them, [`string_to_sign`] hashes that with the date;
//! 4. [`hmac_hex`] keys it with the secret key, [`authorization`] writes the header.
//!
//! [`sign`] runs them all and keeps every intermediate value:
//!
//! ```
//! use recwatch_rtc::sign::{self, DATE_HEADER};
//!
//! // The headers exactly as they will be sent, `Host` and `X-Sdk-Date` included.
//! let headers = [
//!     (DATE_HEADER, "20250102T030405Z"),
//!     ("Content-Type", "application/json"),
//!     ("User-Agent", "huaweicloud-usdk-python/3.0; hw-sign-vectors/1.0"),
//!     ("Host", "rtc-api.myhuaweicloud.com"),
//! ];
//! let signed = sign::sign(
//!     "HPUAEXAMPLEAK0000001",
//!     "ExampleSecretKey0123456789abcdefghijklmn",
//!     "GET",
//!     "/v2/apps/5fcdf56512345676f835d0d4/mix-stream-jobs/608196a2fa1234567515147f32ef463b",
//!     &[],
//!     &headers,
//!     b"",
//! );
//! // What the official SDK sends for this request (vector `show_mix_job_no_project`).
//! assert_eq!(
//!     signed.authorization,
//!     "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK0000001, \
//!      SignedHeaders=content-type;host;user-agent;x-sdk-date, \
//!      Signature=24cdb0b2f0a7c597cb869a8bb9b850c90a5f8f8fcb2b322adeee46789bc32335"
//! );
//! ```

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// The algorithm's name, the first word of the `Authorization` header and of the string to sign.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// Header carrying the signing time, `YYYYMMDDTHHMMSSZ` (UTC). The gateway refuses a date
/// more than 15 minutes off its clock.
pub const DATE_HEADER: &str = "X-Sdk-Date";
/// The `chrono` format of [`DATE_HEADER`]'s value.
///
/// ```
/// use chrono::TimeZone;
/// let at = chrono::Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
/// assert_eq!(at.format(recwatch_rtc::sign::DATE_FORMAT).to_string(), "20250102T030405Z");
/// ```
pub const DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// `at` as [`DATE_HEADER`] carries it, [`DATE_FORMAT`] written without parsing the format
/// string again for every request.
///
/// ```
/// use chrono::TimeZone;
/// let at = chrono::Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
/// assert_eq!(recwatch_rtc::sign::sdk_date(at), at.format(recwatch_rtc::sign::DATE_FORMAT).to_string());
/// ```
pub fn sdk_date(at: chrono::DateTime<chrono::Utc>) -> String {
    use chrono::{Datelike, Timelike};
    if !(0..=9999).contains(&at.year()) || at.nanosecond() >= 1_000_000_000 {
        // chrono writes a sign and more digits, or a leap second as 60: rare enough to leave
        // to it.
        return at.format(DATE_FORMAT).to_string();
    }
    // Digits written by hand: `format!` cost more than the rest of the date (every request
    // carries one, issue 23 item 6).
    fn digits(out: &mut String, n: u32, width: u32) {
        for place in (0..width).rev() {
            out.push(char::from(b'0' + (n / 10u32.pow(place) % 10) as u8));
        }
    }
    let mut out = String::with_capacity(16);
    digits(&mut out, at.year() as u32, 4);
    digits(&mut out, at.month(), 2);
    digits(&mut out, at.day(), 2);
    out.push('T');
    digits(&mut out, at.hour(), 2);
    digits(&mut out, at.minute(), 2);
    digits(&mut out, at.second(), 2);
    out.push('Z');
    out
}

/// Reads a [`DATE_HEADER`] value: what `NaiveDateTime::parse_from_str(value, DATE_FORMAT)`
/// reads, with the usual form (16 characters, digits where digits go) read by hand, since
/// the gateway's side reads one per request.
///
/// ```
/// use recwatch_rtc::sign::parse_sdk_date;
/// use chrono::TimeZone;
/// let at = chrono::Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
/// assert_eq!(parse_sdk_date("20250102T030405Z"), Some(at));
/// assert_eq!(parse_sdk_date("20250132T030405Z"), None);
/// ```
pub fn parse_sdk_date(value: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let b = value.as_bytes();
    let usual = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        && b[13] < b'6';
    if !usual {
        // Anything else (a sign, more year digits, spaces, a leap second) is chrono's to judge.
        return chrono::NaiveDateTime::parse_from_str(value, DATE_FORMAT)
            .ok()
            .map(|t| t.and_utc());
    }
    let n = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
    };
    chrono::NaiveDate::from_ymd_opt(n(0, 4) as i32, n(4, 6), n(6, 8))?
        .and_hms_opt(n(9, 11), n(11, 13), n(13, 15))
        .map(|t| t.and_utc())
}

/// Everything but RFC 3986 unreserved characters is encoded; the SDK keeps `~` as well.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one path segment or query part the way the SDK does: everything but
/// `A-Z a-z 0-9 - _ . ~`, so a `/` inside an id stays inside its segment.
///
/// ```
/// assert_eq!(recwatch_rtc::sign::encode("job/1 ü~"), "job%2F1%20%C3%BC~");
/// ```
pub fn encode(part: &str) -> String {
    utf8_percent_encode(part, UNRESERVED).collect()
}

/// Lower-case hex of `bytes`. Every request is signed (and the simulator checks every one):
/// `hex::encode` goes through a `char` iterator, several times slower than this.
fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The canonical URI: decode the path, split on `/`, encode each segment, always end in `/`.
///
/// Decoding first means a `%2F` inside an id becomes a separator here, as it does in the SDK
/// (the vector `extra_slash_in_path_param_quirk`); the gateway verifies the same way.
///
/// ```
/// use recwatch_rtc::sign::canonical_uri;
/// assert_eq!(canonical_uri("/v2/apps/a/individual-stream-jobs/b"), "/v2/apps/a/individual-stream-jobs/b/");
/// assert_eq!(canonical_uri("/v2/apps/a%2Fx/jobs"), "/v2/apps/a/x/jobs/");
/// ```
pub fn canonical_uri(path: &str) -> String {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    // The segments encoded and joined by `/`, written into one string.
    let mut out = String::with_capacity(decoded.len() + 1);
    for (i, segment) in decoded.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.extend(utf8_percent_encode(segment, UNRESERVED));
    }
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// The canonical query: pairs sorted by key then value, each part encoded, joined by `&`.
///
/// ```
/// use recwatch_rtc::sign::canonical_query;
/// let pairs = [("offset".to_string(), "0".to_string()), ("limit".to_string(), "a b".to_string())];
/// assert_eq!(canonical_query(&pairs), "limit=a%20b&offset=0");
/// assert_eq!(canonical_query(&[]), "");
/// ```
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

/// The `SignedHeaders` list: lower-cased names joined by `;`, headers with `_` left out.
///
/// ```
/// use recwatch_rtc::sign::signed_headers;
/// let headers = [("X-Sdk-Date", "20250102T030405Z"), ("Host", "h"), ("X_Odd", "v")];
/// assert_eq!(signed_headers(&headers), "host;x-sdk-date");
/// ```
pub fn signed_headers(headers: &[(&str, &str)]) -> String {
    names(&signable(headers))
}

/// The `SignedHeaders` list of headers already made [`signable`].
fn names(signable: &[(String, String)]) -> String {
    let mut out = String::with_capacity(signable.iter().map(|(n, _)| n.len() + 1).sum());
    for (i, (name, _)) in signable.iter().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(name);
    }
    out
}

/// The hashed payload, the last line of the canonical request: the hex SHA-256 of the body
/// exactly as sent (`e3b0c442...b855` for a GET's empty body).
///
/// ```
/// use recwatch_rtc::sign::payload_hash;
/// assert_eq!(
///     payload_hash(b""),
///     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/// );
/// ```
pub fn payload_hash(body: &[u8]) -> String {
    if body.is_empty() {
        // Every GET's: a constant, not a hash per request.
        return EMPTY_PAYLOAD_HASH.to_string();
    }
    hex_lower(&Sha256::digest(body))
}

/// The hex SHA-256 of an empty body (checked against the hash in the tests).
const EMPTY_PAYLOAD_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The canonical request, lines joined by `\n`. `headers` must include `Host` and `X-Sdk-Date`;
/// `body` is the body exactly as sent (empty for a GET or DELETE).
pub fn canonical_request(
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    canonical_request_of(method, path, query, &signable(headers), body)
}

/// [`canonical_request`] of headers already made [`signable`], written into one string.
fn canonical_request_of(
    method: &str,
    path: &str,
    query: &[(String, String)],
    signable: &[(String, String)],
    body: &[u8],
) -> String {
    let mut out = String::with_capacity(512);
    out.push_str(&method.to_ascii_uppercase());
    out.push('\n');
    out.push_str(&canonical_uri(path));
    out.push('\n');
    out.push_str(&canonical_query(query));
    out.push('\n');
    for (name, value) in signable {
        out.push_str(name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&names(signable));
    out.push('\n');
    out.push_str(&payload_hash(body));
    out
}

/// `SDK-HMAC-SHA256\n{date}\n{hex sha256(canonical request)}`. `sdk_date` is the
/// [`DATE_HEADER`] value as sent.
pub fn string_to_sign(sdk_date: &str, canonical_request: &str) -> String {
    let hash = hex_lower(&Sha256::digest(canonical_request.as_bytes()));
    let mut out = String::with_capacity(ALGORITHM.len() + sdk_date.len() + hash.len() + 2);
    out.push_str(ALGORITHM);
    out.push('\n');
    out.push_str(sdk_date);
    out.push('\n');
    out.push_str(&hash);
    out
}

/// Hex HMAC-SHA256 of `message`, keyed with the raw key bytes: the signature over the string
/// to sign, keyed with the secret key.
///
/// ```
/// // RFC 4231, test case 2.
/// assert_eq!(
///     recwatch_rtc::sign::hmac_hex(b"Jefe", b"what do ya want for nothing?"),
///     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
/// );
/// ```
pub fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    hex_lower(&hmac_raw(key, message))
}

/// A secret key made ready for HMAC-SHA256 once: the key's two padded blocks are hashed
/// when it is made, so each signature hashes only its message (two blocks fewer per request
/// than [`hmac_hex`], which a client signing every poll and a gateway checking every request
/// would repeat). `Debug` prints `***`.
///
/// ```
/// use recwatch_rtc::sign::{SigningKey, hmac_hex};
/// let key = SigningKey::new(b"Jefe");
/// assert_eq!(key.hmac_hex(b"what do ya want for nothing?"), hmac_hex(b"Jefe", b"what do ya want for nothing?"));
/// assert_eq!(format!("{key:?}"), "SigningKey(***)");
/// ```
#[derive(Clone)]
pub struct SigningKey {
    mac: Hmac<Sha256>,
}

impl SigningKey {
    pub fn new(secret_key: &[u8]) -> SigningKey {
        SigningKey {
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(secret_key)
                .expect("HMAC accepts any key length"),
        }
    }

    /// Hex HMAC-SHA256 of `message` under this key: [`hmac_hex`] of the same key.
    pub fn hmac_hex(&self, message: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(message);
        hex_lower(&mac.finalize().into_bytes())
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

/// Raw HMAC-SHA256, for callers that encode it otherwise (Standard Webhooks wants base64 of
/// the raw bytes).
pub fn hmac_raw(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// `SDK-HMAC-SHA256 Access={ak}, SignedHeaders={list}, Signature={hex}`, the `Authorization`
/// header's value.
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
/// `X-Sdk-Date` included (and `X-Project-Id`, `X-Security-Token` when they are sent: both are
/// signed); the returned `authorization` is added after signing. `body` is the body exactly as
/// sent: a create's JSON is signed over its bytes, so it must not be re-serialised afterwards.
///
/// ```
/// use recwatch_rtc::sign::{self, DATE_HEADER, payload_hash};
///
/// let body = br#"{"room_id":"room01","user_id":"user-7"}"#;
/// let headers = [
///     ("Host", "rtc-api.myhuaweicloud.com"),
///     ("Content-Type", "application/json"),
///     (DATE_HEADER, "20250102T030405Z"),
///     ("X-Project-Id", "0a1b2c3d4e5f67890a1b2c3d4e5f6789"),
/// ];
/// let signed = sign::sign("AK", "SK", "POST", "/v2/apps/app/individual-stream-jobs", &[], &headers, body);
/// assert!(signed.canonical_request.ends_with(&payload_hash(body)));
/// assert_eq!(signed.signed_headers, "content-type;host;x-project-id;x-sdk-date");
/// assert!(signed.authorization.starts_with("SDK-HMAC-SHA256 Access=AK, SignedHeaders="));
/// ```
pub fn sign(
    access_key: &str,
    secret_key: &str,
    method: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(&str, &str)],
    body: &[u8],
) -> Signed {
    sign_with(
        access_key,
        &SigningKey::new(secret_key.as_bytes()),
        method,
        path,
        query,
        headers,
        body,
    )
}

/// [`sign`] with the secret key made ready once ([`SigningKey`]): the same signature, for a
/// client that signs every request with one key.
pub fn sign_with(
    access_key: &str,
    key: &SigningKey,
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
    let signable = signable(headers);
    let canonical_request = canonical_request_of(method, path, query, &signable, body);
    let string_to_sign = string_to_sign(sdk_date, &canonical_request);
    let signature = key.hmac_hex(string_to_sign.as_bytes());
    let signed_headers = names(&signable);
    let authorization = authorization(access_key, &signed_headers, &signature);
    Signed {
        canonical_request,
        string_to_sign,
        signed_headers,
        signature,
        authorization,
    }
}

/// The parts of an `Authorization: SDK-HMAC-SHA256 ...` header, for verification (the
/// simulator's gateway reads them to check a request the way the real one does).
#[derive(Debug, PartialEq, Eq)]
pub struct AuthorizationHeader<'a> {
    pub access_key: &'a str,
    pub signed_headers: &'a str,
    pub signature: &'a str,
}

/// Reads an `Authorization` header written by [`authorization`]; `None` for another scheme or
/// a header missing one of its three parts.
///
/// ```
/// use recwatch_rtc::sign::{authorization, parse_authorization};
/// let header = authorization("AK", "host;x-sdk-date", "abc");
/// let parsed = parse_authorization(&header).unwrap();
/// assert_eq!((parsed.access_key, parsed.signed_headers, parsed.signature), ("AK", "host;x-sdk-date", "abc"));
/// assert!(parse_authorization("Bearer x").is_none());
/// ```
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

    // The SDK's vectors are the crate's integration tests (tests/sdk_vectors.rs): they check
    // the public API as a user of the crate calls it.

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
    fn sdk_date_is_chronos_format() {
        use chrono::{NaiveDate, TimeZone};
        let at = |y, mo, d, h, mi, s| {
            chrono::Utc
                .with_ymd_and_hms(y, mo, d, h, mi, s)
                .single()
                .unwrap()
        };
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        let cases = [
            ("the epoch", at(1970, 1, 1, 0, 0, 0)),
            ("one digit everywhere", at(2025, 1, 2, 3, 4, 5)),
            ("two digits everywhere", at(2026, 12, 31, 23, 59, 59)),
            ("year 9999", at(9999, 12, 31, 23, 59, 59)),
            ("year 10000", at(10000, 1, 1, 0, 0, 0)),
            ("a leap second", leap),
            ("now", chrono::Utc::now()),
        ];
        for (name, t) in cases {
            assert_eq!(sdk_date(t), t.format(DATE_FORMAT).to_string(), "{name}");
        }
    }

    #[test]
    fn the_empty_payload_hash_is_the_hash_of_nothing() {
        assert_eq!(EMPTY_PAYLOAD_HASH, hex_lower(&Sha256::digest(b"")));
    }

    #[test]
    fn parse_sdk_date_reads_what_chrono_reads() {
        let chrono_reads = |v: &str| {
            chrono::NaiveDateTime::parse_from_str(v, DATE_FORMAT)
                .ok()
                .map(|t| t.and_utc())
        };
        let now = sdk_date(chrono::Utc::now());
        let cases = [
            ("usual", "20250102T030405Z"),
            ("end of a year", "20261231T235959Z"),
            ("leap day", "20240229T120000Z"),
            ("no leap day", "20250229T120000Z"),
            ("month 13", "20251302T030405Z"),
            ("day 0", "20250100T030405Z"),
            ("hour 24", "20250102T240405Z"),
            ("second 60", "20250102T030460Z"),
            ("lower-case t", "20250102t030405Z"),
            ("no Z", "20250102T030405"),
            ("a letter in it", "2025010xT030405Z"),
            ("a sign", "+20250102T030405Z"),
            ("empty", ""),
            ("now", now.as_str()),
        ];
        for (name, v) in cases {
            assert_eq!(parse_sdk_date(v), chrono_reads(v), "{name}: {v:?}");
        }
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
