//! Service settings: built-in defaults, `config/default.toml`, an optional
//! `config/{KRSCORE_ENV}.toml`, then `KRSCORE__SECTION__KEY` environment variables.
//!
//! To add a setting, add a documented field with a default to one of the section structs; the
//! file check and the environment mapping pick it up without further code.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::project::problem::Problem;
use crate::project::toml_file::TomlFile;

/// All settings of a project.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where points and scores are stored.
    #[serde(default)]
    pub database: DatabaseSettings,
    /// How KRs are scored and graded.
    #[serde(default)]
    pub scoring: ScoringSettings,
    /// How connector runs treat bad rows.
    #[serde(default)]
    pub ingest: IngestSettings,
    /// Log format and level.
    #[serde(default)]
    pub log: LogSettings,
    /// OKR-practice advice given by `check` and the review.
    #[serde(default)]
    pub hygiene: HygieneSettings,
    /// The long-running `krscore run`.
    #[serde(default)]
    pub service: ServiceSettings,
}

/// `[service]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// Address of the `/healthz`, `/readyz` and `/metrics` listener; empty turns it off.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Most connector runs at the same time in one process.
    #[serde(default = "default_max_concurrent_runs")]
    pub max_concurrent_runs: usize,
    /// A connector run taking longer is aborted (and rolled back).
    #[serde(default = "default_run_timeout_secs")]
    pub run_timeout_secs: u64,
    /// On SIGTERM or SIGINT, running runs get this long to finish before they are aborted.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// With PostgreSQL: how long a replica's claim on a run lasts without a heartbeat.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// This replica's name in claims and runs (default: host name and process id).
    pub replica_id: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:9464".to_string()
}
fn default_max_concurrent_runs() -> usize {
    2
}
fn default_run_timeout_secs() -> u64 {
    3600
}
fn default_shutdown_grace_secs() -> u64 {
    30
}
fn default_lease_secs() -> u64 {
    60
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            listen: default_listen(),
            max_concurrent_runs: default_max_concurrent_runs(),
            run_timeout_secs: default_run_timeout_secs(),
            shutdown_grace_secs: default_shutdown_grace_secs(),
            lease_secs: default_lease_secs(),
            replica_id: None,
        }
    }
}

/// `[hygiene]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HygieneSettings {
    /// More objectives than this per owner and period is advised against.
    #[serde(default = "default_max_objectives")]
    pub max_objectives_per_owner: usize,
    /// Fewer key results per objective than this is advised against.
    #[serde(default = "default_min_krs")]
    pub min_krs: usize,
    /// More key results per objective than this is advised against.
    #[serde(default = "default_max_krs")]
    pub max_krs: usize,
    /// A target implying a smaller relative change than this is advised against.
    #[serde(default = "default_min_change")]
    pub min_change: f64,
    /// An owner whose final scores average at least this is not setting ambitious goals.
    #[serde(default = "default_sandbagging_from")]
    pub sandbagging_from: f64,
    /// An owner whose final scores average at most this sets unrealistic or blocked goals.
    #[serde(default = "default_unrealistic_below")]
    pub unrealistic_to: f64,
    /// How many reviewed periods the calibration looks back over.
    #[serde(default = "default_calibration_periods")]
    pub calibration_periods: usize,
}

fn default_max_objectives() -> usize {
    2
}
fn default_min_krs() -> usize {
    3
}
fn default_max_krs() -> usize {
    5
}
fn default_min_change() -> f64 {
    0.05
}
fn default_sandbagging_from() -> f64 {
    0.9
}
fn default_unrealistic_below() -> f64 {
    0.4
}
fn default_calibration_periods() -> usize {
    4
}

