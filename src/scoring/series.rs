//! Daily series: the stored points of every (base metric, dimension filter) a KR needs,
//! summed per day, plus the runs that wrote them and the period values of reports
//! without a date column. Every rollup is a walk over these series, so a ratio over a window
//! is always the ratio of the window's sums.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::NaiveDate;

use crate::metrics::{Catalogue, EvalError, MetricKind, Rollup};
use crate::okr::{Filter, Window};
use crate::store::StoredPoint;

/// One metric's daily values under one dimension filter.
pub type Series = BTreeMap<NaiveDate, f64>;

/// Values of reports that cover a whole period: (first day, last day, value).
type Spans = Vec<(NaiveDate, NaiveDate, f64)>;

/// What the points of one (base metric, filter) give.
#[derive(Default)]
struct Entry {
    daily: Series,
    /// Period values count in a window only when the whole period lies inside it.
    spans: Spans,
    /// The ingest runs that wrote each day's points.
    runs: BTreeMap<NaiveDate, BTreeSet<i64>>,
    /// What sources said about each day's points (`sampled`, `thresholded`).
    flags: BTreeMap<NaiveDate, BTreeSet<String>>,
}

/// Daily series for every (base metric, filter) the KRs need.
pub struct SeriesSet {
    /// By metric, then filter: looked up by reference, without building a key, since scoring
    /// asks for a series many times per KR.
    entries: HashMap<String, HashMap<Filter, Entry>>,
}

fn matches(dimensions: &BTreeMap<String, String>, filter: &Filter) -> bool {
    filter
        .iter()
        .all(|(dim, values)| dimensions.get(dim).is_some_and(|v| values.contains(v)))
}

impl SeriesSet {
    /// Builds the series from stored points. Blocking.
    pub fn build(points: Vec<StoredPoint>, wanted: &BTreeSet<(String, Filter)>) -> SeriesSet {
        // points per metric, and per metric the positions of the points of each dimension
        // set (sets are shared between points), so a filter is matched once per set
        let mut by_metric: HashMap<&str, Vec<&StoredPoint>> = HashMap::new();
        for p in &points {
            by_metric.entry(&p.metric).or_default().push(p);
        }
        type Sets<'a> = Vec<(&'a BTreeMap<String, String>, Vec<usize>)>;
        let mut sets_by_metric: HashMap<&str, Sets> = HashMap::new();
        for (metric, list) in &by_metric {
            let mut slots: HashMap<*const BTreeMap<String, String>, usize> = HashMap::new();
            let sets = sets_by_metric.entry(metric).or_default();
            for (i, p) in list.iter().enumerate() {
                let slot = *slots.entry(Arc::as_ptr(&p.dimensions)).or_insert_with(|| {
                    sets.push((&*p.dimensions, Vec::new()));
                    sets.len() - 1
                });
                sets[slot].1.push(i);
            }
        }

