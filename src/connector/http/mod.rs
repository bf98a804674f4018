//! HTTP sources: `type = "http"` connectors that fetch JSON or CSV from an API, and the
//! presets (`ga4`, `yandex_metrica`, `yandex_direct`, `google_sheets`) that expand to one.
//!
//! A run asks for a window of days (the first run backfills from `[window] start`, later runs
//! from the last committed day minus `lookback_days`), walks the pages, and hands the
//! records to the CSV pipeline: JSON records become a table of text cells, CSV and TSV
//! bodies are read as they are. So points, rejected rows and warnings mean the same for
//! every source. Nothing is written unless every page was read.

pub mod client;
pub mod json;
pub mod presets;
pub mod template;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::time::Duration;

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::Value;

use super::csv::{
    CsvConfig, CsvFormat, DateConfig, FileRead, MetricColumn, TableInput, read_table,
};
use super::{Cancel, ConnectorError, Extract, Point, Points, RejectedRow, RunContext, Source};
use crate::okr::{DateValue, OneOrMany};
use client::{Failure, Policy, Request};
use template::{Escape, Rendered, Secrets, Vars};

/// A `type = "http"` connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(rename = "type")]
    pub kind: String,
    /// The address, a template: `https://api.example.com/v1/stats?from={from}`.
    pub url: String,
    /// `GET` (default) or `POST`.
    pub method: Option<HttpMethod>,
    /// The body of a POST, a template (JSON values in it are escaped).
    pub body: Option<String>,
    /// Query parameters, each value a template.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Request headers, each value a template.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub auth: Option<AuthConfig>,
    /// `json` or `csv` (CSV and TSV); detected from the answer when absent.
    pub response: Option<ResponseKind>,
    /// The days each run asks for; needed by `{from}` and `{to}`.
    pub window: Option<WindowConfig>,
    #[serde(default)]
    pub paging: PagingConfig,
    #[serde(default)]
    pub json: JsonConfig,
    #[serde(default)]
    pub request: RequestConfig,
    pub timezone: Option<String>,
    pub description: Option<String>,
    pub schedule: Option<String>,
    pub stale_after_days: Option<u32>,
    /// For CSV answers: how the text is written.
    #[serde(default)]
    pub format: CsvFormat,
    /// The date field (JSON) or column (CSV), as in CSV connectors.
    #[serde(default)]
    pub date: DateConfig,
    /// Dimension name = field or column.
    #[serde(default)]
    pub dimensions: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    pub constants: BTreeMap<String, String>,
    #[serde(default)]
    pub metrics: Vec<MetricColumn>,

    /// The table part, built by [`HttpConfig::prepare`].
    #[serde(skip)]
    pub table: CsvConfig,
    /// How records are laid out, for presets whose answers need more than pointers.
    #[serde(skip)]
    pub shape: Shape,
    /// GA4: the service-account key file that gives the bearer token.
    #[serde(skip)]
    pub service_account: Option<ServiceAccount>,
    /// Set by presets: the `retryIn`-like header, retryable API error codes.
    #[serde(skip)]
    pub preset_policy: Option<PresetPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseKind {
    Json,
    Csv,
}

/// `[auth]`: exactly one of these.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `Authorization: Bearer <token>`.
    pub bearer: Option<String>,
    pub basic: Option<BasicAuth>,
    /// Any header, such as `{ name = "Authorization", value = "OAuth ${TOKEN}" }`.
    pub header: Option<NamedValue>,
    /// A key in the query, such as `{ name = "api_key", value = "${KEY}" }`.
    pub query: Option<NamedValue>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedValue {
    pub name: String,
    pub value: String,
}

/// `[window]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// The first day the first run fetches.
    pub start: DateValue,
    /// Days before the last committed day that every run fetches again (sources restate
    /// recent days). Default 3.
    pub lookback_days: Option<u32>,
    /// The newest day fetched is today minus this many days (the newest complete day).
    /// Default 1.
    pub delay_days: Option<u32>,
    /// chrono format of `{from}` and `{to}`; default `%Y-%m-%d`.
    pub date_format: Option<String>,
    /// Split longer windows into requests of at most this many days.
    pub max_days: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PagingKind {
    #[default]
    None,
    Offset,
    Page,
    Cursor,
    Link,
}

/// `[paging]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingConfig {
    /// `none` (default), `offset`, `page`, `cursor` or `link` (`Link: <...>; rel="next"`).
    pub kind: Option<PagingKind>,
    /// Records per page, sent as `limit_param`.
    pub limit: Option<u64>,
    /// The first offset (`0`, or `1` for APIs that count from one) or the first page (1).
    pub first: Option<u64>,
    pub offset_param: Option<String>,
    pub limit_param: Option<String>,
    pub page_param: Option<String>,
    pub cursor_param: Option<String>,
    /// JSON pointer to the next cursor in the answer; paging stops when it is missing.
    pub cursor_at: Option<String>,
    /// JSON pointer to the number of records in all pages; paging stops when all are read.
    pub total_at: Option<String>,
    /// Guard against endless paging: a run that needs more pages fails. Default 1000.
    pub max_pages: Option<u32>,
}

