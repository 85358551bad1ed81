//! RTC record callbacks: the events RTC POSTs to an app's callback URL, and their signature.
//!
//! Pure, no I/O: a receiver reads the request's headers and raw body, calls
//! [`verify_signature`] (or [`verify_with_any`] over every configured app's key) on the raw
//! bytes, and only then [`RecordEvent::parse`]s them. [`sign`] makes the same signature, so an
//! event can be relayed to another receiver re-signed with the app's key.
//!
//! The scheme (rtc-api.md, "Record callbacks"): when the app has an `auth_key`, RTC sends
//! `X-Rtc-Rand`, `X-Rtc-Timestamp` and `X-Rtc-Signature` = lowercase hex
//! HMAC-SHA256(key = auth_key as UTF-8, message = rand + timestamp + raw body), joined with no
//! separators. The body is signed as bytes, so it is verified as bytes: parsing and
//! re-serialising it first would change the bytes and the answer.
//!
//! ```
//! use recwatch_rtc::Secret;
//! use recwatch_rtc::callback::{self, EventType, RecordEvent, SignatureHeaders};
//!
//! // The vector from shared/vectors/push-and-chat-signing.json.
//! let key = Secret::new("0123456789abcdef0123456789abcdef");
//! let body = br#"{"event_type":"RECORD_FILE_COMPLETE","job_id":"j1"}"#;
//! let headers = SignatureHeaders {
//!     rand: "738291",
//!     timestamp: "1700000000",
//!     signature: "c56bb3bda9855be6c75646686d30d07f4d09388524f03796c4ffaf3177375fc1",
//! };
//!
//! // Verify the raw bytes first: nothing in an unverified body is trusted.
//! callback::verify_signature(&key, &headers, body)?;
//! let event = RecordEvent::parse(body)?;
//! assert_eq!(event.event_type, EventType::RecordFileComplete);
//! assert_eq!(event.job_id.as_deref(), Some("j1"));
//!
//! // One byte changed, and the signature no longer holds.
//! let tampered = br#"{"event_type":"RECORD_FILE_COMPLETE","job_id":"j2"}"#;
//! assert!(callback::verify_signature(&key, &headers, tampered).is_err());
//!
//! // Re-signing (for relaying the event on) gives what RTC sent.
//! assert_eq!(callback::sign(&key, headers.rand, headers.timestamp, body), headers.signature);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::model::enum_key;
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::HeaderMap;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::Sha256;
use std::fmt;

/// The random value RTC mixes into each signature (lower case, as `HeaderMap` names are).
pub const HEADER_RAND: &str = "x-rtc-rand";
/// When RTC signed the request; the unit is not documented (see [`SignatureHeaders::sent_at`]).
pub const HEADER_TIMESTAMP: &str = "x-rtc-timestamp";
/// Lowercase hex HMAC-SHA256 of rand + timestamp + raw body.
pub const HEADER_SIGNATURE: &str = "x-rtc-signature";

/// An HMAC-SHA256 is 32 bytes, 64 hex characters.
const SIGNATURE_BYTES: usize = 32;

/// Longest app or job id accepted. The API's ids are 24 and 32 characters; a longer one in a
/// callback is not an id RTC made, and would otherwise reach the database and every log line.
pub const MAX_ID_CHARS: usize = 128;

/// Longest event type kept; a longer unknown one is cut (like the job model's enums).
const MAX_EVENT_TYPE_CHARS: usize = 64;

/// The signature `X-Rtc-Signature` carries for these inputs: lowercase hex
/// HMAC-SHA256(key = `auth_key` as UTF-8, message = `rand` + `timestamp` + `body`).
///
/// What RTC sends, and what a relay sends on after re-signing an event with the app's key.
pub fn sign(auth_key: &Secret, rand: &str, timestamp: &str, body: &[u8]) -> String {
    hex::encode(
        signer(auth_key, rand, timestamp, body)
            .finalize()
            .into_bytes(),
    )
}

