//! A krscore project directory: settings, the metric catalogue, connector files and OKR
//! files, loaded and checked together so that every problem is reported in one go.
//!
//! To check something new, add it to the `check_*` function of the file it concerns and
//! locate it with [`TomlFile::problem`] so the message names file, line and field.

mod http_check;
pub mod okr_check;
pub mod problem;
pub mod toml_file;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::connector::csv::{CsvConfig, DateFormat, MetricColumn, parse_delimiter};
use crate::connector::http::HttpConfig;
use crate::connector::{Connector, ConnectorKind, KINDS};
use crate::metrics::{Catalogue, Formula, Metric, MetricKind, RawKind, RawMetric, Rollup};
use crate::okr::{KeyResult, Objective, Period, RawOkrFile, Window};
use crate::settings::{self, Settings};
use problem::{ConfigErrors, Problem, with_hint};
use toml_file::{KeyPath, TomlFile};

/// Everything a project defines.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub settings: Settings,
    pub catalogue: Catalogue,
    pub connectors: Vec<Connector>,
    pub objectives: Vec<Objective>,
    /// SHA-256 of the metric and OKR files, recorded with every score.
    pub definition_hash: String,
    /// Advice that does not stop anything (OKR hygiene, empty globs).
    pub warnings: Vec<Problem>,
}

impl Project {
    /// Loads and checks every file of the project, reporting all problems together.
    pub fn load(root: &Path) -> Result<Project, ConfigErrors> {
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        if !root.is_dir() {
            return Err(ConfigErrors(vec![Problem {
                file: root.to_path_buf(),
                line: None,
                field: String::new(),
                message: "project directory not found".into(),
            }]));
        }

        let settings = settings::load(root).unwrap_or_else(|mut found| {
            problems.append(&mut found);
            Settings::default()
        });
        let default_tz = settings.scoring.timezone.clone();
        let mut hasher = Sha256::new();
        // the default time zone shapes objective windows too
        hasher.update(default_tz.as_bytes());

        let catalogue = load_catalogue(root, &mut problems, &mut hasher);
        let connectors =
            load_connectors(root, &catalogue, &default_tz, &mut problems, &mut warnings);
        let objectives = load_objectives(
            root,
            &catalogue,
            &connectors,
            &settings,
            &mut problems,
            &mut warnings,
            &mut hasher,
        );

        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        let definition_hash = format!("{:x}", hasher.finalize());
        Ok(Project {
            root: root.to_path_buf(),
            settings,
            catalogue,
            connectors,
            objectives,
            definition_hash,
            warnings,
        })
    }

    pub fn connector(&self, name: &str) -> Option<&Connector> {
        self.connectors.iter().find(|c| c.name == name)
    }

    pub fn key_results(&self) -> impl Iterator<Item = (&Objective, &KeyResult)> {
        self.objectives
            .iter()
            .flat_map(|o| o.key_results.iter().map(move |k| (o, k)))
    }

    /// The database URL with a relative SQLite path resolved against the project directory.
    pub fn database_url(&self) -> String {
        let url = &self.settings.database.url;
        let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        else {
            return url.clone();
        };
        // SQLite's own names for a database in memory, written as a file
        if matches!(path.split('?').next(), Some("file::memory:" | ":memory:")) {
            return "sqlite::memory:".to_string();
        }
        if path.starts_with(':') || Path::new(path).is_absolute() {
            return url.clone();
        }
        let (file, query) = match path.split_once('?') {
            Some((f, q)) => (f, format!("?{q}")),
            None => (path, String::new()),
        };
        format!("sqlite://{}{query}", self.root.join(file).display())
    }
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).unwrap_or(path).to_path_buf()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
}

