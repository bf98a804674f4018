//! The bulk reads and writes of points on SQLite, over a connection of their own (rusqlite,
//! linking the same SQLite library as sqlx) on a blocking thread. sqlx hands every row and
//! every bound value between its worker thread and the async side, and copies each value it
//! binds: for millions of points that was most of a sync's store time and of a scoring pass.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::{OpenFlags, OptionalExtension, TransactionBehavior, params};
use sqlx::SqlitePool;

use super::{
    DimensionSets, FINISH_RUN, FINISH_SCORING, INSERT_REJECTED, KR_CONFLICT, KR_INSERT, Keyed,
    KrScoreRow, LOAD_POINTS, OBJECTIVE_CONFLICT, OBJECTIVE_INSERT, ObjectiveScoreRow, RunRecord,
    STORED_METRICS, StoredPoint, WriteStats, stored_day,
};
use crate::connector::csv::{day_from_number, day_number};
use crate::connector::{Dimensions, PointRow, Points, RejectedRow};

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

/// The points of `metrics` that touch `from..=to`, as `Store::load_points` gives them. Each
/// metric's days are cut into as many parts as there are cores, and the parts are shared out
/// over the cores, each read on a connection of its own: the work stays even when a few
/// metrics hold most of the points.
pub(super) fn read_points(
    direct: &DirectSqlite,
    metrics: &[String],
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<Vec<StoredPoint>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    let span = (to - from).num_days() + 1;
    let cuts = if span < 1 { 1 } else { cores.min(span) };
    let mut parts = Vec::new();
    for metric in metrics {
        let mut start = from;
        for cut in 0..cuts {
            let end = if cut == cuts - 1 {
                to
            } else {
                from + chrono::Duration::days(span * (cut + 1) / cuts - 1)
            };
            parts.push((metric, start, end, cut == 0));
            start = end + chrono::Duration::days(1);
        }
    }
    // every part's points of one set share one parsed map
    let shared = Mutex::new(DimensionSets::default());
    let read = crate::cores::map_on_cores(&parts, |(metric, start, end, first)| {
        read_metric(direct, metric, *start, *end, first.then_some(from), &shared)
    });
    let mut out = Vec::new();
    for part in read {
        let part = part?;
        if out.is_empty() {
            out = part;
        } else {
            out.extend(part);
        }
    }
    Ok(out)
}

/// The points of one metric on `from..=to`, and those that start before `spanning` and end on
/// or after it.
fn read_metric(
    direct: &DirectSqlite,
    metric: &str,
    from: NaiveDate,
    to: NaiveDate,
    spanning: Option<NaiveDate>,
    shared: &Mutex<DimensionSets>,
) -> anyhow::Result<Vec<StoredPoint>> {
    let connection = direct.open(false)?;
    let mut queries = Vec::with_capacity(2);
    if let Some(start) = spanning {
        queries.push((LOAD_POINTS[0], start, to));
    }
    queries.push((LOAD_POINTS[1], from, to));
    let mut set_text = connection.prepare("SELECT dimensions FROM dimension_sets WHERE id = ?1")?;
    let mut sets = SharedSets::default();
    let mut days = LastDay::default();
    let mut out = Vec::new();
    // every row of the query is of this metric
    let name: Arc<str> = metric.into();
    for (sql, from, to) in queries {
        let mut statement = connection.prepare(sql)?;
        let mut rows = statement.query(params![metric, from.to_string(), to.to_string()])?;
        while let Some(row) = rows.next()? {
            let set: i64 = row.get(5)?;
            let day = days.day(row.get_ref(0)?.as_str()?)?;
            out.push(StoredPoint {
                metric: name.clone(),
                day,
                period_end: days.day(row.get_ref(1)?.as_str()?)?,
                dimensions: sets.dimensions(set, || {
                    let mut shared = shared.lock().expect("no reader panicked");
                    let text = || Ok(set_text.query_row([set], |r| r.get(0)).optional()?);
                    Ok(Some(shared.dimensions(set, text)?))
                })?,
                value: row.get(2)?,
                run_id: row.get(3)?,
                flags: row.get(4)?,
            });
        }
    }
    Ok(out)
}

/// The sets one reader has met, each the map every reader shares.
#[derive(Default)]
struct SharedSets(HashMap<i64, Dimensions, foldhash::fast::RandomState>);