/// The MAC after absorbing the signed message, ready to finalise or to verify.
fn signer(auth_key: &Secret, rand: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(auth_key.expose().as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(rand.as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(body);
    mac
}

/// The three signature headers of one callback request, as received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureHeaders<'a> {
    /// `X-Rtc-Rand`.
    pub rand: &'a str,
    /// `X-Rtc-Timestamp`.
    pub timestamp: &'a str,
    /// `X-Rtc-Signature`.
    pub signature: &'a str,
}

impl<'a> SignatureHeaders<'a> {
    /// The three headers from a request's header map (axum's and reqwest's are the same
    /// `http::HeaderMap`). Each must be present exactly once and be visible ASCII.
    pub fn from_headers(headers: &'a HeaderMap) -> Result<SignatureHeaders<'a>, SignatureError> {
        Ok(SignatureHeaders {
            rand: one_header(headers, HEADER_RAND, "X-Rtc-Rand")?,
            timestamp: one_header(headers, HEADER_TIMESTAMP, "X-Rtc-Timestamp")?,
            signature: one_header(headers, HEADER_SIGNATURE, "X-Rtc-Signature")?,
        })
    }

    /// When RTC says it signed the request, if `X-Rtc-Timestamp` reads as a Unix time.
    ///
    /// The unit is not documented. The vector's `1700000000` is in seconds; a value of
    /// 10^11 or more is read as milliseconds (as seconds it would be after the year 5000,
    /// as milliseconds it is after 1973), so either unit gives the right instant. Only for
    /// display and ordering: the timestamp is no proof of freshness (see [`verify_signature`]).
    pub fn sent_at(&self) -> Option<DateTime<Utc>> {
        let n: i64 = self.timestamp.trim().parse().ok()?;
        if n < 0 {
            return None;
        }
        if n >= 100_000_000_000 {
            DateTime::from_timestamp_millis(n)
        } else {
            DateTime::from_timestamp(n, 0)
        }
    }
}

fn one_header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
    shown: &'static str,
) -> Result<&'a str, SignatureError> {
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(SignatureError::MissingHeader(shown))?;
    // Two signatures (or two rands) leave it open which one was meant; RTC sends one.
    if values.next().is_some() {
        return Err(SignatureError::Garbled {
            header: shown,
            reason: "it is sent more than once",
        });
    }
    value.to_str().map_err(|_| SignatureError::Garbled {
        header: shown,
        reason: "it is not visible ASCII",
    })
}

/// Why a callback's signature was refused. The texts never carry the key, and never the
/// received values (they are an attacker's to choose).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// RTC sends no signature headers when the app has no `auth_key`.
    #[error(
        "the callback has no {0} header: RTC signs callbacks only for an app with an auth_key; set one in the RTC console (or with `PUT /v2/apps/{{app_id}}/record-callback`) and configure the same key for the app"
    )]
    MissingHeader(&'static str),
    /// The header is there but cannot be a signature (or its parts) at all.
    #[error("the callback's {header} header is malformed: {reason}")]
    Garbled {
        header: &'static str,
        reason: &'static str,
    },
    /// Well-formed, but not made with this key over these bytes.
    #[error(
        "the callback's X-Rtc-Signature does not match: the body was altered or it was signed with another auth_key (check that the configured key is the app's current one)"
    )]
    Mismatch,
}

