//! The scorer: rolls each KR's metric up over its window from the stored points, compares it
//! with baseline and target, and writes one row per KR per as-of day plus one per objective.
//!
//! Points are turned into daily series with polars (one filtered group-by per metric and
//! dimension filter), then every rollup is a walk over those series, so ratios are always
//! computed from window sums. To add a KR type, extend `score_value` and `expected_value`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context;
use chrono::NaiveDate;
use polars::prelude::*;
use tracing::{info, info_span};

use crate::connector::csv::{day_from_number, day_number};
use crate::metrics::{Catalogue, EvalError, MetricKind, Rollup};
use crate::okr::{Baseline, Filter, KeyResult, KrType, Objective, Target, Window};
use crate::project::Project;
use crate::settings::ScoringSettings;
use crate::store::{
    KeyResultDefinition, KrScoreRow, ObjectiveDefinition, ObjectiveScoreRow, Store, StoredPoint,
};

/// One metric's daily values under one dimension filter.
type Series = BTreeMap<NaiveDate, f64>;

/// Values of reports that cover a whole period: (first day, last day, value).
type Spans = Vec<(NaiveDate, NaiveDate, f64)>;

/// Daily series for every (base metric, filter) the KRs need.
pub struct SeriesSet {
    series: HashMap<(String, String), Series>,
    /// Period values count in a window only when the whole period lies inside it.
    spans: HashMap<(String, String), Spans>,
}

fn filter_key(filter: &Filter) -> String {
    serde_json::to_string(filter).expect("filter serializes")
}

impl SeriesSet {
    /// Builds the series from stored points with polars. Blocking.
    pub fn build(
        points: Vec<StoredPoint>,
        wanted: &BTreeSet<(String, Filter)>,
    ) -> PolarsResult<SeriesSet> {
        let (points, period_points): (Vec<_>, Vec<_>) =
            points.into_iter().partition(|p| p.period_end <= p.day);
        let mut spans: HashMap<(String, String), Spans> = HashMap::new();
        for (metric, filter) in wanted {
            let matching: Spans = period_points
                .iter()
                .filter(|p| &p.metric == metric)
                .filter(|p| {
                    filter.iter().all(|(dim, values)| {
                        p.dimensions.0.get(dim).is_some_and(|v| values.contains(v))
                    })
                })
                .map(|p| (p.day, p.period_end, p.value))
                .collect();
            if !matching.is_empty() {
                spans.insert((metric.clone(), filter_key(filter)), matching);
            }
        }
        let dim_names: BTreeSet<String> = points
            .iter()
            .flat_map(|p| p.dimensions.0.keys().cloned())
            .collect();
        let mut columns = vec![
            Column::new(
                "metric".into(),
                points.iter().map(|p| p.metric.as_str()).collect::<Vec<_>>(),
            ),
            Column::new(
                "day".into(),
                points.iter().map(|p| day_number(p.day)).collect::<Vec<_>>(),
            ),
            Column::new(
                "value".into(),
                points.iter().map(|p| p.value).collect::<Vec<_>>(),
            ),
        ];
        for name in &dim_names {
            let values: Vec<Option<&str>> = points
                .iter()
                .map(|p| p.dimensions.0.get(name).map(String::as_str))
                .collect();
            columns.push(Column::new(format!("d_{name}").into(), values));
        }
        let frame = DataFrame::new_infer_height(columns)?;

        let mut series = HashMap::new();
        for (metric, filter) in wanted {
            let mut predicate = col("metric").eq(lit(metric.as_str()));
            for (dim, values) in filter {
                if !dim_names.contains(dim) {
                    predicate = lit(false);
                    break;
                }
                let mut any = lit(false);
                for value in values {
                    any = any.or(col(format!("d_{dim}")).eq(lit(value.as_str())));
                }
                predicate = predicate.and(any.fill_null(lit(false)));
            }
            let daily = frame
                .clone()
                .lazy()
                .filter(predicate)
                .group_by([col("day")])
                .agg([col("value").sum()])
                .collect()?;
            let days = daily.column("day")?.i32()?;
            let values = daily.column("value")?.f64()?;
            let map: Series = days
                .iter()
                .zip(values.iter())
                .filter_map(|(d, v)| Some((day_from_number(d?), v?)))
                .collect();
            series.insert((metric.clone(), filter_key(filter)), map);
        }
        Ok(SeriesSet { series, spans })
    }

