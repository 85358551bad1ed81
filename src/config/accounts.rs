//! `[[accounts]]`: several RTC accounts or regions in one daemon (issue 25), each with its own
//! endpoint, project, budget and credentials. `[api]` is the one account named `default`.
//!
//! Which account polls a job is decided here, once, by [`Config::account_of`]: the job's own
//! `account`, else its app's (`[[apps]] account`), else the first account (with one account,
//! nobody has to name it). Each account's poller holds the configuration narrowed to its
//! account ([`Config::narrowed`]): `api` is that account, and its jobs are that account's.

use super::raw::Table;
use super::{ApiConfig, Config, ConfigError, JobConfig};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The name `[api]` goes by, and what a database from before accounts calls its jobs' account
/// (the domain's: an alert stored before alerts named their account is this one's).
pub const DEFAULT_ACCOUNT: &str = crate::domain::DEFAULT_ACCOUNT;

/// A job's or an app's `account`: the name's one allocation, shared by every entry naming it,
/// behind a thin pointer (a job's configuration is held for as long as it is watched, a
/// hundred thousand of them: issue 23's memory bound; `Arc<str>` would be twice the room).
pub type AccountRef = Arc<String>;

/// The longest account name: it is a metric label and a column on the page.
const MAX_NAME: usize = 64;

/// The accounts of the file: `[[accounts]]`, or `[api]` as the one account `default`; never
/// both (two places to look for the keys of one daemon is how a key gets missed).
pub(super) fn read_accounts(
    root: &mut Table,
    base: Option<&Path>,
) -> Result<Vec<ApiConfig>, ConfigError> {
    let api = root.table_opt("api")?;
    let tables = root.array_of_tables("accounts")?;
    if tables.is_empty() {
        let t = api.unwrap_or_else(|| Table::new("api", Default::default()));
        return Ok(vec![super::validate::read_api(t, base, DEFAULT_ACCOUNT)?]);
    }
    if api.is_some() {
        return Err(ConfigError::new(
            "api",
            "is set beside [[accounts]]: [api] is the one account named \"default\"; move its keys into an [[accounts]] entry with name = \"default\" (or another name), or remove [[accounts]]",
        ));
    }
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut accounts = Vec::with_capacity(tables.len());
    for mut t in tables {
        let name = read_name(&mut t)?;
        t.path = format!("{} ({name:?})", t.path);
        if let Some(first) = seen.insert(name.clone(), t.path.clone()) {
            return Err(t.err(
                "name",
                format!("{name:?} is already the name of {first}; give each account its own name"),
            ));
        }
        let path = t.path.clone();
        accounts.push(super::validate::read_api(t, base, &name).map_err(|mut e| {
            if !e.location.starts_with(&path) {
                e.location = format!("{path}.{}", e.location);
            }
            e
        })?);
    }
    Ok(accounts)
}

/// The names of `accounts` as [`AccountRef`]s, for the entries that name them.
pub(super) fn refs(accounts: &[ApiConfig]) -> Vec<AccountRef> {
    accounts
        .iter()
        .map(|a| Arc::new(a.name.to_string()))
        .collect()
}

/// `accounts[i].name`: required, and usable as a metric label, a URL query and a column.
fn read_name(t: &mut Table) -> Result<String, ConfigError> {
    let name = t.nonempty_string("name")?.ok_or_else(|| {
        t.err(
            "name",
            "missing: each [[accounts]] entry needs a name (e.g. the region, \"cn-north-4\"); [[apps]] and [[jobs]] name their account by it",
        )
    })?;
    check_name(&name).map_err(|m| t.err("name", m))?;
    Ok(name)
}

/// An account name: letters, digits, `-`, `_` and `.`, at most 64 characters (`MAX_NAME`).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(ok) {
        return Err(format!(
            "{name:?} is not an account name; use at most {MAX_NAME} letters, digits, '-', '_' or '.', like \"cn-north-4\""
        ));
    }
    Ok(())
}

/// `account = "..."` of a `[[jobs]]` or `[[apps]]` entry: one of `accounts`, as the shared
/// allocation of its name (a hundred thousand jobs hold one copy of it).
pub(super) fn read_account_ref(
    t: &mut Table,
    accounts: &[AccountRef],
) -> Result<Option<AccountRef>, ConfigError> {
    let Some(name) = t.nonempty_string("account")? else {
        return Ok(None);
    };
    find(accounts, &name)
        .map(Some)
        .ok_or_else(|| t.err("account", unknown(&name, accounts)))
}

/// The shared name of `name` among `accounts`.
pub fn find(accounts: &[AccountRef], name: &str) -> Option<AccountRef> {
    accounts.iter().find(|a| a.as_str() == name).cloned()
}

/// What to say of an account nobody configured.
pub fn unknown(name: &str, accounts: &[AccountRef]) -> String {
    let known: Vec<String> = accounts.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "{name:?} is not a configured account; use one of {} (the names of [[accounts]], or \"default\" for [api])",
        known.join(", ")
    )
}

