//! Which job: the pair the API addresses a recording job by.

use std::fmt;

/// A watched job's identity: `(app_id, job_id)`, as the API's path and the database's primary
/// key have it. Ordered by app, then job, like the database's key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    pub app_id: String,
    pub job_id: String,
}

impl JobKey {
    pub fn new(app_id: impl Into<String>, job_id: impl Into<String>) -> JobKey {
        JobKey {
            app_id: app_id.into(),
            job_id: job_id.into(),
        }
    }
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
}
