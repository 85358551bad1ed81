//! What the chat channels (Feishu, DingTalk, WeCom, Slack, Teams) and PagerDuty share: the
//! content of a message before any vendor's format ([`Card`], pure), its words in each
//! language, packing a group of alerts into as few messages as a size limit allows, and
//! [`ChatChannel`]: the channel itself, written once, over the one HTTP path (`notify/http.rs`).
//!
//! Each vendor's file is a [`ChatVendor`]: it turns a [`Card`] into its JSON, signs it if the
//! vendor does, and reads the vendor's verdict out of the answer: the Chinese robots answer
//! HTTP 200 with the error in the body, so a 200 is not yet a success.

use super::http::{Answer, Label, Sender, status_error};
use super::{DeliveryError, Notifier, Window};
use crate::config::{ChatConfig, ConfigError, Language};
use crate::domain::{Alert, Rule, Severity, Status};
use futures_util::future::BoxFuture;
use reqwest::header::CONTENT_TYPE;
use std::fmt::Write as _;
use std::time::Duration;
use url::Url;

/// A summary longer than this is cut: one alert must fit every vendor's smallest message.
const SUMMARY_CHARS: usize = 500;

/// What a message looks like at a glance: its colour or emoji.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Critical,
    Warning,
    Info,
    Resolved,
}

impl Tone {
    pub fn of(alert: &Alert) -> Tone {
        match (alert.status, alert.severity) {
            (Status::Resolved, _) => Tone::Resolved,
            (Status::Firing, Severity::Critical) => Tone::Critical,
            (Status::Firing, Severity::Warning) => Tone::Warning,
            (Status::Firing, Severity::Info) => Tone::Info,
        }
    }

    /// A group's tone: its loudest firing alert's, or resolved when all are.
    fn of_all(alerts: &[Alert]) -> Tone {
        let rank = |t: Tone| match t {
            Tone::Critical => 3,
            Tone::Warning => 2,
            Tone::Info => 1,
            Tone::Resolved => 0,
        };
        alerts
            .iter()
            .map(Tone::of)
            .max_by_key(|t| rank(*t))
            .unwrap_or(Tone::Info)
    }

    pub fn emoji(self) -> &'static str {
        match self {
            Tone::Critical => "🔴",
            Tone::Warning => "🟠",
            Tone::Info => "🔵",
            Tone::Resolved => "✅",
        }
    }
}

/// The fixed words of a message in one language.
struct Words {
    resolved: &'static str,
    severity: &'static str,
    rule: &'static str,
    job: &'static str,
    app: &'static str,
    state: &'static str,
    stop_reason: &'static str,
    time: &'static str,
    alert_id: &'static str,
    page: &'static str,
    host: &'static str,
    account: &'static str,
}

const EN: Words = Words {
    resolved: "RESOLVED",
    severity: "Severity",
    rule: "Rule",
    job: "Job",
    app: "App",
    state: "State",
    stop_reason: "Stop reason",
    time: "Time",
    alert_id: "Alert id",
    page: "Open the job's page",
    host: "Seen by",
    account: "Account",
};

const ZH: Words = Words {
    resolved: "已恢复",
    severity: "级别",
    rule: "规则",
    job: "任务",
    app: "应用",
    state: "状态",
    stop_reason: "停止原因",
    time: "时间",
    alert_id: "告警 ID",
    page: "查看任务页面",
    host: "来自",
    account: "账号",
};

fn words(lang: Language) -> &'static Words {
    match lang {
        Language::En => &EN,
        Language::ZhCn => &ZH,
    }
}

