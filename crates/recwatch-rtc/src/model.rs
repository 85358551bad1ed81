//! The job record that `GET /v2/apps/{app_id}/individual-stream-jobs/{job_id}` (and its
//! mix-stream twin, `.../mix-stream-jobs/{job_id}`) returns, and the error body of a refused
//! request.
//!
//! Every field is optional and ids may arrive as strings or numbers (the API docs show both).
//! `state` and `stop_reason` are documented only as text, so unknown values are kept as
//! strings instead of failing the parse: a new stop reason must reach the operator, not crash
//! the poller. Parsing is as lenient as the official SDK's: one odd field (a `record_param`
//! that is not an object, invalid UTF-8 in the free-text `description`) never loses the
//! record, because the record is how a dying job is seen.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Longest state or stop reason kept; a longer one is cut (the raw answer keeps all of it).
const MAX_ENUM_TEXT: usize = 64;

/// The form two state (or stop reason) texts are compared in: no control characters (NUL
/// included), no whitespace, upper case. `" running\0"` and `"RUNNING"` are the same state:
/// treating them as different would make a false transition, and an alert, out of noise.
pub fn enum_key(s: &str) -> String {
    key_chars(s).collect()
}

fn key_chars(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars()
        .filter(|c| !c.is_control() && !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .take(MAX_ENUM_TEXT)
}

/// `enum_key(a) == enum_key(b)` without allocating: it runs for every poll.
pub fn same_enum(a: &str, b: &str) -> bool {
    a == b || key_chars(a).eq(key_chars(b))
}

/// An unknown value as kept: control characters dropped (a NUL or CR must not reach a log
/// line, a label or a mail header), surrounding whitespace trimmed, at most 64 characters;
/// the case is the API's.
fn clean(s: &str) -> String {
    let kept: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ENUM_TEXT * 4)
        .collect();
    kept.trim().chars().take(MAX_ENUM_TEXT).collect()
}

/// A recording job's lifecycle state. Equality is on [`enum_key`], so case, whitespace and
/// NUL variants of one value are one state.
///
/// `Hash` agrees with that equality, `Display` and serde write the API's spelling, and
/// deserializing never fails: a state the API invents is kept as [`State::Other`].
///
/// ```
/// use recwatch_rtc::State;
/// use std::collections::HashSet;
///
/// assert_eq!(State::parse("RUNNING"), State::Running);
/// assert_eq!(State::parse(" running\0"), State::Running);
/// assert_eq!(State::Running.to_string(), "RUNNING");
///
/// let paused: State = serde_json::from_str(r#""Paused""#).unwrap();
/// assert_eq!(paused, State::Other("PAUSED".into()));
/// assert_eq!(paused.as_str(), "Paused", "an unknown value keeps the API's case");
/// assert_eq!(paused.label(), "other");
/// assert_eq!(serde_json::to_string(&State::Stopped).unwrap(), r#""STOPPED""#);
///
/// let seen: HashSet<State> = [State::parse("paused"), State::parse("PAUSED")].into();
/// assert_eq!(seen.len(), 1);
/// ```
#[derive(Clone, Debug)]
pub enum State {
    /// `INIT`: the job is initialising.
    Init,
    /// `RUNNING`: recording.
    Running,
    /// `STOPPED`: ended; see the job's [`StopReason`]. A stopped job never changes again.
    Stopped,
    /// A value the documentation does not list, cleaned (no control characters, trimmed, at
    /// most 64 characters) and otherwise as the API sent it.
    Other(String),
}

impl State {
    /// Reads the API's text: the documented values in any case or padding, anything else as
    /// [`State::Other`]. Never fails.
    pub fn parse(s: &str) -> State {
        // The documented spelling, as nearly every answer has it, needs no normalising.
        match s {
            "INIT" => return State::Init,
            "RUNNING" => return State::Running,
            "STOPPED" => return State::Stopped,
            _ => {}
        }
        match enum_key(s).as_str() {
            "INIT" => State::Init,
            "RUNNING" => State::Running,
            "STOPPED" => State::Stopped,
            _ => State::Other(clean(s)),
        }
    }

    /// The API's spelling (an unknown value as kept).
    pub fn as_str(&self) -> &str {
        match self {
            State::Init => "INIT",
            State::Running => "RUNNING",
            State::Stopped => "STOPPED",
            State::Other(s) => s,
        }
    }

    /// A STOPPED job cannot change again.
    pub fn is_terminal(&self) -> bool {
        matches!(self, State::Stopped)
    }

    /// The value as a metric label: the documented states, or `other`, so an API that invents
    /// states cannot grow the number of series without bound.
    pub fn label(&self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Running => "RUNNING",
            State::Stopped => "STOPPED",
            State::Other(_) => "other",
        }
    }
}