    fn get(&self, metric: &str, filter: &Filter) -> Option<&Series> {
        self.series.get(&(metric.to_string(), filter_key(filter)))
    }

    /// The metric rolled up over `window` under `filter`.
    pub fn rollup(
        &self,
        catalogue: &Catalogue,
        metric: &str,
        filter: &Filter,
        window: Window,
    ) -> Result<f64, EvalError> {
        let Some(definition) = catalogue.get(metric) else {
            return Err(EvalError::NoData(metric.to_string()));
        };
        if let MetricKind::Derived(formula) = &definition.kind {
            return formula.eval(&mut |name| self.rollup(catalogue, name, filter, window));
        }
        let empty = Series::new();
        let series = self.get(metric, filter).unwrap_or(&empty);
        let values: Vec<f64> = series
            .range(window.start..=window.end)
            .map(|(_, v)| *v)
            .collect();
        if values.is_empty() {
            return Err(EvalError::NoData(metric.to_string()));
        }
        Ok(match &definition.kind {
            MetricKind::Gauge(Rollup::Last) => *values.last().unwrap(),
            MetricKind::Gauge(Rollup::Mean) => values.iter().sum::<f64>() / values.len() as f64,
            MetricKind::Gauge(Rollup::Max) => values.iter().copied().fold(f64::MIN, f64::max),
            MetricKind::Gauge(Rollup::Min) => values.iter().copied().fold(f64::MAX, f64::min),
            _ => values.iter().sum(),
        })
    }

    /// The newest day on or before `day` with data for any base metric of the KR.
    fn newest_day(
        &self,
        catalogue: &Catalogue,
        kr: &KeyResult,
        day: NaiveDate,
    ) -> Option<NaiveDate> {
        catalogue
            .base_metrics(&kr.metric)
            .iter()
            .flat_map(|m| {
                let daily = self
                    .get(m, &kr.filter)
                    .and_then(|s| s.range(..=day).next_back().map(|(d, _)| *d));
                let spans = self
                    .spans
                    .get(&(m.clone(), filter_key(&kr.filter)))
                    .and_then(|s| {
                        s.iter()
                            .map(|(_, end, _)| *end)
                            .filter(|end| *end <= day)
                            .max()
                    });
                daily.into_iter().chain(spans)
            })
            .max()
    }
}

/// Scores a value against baseline and target: `(raw, score)`.
pub fn score_value(
    kr_type: KrType,
    value: f64,
    baseline: Option<f64>,
    target: f64,
) -> Option<(f64, f64)> {
    let linear = |b: f64| (target != b).then(|| (value - b) / (target - b));
    let raw = match (kr_type, baseline) {
        (KrType::Increase | KrType::Decrease, Some(b)) => linear(b)?,
        (KrType::Increase | KrType::Decrease, None) => linear(0.0)?,
        (KrType::AtLeast, Some(b)) if target != b => {
            let raw = (value - b) / (target - b);
            if value >= target { raw.max(1.0) } else { raw }
        }
        (KrType::AtMost, Some(b)) if target != b => {
            let raw = (value - b) / (target - b);
            if value <= target { raw.max(1.0) } else { raw }
        }
        (KrType::AtLeast, _) if target > 0.0 => value / target,
        (KrType::AtLeast, _) => f64::from(value >= target),
        // at_most without a baseline: 1 at the limit, falling linearly to 0 at twice the limit
        (KrType::AtMost, _) if target > 0.0 => 2.0 - value / target,
        (KrType::AtMost, _) => f64::from(value <= target),
    };
    Some((raw, raw.clamp(0.0, 1.0)))
}

