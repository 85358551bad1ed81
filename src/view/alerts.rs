//! Recent alerts (`/alerts` and `/api/v1/alerts`): newest first, each with its deliveries
//! (pending, sent, dead, and silenced where silences exist), a page at a time.

use super::{Sources, ViewError, cursor_param, encode_cursor, parse_limit};
use crate::domain::{AlertId, Timestamp};
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

/// Where the next page of alerts starts: after the alert made at `created_at` with id `id`
/// (alerts are shown newest first, by both). A link carries it as the JSON array
/// `[created_at, id]` in base64url, the form it had as a pair of strings, so a link made
/// before the cursor was typed still decodes, and one holding no time is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(Timestamp, AlertId)", into = "(Timestamp, AlertId)")]
pub struct AlertsCursor {
    pub created_at: Timestamp,
    pub id: AlertId,
}

impl From<(Timestamp, AlertId)> for AlertsCursor {
    fn from((created_at, id): (Timestamp, AlertId)) -> AlertsCursor {
        AlertsCursor { created_at, id }
    }
}

impl From<AlertsCursor> for (Timestamp, AlertId) {
    fn from(c: AlertsCursor) -> (Timestamp, AlertId) {
        (c.created_at, c.id)
    }
}

impl AlertsCursor {
    /// The cursor after this alert.
    fn after(alert: &AlertView) -> AlertsCursor {
        AlertsCursor {
            created_at: alert.created_at,
            id: AlertId::from(alert.id.clone()),
        }
    }
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
    let before: Option<AlertsCursor> = cursor_param("before", q.before.as_deref())?;
    // The store compares the stored text: the time goes in the form it is stored in.
    let at = before.as_ref().map(|c| c.created_at.to_string());
    let position = before
        .as_ref()
        .zip(at.as_deref())
        .map(|(c, at)| (at, c.id.as_str()));
    let mut items = src.store.page().alerts(position, limit as i64 + 1).await?;
    let more = items.len() > limit;
    items.truncate(limit);
    let next_before = more
        .then(|| items.last().map(|a| encode_cursor(&AlertsCursor::after(a))))
        .flatten();
    Ok(AlertsPage { items, next_before })
}