impl SharedSets {
    fn dimensions(
        &mut self,
        set: i64,
        find: impl FnOnce() -> anyhow::Result<Option<Dimensions>>,
    ) -> anyhow::Result<Dimensions> {
        if let Some(found) = self.0.get(&set) {
            return Ok(found.clone());
        }
        let found = find()?.with_context(|| format!("dimension set {set} is not stored"))?;
        self.0.insert(set, found.clone());
        Ok(found)
    }
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

/// Writes a scoring pass's rows and closes it as succeeded, in one transaction
/// (`Store::commit_scores`).
pub(super) fn commit_scores(
    direct: &DirectSqlite,
    run_id: i64,
    krs: &[KrScoreRow],
    objectives: &[ObjectiveScoreRow],
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    // the texts sqlx writes for these types, so both paths store the same
    let now = now.to_rfc3339_opts(SecondsFormat::AutoSi, false);
    let day = |d: NaiveDate| d.format("%F").to_string();
    let values = |count: usize| {
        let params: Vec<String> = (1..=count).map(|i| format!("?{i}")).collect();
        format!("VALUES ({})", params.join(", "))
    };
    let mut connection = direct.open(true)?;
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare(&format!("{KR_INSERT}{}{KR_CONFLICT}", values(36)))?;
        for r in krs {
            insert.execute(params![
                r.kr_id,
                r.objective_id,
                day(r.as_of),
                day(r.window_start),
                day(r.window_end),
                r.elapsed,
                r.kr_type,
                r.value,
                r.baseline,
                r.target,
                r.target_original,
                r.target_effective.map(day),
                r.target_low,
                r.target_high,
                r.distance,
                r.raw,
                r.score,
                r.score_original,
                r.grade,
                r.expected,
                r.expected_score,
                r.status,
                r.forecast,
                r.forecast_score,
                r.spend,
                r.budget,
                r.budget_used,
                r.cost_per_point,
                r.stale,
                r.data_as_of.map(day),
                r.flags,
                r.source_runs,
                r.definition_hash,
                r.reason,
                run_id,
                now
            ])?;
        }
        let mut insert = tx.prepare(&format!(
            "{OBJECTIVE_INSERT}{}{OBJECTIVE_CONFLICT}",
            values(8)
        ))?;
        for r in objectives {
            insert.execute(params![
                r.objective_id,
                day(r.as_of),
                r.score,
                r.grade,
                r.krs_scored,
                r.krs_total,
                run_id,
                now
            ])?;
        }
    }
    tx.execute(
        FINISH_SCORING,
        rusqlite::named_params! {
            "$1": run_id,
            "$2": now,
            "$3": (krs.len() + objectives.len()) as i64,
        },
    )?;
    tx.commit()?;
    Ok(())
}

