//! The accounts the gateway serves: account #0, `default`, is what `SimOptions::auth`,
//! `project_id` and `rate_limit` describe (so a simulator started as before serves the one
//! account it always did), then each [`SimAccount`](crate::SimAccount). Checked once at start (names and access
//! keys unique, the metadata stand-in's account known), each secret key made ready for HMAC
//! once. Revoking an account's key ("a region loses its key") and restoring it are
//! [`Simulator::revoke_key`] and [`Simulator::restore_key`]; the state lives in the gateway's
//! memory (`gateway::Gate`), so it is read and changed under the simulator's one lock.

use crate::options::{DEFAULT_ACCOUNT, SimAuth, SimOptions};
use crate::simulator::Simulator;
use recwatch_rtc::sign::SigningKey;
use serde::{Deserialize, Serialize};

/// One account as the gateway checks it.
pub(crate) struct Account {
    pub(crate) name: String,
    /// What a request naming no other account's key must carry: account #0's `SimAuth`; the
    /// other accounts are always AK/SK.
    pub(crate) auth: SimAuth,
    /// With AK/SK, the secret key made ready for HMAC once: every request's signature is
    /// checked with it.
    pub(crate) signing_key: Option<SigningKey>,
    pub(crate) project_id: Option<String>,
    pub(crate) rate_limit: Option<u32>,
}

impl Account {
    /// The access key requests of this account are signed with, if it has one.
    pub(crate) fn access_key(&self) -> Option<&str> {
        match &self.auth {
            SimAuth::AkSk { access_key, .. } => Some(access_key),
            SimAuth::None | SimAuth::Token(_) => None,
        }
    }
}

/// The accounts `opts` asks for, account #0 first, or what is wrong with them.
pub(crate) fn accounts(opts: &SimOptions) -> Result<Vec<Account>, String> {
    let mut out = vec![Account {
        name: DEFAULT_ACCOUNT.to_string(),
        signing_key: match &opts.auth {
            SimAuth::AkSk { secret_key, .. } => Some(SigningKey::new(secret_key.as_bytes())),
            SimAuth::None | SimAuth::Token(_) => None,
        },
        auth: opts.auth.clone(),
        project_id: opts.project_id.clone(),
        rate_limit: opts.rate_limit,
    }];
    for (i, a) in opts.accounts.iter().enumerate() {
        if a.name.is_empty() {
            return Err(format!("accounts[{i}] has no name; give it one"));
        }
        if let Some(same) = out.iter().find(|o| o.name == a.name) {
            return Err(format!(
                "accounts[{i}] is named {:?} like another account ({}); names must differ",
                a.name, same.name
            ));
        }
        if let Some(same) = out
            .iter()
            .find(|o| o.access_key() == Some(a.access_key.as_str()))
        {
            // Two accounts with one key could not be told apart by the gateway.
            return Err(format!(
                "accounts[{i}] ({:?}) has the access key of account {:?}; each account needs its own",
                a.name, same.name
            ));
        }
        out.push(Account {
            name: a.name.clone(),
            signing_key: Some(SigningKey::new(a.secret_key.expose().as_bytes())),
            auth: SimAuth::AkSk {
                access_key: a.access_key.clone(),
                secret_key: a.secret_key.expose().to_string(),
            },
            project_id: a.project_id.clone(),
            rate_limit: a.rate_limit,
        });
    }
    if let Some(metadata) = &opts.metadata
        && index_of(&out, &metadata.account).is_none()
    {
        return Err(format!(
            "the metadata stand-in hands out keys of account {:?}, which is not served; name one of {}",
            metadata.account,
            names(&out)
        ));
    }
    Ok(out)
}

/// The index of the account named `name`.
pub(crate) fn index_of(accounts: &[Account], name: &str) -> Option<usize> {
    accounts.iter().position(|a| a.name == name)
}

