//! CSV and TSV exports: a file or a glob of files read with polars, cleaned column by column
//! and aggregated to daily points.
//!
//! Reading goes in steps: decode the bytes to UTF-8, sniff the dialect (delimiter, preamble),
//! let polars read every cell as text, parse dates once per distinct value, turn number cells
//! into floats with the column's own locale, set aside rows that cannot be read, and sum the
//! rest by day and dimensions. To support a new export quirk, extend the step it belongs to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use polars::prelude::*;
use serde::Deserialize;

use super::{ConnectorError, Extract, Point, RejectedRow, Source};
use crate::okr::OneOrMany;

/// Cells that mean "no value" in exports.
pub const PLACEHOLDERS: &[&str] = &[
    "--", "-", "—", "–", "N/A", "n/a", "NA", "#N/A", "#DIV/0!", "null",
];

/// A `type = "csv"` connector file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// Always `csv` here.
    #[serde(rename = "type")]
    pub kind: String,
    /// A file or a glob (`data/ads_*.csv`), relative to the project directory.
    pub path: String,
    /// IANA time zone of the export's days and timestamps (default: the scoring time zone).
    pub timezone: Option<String>,
    /// What the source is, for people.
    pub description: Option<String>,
    /// Cron schedule for `krscore run` (used by the service).
    pub schedule: Option<String>,
    /// How the file is written; every key is detected when absent.
    #[serde(default)]
    pub format: CsvFormat,
    /// Which column holds the day.
    pub date: DateColumn,
    /// Dimension name = column name.
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// Dimension name = fixed value for every point of this connector.
    #[serde(default)]
    pub constants: BTreeMap<String, String>,
    /// Metrics read from the file.
    #[serde(default)]
    pub metrics: Vec<MetricColumn>,
}

/// `[format]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvFormat {
    /// `,` `;` `|` or `\t` (also `tab`); detected when absent.
    pub delimiter: Option<String>,
    /// `auto` (default: BOM, else UTF-8), `utf-8`, `windows-1251`, `utf-16le`, ...
    pub encoding: Option<String>,
    /// Decimal mark, `.` or `,`; detected per column when absent.
    pub decimal: Option<String>,
    /// Thousands separator(s), such as `,` or `" "`; detected when absent.
    pub thousands: Option<String>,
    /// Lines before the header row; by default `#` comment lines and a `sep=` line are skipped.
    pub skip_lines: Option<usize>,
}

/// `[date]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateColumn {
    /// The column holding the date or timestamp.
    pub column: String,
    /// chrono format such as `%d.%m.%Y` or `%Y-%m-%d %H:%M:%S`; detected among unambiguous
    /// formats when absent.
    pub format: Option<String>,
}

/// `[[metrics]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricColumn {
    /// A counter or gauge of `config/metrics.toml`.
    pub name: String,
    /// The column holding the value.
    pub column: Option<String>,
    /// `rows`: each row counts one (for exports with a row per lead, order or answer).
    pub count: Option<String>,
    /// Only rows whose columns hold these values (trimmed text) feed the metric.
    #[serde(rename = "where", default)]
    pub filter: BTreeMap<String, OneOrMany>,
    /// Multiply values by this (e.g. `0.000001` for money in micros).
    pub scale: Option<f64>,
}

/// Date formats tried, in order, when none is configured; ambiguous ones are never guessed.
const DATE_FORMATS: &[&str] = &[
    "%Y-%m-%d",
    "%Y%m%d",
    "%d.%m.%Y",
    "%Y/%m/%d",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%:z",
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%d %H:%M:%S%:z",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%B %d, %Y",
    "%b %d, %Y",
];

/// How one date cell is read.
#[derive(Debug, Clone)]
pub struct DateFormat {
    pub format: String,
    has_time: bool,
    has_offset: bool,
}