/// The metric label for a stored state text (see [`State::label`]).
pub fn state_label(s: &str) -> &'static str {
    State::parse(s).label()
}

/// Why a job stopped. Equality is on [`enum_key`], like [`State`], and so are `Hash`,
/// `Display` and serde: the API's spelling, unknown values kept as [`StopReason::Other`].
///
/// ```
/// use recwatch_rtc::StopReason;
///
/// assert_eq!(StopReason::parse("EXCEED_MAX_IDLE_TIME"), StopReason::ExceedMaxIdleTime);
/// assert_eq!(StopReason::InternalError.to_string(), "INTERNAL_ERROR");
/// let crashed: StopReason = serde_json::from_str(r#""Recorder_Crashed""#).unwrap();
/// assert_eq!(crashed, StopReason::Other("RECORDER_CRASHED".into()));
/// assert_eq!(serde_json::to_string(&crashed).unwrap(), r#""Recorder_Crashed""#);
/// ```
#[derive(Clone, Debug)]
pub enum StopReason {
    /// The tenant's own stop call.
    TenantStop,
    /// Nobody published for `max_idle_time` seconds.
    ExceedMaxIdleTime,
    /// The recording service failed.
    InternalError,
    /// A value the documentation does not list, cleaned like [`State::Other`].
    Other(String),
}

impl StopReason {
    /// Reads the API's text like [`State::parse`]. Never fails.
    pub fn parse(s: &str) -> StopReason {
        match s {
            "TENANT_STOP" => return StopReason::TenantStop,
            "EXCEED_MAX_IDLE_TIME" => return StopReason::ExceedMaxIdleTime,
            "INTERNAL_ERROR" => return StopReason::InternalError,
            _ => {}
        }
        match enum_key(s).as_str() {
            "TENANT_STOP" => StopReason::TenantStop,
            "EXCEED_MAX_IDLE_TIME" => StopReason::ExceedMaxIdleTime,
            "INTERNAL_ERROR" => StopReason::InternalError,
            _ => StopReason::Other(clean(s)),
        }
    }

    /// The API's spelling (an unknown value as kept).
    pub fn as_str(&self) -> &str {
        match self {
            StopReason::TenantStop => "TENANT_STOP",
            StopReason::ExceedMaxIdleTime => "EXCEED_MAX_IDLE_TIME",
            StopReason::InternalError => "INTERNAL_ERROR",
            StopReason::Other(s) => s,
        }
    }
}

/// Serde as the API's string, `Display` as the API's spelling, and `PartialEq`/`Eq`/`Hash` on
/// [`enum_key`], for both enums: written once so the two cannot drift apart.
macro_rules! string_enum_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(<$t>::parse(&String::deserialize(d)?))
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                same_enum(self.as_str(), other.as_str())
            }
        }
        impl Eq for $t {}
        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
                enum_key(self.as_str()).hash(h)
            }
        }
    };
}
string_enum_serde!(State);
string_enum_serde!(StopReason);

/// Accepts `"123"`, `123` or `1.5e3` and keeps the text; anything else becomes absent rather
/// than failing the whole response.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

/// Accepts an integer or a numeric string; anything else is absent.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => Some(b),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

/// A state or stop reason; blank (or only NULs and spaces) is absent: it says nothing.
fn lenient_enum_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(lenient_string(d)?.filter(|s| key_chars(s).next().is_some()))
}

fn lenient_state<'de, D: Deserializer<'de>>(d: D) -> Result<Option<State>, D::Error> {
    Ok(lenient_enum_text(d)?.map(|s| State::parse(&s)))
}

fn lenient_reason<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StopReason>, D::Error> {
    Ok(lenient_enum_text(d)?.map(|s| StopReason::parse(&s)))
}

/// `record_param` as an object, or as a string holding one (a JSON-in-JSON answer); anything
/// else is absent rather than failing the record over a field recwatch only displays.
fn lenient_record_param<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RecordParam>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    let value = match value {
        serde_json::Value::String(s) => match serde_json::from_str(&s) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        },
        v => v,
    };
    Ok(match value {
        serde_json::Value::Object(_) => serde_json::from_value(value).ok(),
        _ => None,
    })
}

/// `mix_param` as an object, or as a string holding one; anything else is absent. Kept whole
/// (layout panes, background images, any field the API adds), because a mix job re-created
/// from it must get exactly the parameters it had.
fn lenient_object<'de, D: Deserializer<'de>>(d: D) -> Result<Option<JsonObject>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    let value = match value {
        serde_json::Value::String(s) => match serde_json::from_str(&s) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        },
        v => v,
    };
    Ok(match value {
        serde_json::Value::Object(o) => Some(o),
        _ => None,
    })
}

