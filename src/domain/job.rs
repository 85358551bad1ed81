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
}
