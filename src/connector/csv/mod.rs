//! CSV and TSV exports: a file or a glob of files, streamed in chunks through polars and
//! summed to daily points.
//!
//! A file goes through these steps: pick the encoding and decode as it streams
//! ([`layout::choose_encoding`]); find the delimiter and the comment preamble
//! ([`layout::sniff`]); find the header among the first records by the columns the connector
//! needs (title lines, date-range lines and other tables before it are skipped and reported);
//! read data rows until the table ends, setting aside totals rows (used to check the sums),
//! ragged rows and undecodable rows; clean each chunk of rows with polars expressions
//! ([`clean`]) and add its values to running sums, one slot per metric for each (day,
//! dimension set) group, the set's cells numbered once in a hash map; finally turn the sums
//! into points. Memory stays bounded by the chunk size and the number of groups.

pub mod clean;
pub mod layout;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufReader, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use polars::prelude::*;
use serde::Deserialize;

use super::points::Dimensions;
use super::{
    Cancel, ConnectorError, Extract, PointRow, Points, RejectedRow, RunContext, SkippedLine, Source,
};
use crate::okr::{DateValue, OneOrMany};
pub use clean::{DateFormat, day_from_number, day_number};
use clean::{NumberLocale, Votes, number_expr, parse_number};

pub use clean::PLACEHOLDERS;

/// Rows cleaned by polars at a time.
const CHUNK_ROWS: usize = 65_536;
/// Records looked at for the header before giving up.
const HEADER_SEARCH: usize = 1000;
/// Characters of a rejected row's text that are stored.
const RAW_KEPT: usize = 2000;
/// Skipped lines kept for the preview (the count is always exact).
const SKIPPED_KEPT: usize = 50;
/// Reject code of a row dated outside [`CsvConfig::accept`].
const OUTSIDE: i32 = 1_000_000;

/// A `type = "csv"` connector file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// Always `csv` here.
    #[serde(rename = "type")]
    pub kind: String,
    /// A file or a glob (`data/ads_*.csv`), relative to the project directory.
    pub path: String,
    /// IANA time zone of the export's days (default: the scoring time zone).
    pub timezone: Option<String>,
    /// What the source is, for people.
    pub description: Option<String>,
    /// Cron schedule for `krscore run` (used by the service).
    pub schedule: Option<String>,
    /// Days without new data after which KRs on this source are stale (a monthly survey: 35).
    pub stale_after_days: Option<u32>,
    /// How the file is written; every key is detected when absent.
    #[serde(default)]
    pub format: CsvFormat,
    /// Which column holds the day, or the period a report without one covers.
    #[serde(default)]
    pub date: DateConfig,
    /// Dimension name = column name (or a list of names an export has used for it).
    #[serde(default)]
    pub dimensions: BTreeMap<String, OneOrMany>,
    /// Dimension name = fixed value for every point of this connector.
    #[serde(default)]
    pub constants: BTreeMap<String, String>,
    /// Metrics read from the file.
    #[serde(default)]
    pub metrics: Vec<MetricColumn>,
    /// Which of the metrics are counters (filled from the catalogue): totals rows are checked
    /// against their sums.
    #[serde(skip)]
    pub counters: BTreeSet<String>,
    /// Days outside this range are rejected (an API's answer outside the days asked for).
    #[serde(skip)]
    pub accept: Option<(NaiveDate, NaiveDate)>,
}

/// `[format]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvFormat {
    /// `,` `;` `|` or `\t` (also `tab`); detected when absent.
    pub delimiter: Option<String>,
    /// `auto` (default: a BOM, else UTF-8), `utf-8`, `windows-1251`, `utf-16le`, ...
    pub encoding: Option<String>,
    /// With `auto`: the encoding of files that are not UTF-8 and have no BOM.
    pub fallback_encoding: Option<String>,
    /// Decimal mark, `.` or `,`; detected per column when absent.
    pub decimal: Option<String>,
    /// Thousands separator(s), such as `,` or `.`; spaces are always accepted.
    pub thousands: Option<String>,
    /// Lines before the header row; by default comment lines are skipped and the header is
    /// found by the columns the connector needs.
    pub skip_lines: Option<usize>,
    /// In a file with several tables separated by blank lines, read this one (1 = first);
    /// by default the first whose header has the needed columns.
    pub table: Option<usize>,
}

/// `[date]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateConfig {
    /// The column holding the date or timestamp (or the names it has had). Without one, the
    /// report covers one period: `start`/`end` below, or the period its preamble states.
    /// `field` is the same key, for JSON answers.
    #[serde(alias = "field")]
    pub column: Option<OneOrMany>,
    /// chrono format such as `%d.%m.%Y` or `%Y-%m-%dT%H:%M:%SZ`; detected among unambiguous
    /// formats when absent.
    pub format: Option<String>,
    /// Time zone of timestamps without an offset (default: the connector's; a trailing `Z`
    /// means UTC). Days are always days in the connector's time zone.
    pub timestamps_in: Option<String>,
    /// First day of the period a report without a date column covers.
    pub start: Option<DateValue>,
    /// Last day of that period.
    pub end: Option<DateValue>,
    /// What a row with an empty date cell is: `reject` (default) or `skip` (a CRM export
    /// whose "became MQL" date is empty for contacts that never did).
    pub if_missing: Option<MissingDate>,
}

/// How rows without a date are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingDate {
    Reject,
    Skip,
}

/// `[[metrics]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricColumn {
    /// A counter or gauge of `config/metrics.toml`.
    pub name: String,
    /// The column holding the value (or the names it has had: `["Conversions", "Key events"]`);
    /// `field` is the same key, for JSON answers.
    #[serde(alias = "field")]
    pub column: Option<OneOrMany>,
    /// `rows`: each row counts one (for exports with a row per lead, order or answer).
    pub count: Option<String>,
    /// Only rows whose cells match feed the metric: a value, a list of values, or a numeric
    /// range `{ min = 9, max = 10 }` on the cell's leading number (`10 - Extremely likely`).
    #[serde(rename = "where", default)]
    pub filter: BTreeMap<String, CellFilter>,
    /// Multiply values by this (e.g. `0.000001` for money in micros).
    pub scale: Option<f64>,
    /// Multiply by another column first (average position x impressions), so a derived
    /// metric can divide the sums back into a weighted average.
    pub times: Option<String>,
}

/// A condition on a raw cell.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CellFilter {
    Range { min: Option<f64>, max: Option<f64> },
    Values(OneOrMany),
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
    fn extract(&self, ctx: &RunContext) -> Result<Extract, ConnectorError> {
        let (project_dir, timezone, cancel) = (ctx.project_dir, ctx.timezone, ctx.cancel);
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
            let open =
                || -> std::io::Result<Box<dyn Read>> { Ok(Box::new(std::fs::File::open(file)?)) };
            let input = TableInput {
                shown: &shown,
                open: &open,
                records: None,
            };
            let one = read_table(self, &input, timezone, cancel)?;

            // a later file restates the days it covers
            let overlap: BTreeSet<NaiveDate> =
                one.days.intersection(&extract.days).copied().collect();
            if !overlap.is_empty() {
                extract.points.retain_days(|day| !overlap.contains(&day));
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
            extract.rows_loaded += one.rows_read - one.rejected.len() as u64;
            extract.rows_skipped += one.rows_skipped;
            extract.rejected.extend(one.rejected);
            extract.skipped.extend(one.skipped);
            extract.warnings.extend(one.warnings);
            extract.sources.push(shown);
        }
        Ok(extract)
    }
}

