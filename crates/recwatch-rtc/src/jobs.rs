//! Creating and stopping recording jobs, and the two kinds of job the API has.
//!
//! `POST /v2/apps/{app_id}/individual-stream-jobs` (or `.../mix-stream-jobs`) creates a job
//! and answers 201 with its record; `DELETE .../{job_id}` stops one (204, the job ends with
//! `TENANT_STOP`). A create's body is signed over its SHA-256, as the SDK signs it
//! (`tests/sdk_vectors.rs`).
//!
//! The Show answer carries every field the create call takes, under the same names
//! (rtc-api.md, "Creating, stopping and mix-stream jobs"), so [`CreateRequest::from_snapshot`]
//! builds the request that re-creates a job from what polling last saw, keeping the open
//! parts (`record_param`'s other fields, the whole `mix_param`) as JSON so nothing is lost.
//!
//! The API has no idempotency key: a create that failed may still have made a billable job.
//! [`create_failure`] says which failures prove that nothing was made (and may be retried),
//! which were refused for good, and which leave it unknown.

use crate::client::{ErrorKind, RtcClient, RtcError};
use crate::model::{JobSnapshot, JsonObject, RecordParam, parse_job, same_id};
use crate::sign;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The two kinds of recording job: one user's stream, or a room's streams mixed into one.
/// They share the states, stop reasons and rate limit, and differ in their path and in the
/// parameters a create takes.
///
/// ```
/// use recwatch_rtc::Kind;
///
/// assert_eq!("mix".parse::<Kind>(), Ok(Kind::Mix));
/// assert_eq!(Kind::default(), Kind::Individual);
/// assert_eq!(Kind::Mix.collection(), "mix-stream-jobs");
/// assert_eq!(Kind::from_stream_name("m_608196a2_room01"), Some(Kind::Mix));
/// assert!("MIX".parse::<Kind>().unwrap_err().contains("\"individual\" or \"mix\""));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An individual-stream job: one user's stream (`s_{job_id}_{room_id}_{user_id}`).
    #[default]
    Individual,
    /// A mix-stream job: a room's streams in one layout (`m_{job_id}_{room_id}`).
    Mix,
}

impl Kind {
    /// Every kind, for listings and metric labels.
    pub const ALL: [Kind; 2] = [Kind::Individual, Kind::Mix];

    /// The name used in configuration, the database and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Individual => "individual",
            Kind::Mix => "mix",
        }
    }

    /// The path segment of this kind's jobs under `/v2/apps/{app_id}/`.
    pub fn collection(self) -> &'static str {
        match self {
            Kind::Individual => "individual-stream-jobs",
            Kind::Mix => "mix-stream-jobs",
        }
    }

    /// The kind a stream name tells: RTC names an individual job's stream `s_...` and a mix
    /// job's `m_...`. `None` when the name says neither (absent, or some other form). Pure.
    pub fn from_stream_name(stream_name: &str) -> Option<Kind> {
        let name = stream_name.trim();
        if name.starts_with("m_") {
            Some(Kind::Mix)
        } else if name.starts_with("s_") {
            Some(Kind::Individual)
        } else {
            None
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    /// Exactly `individual` or `mix`: a misspelt kind must not silently poll the wrong path.
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "individual" => Ok(Kind::Individual),
            "mix" => Ok(Kind::Mix),
            other => Err(format!(
                "{other:?} is not a job kind: use \"individual\" or \"mix\""
            )),
        }
    }
}

/// The body of `POST /v2/apps/{app_id}/individual-stream-jobs` (the SDK's
/// `IndividualStreamJobReq`), in the API's field order. Absent optional fields are left out,
/// so the API applies its own defaults, as it did for the job being re-created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndividualJobReq {
    pub room_id: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_record_audio: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_stream_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_idle_time: Option<u64>,
    pub record_param: RecordParam,
}

/// The body of `POST /v2/apps/{app_id}/mix-stream-jobs`: the mix layout, kept whole, and the
/// recording rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MixJobReq {
    pub mix_param: JsonObject,
    pub record_param: RecordParam,
}

