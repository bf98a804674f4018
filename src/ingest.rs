//! The shared ingest loop: runs a connector off the async runtime, records the run, and
//! replaces the points of the days it covers in one transaction.
//!
//! Every connector kind goes through [`sync_connector`], so runs, rejected rows, the reject
//! threshold and logging behave the same for all of them.

use std::time::Instant;

use tracing::{Instrument, error, info, info_span, warn};

use chrono::NaiveDate;

use crate::connector::{Cancel, Connector, Extract, Fetch, RejectedRow};
use crate::project::Project;
use crate::store::{RunRecord, Store};

/// How one connector run ended.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    pub connector: String,
    pub run_id: i64,
    pub succeeded: bool,
    pub rows_read: u64,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    pub points_written: u64,
    pub points_deleted: u64,
    /// The first day whose points changed (a restatement re-scores the days after it).
    pub changed_from: Option<chrono::NaiveDate>,
    pub error: Option<String>,
}

/// Runs the named connectors (all when `names` is empty) one after another. `range` asks
/// dated sources (HTTP with a window) for these days instead of their incremental window.
pub async fn sync(
    project: &Project,
    store: &Store,
    names: &[String],
    trigger: &str,
    range: Option<(NaiveDate, NaiveDate)>,
) -> anyhow::Result<Vec<RunOutcome>> {
    let mut outcomes = Vec::new();
    for connector in &project.connectors {
        if names.is_empty() || names.contains(&connector.name) {
            outcomes.push(sync_connector(project, store, connector, trigger, range).await?);
        }
    }
    Ok(outcomes)
}

/// What a run of `connector` asks its source for: the stored position, or `range`.
pub async fn fetch_for(
    store: &Store,
    connector: &Connector,
    range: Option<(NaiveDate, NaiveDate)>,
) -> anyhow::Result<Fetch> {
    let position = if connector.is_incremental() && range.is_none() {
        store.last_loaded_day(&connector.name).await?
    } else {
        None
    };
    Ok(Fetch { position, range })
}

/// Re-scores the stored as-of days that the runs' changed points fall into.
pub async fn rescore_restated(
    project: &Project,
    store: &Store,
    outcomes: &[RunOutcome],
) -> anyhow::Result<()> {
    if let Some(from) = outcomes.iter().filter_map(|o| o.changed_from).min() {
        crate::scoring::rescore_from(project, store, from, "restatement").await?;
    }
    Ok(())
}

/// Reads a connector without writing anything. Blocking work runs off the runtime.
pub async fn extract(
    project: &Project,
    connector: &Connector,
    cancel: &Cancel,
    fetch: Fetch,
) -> anyhow::Result<Extract> {
    let root = project.root.clone();
    let connector = connector.clone();
    let cancel = cancel.clone();
    let span = tracing::Span::current();
    let result = tokio::task::spawn_blocking(move || {
        let _guard = span.enter();
        connector.extract_with(&root, &cancel, fetch)
    })
    .await?;
    Ok(result?)
}

/// Logs a failed run and closes its row with `message` and its rejected rows; the outcome
/// says why either way.
async fn fail(
    store: &Store,
    connector: &str,
    rejected: &[RejectedRow],
    record: &RunRecord,
    message: String,
    outcome: &mut RunOutcome,
) -> sqlx::Result<()> {
    error!(error = %message, "connector run failed");
    let message = message.replace('\0', "\u{2400}");
    let recorded = store
        .fail_ingest_run(outcome.run_id, connector, rejected, record, &message)
        .await;
    outcome.error = Some(message);
    recorded
}

/// One run of one connector, recorded in `ingest_runs`.
pub async fn sync_connector(
    project: &Project,
    store: &Store,
    connector: &Connector,
    trigger: &str,
    range: Option<(NaiveDate, NaiveDate)>,
) -> anyhow::Result<RunOutcome> {
    let Some(lock) = crate::service::claims::lock_task(store, &connector.name).await? else {
        let message = format!(
            "`{}` is being run right now by another krscore (the service or another sync); \
             try again when it has finished",
            connector.name
        );
        warn!(connector = %connector.name, "{message}");
        return Ok(RunOutcome {
            connector: connector.name.clone(),
            error: Some(message),
            ..RunOutcome::default()
        });
    };
    // a run for explicit days is a backfill: it does not move the incremental position
    let trigger = if range.is_some() && connector.is_incremental() {
        "backfill"
    } else {
        trigger
    };
    let run_id = store.start_ingest_run(&connector.name, trigger).await?;
    let outcome = sync_run(project, store, connector, run_id, &Cancel::default(), range).await;
    lock.release().await;
    outcome
}

/// A scheduled run of a connector for the tick `due`; its run id is published in `slot` so
/// the service can clean up if it aborts the run.
pub async fn sync_connector_scheduled(
    project: &Project,
    store: &Store,
    connector: &Connector,
    due: chrono::DateTime<chrono::Utc>,
    replica: &str,
    slot: &std::sync::Mutex<Option<i64>>,
    cancel: &Cancel,
) -> anyhow::Result<RunOutcome> {
    let run_id = store
        .start_scheduled_run(&connector.name, "schedule", Some(due), Some(replica))
        .await?;
    *slot.lock().expect("run id lock") = Some(run_id);
    sync_run(project, store, connector, run_id, cancel, None).await
}