/// What one table (a file or a response body) gave.
pub struct FileRead {
    pub points: Points,
    pub days: BTreeSet<NaiveDate>,
    pub rows_read: u64,
    pub rows_skipped: u64,
    pub rejected: Vec<RejectedRow>,
    pub skipped: Vec<SkippedLine>,
    pub warnings: Vec<String>,
}

/// Where a table comes from and how its lines are named in messages.
pub struct TableInput<'a> {
    /// The file (relative to the project directory) or the URL, as shown to people.
    pub shown: &'a str,
    /// Opens the bytes from the start; called twice (the encoding, then the read).
    pub open: &'a dyn Fn() -> std::io::Result<Box<dyn Read + 'a>>,
    /// For a table made of JSON records: each record's location (line 2 is the first record).
    pub records: Option<&'a [String]>,
}

/// `file:line`, or the location of the JSON record on that line.
fn locate(shown: &str, records: Option<&[String]>, line: u64) -> String {
    match records.and_then(|r| r.get((line as usize).wrapping_sub(2))) {
        Some(location) => location.clone(),
        None => format!("{shown}:{line}"),
    }
}

fn source_err(shown: &str, message: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Source(format!("{shown}: {message}"))
}

fn frame_err(context: String) -> impl FnOnce(PolarsError) -> ConnectorError {
    move |source| ConnectorError::Frame { context, source }
}

/// Where each needed column is in the header.
#[derive(Clone)]
struct Columns {
    date: Option<usize>,
    dims: Vec<(String, usize)>,
    /// Distinct source columns of metric values, `times` and `where`, by header index.
    sources: Vec<usize>,
    header: Vec<String>,
}

impl Columns {
    fn source_slot(&self, index: usize) -> usize {
        self.sources
            .iter()
            .position(|i| *i == index)
            .expect("source column registered")
    }
}

fn find_column(header: &[String], names: &[String]) -> Option<usize> {
    names
        .iter()
        .find_map(|n| header.iter().position(|h| h == n.trim()))
}

fn names(value: &OneOrMany) -> Vec<String> {
    value.values()
}

/// Per-file reading state.
struct FileState<'a> {
    config: &'a CsvConfig,
    shown: &'a str,
    records: Option<&'a [String]>,
    columns: Columns,
    timezone: chrono_tz::Tz,
    naive_zone: chrono_tz::Tz,
    date_format: Option<DateFormat>,
    fixed_period: Option<(NaiveDate, NaiveDate)>,
    date_cache: HashMap<String, Option<i32>>,
    locales: Option<Vec<NumberLocale>>,
    column_votes: Vec<Votes>,
    /// Per source column, whether its decimal mark is a guess: neither configured nor told by
    /// the first chunk's cells.
    guessed: Vec<bool>,
    /// Per guessed column, the first cell read differently by the two marks (`1,234`) and the
    /// first that reads only with the other mark (`1,5`), with their lines: both together
    /// mean the guess read some values wrong.
    doubts: Vec<(Option<LineCell>, Option<LineCell>)>,
    file_votes: Votes,
    sums: Sums,
    rejected: Vec<RejectedRow>,
    censored_cells: u64,
    delimiter: char,
}

/// A cell and its line.
type LineCell = (i64, String);

/// The decimal-mark votes of the first chunk's cells: the file's, and each source column's.
type Ballots = (Votes, Vec<Votes>);

/// Rows waiting to be cleaned, as polars string columns (no allocation per cell).
struct Chunk {
    lines: Vec<i64>,
    date: StringChunkedBuilder,
    dims: Vec<StringChunkedBuilder>,
    sources: Vec<StringChunkedBuilder>,
    raw: StringChunkedBuilder,
}

impl Chunk {
    fn new(dims: usize, sources: usize) -> Chunk {
        let builder = |name: String| StringChunkedBuilder::new(name.into(), CHUNK_ROWS);
        Chunk {
            lines: Vec::with_capacity(CHUNK_ROWS),
            date: builder("__date".into()),
            dims: (0..dims).map(|i| builder(format!("__d{i}"))).collect(),
            sources: (0..sources).map(|i| builder(format!("__c{i}"))).collect(),
            raw: builder("__raw".into()),
        }
    }

    fn len(&self) -> usize {
        self.lines.len()
    }

    fn push_cell(builder: &mut StringChunkedBuilder, cell: Option<&str>) {
        match cell {
            Some(c) => builder.append_value(c),
            None => builder.append_null(),
        }
    }
}