/// `[json]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonConfig {
    /// JSON pointer to the array of records; `*` walks an array (`/items/*/rows`).
    pub records: Option<String>,
    /// Flag name = JSON pointer: when the answer sets it, every point of the run carries the
    /// flag (`sampled = "/sampled"`).
    #[serde(default)]
    pub flags: BTreeMap<String, String>,
}

/// `[request]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// Whole request, body included. Default 60.
    pub timeout_secs: Option<f64>,
    /// Default 10.
    pub connect_timeout_secs: Option<f64>,
    /// Largest body accepted (after gzip). Default 200.
    pub max_response_mb: Option<u64>,
    /// Attempts for timeouts, 429 and 5xx. Default 5.
    pub max_attempts: Option<u32>,
    /// First backoff; doubles each attempt, with jitter. Default 1000.
    pub backoff_ms: Option<u64>,
    /// Longest backoff. Default 60.
    pub max_backoff_secs: Option<f64>,
    /// A `Retry-After` longer than this fails the run. Default 300.
    pub max_retry_after_secs: Option<f64>,
    /// How long an asynchronous report (201/202) may take. Default 600.
    pub report_wait_secs: Option<f64>,
}

/// What presets add to the retry policy.
#[derive(Debug, Clone, Default)]
pub struct PresetPolicy {
    pub poll_header: Option<String>,
    pub retry_error_codes: Vec<i64>,
    pub error_code_at: Option<String>,
}

/// A service-account key file for Google APIs.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    /// A path (relative to the project) or `${ENV}` template.
    pub key_file: String,
    /// Where to exchange the signed assertion; default: the key file's `token_uri`.
    pub token_url: Option<String>,
    pub scope: String,
}

/// How records are laid out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Shape {
    /// Fields by pointer or name.
    #[default]
    Records,
    /// GA4 runReport: values by the name of their header; metrics cast by type.
    Ga4 {
        dimensions: Vec<String>,
        metrics: Vec<String>,
    },
    /// Metrica `/stat/v1/data`: values by the names in the answer's `query`.
    Metrica {
        dimensions: Vec<String>,
        metrics: Vec<String>,
    },
}

impl HttpConfig {
    /// Builds the table part from the shared sections; call after deserializing.
    pub fn prepare(&mut self) {
        self.table = CsvConfig {
            kind: self.kind.clone(),
            path: String::new(),
            timezone: self.timezone.clone(),
            description: self.description.clone(),
            schedule: self.schedule.clone(),
            stale_after_days: self.stale_after_days,
            format: self.format.clone(),
            date: self.date.clone(),
            dimensions: self.dimensions.clone(),
            constants: self.constants.clone(),
            metrics: self.metrics.clone(),
            counters: BTreeSet::new(),
            accept: None,
        };
    }

    pub fn method(&self) -> HttpMethod {
        self.method.unwrap_or(HttpMethod::Get)
    }

    pub fn paging_kind(&self) -> PagingKind {
        self.paging.kind.unwrap_or_default()
    }

    fn date_format(&self) -> String {
        self.window
            .as_ref()
            .and_then(|w| w.date_format.clone())
            .unwrap_or_else(|| "%Y-%m-%d".into())
    }

    /// Every template with where it is written, for secrets and checks.
    pub fn templates(&self) -> Vec<(String, &str)> {
        let mut out = vec![("url".to_string(), self.url.as_str())];
        if let Some(body) = &self.body {
            out.push(("body".into(), body));
        }
        for (k, v) in &self.query {
            out.push((format!("query.{k}"), v));
        }
        for (k, v) in &self.headers {
            out.push((format!("headers.{k}"), v));
        }
        if let Some(auth) = &self.auth {
            if let Some(t) = &auth.bearer {
                out.push(("auth.bearer".into(), t));
            }
            if let Some(b) = &auth.basic {
                out.push(("auth.basic.user".into(), &b.user));
                out.push(("auth.basic.password".into(), &b.password));
            }
            if let Some(h) = &auth.header {
                out.push(("auth.header.value".into(), &h.value));
            }
            if let Some(q) = &auth.query {
                out.push(("auth.query.value".into(), &q.value));
            }
        }
        if let Some(sa) = &self.service_account {
            out.push(("key_file".into(), &sa.key_file));
        }
        out
    }