/// A JSON object kept as the API sent it.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// `record_param` of a job: the recording rule it records with, and any other field the API
/// puts beside it, kept so a re-created job records exactly as the one it replaces.
///
/// ```
/// use recwatch_rtc::model::parse_job;
///
/// let job = parse_job(br#"{"state":"RUNNING","record_param":{"record_rule_id":7,"x":[1]}}"#).unwrap();
/// let param = job.record_param.unwrap();
/// assert_eq!(param.record_rule_id.as_deref(), Some("7"));
/// assert_eq!(param.extra["x"], serde_json::json!([1]));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordParam {
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub record_rule_id: Option<String>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: JsonObject,
}

/// One individual stream recording job, as the API reports it.
///
/// Every field is optional, as in the API; ids that arrive as numbers are kept as their text.
/// Serializing writes only the fields present, in the API's names, so a stored snapshot reads
/// back as the same record. Read an answer with [`parse_job`], which is as lenient as the SDK.
///
/// ```
/// use recwatch_rtc::model::parse_job;
/// use recwatch_rtc::{State, StopReason};
///
/// let job = parse_job(br#"{"job_id": 1234, "state": "STOPPED",
///     "stop_reason": "EXCEED_MAX_IDLE_TIME", "max_idle_time": "30"}"#).unwrap();
/// assert_eq!(job.job_id.as_deref(), Some("1234"));
/// assert_eq!(job.state, Some(State::Stopped));
/// assert_eq!(job.stop_reason, Some(StopReason::ExceedMaxIdleTime));
/// assert_eq!(job.max_idle_time, Some(30));
/// assert_eq!(job.room_id, None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSnapshot {
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    /// The job id (the docs show a number; kept as text).
    pub job_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    /// The RTC app the job belongs to.
    pub app_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub room_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    /// `s_{job_id}_{room_id}_{user_id}` for an individual-stream job, `m_{job_id}_{room_id}`
    /// for a mix-stream job.
    pub stream_name: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    /// Whether audio is recorded (the API defaults to true).
    pub is_record_audio: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    /// `CAMERASTREAM` or `SCREENSTREAM`.
    pub video_type: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    /// `LD`, `SD`, `HD` or `FHD`.
    pub select_stream_type: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_u64",
        skip_serializing_if = "Option::is_none"
    )]
    /// Seconds without a publisher after which the recorder stops the job (`EXCEED_MAX_IDLE_TIME`).
    pub max_idle_time: Option<u64>,
    #[serde(
        default,
        deserialize_with = "lenient_record_param",
        skip_serializing_if = "Option::is_none"
    )]
    pub record_param: Option<RecordParam>,
    #[serde(
        default,
        deserialize_with = "lenient_object",
        skip_serializing_if = "Option::is_none"
    )]
    /// A mix-stream job's layout and encoding (`room_id`, `encode_template`, `max_idle_time`,
    /// `layout_template`, `layout_panes`, ...), kept whole; absent for an individual job.
    pub mix_param: Option<JsonObject>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    /// UTC text like `2006-01-02T15:04:05.075Z`, as sent (so are the other times).
    pub create_time: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub update_time: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_time: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_time: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_state",
        skip_serializing_if = "Option::is_none"
    )]
    /// The lifecycle state; absent when the answer has none (or only a blank one).
    pub state: Option<State>,
    #[serde(
        default,
        deserialize_with = "lenient_reason",
        skip_serializing_if = "Option::is_none"
    )]
    /// Why a `STOPPED` job stopped.
    pub stop_reason: Option<StopReason>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    /// Free text about the state (invalid UTF-8 in it is decoded lossily).
    pub description: Option<String>,
}

impl JobSnapshot {
    /// `create_time` read as a time, when the API gave one in RFC 3339 (the text itself is
    /// kept as sent, for the payload and the database).
    pub fn created(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let t = chrono::DateTime::parse_from_rfc3339(self.create_time.as_deref()?).ok()?;
        Some(t.with_timezone(&chrono::Utc))
    }
}

/// Fields where invalid UTF-8 (shown as U+FFFD after a lossy decode) would change what the
/// record means: which job it is about, and its phase. Anywhere else it is only text.
type Field = fn(&JobSnapshot) -> Option<&str>;
const MEANINGFUL: [(&str, Field); 4] = [
    ("job_id", |j| j.job_id.as_deref()),
    ("app_id", |j| j.app_id.as_deref()),
    ("state", |j| j.state.as_ref().map(State::as_str)),
    ("stop_reason", |j| {
        j.stop_reason.as_ref().map(StopReason::as_str)
    }),
];

/// Parses a 200 body into a job record, as leniently as the SDK: invalid UTF-8 in free text
/// (the `description` a recorder fills with whatever it has) is decoded lossily instead of
/// losing the record. Invalid UTF-8 in an id, the state or the stop reason is still an error:
/// a replacement character there would make a false transition or a wrong job. A field whose
/// value cannot be read at all is dropped alone (see [`parse_job_fields`]).
pub fn parse_job(body: &[u8]) -> Result<JobSnapshot, String> {
    parse_job_fields(body).map(|(job, _)| job)
}

