//! Connectors: each reads one source and turns it into daily points.
//!
//! A connector is a typed config plus the small [`Source`] trait. The shared ingest loop
//! (`crate::ingest`) owns runs, storage and telemetry, so a new kind is one file here: a config
//! struct with `deny_unknown_fields`, a `Source` implementation, and a line in
//! [`ConnectorKind`] and [`KINDS`].

pub mod csv;
pub mod http;
pub mod points;

pub use points::{Dimensions, PointRow, Points};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::NaiveDate;

/// One number: a metric on a day for a set of dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub metric: std::sync::Arc<str>,
    pub day: NaiveDate,
    /// The last day the value covers: `day` itself for daily data, later for a report that
    /// covers a whole period without a date column.
    pub until: NaiveDate,
    /// Shared by the points of one row group (every metric of a day and dimension set).
    pub dimensions: std::sync::Arc<BTreeMap<String, String>>,
    pub value: f64,
}

/// A row that could not be read, kept with where it was and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    /// `file:line`, or a URL with a record index.
    pub location: String,
    pub line: Option<i64>,
    pub reason: String,
    /// The row's text as read.
    pub raw: String,
}

/// A line that is not data: preamble, header search, totals, empty rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    pub location: String,
    pub reason: String,
    pub text: String,
}

/// What one connector run read.
#[derive(Debug, Default)]
pub struct Extract {
    pub points: Points,
    /// Every day the run covers: its points replace the stored points of these days.
    pub days: BTreeSet<NaiveDate>,
    pub rows_read: u64,
    pub rows_loaded: u64,
    /// Lines that are layout, not data (never counted in `rows_read`).
    pub rows_skipped: u64,
    pub rejected: Vec<RejectedRow>,
    /// The first skipped lines with the reason, for the preview.
    pub skipped: Vec<SkippedLine>,
    /// The files or URLs read.
    pub sources: Vec<String>,
    /// Things an analyst should know that did not stop the run.
    pub warnings: Vec<String>,
    /// What the source said about every number of the run: `sampled`, `thresholded`,
    /// `rolled_up` (stored on the points, shown on the scores that use them).
    pub flags: BTreeSet<String>,
    /// The days an HTTP source was asked for.
    pub window: Option<(NaiveDate, NaiveDate)>,
}

/// Why a connector run produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The source could not be read at all.
    #[error("{0}")]
    Source(String),
    /// The run was asked to stop (timeout or shutdown).
    #[error("cancelled before the read finished")]
    Cancelled,
    /// polars failed on the data.
    #[error("{context}: {source}")]
    Frame {
        context: String,
        #[source]
        source: polars::error::PolarsError,
    },
}

/// Asks a running read to stop: checked between chunks of rows, so a read stops within a
/// fraction of a second when a run times out or the service shuts down.
#[derive(Debug, Clone, Default)]
pub struct Cancel(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// An error when cancelled, for `?` in read loops.
    pub fn check(&self) -> Result<(), ConnectorError> {
        if self.is_cancelled() {
            Err(ConnectorError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Which days a run asks a dated source (an HTTP API) for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fetch {
    /// The last day a committed run of this connector covered.
    pub position: Option<NaiveDate>,
    /// Days asked for explicitly (`sync --from --to`), instead of the incremental window.
    pub range: Option<(NaiveDate, NaiveDate)>,
}

/// What a run gives a source.
pub struct RunContext<'a> {
    pub project_dir: &'a Path,
    pub timezone: chrono_tz::Tz,
    pub cancel: &'a Cancel,
    pub fetch: Fetch,
}

/// What every connector kind provides.
pub trait Source {
    /// Reads the source and returns its points. Blocking: call it off the async runtime, and
    /// check `cancel` now and then.
    fn extract(&self, ctx: &RunContext) -> Result<Extract, ConnectorError>;
}

/// The connector kinds krscore knows, by their `type` name.
pub const KINDS: &[&str] = &[
    "csv",
    "http",
    "ga4",
    "yandex_metrica",
    "yandex_direct",
    "google_sheets",
];

/// A connector's kind-specific configuration.
#[derive(Debug, Clone)]
pub enum ConnectorKind {
    Csv(Box<csv::CsvConfig>),
    /// `http` and every preset, expanded.
    Http(Box<http::HttpConfig>),
}

/// A validated connector.
#[derive(Debug, Clone)]
pub struct Connector {
    /// The file name without `.toml`.
    pub name: String,
    /// The file, relative to the project directory.
    pub file: String,
    pub timezone: chrono_tz::Tz,
    pub kind: ConnectorKind,
}

impl Connector {
    pub fn source(&self) -> &dyn Source {
        match &self.kind {
            ConnectorKind::Csv(config) => config.as_ref(),
            ConnectorKind::Http(config) => config.as_ref(),
        }
    }

    /// The table part of the configuration: columns, dimensions and metrics.
    pub fn table(&self) -> &csv::CsvConfig {
        match &self.kind {
            ConnectorKind::Csv(config) => config.as_ref(),
            ConnectorKind::Http(config) => &config.table,
        }
    }

    /// Metric names this connector writes.
    pub fn metric_names(&self) -> BTreeSet<String> {
        self.table()
            .metrics
            .iter()
            .map(|m| m.name.clone())
            .collect()
    }

    /// Dimension names its points carry.
    pub fn dimension_names(&self) -> BTreeSet<String> {
        let table = self.table();
        table
            .dimensions
            .keys()
            .chain(table.constants.keys())
            .cloned()
            .collect()
    }

    /// The connector's schedule line, if it runs on one.
    pub fn schedule(&self) -> Option<&str> {
        self.table()
            .schedule
            .as_deref()
            .filter(|s| !s.trim().is_empty())
    }

    /// Days without new data after which KRs on this connector's metrics are stale.
    pub fn stale_after_days(&self) -> Option<u32> {
        self.table().stale_after_days
    }

    /// Dimensions read from columns (their values vary from row to row).
    pub fn varying_dimensions(&self) -> BTreeSet<String> {
        self.table().dimensions.keys().cloned().collect()
    }

    /// Whether runs ask the source for a window of days (and so keep a position).
    pub fn is_incremental(&self) -> bool {
        matches!(&self.kind, ConnectorKind::Http(config) if config.window.is_some())
    }

    pub fn extract(&self, project_dir: &Path) -> Result<Extract, ConnectorError> {
        self.extract_with(project_dir, &Cancel::default(), Fetch::default())
    }

    pub fn extract_with(
        &self,
        project_dir: &Path,
        cancel: &Cancel,
        fetch: Fetch,
    ) -> Result<Extract, ConnectorError> {
        self.source().extract(&RunContext {
            project_dir,
            timezone: self.timezone,
            cancel,
            fetch,
        })
    }
}
