//! The scorer: rolls each KR's metric up over its window from the stored points, compares it
//! with baseline and target, and writes one row per KR per as-of day plus one per objective,
//! all of a pass in one transaction.
//!
//! [`series`] turns points into daily series; [`rules`] holds the scoring rules;
//! [`review`] the end-of-period review. Scoring a day again replaces its rows, which is how
//! backfills and restatements work.

pub mod review;
pub mod rules;
pub mod series;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use chrono::NaiveDate;
use tracing::{info, info_span};

use crate::okr::Objective;
use crate::project::Project;
use crate::store::{
    KeyResultDefinition, KrScoreRow, ObjectiveDefinition, ObjectiveScoreRow, Store,
};
pub use rules::{grade, score_kr, score_objective, score_value, zone};
use series::SeriesSet;

/// What a scoring pass wrote.
#[derive(Debug, Default)]
pub struct ScoringSummary {
    pub run_id: i64,
    pub kr_rows: usize,
    pub objective_rows: usize,
    pub unscored: usize,
}

/// Where a scoring pass spent its time, in milliseconds (logged with the pass).
#[derive(Debug, Default)]
struct Phases {
    definitions_ms: u64,
    points: usize,
    load_ms: u64,
    series_ms: u64,
    score_ms: u64,
    write_ms: u64,
}

