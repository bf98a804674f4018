//! Storage on SQLite (the embedded default) or PostgreSQL (production), with the same tables
//! on both. Migrations live in `migrations/sqlite` and `migrations/postgres`, numbered alike,
//! and run on connect.
//!
//! Most statements are written once and run on either pool through [`on_pool!`], which expands
//! the same code for each database so sqlx checks types per driver. Where the dialects differ
//! (bulk loading, JSON), each database has its own function. To add an operation, write it
//! with `on_pool!` first and split it only where the SQL must differ.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection};

use crate::connector::csv::day_from_number;
use crate::connector::{PointRow, Points, RejectedRow};
use crate::settings::redact_url;

mod sqlite_direct;

/// A connection pool to one of the supported databases.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code on whichever pool the store holds.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// A stored point as the scorer reads it. Points with the same metric or dimension set share
/// one copy of it.
#[derive(Debug, Clone)]
pub struct StoredPoint {
    pub metric: Arc<str>,
    pub day: NaiveDate,
    pub period_end: NaiveDate,
    pub dimensions: Arc<BTreeMap<String, String>>,
    pub value: f64,
    pub run_id: i64,
    /// What the source said about the value (`sampled,thresholded`).
    pub flags: Option<String>,
}

/// How a finished ingest run went.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    pub rows_read: i64,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
    pub rows_skipped: i64,
    pub first_day: Option<NaiveDate>,
    pub last_day: Option<NaiveDate>,
    pub sources: String,
    /// What the source said about every point of the run (`sampled,thresholded`).
    pub flags: Option<String>,
}

/// What replacing a run's days changed (values equal to 12 significant digits count as
/// unchanged, so re-reading an export whose sums differ only in float rounding changes nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Points inserted or whose value changed.
    pub written: u64,
    /// Stored points of the covered days that the run no longer has.
    pub deleted: u64,
    /// The earliest day of a point written or deleted: the scores from it on may change.
    pub first_changed: Option<NaiveDate>,
}

impl WriteStats {
    fn changed(&mut self, day: Option<NaiveDate>) {
        self.first_changed = match (self.first_changed, day) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The columns of `kr_scores` that a scoring pass writes, in [`KrScoreRow`] order.
macro_rules! kr_columns {
    () => {
        "kr_id, objective_id, as_of, window_start, window_end, elapsed, kr_type, value, \
         baseline, target, target_original, target_effective, target_low, target_high, distance, \
         raw, score, score_original, grade, expected, expected_score, status, forecast, \
         forecast_score, spend, budget, budget_used, cost_per_point, stale, data_as_of, flags, \
         source_runs, definition_hash, reason"
    };
}

/// One row of `kr_scores`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct KrScoreRow {
    pub kr_id: String,
    pub objective_id: String,
    pub as_of: NaiveDate,
    pub window_start: NaiveDate,
    pub window_end: NaiveDate,
    pub elapsed: f64,
    pub kr_type: Option<String>,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    /// The target in force on the as-of day.
    pub target: Option<f64>,
    pub target_original: Option<f64>,
    /// The day the target in force took effect, when it is a revision.
    pub target_effective: Option<NaiveDate>,
    pub target_low: Option<f64>,
    pub target_high: Option<f64>,
    /// How far outside its band a `within` KR is.
    pub distance: Option<f64>,
    pub raw: Option<f64>,
    pub score: Option<f64>,
    pub score_original: Option<f64>,
    pub grade: Option<String>,
    pub expected: Option<f64>,
    pub expected_score: Option<f64>,
    pub status: Option<String>,
    pub forecast: Option<f64>,
    pub forecast_score: Option<f64>,
    pub spend: Option<f64>,
    pub budget: Option<f64>,
    pub budget_used: Option<f64>,
    pub cost_per_point: Option<f64>,
    pub stale: bool,
    pub data_as_of: Option<NaiveDate>,
    pub flags: Option<String>,
    pub source_runs: Option<String>,
    pub definition_hash: String,
    pub reason: Option<String>,
}

/// One row of `okr_reviews`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewRow {
    pub period: String,
    pub objective_id: String,
    pub kr_id: String,
    pub owner: String,
    pub as_of: NaiveDate,
    pub score: Option<f64>,
    pub raw: Option<f64>,
    pub zone: Option<String>,
}

/// One row of `objective_scores`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ObjectiveScoreRow {
    pub objective_id: String,
    pub as_of: NaiveDate,
    pub score: Option<f64>,
    pub grade: Option<String>,
    pub krs_scored: i64,
    pub krs_total: i64,
}

/// An objective or key result definition as synced to the database.
#[derive(Debug, Clone)]
pub struct ObjectiveDefinition {
    pub id: String,
    pub title: String,
    pub owner: Option<String>,
    pub period: String,
    pub window_start: NaiveDate,
    pub window_end: NaiveDate,
    pub timezone: String,
    pub source_file: String,
    pub key_results: Vec<KeyResultDefinition>,
}

#[derive(Debug, Clone)]
pub struct KeyResultDefinition {
    pub id: String,
    pub title: String,
    pub metric: String,
    pub metric_kind: String,
    pub unit: Option<String>,
    pub filter: BTreeMap<String, Vec<String>>,
    pub kr_type: Option<String>,
    pub baseline_spec: Option<String>,
    pub target_spec: String,
    /// (effective day, target, note) of each revision.
    pub revisions: Vec<(NaiveDate, String, Option<String>)>,
    pub weight: f64,
    pub window_start: NaiveDate,
    pub window_end: NaiveDate,
    pub budget: Option<f64>,
    pub spend_metric: Option<String>,
}

/// A recent ingest run, for the status view.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IngestRunRow {
    pub id: i64,
    pub connector: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub rows_read: i64,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
    pub error: Option<String>,
}

