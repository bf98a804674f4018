//! Presets: a few lines of TOML that expand to a configured HTTP connector for the platforms
//! marketers use. Each has a `base_url` that tests point at a local mock.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::client::{self, Failure, Policy, Request};
use super::template::{self, Escape, Secrets, Vars};
use super::{
    AuthConfig, HttpConfig, HttpMethod, JsonConfig, NamedValue, PagingConfig, PagingKind,
    PresetPolicy, RequestConfig, ResponseKind, ServiceAccount, Shape, WindowConfig,
};
use crate::connector::RunContext;
use crate::connector::csv::{CsvFormat, DateConfig, MetricColumn};
use crate::okr::{DateValue, OneOrMany};

/// An id written as a number or as text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Number(i64),
    Text(String),
}

impl Id {
    /// Whether it is a whole number, as platform ids are.
    pub fn is_number(&self) -> bool {
        match self {
            Id::Number(n) => *n > 0,
            Id::Text(t) => !t.trim().is_empty() && t.trim().chars().all(|c| c.is_ascii_digit()),
        }
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::Text(t) => write!(f, "{}", t.trim()),
        }
    }
}

/// A metric of a preset: the platform's name, or a table with `times` and `scale`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PresetMetric {
    Name(String),
    Full {
        field: String,
        times: Option<String>,
        scale: Option<f64>,
    },
}

impl PresetMetric {
    fn field(&self) -> &str {
        match self {
            PresetMetric::Name(n) => n,
            PresetMetric::Full { field, .. } => field,
        }
    }

    fn times(&self) -> Option<&str> {
        match self {
            PresetMetric::Name(_) => None,
            PresetMetric::Full { times, .. } => times.as_deref(),
        }
    }

    fn scale(&self) -> Option<f64> {
        match self {
            PresetMetric::Name(_) => None,
            PresetMetric::Full { scale, .. } => *scale,
        }
    }
}

/// `type = "ga4"`: Google Analytics Data API `runReport`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ga4Preset {
    #[serde(rename = "type")]
    pub kind: String,
    /// The GA4 property id.
    pub property: Id,
    /// The service-account key file (JSON), a path relative to the project or `${ENV}`.
    pub key_file: String,
    /// Where the signed assertion is exchanged; default: the key file's `token_uri`.
    pub token_url: Option<String>,
    /// The first day the first run fetches.
    pub start: DateValue,
    pub lookback_days: Option<u32>,
    pub delay_days: Option<u32>,
    pub max_days: Option<u32>,
    /// Rows per page (`limit`), default 10 000 (the API allows 250 000).
    pub page_size: Option<u64>,
    /// krscore dimension = GA4 dimension (`channel = "sessionDefaultChannelGroup"`).
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// krscore metric = GA4 metric (`sessions = "sessions"`).
    pub metrics: BTreeMap<String, PresetMetric>,
    pub timezone: Option<String>,
    pub description: Option<String>,
    pub schedule: Option<String>,
    pub stale_after_days: Option<u32>,
    pub base_url: Option<String>,
    #[serde(default)]
    pub request: RequestConfig,
    #[serde(default)]
    pub constants: BTreeMap<String, String>,
}

/// `type = "yandex_metrica"`: Metrica Reports API `/stat/v1/data`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricaPreset {
    #[serde(rename = "type")]
    pub kind: String,
    /// The counter (tag) id.
    pub counter: Id,
    /// An OAuth token, normally `${METRICA_TOKEN}`.
    pub token: String,
    pub start: DateValue,
    pub lookback_days: Option<u32>,
    pub delay_days: Option<u32>,
    pub max_days: Option<u32>,
    /// Rows per page, default 10 000 (the API allows 100 000).
    pub page_size: Option<u64>,
    /// `full` (default), `high`, `medium`, `low`: lower means sampled sooner.
    pub accuracy: Option<String>,
    /// A Metrica filter expression (`ym:s:isRobot=='No'`).
    pub filters: Option<String>,
    /// krscore dimension = Metrica dimension (`source = "ym:s:lastTrafficSource"`).
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// krscore metric = Metrica metric (`visits = "ym:s:visits"`).
    pub metrics: BTreeMap<String, PresetMetric>,
    pub timezone: Option<String>,
    pub description: Option<String>,
    pub schedule: Option<String>,
    pub stale_after_days: Option<u32>,
    pub base_url: Option<String>,
    #[serde(default)]
    pub request: RequestConfig,
    #[serde(default)]
    pub constants: BTreeMap<String, String>,
}