/// A create call's request, of either kind.
///
/// ```
/// use recwatch_rtc::model::parse_job;
/// use recwatch_rtc::{CreateRequest, Kind};
///
/// let seen = parse_job(br#"{"job_id":"j1","state":"STOPPED","stop_reason":"INTERNAL_ERROR",
///     "room_id":"room01","user_id":"user-7","is_record_audio":true,"max_idle_time":30,
///     "record_param":{"record_rule_id":"rule-1"}}"#).unwrap();
/// let again = CreateRequest::from_snapshot(Kind::Individual, &seen).unwrap();
/// assert_eq!(
///     String::from_utf8(again.body()).unwrap(),
///     r#"{"room_id":"room01","user_id":"user-7","is_record_audio":true,"max_idle_time":30,"record_param":{"record_rule_id":"rule-1"}}"#
/// );
/// // What a create needs and a Show answer lacked is named.
/// let bare = parse_job(br#"{"state":"STOPPED","room_id":"r"}"#).unwrap();
/// assert_eq!(
///     CreateRequest::from_snapshot(Kind::Individual, &bare).unwrap_err().missing,
///     "user_id"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateRequest {
    Individual(IndividualJobReq),
    Mix(MixJobReq),
}

/// Why a job cannot be re-created from its last Show answer: a field the create call needs
/// was not in it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the job's last answer has no {missing}, which a {kind} create needs: it cannot be re-created from what polling saw"
)]
pub struct NotRecreatable {
    pub kind: Kind,
    /// The missing field, in the API's name (`record_param.record_rule_id` for the rule).
    pub missing: &'static str,
}

impl CreateRequest {
    /// The create request that makes a job like `job` (as a Show answer of this `kind`
    /// reported it): the same parameters under the same names. Pure.
    pub fn from_snapshot(kind: Kind, job: &JobSnapshot) -> Result<CreateRequest, NotRecreatable> {
        let missing = |missing| NotRecreatable { kind, missing };
        let text = |v: &Option<String>, name| {
            v.clone()
                .filter(|s| !s.trim().is_empty())
                .ok_or(missing(name))
        };
        let record_param = || {
            job.record_param
                .clone()
                .filter(|p| p.record_rule_id.as_deref().is_some_and(|r| !r.is_empty()))
                .ok_or(missing("record_param.record_rule_id"))
        };
        // In the body's order, so the first field missing is the one named.
        Ok(match kind {
            Kind::Individual => CreateRequest::Individual(IndividualJobReq {
                room_id: text(&job.room_id, "room_id")?,
                user_id: text(&job.user_id, "user_id")?,
                is_record_audio: job.is_record_audio,
                video_type: job.video_type.clone(),
                select_stream_type: job.select_stream_type.clone(),
                max_idle_time: job.max_idle_time,
                record_param: record_param()?,
            }),
            Kind::Mix => CreateRequest::Mix(MixJobReq {
                mix_param: job.mix_param.clone().ok_or(missing("mix_param"))?,
                record_param: record_param()?,
            }),
        })
    }

    /// Reads a create body of this `kind` (a stored request, or one a server received),
    /// checking what the API requires: `room_id`, `user_id` and `record_param.record_rule_id`
    /// for an individual job, `mix_param` with its `encode_template` and
    /// `record_param.record_rule_id` for a mix job. Pure.
    pub fn parse(kind: Kind, body: &[u8]) -> Result<CreateRequest, String> {
        let request = match kind {
            Kind::Individual => serde_json::from_slice(body).map(CreateRequest::Individual),
            Kind::Mix => serde_json::from_slice(body).map(CreateRequest::Mix),
        }
        .map_err(|e| format!("not the body of a {kind} job's create: {e}"))?;
        let rule = match &request {
            CreateRequest::Individual(r) => &r.record_param,
            CreateRequest::Mix(r) => &r.record_param,
        };
        if rule.record_rule_id.as_deref().is_none_or(str::is_empty) {
            return Err("record_param.record_rule_id is missing".into());
        }
        if let CreateRequest::Mix(r) = &request
            && r.mix_param.get("encode_template").is_none()
        {
            return Err("mix_param.encode_template is missing".into());
        }
        Ok(request)
    }

    pub fn kind(&self) -> Kind {
        match self {
            CreateRequest::Individual(_) => Kind::Individual,
            CreateRequest::Mix(_) => Kind::Mix,
        }
    }

    /// The JSON body exactly as sent and signed.
    pub fn body(&self) -> Vec<u8> {
        match self {
            CreateRequest::Individual(r) => serde_json::to_vec(r),
            CreateRequest::Mix(r) => serde_json::to_vec(r),
        }
        .expect("a create request always serializes")
    }
}

/// A 2xx answer to a create: the new job's id and record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    pub job_id: String,
    /// The new job's record, as the answer gave it.
    pub job: JobSnapshot,
    /// The answer's body as received (secrets redacted).
    pub raw: String,
    /// The `X-Request-Id` answer header.
    pub request_id: Option<String>,
    pub latency: Duration,
}

/// A 2xx answer to a stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    pub request_id: Option<String>,
}