impl DateFormat {
    pub fn new(format: &str) -> Result<DateFormat, String> {
        use chrono::format::{Item, StrftimeItems};
        if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
            return Err(format!("`{format}` is not a valid date format"));
        }
        let has = |specs: &[&str]| specs.iter().any(|s| format.contains(s));
        let has_date = has(&["%Y", "%y", "%C"]) && has(&["%m", "%b", "%B", "%h", "%j"])
            || has(&["%F", "%D", "%x", "%s"]);
        if !has_date {
            return Err(format!(
                "`{format}` does not give a full date (year, month and day)"
            ));
        }
        Ok(DateFormat {
            format: format.to_string(),
            has_time: has(&["%H", "%I", "%M", "%S", "%T", "%R", "%s"]),
            has_offset: has(&["%z", "%:z", "%#z", "%Z"]),
        })
    }

    /// The calendar day of `text` in `tz`.
    pub fn day(&self, text: &str, tz: chrono_tz::Tz) -> Option<NaiveDate> {
        let text = text.trim();
        if self.has_offset {
            let at = DateTime::parse_from_str(text, &self.format).ok()?;
            Some(at.with_timezone(&tz).date_naive())
        } else if self.has_time {
            NaiveDateTime::parse_from_str(text, &self.format)
                .ok()
                .map(|t| t.date())
        } else {
            NaiveDate::parse_from_str(text, &self.format).ok()
        }
    }
}

/// The dialect of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialect {
    pub delimiter: u8,
    pub skip_lines: usize,
}

impl CsvConfig {
    /// The files the glob matches, sorted by name.
    pub fn files(&self, project_dir: &Path) -> Result<Vec<PathBuf>, String> {
        let pattern = project_dir.join(&self.path);
        let pattern = pattern.to_string_lossy();
        let paths = glob::glob(&pattern).map_err(|err| format!("bad path pattern: {err}"))?;
        let mut files: Vec<PathBuf> = paths
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        Ok(files)
    }

    fn delimiter(&self) -> Option<u8> {
        self.format.delimiter.as_deref().and_then(parse_delimiter)
    }
}

/// `,` `;` `|` `\t` / `tab` as a byte.
pub fn parse_delimiter(text: &str) -> Option<u8> {
    match text {
        "\\t" | "\t" | "tab" => Some(b'\t'),
        s if s.len() == 1 && s.is_ascii() => Some(s.as_bytes()[0]),
        _ => None,
    }
}

impl Source for CsvConfig {
    fn extract(
        &self,
        project_dir: &Path,
        timezone: chrono_tz::Tz,
    ) -> Result<Extract, ConnectorError> {
        let files = self.files(project_dir).map_err(ConnectorError::Source)?;
        if files.is_empty() {
            return Err(ConnectorError::Source(format!(
                "no file matches `{}`",
                self.path
            )));
        }

        let mut extract = Extract::default();
        for file in &files {
            let shown = file
                .strip_prefix(project_dir)
                .unwrap_or(file)
                .display()
                .to_string();
            let one = read_file(self, file, &shown, timezone)?;

            // a later file restates the days it covers
            let overlap: BTreeSet<NaiveDate> =
                one.days.intersection(&extract.days).copied().collect();
            if !overlap.is_empty() {
                extract.points.retain(|p| !overlap.contains(&p.day));
                extract.warnings.push(format!(
                    "{shown} covers {} day(s) already read from earlier files ({}..{}); \
                     its numbers replace theirs",
                    overlap.len(),
                    overlap.first().unwrap(),
                    overlap.last().unwrap()
                ));
            }
            extract.points.extend(one.points);
            extract.days.extend(one.days);
            extract.rows_read += one.rows_read;
            extract.rows_loaded += one.rows_loaded;
            extract.rejected.extend(one.rejected);
            extract.warnings.extend(one.warnings);
            extract.sources.push(shown);
        }
        Ok(extract)
    }
}