/// Reads one table: a CSV file, or a response body.
pub fn read_table(
    config: &CsvConfig,
    input: &TableInput,
    timezone: chrono_tz::Tz,
    cancel: &Cancel,
) -> Result<FileRead, ConnectorError> {
    let shown = input.shown;
    let open = || (input.open)().map_err(|err| source_err(shown, format!("cannot read: {err}")));
    let mut warnings = Vec::new();

    // encoding from the first bytes
    let mut head = Vec::with_capacity(layout::SNIFF_BYTES);
    open()?
        .take(layout::SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|err| source_err(shown, format!("cannot read: {err}")))?;
    let at_eof = head.len() < layout::SNIFF_BYTES;
    let (encoding, warning) = layout::choose_encoding(
        &head,
        config.format.encoding.as_deref(),
        config.format.fallback_encoding.as_deref(),
        at_eof,
    )
    .map_err(|message| source_err(shown, message))?;
    warnings.extend(warning.map(|w| format!("{shown}: {w}")));

    // dialect from the first decoded lines
    let mut decoded = layout::LineEndings::new(layout::decoder(BufReader::new(open()?), encoding));
    let mut head_text = Vec::with_capacity(layout::SNIFF_BYTES);
    (&mut decoded)
        .take(layout::SNIFF_BYTES as u64)
        .read_to_end(&mut head_text)
        .map_err(|err| {
            source_err(
                shown,
                format!("cannot decode as {}: {err}", encoding.name()),
            )
        })?;
    let complete = head_text
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(head_text.len(), |i| i + 1);
    let sniff_text = String::from_utf8_lossy(&head_text[..complete]).into_owned();
    let dialect = layout::sniff(&sniff_text, config.delimiter(), config.format.skip_lines);
    tracing::debug!(
        file = shown,
        encoding = encoding.name(),
        delimiter = %(dialect.delimiter as char).escape_default(),
        comment_lines = dialect.skip_lines,
        "reading CSV"
    );
    let mut skipped: Vec<SkippedLine> = dialect
        .skipped
        .iter()
        .enumerate()
        .map(|(i, text)| SkippedLine {
            location: format!("{shown}:{}", i + 1),
            reason: "preamble".into(),
            text: text.clone(),
        })
        .collect();
    let mut rows_skipped = dialect.skip_lines as u64;
    let body =
        Cursor::new(head_text[dialect.skip_bytes.min(head_text.len())..].to_vec()).chain(decoded);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(dialect.delimiter)
        .from_reader(body);
    let line_offset = dialect.skip_lines as u64;

    // the header: the first record with the needed columns, or the first of the chosen table
    let date_names: Vec<String> = config.date.column.as_ref().map(names).unwrap_or_default();
    let metric_names: Vec<String> = config
        .metrics
        .iter()
        .filter_map(|m| m.column.as_ref())
        .flat_map(names)
        .collect();
    let dim_names: Vec<Vec<String>> = config.dimensions.values().map(names).collect();
    let mut record = csv::StringRecord::new();
    let mut preamble_text: Vec<String> = dialect.skipped.clone();
    let mut block = 1usize;
    let mut header: Option<(Vec<String>, u64)> = None;
    let mut candidate: Option<(Vec<String>, u64)> = None;
    let mut seen_record = false;
    for _ in 0..HEADER_SEARCH {
        let Some((line, blanks)) = next_record(&mut reader, &mut record, line_offset)
            .map_err(|err| source_err(shown, err))?
        else {
            break;
        };
        let blank = record.iter().all(|c| c.trim().is_empty());
        if seen_record && (blanks > 0 || blank) {
            block += 1;
        }
        if blank {
            continue;
        }
        seen_record = true;
        let cells: Vec<&str> = record.iter().collect();
        let trimmed: Vec<&str> = cells
            .iter()
            .map(|c| c.trim().trim_start_matches('\u{feff}'))
            .collect();
        let is_header = match config.format.table {
            Some(n) => block == n,
            None if config.format.skip_lines.is_some() => true,
            None => {
                let has = |names: &[String]| trimmed.iter().any(|c| names.iter().any(|n| n == c));
                (date_names.is_empty() || has(&date_names))
                    && dim_names.iter().all(|names| has(names))
                    && (metric_names.is_empty() || has(&metric_names))
                    && !(date_names.is_empty() && metric_names.is_empty() && dim_names.is_empty())
            }
        };
        let mentions_date =
            !date_names.is_empty() && trimmed.iter().any(|c| date_names.iter().any(|n| n == c));
        if candidate.is_none() && mentions_date {
            candidate = Some((
                cells.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                line,
            ));
        }
        if is_header {
            let (names, renamed) = layout::unique_headers(&cells);
            for r in renamed {
                warnings.push(format!("{shown}:{line}: {r}"));
            }
            header = Some((names, line));
            break;
        }
        let text = cells.join(&(dialect.delimiter as char).to_string());
        preamble_text.push(text.clone());
        rows_skipped += 1;
        if skipped.len() < SKIPPED_KEPT {
            skipped.push(SkippedLine {
                location: locate(shown, input.records, line),
                reason: "before the header".into(),
                text,
            });
        }
    }
    // a header with the date column but not every other column: report what it lacks
    let header = header.or_else(|| {
        candidate.map(|(cells, line)| {
            let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
            (layout::unique_headers(&cells).0, line)
        })
    });
    if header.is_none() && !seen_record {
        return Err(source_err(shown, "the file is empty (no header, no rows)"));
    }
    let Some((header, header_line)) = header else {
        let wanted = if date_names.is_empty() {
            &metric_names
        } else {
            &date_names
        };
        return Err(source_err(
            shown,
            format!(
                "no header with column {} in the first {HEADER_SEARCH} records{}",
                wanted
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(" or "),
                if preamble_text.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; the file starts with: {}",
                        preamble_text
                            .iter()
                            .take(3)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(" | ")
                    )
                }
            ),
        ));
    };

    if header.iter().any(|h| layout::looks_garbled(h)) {
        warnings.push(format!(
            "{shown}:{header_line}: the header looks garbled ({}): the export was probably saved \
             from text decoded with the wrong encoding",
            header.join(", ")
        ));
    }

    // every needed column must exist
    let mut missing = Vec::new();
    let mut want = |label: &str, names: &[String]| -> Option<usize> {
        let found = find_column(&header, names);
        if found.is_none() {
            let hint = names.first().and_then(|n| {
                crate::project::problem::closest(n, header.iter().map(String::as_str))
            });
            missing.push(format!(
                "{label} `{}`{}",
                names.join("` / `"),
                hint.map(|h| format!(" (did you mean `{h}`?)"))
                    .unwrap_or_default()
            ));
        }
        found
    };
    let date = if date_names.is_empty() {
        None
    } else {
        want("date column", &date_names)
    };
    let mut dims = Vec::new();
    for (name, columns) in &config.dimensions {
        if let Some(i) = want("dimension column", &names(columns)) {
            dims.push((name.clone(), i));
        }
    }
    let mut sources: Vec<usize> = Vec::new();
    for metric in &config.metrics {
        let mut needed: Vec<(String, Vec<String>)> = Vec::new();
        if let Some(column) = &metric.column {
            needed.push(("column".into(), names(column)));
        }
        if let Some(times) = &metric.times {
            needed.push(("column".into(), vec![times.clone()]));
        }
        for column in metric.filter.keys() {
            needed.push(("column".into(), vec![column.clone()]));
        }
        for (label, names) in needed {
            if let Some(i) = want(&label, &names)
                && !sources.contains(&i)
            {
                sources.push(i);
            }
        }
    }
    if !missing.is_empty() {
        return Err(source_err(
            shown,
            format!(
                "{} not found; the header on line {header_line} has: {}",
                missing.join(", "),
                header.join(", ")
            ),
        ));
    }

    // the period of a report without a date column
    let fixed_period = if date.is_none() {
        let configured = match (&config.date.start, &config.date.end) {
            (Some(s), Some(e)) => s.parse().zip(e.parse()),
            _ => None,
        };
        let period = configured.or_else(|| layout::preamble_period(&preamble_text));
        match period {
            Some(p) => Some(p),
            None => {
                return Err(source_err(
                    shown,
                    "the report has no date column and its preamble states no period; set \
                     [date] column, or [date] start and end",
                ));
            }
        }
    } else {
        None
    };

    let naive_zone = config
        .date
        .timestamps_in
        .as_deref()
        .and_then(|z| z.parse().ok())
        .unwrap_or(timezone);
    let date_format = match &config.date.format {
        Some(f) => Some(DateFormat::new(f).map_err(|m| source_err(shown, m))?),
        None => None,
    };
    let columns = Columns {
        date,
        dims,
        sources,
        header,
    };
    let state = FileState {
        config,
        shown,
        records: input.records,
        timezone,
        naive_zone,
        date_format,
        fixed_period,
        date_cache: HashMap::new(),
        locales: None,
        column_votes: vec![Votes::default(); columns.sources.len()],
        guessed: vec![false; columns.sources.len()],
        doubts: vec![(None, None); columns.sources.len()],
        file_votes: Votes::default(),
        sums: Sums::default(),
        rejected: Vec::new(),
        censored_cells: 0,
        delimiter: dialect.delimiter as char,
        columns,
    };

    // data rows until the table ends
    let header_len = state.columns.header.len();
    let key_columns: Vec<usize> = state
        .columns
        .date
        .into_iter()
        .chain(state.columns.dims.iter().map(|(_, i)| *i))
        .collect();
    let needed: Vec<usize> = key_columns
        .iter()
        .copied()
        .chain(state.columns.sources.iter().copied())
        .collect();
    let mut rows_read = 0u64;
    let mut totals: Vec<(u64, Vec<String>)> = Vec::new();
    let mut stated_rows: Option<(u64, u64)> = None;
    let mut ended_at: Option<u64> = None;
    let mut after_table = 0u64;
    let mut after_blank = false;
    let mut short_rows = 0u64;
    let mut raw = String::new();
    let mut rejected: Vec<RejectedRow> = Vec::new();
    let columns = state.columns.clone();
    let delimiter = state.delimiter;
    let new_chunk = || Chunk::new(columns.dims.len(), columns.sources.len());
    let mut chunk = new_chunk();
    // the first chunk's cells vote for each column's decimal mark; the votes go with it
    let mut file_votes = Votes::default();
    let mut column_votes = vec![Votes::default(); columns.sources.len()];
    let mut voting = true;
    // full chunks are cleaned and summed on a thread of their own while this one reads on
    let mut state = std::thread::scope(|scope| -> Result<FileState, ConnectorError> {
        let (chunks, inbox) = std::sync::mpsc::sync_channel::<(Chunk, Option<Ballots>)>(1);
        let cleaner = scope.spawn(move || -> Result<FileState, ConnectorError> {
            let mut state = state;
            for (chunk, ballots) in inbox {
                if let Some((file, columns)) = ballots {
                    state.file_votes = file;
                    state.column_votes = columns;
                }
                state.process(chunk)?;
            }
            Ok(state)
        });
        let read = (|| -> Result<(), ConnectorError> {
            while let Some((line, blanks)) = next_record(&mut reader, &mut record, line_offset)
                .map_err(|err| source_err(shown, err))?
            {
                if ended_at.is_some() {
                    after_table += 1;
                    continue;
                }
                let blank = record.iter().all(|c| c.trim().is_empty());
                if blank && record.len() <= 1 {
                    after_blank = true;
                    continue;
                }
                // after a blank line, a header-like record starts another table; data goes on
                if (blanks > 0 || after_blank) && layout::looks_like_header(&record) {
                    ended_at = Some(line);
                    after_table += 1;
                    continue;
                }
                after_blank = false;
                // the cells joined by U+001F: turned into a CSV line only for a row kept as
                // rejected or skipped (`csv_line`)
                raw.clear();
                for (i, cell) in record.iter().enumerate() {
                    if i > 0 {
                        raw.push(CELL_SEPARATOR);
                    }
                    raw.push_str(cell);
                }
                let mut skip = |reason: &str, raw: &str| {
                    rows_skipped += 1;
                    if skipped.len() < SKIPPED_KEPT {
                        skipped.push(SkippedLine {
                            location: locate(shown, input.records, line),
                            reason: reason.into(),
                            text: csv_line(raw, delimiter),
                        });
                    }
                };
                if blank {
                    skip("empty row", &raw);
                    continue;
                }
                let cells: Vec<&str> = record.iter().collect();
                if let Some(count) = layout::stated_row_count(&cells) {
                    stated_rows = Some((count, line));
                    skip("row count line", &raw);
                    continue;
                }
                if config.date.if_missing == Some(MissingDate::Skip)
                    && columns
                        .date
                        .is_some_and(|i| cells.get(i).is_none_or(|c| c.trim().is_empty()))
                {
                    skip("no date", &raw);
                    continue;
                }
                let first_at = cells.iter().position(|c| !c.trim().is_empty());
                // a row dated in its date column is data whatever its first cell says (a campaign
                // called `Total Protection`); a total word counts where the date is missing or is
                // the first cell itself
                let dated_elsewhere = columns.date.is_some_and(|i| {
                    Some(i) != first_at && cells.get(i).is_some_and(|c| !c.trim().is_empty())
                });
                let first = match first_at {
                    Some(at) if !dated_elsewhere => cells[at],
                    _ => "",
                };
                let keys_empty = key_columns
                    .iter()
                    .all(|i| cells.get(*i).is_none_or(|c| c.trim().is_empty()));
                if layout::is_totals_row(first, keys_empty, !key_columns.is_empty()) {
                    totals.push((line, cells.iter().map(|c| c.to_string()).collect()));
                    skip("totals row", &raw);
                    continue;
                }

                rows_read += 1;
                let reject = |reason: String| RejectedRow {
                    location: locate(shown, input.records, line),
                    line: Some(line as i64),
                    reason,
                    raw: clip(&csv_line(&raw, delimiter), RAW_KEPT),
                };
                if cells.len() < header_len {
                    // a quote opened and never closed takes the lines after it into one
                    // cell: a short row with a cell holding line breaks and delimiters, or, in
                    // the last row, the rest of the file up to its final line break. What the
                    // file has after it cannot be told, so nothing is loaded (the days it
                    // covers would be restated from the rows before it alone)
                    let swallowed = cells.iter().find(|c| {
                        c.split_once('\n')
                            .is_some_and(|(_, rest)| rest.contains(delimiter))
                            || (c.ends_with('\n') && c.contains(delimiter))
                    });
                    if let Some(cell) = swallowed {
                        return Err(source_err(
                            shown,
                            format!(
                                "line {line}: a quote opened in this row is never closed, so \
                                 what follows it ({} line break(s)) was read as one cell; fix \
                                 the quoting (nothing was loaded)",
                                cell.matches('\n').count()
                            ),
                        ));
                    }
                    short_rows += 1;
                }
                if cells.len() > header_len
                    && cells[header_len..].iter().any(|c| !c.trim().is_empty())
                {
                    let extra: Vec<&str> = cells[header_len..]
                        .iter()
                        .filter(|c| !c.trim().is_empty())
                        .copied()
                        .collect();
                    rejected.push(reject(format!(
                        "row has {} cells but the header has {header_len}: extra `{}`",
                        cells.len(),
                        clip(&extra.join("`, `"), 200)
                    )));
                    continue;
                }
                // U+FFFD starts with byte 0xEF: rows without it or a NUL are not searched cell
                // by cell
                let suspect = memchr::memchr2(0xEF, 0, raw.as_bytes()).is_some();
                if suspect
                    && needed
                        .iter()
                        .any(|i| cells.get(*i).is_some_and(|c| c.contains('\u{fffd}')))
                {
                    rejected.push(reject(format!(
                        "bytes that are not valid {} text",
                        encoding.name()
                    )));
                    continue;
                }
                // a NUL character cannot be stored in PostgreSQL's text: refused on every database
                if let Some((_, i)) = columns
                    .dims
                    .iter()
                    .find(|(_, i)| suspect && cells.get(*i).is_some_and(|c| c.contains('\0')))
                {
                    rejected.push(reject(format!(
                        "column `{}`: a NUL character (byte 0) in the value",
                        columns.header[*i]
                    )));
                    continue;
                }

                if voting {
                    for cell in &cells {
                        file_votes.add(cell);
                    }
                    for (slot, i) in columns.sources.iter().enumerate() {
                        if let Some(cell) = cells.get(*i) {
                            column_votes[slot].add(cell);
                        }
                    }
                }
                chunk.lines.push(line as i64);
                Chunk::push_cell(
                    &mut chunk.date,
                    columns.date.and_then(|i| cells.get(i).copied()),
                );
                for (slot, (_, i)) in columns.dims.iter().enumerate() {
                    Chunk::push_cell(&mut chunk.dims[slot], cells.get(*i).copied());
                }
                for (slot, i) in columns.sources.iter().enumerate() {
                    Chunk::push_cell(&mut chunk.sources[slot], cells.get(*i).copied());
                }
                chunk.raw.append_value(&raw);
                if chunk.len() % 4096 == 0 {
                    cancel.check()?;
                }
                if chunk.len() >= CHUNK_ROWS {
                    let full = std::mem::replace(&mut chunk, new_chunk());
                    let votes = voting.then(|| (file_votes, std::mem::take(&mut column_votes)));
                    voting = false;
                    if chunks.send((full, votes)).is_err() {
                        // the cleaning thread stopped on an error, which it returns
                        return Ok(());
                    }
                }
            }
            if chunk.len() > 0 {
                let votes = voting.then(|| (file_votes, std::mem::take(&mut column_votes)));
                // an error of the cleaning thread is what it returns
                let _ = chunks.send((chunk, votes));
            }
            Ok(())
        })();
        drop(chunks);
        let cleaned = cleaner
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        read?;
        cleaned
    })?;
    if !rejected.is_empty() {
        // rows refused while reading and while cleaning, in line order
        rejected.append(&mut state.rejected);
        rejected.sort_by_key(|row| row.line);
        state.rejected = rejected;
    }
    if short_rows > 0 {
        warnings.push(format!(
            "{shown}: {short_rows} row(s) have fewer cells than the header; their missing cells \
             are read as missing"
        ));
    }
    if after_table > 0 {
        warnings.push(format!(
            "{shown}:{}: the table ends at a blank line; {after_table} record(s) after it (another \
             table?) were not read; set [format] table to read another one",
            ended_at.unwrap_or(0)
        ));
        rows_skipped += after_table;
        if skipped.len() < SKIPPED_KEPT + 1 {
            skipped.push(SkippedLine {
                location: format!("{shown}:{}", ended_at.unwrap_or(0)),
                reason: format!("after the table: {after_table} more record(s), not read"),
                text: String::new(),
            });
        }
    }
    if let Some((count, line)) = stated_rows
        && count != rows_read
    {
        warnings.push(format!(
            "{shown}:{line}: the file says {count} rows, {rows_read} were read"
        ));
    }

    let (points, days) = state.finish()?;
    if state.censored_cells > 0 {
        warnings.push(format!(
            "{shown}: {} censored cell(s) such as `< 10%` read as missing",
            state.censored_cells
        ));
    }
    check_totals(&state, &totals, &points, &mut warnings);
    Ok(FileRead {
        points,
        days,
        rows_read,
        rows_skipped,
        rejected: std::mem::take(&mut state.rejected),
        skipped,
        warnings,
    })
}