/// [`parse_job`], with the names of the top-level fields it had to drop because their value
/// could not be read (a number out of range, `"max_idle_time": 1e309`, which serde_json
/// refuses and the SDK reads as infinity): one field that does not fit costs that field, not
/// the record, so the state and stop reason beside it are still read. The caller logs them.
pub fn parse_job_fields(body: &[u8]) -> Result<(JobSnapshot, Vec<String>), String> {
    // serde would read a JSON array as the struct's fields in order: `[]` is not a record.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err("expected a JSON object, found an array".into());
    }
    let text = match std::str::from_utf8(body) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(body),
    };
    let (job, dropped) = match serde_json::from_str::<JobSnapshot>(&text) {
        Ok(job) => (job, Vec::new()),
        Err(e) => field_by_field(&text).ok_or_else(|| e.to_string())?,
    };
    if matches!(text, std::borrow::Cow::Owned(_)) {
        for (name, get) in MEANINGFUL {
            if get(&job).is_some_and(|v| v.contains('\u{FFFD}')) {
                return Err(format!("{name} is not valid UTF-8"));
            }
        }
    }
    Ok((job, dropped))
}

/// The second try of [`parse_job_fields`]: the object split into its top-level fields, each
/// value read alone, those that cannot be read left out. `None` when the text is not a JSON
/// object at all (the first error then stands).
fn field_by_field(text: &str) -> Option<(JobSnapshot, Vec<String>)> {
    let mut fields = JsonObject::new();
    let mut dropped = Vec::new();
    for (name, raw) in split_object(text)? {
        match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(v) => {
                fields.insert(name, v);
            }
            Err(_) => dropped.push(name),
        }
    }
    let job = serde_json::from_value(serde_json::Value::Object(fields)).ok()?;
    Some((job, dropped))
}

/// A JSON object's top-level fields as (name, the value's text), found by scanning strings and
/// brackets only, so no value is converted (a number out of range is still just text here).
/// `None` for anything that is not one well-formed object.
fn split_object(text: &str) -> Option<Vec<(String, &str)>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut out = Vec::new();
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, i)?;
        let name: String = serde_json::from_str(&text[i..key_end]).ok()?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(b, i + 1);
        let end = value_end(b, start)?;
        out.push((name, text[start..end].trim_end()));
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b'}' => return (skip_ws(b, i + 1) == b.len()).then_some(out),
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// The index just past the string that starts at `b[i]` (a `"`), escapes skipped.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Where the value starting at `b[i]` ends: past its closing bracket or quote, or at the `,`
/// or `}` that follows a bare number or word.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'"' => {
                j = string_end(b, j)?;
                if depth == 0 {
                    return Some(j);
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return (j > i).then_some(j),
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j + 1);
                }
            }
            b',' if depth == 0 => return (j > i).then_some(j),
            _ => {}
        }
        j += 1;
    }
    None
}

/// Whether an id in an answer names the id that was asked for. Ids may come back as numbers:
/// a big one loses digits in a JSON float (`1.2345678901234568e20`), so two ids that are the
/// same number are the same id.
pub fn same_id(asked: &str, answered: &str) -> bool {
    let (asked, answered) = (asked.trim(), answered.trim());
    if asked == answered {
        return true;
    }
    let number = |s: &str| {
        s.parse::<f64>().ok().filter(|f| {
            f.is_finite()
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        })
    };
    matches!((number(asked), number(answered)), (Some(a), Some(b)) if a == b)
}

/// The error body of a refused request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    pub error_code: Option<String>,
    pub error_msg: Option<String>,
}

/// Longest non-JSON error body kept as the message (an HTML error page says enough in this).
const MAX_ERROR_TEXT: usize = 200;

/// The spellings the SDK reads, as (code, message) pairs, in its order of preference.
const ERROR_PAIRS: [(&str, &str); 3] = [
    ("error_code", "error_msg"),
    ("errorCode", "errorMsg"),
    ("code", "message"),
];

fn text_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The SDK's search (`DefaultExceptionHandler._process_sdk_error`) over one JSON object's
/// text: the first complete pair in [`ERROR_PAIRS`]' order ends the search there (a pair
/// whose code is null or empty still ends it: the status is then the code); else every value
/// that is an object is searched the same way, at any depth, in the order the body has them
/// (a Python dict's order; serde_json's map would sort the keys, hence the text), and the
/// SDK's loop does not stop at a find, so the last pair found is the one it keeps.
fn sdk_pair(text: &str, found: &mut Option<ErrorBody>) {
    let Some(fields) = split_object(text) else {
        return;
    };
    // A dict keeps the last of two equal keys.
    let get = |name: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, raw)| serde_json::from_str::<serde_json::Value>(raw).ok())
    };
    for (code, msg) in ERROR_PAIRS {
        if let (Some(c), Some(m)) = (get(code), get(msg)) {
            *found = Some(ErrorBody {
                error_code: c.as_ref().and_then(text_of).filter(|c| !c.is_empty()),
                error_msg: m.as_ref().and_then(text_of),
            });
            return;
        }
    }
    for (_, raw) in &fields {
        if raw.starts_with('{') {
            sdk_pair(raw, found);
        }
    }
}