/// `type = "yandex_direct"`: Direct Reports API (TSV, offline reports).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectPreset {
    #[serde(rename = "type")]
    pub kind: String,
    /// An OAuth token, normally `${DIRECT_TOKEN}`.
    pub token: String,
    /// The client's login, for agency accounts.
    pub client_login: Option<String>,
    pub start: DateValue,
    pub lookback_days: Option<u32>,
    pub delay_days: Option<u32>,
    pub max_days: Option<u32>,
    /// Default `CUSTOM_REPORT`.
    pub report_type: Option<String>,
    /// Money arrives in micros (millionths) unless this is false; krscore scales it back.
    pub money_in_micros: Option<bool>,
    /// Default true.
    pub include_vat: Option<bool>,
    /// krscore dimension = Direct field (`campaign = "CampaignName"`).
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// krscore metric = Direct field (`ad_clicks = "Clicks"`, `ad_spend = "Cost"`).
    pub metrics: BTreeMap<String, PresetMetric>,
    pub timezone: Option<String>,
    pub description: Option<String>,
    pub schedule: Option<String>,
    pub stale_after_days: Option<u32>,
    pub base_url: Option<String>,
    #[serde(default)]
    pub request: RequestConfig,
    #[serde(default)]
    pub constants: BTreeMap<String, String>,
}

/// `type = "google_sheets"`: a published sheet read as CSV.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SheetsPreset {
    #[serde(rename = "type")]
    pub kind: String,
    /// The published CSV address (File > Share > Publish to web > CSV).
    pub url: Option<String>,
    /// Or the sheet id and tab, read through the export address.
    pub sheet_id: Option<String>,
    pub gid: Option<Id>,
    pub base_url: Option<String>,
    pub timezone: Option<String>,
    pub description: Option<String>,
    pub schedule: Option<String>,
    pub stale_after_days: Option<u32>,
    #[serde(default)]
    pub request: RequestConfig,
    #[serde(default)]
    pub format: CsvFormat,
    #[serde(default)]
    pub date: DateConfig,
    #[serde(default)]
    pub dimensions: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    pub constants: BTreeMap<String, String>,
    #[serde(default)]
    pub metrics: Vec<MetricColumn>,
}

/// Money fields of Direct reports (in micros unless asked otherwise).
const DIRECT_MONEY: &[&str] = &[
    "Cost",
    "AvgCpc",
    "AvgCpm",
    "CostPerConversion",
    "Revenue",
    "Profit",
    "AvgEffectiveBid",
    "WeightedCtr",
];
/// Direct error codes worth another try: server busy, internal errors, report queue full.
const DIRECT_RETRY_CODES: &[i64] = &[52, 1000, 1001, 1002, 9000];

/// The `[window]` of a dated preset, from its `start`, `lookback_days`, `delay_days` and
/// `max_days` (every preset struct has them; serde's `flatten` cannot share them because it
/// does not work with `deny_unknown_fields`).
macro_rules! dated_window {
    ($preset:expr) => {
        WindowConfig {
            start: $preset.start,
            lookback_days: $preset.lookback_days,
            delay_days: $preset.delay_days,
            date_format: Some("%Y-%m-%d".into()),
            max_days: $preset.max_days,
        }
    };
}

/// Copies the keys every preset has onto the expanded connector.
macro_rules! copy_shared {
    ($preset:expr, $config:expr) => {
        $config.timezone = $preset.timezone;
        $config.description = $preset.description;
        $config.schedule = $preset.schedule;
        $config.stale_after_days = $preset.stale_after_days;
        $config.request = $preset.request;
        $config.constants = $preset.constants;
    };
}

