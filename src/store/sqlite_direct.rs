//! The bulk reads and writes of points on SQLite, over a connection of their own (rusqlite,
//! linking the same SQLite library as sqlx) on a blocking thread. sqlx hands every row and
//! every bound value between its worker thread and the async side, and copies each value it
//! binds: for millions of points that was most of a sync's store time and of a scoring pass.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{NaiveDate, SecondsFormat, Utc};
use rusqlite::{OpenFlags, OptionalExtension, TransactionBehavior, params};
use sqlx::SqlitePool;

use super::{
    DimensionSets, FINISH_RUN, INSERT_REJECTED, Keyed, LOAD_POINTS, RunRecord, STORED_METRICS,
    StoredPoint, WriteStats, stored_day,
};
use crate::connector::csv::day_from_number;
use crate::connector::{Points, RejectedRow};

/// Where a SQLite pool's database is: a file, or the pool's shared in-memory database (sqlx
/// opens `sqlite::memory:` as a named in-memory database with a shared cache, which another
/// connection of this process reaches under the same name).
#[derive(Debug, Clone)]
pub(super) struct DirectSqlite {
    path: PathBuf,
    in_memory: bool,
}

impl DirectSqlite {
    pub(super) fn of(pool: &SqlitePool) -> DirectSqlite {
        match super::sqlite_database_file(pool) {
            Some(path) => DirectSqlite {
                path,
                in_memory: false,
            },
            None => DirectSqlite {
                path: pool.connect_options().get_filename().to_path_buf(),
                in_memory: true,
            },
        }
    }

    fn open(&self, write: bool) -> anyhow::Result<rusqlite::Connection> {
        let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        if self.in_memory {
            flags |= OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_MEMORY
                | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
        } else if write {
            flags |= OpenFlags::SQLITE_OPEN_READ_WRITE;
        } else {
            flags |= OpenFlags::SQLITE_OPEN_READ_ONLY;
        }
        let shown = self.path.display();
        let connection = rusqlite::Connection::open_with_flags(&self.path, flags)
            .with_context(|| format!("cannot open SQLite database {shown}"))?;
        // the same settings as the pool's connections (Store::connect)
        connection.busy_timeout(Duration::from_secs(30))?;
        connection.pragma_update(None, "cache_size", super::SQLITE_CACHE_KB)?;
        connection.pragma_update(Some("temp"), "cache_size", super::SQLITE_CACHE_KB)?;
        connection.pragma_update(None, "foreign_keys", true)?;
        if write && !self.in_memory {
            connection.pragma_update(None, "synchronous", "NORMAL")?;
        }
        if !write {
            // pages are read in place from the mapped file rather than copied through read()
            // (measured: 1.1M points read in 400 ms instead of 520 ms)
            connection.pragma_update(None, "mmap_size", 1i64 << 30)?;
        }
        Ok(connection)
    }
}