/// Reads the next record; returns its first line and how many blank lines the reader skipped
/// before it. Line endings are normalised, so every record ends with exactly one LF.
fn next_record<R: Read>(
    reader: &mut csv::Reader<R>,
    record: &mut csv::StringRecord,
    line_offset: u64,
) -> csv::Result<Option<(u64, u64)>> {
    if !reader.read_record(record)? {
        return Ok(None);
    }
    let scan_start = record.position().map_or(1, |p| p.line());
    let last_line = reader.position().line().saturating_sub(1).max(scan_start);
    let start = last_line.saturating_sub(newlines(record)).max(scan_start);
    Ok(Some((start + line_offset, start - scan_start)))
}

/// Years outside this range are typing or export errors, not data.
const EARLIEST_YEAR: i32 = 1900;
const LATEST_YEAR: i32 = 2199;

fn plausible_day(day: &NaiveDate) -> bool {
    (EARLIEST_YEAR..=LATEST_YEAR).contains(&chrono::Datelike::year(day))
}

/// At most `max` characters of `text`, marked when cut.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}… ({} characters)", &text[..i], text.chars().count()),
        None => text.to_string(),
    }
}

/// What joins a row's cells while it is read (a control character no export has).
const CELL_SEPARATOR: char = '\u{1f}';