impl Default for HygieneSettings {
    fn default() -> Self {
        HygieneSettings {
            max_objectives_per_owner: default_max_objectives(),
            min_krs: default_min_krs(),
            max_krs: default_max_krs(),
            min_change: default_min_change(),
            sandbagging_from: default_sandbagging_from(),
            unrealistic_to: default_unrealistic_below(),
            calibration_periods: default_calibration_periods(),
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://FILE` (relative to the project directory), `sqlite::memory:`, or
    /// `postgres://user:password@host:port/database`.
    #[serde(default = "default_database_url")]
    pub url: String,
    /// Largest number of pooled connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

/// `[scoring]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringSettings {
    /// Time zone that decides "today" and the default time zone of objectives.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Scores below this are graded `red`.
    #[serde(default = "default_red_below")]
    pub red_below: f64,
    /// Scores at or above this are graded `green`; the rest `yellow`.
    #[serde(default = "default_green_from")]
    pub green_from: f64,
    /// A KR whose score is at least this share of its expected score is `on_track`.
    #[serde(default = "default_on_track_from")]
    pub on_track_from: f64,
    /// A KR whose score is at least this share of its expected score (but not on track) is
    /// `at_risk`; below it, `off_track`.
    #[serde(default = "default_at_risk_from")]
    pub at_risk_from: f64,
    /// A KR whose newest data point is more than this many days before the as-of day is
    /// marked `stale`.
    #[serde(default = "default_stale_after_days")]
    pub stale_after_days: u32,
    /// Recent days a gauge or ratio trend is fitted over for the forecast.
    #[serde(default = "default_trend_days")]
    pub trend_days: u32,
    /// A day whose value is more than this factor above (or below 1/factor of) the median of
    /// the days before it is flagged on the score row.
    #[serde(default = "default_jump_factor")]
    pub jump_factor: f64,
    /// How many days before a day make its history for the jump check.
    #[serde(default = "default_jump_history_days")]
    pub jump_history_days: u32,
    /// When `krscore run` scores all KRs for today, besides after every successful sync
    /// (crontab line, in `timezone`); empty turns it off.
    #[serde(default = "default_scoring_schedule")]
    pub schedule: String,
}

/// `[ingest]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// A run whose share of rejected rows exceeds this fails whole and writes no points.
    #[serde(default = "default_max_reject_share")]
    pub max_reject_share: f64,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` for people, `json` for log collectors.
    #[serde(default)]
    pub format: LogFormat,
    /// A level (`info`) or a filter (`krscore=debug,sqlx=warn`); `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_database_url() -> String {
    "sqlite://krscore.db".to_string()
}
fn default_max_connections() -> u32 {
    5
}
fn default_timezone() -> String {
    "UTC".to_string()
}
fn default_red_below() -> f64 {
    0.3
}
fn default_green_from() -> f64 {
    0.7
}
fn default_on_track_from() -> f64 {
    0.9
}
fn default_at_risk_from() -> f64 {
    0.6
}
fn default_stale_after_days() -> u32 {
    7
}
fn default_scoring_schedule() -> String {
    "15 6 * * *".to_string()
}
fn default_trend_days() -> u32 {
    14
}
fn default_jump_factor() -> f64 {
    5.0
}
fn default_jump_history_days() -> u32 {
    28
}
fn default_max_reject_share() -> f64 {
    0.1
}
fn default_log_level() -> String {
    "info".to_string()
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: default_database_url(),
            max_connections: default_max_connections(),
        }
    }
}

impl Default for ScoringSettings {
    fn default() -> Self {
        ScoringSettings {
            timezone: default_timezone(),
            red_below: default_red_below(),
            green_from: default_green_from(),
            on_track_from: default_on_track_from(),
            at_risk_from: default_at_risk_from(),
            stale_after_days: default_stale_after_days(),
            trend_days: default_trend_days(),
            jump_factor: default_jump_factor(),
            jump_history_days: default_jump_history_days(),
            schedule: default_scoring_schedule(),
        }
    }
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            max_reject_share: default_max_reject_share(),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

/// The settings files of a project, in the order they are layered.
pub fn settings_files(project_dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("config/default.toml")];
    if let Ok(env) = std::env::var("KRSCORE_ENV")
        && !env.is_empty()
    {
        files.push(PathBuf::from(format!("config/{env}.toml")));
    }
    files
        .into_iter()
        .filter(|f| project_dir.join(f).exists())
        .collect()
}

