//! Recent alerts (`/alerts` and `/api/v1/alerts`): newest first, each with its deliveries
//! (pending, sent, dead, and silenced where silences exist), a page at a time.

use super::{Sources, ViewError, cursor_param, encode_cursor, parse_limit};
use crate::store::AlertView;
use serde::{Deserialize, Serialize};

pub const ALERTS_DEFAULT: usize = 100;
pub const ALERTS_MAX: usize = 1000;

/// The alerts page's query parameters.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AlertsQuery {
    pub limit: Option<String>,
    /// The cursor of the last alert shown.
    pub before: Option<String>,
}

/// A page of alerts.
#[derive(Clone, Debug, Serialize)]
pub struct AlertsPage {
    pub items: Vec<AlertView>,
    /// Pass as `?before=` for older alerts; null on the last page.
    pub next_before: Option<String>,
}

pub async fn alerts_page(src: &Sources<'_>, q: &AlertsQuery) -> Result<AlertsPage, ViewError> {
    let limit = parse_limit(q.limit.as_deref(), ALERTS_DEFAULT, ALERTS_MAX)?;
    let before: Option<(String, String)> = cursor_param("before", q.before.as_deref())?;
    let mut items = src
        .store
        .page()
        .alerts(
            before.as_ref().map(|(at, id)| (at.as_str(), id.as_str())),
            limit as i64 + 1,
        )
        .await?;
    let more = items.len() > limit;
    items.truncate(limit);
    let next_before = more
        .then(|| items.last().map(|a| encode_cursor(&(&a.created_at, &a.id))))
        .flatten();
    Ok(AlertsPage { items, next_before })
}
