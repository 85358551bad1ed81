//! The job record that `GET /v2/apps/{app_id}/individual-stream-jobs/{job_id}` returns.
//!
//! Every field is optional and ids may arrive as strings or numbers (the API docs show both).
//! `state` and `stop_reason` are documented only as text, so unknown values are kept as
//! strings instead of failing the parse: a new stop reason must reach the operator, not crash
//! the poller.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A recording job's lifecycle state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Init,
    Running,
    Stopped,
    Other(String),
}

impl State {
    pub fn parse(s: &str) -> State {
        match s {
            "INIT" => State::Init,
            "RUNNING" => State::Running,
            "STOPPED" => State::Stopped,
            other => State::Other(other.to_string()),
        }
    }

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
}

/// Why a job stopped.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// The tenant's own stop call.
    TenantStop,
    /// Nobody published for `max_idle_time` seconds.
    ExceedMaxIdleTime,
    InternalError,
    Other(String),
}

impl StopReason {
    pub fn parse(s: &str) -> StopReason {
        match s {
            "TENANT_STOP" => StopReason::TenantStop,
            "EXCEED_MAX_IDLE_TIME" => StopReason::ExceedMaxIdleTime,
            "INTERNAL_ERROR" => StopReason::InternalError,
            other => StopReason::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            StopReason::TenantStop => "TENANT_STOP",
            StopReason::ExceedMaxIdleTime => "EXCEED_MAX_IDLE_TIME",
            StopReason::InternalError => "INTERNAL_ERROR",
            StopReason::Other(s) => s,
        }
    }
}

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

fn lenient_state<'de, D: Deserializer<'de>>(d: D) -> Result<Option<State>, D::Error> {
    Ok(lenient_string(d)?.map(|s| State::parse(&s)))
}

fn lenient_reason<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StopReason>, D::Error> {
    Ok(lenient_string(d)?.map(|s| StopReason::parse(&s)))
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordParam {
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub record_rule_id: Option<String>,
}

/// One individual stream recording job, as the API reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSnapshot {
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub job_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
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
    pub stream_name: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub is_record_audio: Option<bool>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub video_type: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub select_stream_type: Option<String>,
    #[serde(
        default,
        deserialize_with = "lenient_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_idle_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_param: Option<RecordParam>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
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
    pub state: Option<State>,
    #[serde(
        default,
        deserialize_with = "lenient_reason",
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_reason: Option<StopReason>,
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<String>,
}

/// The error body. The SDK also accepts `errorCode/errorMsg` and `code/message`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(
        default,
        alias = "errorCode",
        alias = "code",
        deserialize_with = "lenient_string"
    )]
    pub error_code: Option<String>,
    #[serde(
        default,
        alias = "errorMsg",
        alias = "message",
        deserialize_with = "lenient_string"
    )]
    pub error_msg: Option<String>,
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
    fn error_body_aliases() {
        for body in [
            r#"{"error_code":"RTC.00001003","error_msg":"m"}"#,
            r#"{"errorCode":"RTC.00001003","errorMsg":"m"}"#,
            r#"{"code":"RTC.00001003","message":"m"}"#,
        ] {
            let e: ErrorBody = serde_json::from_str(body).unwrap();
            assert_eq!(e.error_code.as_deref(), Some("RTC.00001003"), "{body}");
            assert_eq!(e.error_msg.as_deref(), Some("m"), "{body}");
        }
    }
}