impl Store {
    /// Connects, creating a SQLite file when needed, and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Store> {
        let shown = redact_url(url);
        let store = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .with_context(|| format!("bad SQLite URL {shown}"))?
                .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(5))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // WAL with NORMAL sync cannot corrupt the file; it avoids an fsync per commit
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .pragma("cache_size", SQLITE_CACHE_KB.to_string())
                .pragma("temp.cache_size", SQLITE_CACHE_KB.to_string())
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .connect_with(options)
                .await
                .with_context(|| format!("cannot open SQLite database {shown}"))?;
            // SQLite has no migration lock: two processes opening a new file at once would both
            // create the tables, so they take turns on a lock file next to it
            let _guard = match sqlite_file(url) {
                Some(file) => Some(lock_file(&format!("{file}.migrate.lock")).await?),
                None => None,
            };
            sqlx::migrate!("migrations/sqlite")
                .run(&pool)
                .await
                .with_context(|| format!("cannot migrate {shown}"))?;
            Store::Sqlite(pool)
        } else {
            let options = PgConnectOptions::from_str(url)
                .with_context(|| format!("bad PostgreSQL URL {shown}"))?
                .log_slow_statements(log::LevelFilter::Debug, Duration::from_secs(5));
            // one direct connection first, so a refused port or a bad role is reported as such
            let first = PgConnection::connect_with(&options)
                .await
                .with_context(|| format!("cannot connect to PostgreSQL at {shown}"))?;
            first.close().await.ok();
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(30))
                .connect_lazy_with(options);
            sqlx::migrate!("migrations/postgres")
                .run(&pool)
                .await
                .with_context(|| format!("cannot migrate {shown}"))?;
            Store::Postgres(pool)
        };
        Ok(store)
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    /// Records the start of a connector run and returns its id.
    ///
    /// A run of the same connector still marked `running` was cut off (its transaction rolled
    /// back when the process stopped) and is closed as failed.
    /// Runs hold the connector's run lock, so a `running` row found here is never live.
    pub async fn start_ingest_run(&self, connector: &str, trigger: &str) -> sqlx::Result<i64> {
        self.start_scheduled_run(connector, trigger, None, None)
            .await
    }

    /// Records the start of a run for a scheduled tick, with the replica running it.
    pub async fn start_scheduled_run(
        &self,
        connector: &str,
        trigger: &str,
        due_at: Option<DateTime<Utc>>,
        replica: Option<&str>,
    ) -> sqlx::Result<i64> {
        let close = "UPDATE ingest_runs SET status = 'failed', finished_at = $2, \
                     error = 'interrupted: the process stopped before the run finished' \
                     WHERE connector = $1 AND status = 'running'";
        let sql = "INSERT INTO ingest_runs \
                   (connector, trigger, started_at, status, due_at, replica) \
                   VALUES ($1, $2, $3, 'running', $4, $5) RETURNING id";
        on_pool!(self, pool => {
            sqlx::query(close).bind(connector).bind(Utc::now()).execute(pool).await?;
            sqlx::query_scalar(sql)
                .bind(connector)
                .bind(trigger)
                .bind(Utc::now())
                .bind(due_at)
                .bind(replica)
                .fetch_one(pool)
                .await
        })
    }

    /// Removes the row of a run cancelled at shutdown (it wrote no points).
    pub async fn forget_run(&self, run_id: i64) -> sqlx::Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM rejected_rows WHERE run_id = $1")
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM ingest_runs WHERE id = $1 AND status <> 'succeeded'")
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })
    }

    /// When a connector last succeeded.
    pub async fn last_success(&self, connector: &str) -> sqlx::Result<Option<DateTime<Utc>>> {
        let sql =
            "SELECT max(started_at) FROM ingest_runs WHERE connector = $1 AND status = 'succeeded'";
        on_pool!(self, pool => sqlx::query_scalar(sql).bind(connector).fetch_one(pool).await)
    }

    /// The last day a committed run of the connector covered: where an incremental source
    /// goes on from. It moves only with a committed run, in the same transaction as the points;
    /// backfills of chosen days (`sync --from --to`) do not move it.
    pub async fn last_loaded_day(&self, connector: &str) -> sqlx::Result<Option<NaiveDate>> {
        let sql = "SELECT max(last_day) FROM ingest_runs \
                   WHERE connector = $1 AND status = 'succeeded' AND trigger <> 'backfill'";
        on_pool!(self, pool => sqlx::query_scalar(sql).bind(connector).fetch_one(pool).await)
    }

    /// The latest scores' pace statuses and when the newest was computed.
    pub async fn score_summary(&self) -> sqlx::Result<(Vec<(String, i64)>, Option<DateTime<Utc>>)> {
        let counts =
            "SELECT COALESCE(status, 'unscored'), count(*) FROM kr_scores_latest GROUP BY 1";
        let newest = "SELECT max(computed_at) FROM kr_scores";
        on_pool!(self, pool => {
            let counts: Vec<(String, i64)> = sqlx::query_as(counts).fetch_all(pool).await?;
            let newest: Option<DateTime<Utc>> = sqlx::query_scalar(newest).fetch_one(pool).await?;
            Ok((counts, newest))
        })
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.is_ok())
    }

    /// Replaces the points of the run's connector on the covered days, stores its rejected
    /// rows and closes the run as succeeded, all in one transaction. The points are taken:
    /// on SQLite they are written on a blocking thread.
    pub async fn commit_ingest_run(
        &self,
        run_id: i64,
        connector: &str,
        points: impl Into<Points>,
        days: &[NaiveDate],
        rejected: &[RejectedRow],
        record: &RunRecord,
    ) -> anyhow::Result<WriteStats> {
        let mut points = points.into();
        match self {
            Store::Sqlite(pool) => {
                let direct = sqlite_direct::DirectSqlite::of(pool);
                let (connector, days) = (connector.to_string(), days.to_vec());
                let (rejected, record) = (rejected.to_vec(), record.clone());
                tokio::task::spawn_blocking(move || {
                    sqlite_direct::commit_run(
                        &direct,
                        run_id,
                        &connector,
                        &mut points,
                        &days,
                        &rejected,
                        &record,
                    )
                })
                .await?
            }
            Store::Postgres(pool) => {
                let flags = record.flags.as_deref();
                let mut tx = pool.begin().await?;
                let stats =
                    pg_replace_points(&mut tx, run_id, connector, &mut points, days, flags).await?;
                insert_rejected!(&mut *tx, run_id, connector, rejected);
                finish_run!(&mut *tx, run_id, "succeeded", record, stats, None::<String>);
                tx.commit().await?;
                Ok(stats)
            }
        }
    }

    /// Closes a run as failed: its rejected rows are kept, no point is written.
    pub async fn fail_ingest_run(
        &self,
        run_id: i64,
        connector: &str,
        rejected: &[RejectedRow],
        record: &RunRecord,
        error: &str,
    ) -> sqlx::Result<()> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            insert_rejected!(&mut *tx, run_id, connector, rejected);
            finish_run!(&mut *tx, run_id, "failed", record, WriteStats::default(), Some(error));
            tx.commit().await
        })
    }

    /// Points of `metrics` between `from` and `to` inclusive, in a fixed order (day,
    /// connector, dimension set) so sums over them always come out the same to the bit.
    pub async fn load_points(
        &self,
        metrics: &[String],
        from: NaiveDate,
        to: NaiveDate,
    ) -> anyhow::Result<Vec<StoredPoint>> {
        // SQLite is read on a blocking thread over its own connection: sqlx hands every row
        // from its worker thread to the async side, which took most of a 10 000-KR pass
        let pool = match self {
            Store::Sqlite(pool) => {
                let direct = sqlite_direct::DirectSqlite::of(pool);
                let metrics = metrics.to_vec();
                return tokio::task::spawn_blocking(move || {
                    sqlite_direct::read_points(&direct, &metrics, from, to)
                })
                .await?;
            }
            Store::Postgres(pool) => pool,
        };
        let mut read: Vec<(Arc<str>, Vec<StoredRow>)> = Vec::new();
        for metric in metrics {
            let mut rows: Vec<StoredRow> = Vec::new();
            for sql in LOAD_POINTS {
                let part: Vec<StoredRow> = sqlx::query_as(sql)
                    .bind(metric)
                    .bind(from)
                    .bind(to)
                    .fetch_all(pool)
                    .await?;
                rows.extend(part);
            }
            read.push((metric.as_str().into(), rows));
        }
        // the dimensions of the sets the points have, each parsed once
        let ids: Vec<i64> = read
            .iter()
            .flat_map(|(_, rows)| rows.iter().map(|r| r.5))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let texts: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id::bigint, dimensions::text FROM dimension_sets WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(pool)
        .await?;
        let mut sets = DimensionSets::default();
        for (id, text) in texts {
            sets.dimensions(id, || Ok(Some(text)))?;
        }
        let mut out = Vec::with_capacity(read.iter().map(|(_, rows)| rows.len()).sum());
        for (metric, rows) in read {
            for (day, period_end, value, run_id, flags, set) in rows {
                out.push(StoredPoint {
                    metric: metric.clone(),
                    day,
                    period_end,
                    dimensions: sets.dimensions(set, || Ok(None))?,
                    value,
                    run_id,
                    flags,
                });
            }
        }
        Ok(out)
    }

    /// Writes the objectives and KRs; those no longer defined are marked inactive.
    pub async fn sync_definitions(&self, objectives: &[ObjectiveDefinition]) -> sqlx::Result<()> {
        let now = Utc::now();
        // many rows per statement: one statement per row took 0.7 s for 10 000 KRs
        let insert_objectives = "INSERT INTO objectives \
            (id, title, owner, period, window_start, window_end, timezone, source_file, active, \
             updated_at) ";
        let objective_conflict = " ON CONFLICT (id) DO UPDATE SET title = excluded.title, \
            owner = excluded.owner, period = excluded.period, \
            window_start = excluded.window_start, window_end = excluded.window_end, \
            timezone = excluded.timezone, source_file = excluded.source_file, active = TRUE, \
            updated_at = excluded.updated_at";
        let insert_krs = "INSERT INTO key_results \
            (id, objective_id, position, title, metric, metric_kind, unit, filter, kr_type, \
             baseline_spec, target_spec, weight, window_start, window_end, active, updated_at, \
             revisions, budget, spend_metric) ";
        let kr_conflict = " ON CONFLICT (id) DO UPDATE SET objective_id = excluded.objective_id, \
            position = excluded.position, title = excluded.title, metric = excluded.metric, \
            metric_kind = excluded.metric_kind, unit = excluded.unit, filter = excluded.filter, \
            kr_type = excluded.kr_type, baseline_spec = excluded.baseline_spec, \
            target_spec = excluded.target_spec, weight = excluded.weight, \
            window_start = excluded.window_start, window_end = excluded.window_end, \
            active = TRUE, updated_at = excluded.updated_at, revisions = excluded.revisions, \
            budget = excluded.budget, spend_metric = excluded.spend_metric";
        let krs: Vec<(&ObjectiveDefinition, usize, &KeyResultDefinition)> = objectives
            .iter()
            .flat_map(|o| {
                o.key_results
                    .iter()
                    .enumerate()
                    .map(move |(i, k)| (o, i, k))
            })
            .collect();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE objectives SET active = FALSE").execute(&mut *tx).await?;
            sqlx::query("UPDATE key_results SET active = FALSE").execute(&mut *tx).await?;
            for chunk in objectives.chunks(DEFINITION_ROWS) {
                let mut builder = sqlx::QueryBuilder::new(insert_objectives);
                builder.push_values(chunk, |mut row, o| {
                    row.push_bind(&o.id)
                        .push_bind(&o.title)
                        .push_bind(&o.owner)
                        .push_bind(&o.period)
                        .push_bind(o.window_start)
                        .push_bind(o.window_end)
                        .push_bind(&o.timezone)
                        .push_bind(&o.source_file)
                        .push("TRUE")
                        .push_bind(now);
                });
                builder.push(objective_conflict);
                builder.build().execute(&mut *tx).await?;
            }
            for chunk in krs.chunks(DEFINITION_ROWS) {
                let mut builder = sqlx::QueryBuilder::new(insert_krs);
                builder.push_values(chunk, |mut row, (o, position, k)| {
                    row.push_bind(&k.id)
                        .push_bind(&o.id)
                        .push_bind(*position as i64)
                        .push_bind(&k.title)
                        .push_bind(&k.metric)
                        .push_bind(&k.metric_kind)
                        .push_bind(&k.unit)
                        .push_bind(Json(&k.filter))
                        .push_bind(&k.kr_type)
                        .push_bind(&k.baseline_spec)
                        .push_bind(&k.target_spec)
                        .push_bind(k.weight)
                        .push_bind(k.window_start)
                        .push_bind(k.window_end)
                        .push("TRUE")
                        .push_bind(now)
                        .push_bind(Json(revisions_json(&k.revisions)))
                        .push_bind(k.budget)
                        .push_bind(&k.spend_metric);
                });
                builder.push(kr_conflict);
                builder.build().execute(&mut *tx).await?;
            }
            tx.commit().await
        })
    }

    /// The definition hash of the newest successful scoring pass.
    pub async fn last_definition_hash(&self) -> sqlx::Result<Option<String>> {
        let sql = "SELECT definition_hash FROM scoring_runs WHERE status = 'succeeded' \
                   ORDER BY id DESC LIMIT 1";
        on_pool!(self, pool => sqlx::query_scalar(sql).fetch_optional(pool).await)
    }

    /// Records the start of a scoring pass.
    pub async fn start_scoring_run(
        &self,
        trigger: &str,
        from: NaiveDate,
        to: NaiveDate,
        definition_hash: &str,
    ) -> sqlx::Result<i64> {
        let sql = "INSERT INTO scoring_runs \
                   (trigger, started_at, as_of_from, as_of_to, definition_hash, status) \
                   VALUES ($1, $2, $3, $4, $5, 'running') RETURNING id";
        on_pool!(self, pool => {
            sqlx::query_scalar(sql)
                .bind(trigger)
                .bind(Utc::now())
                .bind(from)
                .bind(to)
                .bind(definition_hash)
                .fetch_one(pool)
                .await
        })
    }

    /// Writes a scoring pass's rows in one transaction: readers see all of it or none.
    pub async fn commit_scores(
        &self,
        run_id: i64,
        krs: &[KrScoreRow],
        objectives: &[ObjectiveScoreRow],
    ) -> anyhow::Result<()> {
        let now = Utc::now();
        let (kr_insert, kr_conflict) = (KR_INSERT, KR_CONFLICT);
        let (objective_insert, objective_conflict) = (OBJECTIVE_INSERT, OBJECTIVE_CONFLICT);
        let finish = FINISH_SCORING;
        if let Store::Sqlite(pool) = self {
            // over a connection of its own: sqlx copies every one of the 360 000 values it binds
            let direct = sqlite_direct::DirectSqlite::of(pool);
            let (krs, objectives) = (krs.to_vec(), objectives.to_vec());
            return tokio::task::spawn_blocking(move || {
                sqlite_direct::commit_scores(&direct, run_id, &krs, &objectives, now)
            })
            .await?;
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in krs.chunks(SCORE_ROWS) {
                let mut builder = sqlx::QueryBuilder::new(kr_insert);
                builder.push_values(chunk, |mut row, r| {
                    row.push_bind(&r.kr_id)
                        .push_bind(&r.objective_id)
                        .push_bind(r.as_of)
                        .push_bind(r.window_start)
                        .push_bind(r.window_end)
                        .push_bind(r.elapsed)
                        .push_bind(&r.kr_type)
                        .push_bind(r.value)
                        .push_bind(r.baseline)
                        .push_bind(r.target)
                        .push_bind(r.target_original)
                        .push_bind(r.target_effective)
                        .push_bind(r.target_low)
                        .push_bind(r.target_high)
                        .push_bind(r.distance)
                        .push_bind(r.raw)
                        .push_bind(r.score)
                        .push_bind(r.score_original)
                        .push_bind(&r.grade)
                        .push_bind(r.expected)
                        .push_bind(r.expected_score)
                        .push_bind(&r.status)
                        .push_bind(r.forecast)
                        .push_bind(r.forecast_score)
                        .push_bind(r.spend)
                        .push_bind(r.budget)
                        .push_bind(r.budget_used)
                        .push_bind(r.cost_per_point)
                        .push_bind(r.stale)
                        .push_bind(r.data_as_of)
                        .push_bind(&r.flags)
                        .push_bind(&r.source_runs)
                        .push_bind(&r.definition_hash)
                        .push_bind(&r.reason)
                        .push_bind(run_id)
                        .push_bind(now);
                });
                builder.push(kr_conflict);
                builder.build().execute(&mut *tx).await?;
            }
            for chunk in objectives.chunks(SCORE_ROWS) {
                let mut builder = sqlx::QueryBuilder::new(objective_insert);
                builder.push_values(chunk, |mut row, r| {
                    row.push_bind(&r.objective_id)
                        .push_bind(r.as_of)
                        .push_bind(r.score)
                        .push_bind(&r.grade)
                        .push_bind(r.krs_scored)
                        .push_bind(r.krs_total)
                        .push_bind(run_id)
                        .push_bind(now);
                });
                builder.push(objective_conflict);
                builder.build().execute(&mut *tx).await?;
            }
            sqlx::query(finish)
                .bind(run_id)
                .bind(now)
                .bind((krs.len() + objectives.len()) as i64)
                .execute(&mut *tx)
                .await?;
            Ok(tx.commit().await?)
        })
    }

    /// Marks a scoring pass failed.
    pub async fn fail_scoring_run(&self, run_id: i64, error: &str) -> sqlx::Result<()> {
        let sql = "UPDATE scoring_runs SET status = 'failed', finished_at = $2, error = $3 \
                   WHERE id = $1";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(run_id)
                .bind(Utc::now())
                .bind(error)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    /// Per KR, the newest score on or before `as_of` (the newest of all when `None`).
    pub async fn kr_scores(&self, as_of: Option<NaiveDate>) -> sqlx::Result<Vec<KrScoreRow>> {
        let latest = concat!(
            "SELECT ",
            kr_columns!(),
            " FROM kr_scores_latest ORDER BY objective_id, kr_id"
        );
        let on_day = concat!(
            "SELECT ",
            kr_columns!(),
            " FROM kr_scores s WHERE as_of = (SELECT max(t.as_of) FROM kr_scores t \
             WHERE t.kr_id = s.kr_id AND t.as_of <= $1) ORDER BY objective_id, kr_id"
        );
        on_pool!(self, pool => match as_of {
            Some(day) => sqlx::query_as(on_day).bind(day).fetch_all(pool).await,
            None => sqlx::query_as(latest).fetch_all(pool).await,
        })
    }

    /// Per objective, the newest score on or before `as_of` (the newest of all when `None`).
    pub async fn objective_scores(
        &self,
        as_of: Option<NaiveDate>,
    ) -> sqlx::Result<Vec<ObjectiveScoreRow>> {
        let latest = "SELECT objective_id, as_of, score, grade, krs_scored, krs_total \
                      FROM objective_scores_latest ORDER BY objective_id";
        let on_day = "SELECT objective_id, as_of, score, grade, krs_scored, krs_total \
                      FROM objective_scores s WHERE as_of = (SELECT max(t.as_of) \
                      FROM objective_scores t WHERE t.objective_id = s.objective_id \
                      AND t.as_of <= $1) ORDER BY objective_id";
        on_pool!(self, pool => match as_of {
            Some(day) => sqlx::query_as(on_day).bind(day).fetch_all(pool).await,
            None => sqlx::query_as(latest).fetch_all(pool).await,
        })
    }

    /// The as-of days already scored from `from` on.
    pub async fn scored_days_from(&self, from: NaiveDate) -> sqlx::Result<Vec<NaiveDate>> {
        let sql = "SELECT DISTINCT as_of FROM kr_scores WHERE as_of >= $1 ORDER BY as_of";
        on_pool!(self, pool => sqlx::query_scalar(sql).bind(from).fetch_all(pool).await)
    }

    /// Replaces the review of `period`.
    pub async fn write_review(&self, period: &str, rows: &[ReviewRow]) -> sqlx::Result<()> {
        let insert = "INSERT INTO okr_reviews (period, kr_id, objective_id, owner, as_of, score, \
                      raw, zone, reviewed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        let now = Utc::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM okr_reviews WHERE period = $1")
                .bind(period)
                .execute(&mut *tx)
                .await?;
            for r in rows {
                sqlx::query(insert)
                    .bind(&r.period)
                    .bind(&r.kr_id)
                    .bind(&r.objective_id)
                    .bind(&r.owner)
                    .bind(r.as_of)
                    .bind(r.score)
                    .bind(r.raw)
                    .bind(&r.zone)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
    }

    /// An owner's average final score per reviewed period, newest `limit` periods.
    pub async fn owner_period_averages(
        &self,
        owner: &str,
        limit: usize,
    ) -> sqlx::Result<Vec<(String, f64)>> {
        let sql = "SELECT period, avg(score) FROM okr_reviews \
                   WHERE owner = $1 AND score IS NOT NULL \
                   GROUP BY period ORDER BY period DESC LIMIT $2";
        on_pool!(self, pool => {
            sqlx::query_as::<_, (String, f64)>(sql)
                .bind(owner)
                .bind(limit as i64)
                .fetch_all(pool)
                .await
        })
    }

    /// The newest run of each connector.
    pub async fn latest_ingest_runs(&self) -> sqlx::Result<Vec<IngestRunRow>> {
        let sql = "SELECT id, connector, status, started_at, rows_read, rows_loaded, \
                   rows_rejected, error FROM ingest_runs r \
                   WHERE id = (SELECT max(id) FROM ingest_runs t WHERE t.connector = r.connector) \
                   ORDER BY connector";
        on_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)
    }
}

