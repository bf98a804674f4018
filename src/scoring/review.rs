//! The end-of-period review: each KR's final score and zone (fail below 0.3, commit 0.3 to
//! 0.7, target 0.7 to 1.0, stretch above 1.0), the share of each zone per owner, and
//! calibration advice from the owner's recent reviews. Stored in `okr_reviews` for BI.

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::Context;
use chrono::NaiveDate;

use super::rules::zone;
use crate::okr::Period;
use crate::project::Project;
use crate::store::{ReviewRow, Store};

/// A finished review.
#[derive(Debug)]
pub struct Review {
    pub period: String,
    pub as_of: NaiveDate,
    pub rows: Vec<ReviewRow>,
    /// Owner -> (zone -> number of KRs).
    pub zones: BTreeMap<String, BTreeMap<&'static str, usize>>,
    pub advice: Vec<String>,
}

const ZONES: [&str; 4] = ["fail", "commit", "target", "stretch"];

/// Reviews the objectives of `period` as of its end (or today while it runs).
pub async fn review(
    project: &Project,
    store: &Store,
    period: &str,
    today: NaiveDate,
) -> anyhow::Result<Review> {
    let label = Period::parse(period)
        .map(|p| p.label())
        .unwrap_or_else(|| period.to_string());
    let objectives: Vec<_> = project
        .objectives
        .iter()
        .filter(|o| o.period.label() == label)
        .collect();
    anyhow::ensure!(
        !objectives.is_empty(),
        "no objective has period `{label}`; periods in the OKR files: {}",
        project
            .objectives
            .iter()
            .map(|o| o.period.label())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", ")
    );
    let end = objectives
        .iter()
        .map(|o| o.period.window().end)
        .max()
        .expect("not empty");
    let as_of = end.min(today);

    // the final scores: score the period's last day now, so the review reads current data
    super::run(project, store, &[as_of], "review").await?;
    let scores = store
        .kr_scores(Some(as_of))
        .await
        .context("cannot read scores")?;

    let mut rows = Vec::new();
    let mut zones: BTreeMap<String, BTreeMap<&'static str, usize>> = BTreeMap::new();
    for objective in &objectives {
        let owner = objective
            .owner
            .clone()
            .unwrap_or_else(|| "(no owner)".into());
        for kr in &objective.key_results {
            let Some(s) = scores.iter().find(|s| s.kr_id == kr.id) else {
                continue;
            };
            let score = s.score;
            let kr_zone = score.map(|v| zone(v, s.raw));
            if let Some(z) = kr_zone {
                *zones
                    .entry(owner.clone())
                    .or_default()
                    .entry(z)
                    .or_default() += 1;
            }
            rows.push(ReviewRow {
                period: label.clone(),
                objective_id: objective.id.clone(),
                kr_id: kr.id.clone(),
                owner: owner.clone(),
                as_of: s.as_of,
                score,
                raw: s.raw,
                zone: kr_zone.map(str::to_string),
            });
        }
    }
    store
        .write_review(&label, &rows)
        .await
        .context("cannot store the review")?;

    // calibration over this and the owner's previous reviewed periods
    let hygiene = &project.settings.hygiene;
    let mut advice = Vec::new();
    for owner in zones.keys() {
        let history = store
            .owner_period_averages(owner, hygiene.calibration_periods)
            .await
            .context("cannot read earlier reviews")?;
        if history.is_empty() {
            continue;
        }
        let mean = history.iter().map(|(_, v)| v).sum::<f64>() / history.len() as f64;
        let periods: Vec<&str> = history.iter().map(|(p, _)| p.as_str()).collect();
        if mean >= hygiene.sandbagging_from {
            advice.push(format!(
                "{owner}: KRs average {mean:.2} over {}: goals look too safe; aim higher",
                periods.join(", ")
            ));
        } else if mean <= hygiene.unrealistic_to {
            advice.push(format!(
                "{owner}: KRs average {mean:.2} over {}: goals look unrealistic or blocked; \
                 look at what stood in the way",
                periods.join(", ")
            ));
        }
    }
    Ok(Review {
        period: label,
        as_of,
        rows,
        zones,
        advice,
    })
}

/// The review as text for the terminal.
pub fn render(project: &Project, review: &Review) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Review of {} (final scores as of {})",
        review.period, review.as_of
    );
    for objective in project
        .objectives
        .iter()
        .filter(|o| o.period.label() == review.period)
    {
        let _ = writeln!(
            out,
            "\n{}  [{}]{}",
            objective.title,
            objective.id,
            objective
                .owner
                .as_ref()
                .map(|o| format!("  owner: {o}"))
                .unwrap_or_default()
        );
        for row in review
            .rows
            .iter()
            .filter(|r| r.objective_id == objective.id)
        {
            let title = objective
                .key_results
                .iter()
                .find(|k| k.id == row.kr_id)
                .map_or("", |k| k.title.as_str());
            let _ = writeln!(
                out,
                "  {:<8} {:>5}  {}",
                row.zone.as_deref().unwrap_or("-"),
                row.score.map_or("-".into(), |s| format!("{s:.2}")),
                title
            );
        }
    }
    let _ = writeln!(
        out,
        "\nZones per owner (fail < 0.3 <= commit < 0.7 <= target <= 1.0 < stretch):"
    );
    for (owner, counts) in &review.zones {
        let total: usize = counts.values().sum();
        let shares: Vec<String> = ZONES
            .iter()
            .map(|z| {
                let n = counts.get(z).copied().unwrap_or(0);
                format!("{z} {:.0}%", 100.0 * n as f64 / total.max(1) as f64)
            })
            .collect();
        let _ = writeln!(out, "  {owner}: {} ({total} KRs)", shares.join(", "));
    }
    let scored: Vec<f64> = review.rows.iter().filter_map(|r| r.score).collect();
    if !scored.is_empty() {
        let mean = scored.iter().sum::<f64>() / scored.len() as f64;
        let _ = writeln!(
            out,
            "\nAverage final score {mean:.2} (0.6-0.7 is the healthy zone for stretch goals)"
        );
    }
    for line in &review.advice {
        let _ = writeln!(out, "advice: {line}");
    }
    out
}
