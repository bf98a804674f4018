//! The scoring rules: how a value scores against baseline and target for each KR type, the
//! grade bands, pace and forecast, and an objective's weighted mean.
//!
//! To add a KR type, add its rule to [`score_value`], its pace to [`score_kr`], and its name
//! to `okr::KrType`.

use std::collections::BTreeSet;

use chrono::NaiveDate;

use super::series::{SeriesSet, trend_at};
use crate::metrics::MetricKind;
use crate::okr::{Baseline, KeyResult, KrType, Objective, Target, Window};
use crate::project::Project;
use crate::settings::ScoringSettings;
use crate::store::{KrScoreRow, ObjectiveScoreRow};

/// `(raw, score)` for a value against a numeric target; `None` when the target equals the
/// baseline and nothing can be scored.
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
        // a milestone by count: done or not, with the share reached kept in raw
        (KrType::Milestone, _) if target > 0.0 => {
            return Some((value / target, f64::from(value >= target)));
        }
        (KrType::Milestone, _) => f64::from(value >= target),
        (KrType::Within, _) => return None,
    };
    Some((raw, raw.clamp(0.0, 1.0)))
}

/// `(score, distance)` for a band: 1 inside, 0 outside, and how far outside.
pub fn score_band(value: f64, low: f64, high: f64) -> (f64, f64) {
    if value < low {
        (0.0, low - value)
    } else if value > high {
        (0.0, value - high)
    } else {
        (1.0, 0.0)
    }
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

/// The end-of-period zone of a final score (Google's OKR practice): `raw` above 1 is stretch.
pub fn zone(score: f64, raw: Option<f64>) -> &'static str {
    if raw.is_some_and(|r| r > 1.0) {
        "stretch"
    } else if score < 0.3 {
        "fail"
    } else if score < 0.7 {
        "commit"
    } else {
        "target"
    }
}

fn resolve_type(kr: &KeyResult, baseline: Option<f64>, target: &Target) -> KrType {
    if let Some(kr_type) = kr.kr_type {
        return kr_type;
    }
    match (baseline, target) {
        (_, Target::Band(..)) => KrType::Within,
        (Some(b), Target::Value(t)) if *t < b => KrType::Decrease,
        (Some(_), Target::Relative(p)) if *p < 0.0 => KrType::Decrease,
        (Some(_), _) => KrType::Increase,
        (None, _) => KrType::AtLeast,
    }
}

/// A target as a number (relative targets apply to the baseline).
fn target_value(target: &Target, baseline: Option<f64>) -> Option<f64> {
    match target {
        Target::Value(t) => Some(*t),
        Target::Relative(p) => baseline.map(|b| b * (1.0 + p)),
        Target::Band(..) => None,
    }
}