/// Grade by the configured bands.
pub fn grade(settings: &ScoringSettings, score: f64) -> &'static str {
    if score < settings.red_below {
        "red"
    } else if score < settings.green_from {
        "yellow"
    } else {
        "green"
    }
}

fn resolve_type(kr: &KeyResult, baseline: Option<f64>, target: f64) -> KrType {
    if let Some(kr_type) = kr.kr_type {
        return kr_type;
    }
    match baseline {
        Some(b) if target < b => KrType::Decrease,
        Some(_) => KrType::Increase,
        None => KrType::AtLeast,
    }
}

/// Computes one KR's row for one as-of day.
pub fn score_kr(
    project: &Project,
    series: &SeriesSet,
    objective: &Objective,
    kr: &KeyResult,
    as_of: NaiveDate,
) -> KrScoreRow {
    let settings = &project.settings.scoring;
    let catalogue = &project.catalogue;
    let window = kr.window;
    let day = as_of.min(window.end);
    let mut row = KrScoreRow {
        kr_id: kr.id.clone(),
        objective_id: objective.id.clone(),
        as_of: day,
        window_start: window.start,
        window_end: window.end,
        elapsed: 0.0,
        kr_type: kr.kr_type.map(|t| t.name().to_string()),
        value: None,
        baseline: None,
        target: match kr.target {
            Target::Value(t) => Some(t),
            Target::Relative(_) => None,
        },
        raw: None,
        score: None,
        grade: None,
        expected: None,
        expected_score: None,
        status: None,
        forecast: None,
        forecast_score: None,
        stale: false,
        data_as_of: None,
        reason: None,
    };
    if as_of < window.start {
        row.as_of = as_of;
        row.reason = Some(format!("window starts on {}", window.start));
        return row;
    }
    let f = ((day - window.start).num_days() + 1) as f64 / window.days() as f64;
    row.elapsed = f;
    row.data_as_of = series.newest_day(catalogue, kr, day);
    row.stale = row
        .data_as_of
        .is_none_or(|d| (day - d).num_days() > settings.stale_after_days as i64);

    // baseline
    let baseline = match &kr.baseline {
        None => None,
        Some(Baseline::Value(b)) => Some(*b),
        Some(_) => {
            let bw = kr
                .baseline_window()
                .expect("computed baselines have a window");
            match series.rollup(catalogue, &kr.metric, &kr.filter, bw) {
                Ok(b) => Some(b),
                Err(err) => {
                    row.reason = Some(format!("baseline over {bw}: {err}"));
                    return row;
                }
            }
        }
    };
    if baseline.is_some_and(|b| !b.is_finite()) {
        row.reason = Some("the baseline is too large to compute".into());
        return row;
    }
    row.baseline = baseline;
    let target = match kr.target {
        Target::Value(t) => t,
        Target::Relative(p) => baseline.expect("relative targets have a baseline") * (1.0 + p),
    };
    row.target = Some(target);
    let kr_type = resolve_type(kr, baseline, target);
    row.kr_type = Some(kr_type.name().to_string());

    // value so far
    let so_far = Window {
        start: window.start,
        end: day,
    };
    let value = match series.rollup(catalogue, &kr.metric, &kr.filter, so_far) {
        Ok(v) => v,
        Err(err) => {
            row.reason = Some(err.to_string());
            return row;
        }
    };
    if !value.is_finite() {
        row.reason = Some("the value is too large to compute".into());
        return row;
    }
    row.value = Some(value);
    let Some((raw, score)) = score_value(kr_type, value, baseline, target) else {
        row.reason = Some("target equals baseline: nothing to score".into());
        return row;
    };
    row.raw = Some(raw);
    row.score = Some(score);
    row.grade = Some(grade(settings, score).to_string());

    // pace and forecast
    let is_counter = matches!(
        catalogue.get(&kr.metric).map(|m| &m.kind),
        Some(MetricKind::Counter)
    );
    let (expected, expected_score) = if is_counter {
        let expected = target * f;
        let expected_score = score_value(kr_type, expected, baseline, target).map(|(_, s)| s);
        (Some(expected), expected_score)
    } else {
        (baseline.map(|b| b + (target - b) * f), Some(f))
    };
    row.expected = expected;
    row.expected_score = expected_score;
    let forecast = if is_counter { value / f } else { value };
    row.forecast = Some(forecast);
    row.forecast_score = score_value(kr_type, forecast, baseline, target).map(|(_, s)| s);

    let lower_is_better = matches!(kr_type, KrType::Decrease | KrType::AtMost);
    let ratio = match (expected_score, expected) {
        (Some(es), _) if es > 1e-9 => Some(score / es),
        // too early for the expected score to move: compare values on the straight line
        (_, Some(ev)) if lower_is_better && value > 0.0 => Some(ev / value),
        (_, Some(ev)) if !lower_is_better && ev > 0.0 => Some(value / ev),
        _ => None,
    };
    row.status = ratio.map(|r| {
        if r >= settings.on_track_from {
            "on_track"
        } else if r >= settings.at_risk_from {
            "at_risk"
        } else {
            "off_track"
        }
        .to_string()
    });
    row
}