        let build_entry = |(metric, filter): &(String, Filter)| -> Entry {
            let list = by_metric
                .get(metric.as_str())
                .map(Vec::as_slice)
                .unwrap_or_default();
            // the points of every matching set, back in stored order
            let mut candidates: Vec<usize> = sets_by_metric
                .get(metric.as_str())
                .into_iter()
                .flatten()
                .filter(|(dimensions, _)| matches(dimensions, filter))
                .flat_map(|(_, positions)| positions.iter().copied())
                .collect();
            candidates.sort_unstable();

            // daily sums in a fixed order (points arrive sorted by day, connector and
            // dimension set), so the same points always give the same bits: a parallel group-by
            // would add in a varying order and re-scoring unchanged data would change digits
            let mut entry = Entry::default();
            // a day's points are neighbours, mostly from one run: the day's sum is kept aside
            // until the day ends (added in the same order from 0.0, so to the same bits), and
            // a run is noted once per day rather than once per point
            let mut day_sum: Option<(NaiveDate, f64)> = None;
            let mut last_run: Option<(NaiveDate, i64)> = None;
            for p in candidates.into_iter().map(|i| list[i]) {
                if last_run != Some((p.period_end, p.run_id)) {
                    entry.runs.entry(p.period_end).or_default().insert(p.run_id);
                    last_run = Some((p.period_end, p.run_id));
                }
                if let Some(f) = p.flags.as_deref().filter(|f| !f.is_empty()) {
                    entry
                        .flags
                        .entry(p.period_end)
                        .or_default()
                        .extend(f.split(',').map(str::to_string));
                }
                if p.period_end > p.day {
                    entry.spans.push((p.day, p.period_end, p.value));
                    continue;
                }
                match &mut day_sum {
                    Some((day, sum)) if *day == p.day => *sum += p.value,
                    _ => {
                        if let Some((day, sum)) = day_sum.take() {
                            *entry.daily.entry(day).or_insert(0.0) += sum;
                        }
                        day_sum = Some((p.day, 0.0 + p.value));
                    }
                }
            }
            if let Some((day, sum)) = day_sum {
                *entry.daily.entry(day).or_insert(0.0) += sum;
            }
            entry
        };
        // the series are independent of each other: built on all cores
        let wanted: Vec<&(String, Filter)> = wanted.iter().collect();
        let built: Vec<Entry> = crate::cores::map_on_cores(&wanted, |w| build_entry(w));
        let mut entries: HashMap<String, HashMap<Filter, Entry>> = HashMap::new();
        for ((metric, filter), entry) in wanted.into_iter().zip(built) {
            entries
                .entry(metric.clone())
                .or_default()
                .insert(filter.clone(), entry);
        }
        SeriesSet { entries }
    }

    fn entry(&self, metric: &str, filter: &Filter) -> Option<&Entry> {
        self.entries.get(metric)?.get(filter)
    }

    /// A metric's values in `window`: one per day, and one per period value inside it (dated
    /// at the period's end), in day order.
    fn values(&self, metric: &str, filter: &Filter, window: Window) -> Vec<(NaiveDate, f64)> {
        let Some(entry) = self.entry(metric, filter) else {
            return Vec::new();
        };
        let mut dated: Vec<(NaiveDate, f64)> = entry
            .daily
            .range(window.start..=window.end)
            .map(|(d, v)| (*d, *v))
            .collect();
        if !entry.spans.is_empty() {
            dated.extend(
                entry
                    .spans
                    .iter()
                    .filter(|(start, end, _)| window.contains(*start) && window.contains(*end))
                    .map(|(_, end, v)| (*end, *v)),
            );
            dated.sort_by_key(|(d, _)| *d);
        }
        dated
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
        let values: Vec<f64> = self
            .values(metric, filter, window)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        if values.is_empty() {
            return Err(EvalError::NoData(metric.to_string()));
        }
        Ok(match &definition.kind {
            MetricKind::Gauge(Rollup::Last) => *values.last().expect("not empty"),
            MetricKind::Gauge(Rollup::Mean) => values.iter().sum::<f64>() / values.len() as f64,
            MetricKind::Gauge(Rollup::Max) => values.iter().copied().fold(f64::MIN, f64::max),
            MetricKind::Gauge(Rollup::Min) => values.iter().copied().fold(f64::MAX, f64::min),
            _ => values.iter().sum(),
        })
    }

    /// The newest day on or before `day` with data for any of `metrics`.
    pub fn newest_day(
        &self,
        metrics: &BTreeSet<String>,
        filter: &Filter,
        day: NaiveDate,
    ) -> Option<NaiveDate> {
        metrics
            .iter()
            .filter_map(|m| self.entry(m, filter))
            .filter_map(|e| e.runs.range(..=day).next_back().map(|(d, _)| *d))
            .max()
    }

    /// The ingest runs whose points of `metrics` fall in `windows`.
    pub fn runs(
        &self,
        metrics: &BTreeSet<String>,
        filter: &Filter,
        windows: &[Window],
    ) -> BTreeSet<i64> {
        let mut out = BTreeSet::new();
        for m in metrics {
            let Some(entry) = self.entry(m, filter) else {
                continue;
            };
            for w in windows {
                for (_, ids) in entry.runs.range(w.start..=w.end) {
                    out.extend(ids);
                }
            }
        }
        out
    }

    /// What the sources said about the points in `windows` (`sampled`, `thresholded`).
    pub fn source_flags(
        &self,
        metrics: &BTreeSet<String>,
        filter: &Filter,
        windows: &[Window],
    ) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for m in metrics {
            let Some(entry) = self.entry(m, filter) else {
                continue;
            };
            for w in windows {
                for (_, f) in entry.flags.range(w.start..=w.end) {
                    out.extend(f.iter().cloned());
                }
            }
        }
        out
    }

    /// The metric's value on each of the `days` days up to `end`, for a trend.
    pub fn daily_values(
        &self,
        catalogue: &Catalogue,
        metric: &str,
        filter: &Filter,
        end: NaiveDate,
        days: u32,
    ) -> Vec<(NaiveDate, f64)> {
        (0..days as i64)
            .rev()
            .map(|back| end - chrono::TimeDelta::days(back))
            .filter_map(|d| {
                self.rollup(catalogue, metric, filter, Window { start: d, end: d })
                    .ok()
                    .map(|v| (d, v))
            })
            .collect()
    }

    /// The latest day in `window` whose value of a base metric jumps beyond `factor` times the
    /// median of the `history` days before it.
    pub fn jump(
        &self,
        metrics: &BTreeSet<String>,
        filter: &Filter,
        window: Window,
        factor: f64,
        history: u32,
    ) -> Option<String> {
        for m in metrics {
            let Some(series) = self.entry(m, filter).map(|e| &e.daily) else {
                continue;
            };
            for (day, value) in series.range(window.start..=window.end).rev().take(7) {
                let from = *day - chrono::TimeDelta::days(history as i64);
                let mut before: Vec<f64> = series.range(from..*day).map(|(_, v)| *v).collect();
                if before.len() < 7 {
                    continue;
                }
                before.sort_by(f64::total_cmp);
                let median = before[before.len() / 2];
                if median > 0.0 && (*value > median * factor || *value < median / factor) {
                    return Some(format!(
                        "jump: {m} on {day} is {value} against a {history}-day median of {median}"
                    ));
                }
            }
        }
        None
    }
}