/// What the rule says, as a title.
pub fn rule_title(rule: Rule, lang: Language) -> &'static str {
    match (lang, rule) {
        (Language::En, Rule::StoppedUnexpectedly) => "Recording stopped unexpectedly",
        (Language::En, Rule::IdleTimeout) => "Recording stopped: idle timeout",
        (Language::En, Rule::StoppedByTenant) => "Recording stopped by the tenant",
        (Language::En, Rule::StuckInit) => "Recording stuck in INIT",
        (Language::En, Rule::JobNotFound) => "Recording job not found",
        (Language::En, Rule::ApiUnhealthy) => "RTC API unhealthy",
        (Language::En, Rule::PollFailing) => "Recording job cannot be read",
        (Language::En, Rule::RemediationExhausted) => {
            "Recording not re-created: restarts exhausted"
        }
        (Language::En, Rule::RemediationFailed) => "Recording re-creation failed or unknown",
        (Language::En, Rule::Remediated) => "Recording re-created",
        (Language::En, Rule::Test) => "Test notification",
        (Language::ZhCn, Rule::StoppedUnexpectedly) => "录制意外停止",
        (Language::ZhCn, Rule::IdleTimeout) => "录制因空闲超时停止",
        (Language::ZhCn, Rule::StoppedByTenant) => "录制被租户停止",
        (Language::ZhCn, Rule::StuckInit) => "录制卡在初始化",
        (Language::ZhCn, Rule::JobNotFound) => "录制任务不存在",
        (Language::ZhCn, Rule::ApiUnhealthy) => "RTC API 异常",
        (Language::ZhCn, Rule::PollFailing) => "录制任务查询持续失败",
        (Language::ZhCn, Rule::RemediationExhausted) => "录制未重建：重建次数已用尽",
        (Language::ZhCn, Rule::RemediationFailed) => "录制重建失败或结果未知",
        (Language::ZhCn, Rule::Remediated) => "录制已重建",
        (Language::ZhCn, Rule::Test) => "测试通知",
    }
}

fn severity_word(s: Severity, lang: Language) -> &'static str {
    match (lang, s) {
        (Language::En, Severity::Critical) => "CRITICAL",
        (Language::En, Severity::Warning) => "WARNING",
        (Language::En, Severity::Info) => "INFO",
        (Language::ZhCn, Severity::Critical) => "严重",
        (Language::ZhCn, Severity::Warning) => "警告",
        (Language::ZhCn, Severity::Info) => "提示",
    }
}

/// How a message is written: its language, where job pages live, the robot's keyword, and
/// whether it names the account.
#[derive(Clone, Debug, Default)]
pub struct Style {
    pub language: Language,
    /// `http.public_url`: each job's page is linked when set.
    pub public_url: Option<Url>,
    pub keyword: Option<String>,
    /// Whether several accounts are configured: only then does a message name the alert's
    /// account. With one, the name (`default` for `[api]`) tells a reader nothing and costs
    /// a line in every message; the webhook payload carries it always, for machines.
    pub accounts: bool,
}

impl Style {
    pub fn new(language: Language, public_url: Option<&Url>, keyword: Option<&str>) -> Style {
        Style {
            language,
            public_url: public_url.cloned(),
            keyword: keyword.map(str::to_string),
            accounts: false,
        }
    }

    /// This style, naming each alert's account when `several` accounts are configured.
    pub fn naming_accounts(self, several: bool) -> Style {
        Style {
            accounts: several,
            ..self
        }
    }

    /// `{public_url}/jobs/{app_id}/{job_id}`, when there is a public URL and a job.
    fn link(&self, alert: &Alert) -> Option<String> {
        let job = alert.job.as_ref()?;
        crate::config::HttpConfig {
            listen: None,
            read_token: None,
            token: None,
            public_url: self.public_url.clone(),
        }
        .job_link(&job.app_id, &job.job_id)
    }
}

/// One line of a group's message: an alert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub tone: Tone,
    /// The job's name (or the job id), shown strong.
    pub label: String,
    /// Job id, rule, stop reason and time.
    pub text: String,
    pub link: Option<String>,
}

/// A message's content, before any vendor's format: the same facts for every vendor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Card {
    pub tone: Tone,
    /// One line, plain text.
    pub title: String,
    /// One alert's summary; none for a group.
    pub summary: Option<String>,
    /// One alert's facts, (label, value), in order.
    pub fields: Vec<(String, String)>,
    /// A group's alerts, one entry each.
    pub entries: Vec<Entry>,
    /// The page of one alert's job, (text, url).
    pub link: Option<(String, String)>,
    /// The keyword the robot demands, when the rest does not contain it already.
    pub keyword: Option<String>,
}

impl Card {
    /// The card for `alerts`: one alert's full facts, or a group's list (every job with its
    /// id, rule, stop reason and time). `alerts` is never empty.
    pub fn new(alerts: &[Alert], style: &Style) -> Card {
        let mut card = match alerts {
            [one] => Card::one(one, style),
            many => Card::group(many, style),
        };
        if let Some(k) = &style.keyword {
            if !body(&card, Markdown::Common { sep: "\n" }).contains(k.as_str())
                && !card.title.contains(k.as_str())
            {
                card.keyword = Some(k.clone());
            }
        }
        card
    }