/// Replaces the connector's points on `days`. Points on days where the connector has nothing
/// stored yet (a first load, a new day) are inserted straight into `point_values`: there is
/// nothing to compare or delete. On the days it has points on already, the stored points are
/// read beside the new ones in key order, and only the differences are written.
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
        let mut insert = PointInsert::values(tx, connector, run_id, flags)?;
        let mut first = None::<i32>;
        for row in keyed.on(points, &mask, false) {
            first = Some(first.map_or(row.day, |d| d.min(row.day)));
            stats.written += insert.push(points, &keyed, row)?;
        }
        stats.written += insert.finish(points, &keyed)?;
        stats.changed(first.map(day_from_number));
    }
    if occupied.is_empty() {
        return Ok(stats);
    }

    // the points on days the connector has points on already are compared with the stored
    // ones, metric by metric in key order: only the differences are written. A re-sync of an
    // unchanged export reads its points once and writes nothing
    let rows = points.rows();
    let day_of = |day: &NaiveDate| day_number(*day);
    let low = occupied
        .iter()
        .map(day_of)
        .min()
        .expect("some day is occupied");
    let high = occupied
        .iter()
        .map(day_of)
        .max()
        .expect("some day is occupied");
    // the covered days whose stored points the run replaces
    let mut replaced = vec![false; (high - low) as usize + 1];
    for day in days.iter().filter(|d| occupied.contains(d)) {
        replaced[(day_of(day) - low) as usize] = true;
    }
    let mut metrics: Vec<&str> = stored_metrics.iter().map(String::as_str).collect();
    metrics.extend(points.metrics().iter().map(|m| &**m));
    metrics.sort_unstable();
    metrics.dedup();
    let mut by_metric: Vec<Vec<u32>> = vec![Vec::new(); points.metrics().len()];
    for (index, row) in rows.iter().enumerate() {
        if mask[(row.day - keyed.first_day) as usize] {
            by_metric[row.metric as usize].push(index as u32);
        }
    }
    let (low_text, high_text) = (
        day_from_number(low).to_string(),
        day_from_number(high).to_string(),
    );
    let mut stored = tx.prepare(
        // in the key's order without a sort (SQLite sorts when the connector is constrained
        // here, so other connectors' points are passed over below)
        "SELECT day, dimension_set, value, period_end, flags, connector FROM point_values \
         WHERE metric = ?1 AND day >= ?2 AND day <= ?3 ORDER BY day, connector, dimension_set",
    )?;
    let mut delete = tx.prepare(
        "DELETE FROM point_values \
         WHERE metric = ?1 AND day = ?2 AND connector = ?3 AND dimension_set = ?4",
    )?;
    let mut update = tx.prepare(
        "UPDATE point_values SET value = ?5, period_end = ?6, run_id = ?7, flags = ?8 \
         WHERE metric = ?1 AND day = ?2 AND connector = ?3 AND dimension_set = ?4",
    )?;
    let mut insert = PointInsert::values(tx, connector, run_id, flags)?;
    let mut day_texts = LastDay::default();
    for metric in metrics {
        let mut fresh: Vec<u32> = points
            .metrics()
            .iter()
            .position(|m| **m == *metric)
            .map(|i| std::mem::take(&mut by_metric[i]))
            .unwrap_or_default();
        let key = |index: u32| {
            let row = &rows[index as usize];
            (row.day, keyed.dimension_set(row))
        };
        fresh.sort_unstable_by_key(|index| key(*index));
        let (mut inserts, mut updates, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
        let mut next = 0;
        let mut found = stored.query(params![metric, low_text, high_text])?;
        while let Some(old) = found.next()? {
            if old.get_ref(5)?.as_str()? != connector {
                continue;
            }
            let day = day_number(day_texts.day(old.get_ref(0)?.as_str()?)?);
            let set: i64 = old.get(1)?;
            while next < fresh.len() && key(fresh[next]) < (day, set) {
                inserts.push(fresh[next]);
                next += 1;
            }
            if next < fresh.len() && key(fresh[next]) == (day, set) {
                let row = &rows[fresh[next] as usize];
                let same = old.get::<_, f64>(2)? == row.value
                    && old.get_ref(3)?.as_str()? == keyed.day(row.until)
                    && old.get_ref(4)?.as_str_or_null()? == flags;
                if !same {
                    updates.push(fresh[next]);
                }
                next += 1;
            } else if replaced[(day - low) as usize] {
                deletes.push((day, set));
            }
        }
        inserts.extend_from_slice(&fresh[next..]);
        for (day, set) in deletes {
            delete.execute(params![metric, keyed_day(&keyed, day), connector, set])?;
            stats.deleted += 1;
            stats.changed(Some(day_from_number(day)));
        }
        for index in updates {
            let row = &rows[index as usize];
            update.execute(params![
                metric,
                keyed.day(row.day),
                connector,
                keyed.dimension_set(row),
                row.value,
                keyed.day(row.until),
                run_id,
                flags
            ])?;
            stats.written += 1;
            stats.changed(Some(day_from_number(row.day)));
        }
        // in key order, so the table grows by appending where it can
        inserts.sort_unstable_by_key(|index| key(*index));
        for index in inserts {
            let row = &rows[index as usize];
            stats.written += insert.push(points, &keyed, row)?;
            stats.changed(Some(day_from_number(row.day)));
        }
        stats.written += insert.finish(points, &keyed)?;
    }
    Ok(stats)
}

/// A day's text: from the run's days when it has points on it, else written out.
fn keyed_day(keyed: &Keyed, day: i32) -> std::borrow::Cow<'_, str> {
    match keyed.day_texts.get((day - keyed.first_day) as usize) {
        Some(Some(text)) if day >= keyed.first_day => text.as_str().into(),
        _ => day_from_number(day).to_string().into(),
    }
}

/// Rows of points per insert statement. One statement per point sought each point's place in
/// the key from the top of the B-tree; within one statement the cursor stays open, and a key
/// past the last one stored is appended without a search (a first load, or new days).
const INSERT_ROWS: usize = 64;