/// krscore dimension = platform field, as the table part writes it.
fn one_each(dimensions: &BTreeMap<String, String>) -> BTreeMap<String, OneOrMany> {
    dimensions
        .iter()
        .map(|(k, v)| (k.clone(), OneOrMany::One(v.clone())))
        .collect()
}

fn base(config: Option<&String>, default: &str) -> String {
    config
        .map(|b| b.trim_end_matches('/').to_string())
        .unwrap_or_else(|| default.to_string())
}

fn empty(kind: &str, url: String) -> HttpConfig {
    HttpConfig {
        kind: kind.to_string(),
        url,
        method: None,
        body: None,
        query: BTreeMap::new(),
        headers: BTreeMap::new(),
        auth: None,
        response: None,
        window: None,
        paging: PagingConfig::default(),
        json: JsonConfig::default(),
        request: RequestConfig::default(),
        timezone: None,
        description: None,
        schedule: None,
        stale_after_days: None,
        format: CsvFormat::default(),
        date: DateConfig::default(),
        dimensions: BTreeMap::new(),
        constants: BTreeMap::new(),
        metrics: Vec::new(),
        table: Default::default(),
        shape: Shape::Records,
        service_account: None,
        preset_policy: None,
    }
}

fn metric_columns(
    metrics: &BTreeMap<String, PresetMetric>,
    column: impl Fn(&str) -> String,
) -> Vec<MetricColumn> {
    metrics
        .iter()
        .map(|(name, m)| MetricColumn {
            name: name.clone(),
            column: Some(OneOrMany::One(column(m.field()))),
            count: None,
            filter: BTreeMap::new(),
            scale: m.scale(),
            times: m.times().map(&column),
        })
        .collect()
}

/// The platform's metric names a preset asks for: every metric and every `times`.
fn requested_metrics(metrics: &BTreeMap<String, PresetMetric>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in metrics.values() {
        for name in std::iter::once(m.field()).chain(m.times()) {
            if !out.iter().any(|o| o == name) {
                out.push(name.to_string());
            }
        }
    }
    out
}

impl Ga4Preset {
    pub fn expand(self) -> HttpConfig {
        let base = base(
            self.base_url.as_ref(),
            "https://analyticsdata.googleapis.com",
        );
        let mut config = empty(
            &self.kind,
            format!("{base}/v1beta/properties/{}:runReport", self.property),
        );
        let mut dimensions = vec!["date".to_string()];
        dimensions.extend(self.dimensions.values().cloned());
        let metrics = requested_metrics(&self.metrics);
        let names = |list: &[String]| {
            list.iter()
                .map(|n| serde_json::json!({ "name": n }))
                .collect::<Vec<_>>()
        };
        let body = serde_json::json!({
            "dateRanges": [{"startDate": "{from}", "endDate": "{to}"}],
            "dimensions": names(&dimensions),
            "metrics": names(&metrics),
            "keepEmptyRows": false,
        });
        // offset and limit are numbers in the body, so they are spliced in as text
        let body = serde_json::to_string_pretty(&body).expect("JSON");
        let body = format!(
            "{},\n  \"offset\": {{offset}},\n  \"limit\": {{limit}}\n}}",
            body.trim_end().trim_end_matches('}').trim_end()
        );
        config.method = Some(HttpMethod::Post);
        config.body = Some(body);
        config.response = Some(ResponseKind::Json);
        config.window = Some(dated_window!(self));
        config.paging = PagingConfig {
            kind: Some(PagingKind::Offset),
            limit: Some(self.page_size.unwrap_or(10_000)),
            first: Some(0),
            total_at: Some("/rowCount".into()),
            ..PagingConfig::default()
        };
        config.date = DateConfig {
            column: Some(OneOrMany::One("date".into())),
            format: Some("%Y%m%d".into()),
            ..DateConfig::default()
        };
        config.dimensions = one_each(&self.dimensions);
        config.metrics = metric_columns(&self.metrics, str::to_string);
        config.shape = Shape::Ga4 {
            dimensions,
            metrics,
        };
        config.service_account = Some(ServiceAccount {
            key_file: self.key_file,
            token_url: self.token_url,
            scope: "https://www.googleapis.com/auth/analytics.readonly".into(),
        });
        copy_shared!(self, config);
        config
    }
}