/// The weighted mean of an objective's scored KRs.
pub fn score_objective(
    settings: &ScoringSettings,
    objective: &Objective,
    rows: &[KrScoreRow],
    as_of: NaiveDate,
) -> ObjectiveScoreRow {
    let mut weighted = 0.0;
    let mut weights = 0.0;
    let mut scored = 0;
    for kr in &objective.key_results {
        if let Some(score) = rows.iter().find(|r| r.kr_id == kr.id).and_then(|r| r.score) {
            weighted += kr.weight * score;
            weights += kr.weight;
            scored += 1;
        }
    }
    let score = (weights > 0.0).then(|| weighted / weights);
    ObjectiveScoreRow {
        objective_id: objective.id.clone(),
        as_of: as_of.min(objective.period.window().end),
        score,
        grade: score.map(|s| grade(settings, s).to_string()),
        krs_scored: scored,
        krs_total: objective.key_results.len() as i64,
    }
}

/// What a scoring pass wrote.
#[derive(Debug, Default)]
pub struct ScoringSummary {
    pub run_id: i64,
    pub kr_rows: usize,
    pub objective_rows: usize,
    pub unscored: usize,
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

    store
        .sync_definitions(&definitions(project))
        .await
        .context("cannot sync OKR definitions")?;
    let run_id = store
        .start_scoring_run(trigger, first, last, &project.definition_hash)
        .await
        .context("cannot record the scoring run")?;

    let result = score_days(project, store, days).await;
    let (kr_rows, objective_rows) = match result {
        Ok(rows) => rows,
        Err(err) => {
            let _ = store.fail_scoring_run(run_id, &format!("{err:#}")).await;
            return Err(err);
        }
    };
    store
        .commit_scores(run_id, &kr_rows, &objective_rows)
        .await
        .context("cannot write scores")?;
    let unscored = kr_rows.iter().filter(|r| r.score.is_none()).count();
    info!(
        run_id,
        krs = kr_rows.len(),
        objectives = objective_rows.len(),
        unscored,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "scored key results"
    );
    Ok(ScoringSummary {
        run_id,
        kr_rows: kr_rows.len(),
        objective_rows: objective_rows.len(),
        unscored,
    })
}