    fn policy(&self) -> Policy {
        let r = &self.request;
        let defaults = Policy::default();
        let secs = |v: Option<f64>, d: Duration| {
            v.filter(|v| v.is_finite() && *v > 0.0)
                .map(Duration::from_secs_f64)
                .unwrap_or(d)
        };
        let preset = self.preset_policy.clone().unwrap_or_default();
        Policy {
            timeout: secs(r.timeout_secs, defaults.timeout),
            connect_timeout: secs(r.connect_timeout_secs, defaults.connect_timeout),
            max_bytes: r
                .max_response_mb
                .map(|mb| mb.saturating_mul(1024 * 1024))
                .unwrap_or(defaults.max_bytes),
            max_attempts: r.max_attempts.unwrap_or(defaults.max_attempts).max(1),
            backoff: r
                .backoff_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.backoff),
            max_backoff: secs(r.max_backoff_secs, defaults.max_backoff),
            max_retry_after: secs(r.max_retry_after_secs, defaults.max_retry_after),
            poll_max_wait: secs(r.report_wait_secs, defaults.poll_max_wait),
            poll_header: preset.poll_header,
            retry_error_codes: preset.retry_error_codes,
            error_code_at: preset.error_code_at,
        }
    }

    /// The days a run asks for: `None` for a source without a window.
    pub fn window_for(
        &self,
        fetch: &super::Fetch,
        today: NaiveDate,
    ) -> Option<(NaiveDate, NaiveDate)> {
        let window = self.window.as_ref()?;
        if let Some(range) = fetch.range {
            return Some(range);
        }
        let start = window.start.parse()?;
        let to = today - chrono::Days::new(window.delay_days.unwrap_or(1) as u64);
        let from = match fetch.position {
            Some(last) => {
                let back = last - chrono::Days::new(window.lookback_days.unwrap_or(3) as u64);
                back.max(start)
            }
            None => start,
        };
        Some((from, to))
    }

    fn vars(&self, window: Option<(NaiveDate, NaiveDate)>) -> Vars {
        Vars {
            from: window.map(|w| w.0),
            to: window.map(|w| w.1),
            date_format: self.date_format(),
            ..Vars::default()
        }
    }

    /// Where the paging values go: into a template that names them, else the query.
    fn paging_in_templates(&self, name: &str) -> bool {
        template::uses(&self.url, name)
            || self
                .body
                .as_deref()
                .is_some_and(|b| template::uses(b, name))
            || self.query.values().any(|v| template::uses(v, name))
    }

    /// The request for one page.
    fn request(
        &self,
        vars: &Vars,
        secrets: &Secrets,
        token: Option<&str>,
    ) -> Result<Request, String> {
        let plain = |text: &str| template::render(text, vars, secrets, Escape::None);
        let url = template::render(&self.url, vars, secrets, Escape::Url)?;
        let mut real = url::Url::parse(&url.real)
            .map_err(|err| format!("`{}` is not a URL: {err}", secrets.redact(&url.shown)))?;
        let mut shown = url::Url::parse(&url.shown).unwrap_or_else(|_| real.clone());
        let mut pairs: Vec<(String, Rendered)> = Vec::new();
        for (k, v) in &self.query {
            pairs.push((k.clone(), plain(v)?));
        }
        let paging = &self.paging;
        let mut paged = |name: &str, param: &Option<String>, value: Option<String>| {
            if let Some(value) = value
                && !self.paging_in_templates(name)
            {
                let key = param.clone().unwrap_or_else(|| name.to_string());
                pairs.push((
                    key,
                    Rendered {
                        real: value.clone(),
                        shown: value,
                    },
                ));
            }
        };
        match self.paging_kind() {
            PagingKind::Offset => {
                paged(
                    "offset",
                    &paging.offset_param,
                    vars.offset.map(|v| v.to_string()),
                );
                paged(
                    "limit",
                    &paging.limit_param,
                    vars.limit.map(|v| v.to_string()),
                );
            }
            PagingKind::Page => {
                paged("page", &paging.page_param, vars.page.map(|v| v.to_string()));
                paged(
                    "limit",
                    &paging.limit_param,
                    vars.limit.map(|v| v.to_string()),
                );
            }
            PagingKind::Cursor => {
                paged("cursor", &paging.cursor_param, vars.cursor.clone());
                paged(
                    "limit",
                    &paging.limit_param,
                    vars.limit.map(|v| v.to_string()),
                );
            }
            PagingKind::None | PagingKind::Link => {}
        }
        let mut headers = Vec::new();
        for (k, v) in &self.headers {
            headers.push((k.clone(), plain(v)?.real));
        }
        if let Some(auth) = &self.auth {
            if let Some(t) = &auth.bearer {
                headers.push(("Authorization".into(), format!("Bearer {}", plain(t)?.real)));
            }
            if let Some(b) = &auth.basic {
                use base64::Engine as _;
                let pair = format!("{}:{}", plain(&b.user)?.real, plain(&b.password)?.real);
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                headers.push(("Authorization".into(), format!("Basic {encoded}")));
            }
            if let Some(h) = &auth.header {
                headers.push((h.name.clone(), plain(&h.value)?.real));
            }
            if let Some(q) = &auth.query {
                pairs.push((q.name.clone(), plain(&q.value)?));
            }
        }
        if let Some(token) = token {
            headers.push(("Authorization".into(), format!("Bearer {token}")));
        }
        if !pairs.is_empty() {
            let mut r = real.query_pairs_mut();
            let mut s = shown.query_pairs_mut();
            for (k, v) in &pairs {
                r.append_pair(k, &v.real);
                s.append_pair(k, &v.shown);
            }
        }
        let body = match &self.body {
            Some(body) => {
                let escape = if body.trim_start().starts_with(['{', '[']) {
                    Escape::Json
                } else {
                    Escape::None
                };
                let rendered = template::render(body, vars, secrets, escape)?;
                if escape == Escape::Json
                    && !headers
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    headers.push(("Content-Type".into(), "application/json".into()));
                }
                Some(rendered.real)
            }
            None => None,
        };
        let method = match self.method() {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
        };
        let shown = format!("{method} {}", secrets.redact(shown.as_str()));
        Ok(Request {
            method,
            url: real.to_string(),
            shown,
            headers,
            body,
        })
    }

    fn fail(&self, message: impl Into<String>) -> ConnectorError {
        ConnectorError::Source(message.into())
    }
}

