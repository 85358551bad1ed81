//! Each account's request budget (issue 25): one [`Budget`] per budget identity, so entries
//! with one static access key share the key's 10 requests/s, and every other account has its
//! own. A budget belongs to the configuration, never to a temporary key: a reload (new keys,
//! a renewal) finds the same identity's budget with its window as it was.

use super::Budget;
use crate::config::{ApiConfig, Config};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The budgets by identity ([`ApiConfig::budget_identity`]), made when an account first asks.
#[derive(Clone, Default)]
pub struct Budgets {
    by_identity: Arc<Mutex<HashMap<String, Arc<Budget>>>>,
}

impl Budgets {
    /// The budgets of `config`'s accounts.
    pub fn new(config: &Config) -> Budgets {
        let b = Budgets::default();
        for a in config.all_accounts() {
            b.of(a);
        }
        b
    }

    /// `account`'s budget (shared with the accounts of its identity), at the account's rate
    /// when it is new.
    pub fn of(&self, account: &ApiConfig) -> Arc<Budget> {
        let mut m = self.by_identity.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(account.budget_identity())
            .or_insert_with(|| Arc::new(Budget::new(account.rate_limit)))
            .clone()
    }

    /// The budget of the account named `name` in `config`, or of the first account.
    pub fn of_name(&self, config: &Config, name: &str) -> Arc<Budget> {
        match config.account_named(name) {
            Some(a) => self.of(a),
            None => self.of(&config.api),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Auth;
    use crate::secret::Secret;

    fn account(name: &str, ak: Option<&str>) -> ApiConfig {
        let mut a = Config::defaults(Auth::Token {
            token: Secret::new("t"),
        })
        .api;
        a.name = name.into();
        if let Some(ak) = ak {
            a.auth = Auth::AkSk {
                access_key: ak.into(),
                secret_key: Secret::new("sk"),
                security_token: None,
            }
            .into();
        }
        a
    }

    #[test]
    fn one_static_key_is_one_budget_and_each_other_account_its_own() {
        let b = Budgets::default();
        let (a1, a2, t1, t2) = (
            account("a1", Some("AK")),
            account("a2", Some("AK")),
            account("t1", None),
            account("t2", None),
        );
        assert!(Arc::ptr_eq(&b.of(&a1), &b.of(&a2)));
        assert!(!Arc::ptr_eq(&b.of(&t1), &b.of(&t2)));
        assert!(!Arc::ptr_eq(&b.of(&a1), &b.of(&t1)));
        // A reload's copy of the same entry finds the same budget (its window kept).
        assert!(Arc::ptr_eq(&b.of(&t1), &b.of(&t1.clone())));
    }
}