/// An insert of points, [`INSERT_ROWS`] rows per statement. Each row's first five values are
/// the point's metric, day, period end, dimension set and value; the `constants` values after
/// them are the same for every row, bound once after the rows' parameters.
struct PointInsert<'c> {
    batch: rusqlite::Statement<'c>,
    single: rusqlite::Statement<'c>,
    /// What each row of the batch statement has bound.
    bound: Vec<BoundPoint>,
    pending: Vec<PointRow>,
}

impl<'c> PointInsert<'c> {
    fn new(
        tx: &'c rusqlite::Transaction,
        into: &str,
        constants: usize,
    ) -> rusqlite::Result<PointInsert<'c>> {
        let sql = |rows: usize| {
            let own = 5 * rows;
            let values: Vec<String> = (0..rows)
                .map(|row| {
                    let params: Vec<String> = (1..=5)
                        .map(|i| 5 * row + i)
                        .chain((1..=constants).map(|i| own + i))
                        .map(|n| format!("?{n}"))
                        .collect();
                    format!("({})", params.join(", "))
                })
                .collect();
            format!("INSERT INTO {into} VALUES {}", values.join(", "))
        };
        Ok(PointInsert {
            batch: tx.prepare(&sql(INSERT_ROWS))?,
            single: tx.prepare(&sql(1))?,
            bound: (0..INSERT_ROWS).map(|_| BoundPoint::default()).collect(),
            pending: Vec::with_capacity(INSERT_ROWS),
        })
    }

    /// An insert into `point_values` of points of `connector` written by run `run_id`.
    fn values(
        tx: &'c rusqlite::Transaction,
        connector: &str,
        run_id: i64,
        flags: Option<&str>,
    ) -> rusqlite::Result<PointInsert<'c>> {
        let mut insert = PointInsert::new(
            tx,
            "point_values \
             (metric, day, period_end, dimension_set, value, connector, run_id, flags)",
            3,
        )?;
        for statement in [&mut insert.batch, &mut insert.single] {
            let base = statement.parameter_count() - 3;
            statement.raw_bind_parameter(base + 1, connector)?;
            statement.raw_bind_parameter(base + 2, run_id)?;
            statement.raw_bind_parameter(base + 3, flags)?;
        }
        Ok(insert)
    }

    /// Adds a point; returns the rows inserted (a full batch goes in).
    fn push(&mut self, points: &Points, keyed: &Keyed, row: &PointRow) -> rusqlite::Result<u64> {
        self.pending.push(*row);
        if self.pending.len() < INSERT_ROWS {
            return Ok(0);
        }
        for (slot, row) in self.pending.iter().enumerate() {
            self.bound[slot].bind(&mut self.batch, 5 * slot, points, keyed, row)?;
        }
        self.pending.clear();
        Ok(self.batch.raw_execute()? as u64)
    }

    /// Inserts the points left; returns how many.
    fn finish(&mut self, points: &Points, keyed: &Keyed) -> rusqlite::Result<u64> {
        let mut bound = BoundPoint::default();
        let mut inserted = 0;
        for row in std::mem::take(&mut self.pending) {
            bound.bind(&mut self.single, 0, points, keyed, &row)?;
            inserted += self.single.raw_execute()? as u64;
        }
        Ok(inserted)
    }
}

/// What one row of an insert has bound. Bindings last from one execution to the next, and the
/// points come in key order, so the metric and day texts are bound again only when they
/// change: most rows bind two numbers.
#[derive(Default)]
struct BoundPoint {
    metric: Option<u32>,
    day: Option<i32>,
    until: Option<i32>,
}

impl BoundPoint {
    /// Binds `row` to the five parameters after `offset`.
    fn bind(
        &mut self,
        statement: &mut rusqlite::Statement,
        offset: usize,
        points: &Points,
        keyed: &Keyed,
        row: &PointRow,
    ) -> rusqlite::Result<()> {
        if self.metric != Some(row.metric) {
            statement.raw_bind_parameter(offset + 1, &**points.metric(row))?;
            self.metric = Some(row.metric);
        }
        if self.day != Some(row.day) {
            statement.raw_bind_parameter(offset + 2, keyed.day(row.day))?;
            self.day = Some(row.day);
        }
        if self.until != Some(row.until) {
            statement.raw_bind_parameter(offset + 3, keyed.day(row.until))?;
            self.until = Some(row.until);
        }
        statement.raw_bind_parameter(offset + 4, keyed.dimension_set(row))?;
        statement.raw_bind_parameter(offset + 5, row.value)
    }
}
