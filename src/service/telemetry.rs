//! Prometheus metrics of the service, encoded in the text format at `/metrics`.
//!
//! Each counter is bumped where the event is logged, so logs and metrics tell the same story.
//! To add a metric, register it in [`Metrics::new`] and update it next to its log line.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ingest::RunOutcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabel {
    pub connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabel {
    pub connector: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    pub runs: Family<RunLabel, Counter>,
    pub rows_read: Family<ConnectorLabel, Counter>,
    pub rows_loaded: Family<ConnectorLabel, Counter>,
    pub rows_rejected: Family<ConnectorLabel, Counter>,
    pub run_seconds: Family<ConnectorLabel, Histogram>,
    pub last_success: Family<ConnectorLabel, Gauge<f64, AtomicU64>>,
    pub skipped_ticks: Family<ConnectorLabel, Counter>,
    pub krs_by_status: Family<StatusLabel, Gauge>,
    pub newest_score_age: Gauge<f64, AtomicU64>,
    /// When the newest score was computed (seconds since the epoch), for the age at scrape.
    pub newest_score_at: Mutex<Option<f64>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("krscore");
        let runs = Family::<RunLabel, Counter>::default();
        let rows_read = Family::<ConnectorLabel, Counter>::default();
        let rows_loaded = Family::<ConnectorLabel, Counter>::default();
        let rows_rejected = Family::<ConnectorLabel, Counter>::default();
        let run_seconds = Family::<ConnectorLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 2.0, 14))
        });
        let last_success = Family::<ConnectorLabel, Gauge<f64, AtomicU64>>::default();
        let skipped_ticks = Family::<ConnectorLabel, Counter>::default();
        let krs_by_status = Family::<StatusLabel, Gauge>::default();
        let newest_score_age = Gauge::<f64, AtomicU64>::default();
        registry.register("runs", "Connector runs by outcome", runs.clone());
        registry.register(
            "rows_read",
            "Rows read by connector runs",
            rows_read.clone(),
        );
        registry.register(
            "rows_loaded",
            "Rows loaded by connector runs",
            rows_loaded.clone(),
        );
        registry.register(
            "rows_rejected",
            "Rows rejected by connector runs",
            rows_rejected.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Connector run duration",
            run_seconds.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When each connector last succeeded",
            last_success.clone(),
        );
        registry.register(
            "skipped_ticks",
            "Scheduled ticks skipped because the previous run was still going",
            skipped_ticks.clone(),
        );
        registry.register(
            "key_results",
            "Key results by pace status",
            krs_by_status.clone(),
        );
        registry.register(
            "newest_score_age_seconds",
            "Seconds since the newest score was computed",
            newest_score_age.clone(),
        );
        Metrics {
            registry,
            runs,
            rows_read,
            rows_loaded,
            rows_rejected,
            run_seconds,
            last_success,
            skipped_ticks,
            krs_by_status,
            newest_score_age,
            newest_score_at: Mutex::new(None),
        }
    }

    /// Counts a finished connector run.
    pub fn record_run(&self, outcome: &RunOutcome, seconds: f64) {
        let connector = ConnectorLabel {
            connector: outcome.connector.clone(),
        };
        let result = if outcome.succeeded {
            "succeeded"
        } else {
            "failed"
        };
        self.runs
            .get_or_create(&RunLabel {
                connector: outcome.connector.clone(),
                outcome: result.into(),
            })
            .inc();
        self.rows_read
            .get_or_create(&connector)
            .inc_by(outcome.rows_read);
        self.rows_loaded
            .get_or_create(&connector)
            .inc_by(outcome.rows_loaded);
        self.rows_rejected
            .get_or_create(&connector)
            .inc_by(outcome.rows_rejected);
        self.run_seconds.get_or_create(&connector).observe(seconds);
        if outcome.succeeded {
            self.last_success
                .get_or_create(&connector)
                .set(now_seconds());
        }
    }

    /// The text exposition, with the score age brought up to date.
    pub fn encode(&self) -> String {
        if let Some(at) = *self.newest_score_at.lock().expect("metrics lock") {
            self.newest_score_age.set(now_seconds() - at);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a string");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

pub fn now_seconds() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}