/// One answer kept for reading.
struct Page {
    shown: String,
    body: Vec<u8>,
    json: Option<Value>,
}

impl Source for HttpConfig {
    fn extract(&self, ctx: &RunContext) -> Result<Extract, ConnectorError> {
        let today = chrono::Utc::now().with_timezone(&ctx.timezone).date_naive();
        let window = self.window_for(&ctx.fetch, today);
        let mut extract = Extract {
            window,
            ..Extract::default()
        };
        if let Some((from, to)) = window
            && from > to
        {
            extract.warnings.push(format!(
                "nothing to fetch: the window {from}..{to} is empty (the newest complete day \
                 is before the first day to fetch)"
            ));
            return Ok(extract);
        }
        let templates = self.templates();
        let mut secrets = Secrets::from_env(templates.iter().map(|(f, t)| (f.as_str(), *t)))
            .map_err(|m| self.fail(m))?;
        if let Some(basic) = self.auth.as_ref().and_then(|a| a.basic.as_ref()) {
            // a server that echoes the header would show the pair
            use base64::Engine as _;
            let plain = |t: &str| template::render(t, &Vars::default(), &secrets, Escape::None);
            if let (Ok(user), Ok(password)) = (plain(&basic.user), plain(&basic.password)) {
                let pair = format!("{}:{}", user.real, password.real);
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                secrets.add("basic_auth", encoded);
            }
        }

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| self.fail(format!("cannot start the HTTP runtime: {err}")))?;
        let pages = runtime
            .block_on(fetch_all(self, ctx, window, &mut secrets))
            .map_err(|failure| match failure {
                Failure::Cancelled => ConnectorError::Cancelled,
                Failure::Failed(message) => ConnectorError::Source(secrets.redact(&message)),
            })?;

        let read = read_pages(self, &pages, window, ctx, &mut extract);
        let read = read.map_err(|err| match err {
            ConnectorError::Source(m) => ConnectorError::Source(secrets.redact(&m)),
            other => other,
        })?;
        let mut days = read.days;
        if let Some((from, to)) = window {
            days.extend(from.iter_days().take_while(|d| *d <= to));
        }
        extract.points = read.points;
        extract.days = days;
        // records rejected before the table (not objects) count as read
        let unreadable = extract.rejected.len() as u64;
        extract.rows_read = read.rows_read + unreadable;
        extract.rows_loaded = read.rows_read - read.rejected.len() as u64;
        extract.rows_skipped = read.rows_skipped;
        extract.rejected.extend(read.rejected);
        extract.skipped = read.skipped;
        extract.warnings.extend(read.warnings);
        for r in &mut extract.rejected {
            r.raw = secrets.redact(&r.raw);
            r.location = secrets.redact(&r.location);
            r.reason = secrets.redact(&r.reason);
        }
        for s in &mut extract.skipped {
            s.text = secrets.redact(&s.text);
            s.location = secrets.redact(&s.location);
        }
        for w in &mut extract.warnings {
            *w = secrets.redact(w);
        }
        let mut sources: Vec<String> = Vec::new();
        for page in &pages {
            let base = page.shown.split('?').next().unwrap_or_default().to_string();
            if !sources.contains(&base) {
                sources.push(base);
            }
        }
        extract.sources = vec![format!(
            "{} ({} page{}{})",
            sources.join(", "),
            pages.len(),
            if pages.len() == 1 { "" } else { "s" },
            window
                .map(|(f, t)| format!(", {f}..{t}"))
                .unwrap_or_default()
        )];
        Ok(extract)
    }
}