/// Inserts rejected rows inside a transaction.
/// Stores one rejected row: run, connector, location, line, reason, raw text.
const INSERT_REJECTED: &str = "INSERT INTO rejected_rows \
    (run_id, connector, location, line, reason, raw) VALUES ($1, $2, $3, $4, $5, $6)";

/// Closes an ingest run: id, status, finish time, row counts, points written and deleted,
/// first and last day, sources, error, rows skipped.
const FINISH_RUN: &str = "UPDATE ingest_runs SET status = $2, finished_at = $3, rows_read = $4, \
    rows_loaded = $5, rows_rejected = $6, points_written = $7, points_deleted = $8, \
    first_day = $9, last_day = $10, sources = $11, error = $12, rows_skipped = $13 \
    WHERE id = $1";

macro_rules! insert_rejected {
    ($executor:expr, $run_id:expr, $connector:expr, $rejected:expr) => {
        for row in $rejected {
            sqlx::query(INSERT_REJECTED)
                .bind($run_id)
                .bind($connector)
                .bind(&row.location)
                .bind(row.line)
                .bind(&row.reason)
                .bind(&row.raw)
                .execute($executor)
                .await?;
        }
    };
}
use insert_rejected;

/// Closes an ingest run row inside a transaction.
macro_rules! finish_run {
    ($executor:expr, $run_id:expr, $status:expr, $record:expr, $stats:expr, $error:expr) => {
        sqlx::query(FINISH_RUN)
            .bind($run_id)
            .bind($status)
            .bind(Utc::now())
            .bind($record.rows_read)
            .bind($record.rows_loaded)
            .bind($record.rows_rejected)
            .bind($stats.written as i64)
            .bind($stats.deleted as i64)
            .bind($record.first_day)
            .bind($record.last_day)
            .bind(&$record.sources)
            .bind($error)
            .bind($record.rows_skipped)
            .execute($executor)
            .await?;
    };
}
use finish_run;