impl MetricaPreset {
    pub fn expand(self) -> HttpConfig {
        let base = base(self.base_url.as_ref(), "https://api-metrika.yandex.net");
        let mut config = empty(&self.kind, format!("{base}/stat/v1/data"));
        let mut dimensions = vec!["ym:s:date".to_string()];
        dimensions.extend(self.dimensions.values().cloned());
        let metrics = requested_metrics(&self.metrics);
        config.query.insert("ids".into(), self.counter.to_string());
        config.query.insert("metrics".into(), metrics.join(","));
        config
            .query
            .insert("dimensions".into(), dimensions.join(","));
        config.query.insert("date1".into(), "{from}".into());
        config.query.insert("date2".into(), "{to}".into());
        config.query.insert(
            "accuracy".into(),
            self.accuracy.unwrap_or_else(|| "full".into()),
        );
        if let Some(filters) = self.filters {
            config.query.insert("filters".into(), filters);
        }
        config.auth = Some(AuthConfig {
            header: Some(NamedValue {
                name: "Authorization".into(),
                value: format!("OAuth {}", self.token),
            }),
            ..AuthConfig::default()
        });
        config.response = Some(ResponseKind::Json);
        config.window = Some(dated_window!(self));
        config.paging = PagingConfig {
            kind: Some(PagingKind::Offset),
            limit: Some(self.page_size.unwrap_or(10_000)),
            first: Some(1),
            total_at: Some("/total_rows".into()),
            ..PagingConfig::default()
        };
        config.json = JsonConfig {
            records: Some("/data".into()),
            flags: BTreeMap::from([("sampled".to_string(), "/sampled".to_string())]),
        };
        config.date = DateConfig {
            column: Some(OneOrMany::One("ym:s:date".into())),
            format: Some("%Y-%m-%d".into()),
            ..DateConfig::default()
        };
        config.dimensions = one_each(&self.dimensions);
        config.metrics = metric_columns(&self.metrics, str::to_string);
        config.shape = Shape::Metrica {
            dimensions,
            metrics,
        };
        copy_shared!(self, config);
        config
    }
}

impl DirectPreset {
    pub fn expand(self, connector: &str) -> HttpConfig {
        let base = base(self.base_url.as_ref(), "https://api.direct.yandex.com");
        let mut config = empty(&self.kind, format!("{base}/json/v5/reports"));
        let mut fields = vec!["Date".to_string()];
        fields.extend(self.dimensions.values().cloned());
        for m in requested_metrics(&self.metrics) {
            if !fields.contains(&m) {
                fields.push(m);
            }
        }
        let report_type = self
            .report_type
            .unwrap_or_else(|| "CUSTOM_REPORT".to_string());
        let micros = self.money_in_micros.unwrap_or(true);
        // a report name is unique per field set (Direct rejects a known name with new fields)
        let mut hash = Sha256::new();
        hash.update(report_type.as_bytes());
        hash.update(fields.join(",").as_bytes());
        hash.update([u8::from(micros), u8::from(self.include_vat.unwrap_or(true))]);
        let digest: String = hash.finalize()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let body = serde_json::json!({
            "params": {
                "SelectionCriteria": {"DateFrom": "{from}", "DateTo": "{to}"},
                "FieldNames": fields,
                "ReportName": format!("krscore {connector} {digest} {{from}}..{{to}}"),
                "ReportType": report_type,
                "DateRangeType": "CUSTOM_DATE",
                "Format": "TSV",
                "IncludeVAT": if self.include_vat.unwrap_or(true) { "YES" } else { "NO" },
            }
        });
        config.method = Some(HttpMethod::Post);
        config.body = Some(serde_json::to_string_pretty(&body).expect("JSON"));
        config.auth = Some(AuthConfig {
            bearer: Some(self.token),
            ..AuthConfig::default()
        });
        config.headers.insert("Accept-Language".into(), "en".into());
        config
            .headers
            .insert("processingMode".into(), "auto".into());
        if !micros {
            config
                .headers
                .insert("returnMoneyInMicros".into(), "false".into());
        }
        if let Some(login) = self.client_login {
            config.headers.insert("Client-Login".into(), login);
        }
        config.response = Some(ResponseKind::Csv);
        config.format = CsvFormat {
            delimiter: Some("\t".into()),
            encoding: Some("utf-8".into()),
            decimal: Some(".".into()),
            ..CsvFormat::default()
        };
        config.window = Some(dated_window!(self));
        config.date = DateConfig {
            column: Some(OneOrMany::One("Date".into())),
            format: Some("%Y-%m-%d".into()),
            ..DateConfig::default()
        };
        config.dimensions = one_each(&self.dimensions);
        config.metrics = metric_columns(&self.metrics, str::to_string);
        if micros {
            for m in &mut config.metrics {
                let field = m.column.as_ref().map(|c| c.values()[0].clone());
                if field.is_some_and(|f| DIRECT_MONEY.contains(&f.as_str())) {
                    m.scale = Some(m.scale.unwrap_or(1.0) * 1e-6);
                }
            }
        }
        config.preset_policy = Some(PresetPolicy {
            poll_header: Some("retryIn".into()),
            retry_error_codes: DIRECT_RETRY_CODES.to_vec(),
            error_code_at: Some("/error/error_code".into()),
        });
        copy_shared!(self, config);
        config
    }
}