/// Walks every page of every part of the window.
async fn fetch_all(
    config: &HttpConfig,
    ctx: &RunContext<'_>,
    window: Option<(NaiveDate, NaiveDate)>,
    secrets: &mut Secrets,
) -> Result<Vec<Page>, Failure> {
    let policy = config.policy();
    let client = client::client(&policy)?;
    let token = match &config.service_account {
        Some(sa) => Some(presets::service_account_token(&client, sa, ctx, secrets, &policy).await?),
        None => None,
    };
    let parts: Vec<Option<(NaiveDate, NaiveDate)>> = match window {
        Some((from, to)) => {
            let step = config
                .window
                .as_ref()
                .and_then(|w| w.max_days)
                .filter(|d| *d > 0)
                .unwrap_or(u32::MAX) as u64;
            let mut parts = Vec::new();
            let mut start = from;
            while start <= to {
                let end = start
                    .checked_add_days(chrono::Days::new(step - 1))
                    .map_or(to, |e| e.min(to));
                parts.push(Some((start, end)));
                start = end + chrono::Days::new(1);
            }
            parts
        }
        None => vec![None],
    };
    let mut pages = Vec::new();
    for part in parts {
        fetch_pages(
            config,
            &client,
            &policy,
            part,
            secrets,
            token.as_deref(),
            ctx.cancel,
            &mut pages,
        )
        .await?;
    }
    Ok(pages)
}

#[allow(clippy::too_many_arguments)]
async fn fetch_pages(
    config: &HttpConfig,
    http: &reqwest::Client,
    policy: &Policy,
    window: Option<(NaiveDate, NaiveDate)>,
    secrets: &Secrets,
    token: Option<&str>,
    cancel: &Cancel,
    pages: &mut Vec<Page>,
) -> Result<(), Failure> {
    let paging = &config.paging;
    let kind = config.paging_kind();
    let max_pages = paging.max_pages.unwrap_or(1000).max(1);
    let mut vars = config.vars(window);
    vars.limit = paging.limit;
    match kind {
        PagingKind::Offset => vars.offset = Some(paging.first.unwrap_or(0)),
        PagingKind::Page => vars.page = Some(paging.first.unwrap_or(1)),
        _ => {}
    }
    let first_offset = paging.first.unwrap_or(0);
    let mut next_url: Option<String> = None;
    let mut seen_cursors: BTreeSet<String> = BTreeSet::new();
    let mut fetched = 0u64;
    for n in 0.. {
        if n >= max_pages {
            return Err(Failure::Failed(format!(
                "stopped after {max_pages} pages and the source still has more; raise \
                 [paging] max_pages if that many are expected"
            )));
        }
        let mut request = config.request(&vars, secrets, token)?;
        if let Some(url) = &next_url {
            request.url = url.clone();
            request.shown = format!("{} {}", request.method, secrets.redact(url));
        }
        tracing::debug!(url = %request.shown, page = n + 1, "fetching");
        let answer = client::send(http, &request, policy, secrets, cancel).await?;
        let json = if is_json(config, &answer.headers, &answer.body) {
            let text = answer
                .body
                .strip_prefix(b"\xef\xbb\xbf")
                .unwrap_or(&answer.body);
            let value: Value = serde_json::from_slice(text).map_err(|err| {
                Failure::Failed(format!(
                    "{}: the answer is not valid JSON ({err}); it starts with: {}",
                    request.shown,
                    crate::connector::csv::clip(
                        &printable(&secrets.redact(&String::from_utf8_lossy(&answer.body))),
                        200
                    )
                ))
            })?;
            Some(value)
        } else {
            None
        };
        let count = match &json {
            Some(value) => page_records(config, value)
                .map_err(|m| Failure::Failed(format!("{}: {m}", request.shown)))?
                as u64,
            None => data_lines(&answer.body),
        };
        fetched += count;
        let total = paging.total_at.as_ref().and_then(|at| {
            json.as_ref()
                .and_then(|j| j.pointer(at))
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
        });
        let cursor = paging.cursor_at.as_ref().and_then(|at| {
            json.as_ref()
                .and_then(|j| j.pointer(at))
                .map(|v| json::text(Some(v)))
                .filter(|c| !c.is_empty())
        });
        let link = next_link(&answer.headers, &request.url);
        pages.push(Page {
            shown: request.shown.clone(),
            body: answer.body,
            json,
        });
        let short = paging.limit.is_some_and(|l| count < l);
        let all_read = total.is_some_and(|t| fetched >= t);
        match kind {
            PagingKind::None => break,
            PagingKind::Offset => {
                if count == 0 || short || all_read {
                    break;
                }
                vars.offset = Some(first_offset + fetched);
            }
            PagingKind::Page => {
                if count == 0 || short || all_read {
                    break;
                }
                vars.page = vars.page.map(|p| p + 1);
            }
            PagingKind::Cursor => {
                let Some(cursor) = cursor else { break };
                if count == 0 || all_read {
                    break;
                }
                if !seen_cursors.insert(cursor.clone()) {
                    return Err(Failure::Failed(format!(
                        "{}: the source sent cursor `{}` twice; stopping instead of paging \
                         forever",
                        request.shown,
                        secrets.redact(&cursor)
                    )));
                }
                vars.cursor = Some(cursor);
            }
            PagingKind::Link => {
                let Some(link) = link else { break };
                let origin = |u: &str| url::Url::parse(u).map(|u| u.origin()).ok();
                if origin(&link) != origin(&request.url) {
                    return Err(Failure::Failed(format!(
                        "{}: the next page link points to another host ({}); krscore does not \
                         send the connector's credentials there",
                        request.shown,
                        secrets.redact(&link)
                    )));
                }
                if next_url.as_deref() == Some(link.as_str()) || link == request.url {
                    return Err(Failure::Failed(format!(
                        "{}: the next link points to the same page",
                        request.shown
                    )));
                }
                next_url = Some(link);
            }
        }
    }
    Ok(())
}