/// The points of one metric that touch a range of days, in a fixed order: day, connector,
/// dimension set. Two queries, read one after the other: the period values that start before
/// the range and overlap it (by the partial index on periods), then the points dated in the
/// range, in the key's own order (no sort, and no merge of the two: every period value of the
/// first starts before every point of the second).
const LOAD_POINTS: [&str; 2] = [
    "SELECT day, period_end, value, run_id, flags, CAST(dimension_set AS BIGINT) \
     FROM point_values \
     WHERE metric = $1 AND period_end > day AND period_end >= $2 AND day < $2 AND $3 >= $2 \
     ORDER BY day, connector, dimension_set",
    "SELECT day, period_end, value, run_id, flags, CAST(dimension_set AS BIGINT) \
     FROM point_values WHERE metric = $1 AND day >= $2 AND day <= $3 \
     ORDER BY day, connector, dimension_set",
];

type StoredRow = (NaiveDate, NaiveDate, f64, i64, Option<String>, i64);

/// Dimension sets by number, each parsed once and shared by its points.
#[derive(Default)]
struct DimensionSets(HashMap<i64, Arc<BTreeMap<String, String>>, foldhash::fast::RandomState>);

impl DimensionSets {
    /// The dimensions of set `set`, parsed from the text `find` gives the first time the set
    /// is asked for.
    fn dimensions(
        &mut self,
        set: i64,
        find: impl FnOnce() -> anyhow::Result<Option<String>>,
    ) -> anyhow::Result<Arc<BTreeMap<String, String>>> {
        if let Some(found) = self.0.get(&set) {
            return Ok(found.clone());
        }
        let text = find()?.with_context(|| format!("dimension set {set} is not stored"))?;
        let parsed: BTreeMap<String, String> = serde_json::from_str(&text)
            .with_context(|| format!("stored dimensions are not a JSON object of text: {text}"))?;
        let shared = Arc::new(parsed);
        self.0.insert(set, shared.clone());
        Ok(shared)
    }
}