impl SheetsPreset {
    pub fn expand(self) -> Result<HttpConfig, String> {
        let url = match (self.url, self.sheet_id) {
            (Some(url), None) => url,
            (None, Some(id)) => {
                let base = base(self.base_url.as_ref(), "https://docs.google.com");
                let gid = self
                    .gid
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "0".into());
                format!("{base}/spreadsheets/d/{id}/export?format=csv&gid={gid}")
            }
            _ => return Err("give either `url` (the published CSV address) or `sheet_id`".into()),
        };
        let mut config = empty(&self.kind, url);
        config.response = Some(ResponseKind::Csv);
        copy_shared!(self, config);
        config.format = self.format;
        config.date = self.date;
        config.dimensions = self.dimensions;
        config.metrics = self.metrics;
        Ok(config)
    }
}

/// Names of the columns a GA4 page or a Metrica page has, in order: (dimensions, metrics).
fn columns(body: &Value, shape: &Shape) -> (Vec<String>, Vec<String>) {
    let names = |list: Option<&Value>, key: Option<&str>| -> Vec<String> {
        list.and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .map(|h| match key {
                        Some(key) => super::json::text(h.get(key)),
                        None => super::json::text(Some(h)),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    match shape {
        Shape::Metrica { .. } => {
            let query = body.get("query");
            (
                names(query.and_then(|q| q.get("dimensions")), None),
                names(query.and_then(|q| q.get("metrics")), None),
            )
        }
        _ => (
            names(body.get("dimensionHeaders"), Some("name")),
            names(body.get("metricHeaders"), Some("name")),
        ),
    }
}

/// Checks that a page has every column asked for (the answer names its columns, so their
/// order does not matter).
pub fn check_page(body: &Value, shape: &Shape, shown: &str) -> Result<(), String> {
    let (Shape::Ga4 {
        dimensions,
        metrics,
    }
    | Shape::Metrica {
        dimensions,
        metrics,
    }) = shape
    else {
        return Ok(());
    };
    let (got_d, got_m) = columns(body, shape);
    let records = match shape {
        Shape::Metrica { .. } => body.get("data"),
        _ => body.get("rows"),
    };
    let has_rows = records
        .and_then(|r| r.as_array())
        .is_some_and(|r| !r.is_empty());
    let missing: Vec<&String> = dimensions
        .iter()
        .filter(|d| !got_d.contains(d))
        .chain(metrics.iter().filter(|m| !got_m.contains(m)))
        .collect();
    if has_rows && !missing.is_empty() {
        return Err(format!(
            "{shown}: the report lacks the column(s) asked for: {}; it has {}",
            missing
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            got_d
                .iter()
                .chain(&got_m)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

/// One row of a GA4 or Metrica page as column name = cell text. GA4 metric values are cast
/// by their header type (durations in seconds).
pub fn named_row(row: &Value, body: &Value, shape: &Shape) -> BTreeMap<String, String> {
    let (dimension_names, metric_names) = columns(body, shape);
    let mut out = BTreeMap::new();
    match shape {
        Shape::Metrica { .. } => {
            let dims = row.get("dimensions").and_then(|v| v.as_array());
            for (name, value) in dimension_names.iter().zip(dims.into_iter().flatten()) {
                out.insert(name.clone(), super::json::text(value.get("name")));
            }
            let values = row.get("metrics").and_then(|v| v.as_array());
            for (name, value) in metric_names.iter().zip(values.into_iter().flatten()) {
                out.insert(name.clone(), super::json::text(Some(value)));
            }
        }
        _ => {
            let values = |key: &str| -> Vec<String> {
                row.get(key)
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .map(|v| super::json::text(v.get("value")))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for (name, value) in dimension_names.iter().zip(values("dimensionValues")) {
                out.insert(name.clone(), value);
            }
            let types: Vec<String> = body
                .get("metricHeaders")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().map(|h| super::json::text(h.get("type"))).collect())
                .unwrap_or_default();
            for (i, (name, value)) in metric_names.iter().zip(values("metricValues")).enumerate() {
                let factor = match types.get(i).map(String::as_str) {
                    Some("TYPE_MILLISECONDS") => Some(0.001),
                    Some("TYPE_MINUTES") => Some(60.0),
                    Some("TYPE_HOURS") => Some(3600.0),
                    _ => None,
                };
                let cell = match (factor, value.trim().parse::<f64>()) {
                    (Some(f), Ok(v)) => (v * f).to_string(),
                    _ => value,
                };
                out.insert(name.clone(), cell);
            }
        }
    }
    out
}

/// Exchanges a signed service-account assertion for an access token (OAuth 2.0 JWT bearer
/// grant), signed with `jsonwebtoken`. The token joins the run's secrets.
pub async fn service_account_token(
    http: &reqwest::Client,
    account: &ServiceAccount,
    ctx: &RunContext<'_>,
    secrets: &mut Secrets,
    policy: &Policy,
) -> Result<String, Failure> {
    let path = template::render(&account.key_file, &Vars::default(), secrets, Escape::None)?;
    let file = ctx.project_dir.join(Path::new(&path.real));
    let text = std::fs::read_to_string(&file).map_err(|err| {
        format!(
            "cannot read the service-account key file `{}`: {err}",
            path.shown
        )
    })?;
    let key: Value = serde_json::from_str(&text).map_err(|err| {
        format!(
            "the service-account key file `{}` is not JSON: {err}",
            path.shown
        )
    })?;
    let field = |name: &str| {
        key.get(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "the service-account key file `{}` has no `{name}`",
                    path.shown
                )
            })
    };
    let email = field("client_email")?;
    let private_key = field("private_key")?;
    secrets.add("service_account_private_key", private_key.clone());
    let token_url = match &account.token_url {
        Some(url) => url.clone(),
        None => field("token_uri")?,
    };
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": email,
        "scope": account.scope,
        "aud": token_url,
        "iat": now,
        "exp": now + 3600,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = key
        .get("private_key_id")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let signing = jsonwebtoken::EncodingKey::from_rsa_pem(private_key.as_bytes())
        .map_err(|err| format!("the private key in `{}` cannot be read: {err}", path.shown))?;
    let assertion = jsonwebtoken::encode(&header, &claims, &signing)
        .map_err(|err| format!("cannot sign the token request: {err}"))?;
    secrets.add("service_account_assertion", assertion.clone());
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
        .append_pair("assertion", &assertion)
        .finish();
    let request = Request {
        method: reqwest::Method::POST,
        url: token_url.clone(),
        shown: format!("POST {token_url}"),
        headers: vec![(
            "Content-Type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: Some(body),
    };
    let answer = client::send(http, &request, policy, secrets, ctx.cancel).await?;
    let answer: Value = serde_json::from_slice(&answer.body)
        .map_err(|err| format!("{}: the token answer is not JSON: {err}", request.shown))?;
    let token = answer
        .get("access_token")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("{}: the answer has no access_token", request.shown))?
        .to_string();
    secrets.add("access_token", token.clone());
    Ok(token)
}