async fn sync_run(
    project: &Project,
    store: &Store,
    connector: &Connector,
    run_id: i64,
    cancel: &Cancel,
    range: Option<(NaiveDate, NaiveDate)>,
) -> anyhow::Result<RunOutcome> {
    let span = info_span!("ingest", connector = %connector.name, run_id);
    async move {
        let started = Instant::now();
        let mut outcome = RunOutcome {
            connector: connector.name.clone(),
            run_id,
            ..RunOutcome::default()
        };

        let fetched = match fetch_for(store, connector, range).await {
            Ok(fetch) => extract(project, connector, cancel, fetch).await,
            Err(err) => Err(err),
        };
        let read_ms = started.elapsed().as_millis() as u64;
        let read_peak_rss_mb = crate::telemetry::peak_rss_mb();
        let mut extract = match fetched {
            Ok(extract) => extract,
            Err(err) => {
                let message = format!("{err:#}");
                let record = RunRecord::default();
                fail(store, &connector.name, &[], &record, message, &mut outcome).await?;
                return Ok(outcome);
            }
        };
        for warning in &extract.warnings {
            warn!(warning = %warning, "connector warning");
        }
        // PostgreSQL's text cannot hold a NUL character: it is kept as `␀` in what is stored
        // about a rejected row
        for row in &mut extract.rejected {
            for text in [&mut row.location, &mut row.reason, &mut row.raw] {
                if text.contains('\0') {
                    *text = text.replace('\0', "\u{2400}");
                }
            }
        }
        let record = RunRecord {
            rows_read: extract.rows_read as i64,
            rows_loaded: extract.rows_loaded as i64,
            rows_rejected: extract.rejected.len() as i64,
            rows_skipped: extract.rows_skipped as i64,
            first_day: extract.days.first().copied(),
            last_day: extract.days.last().copied(),
            sources: extract.sources.join(", "),
            flags: (!extract.flags.is_empty())
                .then(|| extract.flags.iter().cloned().collect::<Vec<_>>().join(",")),
        };
        outcome.rows_read = extract.rows_read;
        outcome.rows_loaded = extract.rows_loaded;
        outcome.rows_rejected = extract.rejected.len() as u64;

        let max_share = project.settings.ingest.max_reject_share;
        let share = if extract.rows_read == 0 {
            0.0
        } else {
            extract.rejected.len() as f64 / extract.rows_read as f64
        };
        if share > max_share {
            let first = extract
                .rejected
                .first()
                .map(|row| format!("; the first, {}: {}", row.location, row.reason))
                .unwrap_or_default();
            let message = format!(
                "{} of {} rows rejected ({:.1}%), more than [ingest] max_reject_share = {}; \
                 nothing was loaded (see rejected_rows for run {run_id}){first}",
                extract.rejected.len(),
                extract.rows_read,
                share * 100.0,
                max_share
            );
            let rejected = &extract.rejected;
            fail(
                store,
                &connector.name,
                rejected,
                &record,
                message,
                &mut outcome,
            )
            .await?;
            return Ok(outcome);
        }

        let days: Vec<_> = extract.days.iter().copied().collect();
        let store_started = Instant::now();
        let points = std::mem::take(&mut extract.points);
        let point_count = points.len();
        let committed = store
            .commit_ingest_run(
                run_id,
                &connector.name,
                points,
                &days,
                &extract.rejected,
                &record,
            )
            .await;
        let stats = match committed {
            Ok(stats) => stats,
            Err(err) => {
                // the database refused the points (a value it cannot store, a lock held too
                // long): this connector's run fails, with its rejected rows; the others go on
                let message = format!("cannot store the points: {err:#}");
                let rejected = &extract.rejected;
                let failed = fail(
                    store,
                    &connector.name,
                    rejected,
                    &record,
                    message,
                    &mut outcome,
                );
                if let Err(err) = failed.await {
                    error!(error = %err, "cannot record the failed run");
                }
                return Ok(outcome);
            }
        };
        outcome.succeeded = true;
        outcome.points_written = stats.written;
        outcome.points_deleted = stats.deleted;
        outcome.changed_from = stats.first_changed;
        info!(
            rows_read = extract.rows_read,
            rows_loaded = extract.rows_loaded,
            rows_rejected = extract.rejected.len(),
            rows_skipped = extract.rows_skipped,
            points = point_count,
            points_changed = stats.written,
            points_deleted = stats.deleted,
            days = days.len(),
            read_ms,
            read_peak_rss_mb,
            peak_rss_mb = crate::telemetry::peak_rss_mb(),
            store_ms = store_started.elapsed().as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "connector run finished"
        );
        Ok(outcome)
    }
    .instrument(span)
    .await
}
