//! Checks of one key result as written: metric, filter, baseline, target and its revisions,
//! type, window, milestone, budget; and the OKR-practice advice that goes with them.
//!
//! Each problem is located with its key path, so `check` names file, line and field. To add a
//! KR key, parse it here and carry it in [`KeyResult`].

use std::collections::{BTreeSet, HashMap};

use chrono::NaiveDate;

use super::problem::{Problem, with_hint};
use super::toml_file::{KeyPath, TomlFile};
use crate::metrics::{Catalogue, MetricKind};
use crate::okr::{
    Baseline, Budget, KeyResult, KrType, NumberOrText, Period, RawKeyResult, Revision, Target,
    Window, parse_relative,
};
use crate::settings::HygieneSettings;

/// Longest KR window, in days.
pub const MAX_WINDOW_DAYS: u32 = 3660;

/// What the KR checks need to know about the rest of the project.
pub struct KrContext<'a> {
    pub catalogue: &'a Catalogue,
    pub catalogue_ok: bool,
    /// Dimensions each base metric can be filtered by.
    pub dimensions: &'a HashMap<String, BTreeSet<String>>,
    /// Dimensions read from columns, per base metric.
    pub varying: &'a HashMap<String, BTreeSet<String>>,
    /// The largest connector staleness limit among the connectors loading each metric.
    pub stale_limits: &'a HashMap<String, u32>,
    pub hygiene: &'a HygieneSettings,
}

/// Collects problems and advice for the KRs of one file.
pub struct KrChecker<'a> {
    pub file: &'a TomlFile,
    pub context: &'a KrContext<'a>,
    pub problems: &'a mut Vec<Problem>,
    pub warnings: &'a mut Vec<Problem>,
}