/// A row's cells, joined by [`CELL_SEPARATOR`], as a CSV line: the cells holding the
/// delimiter, a quote or a line break quoted, so a stored rejected row keeps its cells apart.
fn csv_line(cells: &str, delimiter: char) -> String {
    let mut line = String::with_capacity(cells.len() + 2);
    for (i, cell) in cells.split(CELL_SEPARATOR).enumerate() {
        if i > 0 {
            line.push(delimiter);
        }
        if cell.contains([delimiter, '"', '\n']) {
            line.push('"');
            line.push_str(&cell.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(cell);
        }
    }
    line
}

fn newlines(record: &csv::StringRecord) -> u64 {
    // the cells side by side, without their delimiters and quotes
    memchr::memchr_iter(b'\n', record.as_slice().as_bytes()).count() as u64
}

/// Where a metric's cells are among the chunk's source columns.
struct MetricSlots {
    value: Option<usize>,
    times: Option<usize>,
    filters: Vec<(usize, CellFilter)>,
}

impl FileState<'_> {
    fn slots(&self, metric: &MetricColumn) -> MetricSlots {
        let slot = |names: &[String]| {
            find_column(&self.columns.header, names).map(|i| self.columns.source_slot(i))
        };
        MetricSlots {
            value: metric.column.as_ref().and_then(|c| slot(&names(c))),
            times: metric
                .times
                .as_ref()
                .and_then(|t| slot(std::slice::from_ref(t))),
            filters: metric
                .filter
                .iter()
                .filter_map(|(column, f)| {
                    slot(std::slice::from_ref(column)).map(|s| (s, f.clone()))
                })
                .collect(),
        }
    }

    fn decide_locales(&mut self) {
        let configured = self
            .config
            .format
            .decimal
            .as_deref()
            .and_then(|d| d.chars().next());
        let by_delimiter = if self.delimiter == ';' { ',' } else { '.' };
        let thousands = self.config.format.thousands.as_deref();
        let locales: Vec<NumberLocale> = self
            .column_votes
            .iter()
            .enumerate()
            .map(|(slot, votes)| {
                let decimal = configured
                    .or(votes.decision())
                    .or(self.file_votes.decision())
                    .unwrap_or(by_delimiter);
                let column = &self.columns.header[self.columns.sources[slot]];
                tracing::debug!(
                    file = self.shown,
                    column = %column,
                    decimal = %decimal,
                    "number locale"
                );
                NumberLocale::new(decimal, thousands)
            })
            .collect();
        self.guessed = self
            .column_votes
            .iter()
            .map(|votes| configured.is_none() && votes.decision().is_none())
            .collect();
        self.locales = Some(locales);
    }

    /// Cleans one chunk: rejects what cannot be read and sums the rest by day and dimensions.
    fn process(&mut self, chunk: Chunk) -> Result<(), ConnectorError> {
        let shown = self.shown;
        if self.locales.is_none() {
            self.decide_locales();
        }
        let rows = chunk.len();
        let date_cells = chunk.date.finish();
        let days: Vec<Option<i32>> = match self.fixed_period {
            Some((start, _)) => vec![Some(day_number(start)); rows],
            None => {
                if self.date_format.is_none() {
                    let detected =
                        clean::detect_date_format(date_cells.iter().flatten(), self.timezone);
                    let sample = date_cells
                        .iter()
                        .flatten()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let column = self
                        .columns
                        .date
                        .map(|i| self.columns.header[i].clone())
                        .unwrap_or_default();
                    self.date_format = Some(detected.ok_or_else(|| {
                        source_err(
                            shown,
                            format!(
                                "cannot tell the date format of column `{column}` (for example \
                                 `{sample}`); set [date] format, such as \"%d/%m/%Y\""
                            ),
                        )
                    })?);
                }
                let format = self.date_format.as_ref().expect("decided above");
                if self.date_cache.len() > 200_000 {
                    self.date_cache.clear();
                }
                date_cells
                    .iter()
                    .map(|cell| {
                        let cell = cell?;
                        if let Some(day) = self.date_cache.get(cell) {
                            return *day;
                        }
                        let day = format
                            .day(cell, self.timezone, self.naive_zone)
                            .filter(plausible_day)
                            .map(day_number);
                        self.date_cache.insert(cell.to_string(), day);
                        day
                    })
                    .collect()
            }
        };

        let mut columns = vec![
            Column::new("__day".into(), days),
            date_cells.into_column(),
            chunk.raw.finish().into_column(),
        ];
        columns.extend(chunk.dims.into_iter().map(|b| b.finish().into_column()));
        // a column whose cells are all plain numbers is parsed here in one pass; the others
        // (currency, %, durations, placeholders, censored values) go through the full rules
        let locales = self.locales.clone().expect("decided above");
        let mut plain = Vec::with_capacity(chunk.sources.len());
        for (slot, builder) in chunk.sources.into_iter().enumerate() {
            let cells = builder.finish();
            if self.guessed[slot] && self.doubts[slot].0.is_none() {
                self.doubts[slot].0 = cells
                    .iter()
                    .zip(&chunk.lines)
                    .find(|(c, _)| c.is_some_and(clean::ambiguous_mark))
                    .map(|(c, line)| (*line, c.unwrap_or_default().to_string()));
            }
            match clean::plain_numbers(&cells, &locales[slot]) {
                Some(values) => {
                    columns.push(Column::new(format!("__v{slot}").into(), values));
                    plain.push(true);
                }
                None => {
                    // which cells have their thousands separators where they can stand
                    let grouped: Vec<bool> = cells
                        .iter()
                        .map(|c| c.is_none_or(|c| clean::grouping_ok(c, &locales[slot])))
                        .collect();
                    if self.guessed[slot] && self.doubts[slot].1.is_none() {
                        self.doubts[slot].1 = grouped
                            .iter()
                            .zip(cells.iter().zip(&chunk.lines))
                            .find(|(ok, _)| !**ok)
                            .map(|(_, (c, line))| (*line, c.unwrap_or_default().to_string()));
                    }
                    columns.push(Column::new(format!("__g{slot}").into(), grouped));
                    plain.push(false);
                }
            }
            if let (Some(read), Some(refused)) = &self.doubts[slot] {
                let column = &self.columns.header[self.columns.sources[slot]];
                let mark = locales[slot].decimal;
                let other = if mark == ',' { '.' } else { ',' };
                return Err(source_err(
                    shown,
                    format!(
                        "column `{column}`: the first rows did not tell its decimal mark, so \
                         `{}` on line {} was read with `{mark}` as the decimal mark, but `{}` on \
                         line {} reads only with `{other}`; set [format] decimal = \"{other}\" \
                         (or \"{mark}\") in the connector (nothing was loaded)",
                        clip(&read.1, 40),
                        read.0,
                        clip(&refused.1, 40),
                        refused.0
                    ),
                ));
            }
            columns.push(cells.into_column());
        }
        columns.push(Column::new("__line".into(), chunk.lines));
        let frame =
            DataFrame::new_infer_height(columns).map_err(frame_err(format!("{shown}: chunk")))?;
        let number = |slot: usize| {
            if plain[slot] {
                (col(format!("__v{slot}")), lit(false), lit(false))
            } else {
                let (value, bad, censored) = number_expr(col(format!("__c{slot}")), &locales[slot]);
                let grouped = col(format!("__g{slot}"));
                let misgrouped = grouped.clone().not().and(censored.clone().not());
                let value = when(grouped)
                    .then(value)
                    .otherwise(lit(NULL).cast(DataType::Float64));
                (value, bad.or(misgrouped), censored)
            }
        };

        // values, bad cells and censored cells per metric
        let mut exprs = Vec::new();
        let mut bads: Vec<(i32, Expr)> = Vec::new();
        for (i, metric) in self.config.metrics.iter().enumerate() {
            let slots = self.slots(metric);
            let condition = slots
                .filters
                .iter()
                .fold(None::<Expr>, |acc, (slot, filter)| {
                    let c = cell_condition(col(format!("__c{slot}")), filter);
                    Some(match acc {
                        Some(a) => a.and(c),
                        None => c,
                    })
                });
            let null = || lit(NULL).cast(DataType::Float64);
            let (value, censored) = match slots.value {
                Some(slot) => {
                    let (mut value, mut bad, censored) = number(slot);
                    if let Some(t) = slots.times {
                        let (factor, factor_bad, _) = number(t);
                        value = value * factor;
                        bads.push((1000 + i as i32, factor_bad.and(bad.clone().not())));
                    }
                    value = value * lit(metric.scale.unwrap_or(1.0));
                    if let Some(c) = &condition {
                        value = when(c.clone()).then(value).otherwise(null());
                        bad = bad.and(c.clone());
                    }
                    bads.push((i as i32 + 1, bad));
                    (value, censored)
                }
                None => {
                    let one = match &condition {
                        Some(c) => when(c.clone()).then(lit(1.0)).otherwise(lit(0.0)),
                        None => lit(1.0),
                    };
                    (one, lit(false))
                }
            };
            exprs.push(value.alias(format!("__m{i}")));
            exprs.push(censored.cast(DataType::UInt32).alias(format!("__z{i}")));
        }
        let mut reason = lit(NULL).cast(DataType::Int32);
        for (code, bad) in bads.into_iter().rev() {
            reason = when(bad.fill_null(lit(false)))
                .then(lit(code))
                .otherwise(reason);
        }
        reason = when(col("__day").is_null())
            .then(lit(0i32))
            .otherwise(reason);
        if let Some((from, to)) = self.config.accept {
            let outside = col("__day")
                .lt(lit(day_number(from)))
                .or(col("__day").gt(lit(day_number(to))));
            reason = when(outside.fill_null(lit(false)))
                .then(lit(OUTSIDE))
                .otherwise(reason);
        }
        exprs.push(reason.alias("__reason"));
        for i in 0..self.columns.dims.len() {
            exprs.push(
                col(format!("__d{i}"))
                    .str()
                    .strip_chars(lit(NULL))
                    .alias(format!("__d{i}")),
            );
        }
        let frame = frame
            .lazy()
            .with_columns(exprs)
            .collect()
            .map_err(frame_err(format!("{shown}: cleaning values")))?;

        self.collect_rejects(&frame)?;
        self.add_to_sums(&frame)
    }

    /// Adds the accepted rows of a cleaned chunk to the sums by (day, dimension set).
    fn add_to_sums(&mut self, frame: &DataFrame) -> Result<(), ConnectorError> {
        let err = |what: &str| frame_err(format!("{}: reading {what}", self.shown));
        let days = frame
            .column("__day")
            .and_then(|c| c.i32().cloned())
            .map_err(err("days"))?;
        let reasons = frame
            .column("__reason")
            .and_then(|c| c.i32().cloned())
            .map_err(err("reasons"))?;
        let mut dims = Vec::new();
        for i in 0..self.columns.dims.len() {
            let column = frame.column(&format!("__d{i}"));
            dims.push(
                column
                    .and_then(|c| c.str().cloned())
                    .map_err(err("dimensions"))?,
            );
        }
        let (mut values, mut censored) = (Vec::new(), Vec::new());
        for i in 0..self.config.metrics.len() {
            let value = frame.column(&format!("__m{i}"));
            values.push(
                value
                    .and_then(|c| c.f64().cloned())
                    .map_err(err("values"))?,
            );
            let flag = frame.column(&format!("__z{i}"));
            censored.push(flag.and_then(|c| c.u32().cloned()).map_err(err("values"))?);
        }
        let sums = &mut self.sums;
        sums.metrics = values.len();
        // first each row's group (or none for a rejected row), then the values metric by
        // metric: tight loops whose cache misses on the big tables overlap
        let mut slots: Vec<Option<usize>> = Vec::with_capacity(frame.height());
        let mut dim_cells: Vec<_> = dims.iter().map(|c| c.iter()).collect();
        let mut key: Vec<u8> = Vec::new();
        for (day, reason) in days.iter().zip(reasons.iter()) {
            key.clear();
            for cells in &mut dim_cells {
                set_key_cell(&mut key, cells.next().flatten());
            }
            slots.push(match (reason, day) {
                (None, Some(day)) => Some(sums.slot(day, &key)),
                _ => None,
            });
        }
        for (m, (values, censored)) in values.iter().zip(&censored).enumerate() {
            for ((slot, value), censored) in slots.iter().zip(values.iter()).zip(censored.iter()) {
                let Some(slot) = slot else { continue };
                self.censored_cells += u64::from(censored.unwrap_or(0));
                if let Some(value) = value {
                    sums.values[slot + m] += value;
                    sums.seen[slot + m] = true;
                }
            }
        }
        Ok(())
    }

    fn collect_rejects(&mut self, frame: &DataFrame) -> Result<(), ConnectorError> {
        let err = |what: &str| frame_err(format!("{}: reading {what}", self.shown));
        let reasons = frame
            .column("__reason")
            .and_then(|c| c.i32().cloned())
            .map_err(err("reasons"))?;
        if reasons.null_count() == reasons.len() {
            return Ok(());
        }
        let lines = frame
            .column("__line")
            .and_then(|c| c.i64().cloned())
            .map_err(err("lines"))?;
        let raws = frame
            .column("__raw")
            .and_then(|c| c.str().cloned())
            .map_err(err("rows"))?;
        let cell = |name: String, row: usize| -> String {
            frame
                .column(&name)
                .ok()
                .and_then(|c| c.str().ok().and_then(|s| s.get(row).map(str::to_string)))
                .unwrap_or_default()
        };
        for (row, code) in reasons.iter().enumerate() {
            let Some(code) = code else { continue };
            let line = lines.get(row).unwrap_or_default();
            let reason = if code == OUTSIDE {
                let column = self
                    .columns
                    .date
                    .map(|i| self.columns.header[i].clone())
                    .unwrap_or_default();
                let (from, to) = self.config.accept.unwrap_or_default();
                format!(
                    "column `{column}`: `{}` is outside the days asked for ({from}..{to})",
                    clip(&cell("__date".into(), row), 100)
                )
            } else if code == 0 {
                let column = self
                    .columns
                    .date
                    .map(|i| self.columns.header[i].clone())
                    .unwrap_or_default();
                let value = cell("__date".into(), row);
                let format = self
                    .date_format
                    .as_ref()
                    .map(|f| f.format.clone())
                    .unwrap_or_default();
                if value.trim().is_empty() {
                    format!("column `{column}`: no date")
                } else if self
                    .date_format
                    .as_ref()
                    .and_then(|f| f.day(&value, self.timezone, self.naive_zone))
                    .is_some()
                {
                    format!(
                        "column `{column}`: `{}` is outside the years {}-{}",
                        clip(&value, 100),
                        EARLIEST_YEAR,
                        LATEST_YEAR
                    )
                } else {
                    format!(
                        "column `{column}`: `{}` does not match date format `{format}`",
                        clip(&value, 100)
                    )
                }
            } else {
                let index = if code >= 1000 { code - 1000 } else { code - 1 } as usize;
                let metric = &self.config.metrics[index];
                let slots = self.slots(metric);
                let slot = if code >= 1000 {
                    slots.times
                } else {
                    slots.value
                }
                .unwrap_or(0);
                let column = &self.columns.header[self.columns.sources[slot]];
                let text = cell(format!("__c{slot}"), row);
                let locale = &self.locales.as_ref().expect("decided before cleaning")[slot];
                let hint = if clean::grouping_ok(&text, locale) {
                    String::new()
                } else {
                    format!(
                        " with `{}` as the decimal mark (its other marks are read as thousands \
                         separators, which need groups of three digits); set [format] decimal \
                         if the column uses another",
                        locale.decimal
                    )
                };
                format!(
                    "column `{column}`: `{}` is not a number{hint}",
                    clip(&text, 100)
                )
            };
            self.rejected.push(RejectedRow {
                location: locate(self.shown, self.records, line as u64),
                line: Some(line),
                reason,
                raw: clip(
                    &csv_line(raws.get(row).unwrap_or_default(), self.delimiter),
                    RAW_KEPT,
                ),
            });
        }
        Ok(())
    }

    /// Turns the sums into points: one per group and metric that any row gave a value.
    fn finish(&mut self) -> Result<(Points, BTreeSet<NaiveDate>), ConnectorError> {
        let Sums {
            sets,
            groups,
            mut keys,
            mut values,
            mut seen,
            ..
        } = std::mem::take(&mut self.sums);
        drop(groups);
        let mut points = Points::default();
        // the days covered, marked from the first day on (one bit of work per group)
        let first = keys.iter().map(|(day, _)| *day).min().unwrap_or_default();
        let last = keys.iter().map(|(day, _)| *day).max().unwrap_or(first);
        let mut covered_days = vec![false; (last - first) as usize + 1];
        for (day, _) in &keys {
            covered_days[(day - first) as usize] = true;
        }
        let covered = (first..=last)
            .filter(|day| covered_days[(day - first) as usize])
            .map(day_from_number)
            .collect();

        // one map per distinct dimension set, shared by its points on every day
        let mut maps: Vec<Option<Dimensions>> = vec![None; sets.len()];
        for (key, number) in sets {
            let mut dimensions = BTreeMap::new();
            let mut rest: &[u8] = &key;
            for (name, _) in &self.columns.dims {
                match set_key_next(&mut rest) {
                    Some(value) => {
                        dimensions.insert(name.clone(), value.to_string());
                    }
                    None => continue,
                }
            }
            for (name, value) in &self.config.constants {
                dimensions.insert(name.clone(), value.clone());
            }
            maps[number as usize] = Some(Arc::new(dimensions));
        }
        for map in maps {
            points.add_set(map.expect("every set number is given once"));
        }
        let metrics: Vec<u32> = self
            .config
            .metrics
            .iter()
            .map(|m| points.metric_index(&m.name))
            .collect();
        // reserved once: growing a vector of millions of points copies it and holds both
        // copies for a moment
        points.reserve(seen.iter().filter(|s| **s).count());
        let until = |day: i32| self.fixed_period.map_or(day, |(_, end)| day_number(end));
        // the groups from the last one back, giving back the memory of the sums as they go
        // while the points grow
        let width = metrics.len();
        while let Some((day, set)) = keys.pop() {
            let from = keys.len() * width;
            for (m, (value, seen)) in values[from..].iter().zip(&seen[from..]).enumerate() {
                if !seen {
                    continue;
                }
                if !value.is_finite() {
                    return Err(source_err(
                        self.shown,
                        format!(
                            "`{}` on {} sums to a number too large to store; check the values",
                            self.config.metrics[m].name,
                            day_from_number(day)
                        ),
                    ));
                }
                points.push_row(PointRow {
                    value: *value,
                    day,
                    until: until(day),
                    set,
                    metric: metrics[m],
                });
            }
            values.truncate(from);
            seen.truncate(from);
            if keys.len() % (1 << 16) == 0 {
                values.shrink_to_fit();
                seen.shrink_to_fit();
                keys.shrink_to_fit();
            }
        }
        Ok((points, covered))
    }
}