impl Config {
    /// The configured accounts' names, in the file's order.
    pub fn account_names(&self) -> Vec<Arc<str>> {
        self.accounts.iter().map(|a| a.name.clone()).collect()
    }

    /// The accounts' names as entries refer to them ([`AccountRef`]).
    pub fn account_refs(&self) -> Vec<AccountRef> {
        refs(&self.accounts)
    }

    /// Every account, in the file's order, `api` standing for the account it names: `api` is
    /// the truth for its account (what the demo and the tests set, on a configuration of one
    /// account, is `api`).
    pub fn all_accounts(&self) -> impl Iterator<Item = &ApiConfig> {
        self.accounts.iter().map(|a| match a.name == self.api.name {
            true => &self.api,
            false => a,
        })
    }

    /// Whether more than one account is configured (with one, the account goes unnamed in
    /// summaries and the narrowed configuration is the configuration itself).
    pub fn several_accounts(&self) -> bool {
        self.accounts.len() > 1
    }

    /// The account named `name`.
    pub fn account_named(&self, name: &str) -> Option<&ApiConfig> {
        self.all_accounts().find(|a| &*a.name == name)
    }

    /// The account that polls the jobs of `app_id` that name none themselves (discovery,
    /// remediation): the app's, else the first.
    pub fn account_of_app(&self, app_id: &str) -> &ApiConfig {
        self.apps
            .iter()
            .find(|a| a.app_id == app_id)
            .and_then(|a| a.account.as_deref())
            .and_then(|n| self.account_named(n))
            .or_else(|| self.all_accounts().next())
            .unwrap_or(&self.api)
    }

    /// The account that polls `job`: its own, else its app's, else the first. A name no
    /// longer configured (a run-time entry stored before a reload removed its account) falls
    /// to the first account too, and `check`/the log say so where the entry is read.
    pub fn account_of(&self, job: &JobConfig) -> &ApiConfig {
        let named = job.account.as_deref().or_else(|| {
            self.apps
                .iter()
                .find(|a| a.app_id == job.app_id())
                .and_then(|a| a.account.as_deref())
        });
        let named = named.map(String::as_str);
        named
            .and_then(|n| self.account_named(n))
            .or_else(|| self.all_accounts().next())
            .unwrap_or(&self.api)
    }

    /// Whether this configuration's account (`api`) polls `job`.
    pub fn polls(&self, job: &JobConfig) -> bool {
        !self.several_accounts() || self.account_of(job).name == self.api.name
    }

    /// This configuration for the poller of account `name`: `api` is the account, and the jobs
    /// are the ones it polls. `None` when no account has that name.
    pub fn narrowed(&self, name: &str) -> Option<Config> {
        let mut account = self.account_named(name)?.clone();
        account.rate_limit = self.budget_rate_limit(&account);
        let mut c = self.clone();
        c.api = account;
        if c.several_accounts() {
            let jobs = c.jobs.iter().filter(|j| c.polls(j)).cloned().collect();
            c.jobs = jobs;
        }
        Some(c)
    }

    /// The rate `account`'s budget allows: accounts sharing a budget (one static key) keep
    /// the smallest limit among them, the key's limit being one, whatever each entry says
    /// (`check` tells it).
    pub fn budget_rate_limit(&self, account: &ApiConfig) -> u32 {
        let identity = account.budget_identity();
        self.all_accounts()
            .filter(|a| a.budget_identity() == identity)
            .map(|a| a.rate_limit)
            .min()
            .unwrap_or(account.rate_limit)
    }

    /// [`Config::narrowed`], shared rather than copied when there is one account (the
    /// published configuration itself: a copy of every job's pointer at 100,000 jobs is
    /// memory the poller need not hold twice).
    pub fn narrowed_shared(self: &Arc<Self>, name: &str) -> Option<Arc<Config>> {
        match !self.several_accounts() && &*self.api.name == name {
            true => Some(self.clone()),
            false => self.narrowed(name).map(Arc::new),
        }
    }

    /// The accounts in groups that share one request budget: entries with the same budget
    /// identity (a static access key: the limit is the account's, not the region's), each
    /// group in the order of its first entry.
    pub fn budget_groups(&self) -> Vec<Vec<Arc<str>>> {
        let mut groups: Vec<(String, Vec<Arc<str>>)> = Vec::new();
        for a in self.all_accounts() {
            let id = a.budget_identity();
            match groups.iter_mut().find(|(g, _)| *g == id) {
                Some((_, names)) => names.push(a.name.clone()),
                None => groups.push((id, vec![a.name.clone()])),
            }
        }
        groups.into_iter().map(|(_, names)| names).collect()
    }
}