fn is_json(config: &HttpConfig, headers: &reqwest::header::HeaderMap, body: &[u8]) -> bool {
    match config.response {
        Some(ResponseKind::Json) => true,
        Some(ResponseKind::Csv) => false,
        None => {
            let content_type = headers
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_ascii_lowercase();
            if content_type.contains("json") {
                true
            } else if content_type.contains("csv") || content_type.contains("tab-separated") {
                false
            } else {
                let start = body.iter().find(|b| !b.is_ascii_whitespace());
                matches!(start, Some(b'{') | Some(b'['))
            }
        }
    }
}

/// Data lines of a CSV page (all lines but the first non-empty one), for paging.
fn data_lines(body: &[u8]) -> u64 {
    let lines = body
        .split(|b| *b == b'\n')
        .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
        .count() as u64;
    lines.saturating_sub(1)
}

/// `Link: <https://...>; rel="next"`, resolved against the request URL.
fn next_link(headers: &reqwest::header::HeaderMap, base: &str) -> Option<String> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(text) = value.to_str() else { continue };
        for part in text.split(',') {
            let mut pieces = part.split(';');
            let target = pieces.next()?.trim();
            let is_next = pieces.any(|p| {
                let p = p.trim().to_ascii_lowercase().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next && target.starts_with('<') && target.ends_with('>') {
                let target = &target[1..target.len() - 1];
                return url::Url::parse(base)
                    .and_then(|b| b.join(target))
                    .ok()
                    .map(|u| u.to_string());
            }
        }
    }
    None
}

fn records_pointer(config: &HttpConfig) -> &str {
    match &config.shape {
        Shape::Ga4 { .. } => "/rows",
        Shape::Metrica { .. } => "/data",
        Shape::Records => config.json.records.as_deref().unwrap_or(""),
    }
}

fn page_records(config: &HttpConfig, value: &Value) -> Result<usize, String> {
    Ok(page_record_list(config, value)?.len())
}

/// The records of a page. GA4 leaves `rows` out of an empty report.
fn page_record_list<'a>(
    config: &HttpConfig,
    value: &'a Value,
) -> Result<Vec<json::Record<'a>>, String> {
    if matches!(config.shape, Shape::Ga4 { .. }) && value.get("rows").is_none() {
        return Ok(Vec::new());
    }
    json::records(value, records_pointer(config))
}