/// The running sums of one file by (day, dimension set): each distinct set of dimension cells
/// gets a number, each (day, set) group a slot per metric. Memory follows the number of
/// groups, not the length of the file.
#[derive(Default)]
struct Sums {
    /// Each distinct set of dimension cells (as made by [`set_key_cell`]) and its number.
    sets: HashMap<Box<[u8]>, u32, foldhash::fast::RandomState>,
    /// Each (day, set) group and its slot.
    groups: HashMap<(i32, u32), u32, foldhash::fast::RandomState>,
    /// Each group's day and set.
    keys: Vec<(i32, u32)>,
    /// How many metrics each group has a slot for.
    metrics: usize,
    /// Each group's sum of each metric, group after group (the slots a row adds to are
    /// neighbours: one cache miss per row, not one per metric), and whether any row gave the
    /// slot a value.
    values: Vec<f64>,
    seen: Vec<bool>,
}

impl Sums {
    /// The first slot of the group of a day and a set of cells, made if new.
    fn slot(&mut self, day: i32, key: &[u8]) -> usize {
        let set = match self.sets.get(key) {
            Some(set) => *set,
            None => {
                let set = self.sets.len() as u32;
                self.sets.insert(key.into(), set);
                set
            }
        };
        let next = self.keys.len() as u32;
        let group = *self.groups.entry((day, set)).or_insert(next);
        if group == next {
            self.keys.push((day, set));
            self.values.resize(self.values.len() + self.metrics, 0.0);
            self.seen.resize(self.seen.len() + self.metrics, false);
        }
        group as usize * self.metrics
    }
}

