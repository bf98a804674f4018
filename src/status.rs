//! The terminal view of progress: objectives with their KRs, values, targets, a progress bar,
//! grade and pace status, read back from the stored scores.

use std::fmt::Write;

use comfy_table::{Cell, ContentArrangement, Table, presets};

use crate::metrics::Metric;
use crate::project::Project;
use crate::store::{IngestRunRow, KrScoreRow, ObjectiveScoreRow};

/// A text progress bar of `width` cells for a score in 0..1.
pub fn bar(score: f64, width: usize) -> String {
    let filled = (score.clamp(0.0, 1.0) * width as f64).round() as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

/// A value in the metric's unit: `7.08%`, `1 379`, `994.13`.
pub fn format_value(value: f64, metric: Option<&Metric>) -> String {
    if metric.is_some_and(Metric::is_percent) {
        return format!("{:.2}%", value * 100.0);
    }
    let rounded = if value.abs() >= 1000.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    };
    group_thousands(&rounded)
}

fn group_thousands(text: &str) -> String {
    let (sign, rest) = text.strip_prefix('-').map_or(("", text), |r| ("-", r));
    let (int, frac) = rest
        .split_once('.')
        .map_or((rest, None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// Renders the status view.
pub fn render(
    project: &Project,
    objectives: &[ObjectiveScoreRow],
    krs: &[KrScoreRow],
    runs: &[IngestRunRow],
) -> String {
    let mut out = String::new();
    if krs.is_empty() {
        out.push_str("No scores yet: run `krscore score` (or `krscore run --once`).\n");
    }
    for objective in &project.objectives {
        let row = objectives.iter().find(|o| o.objective_id == objective.id);
        let score = row.and_then(|r| r.score);
        let _ = writeln!(
            out,
            "\n{}  [{}]  {}{}",
            objective.title,
            objective.id,
            objective.period.label(),
            objective
                .owner
                .as_ref()
                .map(|o| format!("  owner: {o}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "  objective score {}  {}{}",
            score.map_or("  -  ".to_string(), |s| format!("{s:.2}")),
            score.map_or(String::new(), |s| bar(s, 20)),
            row.and_then(|r| r.grade.clone())
                .map(|g| format!("  {g}"))
                .unwrap_or_default()
        );

        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled);
        table.set_header([
            "  KR", "value", "target", "progress", "score", "grade", "status", "as of",
        ]);
        for kr in &objective.key_results {
            let metric = kr.metric.as_deref().and_then(|m| project.catalogue.get(m));
            let s = krs.iter().find(|r| r.kr_id == kr.id);
            let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format_value(v, metric));
            let mut status = s
                .and_then(|r| r.status.clone())
                .unwrap_or_else(|| "-".into());
            if s.is_some_and(|r| r.stale) {
                status.push_str(" (stale)");
            }
            let title = if kr.title.chars().count() > 48 {
                format!("{}…", kr.title.chars().take(47).collect::<String>())
            } else {
                kr.title.clone()
            };
            table.add_row([
                Cell::new(format!("  {title}")),
                Cell::new(match (kr.metric.is_none(), s.and_then(|r| r.score)) {
                    (true, Some(score)) if score >= 1.0 => "done".to_string(),
                    (true, Some(_)) => "open".to_string(),
                    _ => fmt(s.and_then(|r| r.value)),
                }),
                Cell::new(match s {
                    Some(r) if r.target_low.is_some() => {
                        format!("{}-{}", fmt(r.target_low), fmt(r.target_high))
                    }
                    Some(r) if r.target_effective.is_some() => format!("{} *", fmt(r.target)),
                    Some(_) if kr.metric.is_none() => "milestone".to_string(),
                    _ => fmt(s.and_then(|r| r.target)),
                }),
                Cell::new(
                    s.and_then(|r| r.score)
                        .map_or(String::new(), |v| bar(v, 10)),
                ),
                Cell::new(
                    s.and_then(|r| r.score)
                        .map_or("-".into(), |v| format!("{v:.2}")),
                ),
                Cell::new(
                    s.and_then(|r| r.grade.clone())
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::new(status),
                Cell::new(s.map_or("-".into(), |r| r.as_of.to_string())),
            ]);
        }
        let _ = writeln!(out, "{table}");
        for kr in &objective.key_results {
            let Some(row) = krs.iter().find(|r| r.kr_id == kr.id) else {
                continue;
            };
            let metric = kr.metric.as_deref().and_then(|m| project.catalogue.get(m));
            if let Some(reason) = &row.reason {
                let _ = writeln!(out, "    {}: {reason}", kr.id);
            }
            if let Some(effective) = row.target_effective {
                let _ = writeln!(
                    out,
                    "    {}: * target revised on {effective}; against the original {} it scores {}",
                    kr.id,
                    row.target_original
                        .map_or("-".into(), |t| format_value(t, metric)),
                    row.score_original.map_or("-".into(), |s| format!("{s:.2}"))
                );
            }
            if let (Some(spend), Some(budget)) = (row.spend, row.budget) {
                let _ = writeln!(
                    out,
                    "    {}: spent {} of {} ({:.0}%){}",
                    kr.id,
                    format_value(spend, None),
                    format_value(budget, None),
                    100.0 * spend / budget,
                    row.cost_per_point
                        .map(|c| format!(", {} per point of score", format_value(c, None)))
                        .unwrap_or_default()
                );
            }
            if let Some(flags) = &row.flags {
                let _ = writeln!(out, "    {}: check the data: {flags}", kr.id);
            }
        }
    }
    if !runs.is_empty() {
        let _ = writeln!(out, "\nLast connector runs:");
        for run in runs {
            let _ = writeln!(
                out,
                "  {:<20} {:<9} {}  read {} loaded {} rejected {}{}",
                run.connector,
                run.status,
                run.started_at.format("%Y-%m-%d %H:%M UTC"),
                run.rows_read,
                run.rows_loaded,
                run.rows_rejected,
                run.error
                    .as_ref()
                    .map(|e| format!("\n      error: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(format_value(1379.0, None), "1 379");
        assert_eq!(format_value(994.126, None), "994.13");
        assert_eq!(format_value(-1234567.0, None), "-1 234 567");
    }

    #[test]
    fn bars_are_clamped() {
        assert_eq!(bar(0.5, 4), "██░░");
        assert_eq!(bar(1.7, 4), "████");
    }
}