    fn one(a: &Alert, style: &Style) -> Card {
        let lang = style.language;
        let w = words(lang);
        let tone = Tone::of(a);
        let tag = match a.status {
            Status::Resolved => w.resolved,
            Status::Firing => severity_word(a.severity, lang),
        };
        let (open, close, colon) = match lang {
            Language::En => ("[", "]", ": "),
            Language::ZhCn => ("【", "】", "："),
        };
        let title = one_line(&format!(
            "{} {open}{tag}{close} {}{colon}{}",
            tone.emoji(),
            rule_title(a.rule, lang),
            a.subject_label()
        ));
        let mut fields = vec![
            (
                w.severity.to_string(),
                severity_word(a.severity, lang).to_string(),
            ),
            (w.rule.to_string(), a.rule.as_str().to_string()),
        ];
        if style.accounts {
            fields.push((w.account.to_string(), a.account.clone()));
        }
        if let Some(j) = &a.job {
            fields.push((w.job.to_string(), a.subject_label()));
            fields.push((w.app.to_string(), j.app_id.clone()));
            if let Some(s) = &j.state {
                fields.push((w.state.to_string(), s.clone()));
            }
            if let Some(r) = &j.stop_reason {
                fields.push((w.stop_reason.to_string(), r.clone()));
            }
        }
        fields.push((w.time.to_string(), a.fired_at.to_string()));
        fields.push((w.host.to_string(), a.host.clone()));
        fields.push((w.alert_id.to_string(), a.id.to_string()));
        Card {
            tone,
            title,
            summary: Some(cut(&a.summary, SUMMARY_CHARS)),
            fields: fields.into_iter().map(|(k, v)| (k, one_line(&v))).collect(),
            entries: Vec::new(),
            link: style.link(a).map(|u| (w.page.to_string(), u)),
            keyword: None,
        }
    }

    fn group(alerts: &[Alert], style: &Style) -> Card {
        let lang = style.language;
        let resolved = alerts
            .iter()
            .filter(|a| a.status == Status::Resolved)
            .count();
        let firing = alerts.len() - resolved;
        let tone = Tone::of_all(alerts);
        let counts = match (lang, firing, resolved) {
            (Language::En, f, 0) => format!("{f} recording alerts"),
            (Language::En, 0, r) => format!("{r} recording alerts resolved"),
            (Language::En, f, r) => format!(
                "{} recording alerts ({f} firing, {r} resolved)",
                alerts.len()
            ),
            (Language::ZhCn, f, 0) => format!("{f} 条录制告警"),
            (Language::ZhCn, 0, r) => format!("{r} 条录制告警已恢复"),
            (Language::ZhCn, f, r) => {
                format!("{} 条录制告警（{f} 条触发，{r} 条已恢复）", alerts.len())
            }
        };
        let entries = alerts
            .iter()
            .map(|a| {
                let mut parts = Vec::new();
                if style.accounts {
                    parts.push(a.account.clone());
                }
                if let Some(j) = &a.job {
                    parts.push(j.job_id.clone());
                }
                let rule = match a.status {
                    Status::Resolved => format!("{} ({})", a.rule, words(lang).resolved),
                    Status::Firing => a.rule.as_str().to_string(),
                };
                parts.push(rule);
                if let Some(r) = a.job.as_ref().and_then(|j| j.stop_reason.clone()) {
                    parts.push(r);
                }
                parts.push(a.fired_at.to_string());
                Entry {
                    tone: Tone::of(a),
                    label: one_line(&match &a.job {
                        Some(j) => j.name.clone().unwrap_or_else(|| j.job_id.clone()),
                        None => a.subject_label(),
                    }),
                    text: one_line(&parts.join(" · ")),
                    link: style.link(a),
                }
            })
            .collect();
        Card {
            tone,
            title: format!("{} recwatch: {counts}", tone.emoji()),
            summary: None,
            fields: Vec::new(),
            entries,
            link: None,
            keyword: None,
        }
    }
}

/// How a vendor writes markdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Markdown {
    /// `**bold**`, `[text](url)`, lines joined by `sep` (DingTalk wants blank lines).
    Common { sep: &'static str },
    /// Slack's mrkdwn: `*bold*`, `<url|text>`, and `&`, `<`, `>` escaped.
    Slack,
}

impl Markdown {
    fn bold(self, s: &str) -> String {
        match self {
            Markdown::Common { .. } => format!("**{s}**"),
            Markdown::Slack => format!("*{s}*"),
        }
    }