/// A day as SQLite stores it (`2026-06-30`), read without a format parser: half a million
/// of them are read for a big scoring pass.
fn stored_day(text: &str) -> anyhow::Result<NaiveDate> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let parsed = (b.len() == 10 && b[4] == b'-' && b[7] == b'-')
        .then(|| Some((digits(0..4)?, digits(5..7)?, digits(8..10)?)))
        .flatten()
        .and_then(|(y, m, d)| NaiveDate::from_ymd_opt(y as i32, m, d));
    parsed.with_context(|| format!("stored day is not a date: {text}"))
}

/// [`Store::load_points`] on a SQLite file, over a read-only connection of its own. Blocking.
/// The file of a SQLite pool's database, or `None` when it is in memory (sqlx names an
/// in-memory database `file:sqlx-in-memory-N`, which is no file).
pub fn sqlite_database_file(pool: &SqlitePool) -> Option<std::path::PathBuf> {
    let path = pool.connect_options().get_filename().to_path_buf();
    path.is_file().then_some(path)
}

/// The file of a SQLite URL, or `None` for an in-memory database.
pub fn sqlite_file(url: &str) -> Option<String> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    (!path.is_empty() && !path.starts_with(':')).then(|| path.to_string())
}

/// An exclusive lock on `path`, waited for off the async runtime; released when dropped.
async fn lock_file(path: &str) -> anyhow::Result<std::fs::File> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {path}"))?;
        file.lock().with_context(|| format!("cannot lock {path}"))?;
        Ok(file)
    })
    .await?
}

