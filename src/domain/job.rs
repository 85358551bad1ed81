//! Which job: the pair the API addresses a recording job by.

use super::time::Timestamp;
use std::fmt;
use std::sync::Arc;

/// A watched job's identity: `(app_id, job_id)`, as the API's path and the database's primary
/// key have it. Ordered by app, then job, like the database's key.
///
/// One allocation shared by every clone (issue 23, item 1): the poller keeps a job's key in
/// its states, its watch map, its schedule and its hint lane, and as two `String`s each copy
/// cost ~150 bytes a job; a clone is now a reference count. It reads as the two ids it holds
/// (`key.app_id`, through `Deref`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey(Arc<JobIds>);

/// The hash of a look-up by a job's borrowed ids in a read that goes over every job once
/// (`recwatch status`: the config file's duplicate check, a row placed by its key): FxHash's
/// step (rustc's), a few instructions per 8 bytes where SipHash takes tens (issue 23, item
/// 7). The ids are the operator's own file and database, read by a command that ends, so
/// SipHash's resistance to chosen collisions buys nothing there; the daemon's maps keep it.
#[derive(Clone, Copy, Default, Debug)]
pub struct IdsHash;

impl std::hash::BuildHasher for IdsHash {
    type Hasher = IdsHasher;
    fn build_hasher(&self) -> IdsHasher {
        IdsHasher(0)
    }
}

/// See [`IdsHash`].
pub struct IdsHasher(u64);

impl IdsHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for IdsHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        // The length in the top bits: "a" and "a\0" differ.
        self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
    }
    fn write_u8(&mut self, b: u8) {
        self.add(u64::from(b));
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The two ids of a [`JobKey`]. Field order is the key's order (app, then job).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobIds {
    pub app_id: String,
    pub job_id: String,
}

impl JobKey {
    pub fn new(app_id: impl Into<String>, job_id: impl Into<String>) -> JobKey {
        JobKey(Arc::new(JobIds {
            app_id: app_id.into(),
            job_id: job_id.into(),
        }))
    }

    /// Whether `a` and `b` are one allocation, not only equal: what the sharing's tests check.
    pub fn same(a: &JobKey, b: &JobKey) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl std::ops::Deref for JobKey {
    type Target = JobIds;

    fn deref(&self) -> &JobIds {
        &self.0
    }
}

/// As the two-`String` struct printed it, so logs and test output read the same.
impl fmt::Debug for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobKey")
            .field("app_id", &self.app_id)
            .field("job_id", &self.job_id)
            .finish()
    }
}

/// The longest id accepted: RTC's ids are 24-32 characters; anything near this is not one.
pub const MAX_ID_CHARS: usize = 128;

/// Whether `id` can be an app or job id: the one check for ids from the config file, the API,
/// the command line and callbacks alike. An id is sent as one URL path segment: the URL layer
/// drops a `.` or `..` segment after the request is signed (so the signature cannot match and
/// every request is refused: three refusals stop every poll for `api.auth_backoff`), and a `/`
/// would make two segments of it. A control character cannot be what the console shows, and
/// ids go into log lines. `Err` says what is wrong, for the caller to place (key or field).
pub fn check_id(id: &str) -> Result<(), String> {
    // The common id in one pass (issue 23: 200,000 ids at every `recwatch status` of 100,000
    // jobs): printable ASCII without '/', short, not a dot segment. Anything else is looked
    // at below.
    let plain = |b: &u8| (0x20..0x7f).contains(b) && *b != b'/';
    if !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id.bytes().all(|b| plain(&b))
        && id != "."
        && id != ".."
    {
        return Ok(());
    }
    if id.is_empty() {
        return Err("is empty; copy the id from the console".into());
    }
    if id == "." || id == ".." {
        return Err(format!(
            "{id:?} is not an id: the URL would lose it after signing and every request would be refused; copy the id from the console"
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(format!(
            "{:?} has a control character; copy the id from the console",
            recwatch_rtc::secret::cap(id, 64)
        ));
    }
    if id.contains('/') {
        return Err(format!(
            "{id:?} has a '/', which would split the API's URL path; copy the id from the console"
        ));
    }
    if id.chars().count() > MAX_ID_CHARS {
        return Err(format!(
            "{:?} is {} characters long, over the {MAX_ID_CHARS} an id may have; copy the id from the console",
            recwatch_rtc::secret::cap(id, 64),
            id.chars().count()
        ));
    }
    Ok(())
}

/// Where a watched job came from: the `source` of `status --json`, `/api/v1/jobs` and the
/// database's run-time watch list. A job in the config file is `Config`; the others are
/// run-time entries. Values this build does not know (a newer recwatch wrote them to a shared
/// database) are kept as they are, not refused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum JobSource {
    /// A `[[jobs]]` entry of the config file.
    Config,
    /// Discovered by a record callback of an app with `discover = true`.
    Callback,
    /// `POST /api/v1/jobs`.
    Api,
    /// `recwatch watch`.
    Cli,
    /// A job recwatch created itself to replace a dead one (`[remediate]`).
    Remediation,
    /// A spelling this build does not know. A `Box<str>`, not a `String`: every run-time
    /// entry holds a source, and 16 bytes rather than 24 keeps the list's B-tree smaller
    /// (issue 23, item 1).
    Other(Box<str>),
}

impl JobSource {
    pub fn parse(s: &str) -> JobSource {
        match s {
            "config" => JobSource::Config,
            "callback" => JobSource::Callback,
            "api" => JobSource::Api,
            "cli" => JobSource::Cli,
            "remediation" => JobSource::Remediation,
            other => JobSource::Other(other.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            JobSource::Config => "config",
            JobSource::Callback => "callback",
            JobSource::Api => "api",
            JobSource::Cli => "cli",
            JobSource::Remediation => "remediation",
            JobSource::Other(s) => s,
        }
    }
}

impl fmt::Display for JobSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for JobSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An entry of the run-time watch list (the database's, not the config file's): a job watched
/// because the API, the command line or a callback asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeJob {
    pub key: JobKey,
    pub name: Option<String>,
    /// Individual or mix: the path it is polled on.
    pub kind: recwatch_rtc::Kind,
    /// Channels its alerts go to; `None` means every channel (as for a `[[jobs]]` entry).
    pub notify: Option<Vec<String>>,
    pub source: JobSource,
    /// When it was added (RFC 3339, UTC).
    pub added_at: Timestamp,
    /// The account that polls it, when it was added naming one (`recwatch watch --account`,
    /// the API's `account`); `None`: its app's account (discovery, remediation, and every
    /// entry from before accounts).
    pub account: Option<String>,
}

/// `app_id/job_id`, the API path's order.
impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app_id, self.job_id)
    }
}