    fn link(self, text: &str, url: &str) -> String {
        match self {
            Markdown::Common { .. } => format!("[{text}]({url})"),
            Markdown::Slack => format!("<{url}|{text}>"),
        }
    }

    fn text(self, s: &str) -> String {
        match self {
            Markdown::Common { .. } => s.to_string(),
            Markdown::Slack => s
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;"),
        }
    }

    fn sep(self) -> &'static str {
        match self {
            Markdown::Common { sep } => sep,
            Markdown::Slack => "\n",
        }
    }
}

/// The card's body (everything but the title) in `md`.
pub fn body(card: &Card, md: Markdown) -> String {
    let mut lines: Vec<String> = Vec::new();
    if let Some(s) = &card.summary {
        lines.push(md.text(s));
    }
    for (k, v) in &card.fields {
        lines.push(format!("{}: {}", md.bold(&md.text(k)), md.text(v)));
    }
    for e in &card.entries {
        let mut line = format!(
            "- {} {} · {}",
            e.tone.emoji(),
            md.bold(&md.text(&e.label)),
            md.text(&e.text)
        );
        if let Some(u) = &e.link {
            let _ = write!(line, " · {}", md.link("page", u));
        }
        lines.push(line);
    }
    if let Some((text, url)) = &card.link {
        lines.push(md.link(&md.text(text), url));
    }
    if let Some(k) = &card.keyword {
        lines.push(md.text(k));
    }
    lines.join(md.sep())
}

/// How many of `n` alerts (in order) go into each message so that none is over `limit` by
/// `size` (the size of the message holding alerts `a..b`): only the limit splits a group. A
/// single alert always makes a message of its own, even if over the limit
/// (the vendor's refusal then says so).
pub fn pack(n: usize, limit: usize, size: impl Fn(usize, usize) -> usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && size(start, end + 1) <= limit {
            end += 1;
        }
        out.push(end - start);
        start = end;
    }
    out
}

/// Control characters (a newline in a job name) would break a title or a list line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// What one chat vendor (or PagerDuty) is, beyond what every channel shares: its format,
/// its signing and how it answers. [`ChatChannel`] is the rest: the configured name and URL,
/// the one HTTP path ([`Sender`]) and the [`Notifier`] implementation, written once.
pub trait ChatVendor: Send + Sync + Sized + 'static {
    /// The channel's kind in output and in `notify.<kind>` locations.
    const KIND: &'static str;
    /// How errors name the vendor: "Feishu", "DingTalk"...
    const NAME: &'static str;
    /// The vendor's pace: at most so many messages in each window.
    const PACE: &'static [Window];
    /// Whether alerts due together go out as one message (chat: people read them).
    const GROUPS: bool = true;
    /// The largest message, as [`ChatVendor::size`] counts it; only this splits a group.
    const LIMIT: usize = usize::MAX;
    /// How long a 429 without `Retry-After` waits.
    const THROTTLED: Duration = Duration::from_secs(60);

    /// The vendor's own part of the configuration (a secret, a routing key) and the style.
    fn new(cfg: &ChatConfig, index: usize, style: Style) -> Result<Self, ConfigError>;

    /// The requests that deliver `alerts`, in order, each formatted and signed now: one
    /// message for a group; one event per alert for a vendor that does not group.
    fn requests(&self, url: &Url, alerts: &[Alert]) -> Vec<(Url, Vec<u8>)>;

    /// The size of the message holding `alerts`, as the vendor's limit counts it.
    fn size(&self, alerts: &[Alert]) -> usize {
        let _ = alerts;
        0
    }

    /// Whether the vendor took a request: by default any 2xx, anything else read as HTTP
    /// statuses are. Vendors that answer 200 with an error code read their body.
    fn verdict(&self, answer: &Answer) -> Result<(), DeliveryError> {
        if answer.status.is_success() {
            return Ok(());
        }
        Err(status_error(Self::NAME, answer, Some(Self::THROTTLED)))
    }
}

/// A chat channel (or PagerDuty): a vendor behind the one HTTP path.
pub struct ChatChannel<V> {
    name: String,
    url: Url,
    http: Sender,
    vendor: V,
}