fn load_catalogue(root: &Path, problems: &mut Vec<Problem>, hasher: &mut Sha256) -> Catalogue {
    let shown = PathBuf::from("config/metrics.toml");
    let file = match TomlFile::read(&root.join(&shown), &shown) {
        Ok(file) => file,
        Err(problem) => {
            problems.push(problem);
            return Catalogue::default();
        }
    };
    hasher.update(file.text().as_bytes());
    let (raw, mut found) = file.deserialize_lenient::<BTreeMap<String, RawMetric>>();
    problems.append(&mut found);
    let Some(raw) = raw else {
        return Catalogue::default();
    };

    let mut catalogue = Catalogue::default();
    for (name, metric) in &raw {
        let at = KeyPath::root().key(name);
        if !valid_name(name) {
            problems.push(file.problem(
                &at,
                format!("metric name `{name}`: use lower case letters, digits and `_`"),
            ));
        }
        let kind = match metric.kind {
            RawKind::Counter | RawKind::Derived if metric.rollup.is_some() => {
                problems.push(file.problem(&at.key("rollup"), "only gauges have a rollup"));
                continue;
            }
            RawKind::Counter | RawKind::Gauge if metric.formula.is_some() => {
                problems.push(file.problem(
                    &at.key("formula"),
                    "only derived metrics have a formula (set kind = \"derived\")",
                ));
                continue;
            }
            RawKind::Counter => MetricKind::Counter,
            RawKind::Gauge => MetricKind::Gauge(metric.rollup.unwrap_or(Rollup::Last)),
            RawKind::Derived => {
                let Some(text) = &metric.formula else {
                    problems.push(file.problem(&at, "a derived metric needs a `formula`"));
                    continue;
                };
                match Formula::parse(text) {
                    Ok(formula) => {
                        for dep in formula.metric_names() {
                            if !raw.contains_key(&dep) {
                                problems.push(file.problem(
                                    &at.key("formula"),
                                    with_hint(
                                        format!("formula uses unknown metric `{dep}`"),
                                        &dep,
                                        raw.keys().map(String::as_str),
                                    ),
                                ));
                            }
                        }
                        MetricKind::Derived(formula)
                    }
                    Err(err) => {
                        problems
                            .push(file.problem(&at.key("formula"), format!("bad formula: {err}")));
                        continue;
                    }
                }
            }
        };
        catalogue.metrics.insert(
            name.clone(),
            Metric {
                name: name.clone(),
                kind,
                unit: metric.unit.clone(),
                description: metric.description.clone(),
            },
        );
    }
    for name in catalogue.cycles() {
        problems.push(file.problem(
            &KeyPath::root().key(&name).key("formula"),
            format!("`{name}` depends on itself"),
        ));
    }
    catalogue
}