/// The accounts' names, for a message that says which exist.
pub(crate) fn names(accounts: &[Account]) -> String {
    accounts
        .iter()
        .map(|a| format!("{:?}", a.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An account as `GET /_sim/accounts` shows it (never its secret key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub name: String,
    /// `None` for a default account without AK/SK (a token, or no checks at all).
    pub access_key: Option<String>,
    pub project_id: Option<String>,
    pub rate_limit: Option<u32>,
    /// Its key revoked: refused as a key that does not exist, its temporary keys too.
    pub revoked: bool,
}

impl Simulator {
    /// Revokes `account`'s key, as deleting an access key (or an agency) would: from now on
    /// its requests, and those signed with its temporary keys, are refused with 401
    /// `APIG.0301` ("the access key does not exist", no step towards a lockout), and the
    /// metadata stand-in hands out no keys of it. Every other account goes on. `false` when
    /// no account has that name.
    pub fn revoke_key(&self, account: &str) -> bool {
        self.set_revoked(account, true)
    }

    /// Gives `account` its key back (and forgets its failed attempts and lock); `false` when
    /// no account has that name.
    pub fn restore_key(&self, account: &str) -> bool {
        self.set_revoked(account, false)
    }

    fn set_revoked(&self, account: &str, revoked: bool) -> bool {
        let Some(index) = index_of(&self.inner.accounts, account) else {
            return false;
        };
        self.inner.lock().gate.set_revoked(index, revoked);
        true
    }

    /// Every account served, account #0 (`default`) first.
    pub fn accounts(&self) -> Vec<AccountState> {
        let shared = self.inner.lock();
        self.inner
            .accounts
            .iter()
            .enumerate()
            .map(|(i, a)| AccountState {
                name: a.name.clone(),
                access_key: a.access_key().map(str::to_string),
                project_id: a.project_id.clone(),
                rate_limit: a.rate_limit,
                revoked: shared.gate.is_revoked(i),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{SimAccount, SimMetadata};

    #[test]
    fn accounts_table() {
        let aksk = SimAuth::AkSk {
            access_key: "AK0".into(),
            secret_key: "sk0".into(),
        };
        let two = |first: SimAccount, second: SimAccount| vec![first, second];
        let a = |name: &str, ak: &str| SimAccount::new(name, ak, "the-secret", "p");
        // (name, auth of #0, other accounts, metadata account, error naming)
        type Case<'a> = (
            &'a str,
            SimAuth,
            Vec<SimAccount>,
            Option<&'a str>,
            Option<&'a str>,
        );
        let cases: Vec<Case> = vec![
            ("only the default", SimAuth::None, vec![], None, None),
            (
                "two more",
                aksk.clone(),
                two(a("a", "AKA"), a("b", "AKB")),
                Some("b"),
                None,
            ),
            (
                "the default's keys for the metadata",
                aksk.clone(),
                vec![],
                Some("default"),
                None,
            ),
            (
                "a second default",
                SimAuth::None,
                vec![a("default", "AKA")],
                None,
                Some("like another account"),
            ),
            (
                "one name twice",
                SimAuth::None,
                two(a("a", "AKA"), a("a", "AKB")),
                None,
                Some("names must differ"),
            ),
            (
                "the default's key again",
                aksk.clone(),
                vec![a("a", "AK0")],
                None,
                Some("access key of account \"default\""),
            ),
            (
                "one key twice",
                SimAuth::None,
                two(a("a", "AKA"), a("b", "AKA")),
                None,
                Some("each account needs its own"),
            ),
            (
                "no name",
                SimAuth::None,
                vec![a("", "AKA")],
                None,
                Some("no name"),
            ),
            (
                "metadata of an unknown account",
                SimAuth::None,
                vec![a("a", "AKA")],
                Some("b"),
                Some("name one of \"default\", \"a\""),
            ),
        ];
        for (name, auth, others, metadata, error) in cases {
            let opts = SimOptions {
                auth,
                accounts: others.clone(),
                metadata: metadata.map(|account| SimMetadata {
                    account: account.into(),
                    ..SimMetadata::default()
                }),
                ..SimOptions::default()
            };
            match (accounts(&opts), error) {
                (Ok(list), None) => {
                    assert_eq!(list.len(), others.len() + 1, "{name}");
                    assert_eq!(list[0].name, DEFAULT_ACCOUNT, "{name}");
                    assert!(list[1..].iter().all(|a| a.signing_key.is_some()), "{name}");
                }
                (Err(e), Some(want)) => {
                    assert!(e.contains(want), "{name}: {e}");
                    assert!(!e.contains("the-secret"), "{name}: no secret in {e}");
                }
                (got, _) => panic!("{name}: {:?}", got.err()),
            }
        }
    }
}