/// Decodes a file to UTF-8 text, honouring a BOM or the configured encoding.
pub fn decode(bytes: &[u8], encoding: Option<&str>, shown: &str) -> Result<String, String> {
    if let Some((encoding, bom_len)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, had_errors) = encoding.decode_without_bom_handling(&bytes[bom_len..]);
        if had_errors {
            return Err(format!(
                "{shown}: bytes that are not valid {}",
                encoding.name()
            ));
        }
        return Ok(text.into_owned());
    }
    let label = encoding.unwrap_or("auto");
    if label.eq_ignore_ascii_case("auto") || label.eq_ignore_ascii_case("utf-8") {
        return String::from_utf8(bytes.to_vec()).map_err(|err| {
            format!(
                "{shown}: not valid UTF-8 at byte {}; set [format] encoding (for example \
                 \"windows-1251\" for Russian Excel)",
                err.utf8_error().valid_up_to()
            )
        });
    }
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes())
        .ok_or_else(|| format!("unknown encoding `{label}`"))?;
    let (text, had_errors) = encoding.decode_without_bom_handling(bytes);
    if had_errors {
        return Err(format!(
            "{shown}: bytes that are not valid {}",
            encoding.name()
        ));
    }
    Ok(text.into_owned())
}

/// Finds the header line and the delimiter from the first lines of the text.
pub fn sniff(text: &str, delimiter: Option<u8>, skip_lines: Option<usize>) -> Dialect {
    let lines: Vec<&str> = text.lines().take(200).collect();
    let mut skip = 0;
    let mut delimiter = delimiter;
    if let Some(first) = lines.first()
        && let Some(sep) = first.trim().strip_prefix("sep=")
        && sep.len() == 1
    {
        delimiter = delimiter.or(Some(sep.as_bytes()[0]));
        skip = 1;
    }
    if let Some(configured) = skip_lines {
        skip = configured;
    } else {
        while skip < lines.len() && is_preamble(lines[skip]) {
            skip += 1;
        }
    }
    let body: Vec<&str> = lines.iter().skip(skip).take(50).copied().collect();
    let delimiter = delimiter.unwrap_or_else(|| detect_delimiter(&body));
    Dialect {
        delimiter,
        skip_lines: skip,
    }
}

fn is_preamble(line: &str) -> bool {
    let trimmed = line.trim();
    trimmed.starts_with('#') || trimmed.is_empty()
}

fn detect_delimiter(lines: &[&str]) -> u8 {
    let candidates = [b',', b';', b'\t', b'|'];
    let lines: Vec<&str> = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .copied()
        .collect();
    let mut best = (b',', 0usize, 0usize);
    for &c in &candidates {
        let counts: Vec<usize> = lines.iter().map(|l| count_outside_quotes(l, c)).collect();
        let Some(&header) = counts.first() else {
            continue;
        };
        if header == 0 {
            continue;
        }
        let consistent = counts.iter().filter(|&&n| n == header).count();
        if (consistent, header) > (best.1, best.2) {
            best = (c, consistent, header);
        }
    }
    best.0
}

fn count_outside_quotes(line: &str, c: u8) -> usize {
    let mut quoted = false;
    let mut count = 0;
    for b in line.bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if b == c && !quoted {
            count += 1;
        }
    }
    count
}

/// Decimal mark and thousands separators of one number column.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberLocale {
    pub decimal: char,
    pub thousands: Vec<char>,
}

/// Decides a column's decimal mark from its values; `fallback` settles values such as `1,234`
/// that fit both readings.
pub fn detect_locale<'a>(values: impl Iterator<Item = &'a str>, fallback: char) -> char {
    let mut votes_comma = 0;
    let mut votes_dot = 0;
    for value in values.take(2000) {
        let digits: String = value
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
            .collect();
        let last_comma = digits.rfind(',');
        let last_dot = digits.rfind('.');
        match (last_comma, last_dot) {
            (Some(c), Some(d)) if c > d => votes_comma += 1,
            (Some(_), Some(_)) => votes_dot += 1,
            (Some(c), None) => {
                let after = digits.len() - c - 1;
                if digits.matches(',').count() > 1 {
                    votes_dot += 1;
                } else if after != 3 {
                    votes_comma += 1;
                }
            }
            (None, Some(d)) => {
                let after = digits.len() - d - 1;
                if digits.matches('.').count() > 1 {
                    votes_comma += 1;
                } else if after != 3 {
                    votes_dot += 1;
                }
            }
            (None, None) => {}
        }
    }
    match votes_comma.cmp(&votes_dot) {
        std::cmp::Ordering::Greater => ',',
        std::cmp::Ordering::Less => '.',
        std::cmp::Ordering::Equal => fallback,
    }
}