async fn score_days(
    project: &Project,
    store: &Store,
    days: &[NaiveDate],
) -> anyhow::Result<(Vec<KrScoreRow>, Vec<ObjectiveScoreRow>)> {
    // everything the KRs need, loaded once
    let mut wanted = BTreeSet::new();
    let mut from: Option<NaiveDate> = None;
    let last = *days.iter().max().expect("days is not empty");
    for (_, kr) in project.key_results() {
        for base in project.catalogue.base_metrics(&kr.metric) {
            wanted.insert((base, kr.filter.clone()));
        }
        let start = kr
            .baseline_window()
            .map_or(kr.window.start, |b| b.start.min(kr.window.start));
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
    let points = store
        .load_points(&metrics, from, last)
        .await
        .context("cannot read points")?;

    let span = tracing::Span::current();
    let series = tokio::task::spawn_blocking(move || {
        let _guard = span.enter();
        SeriesSet::build(points, &wanted)
    })
    .await
    .context("scoring task failed")?
    .map_err(|err| anyhow::anyhow!("cannot build daily series: {err}"))?;

    let mut kr_rows: BTreeMap<(String, NaiveDate), KrScoreRow> = BTreeMap::new();
    let mut objective_rows: BTreeMap<(String, NaiveDate), ObjectiveScoreRow> = BTreeMap::new();
    for &day in days {
        for objective in &project.objectives {
            let rows: Vec<KrScoreRow> = objective
                .key_results
                .iter()
                .map(|kr| score_kr(project, &series, objective, kr, day))
                .collect();
            let o = score_objective(&project.settings.scoring, objective, &rows, day);
            objective_rows.insert((o.objective_id.clone(), o.as_of), o);
            for row in rows {
                kr_rows.insert((row.kr_id.clone(), row.as_of), row);
            }
        }
    }
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
                        let metric = project.catalogue.get(&k.metric);
                        KeyResultDefinition {
                            id: k.id.clone(),
                            title: k.title.clone(),
                            metric: k.metric.clone(),
                            metric_kind: metric.map_or("unknown", |m| m.kind_name()).to_string(),
                            unit: metric.and_then(|m| m.unit.clone()),
                            filter: k.filter.clone(),
                            kr_type: k.kr_type.map(|t| t.name().to_string()),
                            baseline_spec: k.baseline_spec(),
                            target_spec: k.target_spec(),
                            weight: k.weight,
                            window_start: k.window.start,
                            window_end: k.window.end,
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increase_and_decrease_share_one_formula() {
        assert_eq!(
            score_value(KrType::Increase, 1043.0, Some(306.0), 428.4).map(|r| r.1),
            Some(1.0)
        );
        let (raw, _) = score_value(KrType::Increase, 1043.0, Some(306.0), 428.4).unwrap();
        assert!((raw - 6.0212).abs() < 1e-3, "{raw}");
        let (raw, score) = score_value(KrType::Decrease, 950.0, Some(1000.0), 850.0).unwrap();
        assert!((raw - 1.0 / 3.0).abs() < 1e-9);
        assert!((score - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn worse_than_baseline_keeps_negative_raw() {
        let (raw, score) = score_value(KrType::Increase, 90.0, Some(100.0), 140.0).unwrap();

        assert!((raw + 0.25).abs() < 1e-9);
        assert_eq!(score, 0.0);
    }

    #[test]
    fn thresholds_without_baseline() {
        assert_eq!(
            score_value(KrType::AtLeast, 1379.0, None, 2000.0).map(|r| r.1),
            Some(0.6895)
        );
        assert_eq!(
            score_value(KrType::AtLeast, 45.0, None, 40.0).map(|r| r.1),
            Some(1.0)
        );
        assert_eq!(
            score_value(KrType::AtMost, 450.0, None, 500.0).map(|r| r.1),
            Some(1.0)
        );
        assert_eq!(
            score_value(KrType::AtMost, 600.0, None, 500.0).map(|r| r.1),
            Some(0.8)
        );
        assert_eq!(
            score_value(KrType::AtMost, 1200.0, None, 500.0).map(|r| r.1),
            Some(0.0)
        );
    }

    #[test]
    fn target_equal_to_baseline_has_no_score() {
        assert_eq!(score_value(KrType::Increase, 5.0, Some(5.0), 5.0), None);
    }

    #[test]
    fn grades_follow_the_bands() {
        let s = ScoringSettings::default();

        assert_eq!(grade(&s, 0.29), "red");
        assert_eq!(grade(&s, 0.3), "yellow");
        assert_eq!(grade(&s, 0.7), "green");
    }
}