/// Adds a dimension cell to a set's key: the text and an end mark, or one mark for no value
/// (a missing cell and an empty one both mean the dimension is not there). Neither mark can
/// occur in UTF-8.
fn set_key_cell(key: &mut Vec<u8>, cell: Option<&str>) {
    match cell.filter(|c| !c.is_empty()) {
        Some(text) => {
            key.extend_from_slice(text.as_bytes());
            key.push(0xFE);
        }
        None => key.push(0xFF),
    }
}

/// Takes the next cell off a set's key (see [`set_key_cell`]).
fn set_key_next<'a>(key: &mut &'a [u8]) -> Option<&'a str> {
    if key.first() == Some(&0xFF) {
        *key = &key[1..];
        return None;
    }
    let end = key.iter().position(|b| *b == 0xFE).unwrap_or(key.len());
    let text = std::str::from_utf8(&key[..end]).expect("keys are made of UTF-8 cells");
    *key = key.get(end + 1..).unwrap_or_default();
    Some(text)
}

/// A `where` condition on one cell.
fn cell_condition(cell: Expr, filter: &CellFilter) -> Expr {
    let cell = cell.str().strip_chars(lit(NULL));
    let condition = match filter {
        CellFilter::Values(values) => values.values().iter().fold(lit(false), |acc, v| {
            acc.or(cell.clone().eq(lit(v.trim().to_string())))
        }),
        CellFilter::Range { min, max } => {
            let number = cell
                .str()
                .extract(lit(r"^([-+]?\d+(?:[.,]\d+)?)"), 1)
                .str()
                .replace_all(lit(","), lit("."), true)
                .cast(DataType::Float64);
            let mut c = number.clone().is_not_null();
            if let Some(min) = min {
                c = c.and(number.clone().gt_eq(lit(*min)));
            }
            if let Some(max) = max {
                c = c.and(number.lt_eq(lit(*max)));
            }
            c
        }
    };
    condition.fill_null(lit(false))
}