/// What a failed create proves about the job it asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CreateFailure {
    /// Certainly nothing was created, and the same request may succeed later: throttled
    /// (429 / `APIG.0308`), or the connection could not be made so nothing was sent.
    NotCreated,
    /// Refused (a 4xx or a 3xx: the app is deactivated, the rule is gone, the credentials or
    /// the endpoint are wrong): nothing was created, and sending it again would be refused
    /// again.
    Refused,
    /// A job may exist: a 5xx, a timeout or a connection lost after sending, an answer cut
    /// short or unreadable. The API has no idempotency key, so sending it again may make a
    /// second billable job: a human must look.
    Unknown,
}

impl CreateFailure {
    /// Whether sending the same create again cannot make a second job.
    pub fn may_retry(self) -> bool {
        self == CreateFailure::NotCreated
    }

    /// A stable snake_case name, for logs, stored outcomes and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CreateFailure::NotCreated => "not_created",
            CreateFailure::Refused => "refused",
            CreateFailure::Unknown => "unknown",
        }
    }
}

/// What a create that failed with `kind` (with `status` when an answer came, `not_sent` when
/// the connection could not even be made) proves. Pure, so the whole table is tested.
///
/// An answer's status decides where it has one: any 4xx but a throttle is a refusal, whatever
/// went wrong reading its body. Without an answer only a failure to connect proves nothing
/// was sent; a timeout or a connection lost after sending may have created the job.
pub fn create_failure(kind: ErrorKind, status: Option<u16>, not_sent: bool) -> CreateFailure {
    use CreateFailure::*;
    match kind {
        // The request was never made: no keys to sign it with.
        ErrorKind::Throttled | ErrorKind::CredentialsUnavailable => NotCreated,
        _ if status.is_some_and(|s| (300..500).contains(&s)) => Refused,
        ErrorKind::Timeout | ErrorKind::Connection if not_sent => NotCreated,
        ErrorKind::NotFound
        | ErrorKind::EndpointNotFound
        | ErrorKind::Redirect
        | ErrorKind::Unauthorized
        | ErrorKind::Rejected => Refused,
        ErrorKind::Server
        | ErrorKind::Timeout
        | ErrorKind::Connection
        | ErrorKind::BadResponse
        | ErrorKind::WrongJob
        | ErrorKind::NoState => Unknown,
    }
}

impl RtcError {
    /// What this error, as the answer to a create, proves (see [`create_failure`]).
    pub fn create_failure(&self) -> CreateFailure {
        create_failure(self.kind, self.status, self.not_sent)
    }
}

impl RtcClient {
    /// `/v2/apps/{app_id}/{individual,mix}-stream-jobs` under the endpoint's base path, the id
    /// encoded as a whole segment: where a create is POSTed.
    pub fn jobs_path(&self, kind: Kind, app_id: &str) -> String {
        format!(
            "{}/v2/apps/{}/{}",
            self.base_path(),
            sign::encode(app_id),
            kind.collection()
        )
    }

    /// The path of one job of `kind`: where it is shown and stopped.
    pub fn job_path_of(&self, kind: Kind, app_id: &str, job_id: &str) -> String {
        format!("{}/{}", self.jobs_path(kind, app_id), sign::encode(job_id))
    }

    /// `POST` `request` to create a job of its kind in `app_id`. `Ok` only for a 2xx whose
    /// body names the new job; a 2xx without a job id is an error whose
    /// [`create_failure`](RtcError::create_failure) is `Unknown` (a job was made, but which?).
    pub async fn create_job(
        &self,
        app_id: &str,
        request: &CreateRequest,
    ) -> Result<Created, RtcError> {
        let path = self.jobs_path(request.kind(), app_id);
        let answer = self
            .send(reqwest::Method::POST, &path, Some(request.body()))
            .await
            .map_err(|e| self.clean_error(e))?;
        if !answer.is_success() {
            return Err(self.clean_error(answer.into_error()));
        }
        let raw = self.redact(&String::from_utf8_lossy(&answer.body));
        let bad = |detail: String| {
            self.clean_error(RtcError {
                kind: ErrorKind::BadResponse,
                status: Some(answer.status),
                error_code: None,
                error_msg: None,
                request_id: answer.request_id.clone(),
                detail: Some(detail),
                clock_skew_minutes: None,
                not_sent: false,
            })
        };
        let job = parse_job(&answer.body)
            .map_err(|e| bad(format!("the answer to a create is not a job record: {e}")))?;
        if let Some(other) = job.app_id.as_deref().filter(|a| !same_id(app_id, a)) {
            return Err(bad(format!(
                "created in app {app_id:?}, the answer is about app {:?}",
                other.chars().take(80).collect::<String>()
            )));
        }
        let job_id = job
            .job_id
            .clone()
            .filter(|j| !j.trim().is_empty())
            .ok_or_else(|| bad("the answer to a create names no job_id".into()))?;
        Ok(Created {
            job_id: self.redact(&job_id),
            job,
            raw,
            request_id: answer.request_id.map(|id| self.redact(&id)),
            latency: answer.latency,
        })
    }