impl KrChecker<'_> {
    fn problem(&mut self, at: &KeyPath, message: impl Into<String>) {
        self.problems.push(self.file.problem(at, message));
    }

    fn warn(&mut self, at: &KeyPath, message: impl Into<String>) {
        self.warnings.push(self.file.problem(at, message));
    }

    /// Checks one KR; returns it when it is usable and its objective has a period.
    pub fn check(
        &mut self,
        at: &KeyPath,
        k: &RawKeyResult,
        objective_id: &str,
        period: Option<Period>,
    ) -> Option<KeyResult> {
        let before = self.problems.len();
        let kr_type = k.kr_type.map(KrType::from);

        let metric = self.check_metric(at, k, kr_type);
        let baseline = self.check_baseline(at, k);
        let target = match &k.target {
            Some(t) => self.parse_target(&at.key("target"), t, k.baseline.is_some(), kr_type),
            None => None,
        };
        match (&k.target, kr_type, &k.done) {
            (None, Some(KrType::Milestone), Some(_)) => {}
            (None, Some(KrType::Milestone), None) => self.problem(
                at,
                "a milestone needs a `done` date or a `target` count for its metric",
            ),
            (None, _, _) => self.problem(at, "missing `target`"),
            _ => {}
        }
        if k.done.is_some() && kr_type != Some(KrType::Milestone) {
            self.problem(
                &at.key("done"),
                "only a `type = \"milestone\"` KR has a done date",
            );
        }
        let done = k.done.as_ref().and_then(|d| {
            let parsed = d.parse();
            if parsed.is_none() {
                self.problem(&at.key("done"), "write the done date as YYYY-MM-DD");
            }
            parsed
        });
        self.check_type(at, k, kr_type, &baseline, target);

        let weight = k.weight.unwrap_or(1.0);
        if !(weight.is_finite() && weight > 0.0) {
            self.problem(&at.key("weight"), "weight must be a positive number");
        }
        let window = self.check_window(at, k, period);
        let revisions = self.check_revisions(at, k, kr_type, window);
        let budget = self.check_budget(at, k);
        let stale_after_days = k.stale_after_days.or_else(|| {
            let limits = k
                .metric
                .iter()
                .flat_map(|m| self.context.catalogue.base_metrics(m));
            limits
                .filter_map(|m| self.context.stale_limits.get(&m).copied())
                .max()
        });

        if self.problems.len() != before {
            return None;
        }
        let (window, period) = (window?, period?);
        let own_period = match &k.period {
            Some(text) => Period::parse(text).unwrap_or(Period::Dates(window)),
            None if window == period.window() => period,
            None => Period::Dates(window),
        };
        Some(KeyResult {
            id: k.id.clone(),
            objective_id: objective_id.to_string(),
            title: k.title.clone(),
            metric,
            filter: k
                .filter
                .iter()
                .map(|(d, v)| (d.clone(), v.values()))
                .collect(),
            window,
            period: own_period,
            baseline,
            target,
            revisions,
            kr_type,
            weight,
            done,
            budget,
            stale_after_days,
        })
    }

    fn check_metric(
        &mut self,
        at: &KeyPath,
        k: &RawKeyResult,
        kr_type: Option<KrType>,
    ) -> Option<String> {
        let Some(name) = &k.metric else {
            if !(kr_type == Some(KrType::Milestone) && k.done.is_some()) {
                self.problem(
                    at,
                    "missing `metric` (only a milestone with a `done` date has none)",
                );
            }
            return None;
        };
        let catalogue = self.context.catalogue;
        if catalogue.get(name).is_none() {
            if self.context.catalogue_ok {
                let message =
                    with_hint(format!("unknown metric `{name}`"), name, catalogue.names());
                self.problem(&at.key("metric"), message);
            }
            return Some(name.clone());
        }
        self.check_filter(at, k, name);
        Some(name.clone())
    }

    fn check_filter(&mut self, at: &KeyPath, k: &RawKeyResult, metric: &str) {
        let catalogue = self.context.catalogue;
        for base in catalogue.base_metrics(metric) {
            let is_gauge = matches!(
                catalogue.get(&base).map(|m| &m.kind),
                Some(MetricKind::Gauge(_))
            );
            let summed: Vec<String> = self
                .context
                .varying
                .get(&base)
                .into_iter()
                .flatten()
                .filter(|d| !k.filter.contains_key(*d))
                .map(|d| format!("`{d}`"))
                .collect();
            if is_gauge && !summed.is_empty() {
                self.warn(
                    &at.key("where"),
                    format!(
                        "`{base}` is a gauge: without a `where` on {} its values are summed \
                         across them (40% in RU and 13% in KZ would read 53%)",
                        summed.join(", ")
                    ),
                );
            }
            let Some(dims) = self.context.dimensions.get(&base) else {
                self.warn(
                    &at.key("metric"),
                    format!("no connector loads `{base}`: this KR has nothing to measure"),
                );
                continue;
            };
            for dim in k.filter.keys() {
                if !dims.contains(dim) {
                    let message = with_hint(
                        format!("`{base}` has no dimension `{dim}`"),
                        dim,
                        dims.iter().map(String::as_str),
                    );
                    self.problem(&at.key("where").key(dim), message);
                }
            }
        }
    }

    fn check_baseline(&mut self, at: &KeyPath, k: &RawKeyResult) -> Option<Baseline> {
        let at = at.key("baseline");
        match k.baseline.as_ref()? {
            NumberOrText::Number(v) if v.is_finite() => Some(Baseline::Value(*v)),
            NumberOrText::Text(t) if t == "previous_period" => Some(Baseline::PreviousPeriod),
            NumberOrText::Text(t) if t == "same_period_last_year" => {
                Some(Baseline::SamePeriodLastYear)
            }
            NumberOrText::Dates { start, end } => match (start.parse(), end.parse()) {
                (Some(start), Some(end)) if start <= end => {
                    Some(Baseline::Dates(Window { start, end }))
                }
                _ => {
                    self.problem(&at, "baseline dates must be YYYY-MM-DD with start <= end");
                    None
                }
            },
            NumberOrText::Text(other) => {
                let message = with_hint(
                    format!(
                        "baseline `{other}`: write a number, \"previous_period\", \
                         \"same_period_last_year\" or {{ start = ..., end = ... }}"
                    ),
                    other,
                    ["previous_period", "same_period_last_year"],
                );
                self.problem(&at, message);
                None
            }
            _ => {
                self.problem(&at, "write the baseline as a number, a keyword or dates");
                None
            }
        }
    }

    fn parse_target(
        &mut self,
        at: &KeyPath,
        value: &NumberOrText,
        has_baseline: bool,
        kr_type: Option<KrType>,
    ) -> Option<Target> {
        let within = kr_type == Some(KrType::Within);
        match value {
            NumberOrText::Number(v) if v.is_finite() && !within => Some(Target::Value(*v)),
            NumberOrText::Pair(pair) if within && pair.len() == 2 && pair[0] <= pair[1] => {
                Some(Target::Band(pair[0], pair[1]))
            }
            _ if within => {
                self.problem(
                    at,
                    "a `within` KR's target is a band: [low, high] with low <= high",
                );
                None
            }
            NumberOrText::Text(t) => match parse_relative(t) {
                Some(_) if !has_baseline => {
                    self.problem(at, format!("target `{t}` is relative: give a `baseline`"));
                    None
                }
                Some(p) => Some(Target::Relative(p)),
                None => {
                    self.problem(
                        at,
                        format!("target `{t}`: write a number or a change such as \"+40%\""),
                    );
                    None
                }
            },
            _ => {
                self.problem(
                    at,
                    "write the target as a number or a change such as \"+40%\"",
                );
                None
            }
        }
    }

    fn check_type(
        &mut self,
        at: &KeyPath,
        k: &RawKeyResult,
        kr_type: Option<KrType>,
        baseline: &Option<Baseline>,
        target: Option<Target>,
    ) {
        let at_type = at.key("type");
        match (kr_type, baseline, target) {
            (Some(KrType::Increase), Some(Baseline::Value(b)), Some(Target::Value(t)))
                if t <= *b =>
            {
                self.problem(
                    &at_type,
                    format!("type increase does not fit baseline {b} and target {t}"),
                )
            }
            (Some(KrType::Decrease), Some(Baseline::Value(b)), Some(Target::Value(t)))
                if t >= *b =>
            {
                self.problem(
                    &at_type,
                    format!("type decrease does not fit baseline {b} and target {t}"),
                )
            }
            (Some(KrType::Increase), _, Some(Target::Relative(p))) if p <= 0.0 => self.problem(
                &at_type,
                format!("type increase does not fit a target of {:+}%", p * 100.0),
            ),
            (Some(KrType::Decrease), _, Some(Target::Relative(p))) if p >= 0.0 => self.problem(
                &at_type,
                format!("type decrease does not fit a target of {:+}%", p * 100.0),
            ),
            (
                None | Some(KrType::Increase | KrType::Decrease),
                Some(Baseline::Value(b)),
                Some(Target::Value(t)),
            ) if *b == t => self.problem(
                &at.key("target"),
                "target equals baseline: nothing to achieve",
            ),
            _ => {}
        }
        // advice: a change of a few percent is not an outcome worth an OKR
        let min_change = self.context.hygiene.min_change;
        let change = match (baseline, target) {
            (Some(Baseline::Value(b)), Some(Target::Value(t))) if *b != 0.0 => {
                Some((t - b).abs() / b.abs())
            }
            (Some(_), Some(Target::Relative(p))) => Some(p.abs()),
            _ => None,
        };
        if let Some(change) = change
            && change > 0.0
            && change < min_change
            && !matches!(kr_type, Some(KrType::Within | KrType::Milestone))
        {
            self.warn(
                &at.key("target"),
                format!(
                    "`{}` asks for a {:.1}% change; under {:.0}% is hard to tell from noise",
                    k.id,
                    change * 100.0,
                    min_change * 100.0
                ),
            );
        }
    }

    fn check_window(
        &mut self,
        at: &KeyPath,
        k: &RawKeyResult,
        period: Option<Period>,
    ) -> Option<Window> {
        match (&k.period, &k.start, &k.end, k.days) {
            (None, None, None, None) => period.map(|p| p.window()),
            (Some(text), None, None, None) => match Period::parse(text) {
                Some(own) => Some(own.window()),
                None => {
                    self.problem(
                        &at.key("period"),
                        format!("period `{text}`: write 2027-03, 2027-Q1 or 2027"),
                    );
                    None
                }
            },
            (None, Some(start), end, days) => {
                match (start.parse(), end.as_ref().map(|e| e.parse()), days) {
                    (Some(s), Some(Some(e)), None) if s <= e => Some(Window { start: s, end: e }),
                    (Some(s), None, Some(n)) if (1..=MAX_WINDOW_DAYS).contains(&n) => {
                        Some(Window {
                            start: s,
                            end: s + chrono::Days::new(n as u64 - 1),
                        })
                    }
                    _ => {
                        self.problem(
                        &at.key("start"),
                        "give `start` with `end` (start <= end) or with `days` (1 to 3660), as YYYY-MM-DD",
                    );
                        None
                    }
                }
            }
            _ => {
                self.problem(
                    &at.key("start"),
                    "an own window is `period`, or `start` with `end` or `days`",
                );
                None
            }
        }
    }

    fn check_revisions(
        &mut self,
        at: &KeyPath,
        k: &RawKeyResult,
        kr_type: Option<KrType>,
        window: Option<Window>,
    ) -> Vec<Revision> {
        let mut revisions = Vec::new();
        let mut last: Option<NaiveDate> = None;
        for (i, raw) in k.revision.iter().enumerate() {
            let at_rev = at.key("revision").index(i);
            let effective = raw.effective.parse();
            let target = self.parse_target(
                &at_rev.key("target"),
                &raw.target,
                k.baseline.is_some(),
                kr_type,
            );
            let Some(effective) = effective else {
                self.problem(
                    &at_rev.key("effective"),
                    "write the effective date as YYYY-MM-DD",
                );
                continue;
            };
            if let Some(w) = window
                && !w.contains(effective)
            {
                self.problem(
                    &at_rev.key("effective"),
                    format!("{effective} is outside the KR's window {w}"),
                );
            }
            if last.is_some_and(|l| effective <= l) {
                self.problem(&at_rev.key("effective"), "revisions must be in date order");
            }
            last = Some(effective);
            if let Some(target) = target {
                revisions.push(Revision {
                    effective,
                    target,
                    note: raw.note.clone(),
                });
            }
        }
        revisions
    }

    fn check_budget(&mut self, at: &KeyPath, k: &RawKeyResult) -> Option<Budget> {
        match (k.budget, &k.spend_metric) {
            (None, None) => None,
            (Some(amount), Some(spend)) => {
                if !(amount.is_finite() && amount > 0.0) {
                    self.problem(&at.key("budget"), "budget must be a positive amount");
                }
                if self.context.catalogue_ok && self.context.catalogue.get(spend).is_none() {
                    let message = with_hint(
                        format!("unknown spend metric `{spend}`"),
                        spend,
                        self.context.catalogue.names(),
                    );
                    self.problem(&at.key("spend_metric"), message);
                } else {
                    self.check_filter(at, k, spend);
                }
                Some(Budget {
                    amount,
                    spend_metric: spend.clone(),
                })
            }
            (Some(_), None) => {
                self.problem(
                    &at.key("budget"),
                    "a budget needs `spend_metric`, the metric that counts spending",
                );
                None
            }
            (None, Some(_)) => {
                self.problem(&at.key("spend_metric"), "`spend_metric` needs a `budget`");
                None
            }
        }
    }
}