fn load_connectors(
    root: &Path,
    catalogue: &Catalogue,
    default_tz: &str,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Vec<Connector> {
    let mut connectors = Vec::new();
    for path in toml_files(&root.join("connectors")) {
        let shown = relative(root, &path);
        let file = match TomlFile::read(&path, &shown) {
            Ok(file) => file,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let kind = file
            .value()
            .get("type")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let at_type = KeyPath::root().key("type");
        let connector = match kind.as_deref() {
            None => {
                problems.push(file.problem(
                    &at_type,
                    format!("missing `type`; one of: {}", KINDS.join(", ")),
                ));
                continue;
            }
            Some("csv") => {
                let (mut config, mut found) = file.deserialize_lenient::<CsvConfig>();
                if let Some(config) = &mut config {
                    config.counters = counters(catalogue, &config.metrics);
                }
                let clean = found.is_empty();
                problems.append(&mut found);
                config.and_then(|config| {
                    let tz = check_csv(
                        &file, &config, catalogue, default_tz, problems, warnings, root,
                    )?;
                    clean.then(|| Connector {
                        name: name.clone(),
                        file: shown.display().to_string(),
                        timezone: tz,
                        kind: ConnectorKind::Csv(Box::new(config)),
                    })
                })
            }
            Some(
                kind @ ("http" | "ga4" | "yandex_metrica" | "yandex_direct" | "google_sheets"),
            ) => {
                let (config, clean) = match http_config(&file, kind, &name, problems) {
                    Some((config, clean)) => (config, clean),
                    None => continue,
                };
                let mut config = config;
                config.prepare();
                config.table.counters = counters(catalogue, &config.table.metrics);
                let preset = kind != "http" && kind != "google_sheets";
                let metric_path = |i: usize, name: &str| {
                    if preset {
                        KeyPath::root().key("metrics").key(name)
                    } else {
                        KeyPath::root().key("metrics").index(i)
                    }
                };
                let before = problems.len();
                let tz = check_table(
                    &file,
                    &config.table,
                    catalogue,
                    default_tz,
                    problems,
                    &metric_path,
                );
                http_check::check(&file, &config, kind, root, problems, warnings);
                (clean && problems.len() == before).then(|| Connector {
                    name: name.clone(),
                    file: shown.display().to_string(),
                    timezone: tz.unwrap_or(chrono_tz::UTC),
                    kind: ConnectorKind::Http(Box::new(config)),
                })
            }
            Some(other) => {
                problems.push(file.problem(
                    &at_type,
                    with_hint(
                        format!("unknown connector type `{other}`"),
                        other,
                        KINDS.iter().copied(),
                    ),
                ));
                None
            }
        };
        connectors.extend(connector);
    }
    connectors
}

/// The counters among a connector's metrics (their totals rows are checked).
fn counters(catalogue: &Catalogue, metrics: &[MetricColumn]) -> BTreeSet<String> {
    metrics
        .iter()
        .filter(|m| {
            matches!(
                catalogue.get(&m.name).map(|c| &c.kind),
                Some(MetricKind::Counter)
            )
        })
        .map(|m| m.name.clone())
        .collect()
}

/// Reads an `http` connector or a preset, expanded to an HTTP connector; the flag says
/// whether it read without problems.
fn http_config(
    file: &TomlFile,
    kind: &str,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Option<(HttpConfig, bool)> {
    fn read<T: serde::de::DeserializeOwned>(
        file: &TomlFile,
        problems: &mut Vec<Problem>,
    ) -> Option<(T, bool)> {
        let (config, mut found) = file.deserialize_lenient::<T>();
        let clean = found.is_empty();
        problems.append(&mut found);
        config.map(|c| (c, clean))
    }
    use crate::connector::http::presets;
    match kind {
        "http" => read::<HttpConfig>(file, problems),
        "ga4" => {
            let (c, ok) = read::<presets::Ga4Preset>(file, problems)?;
            let ok = ok
                && id_ok(file, &c.property, "property", problems)
                && dimensions_ok(file, &c.dimensions, "date", problems);
            Some((c.expand(), ok))
        }
        "yandex_metrica" => {
            let (c, ok) = read::<presets::MetricaPreset>(file, problems)?;
            let ok = ok
                && id_ok(file, &c.counter, "counter", problems)
                && dimensions_ok(file, &c.dimensions, "ym:s:date", problems);
            Some((c.expand(), ok))
        }
        "yandex_direct" => {
            let (c, ok) = read::<presets::DirectPreset>(file, problems)?;
            let ok = ok && dimensions_ok(file, &c.dimensions, "Date", problems);
            Some((c.expand(name), ok))
        }
        _ => {
            let (config, ok) = read::<presets::SheetsPreset>(file, problems)?;
            match config.expand() {
                Ok(config) => Some((config, ok)),
                Err(message) => {
                    problems.push(file.problem(&KeyPath::root().key("url"), message));
                    None
                }
            }
        }
    }
}

/// A preset asks for each platform dimension once, and always asks for the day itself.
fn dimensions_ok(
    file: &TomlFile,
    dimensions: &BTreeMap<String, String>,
    day: &str,
    problems: &mut Vec<Problem>,
) -> bool {
    let before = problems.len();
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, field) in dimensions {
        let at = KeyPath::root().key("dimensions").key(name);
        if field == day {
            problems.push(file.problem(
                &at,
                format!("`{day}` is always asked for: it gives each point its day"),
            ));
        } else if let Some(first) = seen.insert(field, name) {
            problems.push(file.problem(
                &at,
                format!("`{field}` is already asked for as dimension `{first}`"),
            ));
        }
    }
    problems.len() == before
}

/// A platform id must be a whole number.
fn id_ok(
    file: &TomlFile,
    id: &crate::connector::http::presets::Id,
    key: &str,
    problems: &mut Vec<Problem>,
) -> bool {
    if id.is_number() {
        return true;
    }
    problems.push(file.problem(
        &KeyPath::root().key(key),
        format!("`{id}` is not an id: write the number the platform shows, such as 12345678"),
    ));
    false
}

/// Checks a CSV connector; returns its time zone when it is usable.
fn check_csv(
    file: &TomlFile,
    config: &CsvConfig,
    catalogue: &Catalogue,
    default_tz: &str,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
    root: &Path,
) -> Option<chrono_tz::Tz> {
    let before = problems.len();
    let at = KeyPath::root();
    if let Err(err) = glob::Pattern::new(&config.path) {
        problems.push(file.problem(&at.key("path"), format!("bad path pattern: {err}")));
    } else if config.files(root).map(|f| f.is_empty()).unwrap_or(false) {
        warnings.push(file.problem(
            &at.key("path"),
            format!("no file matches `{}` yet", config.path),
        ));
    }
    let tz = check_table(file, config, catalogue, default_tz, problems, &|i, _| {
        at.key("metrics").index(i)
    });
    (problems.len() == before).then_some(tz).flatten()
}

/// Checks what every connector reading a table shares: time zone, schedule, format, date,
/// dimensions and metrics. Returns the time zone when these are usable.
fn check_table(
    file: &TomlFile,
    config: &CsvConfig,
    catalogue: &Catalogue,
    default_tz: &str,
    problems: &mut Vec<Problem>,
    metric_path: &dyn Fn(usize, &str) -> KeyPath,
) -> Option<chrono_tz::Tz> {
    let before = problems.len();
    let at = KeyPath::root();
    let tz = match &config.timezone {
        Some(name) => match name.parse::<chrono_tz::Tz>() {
            Ok(tz) => tz,
            Err(_) => {
                problems.push(file.problem(
                    &at.key("timezone"),
                    format!("unknown time zone `{name}` (use an IANA name such as Europe/Moscow)"),
                ));
                chrono_tz::UTC
            }
        },
        None => default_tz.parse().unwrap_or(chrono_tz::UTC),
    };
    if let Some(line) = config.schedule.as_deref().filter(|l| !l.trim().is_empty())
        && let Err(err) = crate::schedule::CronSchedule::parse(line, tz)
    {
        problems.push(file.problem(&at.key("schedule"), err));
    }
    let format = &config.format;
    if let Some(d) = &format.delimiter
        && parse_delimiter(d).is_none()
    {
        problems.push(file.problem(
            &at.key("format").key("delimiter"),
            format!("`{d}` is not a delimiter; use \",\", \";\", \"|\" or \"\\t\""),
        ));
    }
    for (key, value) in [
        ("encoding", &format.encoding),
        ("fallback_encoding", &format.fallback_encoding),
    ] {
        if let Some(enc) = value
            && !(key == "encoding" && enc.eq_ignore_ascii_case("auto"))
            && encoding_rs::Encoding::for_label(enc.as_bytes()).is_none()
        {
            problems.push(file.problem(
                &at.key("format").key(key),
                format!("unknown encoding `{enc}` (for example utf-8, windows-1251, utf-16le)"),
            ));
        }
    }
    if format.table == Some(0) {
        problems.push(file.problem(&at.key("format").key("table"), "tables count from 1"));
    }
    if let Some(zone) = &config.date.timestamps_in
        && zone.parse::<chrono_tz::Tz>().is_err()
    {
        problems.push(file.problem(
            &at.key("date").key("timestamps_in"),
            format!("unknown time zone `{zone}`"),
        ));
    }
    match (&config.date.column, &config.date.start, &config.date.end) {
        (Some(_), None, None) | (None, None, None) => {}
        (None, Some(start), Some(end)) => {
            if !matches!((start.parse(), end.parse()), (Some(s), Some(e)) if s <= e) {
                problems.push(file.problem(
                    &at.key("date").key("start"),
                    "start and end must be YYYY-MM-DD dates with start <= end",
                ));
            }
        }
        (Some(_), _, _) => problems.push(file.problem(
            &at.key("date"),
            "give either `column` or the `start` and `end` of the period the report covers",
        )),
        (None, _, _) => {
            problems.push(file.problem(&at.key("date"), "a period needs both `start` and `end`"))
        }
    }
    if let Some(dec) = &format.decimal
        && dec != "."
        && dec != ","
    {
        problems.push(file.problem(
            &at.key("format").key("decimal"),
            "decimal must be \".\" or \",\"",
        ));
    }
    if let Some(f) = &config.date.format
        && let Err(err) = DateFormat::new(f)
    {
        problems.push(file.problem(&at.key("date").key("format"), err));
    }
    for name in config.dimensions.keys().chain(config.constants.keys()) {
        if !valid_name(name) {
            problems.push(file.problem(
                &at.key("dimensions").key(name),
                format!("dimension name `{name}`: use lower case letters, digits and `_`"),
            ));
        }
    }
    for name in config.constants.keys() {
        if config.dimensions.contains_key(name) {
            problems.push(file.problem(
                &at.key("constants").key(name),
                format!("`{name}` is both a dimension column and a constant"),
            ));
        }
    }
    if config.metrics.is_empty() {
        problems.push(file.problem(&at, "no [[metrics]]: the connector would load nothing"));
    }
    let mut seen = BTreeSet::new();
    for (i, metric) in config.metrics.iter().enumerate() {
        let at_metric = metric_path(i, &metric.name);
        match catalogue.get(&metric.name) {
            None if !catalogue.metrics.is_empty() => problems.push(file.problem(
                &at_metric.key("name"),
                with_hint(
                    format!("unknown metric `{}`", metric.name),
                    &metric.name,
                    catalogue.names(),
                ),
            )),
            Some(m) if matches!(m.kind, MetricKind::Derived(_)) => problems.push(file.problem(
                &at_metric.key("name"),
                format!(
                    "`{}` is derived: load the metrics of its formula instead",
                    metric.name
                ),
            )),
            _ => {}
        }
        if !seen.insert(metric.name.clone()) {
            problems.push(file.problem(
                &at_metric.key("name"),
                format!("`{}` is loaded twice by this connector", metric.name),
            ));
        }
        match (&metric.column, &metric.count) {
            (Some(_), None) => {}
            (None, Some(count)) if count == "rows" => {}
            (None, Some(count)) => problems.push(file.problem(
                &at_metric.key("count"),
                format!("count = `{count}`: the only counting rule is \"rows\""),
            )),
            (Some(_), Some(_)) => problems.push(file.problem(
                &at_metric,
                "give either `column` or `count = \"rows\"`, not both",
            )),
            (None, None) => problems
                .push(file.problem(&at_metric, "give `column = \"...\"` or `count = \"rows\"`")),
        }
        for (column, filter) in &metric.filter {
            if let crate::connector::csv::CellFilter::Range {
                min: None,
                max: None,
            } = filter
            {
                problems.push(file.problem(
                    &at_metric.key("where").key(column),
                    "a range needs `min`, `max` or both",
                ));
            }
        }
        if metric.times.is_some() && metric.column.is_none() {
            problems.push(file.problem(&at_metric.key("times"), "`times` needs a `column`"));
        }
        if let Some(scale) = metric.scale
            && !(scale.is_finite() && scale != 0.0)
        {
            problems.push(file.problem(&at_metric.key("scale"), "scale must be a non-zero number"));
        }
    }
    (problems.len() == before).then_some(tz)
}

fn load_objectives(
    root: &Path,
    catalogue: &Catalogue,
    connectors: &[Connector],
    settings: &Settings,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
    hasher: &mut Sha256,
) -> Vec<Objective> {
    let default_tz = settings.scoring.timezone.as_str();
    let hygiene = &settings.hygiene;
    // which dimensions each base metric can be filtered by
    let mut dimensions: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut varying: HashMap<String, BTreeSet<String>> = HashMap::new();
    for connector in connectors {
        for metric in connector.metric_names() {
            dimensions
                .entry(metric.clone())
                .or_default()
                .extend(connector.dimension_names());
            varying
                .entry(metric)
                .or_default()
                .extend(connector.varying_dimensions());
        }
    }

    let mut stale_limits: HashMap<String, u32> = HashMap::new();
    for connector in connectors {
        if let Some(limit) = connector.stale_after_days() {
            for metric in connector.metric_names() {
                let entry = stale_limits.entry(metric).or_insert(limit);
                *entry = (*entry).max(limit);
            }
        }
    }
    let context = okr_check::KrContext {
        catalogue,
        catalogue_ok: !catalogue.metrics.is_empty(),
        dimensions: &dimensions,
        varying: &varying,
        stale_limits: &stale_limits,
        hygiene,
    };

    let mut objectives: Vec<Objective> = Vec::new();
    let mut objective_ids: BTreeSet<String> = BTreeSet::new();
    // each KR id with the file (an index into `loaded`) and key it was first seen at: its
    // line is looked up only when the id comes again
    let mut kr_ids: BTreeMap<String, (usize, KeyPath)> = BTreeMap::new();
    let mut loaded: Vec<TomlFile> = Vec::new();
    let files = toml_files(&root.join("config/okrs"));
    if files.is_empty() {
        warnings.push(Problem {
            file: PathBuf::from("config/okrs"),
            line: None,
            field: String::new(),
            message: "no OKR files: nothing will be scored".into(),
        });
    }
    for path in files {
        let shown = relative(root, &path);
        let file = match TomlFile::read(&path, &shown) {
            Ok(file) => file,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        hasher.update(shown.to_string_lossy().as_bytes());
        hasher.update(file.text().as_bytes());
        let (raw, mut found) = file.deserialize_lenient::<RawOkrFile>();
        problems.append(&mut found);
        let Some(raw) = raw else { continue };
        for (oi, o) in raw.objective.iter().enumerate() {
            let at = KeyPath::root().key("objective").index(oi);
            if !objective_ids.insert(o.id.clone()) {
                problems.push(file.problem(
                    &at.key("id"),
                    format!("objective id `{}` is used twice", o.id),
                ));
            }
            let period = match (&o.period, &o.start, &o.end) {
                (Some(text), None, None) => Period::parse(text).or_else(|| {
                    problems.push(file.problem(
                        &at.key("period"),
                        format!(
                            "period `{text}`: write 2027-Q1, 2027-03 or 2027, or give start and end"
                        ),
                    ));
                    None
                }),
                (None, Some(start), Some(end)) => match (start.parse(), end.parse()) {
                    (Some(start), Some(end)) if start <= end => {
                        Some(Period::Dates(Window { start, end }))
                    }
                    _ => {
                        problems.push(file.problem(
                            &at.key("start"),
                            "start and end must be YYYY-MM-DD dates with start <= end",
                        ));
                        None
                    }
                },
                _ => {
                    problems.push(file.problem(&at, "give `period`, or `start` and `end`"));
                    None
                }
            };
            let timezone = o.timezone.clone().unwrap_or_else(|| default_tz.to_string());
            if timezone.parse::<chrono_tz::Tz>().is_err() {
                problems.push(file.problem(
                    &at.key("timezone"),
                    format!("unknown time zone `{timezone}`"),
                ));
            }
            // without a valid period the KRs are still checked; only their windows are not
            let mut key_results = Vec::new();
            for (ki, k) in o.key_result.iter().enumerate() {
                let at_kr = at.key("key_result").index(ki);
                let at_id = at_kr.key("id");
                if let Some((index, first_at)) = kr_ids.get(&k.id) {
                    let first_file = loaded.get(*index).unwrap_or(&file);
                    let first = format!(
                        "{}:{}",
                        first_file.display_path.display(),
                        first_file.line_of_path(first_at).unwrap_or(0)
                    );
                    problems.push(file.problem(
                        &at_id,
                        format!("key result id `{}` is used twice (first at {first})", k.id),
                    ));
                } else {
                    kr_ids.insert(k.id.clone(), (loaded.len(), at_id.clone()));
                }
                let mut checker = okr_check::KrChecker {
                    file: &file,
                    context: &context,
                    problems,
                    warnings,
                };
                key_results.extend(checker.check(&at_kr, k, &o.id, period));
            }

            let count = o.key_result.len();
            if !(hygiene.min_krs..=hygiene.max_krs).contains(&count) {
                warnings.push(file.problem(
                    &at,
                    format!(
                        "objective `{}` has {count} key result(s); {} to {} keep it focused",
                        o.id, hygiene.min_krs, hygiene.max_krs
                    ),
                ));
            }
            let Some(period) = period else { continue };
            objectives.push(Objective {
                id: o.id.clone(),
                title: o.title.clone(),
                owner: o.owner.clone(),
                period,
                timezone,
                key_results,
                file: shown.display().to_string(),
            });
        }
        loaded.push(file);
    }

    // hygiene: 1-2 objectives per owner per period
    let mut per_owner: BTreeMap<(String, String), usize> = BTreeMap::new();
    for o in &objectives {
        if let Some(owner) = &o.owner {
            *per_owner
                .entry((owner.clone(), o.period.label()))
                .or_default() += 1;
        }
    }
    for ((owner, period), n) in per_owner {
        if n > hygiene.max_objectives_per_owner {
            warnings.push(Problem {
                file: PathBuf::from("config/okrs"),
                line: None,
                field: String::new(),
                message: format!(
                    "{owner} owns {n} objectives in {period}; 1-2 per team keep the focus"
                ),
            });
        }
    }
    objectives
}