/// Least-squares line through `points`, evaluated at `at`.
pub fn trend_at(points: &[(NaiveDate, f64)], at: NaiveDate) -> Option<f64> {
    if points.len() < 2 {
        return points.first().map(|(_, v)| *v);
    }
    let origin = points[0].0;
    let xs: Vec<f64> = points
        .iter()
        .map(|(d, _)| (*d - origin).num_days() as f64)
        .collect();
    let n = xs.len() as f64;
    let mean_x = xs.iter().sum::<f64>() / n;
    let mean_y = points.iter().map(|(_, v)| v).sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mean_x).powi(2)).sum();
    if sxx == 0.0 {
        return Some(mean_y);
    }
    let sxy: f64 = xs
        .iter()
        .zip(points)
        .map(|(x, (_, y))| (x - mean_x) * (y - mean_y))
        .sum();
    let slope = sxy / sxx;
    let x = (at - origin).num_days() as f64;
    Some(mean_y + slope * (x - mean_x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn trend_extends_a_straight_line() {
        // y = 10 + 2x for x = 0, 1, 2; at x = 9: 10 + 18 = 28
        let points = [
            (d("2026-11-01"), 10.0),
            (d("2026-11-02"), 12.0),
            (d("2026-11-03"), 14.0),
        ];

        assert_eq!(trend_at(&points, d("2026-11-10")), Some(28.0));
        assert_eq!(trend_at(&points[..1], d("2026-11-10")), Some(10.0));
    }
}