/// Checks `X-Rtc-Signature` against the raw body with one app's key, in constant time.
///
/// The signature may be in either case of hex (the docs say lowercase; the case carries no
/// information). Freshness is not checked: the timestamp's unit is undocumented, and with no
/// separator between rand and timestamp, moving digits from one to the other keeps the
/// signature valid. A receiver refuses replays by remembering signatures it has seen.
pub fn verify_signature(
    auth_key: &Secret,
    headers: &SignatureHeaders<'_>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let expected = decode_signature(headers.signature)?;
    signer(auth_key, headers.rand, headers.timestamp, body)
        // `verify_slice` compares in constant time, so the time taken tells nothing about how
        // many leading bytes of a forged signature were right.
        .verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// Checks the signature against each key in turn and returns the label of the first that
/// verifies: a receiver holds one key per configured app and learns from the signature which
/// app sent the event (the body's `app_id` must then be that app).
///
/// Every key is tried with [`verify_signature`]; a malformed header is refused before any.
pub fn verify_with_any<'k, L>(
    keys: impl IntoIterator<Item = (L, &'k Secret)>,
    headers: &SignatureHeaders<'_>,
    body: &[u8],
) -> Result<L, SignatureError> {
    decode_signature(headers.signature)?;
    keys.into_iter()
        .find(|(_, key)| verify_signature(key, headers, body).is_ok())
        .map(|(label, _)| label)
        .ok_or(SignatureError::Mismatch)
}

fn decode_signature(text: &str) -> Result<[u8; SIGNATURE_BYTES], SignatureError> {
    let garbled = |reason| SignatureError::Garbled {
        header: "X-Rtc-Signature",
        reason,
    };
    if text.len() != SIGNATURE_BYTES * 2 {
        return Err(garbled("it is not 64 hex characters (a hex HMAC-SHA256)"));
    }
    let mut out = [0u8; SIGNATURE_BYTES];
    hex::decode_to_slice(text, &mut out).map_err(|_| garbled("it is not hex"))?;
    Ok(out)
}

/// The kind of a callback event. Unknown kinds are kept as data, never refused: the docs name
/// others (`CLOUD_RECORD_OVER`, `RTC_*` stream events) and RTC may add more.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A recording file was started; the first one marks the start of the job.
    RecordNewFileStart,
    /// A file is finished; the event carries its fields ([`RecordedFile`]).
    RecordFileComplete,
    /// The recording job has ended, for whatever reason (the reason comes only from polling).
    CloudRecordServerOver,
    /// Any other type, without control characters, trimmed, at most 64 characters.
    Other(String),
}

impl EventType {
    /// Case, surrounding spaces and stray control characters do not make a new type, as for
    /// the job model's states (`" record_file_complete\0"` is `RECORD_FILE_COMPLETE`).
    pub fn parse(text: &str) -> EventType {
        match enum_key(text).as_str() {
            "RECORD_NEW_FILE_START" => EventType::RecordNewFileStart,
            "RECORD_FILE_COMPLETE" => EventType::RecordFileComplete,
            "CLOUD_RECORD_SERVER_OVER" => EventType::CloudRecordServerOver,
            _ => {
                let kept: String = text.chars().filter(|c| !c.is_control()).collect();
                EventType::Other(kept.trim().chars().take(MAX_EVENT_TYPE_CHARS).collect())
            }
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            EventType::RecordNewFileStart => "RECORD_NEW_FILE_START",
            EventType::RecordFileComplete => "RECORD_FILE_COMPLETE",
            EventType::CloudRecordServerOver => "CLOUD_RECORD_SERVER_OVER",
            EventType::Other(s) => s,
        }
    }

    /// One of the three record events, which always concern one recording job.
    pub fn is_record_event(&self) -> bool {
        !matches!(self, EventType::Other(_))
    }