/// The points of `metrics` that touch `from..=to`, as `Store::load_points` gives them: the
/// metrics are shared out over the cores, each read on a connection of its own.
pub(super) fn read_points(
    direct: &DirectSqlite,
    metrics: &[String],
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<Vec<StoredPoint>> {
    let parts = crate::cores::map_on_cores(metrics, |metric| read_metric(direct, metric, from, to));
    let mut out = Vec::new();
    for part in parts {
        let part = part?;
        if out.is_empty() {
            out = part;
        } else {
            out.extend(part);
        }
    }
    Ok(out)
}

/// The points of one metric that touch `from..=to`.
fn read_metric(
    direct: &DirectSqlite,
    metric: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<Vec<StoredPoint>> {
    let connection = direct.open(false)?;
    let mut statements = [
        connection.prepare(LOAD_POINTS[0])?,
        connection.prepare(LOAD_POINTS[1])?,
    ];
    let mut set_text = connection.prepare("SELECT dimensions FROM dimension_sets WHERE id = ?1")?;
    let mut sets = DimensionSets::default();
    let mut days = LastDay::default();
    let mut out = Vec::new();
    let (from, to) = (from.to_string(), to.to_string());
    // every row of the query is of this metric
    let name: Arc<str> = metric.into();
    for statement in &mut statements {
        let mut rows = statement.query(params![metric, from, to])?;
        while let Some(row) = rows.next()? {
            let set: i64 = row.get(5)?;
            let day = days.day(row.get_ref(0)?.as_str()?)?;
            out.push(StoredPoint {
                metric: name.clone(),
                day,
                period_end: days.day(row.get_ref(1)?.as_str()?)?,
                dimensions: sets.dimensions(set, || {
                    Ok(set_text.query_row([set], |r| r.get(0)).optional()?)
                })?,
                value: row.get(2)?,
                run_id: row.get(3)?,
                flags: row.get(4)?,
            });
        }
    }
    Ok(out)
}

/// The day last read, for the rows that follow on the same day (points come in day order, and
/// a point's period usually ends on its day).
#[derive(Default)]
struct LastDay {
    text: String,
    day: NaiveDate,
}

impl LastDay {
    fn day(&mut self, text: &str) -> anyhow::Result<NaiveDate> {
        if self.text != text {
            self.day = stored_day(text)?;
            self.text.clear();
            self.text.push_str(text);
        }
        Ok(self.day)
    }
}

/// Replaces the run's points on its days, stores its rejected rows and closes it as
/// succeeded, in one transaction (`Store::commit_ingest_run`).
pub(super) fn commit_run(
    direct: &DirectSqlite,
    run_id: i64,
    connector: &str,
    points: &mut Points,
    days: &[NaiveDate],
    rejected: &[RejectedRow],
    record: &RunRecord,
) -> anyhow::Result<WriteStats> {
    let mut connection = direct.open(true)?;
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stats = replace_points(
        &tx,
        run_id,
        connector,
        points,
        days,
        record.flags.as_deref(),
    )?;
    {
        let mut insert = tx.prepare(INSERT_REJECTED)?;
        for row in rejected {
            insert.execute(params![
                run_id,
                connector,
                row.location,
                row.line,
                row.reason,
                row.raw
            ])?;
        }
    }
    // the text sqlx writes for these types, so both paths store the same
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::AutoSi, false);
    let day = |d: Option<NaiveDate>| d.map(|d| d.format("%F").to_string());
    // the write goes on after its task is dropped; a run the service has given up on and
    // forgotten meanwhile keeps no points
    let finished = tx.execute(
        FINISH_RUN,
        rusqlite::named_params! {
            "$1": run_id,
            "$2": "succeeded",
            "$3": now,
            "$4": record.rows_read,
            "$5": record.rows_loaded,
            "$6": record.rows_rejected,
            "$7": stats.written as i64,
            "$8": stats.deleted as i64,
            "$9": day(record.first_day),
            "$10": day(record.last_day),
            "$11": record.sources,
            "$12": None::<String>,
            "$13": record.rows_skipped,
        },
    )?;
    if finished != 1 {
        anyhow::bail!("ingest run {run_id} was cancelled and removed; nothing was written");
    }
    tx.commit()?;
    Ok(stats)
}

/// Replaces the connector's points on `days`. Points on days where the connector has nothing
/// stored yet (a first load, a new day) are inserted straight into `point_values`: there is
/// nothing to compare or delete. Only the days it has points on already go through a staging
/// table, an upsert and a delete of the stale points.
fn replace_points(
    tx: &rusqlite::Transaction,
    run_id: i64,
    connector: &str,
    points: &mut Points,
    days: &[NaiveDate],
    flags: Option<&str>,
) -> anyhow::Result<WriteStats> {
    let mut keyed = Keyed::new(points);
    let points = &*points;
    // every set the run has gets its number (new sets are added, in text order)
    let sets = serde_json::to_string(&keyed.set_texts()).expect("texts serialize");
    tx.execute(
        "INSERT INTO dimension_sets (dimensions) SELECT value FROM json_each(?1) WHERE true \
         ON CONFLICT (dimensions) DO NOTHING",
        [&sets],
    )?;
    let ids: Vec<i64> = tx
        .prepare(
            "SELECT s.id FROM json_each(?1) AS u JOIN dimension_sets s ON s.dimensions = u.value \
             ORDER BY u.key",
        )?
        .query_map([&sets], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    keyed.resolved(ids)?;

    // the key starts with the metric: the connector's stored days and stale points are found
    // metric by metric, over every metric stored (a metric dropped from its file goes too)
    let stored_metrics: Vec<String> = tx
        .prepare(STORED_METRICS)?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let day_list = serde_json::to_string(&keyed.probe_days(days)).expect("dates serialize");
    let mut occupied: HashSet<NaiveDate> = HashSet::new();
    {
        let mut stored_days = tx.prepare(
            "SELECT d.value FROM json_each(?3) AS d WHERE EXISTS (SELECT 1 FROM point_values p \
             WHERE p.metric = ?2 AND p.day = d.value AND p.connector = ?1)",
        )?;
        for metric in &stored_metrics {
            let mut rows = stored_days.query(params![connector, metric, day_list])?;
            while let Some(row) = rows.next()? {
                occupied.insert(stored_day(row.get_ref(0)?.as_str()?)?);
            }
        }
    }
    let mask = keyed.mask(&occupied);

    let mut stats = WriteStats::default();
    {
        let mut insert = tx.prepare(
            "INSERT INTO point_values \
             (connector, metric, day, period_end, dimension_set, value, run_id, flags) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        let mut first = None::<i32>;
        for row in keyed.on(points, &mask, false) {
            first = Some(first.map_or(row.day, |d| d.min(row.day)));
            stats.written += insert.execute(params![
                connector,
                &**points.metric(row),
                keyed.day(row.day),
                keyed.day(row.until),
                keyed.dimension_set(row),
                row.value,
                run_id,
                flags
            ])? as u64;
        }
        stats.changed(first.map(day_from_number));
    }
    if occupied.is_empty() {
        return Ok(stats);
    }

    // the connection is this write's own, so its temporary tables start empty
    tx.execute_batch(
        "CREATE TEMP TABLE staging_points \
             (metric TEXT, day TEXT, period_end TEXT, dimension_set INTEGER, value REAL); \
         CREATE TEMP TABLE staging_days (day TEXT PRIMARY KEY); \
         CREATE INDEX temp.staging_points_key ON staging_points (metric, day, dimension_set);",
    )?;
    {
        // in key order, so the staging index and then point_values grow by appending
        let mut stage = tx.prepare(
            "INSERT INTO staging_points (metric, day, period_end, dimension_set, value) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for row in keyed.on(points, &mask, true) {
            stage.execute(params![
                &**points.metric(row),
                keyed.day(row.day),
                keyed.day(row.until),
                keyed.dimension_set(row),
                row.value
            ])?;
        }
        // stale points go on the covered days only
        let mut stage_day = tx.prepare("INSERT INTO staging_days (day) VALUES (?1)")?;
        for day in days.iter().filter(|d| occupied.contains(d)) {
            stage_day.execute([day.format("%F").to_string()])?;
        }
    }

    // each statement below returns the day of every row it changes: how many, and from when
    let mut count_days = |rows: &mut rusqlite::Rows| -> anyhow::Result<u64> {
        let mut count = 0;
        while let Some(row) = rows.next()? {
            count += 1;
            stats.changed(Some(stored_day(row.get_ref(0)?.as_str()?)?));
        }
        Ok(count)
    };
    let mut deleted = 0;
    {
        let mut delete = tx.prepare(
            "DELETE FROM point_values WHERE metric = ?2 \
             AND day IN (SELECT day FROM staging_days) AND connector = ?1 \
             AND NOT EXISTS (SELECT 1 FROM staging_points s WHERE s.metric = ?2 \
                 AND s.day = point_values.day AND s.dimension_set = point_values.dimension_set) \
             RETURNING day",
        )?;
        for metric in &stored_metrics {
            deleted += count_days(&mut delete.query(params![connector, metric])?)?;
        }
    }
    let mut upsert = tx.prepare(
        "INSERT INTO point_values \
         (connector, metric, day, period_end, dimension_set, value, run_id, flags) \
         SELECT ?1, metric, day, period_end, dimension_set, value, ?2, ?3 \
         FROM staging_points WHERE true ORDER BY metric, day, dimension_set \
         ON CONFLICT (metric, day, connector, dimension_set) DO UPDATE \
         SET value = excluded.value, period_end = excluded.period_end, run_id = excluded.run_id, \
             flags = excluded.flags \
         WHERE point_values.value <> excluded.value \
            OR point_values.period_end IS NOT excluded.period_end \
            OR point_values.flags IS NOT excluded.flags \
         RETURNING day",
    )?;
    let written = count_days(&mut upsert.query(params![connector, run_id, flags])?)?;
    stats.written += written;
    stats.deleted = deleted;
    Ok(stats)
}