fn revisions_json(revisions: &[(NaiveDate, String, Option<String>)]) -> serde_json::Value {
    revisions
        .iter()
        .map(|(effective, target, note)| {
            let effective = effective.to_string();
            serde_json::json!({ "effective": effective, "target": target, "note": note })
        })
        .collect()
}

/// The start of the insert of `kr_scores` rows (a scoring pass's; `VALUES` follow).
const KR_INSERT: &str = concat!(
    "INSERT INTO kr_scores (",
    kr_columns!(),
    ", scoring_run_id, computed_at) "
);
/// What a second scoring of a KR on the same as-of day replaces.
const KR_CONFLICT: &str = " \
     ON CONFLICT (kr_id, as_of) DO UPDATE SET objective_id = excluded.objective_id, \
     window_start = excluded.window_start, window_end = excluded.window_end, \
     elapsed = excluded.elapsed, kr_type = excluded.kr_type, value = excluded.value, \
     baseline = excluded.baseline, target = excluded.target, \
     target_original = excluded.target_original, \
     target_effective = excluded.target_effective, target_low = excluded.target_low, \
     target_high = excluded.target_high, distance = excluded.distance, raw = excluded.raw, \
     score = excluded.score, score_original = excluded.score_original, \
     grade = excluded.grade, expected = excluded.expected, \
     expected_score = excluded.expected_score, status = excluded.status, \
     forecast = excluded.forecast, forecast_score = excluded.forecast_score, \
     spend = excluded.spend, budget = excluded.budget, budget_used = excluded.budget_used, \
     cost_per_point = excluded.cost_per_point, stale = excluded.stale, \
     data_as_of = excluded.data_as_of, flags = excluded.flags, \
     source_runs = excluded.source_runs, definition_hash = excluded.definition_hash, \
     reason = excluded.reason, scoring_run_id = excluded.scoring_run_id, \
     computed_at = excluded.computed_at";
const OBJECTIVE_INSERT: &str = "INSERT INTO objective_scores (objective_id, as_of, score, \
    grade, krs_scored, krs_total, scoring_run_id, computed_at) ";
const OBJECTIVE_CONFLICT: &str = " \
    ON CONFLICT (objective_id, as_of) DO UPDATE SET score = excluded.score, \
    grade = excluded.grade, krs_scored = excluded.krs_scored, \
    krs_total = excluded.krs_total, scoring_run_id = excluded.scoring_run_id, \
    computed_at = excluded.computed_at";
const FINISH_SCORING: &str = "UPDATE scoring_runs SET status = 'succeeded', finished_at = $2, \
    rows_written = $3 WHERE id = $1";

/// Score rows per multi-row INSERT: 36 parameters each, under SQLite's 32 766.
const SCORE_ROWS: usize = 800;

/// SQLite's page cache per connection, as `cache_size` (negative: in KiB). Points are written
/// in key order and the OS caches the file, so a big cache buys nothing and counts in the
/// process's memory: measured on 2.9M points, a first load took 3.5-3.8 s of store time and an
/// unchanged re-sync 7.0-7.6 s with any cache from 2 MB to 128 MB, while the peak RSS of the
/// re-sync went from 167 MB (8 MB cache) to 432 MB (128 MB cache).
const SQLITE_CACHE_KB: i64 = -16384;

/// Objective or KR rows per multi-row INSERT: at most 18 parameters each.
const DEFINITION_ROWS: usize = 1500;

/// The texts the points are written with, each made once: each distinct day and dimension
/// set, not each point. [`Keyed::new`] also puts the points in the key's order (metric, day,
/// dimension set), sorting on one number per point made of the ranks of the few distinct
/// metrics and dimension sets, not by comparing texts.
struct Keyed {
    /// The distinct dimension sets as JSON, sorted.
    sets: Vec<String>,
    /// The rank in `sets` of each of the points' own sets.
    rank: Vec<u32>,
    /// The stored number of each of `sets` (`dimension_sets.id`), once resolved.
    set_ids: Vec<i64>,
    /// The text of every day from `first_day` on that a point starts or ends on.
    first_day: i32,
    day_texts: Vec<Option<String>>,
    /// The days points start on, in order.
    point_days: Vec<NaiveDate>,
}

impl Keyed {
    fn new(points: &mut Points) -> Keyed {
        let rows = points.rows();
        let first_day = rows.iter().map(|r| r.day).min().unwrap_or_default();
        let last_day = rows
            .iter()
            .map(|r| r.until.max(r.day))
            .max()
            .unwrap_or(first_day);
        let mut day_texts: Vec<Option<String>> =
            vec![None; (last_day - first_day).max(0) as usize + 1];
        let mut starts = vec![false; day_texts.len()];
        for r in rows {
            starts[(r.day - first_day) as usize] = true;
            for day in [r.day, r.until] {
                let slot = &mut day_texts[(day - first_day) as usize];
                if slot.is_none() {
                    *slot = Some(day_from_number(day).to_string());
                }
            }
        }
        let point_days = (0..starts.len())
            .filter(|i| starts[*i])
            .map(|i| day_from_number(first_day + i as i32))
            .collect();

        // equal maps of different objects become one set, ranked in text order
        let texts: Vec<String> = points
            .sets()
            .iter()
            .map(|set| serde_json::to_string(&**set).expect("maps serialize"))
            .collect();
        let mut by_text: Vec<usize> = (0..texts.len()).collect();
        by_text.sort_unstable_by(|a, b| texts[*a].cmp(&texts[*b]));
        let mut sets: Vec<String> = Vec::new();
        let mut rank = vec![0u32; texts.len()];
        for i in by_text {
            if sets.last() != Some(&texts[i]) {
                sets.push(texts[i].clone());
            }
            rank[i] = (sets.len() - 1) as u32;
        }

        let mut by_name: Vec<usize> = (0..points.metrics().len()).collect();
        by_name.sort_unstable_by(|a, b| points.metrics()[*a].cmp(&points.metrics()[*b]));
        let mut metric_rank = vec![0u64; by_name.len()];
        for (position, metric) in by_name.into_iter().enumerate() {
            metric_rank[metric] = position as u64;
        }
        // metric rank, days from the first day and set rank in one number: below 4 096
        // metrics, 2 800 years and 4 294 967 296 sets
        points.rows_mut().sort_unstable_by_key(|r| {
            metric_rank[r.metric as usize] << 52
                | ((r.day - first_day) as u64) << 32
                | rank[r.set as usize] as u64
        });
        Keyed {
            sets,
            rank,
            set_ids: Vec::new(),
            first_day,
            day_texts,
            point_days,
        }
    }