fn millis(since: std::time::Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// Today in the scoring time zone.
pub fn today(project: &Project) -> NaiveDate {
    let tz: chrono_tz::Tz = project
        .settings
        .scoring
        .timezone
        .parse()
        .unwrap_or(chrono_tz::UTC);
    chrono::Utc::now().with_timezone(&tz).date_naive()
}

/// Scores every KR for each day of `days` and writes the rows in one transaction.
pub async fn run(
    project: &Project,
    store: &Store,
    days: &[NaiveDate],
    trigger: &str,
) -> anyhow::Result<ScoringSummary> {
    let (Some(&first), Some(&last)) = (days.iter().min(), days.iter().max()) else {
        return Ok(ScoringSummary::default());
    };
    let span = info_span!("scoring", from = %first, to = %last);
    let _guard = span.enter();
    let started = std::time::Instant::now();
    let mut phases = Phases::default();

    // the definitions change only with the files: skip the upserts when the last pass used
    // the same ones (a service scores after every sync). They are written while the points
    // are read and scored: neither needs the other until the scores are committed.
    let definitions = async {
        let synced = store
            .last_definition_hash()
            .await
            .context("cannot read scoring runs")?;
        if synced.as_deref() != Some(project.definition_hash.as_str()) {
            store
                .sync_definitions(&definitions(project))
                .await
                .context("cannot sync OKR definitions")?;
        }
        let definitions_ms = millis(started);
        let run_id = store
            .start_scoring_run(trigger, first, last, &project.definition_hash)
            .await
            .context("cannot record the scoring run")?;
        anyhow::Ok((run_id, definitions_ms))
    };
    let (run, scored) = tokio::join!(definitions, score_days(project, store, days, &mut phases));
    let (run_id, definitions_ms) = run?;
    phases.definitions_ms = definitions_ms;
    let (kr_rows, objective_rows) = match scored {
        Ok(rows) => rows,
        Err(err) => {
            let _ = store.fail_scoring_run(run_id, &format!("{err:#}")).await;
            return Err(err);
        }
    };
    let writing = std::time::Instant::now();
    store
        .commit_scores(run_id, &kr_rows, &objective_rows)
        .await
        .context("cannot write scores")?;
    phases.write_ms = millis(writing);
    let unscored = kr_rows.iter().filter(|r| r.score.is_none()).count();
    info!(
        run_id,
        krs = kr_rows.len(),
        objectives = objective_rows.len(),
        unscored,
        elapsed_ms = millis(started),
        definitions_ms = phases.definitions_ms,
        points = phases.points,
        load_ms = phases.load_ms,
        series_ms = phases.series_ms,
        score_ms = phases.score_ms,
        write_ms = phases.write_ms,
        "scored key results"
    );
    Ok(ScoringSummary {
        run_id,
        kr_rows: kr_rows.len(),
        objective_rows: objective_rows.len(),
        unscored,
    })
}

/// Scores again the stored as-of days from `changed` on, after a sync restated past days.
pub async fn rescore_from(
    project: &Project,
    store: &Store,
    changed: NaiveDate,
    trigger: &str,
) -> anyhow::Result<Option<ScoringSummary>> {
    let days = store
        .scored_days_from(changed)
        .await
        .context("cannot read scored days")?;
    if days.is_empty() {
        return Ok(None);
    }
    info!(from = %changed, days = days.len(), "re-scoring days whose points changed");
    run(project, store, &days, trigger).await.map(Some)
}

async fn score_days(
    project: &Project,
    store: &Store,
    days: &[NaiveDate],
    phases: &mut Phases,
) -> anyhow::Result<(Vec<KrScoreRow>, Vec<ObjectiveScoreRow>)> {
    // everything the KRs need, loaded once
    let settings = &project.settings.scoring;
    let history = settings.trend_days.max(settings.jump_history_days) as i64;
    let mut wanted = BTreeSet::new();
    let mut from: Option<NaiveDate> = None;
    let last = *days.iter().max().expect("days is not empty");
    for (_, kr) in project.key_results() {
        for metric in kr.metrics() {
            for base in project.catalogue.base_metrics(metric) {
                wanted.insert((base, kr.filter.clone()));
            }
        }
        let mut start = kr.window.start - chrono::TimeDelta::days(history);
        if let Some(b) = kr.baseline_window() {
            start = start.min(b.start);
        }
        from = Some(from.map_or(start, |f| f.min(start)));
    }
    let Some(from) = from else {
        return Ok((Vec::new(), Vec::new()));
    };
    let metrics: Vec<String> = wanted
        .iter()
        .map(|(m, _)| m.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let loading = std::time::Instant::now();
    let points = store
        .load_points(&metrics, from, last)
        .await
        .context("cannot read points")?;
    phases.points = points.len();
    phases.load_ms = millis(loading);

    let building = std::time::Instant::now();
    let span = tracing::Span::current();
    let series = tokio::task::spawn_blocking(move || {
        let _guard = span.enter();
        SeriesSet::build(points, &wanted)
    })
    .await
    .context("scoring task failed")?;
    phases.series_ms = millis(building);

    let scoring = std::time::Instant::now();
    // every (day, objective) is scored on its own, on all cores
    let pairs: Vec<(NaiveDate, &Objective)> = days
        .iter()
        .flat_map(|&day| project.objectives.iter().map(move |o| (day, o)))
        .collect();
    let score_pair = |&(day, objective): &(NaiveDate, &Objective)| {
        let rows: Vec<KrScoreRow> = objective
            .key_results
            .iter()
            .map(|kr| score_kr(project, &series, objective, kr, day))
            .collect();
        let o = score_objective(settings, objective, &rows, day);
        (rows, o)
    };
    let scored: Vec<(Vec<KrScoreRow>, ObjectiveScoreRow)> =
        crate::cores::map_on_cores(&pairs, score_pair);
    let mut kr_rows: BTreeMap<(String, NaiveDate), KrScoreRow> = BTreeMap::new();
    let mut objective_rows: BTreeMap<(String, NaiveDate), ObjectiveScoreRow> = BTreeMap::new();
    for (rows, o) in scored {
        objective_rows.insert((o.objective_id.clone(), o.as_of), o);
        for row in rows {
            kr_rows.insert((row.kr_id.clone(), row.as_of), row);
        }
    }
    phases.score_ms = millis(scoring);
    Ok((
        kr_rows.into_values().collect(),
        objective_rows.into_values().collect(),
    ))
}

/// The objectives and KRs as stored for BI tools.
pub fn definitions(project: &Project) -> Vec<ObjectiveDefinition> {
    project
        .objectives
        .iter()
        .map(|o| {
            let window = o.period.window();
            ObjectiveDefinition {
                id: o.id.clone(),
                title: o.title.clone(),
                owner: o.owner.clone(),
                period: o.period.label(),
                window_start: window.start,
                window_end: window.end,
                timezone: o.timezone.clone(),
                source_file: o.file.clone(),
                key_results: o
                    .key_results
                    .iter()
                    .map(|k| {
                        let metric = k.metric.as_deref().and_then(|m| project.catalogue.get(m));
                        KeyResultDefinition {
                            id: k.id.clone(),
                            title: k.title.clone(),
                            metric: k.metric.clone().unwrap_or_default(),
                            metric_kind: metric.map_or("none", |m| m.kind_name()).to_string(),
                            unit: metric.and_then(|m| m.unit.clone()),
                            filter: k.filter.clone(),
                            kr_type: k.kr_type.map(|t| t.name().to_string()),
                            baseline_spec: k.baseline_spec(),
                            target_spec: k.target_spec(),
                            revisions: k
                                .revisions
                                .iter()
                                .map(|r| (r.effective, r.target.spec(), r.note.clone()))
                                .collect(),
                            weight: k.weight,
                            window_start: k.window.start,
                            window_end: k.window.end,
                            budget: k.budget.as_ref().map(|b| b.amount),
                            spend_metric: k.budget.as_ref().map(|b| b.spend_metric.clone()),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}