    /// The value as a metric label: the documented types, or `other`, so a sender that
    /// invents types cannot grow the number of series without bound.
    pub fn label(&self) -> &'static str {
        match self {
            EventType::RecordNewFileStart => "RECORD_NEW_FILE_START",
            EventType::RecordFileComplete => "RECORD_FILE_COMPLETE",
            EventType::CloudRecordServerOver => "CLOUD_RECORD_SERVER_OVER",
            EventType::Other(_) => "other",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// [`EventType::parse`] of an owned text, so a reader of stored events (the daemon's rows
/// through sqlx's `try_from`) gets the type, never the string to parse again.
impl From<String> for EventType {
    fn from(text: String) -> EventType {
        EventType::parse(&text)
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The file a `RECORD_FILE_COMPLETE` event reports. Every field is optional in the docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecordedFile {
    /// Where to download the file from OBS (the docs forbid using it for playback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    /// Length of the recording, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_duration: Option<u64>,
    /// Size in bytes (in the console's example, not in the API reference's table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// UTC, `YYYY-MM-DDThh:mm:ssZ`, kept as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// UTC, `YYYY-MM-DDThh:mm:ssZ`, kept as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// The OBS endpoint of the file's region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub obs_location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub obs_bucket: Option<String>,
    /// The file's full path inside the bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub obs_object: Option<String>,
}

/// One callback event, parsed from a body whose signature was verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordEvent {
    pub event_type: EventType,
    /// Absent in some bodies (the signing vector's among them): the key that verified the
    /// signature then says which app sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Always present for the three record events ([`EventType::is_record_event`]): parsing
    /// refuses a record event that names no job. An unknown event type may have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
    /// `HLS` or `MP4`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail_message: Option<String>,
    /// The file fields, when the body carries any (`RECORD_FILE_COMPLETE` does in the docs'
    /// example; the signing vector's `RECORD_FILE_COMPLETE` carries none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<RecordedFile>,
}

/// Why a callback body is not an event recwatch can use. The texts never quote the body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the callback body is not JSON ({0}); RTC sends one JSON object per event")]
    NotJson(String),
    #[error("the callback body is JSON but not an object; RTC sends one JSON object per event")]
    NotAnObject,
    /// A field the event cannot be used without is absent, empty, or not a string or number.
    #[error(
        "the callback body has no usable {0:?} (absent, empty, or not a string or number); RTC sends it with every record event"
    )]
    MissingField(&'static str),
    /// An id that cannot name an RTC app or job.
    #[error("the callback body's {field:?} is not an id: {reason}")]
    BadId {
        field: &'static str,
        reason: &'static str,
    },
}

impl RecordEvent {
    /// Parses a callback body (verify its signature first).
    ///
    /// As lenient as the job model where the API is loose: every field but `event_type` is
    /// optional, ids and numbers may come as strings or numbers, a field of the wrong type
    /// is absent rather than fatal, unknown fields are ignored. Refused: a body that is not
    /// a JSON object, one without `event_type`, a record event without `job_id`, and ids
    /// that are `.`, `..`, over [`MAX_ID_CHARS`] or hold control characters.
    pub fn parse(body: &[u8]) -> Result<RecordEvent, EventError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(EventError::NotAnObject);
        };
        let event_type = text(&map, "event_type")
            .filter(|t| !enum_key(t).is_empty())
            .map(|t| EventType::parse(&t))
            .ok_or(EventError::MissingField("event_type"))?;
        let app_id = id(&map, "app_id")?;
        let job_id = id(&map, "job_id")?;
        if job_id.is_none() && event_type.is_record_event() {
            return Err(EventError::MissingField("job_id"));
        }
        Ok(RecordEvent {
            event_type,
            app_id,
            job_id,
            room_id: text(&map, "room_id"),
            stream_name: text(&map, "stream_name"),
            record_format: text(&map, "record_format"),
            detail_message: text(&map, "detail_message"),
            file: recorded_file(&map),
        })
    }
}

fn recorded_file(map: &Map<String, Value>) -> Option<RecordedFile> {
    let file = RecordedFile {
        download_url: text(map, "download_url"),
        record_duration: count(map, "record_duration"),
        file_size: count(map, "file_size"),
        width: count(map, "width"),
        height: count(map, "height"),
        start_time: text(map, "start_time"),
        end_time: text(map, "end_time"),
        obs_location: text(map, "obs_location"),
        obs_bucket: text(map, "obs_bucket"),
        obs_object: text(map, "obs_object"),
    };
    (file != RecordedFile::default()).then_some(file)
}