    fn day(&self, day: i32) -> &str {
        self.day_texts[(day - self.first_day) as usize]
            .as_deref()
            .expect("every point's days have a text")
    }

    fn dimension_set(&self, row: &PointRow) -> i64 {
        self.set_ids[self.rank[row.set as usize] as usize]
    }

    /// The sets' texts, in order, as a list for a statement to unpack.
    fn set_texts(&self) -> Vec<&str> {
        self.sets.iter().map(String::as_str).collect()
    }

    /// Takes the stored numbers of the sets, checking there is one for each.
    fn resolved(&mut self, ids: Vec<i64>) -> sqlx::Result<()> {
        if ids.len() != self.sets.len() {
            return Err(sqlx::Error::Protocol(format!(
                "{} dimension sets written, {} found",
                self.sets.len(),
                ids.len()
            )));
        }
        self.set_ids = ids;
        Ok(())
    }

    /// The days to look up stored points on: those the run covers and any its points start
    /// on.
    fn probe_days(&self, days: &[NaiveDate]) -> Vec<NaiveDate> {
        let mut probe: BTreeSet<NaiveDate> = days.iter().copied().collect();
        probe.extend(self.point_days.iter().copied());
        probe.into_iter().collect()
    }

    /// Whether each day from `first_day` on is among `occupied`, for [`Keyed::on`].
    fn mask(&self, occupied: &HashSet<NaiveDate>) -> Vec<bool> {
        (0..self.day_texts.len())
            .map(|i| occupied.contains(&day_from_number(self.first_day + i as i32)))
            .collect()
    }

    /// The points, in key order, that start on a day of `mask` (`wanted`) or not.
    fn on<'a>(
        &self,
        points: &'a Points,
        mask: &'a [bool],
        wanted: bool,
    ) -> impl Iterator<Item = &'a PointRow> + 'a {
        let first_day = self.first_day;
        points
            .rows()
            .iter()
            .filter(move |r| mask[(r.day - first_day) as usize] == wanted)
    }
}

/// The metrics that have points, by one seek of the key's index per metric (a loose index
/// scan: `SELECT DISTINCT` would read every point).
const STORED_METRICS: &str = "WITH RECURSIVE m(metric) AS ( \
        SELECT min(metric) FROM point_values \
        UNION ALL \
        SELECT (SELECT min(p.metric) FROM point_values p WHERE p.metric > m.metric) \
        FROM m WHERE m.metric IS NOT NULL) \
    SELECT metric FROM m WHERE metric IS NOT NULL";

/// Bytes per COPY message.
const COPY_BUFFER: usize = 1 << 20;

/// A text field of COPY's text format: backslash, tab and line breaks escaped.
fn copy_text(out: &mut Vec<u8>, text: &str) {
    for b in text.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// Streams points to a started COPY in text format, in 1 MB messages: each row is `prefix`,
/// then metric, day, period end, dimension set and value, then `suffix`. Gives how many rows
/// and the earliest day among them.
async fn copy_points<'a>(
    mut copy: sqlx::postgres::PgCopyIn<&mut PgConnection>,
    keyed: &Keyed,
    points: &Points,
    rows: impl Iterator<Item = &'a PointRow>,
    prefix: &[u8],
    suffix: &[u8],
) -> sqlx::Result<(u64, Option<i32>)> {
    let mut buffer: Vec<u8> = Vec::with_capacity(COPY_BUFFER + 4096);
    let (mut count, mut first) = (0, None::<i32>);
    for row in rows {
        count += 1;
        first = Some(first.map_or(row.day, |d| d.min(row.day)));
        buffer.extend_from_slice(prefix);
        copy_text(&mut buffer, points.metric(row));
        buffer.push(b'\t');
        buffer.extend_from_slice(keyed.day(row.day).as_bytes());
        buffer.push(b'\t');
        buffer.extend_from_slice(keyed.day(row.until).as_bytes());
        buffer.push(b'\t');
        buffer.extend_from_slice(keyed.dimension_set(row).to_string().as_bytes());
        buffer.push(b'\t');
        // Display writes the shortest text that reads back as the same f64
        buffer.extend_from_slice(row.value.to_string().as_bytes());
        buffer.extend_from_slice(suffix);
        buffer.push(b'\n');
        if buffer.len() >= COPY_BUFFER {
            copy.send(std::mem::take(&mut buffer)).await?;
            buffer.reserve(COPY_BUFFER + 4096);
        }
    }
    if !buffer.is_empty() {
        copy.send(buffer).await?;
    }
    copy.finish().await?;
    Ok((count, first))
}