    /// `DELETE` job `job_id` of `kind` in `app_id`: the job stops with `TENANT_STOP`.
    pub async fn stop_job(
        &self,
        kind: Kind,
        app_id: &str,
        job_id: &str,
    ) -> Result<Stopped, RtcError> {
        let path = self.job_path_of(kind, app_id, job_id);
        let answer = self
            .send(reqwest::Method::DELETE, &path, None)
            .await
            .map_err(|e| self.clean_error(e))?;
        if !answer.is_success() {
            return Err(self.clean_error(answer.into_error()));
        }
        Ok(Stopped {
            request_id: answer.request_id.map(|id| self.redact(&id)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_job;

    #[test]
    fn create_failure_table() {
        use CreateFailure::*;
        use ErrorKind as K;
        let cases: &[(&str, ErrorKind, Option<u16>, bool, CreateFailure)] = &[
            ("429 APIG.0308", K::Throttled, Some(429), false, NotCreated),
            (
                "throttle code on 403",
                K::Throttled,
                Some(403),
                false,
                NotCreated,
            ),
            ("connection refused", K::Connection, None, true, NotCreated),
            (
                "no usable credentials: never sent",
                K::CredentialsUnavailable,
                None,
                true,
                NotCreated,
            ),
            ("connect timed out", K::Timeout, None, true, NotCreated),
            (
                "connection lost after sending",
                K::Connection,
                None,
                false,
                Unknown,
            ),
            (
                "timed out waiting for the answer",
                K::Timeout,
                None,
                false,
                Unknown,
            ),
            ("500 RTC.00002001", K::Server, Some(500), false, Unknown),
            ("502 from a proxy", K::Server, Some(502), false, Unknown),
            (
                "201 without a job id",
                K::BadResponse,
                Some(201),
                false,
                Unknown,
            ),
            (
                "2xx body cut short",
                K::BadResponse,
                Some(201),
                false,
                Unknown,
            ),
            (
                "5xx body cut short",
                K::BadResponse,
                Some(503),
                false,
                Unknown,
            ),
            (
                "app deactivated RTC.00001016",
                K::Rejected,
                Some(400),
                false,
                Refused,
            ),
            (
                "rule gone, malformed body",
                K::Rejected,
                Some(400),
                false,
                Refused,
            ),
            (
                "4xx body cut short",
                K::BadResponse,
                Some(400),
                false,
                Refused,
            ),
            ("app not found", K::NotFound, Some(404), false, Refused),
            (
                "wrong endpoint",
                K::EndpointNotFound,
                Some(404),
                false,
                Refused,
            ),
            (
                "credentials refused",
                K::Unauthorized,
                Some(401),
                false,
                Refused,
            ),
            ("redirected", K::Redirect, Some(302), false, Refused),
            (
                "a header HTTP cannot carry",
                K::Rejected,
                None,
                true,
                Refused,
            ),
        ];
        for (name, kind, status, not_sent, want) in cases {
            assert_eq!(create_failure(*kind, *status, *not_sent), *want, "{name}");
        }
        assert!(NotCreated.may_retry());
        assert!(!Refused.may_retry() && !Unknown.may_retry());
    }

    #[test]
    fn kinds_and_stream_names_table() {
        let cases = [
            ("a mix stream", "m_608196a2_room01", Some(Kind::Mix)),
            (
                "an individual stream",
                "s_608196a2_room01_user-7",
                Some(Kind::Individual),
            ),
            ("padded", "  s_1_r_u", Some(Kind::Individual)),
            ("upper case is not RTC's", "M_1_r", None),
            ("another name", "mystream", None),
            ("a prefix without its underscore", "mix", None),
            ("empty", "", None),
        ];
        for (name, stream, want) in cases {
            assert_eq!(Kind::from_stream_name(stream), want, "{name}");
        }
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
        }
        assert!("Individual".parse::<Kind>().is_err());
    }

    /// The SDK's create vectors' bodies, rebuilt from what a Show answer of the same job says:
    /// a re-creation sends the parameters the job had, byte for byte.
    #[test]
    fn a_show_answer_rebuilds_the_sdks_create_bodies() {
        let individual = parse_job(
            br#"{"job_id":"608196a2","app_id":"5fcd","stream_name":"s_608196a2_room01_user-7",
                "room_id":"room01","user_id":"user-7","is_record_audio":true,
                "video_type":"CAMERASTREAM","select_stream_type":"FHD","max_idle_time":30,
                "record_param":{"record_rule_id":"rule-1"},"state":"STOPPED",
                "stop_reason":"INTERNAL_ERROR","create_time":"2025-01-02T03:04:05.000Z"}"#,
        )
        .unwrap();
        let request = CreateRequest::from_snapshot(Kind::Individual, &individual).unwrap();
        assert_eq!(
            String::from_utf8(request.body()).unwrap(),
            r#"{"room_id":"room01","user_id":"user-7","is_record_audio":true,"video_type":"CAMERASTREAM","select_stream_type":"FHD","max_idle_time":30,"record_param":{"record_rule_id":"rule-1"}}"#,
            "the body of the SDK's create_individual_job vector"
        );
        assert_eq!(
            CreateRequest::parse(Kind::Individual, &request.body()),
            Ok(request)
        );

        let mix = parse_job(
            br#"{"job_id":"608196a3","room_id":"room01","stream_name":"m_608196a3_room01",
                "mix_param":{"room_id":"room01","encode_template":"1920x1080_30_4620",
                "max_idle_time":60,"layout_template":"nine_grids_view",
                "layout_panes":[{"user_id":"u1","x":0}]},
                "record_param":{"record_rule_id":"rule-1","extra":{"k":1}},"state":"STOPPED"}"#,
        )
        .unwrap();
        let request = CreateRequest::from_snapshot(Kind::Mix, &mix).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&request.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "mix_param": {"room_id": "room01", "encode_template": "1920x1080_30_4620",
                    "max_idle_time": 60, "layout_template": "nine_grids_view",
                    "layout_panes": [{"user_id": "u1", "x": 0}]},
                "record_param": {"record_rule_id": "rule-1", "extra": {"k": 1}}
            }),
            "mix_param and record_param kept whole"
        );
        assert_eq!(
            CreateRequest::parse(Kind::Mix, &request.body()),
            Ok(request)
        );
    }

    #[test]
    fn what_a_create_needs_table() {
        let cases = [
            (
                "no rule",
                Kind::Individual,
                r#"{"room_id":"r","user_id":"u"}"#,
                "record_param.record_rule_id",
            ),
            (
                "an empty rule",
                Kind::Individual,
                r#"{"room_id":"r","user_id":"u","record_param":{"record_rule_id":""}}"#,
                "record_param.record_rule_id",
            ),
            (
                "no room",
                Kind::Individual,
                r#"{"user_id":"u","record_param":{"record_rule_id":"x"}}"#,
                "room_id",
            ),
            (
                "a blank user",
                Kind::Individual,
                r#"{"room_id":"r","user_id":" ","record_param":{"record_rule_id":"x"}}"#,
                "user_id",
            ),
            (
                "a mix job's answer has no mix_param",
                Kind::Mix,
                r#"{"room_id":"r","record_param":{"record_rule_id":"x"}}"#,
                "mix_param",
            ),
        ];
        for (name, kind, body, missing) in cases {
            let job = parse_job(body.as_bytes()).unwrap();
            let e = CreateRequest::from_snapshot(kind, &job).unwrap_err();
            assert_eq!(e.missing, missing, "{name}");
            assert!(e.to_string().contains(missing), "{name}: {e}");
        }
    }

    #[test]
    fn create_bodies_a_server_refuses_table() {
        let cases = [
            (
                "not JSON",
                Kind::Individual,
                "x",
                "not the body of a individual job's create",
            ),
            (
                "no user",
                Kind::Individual,
                r#"{"room_id":"r","record_param":{"record_rule_id":"x"}}"#,
                "user_id",
            ),
            (
                "no rule",
                Kind::Individual,
                r#"{"room_id":"r","user_id":"u","record_param":{}}"#,
                "record_rule_id",
            ),
            (
                "no mix_param",
                Kind::Mix,
                r#"{"record_param":{"record_rule_id":"x"}}"#,
                "mix_param",
            ),
            (
                "no encode template",
                Kind::Mix,
                r#"{"mix_param":{"room_id":"r"},"record_param":{"record_rule_id":"x"}}"#,
                "encode_template",
            ),
        ];
        for (name, kind, body, says) in cases {
            let e = CreateRequest::parse(kind, body.as_bytes()).unwrap_err();
            assert!(e.contains(says), "{name}: {e}");
        }
    }
}