struct FileRead {
    points: Vec<Point>,
    days: BTreeSet<NaiveDate>,
    rows_read: u64,
    rows_loaded: u64,
    rejected: Vec<RejectedRow>,
    warnings: Vec<String>,
}

fn frame_err(context: String) -> impl FnOnce(PolarsError) -> ConnectorError {
    move |source| ConnectorError::Frame { context, source }
}

fn read_file(
    config: &CsvConfig,
    path: &Path,
    shown: &str,
    timezone: chrono_tz::Tz,
) -> Result<FileRead, ConnectorError> {
    let bytes = std::fs::read(path)
        .map_err(|err| ConnectorError::Source(format!("cannot read {shown}: {err}")))?;
    let text =
        decode(&bytes, config.format.encoding.as_deref(), shown).map_err(ConnectorError::Source)?;
    let dialect = sniff(&text, config.delimiter(), config.format.skip_lines);
    let raw = read_text_frame(&text, &dialect, shown)?;
    let header_line = dialect.skip_lines + 1;
    tracing::debug!(
        file = shown,
        delimiter = %(dialect.delimiter as char).escape_default(),
        skip_lines = dialect.skip_lines,
        rows = raw.height(),
        "read CSV"
    );

    // every configured column must exist
    let found: Vec<String> = raw
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut wanted: Vec<&str> = vec![config.date.column.as_str()];
    wanted.extend(config.dimensions.values().map(String::as_str));
    for metric in &config.metrics {
        wanted.extend(metric.column.as_deref());
        wanted.extend(metric.filter.keys().map(String::as_str));
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| !found.iter().any(|f| f == *w))
        .map(|w| {
            crate::project::problem::with_hint(
                format!("`{w}`"),
                w,
                found.iter().map(String::as_str),
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(ConnectorError::Source(format!(
            "{shown}: column(s) {} not found; the header on line {header_line} has: {}",
            missing.join(", "),
            found.join(", ")
        )));
    }

    // dates: parse each distinct cell once
    let date_col = raw
        .column(&config.date.column)
        .and_then(|c| c.str().cloned());
    let date_col = date_col.map_err(frame_err(format!("{shown}: date column")))?;
    let format = match &config.date.format {
        Some(f) => DateFormat::new(f).map_err(ConnectorError::Source)?,
        None => detect_date_format(date_col.iter().flatten(), timezone).ok_or_else(|| {
            let sample = date_col.iter().flatten().next().unwrap_or_default();
            ConnectorError::Source(format!(
                "{shown}: cannot tell the date format of column `{}` (for example `{sample}`); \
                 set [date] format, such as \"%d/%m/%Y\"",
                config.date.column
            ))
        })?,
    };
    tracing::debug!(file = shown, column = %config.date.column, format = %format.format, "date format");
    let mut parsed: HashMap<&str, Option<i32>> = HashMap::new();
    let days: Vec<Option<i32>> = date_col
        .iter()
        .map(|cell| {
            let cell = cell?;
            *parsed
                .entry(cell)
                .or_insert_with(|| format.day(cell, timezone).map(day_number))
        })
        .collect();
    let mut frame = raw.clone();
    frame
        .with_column(Column::new("__day".into(), days))
        .map_err(frame_err(format!("{shown}: dates")))?;

    // numbers and row counts
    let fallback_decimal = match (&config.format.decimal, dialect.delimiter) {
        (Some(d), _) => d.chars().next().unwrap_or('.'),
        (None, b';') => ',',
        _ => '.',
    };
    let mut value_exprs = Vec::new();
    let mut bad_exprs = Vec::new();
    for (i, metric) in config.metrics.iter().enumerate() {
        let condition = metric_condition(metric);
        let name = format!("__m{i}");
        match &metric.column {
            Some(column) => {
                let decimal = match &config.format.decimal {
                    Some(d) => d.chars().next().unwrap_or('.'),
                    None => {
                        let cells = raw.column(column).and_then(|c| c.str().cloned());
                        let cells = cells.map_err(frame_err(format!("{shown}: {column}")))?;
                        detect_locale(cells.iter().flatten(), fallback_decimal)
                    }
                };
                tracing::debug!(file = shown, column = %column, decimal = %decimal, "number locale");
                let locale = NumberLocale {
                    decimal,
                    thousands: thousands_for(decimal, config.format.thousands.as_deref()),
                };
                let (value, bad) = number_expr(column, &locale);
                let value = value * lit(metric.scale.unwrap_or(1.0));
                let value = match &condition {
                    Some(c) => when(c.clone())
                        .then(value)
                        .otherwise(lit(NULL).cast(DataType::Float64)),
                    None => value,
                };
                value_exprs.push(value.alias(&name));
                bad_exprs.push(Some(bad));
            }
            None => {
                let one = match &condition {
                    Some(c) => when(c.clone()).then(lit(1.0)).otherwise(lit(0.0)),
                    None => lit(1.0),
                };
                value_exprs.push(one.alias(&name));
                bad_exprs.push(None);
            }
        }
    }

    // the first problem of each row, as a code: 0 = date, i + 1 = metric i
    let mut reason = lit(NULL).cast(DataType::Int32);
    for (i, bad) in bad_exprs.iter().enumerate().rev() {
        if let Some(bad) = bad {
            reason = when(bad.clone()).then(lit(i as i32 + 1)).otherwise(reason);
        }
    }
    reason = when(col("__day").is_null())
        .then(lit(0i32))
        .otherwise(reason);

    let dims: Vec<(String, String)> = config
        .dimensions
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut columns = value_exprs;
    columns.push(reason.alias("__reason"));
    for (i, (_, column)) in dims.iter().enumerate() {
        columns.push(
            col(column.as_str())
                .str()
                .strip_chars(lit(NULL))
                .alias(format!("__d{i}")),
        );
    }
    let frame = frame
        .lazy()
        .with_row_index("__row", None)
        .with_columns(columns)
        .collect()
        .map_err(frame_err(format!("{shown}: cleaning values")))?;

    // rows that cannot be read
    let reasons = frame.column("__reason").and_then(|c| c.i32().cloned());
    let reasons = reasons.map_err(frame_err(format!("{shown}: reasons")))?;
    let mut rejected = Vec::new();
    for (row, code) in reasons.iter().enumerate() {
        let Some(code) = code else { continue };
        let line = (header_line + 1 + row) as i64;
        let cell = |column: &str| -> String {
            raw.column(column)
                .ok()
                .and_then(|c| c.str().ok().and_then(|s| s.get(row).map(str::to_string)))
                .unwrap_or_default()
        };
        let reason = if code == 0 {
            let value = cell(&config.date.column);
            if value.trim().is_empty() {
                format!("column `{}`: no date", config.date.column)
            } else {
                format!(
                    "column `{}`: `{value}` does not match date format `{}`",
                    config.date.column, format.format
                )
            }
        } else {
            let column = config.metrics[code as usize - 1]
                .column
                .clone()
                .unwrap_or_default();
            format!("column `{column}`: `{}` is not a number", cell(&column))
        };
        let raw_text = raw_row(&raw, row, dialect.delimiter);
        rejected.push(RejectedRow {
            location: format!("{shown}:{line}"),
            line: Some(line),
            reason,
            raw: raw_text,
        });
    }

    // sum the good rows by day and dimensions
    let mut keys = vec![col("__day")];
    keys.extend((0..dims.len()).map(|i| col(format!("__d{i}"))));
    let mut aggs = Vec::new();
    for i in 0..config.metrics.len() {
        aggs.push(col(format!("__m{i}")).sum().alias(format!("__m{i}")));
        aggs.push(
            col(format!("__m{i}"))
                .count()
                .cast(DataType::UInt64)
                .alias(format!("__n{i}")),
        );
    }
    let grouped = frame
        .lazy()
        .filter(col("__reason").is_null())
        .group_by(keys)
        .agg(aggs)
        .collect()
        .map_err(frame_err(format!("{shown}: aggregating")))?;

    let mut points = Vec::new();
    let mut covered = BTreeSet::new();
    let get_err = |what: &str| frame_err(format!("{shown}: reading {what}"));
    let day_col = grouped
        .column("__day")
        .and_then(|c| c.i32().cloned())
        .map_err(get_err("days"))?;
    let mut dim_cols = Vec::new();
    for i in 0..dims.len() {
        let c = grouped
            .column(&format!("__d{i}"))
            .and_then(|c| c.str().cloned());
        dim_cols.push(c.map_err(get_err("dimensions"))?);
    }
    let mut metric_cols = Vec::new();
    for i in 0..config.metrics.len() {
        let sums = grouped
            .column(&format!("__m{i}"))
            .and_then(|c| c.f64().cloned());
        let counts = grouped
            .column(&format!("__n{i}"))
            .and_then(|c| c.u64().cloned());
        metric_cols.push((
            sums.map_err(get_err("sums"))?,
            counts.map_err(get_err("counts"))?,
        ));
    }
    for row in 0..grouped.height() {
        let Some(day) = day_col.get(row).map(day_from_number) else {
            continue;
        };
        covered.insert(day);
        let mut dimensions = BTreeMap::new();
        for ((name, _), values) in dims.iter().zip(&dim_cols) {
            if let Some(value) = values.get(row).filter(|v| !v.is_empty()) {
                dimensions.insert(name.clone(), value.to_string());
            }
        }
        for (name, value) in &config.constants {
            dimensions.insert(name.clone(), value.clone());
        }
        for (metric, (sums, counts)) in config.metrics.iter().zip(&metric_cols) {
            if counts.get(row).unwrap_or(0) == 0 {
                continue;
            }
            let Some(value) = sums.get(row) else { continue };
            points.push(Point {
                metric: metric.name.clone(),
                day,
                dimensions: dimensions.clone(),
                value,
            });
        }
    }

    let rows_read = raw.height() as u64;
    Ok(FileRead {
        points,
        days: covered,
        rows_read,
        rows_loaded: rows_read - rejected.len() as u64,
        rejected,
        warnings: Vec::new(),
    })
}

fn read_text_frame(
    text: &str,
    dialect: &Dialect,
    shown: &str,
) -> Result<DataFrame, ConnectorError> {
    let body: String = text
        .split_inclusive('\n')
        .skip(dialect.skip_lines)
        .collect();
    let cursor = std::io::Cursor::new(body.into_bytes());
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .map_parse_options(|o| {
            o.with_separator(dialect.delimiter)
                .with_quote_char(Some(b'"'))
                .with_missing_is_null(true)
                // TODO(#3): rows with extra cells should be rejected, not truncated
                .with_truncate_ragged_lines(true)
        })
        .into_reader_with_file_handle(cursor)
        .finish()
        .map_err(frame_err(format!("{shown}: reading CSV")))
}

fn raw_row(frame: &DataFrame, row: usize, delimiter: u8) -> String {
    let delimiter = (delimiter as char).to_string();
    frame
        .columns()
        .iter()
        .map(|c| {
            c.str()
                .ok()
                .and_then(|s| s.get(row))
                .unwrap_or("")
                .to_string()
        })
        .collect::<Vec<_>>()
        .join(&delimiter)
}

fn metric_condition(metric: &MetricColumn) -> Option<Expr> {
    let mut condition: Option<Expr> = None;
    for (column, values) in &metric.filter {
        let cell = col(column.as_str()).str().strip_chars(lit(NULL));
        let mut any: Option<Expr> = None;
        for value in values.values() {
            let eq = cell.clone().eq(lit(value.trim().to_string()));
            any = Some(match any {
                Some(a) => a.or(eq),
                None => eq,
            });
        }
        let any = any.unwrap_or(lit(false)).fill_null(lit(false));
        condition = Some(match condition {
            Some(c) => c.and(any),
            None => any,
        });
    }
    condition
}

fn thousands_for(decimal: char, configured: Option<&str>) -> Vec<char> {
    let mut out: Vec<char> = match configured {
        Some(t) => t.chars().collect(),
        None => vec![if decimal == ',' { '.' } else { ',' }],
    };
    out.extend([' ', '\u{a0}', '\u{202f}', '\'']);
    out.retain(|c| *c != decimal);
    out
}

/// The float value of a text column and a flag for cells that hold something but no number.
fn number_expr(column: &str, locale: &NumberLocale) -> (Expr, Expr) {
    let cell = col(column).str().strip_chars(lit(NULL));
    let mut missing = cell.clone().is_null().or(cell.clone().eq(lit("")));
    for placeholder in PLACEHOLDERS {
        missing = missing.or(cell.clone().eq(lit(*placeholder)));
    }
    let percent = cell.clone().str().ends_with(lit("%"));
    // currency signs and codes around the number
    let mut body = cell
        .clone()
        .str()
        .replace_all(lit(r"^(?:[A-Z]{2,3}\s?)?\p{Sc}?\s*"), lit(""), false)
        .str()
        .replace_all(
            lit(r"[\s%]*(?:\p{Sc}|[A-Z]{3}|руб\.?|р\.)?[\s%]*$"),
            lit(""),
            false,
        );
    for t in &locale.thousands {
        body = body.str().replace_all(lit(t.to_string()), lit(""), true);
    }
    if locale.decimal == ',' {
        body = body.str().replace_all(lit(","), lit("."), true);
    }
    let number = body.cast(DataType::Float64);
    let value = when(missing.clone())
        .then(lit(NULL).cast(DataType::Float64))
        .when(percent)
        .then(number.clone() / lit(100.0))
        .otherwise(number);
    let bad = missing.not().and(value.clone().is_null());
    (value, bad)
}

fn detect_date_format<'a>(
    cells: impl Iterator<Item = &'a str>,
    tz: chrono_tz::Tz,
) -> Option<DateFormat> {
    let sample: Vec<&str> = cells.take(200).collect();
    if sample.is_empty() {
        return None;
    }
    DATE_FORMATS
        .iter()
        .filter_map(|f| DateFormat::new(f).ok())
        .find(|format| {
            sample
                .iter()
                .filter(|s| format.day(s, tz).is_some())
                .count()
                * 10
                >= sample.len() * 9
        })
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();

/// Days since 1970-01-01.
pub fn day_number(day: NaiveDate) -> i32 {
    (day - EPOCH).num_days() as i32
}

pub fn day_from_number(n: i32) -> NaiveDate {
    EPOCH + chrono::TimeDelta::days(n as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiter_and_preamble_are_found() {
        let text = "# title\n# 2024-01-01 - 2024-01-31\n\nDay;Clicks\n01.01.2024;1 204,5\n";

        let dialect = sniff(text, None, None);

        assert_eq!(
            dialect,
            Dialect {
                delimiter: b';',
                skip_lines: 3
            }
        );
    }

    #[test]
    fn excel_sep_line_sets_the_delimiter() {
        assert_eq!(
            sniff("sep=|\na|b\n1|2\n", None, None),
            Dialect {
                delimiter: b'|',
                skip_lines: 1
            }
        );
    }

    #[test]
    fn quoted_commas_do_not_confuse_the_delimiter() {
        let text = "Day,Cost\n2024-01-01,\"1,204.50\"\n2024-01-02,\"2,000.00\"\n";

        assert_eq!(sniff(text, None, None).delimiter, b',');
    }

    #[test]
    fn locale_per_column() {
        assert_eq!(detect_locale(["1,204", "12,345.67"].into_iter(), '.'), '.');
        assert_eq!(detect_locale(["1 234,56", "7,5"].into_iter(), '.'), ',');
        assert_eq!(detect_locale(["2.546", "1.204"].into_iter(), ','), ',');
        assert_eq!(detect_locale(["2.546", "1.204"].into_iter(), '.'), '.');
    }

    #[test]
    fn dates_in_the_connector_time_zone() {
        let tz: chrono_tz::Tz = "Asia/Almaty".parse().unwrap();
        let format = DateFormat::new("%Y-%m-%dT%H:%M:%S%:z").unwrap();

        let day = format.day("2024-03-31T22:30:00+00:00", tz);

        assert_eq!(day, NaiveDate::from_ymd_opt(2024, 4, 1));
    }

    #[test]
    fn formats_without_a_full_date_are_refused() {
        assert!(DateFormat::new("%H:%M").is_err());
        assert!(DateFormat::new("%Y-%q").is_err());
        assert!(DateFormat::new("%d-%m-%Y").is_ok());
    }
}