/// Replaces the connector's points on `days`, with the outcome `sqlite_direct::replace_points`
/// has on SQLite: points on days where the connector has nothing stored go straight into
/// `point_values` by COPY; the days it has points on already go through a staging table,
/// set-based updates, inserts and a delete of the stale points.
async fn pg_replace_points(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    run_id: i64,
    connector: &str,
    points: &mut Points,
    days: &[NaiveDate],
    flags: Option<&str>,
) -> sqlx::Result<WriteStats> {
    let mut keyed = Keyed::new(points);
    let points = &*points;
    // every set the run has gets its number (new sets are added, in text order, so two runs
    // adding the same sets wait for each other in the same order)
    let sets = keyed.set_texts();
    sqlx::query(
        "INSERT INTO dimension_sets (dimensions) SELECT d::jsonb FROM unnest($1::text[]) AS d \
         ON CONFLICT (dimensions) DO NOTHING",
    )
    .bind(&sets)
    .execute(&mut **tx)
    .await?;
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT s.id::bigint FROM unnest($1::text[]) WITH ORDINALITY AS u(d, n) \
         JOIN dimension_sets s ON s.dimensions = u.d::jsonb ORDER BY u.n",
    )
    .bind(&sets)
    .fetch_all(&mut **tx)
    .await?;
    keyed.resolved(ids)?;
    // the key starts with the metric: the connector's stored days and stale points are looked
    // up under every stored metric (a metric dropped from the connector's file goes too)
    let stored_metrics: Vec<String> = sqlx::query_scalar(STORED_METRICS)
        .fetch_all(&mut **tx)
        .await?;
    let occupied: HashSet<NaiveDate> = sqlx::query_scalar(
        "SELECT d FROM unnest($3::date[]) AS d WHERE EXISTS (SELECT 1 FROM point_values p \
         WHERE p.metric = ANY($2) AND p.day = d AND p.connector = $1)",
    )
    .bind(connector)
    .bind(&stored_metrics)
    .bind(keyed.probe_days(days))
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    let mask = keyed.mask(&occupied);

    let mut stats = WriteStats::default();
    if keyed.on(points, &mask, false).next().is_some() {
        let mut prefix = Vec::new();
        copy_text(&mut prefix, connector);
        prefix.push(b'\t');
        let mut suffix = format!("\t{run_id}\t").into_bytes();
        match flags {
            Some(flags) => copy_text(&mut suffix, flags),
            None => suffix.extend_from_slice(b"\\N"),
        }
        let copy = tx
            .copy_in_raw(
                "COPY point_values \
                 (connector, metric, day, period_end, dimension_set, value, run_id, flags) \
                 FROM STDIN",
            )
            .await?;
        let fresh = keyed.on(points, &mask, false);
        let (written, first) = copy_points(copy, &keyed, points, fresh, &prefix, &suffix).await?;
        stats.written += written;
        stats.changed(first.map(day_from_number));
    }
    if occupied.is_empty() {
        return Ok(stats);
    }

    sqlx::query(
        "CREATE TEMP TABLE staging_points (metric TEXT, day DATE, period_end DATE, \
         dimension_set INTEGER, value DOUBLE PRECISION) ON COMMIT DROP",
    )
    .execute(&mut **tx)
    .await?;
    // the joins below hash the whole staging table: with the default 4 MB of work memory a
    // few million points spill to disk in many batches
    sqlx::query("SET LOCAL work_mem = '256MB'")
        .execute(&mut **tx)
        .await?;
    // ... and they must hash: right after a big load the table's statistics are stale, and
    // the planner then probes the key index once per staged point, or sorts both sides on
    // disk (measured on 2.9M points that were all there already, when the key still held the
    // dimensions' jsonb: the new rows' anti-join took 19-34 s that way, 4.5 s as a hash join)
    for setting in [
        "SET LOCAL enable_nestloop = off",
        "SET LOCAL enable_mergejoin = off",
    ] {
        sqlx::query(setting).execute(&mut **tx).await?;
    }
    let copy = tx
        .copy_in_raw(
            "COPY staging_points (metric, day, period_end, dimension_set, value) FROM STDIN",
        )
        .await?;
    let on_occupied = keyed.on(points, &mask, true);
    copy_points(copy, &keyed, points, on_occupied, b"", b"").await?;
    // no index on the staging table: every statement below joins it whole, by hash
    sqlx::query("ANALYZE staging_points")
        .execute(&mut **tx)
        .await?;
    // stale points go on the covered days only
    let stale_days: Vec<NaiveDate> = days
        .iter()
        .copied()
        .filter(|d| occupied.contains(d))
        .collect();
    // each statement below gives how many rows it changed and the earliest day among them
    let (deleted, first): (i64, Option<NaiveDate>) = sqlx::query_as(
        "WITH d AS (DELETE FROM point_values p WHERE p.metric = ANY($2) \
             AND p.day = ANY($3::date[]) AND p.connector = $1 \
             AND NOT EXISTS (SELECT 1 FROM staging_points s WHERE s.metric = p.metric \
                 AND s.day = p.day AND s.dimension_set = p.dimension_set) \
             RETURNING p.day) \
         SELECT count(*), min(day) FROM d",
    )
    .bind(connector)
    .bind(&stored_metrics)
    .bind(&stale_days)
    .fetch_one(&mut **tx)
    .await?;
    stats.deleted = deleted as u64;
    stats.changed(first);
    // set-based, not row by row: an update of the rows that changed and an insert of the new
    // ones, both by hash join (measured on 750k points: 11.5 s as one INSERT .. ON CONFLICT,
    // 6.8 + 1.5 s this way; 1.5 s instead of 11.3 s when nothing changed). The connector's run
    // lock keeps other writers of these keys out. Values are compared exactly: a connector
    // sums its rows in their order in the export, so unchanged data gives the same bits, and
    // any correction, however small next to the value, is written.
    for sql in [
        "WITH u AS (UPDATE point_values p \
             SET value = s.value, period_end = s.period_end, run_id = $2, flags = $3 \
             FROM staging_points s \
             WHERE p.connector = $1 AND p.metric = s.metric AND p.day = s.day \
               AND p.dimension_set = s.dimension_set \
               AND (p.value <> s.value \
                    OR p.period_end IS DISTINCT FROM s.period_end \
                    OR p.flags IS DISTINCT FROM $3) \
             RETURNING p.day) \
         SELECT count(*), min(day) FROM u",
        "WITH i AS (INSERT INTO point_values \
             (connector, metric, day, period_end, dimension_set, value, run_id, flags) \
             SELECT $1, s.metric, s.day, s.period_end, s.dimension_set, s.value, $2, $3 \
             FROM staging_points s \
             WHERE NOT EXISTS (SELECT 1 FROM point_values p WHERE p.connector = $1 \
                 AND p.metric = s.metric AND p.day = s.day \
                 AND p.dimension_set = s.dimension_set) \
             ORDER BY s.metric, s.day, s.dimension_set \
             RETURNING day) \
         SELECT count(*), min(day) FROM i",
    ] {
        let (written, first): (i64, Option<NaiveDate>) = sqlx::query_as(sql)
            .bind(connector)
            .bind(run_id)
            .bind(flags)
            .fetch_one(&mut **tx)
            .await?;
        stats.written += written as u64;
        stats.changed(first);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_days_are_read_or_refused() {
        assert_eq!(
            stored_day("2026-06-30").unwrap(),
            NaiveDate::from_ymd_opt(2026, 6, 30).unwrap()
        );
        for bad in [
            "2026-02-30",
            "2026-6-30",
            "2026/06/30",
            "20x6-06-30",
            "",
            "2026-06-300",
        ] {
            assert!(stored_day(bad).is_err(), "{bad}");
        }
    }
}
