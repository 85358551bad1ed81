//! A delivery's state: what the outbox's deliveries table says of each (alert, channel).

use serde::Serialize;
use std::fmt;

/// A delivery's state, as the database and `recwatch alerts --json` spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "TEXT", rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not sent yet: due now or at `next_attempt_at`.
    Pending,
    /// The receiver accepted it.
    Sent,
    /// Given up (notify.max_age, a refusal no retry can help, a removed channel).
    Dead,
    /// Held back by a silence or a maintenance window: not sent, not dead.
    Silenced,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sent => "sent",
            DeliveryState::Dead => "dead",
            DeliveryState::Silenced => "silenced",
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_states_are_spelt_as_stored() {
        for (s, text) in [
            (DeliveryState::Pending, "pending"),
            (DeliveryState::Sent, "sent"),
            (DeliveryState::Dead, "dead"),
            (DeliveryState::Silenced, "silenced"),
        ] {
            assert_eq!(s.as_str(), text);
            assert_eq!(serde_json::to_value(s).unwrap(), text);
        }
    }
}