/// A path segment: everything but unreserved characters encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The status page's path of a job, `/jobs/{app_id}/{job_id}` with each id encoded as one
/// segment: what the page links to and what `[http] public_url` links alerts to.
pub fn job_path(app_id: &str, job_id: &str) -> String {
    format!(
        "/jobs/{}/{}",
        percent_encoding::utf8_percent_encode(app_id, SEGMENT),
        percent_encoding::utf8_percent_encode(job_id, SEGMENT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_text_table() {
        let k = JobKey::new;
        let cases = [
            (
                "app first",
                k("a", "z"),
                k("b", "a"),
                std::cmp::Ordering::Less,
            ),
            (
                "then job",
                k("a", "a"),
                k("a", "b"),
                std::cmp::Ordering::Less,
            ),
            ("equal", k("a", "b"), k("a", "b"), std::cmp::Ordering::Equal),
        ];
        for (name, a, b, want) in cases {
            assert_eq!(a.cmp(&b), want, "{name}");
        }
        assert_eq!(k("app", "job").to_string(), "app/job");
    }

    #[test]
    fn job_paths_encode_each_segment() {
        let cases = [
            ("plain ids", "app1", "job-1", "/jobs/app1/job-1"),
            (
                "a slash stays inside its segment",
                "a/b",
                "j",
                "/jobs/a%2Fb/j",
            ),
            ("markup", "<a>", "\"x\"", "/jobs/%3Ca%3E/%22x%22"),
            ("space and unicode", "a b", "é", "/jobs/a%20b/%C3%A9"),
        ];
        for (name, app, job, want) in cases {
            assert_eq!(job_path(app, job), want, "{name}");
        }
    }

    #[test]
    fn id_check_table() {
        let long = "a".repeat(MAX_ID_CHARS + 1);
        let cases: [(&str, &str, Option<&str>); 10] = [
            ("a console id", "5fcdf56512345676f835d0d4", None),
            ("a numeric id", "123", None),
            ("dots inside are fine", "a.b", None),
            ("the longest", &long[1..], None),
            ("empty", "", Some("empty")),
            ("dot", ".", Some("not an id")),
            ("dot dot", "..", Some("not an id")),
            ("a slash", "a/b", Some("'/'")),
            ("a control character", "a\nb", Some("control character")),
            ("over long", &long, Some("over the 128")),
        ];
        for (name, id, want) in cases {
            match (check_id(id), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => assert!(e.contains(w), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want an error with {want:?}"),
            }
        }
    }

    #[test]
    fn sources_round_trip_and_unknown_ones_are_kept() {
        for s in ["config", "callback", "api", "cli", "remediation"] {
            assert_eq!(JobSource::parse(s).as_str(), s);
        }
        assert_eq!(JobSource::parse("remediation"), JobSource::Remediation);
        assert_eq!(
            JobSource::parse("from-a-later-build"),
            JobSource::Other("from-a-later-build".into())
        );
        assert_eq!(serde_json::to_string(&JobSource::Cli).unwrap(), "\"cli\"");
    }
}