impl ApiConfig {
    /// What the account's request budget belongs to: its static access key when it has one
    /// (entries with one key share the key's 10 requests/s), else the entry itself. Never a
    /// temporary key: a renewal must keep the budget's window.
    pub fn budget_identity(&self) -> String {
        match self.auth.budget_identity() {
            Some(access_key) => format!("ak:{access_key}"),
            None => format!("account:{}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_str(text, Vec::<(String, String)>::new(), None)
    }

    const KEYS: &str = "access_key = \"AK1\"\nsecret_key = \"sk\"";

    fn two() -> String {
        format!(
            "[[accounts]]\nname = \"north\"\nproject_id = \"p1\"\n[accounts.auth]\n{KEYS}\n\n\
             [[accounts]]\nname = \"south\"\nendpoint = \"https://rtc-api.ap-southeast-1.myhuaweicloud.com\"\nproject_id = \"p2\"\n[accounts.auth]\naccess_key = \"AK2\"\nsecret_key = \"sk2\"\n\n\
             [[apps]]\napp_id = \"app-s\"\nauth_key = \"{}\"\naccount = \"south\"\n\n\
             [[jobs]]\napp_id = \"app-n\"\njob_id = \"j1\"\n\n\
             [[jobs]]\napp_id = \"app-s\"\njob_id = \"j2\"\n\n\
             [[jobs]]\napp_id = \"app-s\"\njob_id = \"j3\"\naccount = \"north\"\n",
            "k".repeat(32)
        )
    }

    #[test]
    fn api_alone_is_the_account_named_default() {
        let c = parse(&format!(
            "[api]\nproject_id = \"p\"\n[api.auth]\n{KEYS}\n[[jobs]]\napp_id = \"a\"\njob_id = \"j\"\n"
        ))
        .unwrap();
        assert_eq!(c.account_names(), vec![Arc::<str>::from("default")]);
        assert_eq!(&*c.api.name, "default");
        assert_eq!(&*c.account_of(&c.jobs[0]).name, "default");
        assert!(c.polls(&c.jobs[0]));
    }

    #[test]
    fn each_job_is_polled_by_its_own_its_apps_or_the_first_account() {
        let c = parse(&two()).unwrap();
        let of: Vec<&str> = c.jobs.iter().map(|j| &*c.account_of(j).name).collect();
        // (app without an account: the first; the app's; the job's own over its app's)
        assert_eq!(of, ["north", "south", "north"]);
        let south = c.narrowed("south").unwrap();
        assert_eq!(&*south.api.name, "south");
        assert_eq!(south.api.project_id.as_deref(), Some("p2"));
        let ids: Vec<&str> = south.jobs.iter().map(|j| j.job_id()).collect();
        assert_eq!(ids, ["j2"]);
        assert_eq!(c.narrowed("north").unwrap().jobs.len(), 2);
        assert!(c.narrowed("west").is_none());
    }

    #[test]
    fn entries_with_one_static_key_share_a_budget() {
        let c = parse(&format!(
            "[[accounts]]\nname = \"a\"\nproject_id = \"p1\"\n[accounts.auth]\n{KEYS}\n\
             [[accounts]]\nname = \"b\"\nproject_id = \"p2\"\n[accounts.auth]\n{KEYS}\n\
             [[accounts]]\nname = \"c\"\nproject_id = \"p3\"\n[accounts.auth]\ntoken = \"t\"\n"
        ))
        .unwrap();
        let groups: Vec<Vec<String>> = c
            .budget_groups()
            .into_iter()
            .map(|g| g.iter().map(|n| n.to_string()).collect())
            .collect();
        assert_eq!(groups, vec![vec!["a", "b"], vec!["c"]]);
    }

    #[test]
    fn wrong_account_settings_are_named_with_their_fix() {
        let dup = "[[accounts]]\nname = \"x\"\nproject_id = \"p\"\n[accounts.auth]\naccess_key = \"A\"\nsecret_key = \"s\"\n";
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "[api] beside [[accounts]]",
                format!("[api]\nproject_id = \"p\"\n[api.auth]\n{KEYS}\n{dup}"),
                "api",
            ),
            (
                "two accounts with one name",
                format!("{dup}{dup}"),
                "accounts[1] (\"x\").name",
            ),
            (
                "an account without a name",
                "[[accounts]]\nproject_id = \"p\"\n[accounts.auth]\naccess_key = \"A\"\nsecret_key = \"s\"\n".into(),
                "accounts[0].name",
            ),
            (
                "a name that is no label",
                "[[accounts]]\nname = \"a b\"\n".into(),
                "accounts[0].name",
            ),
            (
                "a job naming an unknown account",
                format!("{dup}[[jobs]]\napp_id = \"a\"\njob_id = \"j\"\naccount = \"y\"\n"),
                "jobs[0].account",
            ),
            (
                "an app naming an unknown account",
                format!(
                    "{dup}[[apps]]\napp_id = \"a\"\nauth_key = \"{}\"\naccount = \"y\"\n",
                    "k".repeat(32)
                ),
                "apps[0] (\"a\").account",
            ),
            (
                "an account's own error is located in it",
                "[[accounts]]\nname = \"x\"\nrate_limit = 0\n".into(),
                "accounts[0] (\"x\").rate_limit",
            ),
        ];
        for (name, text, location) in cases {
            let e = parse(&text).expect_err(name);
            assert_eq!(e.location, location, "{name}: {e}");
        }
    }
}