/// Compares totals rows with the sums of what was loaded; a mismatch is a warning.
fn check_totals(
    state: &FileState,
    totals: &[(u64, Vec<String>)],
    points: &Points,
    warnings: &mut Vec<String>,
) {
    if totals.is_empty() {
        return;
    }
    let Some(locales) = &state.locales else {
        return;
    };
    for metric in &state.config.metrics {
        if !metric.filter.is_empty()
            || metric.times.is_some()
            || !state.config.counters.contains(&metric.name)
        {
            continue;
        }
        let slots = state.slots(metric);
        let Some(slot) = slots.value else { continue };
        let index = state.columns.sources[slot];
        let loaded: f64 = points
            .rows()
            .iter()
            .filter(|r| **points.metric(r) == *metric.name)
            .map(|r| r.value)
            .sum();
        // a total matches to the last digit it shows, give or take 0.01 % for the rounding of
        // the rows it sums (4 388 against 4 387 loaded is a mismatch)
        let stated: Vec<(u64, f64, f64)> = totals
            .iter()
            .filter_map(|(line, cells)| {
                let cell = cells.get(index)?;
                let scale = metric.scale.unwrap_or(1.0);
                let value = parse_number(cell, &locales[slot])? * scale;
                let decimals = cell.rsplit_once(locales[slot].decimal).map_or(0, |(_, f)| {
                    f.chars().take_while(char::is_ascii_digit).count() as i32
                });
                Some((*line, value, 0.5 * 10f64.powi(-decimals) * scale.abs()))
            })
            .collect();
        let matches = |v: f64, shown: f64| (v - loaded).abs() <= shown + 1e-4 * v.abs();
        if let Some((line, value, _)) = stated.first()
            && !stated.iter().any(|(_, v, shown)| matches(*v, *shown))
        {
            warnings.push(format!(
                "{}:{line}: the totals row says {value} for `{}`, the loaded rows sum to {loaded}",
                state.shown, state.columns.header[index]
            ));
        } else if !stated.is_empty() {
            tracing::debug!(
                file = state.shown,
                metric = %metric.name,
                total = loaded,
                "totals row matches"
            );
        }
    }
}