/// A string, or a number or boolean as its text (the docs show ids as numbers elsewhere);
/// anything else is absent.
fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A non-negative integer, or a string holding one; anything else is absent.
fn count(map: &Map<String, Value>, key: &str) -> Option<u64> {
    match map.get(key)? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An app or job id: blank is absent; `.`, `..`, control characters or more than
/// [`MAX_ID_CHARS`] are refused. The ids become URL path segments of the next poll (the URL
/// layer drops a `.` or `..` segment after signing, so every such poll would be refused),
/// database keys and log fields.
fn id(map: &Map<String, Value>, field: &'static str) -> Result<Option<String>, EventError> {
    let Some(id) = text(map, field).filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let bad = |reason| Err(EventError::BadId { field, reason });
    if id == "." || id == ".." {
        return bad("`.` and `..` are not ids");
    }
    if id.chars().any(char::is_control) {
        return bad("it has a control character");
    }
    if id.chars().count() > MAX_ID_CHARS {
        return bad("it is longer than 128 characters");
    }
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn parse_table() {
        type Want = Result<fn(&RecordEvent) -> bool, EventError>;
        let file_complete = br#"{"event_type":"RECORD_FILE_COMPLETE","stream_name":"mystream","record_format":"HLS","download_url":"https://b.obs.example/a.m3u8","file_size":26254952,"record_duration":65,"start_time":"2021-04-28T08:56:57Z","end_time":"2021-04-28T08:58:02Z","width":1280,"height":720,"obs_location":"http://obs.cn-north-4.myhuaweicloud.com","obs_bucket":"abc-rtc-bucket2","obs_object":"Record/a.m3u8","app_id":"5fcdf56512345676f835d0d4","job_id":"608196a2fa1234567515147f32ef463b","room_id":"room01"}"#;
        let long_id = format!(
            r#"{{"event_type":"RECORD_NEW_FILE_START","job_id":"{}"}}"#,
            "j".repeat(MAX_ID_CHARS + 1)
        );
        let longest_id = format!(
            r#"{{"event_type":"RECORD_NEW_FILE_START","job_id":"{}"}}"#,
            "j".repeat(MAX_ID_CHARS)
        );
        let cases: &[(&str, &[u8], Want)] = &[
            (
                "the docs' RECORD_FILE_COMPLETE example, every file field",
                file_complete,
                Ok(|e| {
                    e.event_type == EventType::RecordFileComplete
                        && e.app_id.as_deref() == Some("5fcdf56512345676f835d0d4")
                        && e.job_id.as_deref() == Some("608196a2fa1234567515147f32ef463b")
                        && e.room_id.as_deref() == Some("room01")
                        && e.stream_name.as_deref() == Some("mystream")
                        && e.record_format.as_deref() == Some("HLS")
                        && e.file
                            == Some(RecordedFile {
                                download_url: Some("https://b.obs.example/a.m3u8".into()),
                                record_duration: Some(65),
                                file_size: Some(26254952),
                                width: Some(1280),
                                height: Some(720),
                                start_time: Some("2021-04-28T08:56:57Z".into()),
                                end_time: Some("2021-04-28T08:58:02Z".into()),
                                obs_location: Some(
                                    "http://obs.cn-north-4.myhuaweicloud.com".into(),
                                ),
                                obs_bucket: Some("abc-rtc-bucket2".into()),
                                obs_object: Some("Record/a.m3u8".into()),
                            })
                }),
            ),
            (
                "the signing vector's body: no app_id, no file fields",
                br#"{"event_type":"RECORD_FILE_COMPLETE","job_id":"j1"}"#,
                Ok(|e| {
                    e.event_type == EventType::RecordFileComplete
                        && e.app_id.is_none()
                        && e.job_id.as_deref() == Some("j1")
                        && e.file.is_none()
                }),
            ),
            (
                "new file start",
                br#"{"event_type":"RECORD_NEW_FILE_START","app_id":"a","job_id":"j"}"#,
                Ok(|e| e.event_type == EventType::RecordNewFileStart && e.file.is_none()),
            ),
            (
                "server over, with its detail message",
                br#"{"event_type":"CLOUD_RECORD_SERVER_OVER","job_id":"j","detail_message":"idle"}"#,
                Ok(|e| {
                    e.event_type == EventType::CloudRecordServerOver
                        && e.detail_message.as_deref() == Some("idle")
                }),
            ),
            (
                "event type in another case, with spaces and a NUL",
                b"{\"event_type\":\" cloud_record_server_over\\u0000 \",\"job_id\":\"j\"}",
                Ok(|e| e.event_type == EventType::CloudRecordServerOver),
            ),
            (
                "an unknown type is kept, cleaned, and needs no job",
                b"{\"event_type\":\" RTC_USER_JOIN\\r\\n\",\"room_id\":\"r\"}",
                Ok(|e| {
                    e.event_type == EventType::Other("RTC_USER_JOIN".into())
                        && e.job_id.is_none()
                        && e.room_id.as_deref() == Some("r")
                }),
            ),
            (
                "CLOUD_RECORD_OVER is another type, not SERVER_OVER",
                br#"{"event_type":"CLOUD_RECORD_OVER","job_id":"j"}"#,
                Ok(|e| e.event_type == EventType::Other("CLOUD_RECORD_OVER".into())),
            ),
            (
                "ids and numbers as numbers, strings or junk",
                br#"{"event_type":"RECORD_FILE_COMPLETE","app_id":12345,"job_id":"j","file_size":"2048","record_duration":65.0,"width":-1,"height":{"px":720}}"#,
                Ok(|e| {
                    e.app_id.as_deref() == Some("12345")
                        && e.file
                            == Some(RecordedFile {
                                file_size: Some(2048),
                                record_duration: Some(65),
                                ..RecordedFile::default()
                            })
                }),
            ),
            (
                "unknown fields are ignored",
                br#"{"event_type":"RECORD_NEW_FILE_START","job_id":"j","new_field":[1,2]}"#,
                Ok(|e| e.job_id.as_deref() == Some("j")),
            ),
            (
                "a blank app_id is absent",
                br#"{"event_type":"RECORD_NEW_FILE_START","job_id":"j","app_id":"  "}"#,
                Ok(|e| e.app_id.is_none()),
            ),
            (
                "an id of exactly the longest length",
                longest_id.as_bytes(),
                Ok(|e| e.job_id.as_ref().map(|j| j.len()) == Some(MAX_ID_CHARS)),
            ),
            (
                "not JSON",
                b"event_type=RECORD_FILE_COMPLETE",
                Err(EventError::NotJson(
                    "expected value at line 1 column 1".into(),
                )),
            ),
            (
                "cut short",
                br#"{"event_type":"RECORD_FILE_COMPLETE","job_id":"j1""#,
                Err(EventError::NotJson(
                    "EOF while parsing an object at line 1 column 50".into(),
                )),
            ),
            ("empty body", b"", Err(EventError::NotJson("EOF while parsing a value at line 1 column 0".into()))),
            (
                "a JSON array",
                br#"[{"event_type":"RECORD_FILE_COMPLETE","job_id":"j1"}]"#,
                Err(EventError::NotAnObject),
            ),
            ("JSON null", b"null", Err(EventError::NotAnObject)),
            (
                "no event type",
                br#"{"job_id":"j1"}"#,
                Err(EventError::MissingField("event_type")),
            ),
            (
                "a blank event type",
                br#"{"event_type":" \u0000","job_id":"j1"}"#,
                Err(EventError::MissingField("event_type")),
            ),
            (
                "an event type that is an object",
                br#"{"event_type":{"name":"RECORD_FILE_COMPLETE"},"job_id":"j1"}"#,
                Err(EventError::MissingField("event_type")),
            ),
            (
                "a record event without a job",
                br#"{"event_type":"CLOUD_RECORD_SERVER_OVER","app_id":"a"}"#,
                Err(EventError::MissingField("job_id")),
            ),
            (
                "a record event with an empty job id",
                br#"{"event_type":"RECORD_FILE_COMPLETE","job_id":""}"#,
                Err(EventError::MissingField("job_id")),
            ),
            (
                "a job id of ..",
                br#"{"event_type":"RECORD_FILE_COMPLETE","job_id":".."}"#,
                Err(EventError::BadId {
                    field: "job_id",
                    reason: "`.` and `..` are not ids",
                }),
            ),
            (
                "an app id of .",
                br#"{"event_type":"RECORD_FILE_COMPLETE","app_id":".","job_id":"j"}"#,
                Err(EventError::BadId {
                    field: "app_id",
                    reason: "`.` and `..` are not ids",
                }),
            ),
            (
                "a job id with a newline",
                br#"{"event_type":"RECORD_FILE_COMPLETE","job_id":"j1\nFAKE LOG LINE"}"#,
                Err(EventError::BadId {
                    field: "job_id",
                    reason: "it has a control character",
                }),
            ),
            (
                "an unknown event with a bad id is refused too",
                br#"{"event_type":"RTC_X","job_id":"a\u0000b"}"#,
                Err(EventError::BadId {
                    field: "job_id",
                    reason: "it has a control character",
                }),
            ),
            (
                "a job id one character too long",
                long_id.as_bytes(),
                Err(EventError::BadId {
                    field: "job_id",
                    reason: "it is longer than 128 characters",
                }),
            ),
        ];
        for (name, body, want) in cases {
            match (RecordEvent::parse(body), want) {
                (Ok(event), Ok(check)) => assert!(check(&event), "{name}: {event:?}"),
                (Err(got), Err(want)) => assert_eq!(&got, want, "{name}"),
                (got, _) => panic!("{name}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_fix_and_never_quote_the_body() {
        let secret_looking =
            br#"{"event_type":"RECORD_FILE_COMPLETE","job_id":"j1\u0007","app_id":"hunter2-app"}"#;
        let err = RecordEvent::parse(secret_looking).unwrap_err();
        let text = err.to_string();
        assert_eq!(
            text,
            "the callback body's \"job_id\" is not an id: it has a control character"
        );
        assert!(!text.contains("hunter2"));
        let missing = RecordEvent::parse(br#"{"event_type":"RECORD_FILE_COMPLETE"}"#)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("\"job_id\""), "{missing}");
    }

    #[test]
    fn event_type_round_trip_and_labels() {
        let cases: &[(&str, EventType, &str, &str)] = &[
            (
                "RECORD_NEW_FILE_START",
                EventType::RecordNewFileStart,
                "RECORD_NEW_FILE_START",
                "RECORD_NEW_FILE_START",
            ),
            (
                "record_file_complete",
                EventType::RecordFileComplete,
                "RECORD_FILE_COMPLETE",
                "RECORD_FILE_COMPLETE",
            ),
            (
                "CLOUD_RECORD_SERVER_OVER",
                EventType::CloudRecordServerOver,
                "CLOUD_RECORD_SERVER_OVER",
                "CLOUD_RECORD_SERVER_OVER",
            ),
            (
                "Rtc_Stream_Event",
                EventType::Other("Rtc_Stream_Event".into()),
                "Rtc_Stream_Event",
                "other",
            ),
        ];
        for (input, want, text, label) in cases {
            let got = EventType::parse(input);
            assert_eq!(&got, want, "{input}");
            assert_eq!(got.to_string(), *text, "{input}");
            assert_eq!(got.label(), *label, "{input}");
            assert_eq!(
                serde_json::to_value(&got).unwrap(),
                Value::String(text.to_string())
            );
        }
        let long = "X".repeat(200);
        assert_eq!(
            EventType::parse(&long).as_str().len(),
            MAX_EVENT_TYPE_CHARS,
            "an unknown type is cut"
        );
    }

    #[test]
    fn an_event_serialises_without_absent_fields() {
        let event = RecordEvent::parse(
            br#"{"event_type":"RECORD_FILE_COMPLETE","job_id":"j1","file_size":7}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"event_type":"RECORD_FILE_COMPLETE","job_id":"j1","file":{"file_size":7}}"#
        );
    }

    fn header_map(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    #[test]
    fn headers_from_a_header_map() {
        let sig: &[u8] = b"c56bb3bda9855be6c75646686d30d07f4d09388524f03796c4ffaf3177375fc1";
        let full = [
            ("x-rtc-rand", b"738291".as_slice()),
            ("X-Rtc-Timestamp", b"1700000000".as_slice()),
            ("X-RTC-SIGNATURE", sig),
        ];
        let cases: &[(&str, HeaderMap, Result<(), SignatureError>)] = &[
            ("all three, any case of name", header_map(&full), Ok(())),
            (
                "no rand",
                header_map(&full[1..]),
                Err(SignatureError::MissingHeader("X-Rtc-Rand")),
            ),
            (
                "no timestamp",
                header_map(&[full[0], full[2]]),
                Err(SignatureError::MissingHeader("X-Rtc-Timestamp")),
            ),
            (
                "no signature",
                header_map(&full[..2]),
                Err(SignatureError::MissingHeader("X-Rtc-Signature")),
            ),
            (
                "no headers at all",
                HeaderMap::new(),
                Err(SignatureError::MissingHeader("X-Rtc-Rand")),
            ),
            (
                "two signatures",
                header_map(&[full[0], full[1], full[2], ("x-rtc-signature", sig)]),
                Err(SignatureError::Garbled {
                    header: "X-Rtc-Signature",
                    reason: "it is sent more than once",
                }),
            ),
            (
                "a rand that is not ASCII",
                header_map(&[("x-rtc-rand", b"73\xe98291"), full[1], full[2]]),
                Err(SignatureError::Garbled {
                    header: "X-Rtc-Rand",
                    reason: "it is not visible ASCII",
                }),
            ),
        ];
        for (name, map, want) in cases {
            let got = SignatureHeaders::from_headers(map);
            match (got, want) {
                (Ok(h), Ok(())) => {
                    assert_eq!(
                        h,
                        SignatureHeaders {
                            rand: "738291",
                            timestamp: "1700000000",
                            signature: std::str::from_utf8(sig).unwrap(),
                        },
                        "{name}"
                    );
                    let key = Secret::new(KEY);
                    assert_eq!(
                        verify_signature(
                            &key,
                            &h,
                            br#"{"event_type":"RECORD_FILE_COMPLETE","job_id":"j1"}"#
                        ),
                        Ok(()),
                        "{name}"
                    );
                }
                (Err(got), Err(want)) => assert_eq!(&got, want, "{name}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn sent_at_table() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "seconds, as in the vector",
                "1700000000",
                Some("2023-11-14T22:13:20Z"),
            ),
            (
                "milliseconds",
                "1700000000123",
                Some("2023-11-14T22:13:20.123Z"),
            ),
            (
                "surrounding spaces",
                " 1700000000 ",
                Some("2023-11-14T22:13:20Z"),
            ),
            ("zero", "0", Some("1970-01-01T00:00:00Z")),
            ("negative", "-5", None),
            ("not a number", "yesterday", None),
            ("a date, not a Unix time", "2023-11-14T22:13:20Z", None),
            ("empty", "", None),
        ];
        for (name, timestamp, want) in cases {
            let h = SignatureHeaders {
                rand: "1",
                timestamp,
                signature: "",
            };
            let got = h
                .sent_at()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
            assert_eq!(got.as_deref(), *want, "{name}");
        }
    }

    #[test]
    fn errors_never_show_the_key() {
        let key = Secret::new(KEY);
        let headers = SignatureHeaders {
            rand: "1",
            timestamp: "2",
            signature: &"0".repeat(64),
        };
        let err = verify_signature(&key, &headers, b"{}").unwrap_err();
        assert_eq!(err, SignatureError::Mismatch);
        assert!(!err.to_string().contains(KEY));
        assert!(!format!("{err:?}").contains(KEY));
        assert!(!format!("{headers:?} {key:?}").contains(KEY));
    }
}