/// A score row with nothing computed yet.
fn empty_row(
    project: &Project,
    objective: &Objective,
    kr: &KeyResult,
    day: NaiveDate,
) -> KrScoreRow {
    KrScoreRow {
        kr_id: kr.id.clone(),
        objective_id: objective.id.clone(),
        as_of: day,
        window_start: kr.window.start,
        window_end: kr.window.end,
        elapsed: 0.0,
        kr_type: kr.kr_type.map(|t| t.name().to_string()),
        value: None,
        baseline: None,
        target: None,
        target_original: None,
        target_effective: None,
        target_low: None,
        target_high: None,
        distance: None,
        raw: None,
        score: None,
        score_original: None,
        grade: None,
        expected: None,
        expected_score: None,
        status: None,
        forecast: None,
        forecast_score: None,
        spend: None,
        budget: kr.budget.as_ref().map(|b| b.amount),
        budget_used: None,
        cost_per_point: None,
        stale: false,
        data_as_of: None,
        flags: None,
        source_runs: None,
        definition_hash: project.definition_hash.clone(),
        reason: None,
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
    let mut row = empty_row(project, objective, kr, day);
    if as_of < window.start {
        row.as_of = as_of;
        row.reason = Some(format!("window starts on {}", window.start));
        return row;
    }
    let f = ((day - window.start).num_days() + 1) as f64 / window.days() as f64;
    row.elapsed = f;
    let so_far = Window {
        start: window.start,
        end: day,
    };

    // milestone by date: done or not
    if kr.target.is_none() {
        let done = kr.done.is_some_and(|d| d <= day);
        let score = f64::from(done);
        row.kr_type = Some(KrType::Milestone.name().into());
        row.raw = Some(score);
        row.score = Some(score);
        row.score_original = Some(score);
        row.grade = Some(grade(settings, score).into());
        row.status = match (done, day >= window.end) {
            (true, _) => Some("on_track".into()),
            (false, true) => Some("off_track".into()),
            (false, false) => None,
        };
        return row;
    }
    let Some(metric) = kr.metric.as_deref() else {
        row.reason = Some("no metric to measure".into());
        return row;
    };
    let base: BTreeSet<String> = kr
        .metrics()
        .iter()
        .flat_map(|m| catalogue.base_metrics(m))
        .collect();
    row.data_as_of = series.newest_day(&base, &kr.filter, day);
    let limit = kr.stale_after_days.unwrap_or(settings.stale_after_days);
    row.stale = row
        .data_as_of
        .is_none_or(|d| (day - d).num_days() > limit as i64);
    let mut windows = vec![so_far];
    windows.extend(kr.baseline_window());
    let runs = series.runs(&base, &kr.filter, &windows);
    row.source_runs = (!runs.is_empty()).then(|| {
        runs.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    });
    // what the sources said about the numbers (GA4 thresholding, Metrica sampling), then any
    // jump in the data
    let source = series.source_flags(&base, &kr.filter, &windows);
    let jump = series.jump(
        &base,
        &kr.filter,
        so_far,
        settings.jump_factor,
        settings.jump_history_days,
    );
    let mut flags: Vec<String> = Vec::new();
    if !source.is_empty() {
        flags.push(format!(
            "source: {}",
            source.into_iter().collect::<Vec<_>>().join(",")
        ));
    }
    flags.extend(jump);
    row.flags = (!flags.is_empty()).then(|| flags.join("; "));

    // budget: what was spent so far
    if let Some(budget) = &kr.budget
        && let Ok(spend) = series.rollup(catalogue, &budget.spend_metric, &kr.filter, so_far)
    {
        row.spend = Some(spend);
        row.budget_used = Some(spend / budget.amount);
    }

    // baseline
    let baseline = match &kr.baseline {
        None => None,
        Some(Baseline::Value(b)) => Some(*b),
        Some(_) => {
            let bw = kr
                .baseline_window()
                .expect("computed baselines have a window");
            match series.rollup(catalogue, metric, &kr.filter, bw) {
                Ok(b) if b.is_finite() => Some(b),
                Ok(_) => {
                    row.reason = Some("the baseline is too large to compute".into());
                    return row;
                }
                Err(err) => {
                    row.reason = Some(format!("baseline over {bw}: {err}"));
                    return row;
                }
            }
        }
    };
    row.baseline = baseline;

    // targets: the one in force and the original
    let (in_force, effective) = kr.target_on(day);
    let in_force = in_force.expect("a KR without target is a dated milestone");
    let original = kr.target.expect("checked above");
    let kr_type = resolve_type(kr, baseline, &in_force);
    row.kr_type = Some(kr_type.name().to_string());
    row.target_effective = effective;
    row.target = target_value(&in_force, baseline);
    row.target_original = target_value(&original, baseline);
    if let Target::Band(low, high) = in_force {
        row.target_low = Some(low);
        row.target_high = Some(high);
    }

    // value so far
    let value = match series.rollup(catalogue, metric, &kr.filter, so_far) {
        Ok(v) if v.is_finite() => v,
        Ok(_) => {
            row.reason = Some("the value is too large to compute".into());
            return row;
        }
        Err(err) => {
            // a filter value that no point has (a typo) looks like a source without data
            let filtered =
                matches!(err, crate::metrics::EvalError::NoData(_)) && !kr.filter.is_empty();
            let filter: Vec<String> = kr
                .filter
                .iter()
                .map(|(dimension, values)| format!("{dimension} = {}", values.join(" | ")))
                .collect();
            row.reason = Some(if filtered {
                format!(
                    "{err} where {}; `krscore preview` shows the values the dimensions take",
                    filter.join(", ")
                )
            } else {
                err.to_string()
            });
            return row;
        }
    };
    row.value = Some(value);
    let score_against = |target: &Target| -> Option<(f64, f64)> {
        match target {
            Target::Band(low, high) => Some(score_band(value, *low, *high)).map(|(s, _)| (s, s)),
            other => score_value(kr_type, value, baseline, target_value(other, baseline)?),
        }
    };
    let Some((raw, score)) = score_against(&in_force) else {
        row.reason = Some("target equals baseline: nothing to score".into());
        return row;
    };
    row.raw = Some(raw);
    row.score = Some(score);
    row.score_original = score_against(&original).map(|(_, s)| s);
    row.grade = Some(grade(settings, score).to_string());
    if let Target::Band(low, high) = in_force {
        row.distance = Some(score_band(value, low, high).1);
    }
    if let Some(spend) = row.spend
        && score > 0.0
    {
        row.cost_per_point = Some(spend / (score * 100.0));
    }

    // pace and forecast
    let is_counter = matches!(
        catalogue.get(metric).map(|m| &m.kind),
        Some(MetricKind::Counter)
    );
    let target = row.target;
    let (expected, expected_score) = match (kr_type, target) {
        (KrType::Within, _) => (None, None),
        (_, Some(t)) if is_counter => {
            let expected = t * f;
            (
                Some(expected),
                score_value(kr_type, expected, baseline, t).map(|(_, s)| s),
            )
        }
        (_, Some(t)) => (baseline.map(|b| b + (t - b) * f), Some(f)),
        (_, None) => (None, None),
    };
    row.expected = expected;
    row.expected_score = expected_score;
    let forecast = if is_counter {
        Some(value / f)
    } else {
        let recent = series.daily_values(catalogue, metric, &kr.filter, day, settings.trend_days);
        trend_at(&recent, window.end).or(Some(value))
    };
    row.forecast = forecast;
    row.forecast_score = forecast.and_then(|v| match in_force {
        Target::Band(low, high) => Some(score_band(v, low, high).0),
        ref other => {
            score_value(kr_type, v, baseline, target_value(other, baseline)?).map(|(_, s)| s)
        }
    });

    let lower_is_better = matches!(kr_type, KrType::Decrease | KrType::AtMost);
    let ratio = match (kr_type, expected_score, expected) {
        (KrType::Within, _, _) => Some(score * 2.0),
        (_, Some(es), _) if es > 1e-9 => Some(score / es),
        // too early for the expected score to move: compare values on the straight line
        (_, _, Some(ev)) if lower_is_better && value > 0.0 => Some(ev / value),
        (_, _, Some(ev)) if !lower_is_better && ev > 0.0 => Some(value / ev),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increase_and_decrease_share_one_formula() {
        // (1043 - 306) / (428.4 - 306) = 737 / 122.4 = 6.0212
        let (raw, score) = score_value(KrType::Increase, 1043.0, Some(306.0), 428.4).unwrap();
        assert!((raw - 6.0212).abs() < 1e-3, "{raw}");
        assert_eq!(score, 1.0);
        // CPA 1000 -> 850: at 950, (950 - 1000) / (850 - 1000) = 1/3
        let (raw, score) = score_value(KrType::Decrease, 950.0, Some(1000.0), 850.0).unwrap();
        assert!((raw - 1.0 / 3.0).abs() < 1e-9);
        assert!((score - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn decrease_met_half_met_and_missed() {
        // baseline 1000, target 800: at 800 raw 1; at 900 raw 0.5; at 1100 raw -0.5, score 0
        assert_eq!(
            score_value(KrType::Decrease, 800.0, Some(1000.0), 800.0),
            Some((1.0, 1.0))
        );
        assert_eq!(
            score_value(KrType::Decrease, 900.0, Some(1000.0), 800.0),
            Some((0.5, 0.5))
        );
        assert_eq!(
            score_value(KrType::Decrease, 1100.0, Some(1000.0), 800.0),
            Some((-0.5, 0.0))
        );
    }

    #[test]
    fn worse_than_baseline_keeps_negative_raw() {
        // (90 - 100) / (140 - 100) = -0.25
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
        // 2 - 600 / 500 = 0.8
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
    fn bands_and_milestones() {
        assert_eq!(score_band(0.06, 0.05, 0.08), (1.0, 0.0));
        let (score, distance) = score_band(0.09, 0.05, 0.08);
        assert_eq!(score, 0.0);
        assert!((distance - 0.01).abs() < 1e-12);
        // 3 of 5 guides: not done, 60% of the way
        assert_eq!(
            score_value(KrType::Milestone, 3.0, None, 5.0),
            Some((0.6, 0.0))
        );
        assert_eq!(
            score_value(KrType::Milestone, 5.0, None, 5.0),
            Some((1.0, 1.0))
        );
    }

    #[test]
    fn target_equal_to_baseline_has_no_score() {
        assert_eq!(score_value(KrType::Increase, 5.0, Some(5.0), 5.0), None);
    }

    #[test]
    fn grades_and_zones_follow_the_bands() {
        let s = ScoringSettings::default();

        assert_eq!(grade(&s, 0.29), "red");
        assert_eq!(grade(&s, 0.3), "yellow");
        assert_eq!(grade(&s, 0.7), "green");
        assert_eq!(zone(0.2, Some(0.2)), "fail");
        assert_eq!(zone(0.5, Some(0.5)), "commit");
        assert_eq!(zone(1.0, Some(1.0)), "target");
        assert_eq!(zone(1.0, Some(1.25)), "stretch");
    }
}