impl<V: ChatVendor> ChatChannel<V> {
    pub fn new(
        cfg: &ChatConfig,
        index: usize,
        style: Style,
    ) -> Result<ChatChannel<V>, ConfigError> {
        let vendor = V::new(cfg, index, style)?;
        let mut secrets = cfg.url.secrets();
        secrets.extend(cfg.secret.iter().cloned());
        secrets.extend(cfg.routing_key.iter().cloned());
        let http = Sender::new(cfg.timeout, secrets, Label::same(V::NAME)).map_err(|message| {
            ConfigError {
                location: format!("notify.{}[{index}] ({:?}).url", cfg.kind.as_str(), cfg.name),
                message,
            }
        })?;
        Ok(ChatChannel {
            name: cfg.name.clone(),
            url: cfg.url.expose().clone(),
            http,
            vendor,
        })
    }

    async fn deliver(&self, alerts: &[Alert]) -> Result<(), DeliveryError> {
        for (url, body) in self.vendor.requests(&self.url, alerts) {
            let request = self
                .http
                .post(url)
                .header(CONTENT_TYPE, "application/json; charset=utf-8")
                .body(body);
            let answer = self.http.send(request).await?;
            self.vendor.verdict(&answer)?;
        }
        Ok(())
    }
}

impl<V: ChatVendor> Notifier for ChatChannel<V> {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        V::KIND
    }

    fn send<'a>(&'a self, alerts: &'a [Alert]) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.deliver(alerts))
    }

    fn groups(&self) -> bool {
        V::GROUPS
    }

    fn split(&self, alerts: &[Alert]) -> Vec<usize> {
        if !V::GROUPS {
            return vec![1; alerts.len()];
        }
        pack(alerts.len(), V::LIMIT, |a, b| {
            self.vendor.size(&alerts[a..b])
        })
    }

    fn pace(&self) -> &'static [Window] {
        V::PACE
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{JobFacts, PAYLOAD_VERSION};

    pub(crate) fn alert(n: usize, status: Status, severity: Severity) -> Alert {
        Alert {
            version: PAYLOAD_VERSION,
            id: format!("rw_{n:04}").into(),
            status,
            rule: Rule::StoppedUnexpectedly,
            severity,
            summary: format!("cam-{n} stopped recording: INTERNAL_ERROR"),
            account: "cn-north-4".into(),
            job: Some(JobFacts {
                app_id: "app-1".into(),
                job_id: format!("job-{n:04}"),
                name: Some(format!("cam-{n}")),
                state: Some("STOPPED".into()),
                stop_reason: Some("INTERNAL_ERROR".into()),
                ..Default::default()
            }),
            transition: None,
            fired_at: "2025-01-01T01:00:02.123Z".parse().unwrap(),
            host: "watch-1".into(),
            job_url: None,
            remediation: None,
        }
    }

    fn style(lang: Language, public: bool, keyword: Option<&str>) -> Style {
        let url: Url = "https://rw.example.com/base/".parse().unwrap();
        Style::new(lang, public.then_some(&url), keyword)
    }

    /// (name, alerts, style, words the title must hold, words the body must hold, words
    /// neither may hold)
    #[test]
    fn cards_table() {
        let crit = alert(1, Status::Firing, Severity::Critical);
        let warn = alert(2, Status::Firing, Severity::Warning);
        let done = alert(3, Status::Resolved, Severity::Critical);
        let md = Markdown::Common { sep: "\n" };
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Vec<Alert>, Style, Vec<&str>, Vec<&str>, Vec<&str>)> = vec![
            (
                "one firing, English",
                vec![crit.clone()],
                style(Language::En, false, None),
                vec![
                    "🔴",
                    "[CRITICAL]",
                    "Recording stopped unexpectedly",
                    "cam-1 (job-0001)",
                ],
                vec![
                    "cam-1 stopped recording",
                    "**Severity**: CRITICAL",
                    "**Job**: cam-1 (job-0001)",
                    "**State**: STOPPED",
                    "**Stop reason**: INTERNAL_ERROR",
                    "**Time**: 2025-01-01T01:00:02.123Z",
                    "**Alert id**: rw_0001",
                ],
                vec!["RESOLVED", "http", "Account", "cn-north-4"],
            ),
            (
                "several accounts: one names its account",
                vec![crit.clone()],
                style(Language::En, false, None).naming_accounts(true),
                vec![],
                vec!["**Account**: cn-north-4\n**Job**: cam-1 (job-0001)"],
                vec![],
            ),
            (
                "several accounts, Chinese",
                vec![crit.clone()],
                style(Language::ZhCn, false, None).naming_accounts(true),
                vec![],
                vec!["**账号**: cn-north-4"],
                vec!["Account"],
            ),
            (
                "several accounts: a group names each alert's",
                vec![crit.clone(), warn.clone()],
                style(Language::En, false, None).naming_accounts(true),
                vec![],
                vec!["- 🔴 **cam-1** · cn-north-4 · job-0001 · stopped_unexpectedly"],
                vec![],
            ),
            (
                "one resolved looks resolved",
                vec![done.clone()],
                style(Language::En, false, None),
                vec!["✅", "[RESOLVED]"],
                vec!["**Rule**: stopped_unexpectedly"],
                vec!["🔴"],
            ),
            (
                "one firing, Chinese, with its page",
                vec![warn.clone()],
                style(Language::ZhCn, true, None),
                vec!["🟠", "【警告】", "录制意外停止：cam-2 (job-0002)"],
                vec![
                    "**级别**: 警告",
                    "**停止原因**: INTERNAL_ERROR",
                    "[查看任务页面](https://rw.example.com/base/jobs/app-1/job-0002)",
                ],
                vec!["Severity"],
            ),
            (
                "a keyword the text lacks is added",
                vec![crit.clone()],
                style(Language::En, false, Some("告警")),
                vec![],
                vec!["\n告警"],
                vec![],
            ),
            (
                "a keyword the text has is not repeated",
                vec![crit.clone()],
                style(Language::En, false, Some("CRITICAL")),
                vec![],
                vec![],
                vec!["\nCRITICAL"],
            ),
            (
                "a group lists every job",
                vec![crit.clone(), warn.clone(), done.clone()],
                style(Language::En, true, None),
                vec!["🔴", "3 recording alerts (2 firing, 1 resolved)"],
                vec![
                    "- 🔴 **cam-1** · job-0001 · stopped_unexpectedly · INTERNAL_ERROR · 2025-01-01T01:00:02.123Z · [page](https://rw.example.com/base/jobs/app-1/job-0001)",
                    "- 🟠 **cam-2** · job-0002",
                    "- ✅ **cam-3** · job-0003 · stopped_unexpectedly (RESOLVED)",
                ],
                vec!["cn-north-4"],
            ),
            (
                "a group in Chinese",
                vec![done.clone(), done.clone()],
                style(Language::ZhCn, false, None),
                vec!["✅", "2 条录制告警已恢复"],
                vec!["(已恢复)"],
                vec![],
            ),
        ];
        for (name, alerts, style, in_title, in_body, nowhere) in cases {
            let card = Card::new(&alerts, &style);
            let b = body(&card, md);
            for w in in_title {
                assert!(
                    card.title.contains(w),
                    "{name}: title {:?} lacks {w:?}",
                    card.title
                );
            }
            for w in in_body {
                assert!(b.contains(w), "{name}: body lacks {w:?}:\n{b}");
            }
            for w in nowhere {
                assert!(
                    !b.contains(w) && !card.title.contains(w),
                    "{name}: has {w:?}:\n{}\n{b}",
                    card.title
                );
            }
        }
    }

    #[test]
    fn slack_markdown_escapes_and_links_its_way() {
        let mut a = alert(1, Status::Firing, Severity::Critical);
        a.summary = "a <b> & c".into();
        let card = Card::new(&[a], &style(Language::En, true, None));
        let b = body(&card, Markdown::Slack);
        assert!(b.contains("a &lt;b&gt; &amp; c"), "{b}");
        assert!(b.contains("*Severity*: CRITICAL"), "{b}");
        assert!(
            b.contains("<https://rw.example.com/base/jobs/app-1/job-0001|Open the job's page>"),
            "{b}"
        );
    }

    #[test]
    fn pack_table() {
        // Each alert is 10 bytes, a message 5 more.
        let size = |a: usize, b: usize| 5 + 10 * (b - a);
        let cases: &[(&str, usize, usize, &[usize])] = &[
            ("none", 0, 100, &[]),
            ("one", 1, 100, &[1]),
            ("all fit", 9, 100, &[9]),
            ("split where the limit forces", 25, 100, &[9, 9, 7]),
            ("one over the limit still goes alone", 3, 10, &[1, 1, 1]),
            ("no limit: one message", 130, usize::MAX, &[130]),
        ];
        for (name, n, limit, want) in cases {
            assert_eq!(pack(*n, *limit, size), *want, "{name}");
        }
    }
}