/// Loads and checks the layered settings, reporting every problem at once.
pub fn load(project_dir: &Path) -> Result<Settings, Vec<Problem>> {
    let files = settings_files(project_dir);
    let mut problems = Vec::new();

    // each file on its own first, so that problems carry a line number
    for file in &files {
        match TomlFile::read(&project_dir.join(file), file) {
            Ok(parsed) => {
                if let Err(mut found) = parsed.deserialize::<Settings>() {
                    problems.append(&mut found);
                }
            }
            Err(problem) => problems.push(problem),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let mut builder = config::Config::builder();
    for file in &files {
        builder = builder.add_source(
            config::File::from(project_dir.join(file)).format(config::FileFormat::Toml),
        );
    }
    builder = builder.add_source(
        config::Environment::with_prefix("KRSCORE")
            .separator("__")
            .try_parsing(true),
    );
    let environment_problem = |message: String| Problem {
        file: PathBuf::from("(environment)"),
        line: None,
        field: String::new(),
        message,
    };
    let settings: Settings = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|err| vec![environment_problem(format!("KRSCORE__* variables: {err}"))])?;

    validate(&settings, project_dir, &files).map(|()| settings)
}

/// Where a setting was last given: an environment variable, or a file and line.
fn locate(project_dir: &Path, files: &[PathBuf], field: &str) -> (PathBuf, Option<usize>, String) {
    let variable = format!("KRSCORE__{}", field.replace('.', "__").to_uppercase());
    if std::env::var_os(&variable).is_some() {
        return (PathBuf::from("(environment)"), None, variable);
    }
    for file in files.iter().rev() {
        if let Ok(parsed) = TomlFile::read(&project_dir.join(file), file) {
            let mut path = crate::project::toml_file::KeyPath::root();
            for part in field.split('.') {
                path = path.key(part);
            }
            let found = field
                .split('.')
                .try_fold(parsed.value(), |v, part| v.get(part))
                .is_some();
            if found {
                return (file.clone(), parsed.line_of_path(&path), field.to_string());
            }
        }
    }
    let default = files
        .last()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("config/default.toml"));
    (default, None, field.to_string())
}

fn validate(
    settings: &Settings,
    project_dir: &Path,
    files: &[PathBuf],
) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    let mut problem = |field: &str, message: String| {
        let (file, line, field) = locate(project_dir, files, field);
        problems.push(Problem {
            file,
            line,
            field,
            message,
        })
    };
    if settings.scoring.timezone.parse::<chrono_tz::Tz>().is_err() {
        problem(
            "scoring.timezone",
            format!(
                "unknown time zone `{}` (use an IANA name)",
                settings.scoring.timezone
            ),
        );
    }
    let s = &settings.scoring;
    if !(0.0 <= s.red_below && s.red_below <= s.green_from && s.green_from <= 1.0) {
        problem(
            "scoring.red_below",
            "grade bands need 0 <= red_below <= green_from <= 1".into(),
        );
    }
    if !(0.0 <= s.at_risk_from && s.at_risk_from <= s.on_track_from) {
        problem(
            "scoring.at_risk_from",
            "pace thresholds need 0 <= at_risk_from <= on_track_from".into(),
        );
    }
    if !(0.0..=1.0).contains(&settings.ingest.max_reject_share) {
        problem("ingest.max_reject_share", "must be between 0 and 1".into());
    }
    if !valid_log_level(&settings.log.level) {
        problem(
            "log.level",
            format!(
                "`{}` is not a level (error, warn, info, debug, trace) or a filter such as \
                 `krscore=debug`",
                settings.log.level
            ),
        );
    }
    if !settings.scoring.schedule.trim().is_empty()
        && let Ok(tz) = settings.scoring.timezone.parse::<chrono_tz::Tz>()
        && let Err(err) = crate::schedule::CronSchedule::parse(&settings.scoring.schedule, tz)
    {
        problem("scoring.schedule", err);
    }
    let listen = &settings.service.listen;
    if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
        problem(
            "service.listen",
            format!("`{listen}` is not an address such as 127.0.0.1:9464"),
        );
    }
    if settings.service.max_concurrent_runs == 0 {
        problem("service.max_concurrent_runs", "must be at least 1".into());
    }
    if settings.service.lease_secs < 3 {
        problem("service.lease_secs", "must be at least 3".into());
    }
    let url = &settings.database.url;
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        problem(
            "database.url",
            "must start with sqlite:// (a file), sqlite::memory: or postgres://".into(),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// A level, or comma-separated `target=level` directives.
fn valid_log_level(text: &str) -> bool {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |l: &str| LEVELS.contains(&l.trim().to_lowercase().as_str());
    !text.trim().is_empty()
        && tracing_subscriber::EnvFilter::try_new(text).is_ok()
        && text
            .split(',')
            .all(|directive| match directive.rsplit_once('=') {
                Some((_, level)) => is_level(level),
                None => is_level(directive),
            })
}

/// The URL with any password replaced, for logs and messages.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => base.to_string(),
            },
            None => base.to_string(),
        },
        None => base.to_string(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_lowercase();
    [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "sslpassword",
        "key",
    ]
    .iter()
    .any(|s| key.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_shown() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite://krscore.db"), "sqlite://krscore.db");
        assert_eq!(
            redact_url("postgres://bob@h:1/x?sslmode=disable&password=S3cret"),
            "postgres://bob@h:1/x?sslmode=disable&password=***"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
    }
}