/// What a body with no complete pair anywhere still says at its top level: a lone code (or a
/// code beside another spelling's message). The SDK would report only the status there;
/// keeping the code is more than it says, never different from it.
fn lone_code(o: &serde_json::Map<String, serde_json::Value>) -> ErrorBody {
    ErrorBody {
        error_code: ERROR_PAIRS
            .iter()
            .find_map(|(c, _)| o.get(*c).and_then(text_of)),
        error_msg: ERROR_PAIRS
            .iter()
            .find_map(|(_, m)| o.get(*m).and_then(text_of)),
    }
}

/// Reads an error body like the official SDK: a complete code/message pair wherever it is
/// (top level first, else nested at any depth, see `sdk_pair`); only when there is none, a
/// lone code at the top level; a body that is not a JSON object leaves the status as the
/// only code, with the start of the text as the message.
pub fn parse_error_body(body: &[u8]) -> ErrorBody {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(o)) => {
            let mut found = None;
            // It parsed as an object, so it is UTF-8.
            sdk_pair(&String::from_utf8_lossy(body), &mut found);
            found.unwrap_or_else(|| lone_code(&o))
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let text: String = text
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(MAX_ERROR_TEXT)
                .collect();
            let text = text.trim();
            ErrorBody {
                error_code: None,
                error_msg: (!text.is_empty()).then(|| text.to_string()),
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example_with_numeric_ids() {
        let body = r#"{"job_id": 1234, "app_id": 5678, "room_id": 42, "user_id": "u1",
            "stream_name": "s", "max_idle_time": 30, "state": "RUNNING",
            "record_param": {"record_rule_id": "r1"}, "create_time": "2006-01-02T15:04:05.075Z"}"#;
        let job: JobSnapshot = serde_json::from_str(body).unwrap();
        assert_eq!(job.job_id.as_deref(), Some("1234"));
        assert_eq!(job.app_id.as_deref(), Some("5678"));
        assert_eq!(job.room_id.as_deref(), Some("42"));
        assert_eq!(job.state, Some(State::Running));
        assert_eq!(job.max_idle_time, Some(30));
        assert_eq!(
            job.record_param.unwrap().record_rule_id.as_deref(),
            Some("r1")
        );
    }

    #[test]
    fn table_of_states_and_reasons() {
        let cases = [
            ("init", r#"{"state":"INIT"}"#, Some(State::Init), None),
            (
                "running",
                r#"{"state":"RUNNING"}"#,
                Some(State::Running),
                None,
            ),
            (
                "tenant",
                r#"{"state":"STOPPED","stop_reason":"TENANT_STOP"}"#,
                Some(State::Stopped),
                Some(StopReason::TenantStop),
            ),
            (
                "idle",
                r#"{"state":"STOPPED","stop_reason":"EXCEED_MAX_IDLE_TIME"}"#,
                Some(State::Stopped),
                Some(StopReason::ExceedMaxIdleTime),
            ),
            (
                "internal",
                r#"{"state":"STOPPED","stop_reason":"INTERNAL_ERROR"}"#,
                Some(State::Stopped),
                Some(StopReason::InternalError),
            ),
            (
                "unknown kept",
                r#"{"state":"PAUSED","stop_reason":"QUOTA"}"#,
                Some(State::Other("PAUSED".into())),
                Some(StopReason::Other("QUOTA".into())),
            ),
            ("absent", r#"{}"#, None, None),
            ("null", r#"{"state":null,"stop_reason":null}"#, None, None),
            (
                "extra fields ignored",
                r#"{"state":"INIT","brand_new":{"x":1}}"#,
                Some(State::Init),
                None,
            ),
        ];
        for (name, body, state, reason) in cases {
            let job: JobSnapshot =
                serde_json::from_str(body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(job.state, state, "{name}");
            assert_eq!(job.stop_reason, reason, "{name}");
        }
    }

    #[test]
    fn round_trips_unknown_values_as_strings() {
        let job = JobSnapshot {
            state: Some(State::Other("PAUSED".into())),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&job).unwrap(),
            r#"{"state":"PAUSED"}"#
        );
    }

    #[test]
    fn error_body_table() {
        let e = |code: Option<&str>, msg: Option<&str>| ErrorBody {
            error_code: code.map(str::to_string),
            error_msg: msg.map(str::to_string),
        };
        let cases: Vec<(&str, &[u8], ErrorBody)> = vec![
            (
                "snake case",
                br#"{"error_code":"RTC.00001003","error_msg":"m"}"#,
                e(Some("RTC.00001003"), Some("m")),
            ),
            (
                "camel case",
                br#"{"errorCode":"RTC.00001003","errorMsg":"m"}"#,
                e(Some("RTC.00001003"), Some("m")),
            ),
            (
                "code and message",
                br#"{"code":"APIG.0101","message":"The API does not exist"}"#,
                e(Some("APIG.0101"), Some("The API does not exist")),
            ),
            (
                "two spellings: the SDK's first pair wins, the code is kept",
                br#"{"code":404,"message":"Not Found","error_code":"APIG.0101","error_msg":"The API does not exist"}"#,
                e(Some("APIG.0101"), Some("The API does not exist")),
            ),
            (
                "mixed spellings in no pair still keep the code",
                br#"{"error_code":"RTC.00001003","message":"gone"}"#,
                e(Some("RTC.00001003"), Some("gone")),
            ),
            (
                "a code alone",
                br#"{"errorCode":"APIGW.0101"}"#,
                e(Some("APIGW.0101"), None),
            ),
            (
                "numeric code",
                br#"{"code":40401,"message":"m"}"#,
                e(Some("40401"), Some("m")),
            ),
            (
                "nested one level",
                br#"{"error":{"code":"APIG.0101","message":"The API does not exist"},"request_id":"r"}"#,
                e(Some("APIG.0101"), Some("The API does not exist")),
            ),
            (
                "the top level wins over nesting",
                br#"{"error_code":"RTC.00001003","error_msg":"top","error":{"code":"X","message":"inner"}}"#,
                e(Some("RTC.00001003"), Some("top")),
            ),
            (
                "two levels down, as the SDK searches any depth",
                br#"{"a":{"b":{"code":"X","message":"deep"}}}"#,
                e(Some("X"), Some("deep")),
            ),
            (
                "nested under error.detail",
                br#"{"error":{"detail":{"code":"RTC.00002001","message":"internal"}}}"#,
                e(Some("RTC.00002001"), Some("internal")),
            ),
            (
                "a lone top-level code loses to a complete nested pair",
                br#"{"code":"APIG.0000","error":{"error_code":"RTC.00001003","error_msg":"gone"}}"#,
                e(Some("RTC.00001003"), Some("gone")),
            ),
            (
                "a lone top-level message and a nested pair: the pair",
                br#"{"message":"outer","error":{"code":"X","message":"inner"}}"#,
                e(Some("X"), Some("inner")),
            ),
            (
                "the SDK's loop keeps the last pair it finds",
                br#"{"first":{"code":"A","message":"a"},"second":{"code":"B","message":"b"}}"#,
                e(Some("B"), Some("b")),
            ),
            (
                "last in the body's order, not the keys' sorted order",
                br#"{"zeta":{"code":"Z","message":"z"},"alpha":{"code":"A","message":"a"}}"#,
                e(Some("A"), Some("a")),
            ),
            (
                "a nested pair after a string holding braces",
                br#"{"note":"} {\"code\":\"no\"}","error":{"error_code":"RTC.00001003","error_msg":"gone"}}"#,
                e(Some("RTC.00001003"), Some("gone")),
            ),
            (
                "a complete pair with a null code ends the search: the status is the code",
                br#"{"error_code":null,"error_msg":"m","error":{"code":"X","message":"inner"}}"#,
                e(None, Some("m")),
            ),
            (
                "a number beside a complete pair: the pair's code",
                br#"{"code":404,"error_code":"RTC.00001003","error_msg":"gone"}"#,
                e(Some("RTC.00001003"), Some("gone")),
            ),
            ("empty body", b"", e(None, None)),
            ("empty object", b"{}", e(None, None)),
            (
                "an html page is the message",
                b"<html><body>\r\n404 Not Found</body></html>",
                e(None, Some("<html><body>  404 Not Found</body></html>")),
            ),
            ("a JSON array", b"[1,2]", e(None, Some("[1,2]"))),
        ];
        for (name, body, want) in cases {
            assert_eq!(parse_error_body(body), want, "{name}");
        }
        let long = "x".repeat(5000);
        let got = parse_error_body(long.as_bytes());
        assert_eq!(got.error_msg.unwrap().len(), 200, "capped");
    }

    #[test]
    fn lenient_record_table() {
        // (name, body, job_id, record_rule_id, state)
        type Case<'a> = (
            &'a str,
            &'a [u8],
            Option<&'a str>,
            Option<&'a str>,
            Option<State>,
        );
        let cases: Vec<Case> = vec![
            (
                "record_param a string",
                br#"{"job_id":"j","state":"RUNNING","record_param":"rule-1"}"#,
                Some("j"),
                None,
                Some(State::Running),
            ),
            (
                "record_param JSON in a string",
                br#"{"job_id":"j","state":"RUNNING","record_param":"{\"record_rule_id\":\"r\"}"}"#,
                Some("j"),
                Some("r"),
                Some(State::Running),
            ),
            (
                "record_param an array",
                br#"{"job_id":"j","state":"INIT","record_param":[1]}"#,
                Some("j"),
                None,
                Some(State::Init),
            ),
            (
                "record_param null",
                br#"{"job_id":"j","state":"INIT","record_param":null}"#,
                Some("j"),
                None,
                Some(State::Init),
            ),
            (
                "record_rule_id a number",
                br#"{"job_id":"j","record_param":{"record_rule_id":7}}"#,
                Some("j"),
                Some("7"),
                None,
            ),
            (
                "numeric ids",
                br#"{"job_id":123456789012,"app_id":5678,"state":"STOPPED"}"#,
                Some("123456789012"),
                None,
                Some(State::Stopped),
            ),
            (
                "invalid UTF-8 only in description",
                b"{\"job_id\":\"j\",\"state\":\"RUNNING\",\"description\":\"caf\xe9 \xff\"}",
                Some("j"),
                None,
                Some(State::Running),
            ),
            (
                "blank state is no state",
                b"{\"job_id\":\"j\",\"state\":\" \\u0000 \"}",
                Some("j"),
                None,
                None,
            ),
        ];
        for (name, body, job_id, rule, state) in cases {
            let job = parse_job(body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(job.job_id.as_deref(), job_id, "{name}");
            assert_eq!(
                job.record_param.and_then(|r| r.record_rule_id).as_deref(),
                rule,
                "{name}"
            );
            assert_eq!(job.state, state, "{name}");
        }
        let job = parse_job(b"{\"state\":\"RUNNING\",\"description\":\"caf\xe9\"}").unwrap();
        assert_eq!(job.description.as_deref(), Some("caf\u{FFFD}"));

        let refused: Vec<(&str, &[u8], &str)> = vec![
            (
                "invalid UTF-8 in the state",
                b"{\"state\":\"RUNN\xffING\"}",
                "state",
            ),
            (
                "invalid UTF-8 in the job id",
                b"{\"job_id\":\"j\xff\",\"state\":\"RUNNING\"}",
                "job_id",
            ),
            ("not JSON", b"<html>", "expected value"),
            ("an array", b"[]", "found an array"),
        ];
        for (name, body, why) in refused {
            let e = parse_job(body).expect_err(name);
            assert!(e.contains(why), "{name}: {e}");
        }
    }

    #[test]
    fn a_field_that_does_not_fit_costs_that_field_table() {
        // (name, body, fields dropped, state, stop reason)
        type Case<'a> = (
            &'a str,
            &'a [u8],
            &'a [&'a str],
            Option<State>,
            Option<StopReason>,
        );
        let cases: Vec<Case> = vec![
            (
                "max_idle_time out of range (the SDK reads infinity)",
                br#"{"job_id":"j","max_idle_time":1e309,"state":"STOPPED","stop_reason":"INTERNAL_ERROR"}"#,
                &["max_idle_time"],
                Some(State::Stopped),
                Some(StopReason::InternalError),
            ),
            (
                "negative and nested overflows, strings with brackets and escapes around them",
                br#"{ "description" : "a } \" ] , {", "max_idle_time": -1e400 , "record_param": {"record_rule_id": "r", "n": [1e999]}, "state": "RUNNING" }"#,
                &["max_idle_time", "record_param"],
                Some(State::Running),
                None,
            ),
            (
                "an overflow in a field recwatch does not know",
                br#"{"state":"INIT","extra":1e309}"#,
                &[],
                Some(State::Init),
                None,
            ),
            (
                "a record that parses costs nothing",
                br#"{"state":"STOPPED","stop_reason":"TENANT_STOP","max_idle_time":30}"#,
                &[],
                Some(State::Stopped),
                Some(StopReason::TenantStop),
            ),
        ];
        for (name, body, dropped, state, reason) in cases {
            let (job, got) = parse_job_fields(body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, dropped, "{name}");
            assert_eq!(job.state, state, "{name}");
            assert_eq!(job.stop_reason, reason, "{name}");
            if dropped.contains(&"max_idle_time") {
                assert_eq!(job.max_idle_time, None, "{name}");
            }
        }
        let refused: Vec<(&str, &[u8])> = vec![
            ("cut short", br#"{"state":"RUNNING","max_idle_time":1e309"#),
            (
                "two objects",
                br#"{"max_idle_time":1e309}{"state":"RUNNING"}"#,
            ),
            ("a missing value", br#"{"max_idle_time":1e309,"state":}"#),
            ("not an object", b"1e309"),
        ];
        for (name, body) in refused {
            assert!(parse_job_fields(body).is_err(), "{name}");
        }
    }

    #[test]
    fn state_normalisation_table() {
        let cases = [
            ("canonical", "RUNNING", State::Running, "RUNNING", "RUNNING"),
            (
                "lower case",
                "running",
                State::Running,
                "RUNNING",
                "RUNNING",
            ),
            (
                "padded",
                "  STOPPED\t",
                State::Stopped,
                "STOPPED",
                "STOPPED",
            ),
            ("NUL", "INIT\0", State::Init, "INIT", "INIT"),
            ("CRLF", "RUNNING\r\n", State::Running, "RUNNING", "RUNNING"),
            (
                "unknown kept with its case",
                " Paused\0",
                State::Other("Paused".into()),
                "Paused",
                "other",
            ),
            (
                "unknown variants are one state",
                "PAUSED",
                State::Other("paused".into()),
                "PAUSED",
                "other",
            ),
        ];
        for (name, raw, want, text, label) in cases {
            let got = State::parse(raw);
            assert_eq!(got, want, "{name}");
            assert_eq!(got.as_str(), text, "{name}");
            assert_eq!(got.label(), label, "{name}");
            assert_eq!(state_label(raw), label, "{name}");
        }
        assert_ne!(
            State::Other("PAUSED".into()),
            State::Other("PAUSING".into())
        );
        let long = State::parse(&"Z".repeat(10_000));
        assert_eq!(long.as_str().len(), 64, "an unknown value is capped");
        assert_eq!(
            StopReason::parse(" internal_error\0"),
            StopReason::InternalError
        );
        assert_eq!(
            StopReason::parse("Recorder_Crashed"),
            StopReason::Other("RECORDER_CRASHED".into())
        );
    }

    /// What the daemon's `Phase { state, stop_reason }` needs of both enums: a value it can
    /// copy, compare, hash, print and store as the API's string.
    #[test]
    fn state_and_stop_reason_are_typed_values() {
        fn typed_value<T>()
        where
            T: Clone
                + fmt::Debug
                + PartialEq
                + Eq
                + std::hash::Hash
                + fmt::Display
                + Serialize
                + serde::de::DeserializeOwned,
        {
        }
        typed_value::<State>();
        typed_value::<StopReason>();

        fn hash_of<T: std::hash::Hash>(v: &T) -> u64 {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            BuildHasherDefault::<DefaultHasher>::default().hash_one(v)
        }
        // (name, a, b): equal values, so equal hashes, whatever their spelling.
        let states = [
            ("documented", State::Running, State::parse(" running\0")),
            (
                "unknown, case and padding",
                State::Other("Paused".into()),
                State::parse("PAUSED "),
            ),
        ];
        for (name, a, b) in states {
            assert_eq!(a, b, "{name}");
            assert_eq!(hash_of(&a), hash_of(&b), "{name}");
        }
        let reasons = [
            (
                "documented",
                StopReason::TenantStop,
                StopReason::parse("tenant_stop"),
            ),
            (
                "unknown",
                StopReason::Other("Quota".into()),
                StopReason::parse("QUOTA"),
            ),
        ];
        for (name, a, b) in reasons {
            assert_eq!(a, b, "{name}");
            assert_eq!(hash_of(&a), hash_of(&b), "{name}");
        }

        // (value, Display and JSON string)
        let spelled = [
            (State::Init, "INIT"),
            (State::Running, "RUNNING"),
            (State::Stopped, "STOPPED"),
            (State::Other("Paused".into()), "Paused"),
        ];
        for (state, text) in spelled {
            assert_eq!(state.to_string(), text);
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<State>(&json).unwrap(), state);
        }
        let spelled = [
            (StopReason::TenantStop, "TENANT_STOP"),
            (StopReason::ExceedMaxIdleTime, "EXCEED_MAX_IDLE_TIME"),
            (StopReason::InternalError, "INTERNAL_ERROR"),
            (StopReason::Other("Quota".into()), "Quota"),
        ];
        for (reason, text) in spelled {
            assert_eq!(reason.to_string(), text);
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<StopReason>(&json).unwrap(), reason);
        }
    }

    #[test]
    fn same_id_table() {
        let cases = [
            ("equal", "job-1", "job-1", true),
            ("other job", "job-1", "job-2", false),
            ("case matters", "abc", "ABC", false),
            ("numeric", "1234", "1234", true),
            (
                "big number lost digits in a float",
                "123456789012345678901",
                "1.2345678901234568e20",
                true,
            ),
            ("another number", "1234", "1235", false),
            ("padded", "job-1", " job-1 ", true),
            ("not numbers", "inf", "inf", true),
            ("nan is not a number", "NaN", "nan", false),
        ];
        for (name, asked, answered, want) in cases {
            assert_eq!(same_id(asked, answered), want, "{name}");
        }
    }
}