/// Reads every page into points.
fn read_pages(
    config: &HttpConfig,
    pages: &[Page],
    window: Option<(NaiveDate, NaiveDate)>,
    ctx: &RunContext,
    extract: &mut Extract,
) -> Result<FileRead, ConnectorError> {
    let mut table = config.table.clone();
    table.accept = window;
    if table.date.column.is_none()
        && table.date.start.is_none()
        && let Some((from, to)) = window
    {
        // a report without a date field covers the window
        table.date.start = Some(DateValue::Text(from.to_string()));
        table.date.end = Some(DateValue::Text(to.to_string()));
    }
    let shown_base = pages
        .first()
        .map(|p| p.shown.split('?').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    if pages.iter().all(|p| p.json.is_some()) {
        let (text, locations) = json_table(config, pages, &table, extract)?;
        table.format = CsvFormat {
            delimiter: Some(",".into()),
            encoding: Some("utf-8".into()),
            skip_lines: Some(0),
            decimal: table.format.decimal.clone(),
            thousands: table.format.thousands.clone(),
            ..CsvFormat::default()
        };
        let open = || -> std::io::Result<Box<dyn std::io::Read>> {
            Ok(Box::new(Cursor::new(text.as_slice())))
        };
        let input = TableInput {
            shown: &shown_base,
            open: &open,
            records: Some(&locations),
        };
        return read_table(&table, &input, ctx.timezone, ctx.cancel);
    }
    // CSV or TSV bodies: each page is a table; the same point in two pages adds up
    let mut merged: Option<FileRead> = None;
    let mut points: Vec<Point> = Vec::new();
    let mut sums: HashMap<PointKey, usize> = HashMap::new();
    for page in pages {
        if page.json.is_some() {
            return Err(config.fail(format!(
                "{}: a JSON answer among CSV pages; set `response`",
                page.shown
            )));
        }
        let open = || -> std::io::Result<Box<dyn std::io::Read>> {
            Ok(Box::new(Cursor::new(page.body.as_slice())))
        };
        let input = TableInput {
            shown: &page.shown,
            open: &open,
            records: None,
        };
        let mut one = read_table(&table, &input, ctx.timezone, ctx.cancel)?;
        for p in &std::mem::take(&mut one.points) {
            match sums.get(&point_key(&p)) {
                Some(i) => points[*i].value += p.value,
                None => {
                    sums.insert(point_key(&p), points.len());
                    points.push(p);
                }
            }
        }
        let Some(all) = merged.as_mut() else {
            merged = Some(one);
            continue;
        };
        all.days.extend(one.days);
        all.rows_read += one.rows_read;
        all.rows_skipped += one.rows_skipped;
        all.rejected.extend(one.rejected);
        all.skipped.extend(one.skipped);
        all.warnings.extend(one.warnings);
    }
    let mut read = merged.ok_or_else(|| config.fail("no answer"))?;
    read.points = Points::from(points);
    Ok(read)
}

/// What makes two points the same: metric, days and dimensions.
type PointKey = (String, NaiveDate, NaiveDate, Vec<(String, String)>);

fn point_key(p: &Point) -> PointKey {
    (
        p.metric.to_string(),
        p.day,
        p.until,
        p.dimensions
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// The fields a table needs, in header order.
fn needed_fields(table: &CsvConfig) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        if !fields.iter().any(|f| f == name) {
            fields.push(name.to_string());
        }
    };
    if let Some(column) = &table.date.column {
        column.values().iter().for_each(|c| add(c));
    }
    for column in table.dimensions.values() {
        column.values().iter().for_each(|c| add(c));
    }
    for metric in &table.metrics {
        if let Some(column) = &metric.column {
            column.values().iter().for_each(|c| add(c));
        }
        if let Some(times) = &metric.times {
            add(times);
        }
        for column in metric.filter.keys() {
            add(column);
        }
    }
    fields
}

/// JSON records as CSV text, with each record's location.
fn json_table(
    config: &HttpConfig,
    pages: &[Page],
    table: &CsvConfig,
    extract: &mut Extract,
) -> Result<(Vec<u8>, Vec<String>), ConnectorError> {
    let names = needed_fields(table);
    let fields: Vec<json::Field> = names
        .iter()
        .map(|n| json::Field::parse(n))
        .collect::<Result<_, _>>()
        .map_err(|m| config.fail(m))?;
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let write_err = |err: csv::Error| config.fail(format!("cannot build the table: {err}"));
    writer.write_record(&names).map_err(write_err)?;
    let mut locations = Vec::new();
    let mut zones: BTreeSet<String> = BTreeSet::new();
    let mut currencies: BTreeSet<String> = BTreeSet::new();
    let mut found = vec![false; fields.len()];
    let comma = number_marks(config, pages, &fields, table.format.decimal.as_deref())?;
    let mut first_record: Option<Value> = None;
    for (p, page) in pages.iter().enumerate() {
        let body = page.json.as_ref().expect("JSON pages only");
        let at = |pointer: &str| format!("{} page {} {pointer}", base(&page.shown), p + 1);
        for (flag, pointer) in &config.json.flags {
            if json::truthy(body.pointer(pointer)) {
                extract.flags.insert(flag.clone());
            }
        }
        let records = page_record_list(config, body)
            .map_err(|m| config.fail(format!("{}: {m}", page.shown)))?;
        match &config.shape {
            Shape::Records => {
                for record in &records {
                    // a record is an object of fields; anything else cannot be read
                    if !record.value.is_object() {
                        extract.rejected.push(RejectedRow {
                            location: at(&record.at),
                            line: None,
                            reason: format!(
                                "the record is {}, not an object with fields",
                                json::kind(record.value)
                            ),
                            raw: crate::connector::csv::clip(&record.value.to_string(), 2000),
                        });
                        continue;
                    }
                    if first_record.is_none() {
                        first_record = Some(record.value.clone());
                    }
                    let mut cells = Vec::with_capacity(fields.len());
                    for (i, f) in fields.iter().enumerate() {
                        let (text, present) = json::cell(record, f, comma[i]);
                        found[i] |= present;
                        cells.push(text);
                    }
                    writer.write_record(&cells).map_err(write_err)?;
                    locations.push(at(&record.at));
                }
            }
            shape => {
                presets::check_page(body, shape, &page.shown).map_err(|m| config.fail(m))?;
                let meta = body.get("metadata");
                let flag = |key: &str| meta.is_some_and(|m| json::truthy(m.get(key)));
                if flag("subjectToThresholding") {
                    extract.flags.insert("thresholded".into());
                }
                if flag("dataLossFromOtherRow") {
                    extract.flags.insert("rolled_up".into());
                }
                if meta.is_some_and(|m| json::truthy(m.get("samplingMetadatas"))) {
                    extract.flags.insert("sampled".into());
                }
                if let Some(zone) = meta
                    .and_then(|m| m.get("timeZone"))
                    .and_then(|v| v.as_str())
                {
                    zones.insert(zone.to_string());
                }
                if let Some(c) = meta
                    .and_then(|m| m.get("currencyCode"))
                    .and_then(|v| v.as_str())
                {
                    currencies.insert(c.to_string());
                }
                for record in &records {
                    let row = presets::named_row(record.value, body, shape);
                    if matches!(shape, Shape::Ga4 { .. }) && row.values().any(|v| v == "(other)") {
                        extract.flags.insert("rolled_up".into());
                    }
                    let cells: Vec<String> = names
                        .iter()
                        .map(|n| row.get(n).cloned().unwrap_or_default())
                        .collect();
                    writer.write_record(&cells).map_err(write_err)?;
                    locations.push(at(&record.at));
                }
            }
        }
    }
    // a field no record has is a mistake in the file (or the API changed): loading the
    // rest without it would silently lose a metric or a dimension
    if let Some(first) = &first_record {
        let missing: Vec<&str> = names
            .iter()
            .zip(&found)
            .filter(|(_, f)| !**f)
            .map(|(n, _)| n.as_str())
            .collect();
        if !missing.is_empty() {
            let keys = match first {
                Value::Object(map) => map.keys().cloned().collect::<Vec<_>>().join(", "),
                other => json::text(Some(other)),
            };
            return Err(config.fail(format!(
                "{}: no record has {}; the first record has: {}",
                base(&pages[0].shown),
                missing
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                crate::connector::csv::clip(&keys, 300)
            )));
        }
    }
    if let Some(tz) = &config.timezone
        && let Some(zone) = zones.iter().find(|z| *z != tz)
    {
        extract.warnings.push(format!(
            "the property reports days in {zone}, but the connector's timezone is {tz}: days \
             are the property's days; set timezone = \"{zone}\""
        ));
    }
    if currencies.len() > 1 {
        extract.warnings.push(format!(
            "the answers use several currencies: {}",
            currencies.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(c) = currencies.first() {
        tracing::info!(currency = %c, "money values of the answers");
    }
    let text = writer
        .into_inner()
        .map_err(|err| config.fail(format!("cannot build the table: {err}")))?;
    Ok((text, locations))
}

/// Per field: whether JSON numbers are written with a decimal comma. A number in JSON always
/// has a decimal point, but an API that sends some values as text may write them the local
/// way (`"1 234,56"`): the numbers follow the mark the field's text values vote for (or the
/// one configured), so one column never mixes two decimal marks.
fn number_marks(
    config: &HttpConfig,
    pages: &[Page],
    fields: &[json::Field],
    configured: Option<&str>,
) -> Result<Vec<bool>, ConnectorError> {
    if let Some(mark) = configured {
        return Ok(vec![mark == ","; fields.len()]);
    }
    let mut votes = vec![crate::connector::csv::clean::Votes::default(); fields.len()];
    for page in pages {
        let Some(body) = page.json.as_ref() else {
            continue;
        };
        let records = page_record_list(config, body)
            .map_err(|m| config.fail(format!("{}: {m}", page.shown)))?;
        for record in records.iter().filter(|r| r.value.is_object()) {
            for (i, field) in fields.iter().enumerate() {
                if let Some(Value::String(text)) = json::lookup(record, field) {
                    votes[i].add(text);
                }
            }
        }
    }
    Ok(votes.iter().map(|v| v.decision() == Some(',')).collect())
}

/// Text safe to store: control characters (a binary body) become `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

fn base(shown: &str) -> &str {
    shown.split('?').next().unwrap_or_default()
}
