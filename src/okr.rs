//! Objectives and key results as analysts write them in `config/okrs/*.toml`, and the typed
//! form the scorer uses: windows, baselines, targets and KR types.
//!
//! To add a KR type, add a variant to [`KrType`], its name to [`RawKrType`], and its rule to
//! `scoring::score_value`.

use std::collections::BTreeMap;

use chrono::{Datelike, Months, NaiveDate};
use serde::Deserialize;

/// An inclusive range of calendar days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

impl Window {
    pub fn days(&self) -> i64 {
        (self.end - self.start).num_days() + 1
    }

    pub fn contains(&self, day: NaiveDate) -> bool {
        self.start <= day && day <= self.end
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A named calendar period such as `2027-Q1`, `2027-03` or `2027`, or explicit dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Year(i32),
    Quarter(i32, u32),
    Month(i32, u32),
    Dates(Window),
}

impl Period {
    /// Parses `2027`, `2027-Q1` (or `2027Q1`) and `2027-03`.
    pub fn parse(text: &str) -> Option<Period> {
        let period = Self::parse_any(text)?;
        let year = match period {
            Period::Year(y) | Period::Quarter(y, _) | Period::Month(y, _) => y,
            Period::Dates(w) => w.start.year(),
        };
        (1900..=2199).contains(&year).then_some(period)
    }

    fn parse_any(text: &str) -> Option<Period> {
        let text = text.trim();
        if let Some((year, quarter)) = text
            .split_once("-Q")
            .or_else(|| text.split_once('Q'))
            .or_else(|| text.split_once("-q"))
        {
            let year = year.parse().ok()?;
            let quarter: u32 = quarter.parse().ok()?;
            return (1..=4)
                .contains(&quarter)
                .then_some(Period::Quarter(year, quarter));
        }
        if let Some((year, month)) = text.split_once('-') {
            let month: u32 = month.parse().ok()?;
            return (1..=12)
                .contains(&month)
                .then_some(Period::Month(year.parse().ok()?, month));
        }
        if text.len() == 4 {
            return text.parse().ok().map(Period::Year);
        }
        None
    }

    pub fn window(&self) -> Window {
        let first = |y, m| NaiveDate::from_ymd_opt(y, m, 1).expect("valid month");
        let (start, months) = match *self {
            Period::Year(y) => (first(y, 1), 12),
            Period::Quarter(y, q) => (first(y, (q - 1) * 3 + 1), 3),
            Period::Month(y, m) => (first(y, m), 1),
            Period::Dates(w) => return w,
        };
        let end = start + Months::new(months) - chrono::Days::new(1);
        Window { start, end }
    }

    /// The period just before: the previous quarter, month or year, or as many days before.
    pub fn previous(&self) -> Window {
        match *self {
            Period::Dates(w) => shift_days(w, -w.days()),
            _ => {
                let w = self.window();
                let months = match self {
                    Period::Year(_) => 12,
                    Period::Quarter(..) => 3,
                    _ => 1,
                };
                let start = w.start - Months::new(months);
                Window {
                    start,
                    end: w.start - chrono::Days::new(1),
                }
                .with_start(start)
            }
        }
    }

    pub fn label(&self) -> String {
        match self {
            Period::Year(y) => format!("{y}"),
            Period::Quarter(y, q) => format!("{y}-Q{q}"),
            Period::Month(y, m) => format!("{y}-{m:02}"),
            Period::Dates(w) => w.to_string(),
        }
    }
}

impl Window {
    fn with_start(self, start: NaiveDate) -> Window {
        Window {
            start,
            end: self.end,
        }
    }

    /// The same dates one year earlier (29 February becomes 28 February).
    pub fn year_before(&self) -> Window {
        let back = |d: NaiveDate| d - Months::new(12);
        let end = if self.end.month() == 2 && self.end.day() >= 28 {
            // keep "to the end of February" meaning the end of February
            NaiveDate::from_ymd_opt(self.end.year() - 1, 3, 1).unwrap() - chrono::Days::new(1)
        } else {
            back(self.end)
        };
        Window {
            start: back(self.start),
            end,
        }
    }
}

fn shift_days(w: Window, days: i64) -> Window {
    let d = chrono::TimeDelta::days(days);
    Window {
        start: w.start + d,
        end: w.end + d,
    }
}

/// How a KR's baseline is found.
#[derive(Debug, Clone, PartialEq)]
pub enum Baseline {
    /// A number written in the file.
    Value(f64),
    /// The metric over the window before the KR's window.
    PreviousPeriod,
    /// The metric over the KR's window one year earlier.
    SamePeriodLastYear,
    /// The metric over explicit dates.
    Dates(Window),
}

/// A KR's target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Value(f64),
    /// A change relative to the baseline: 0.4 for `+40%`.
    Relative(f64),
    /// A band to stay inside (`within`).
    Band(f64, f64),
}

impl Target {
    pub fn spec(&self) -> String {
        match self {
            Target::Value(v) => v.to_string(),
            Target::Relative(p) => format!("{:+}%", (p * 1e6).round() / 1e4),
            Target::Band(lo, hi) => format!("[{lo}, {hi}]"),
        }
    }
}

/// A target that replaces the previous one from a day on.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub effective: NaiveDate,
    pub target: Target,
    pub note: Option<String>,
}

/// How a value is scored against baseline and target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KrType {
    Increase,
    Decrease,
    AtLeast,
    AtMost,
    /// Stay inside a band: 1 inside, 0 outside.
    Within,
    /// Done or not: a metric reaching a count, or a done date in the file.
    Milestone,
}

impl KrType {
    pub fn name(&self) -> &'static str {
        match self {
            KrType::Increase => "increase",
            KrType::Decrease => "decrease",
            KrType::AtLeast => "at_least",
            KrType::AtMost => "at_most",
            KrType::Within => "within",
            KrType::Milestone => "milestone",
        }
    }
}

/// A dimension filter: each named dimension must take one of the listed values.
pub type Filter = BTreeMap<String, Vec<String>>;

/// A validated objective.
#[derive(Debug, Clone)]
pub struct Objective {
    pub id: String,
    pub title: String,
    pub owner: Option<String>,
    pub period: Period,
    pub timezone: String,
    pub key_results: Vec<KeyResult>,
    /// The file it was read from, relative to the project directory.
    pub file: String,
}

/// Money behind a KR: how much may be spent and which metric counts the spending.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub amount: f64,
    pub spend_metric: String,
}

/// A validated key result.
#[derive(Debug, Clone)]
pub struct KeyResult {
    pub id: String,
    pub objective_id: String,
    pub title: String,
    /// The measured metric; a milestone with a done date may have none.
    pub metric: Option<String>,
    pub filter: Filter,
    pub window: Window,
    /// Whether the window is the objective's period (so "previous period" is the calendar one).
    pub period: Period,
    pub baseline: Option<Baseline>,
    /// The original target; `None` only for a milestone with a done date.
    pub target: Option<Target>,
    /// Later targets with the day each takes effect, in date order.
    pub revisions: Vec<Revision>,
    /// The type as written, or `None` to infer it from baseline and target.
    pub kr_type: Option<KrType>,
    pub weight: f64,
    /// A milestone's done date.
    pub done: Option<NaiveDate>,
    pub budget: Option<Budget>,
    /// Days without new data after which the KR is `stale` (KR, else connector, else setting).
    pub stale_after_days: Option<u32>,
}

impl KeyResult {
    /// The window the baseline is computed over, for computed baselines.
    pub fn baseline_window(&self) -> Option<Window> {
        match &self.baseline {
            Some(Baseline::PreviousPeriod) => Some(self.period.previous()),
            Some(Baseline::SamePeriodLastYear) => Some(self.window.year_before()),
            Some(Baseline::Dates(w)) => Some(*w),
            _ => None,
        }
    }

    pub fn baseline_spec(&self) -> Option<String> {
        self.baseline.as_ref().map(|b| match b {
            Baseline::Value(v) => v.to_string(),
            Baseline::PreviousPeriod => "previous_period".into(),
            Baseline::SamePeriodLastYear => "same_period_last_year".into(),
            Baseline::Dates(w) => w.to_string(),
        })
    }

    pub fn target_spec(&self) -> String {
        match (&self.target, self.done) {
            (Some(t), _) => t.spec(),
            (None, Some(done)) => format!("done {done}"),
            (None, None) => String::new(),
        }
    }

    /// The target in force on `day`, and the day it took effect when it is a revision.
    pub fn target_on(&self, day: NaiveDate) -> (Option<Target>, Option<NaiveDate>) {
        match self.revisions.iter().rev().find(|r| r.effective <= day) {
            Some(r) => (Some(r.target), Some(r.effective)),
            None => (self.target, None),
        }
    }

    /// Metric names the KR reads: its metric and its budget's spend metric.
    pub fn metrics(&self) -> Vec<&str> {
        self.metric
            .iter()
            .map(String::as_str)
            .chain(self.budget.iter().map(|b| b.spend_metric.as_str()))
            .collect()
    }
}

/// A date written as a string or as a TOML date.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DateValue {
    Text(String),
    Toml(toml::value::Datetime),
}

impl DateValue {
    /// The date, when it is a plain `YYYY-MM-DD` between 1900 and 2199.
    pub fn parse(&self) -> Option<NaiveDate> {
        let text = match self {
            DateValue::Text(t) => t.clone(),
            DateValue::Toml(d) => d.to_string(),
        };
        NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
            .ok()
            .filter(|d| (1900..=2199).contains(&d.year()))
    }
}

/// A number, a string such as `"+40%"` or `"previous_period"`, a pair `[low, high]`, or
/// dates `{ start = ..., end = ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(f64),
    Text(String),
    Pair(Vec<f64>),
    Dates { start: DateValue, end: DateValue },
}

/// A filter value: one value or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `config/okrs/*.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOkrFile {
    #[serde(default)]
    pub objective: Vec<RawObjective>,
}

/// `[[objective]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawObjective {
    /// Stable identifier, unique in the project; BI tools join on it.
    pub id: String,
    pub title: String,
    /// `2027-Q1`, `2027-03` or `2027`; or give `start` and `end`.
    pub period: Option<String>,
    pub start: Option<DateValue>,
    pub end: Option<DateValue>,
    pub owner: Option<String>,
    /// IANA time zone; defaults to `[scoring] timezone`.
    pub timezone: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub key_result: Vec<RawKeyResult>,
}

/// `[[objective.key_result]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyResult {
    /// Stable identifier, unique in the project.
    pub id: String,
    pub title: String,
    /// A metric of `config/metrics.toml` (a milestone with `done` may have none).
    pub metric: Option<String>,
    /// Dimension filter: `{ region = "KZ" }` or `{ channel = ["organic", "referral"] }`.
    #[serde(rename = "where", default)]
    pub filter: BTreeMap<String, OneOrMany>,
    /// A number, `"previous_period"`, `"same_period_last_year"` or `{ start, end }` dates.
    pub baseline: Option<NumberOrText>,
    /// A number, `"+40%"` / `"-15%"` relative to the baseline, or `[low, high]` for `within`.
    pub target: Option<NumberOrText>,
    /// `increase`, `decrease`, `at_least`, `at_most`, `within` or `milestone`.
    #[serde(rename = "type")]
    pub kr_type: Option<RawKrType>,
    /// Weight in the objective's score (default 1).
    pub weight: Option<f64>,
    /// The KR's own window: `period` (`2026-11`), or `start` with `end` or `days`.
    pub period: Option<String>,
    pub start: Option<DateValue>,
    pub end: Option<DateValue>,
    pub days: Option<u32>,
    /// A milestone's done date.
    pub done: Option<DateValue>,
    /// Money the KR may spend, with `spend_metric`.
    pub budget: Option<f64>,
    pub spend_metric: Option<String>,
    /// Days without new data after which scores are marked stale.
    pub stale_after_days: Option<u32>,
    /// Target revisions: `[[objective.key_result.revision]]` with `effective` and `target`.
    #[serde(default)]
    pub revision: Vec<RawRevision>,
    pub description: Option<String>,
}

/// `[[objective.key_result.revision]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRevision {
    /// The first day the new target is in force.
    pub effective: DateValue,
    pub target: NumberOrText,
    /// Why the target changed.
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawKrType {
    Increase,
    Decrease,
    AtLeast,
    AtMost,
    Within,
    Milestone,
}

impl From<RawKrType> for KrType {
    fn from(raw: RawKrType) -> KrType {
        match raw {
            RawKrType::Increase => KrType::Increase,
            RawKrType::Decrease => KrType::Decrease,
            RawKrType::AtLeast => KrType::AtLeast,
            RawKrType::AtMost => KrType::AtMost,
            RawKrType::Within => KrType::Within,
            RawKrType::Milestone => KrType::Milestone,
        }
    }
}

/// Parses `"+40%"`, `"-15%"` or `"40%"` into 0.4 / -0.15 / 0.4.
pub fn parse_relative(text: &str) -> Option<f64> {
    let body = text.trim().strip_suffix('%')?.trim();
    let value: f64 = body.parse().ok()?;
    value.is_finite().then_some(value / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn quarters_and_their_previous() {
        let q = Period::parse("2018-Q1").unwrap();

        assert_eq!(
            q.window(),
            Window {
                start: d("2018-01-01"),
                end: d("2018-03-31")
            }
        );
        assert_eq!(
            q.previous(),
            Window {
                start: d("2017-10-01"),
                end: d("2017-12-31")
            }
        );
    }

    #[test]
    fn months_and_years() {
        assert_eq!(
            Period::parse("2024-02").unwrap().window(),
            Window {
                start: d("2024-02-01"),
                end: d("2024-02-29")
            }
        );
        assert_eq!(
            Period::parse("2024-03").unwrap().previous(),
            Window {
                start: d("2024-02-01"),
                end: d("2024-02-29")
            }
        );
        assert_eq!(Period::parse("2027").unwrap().window().days(), 365);
        assert_eq!(Period::parse("2027-Q5"), None);
        assert_eq!(Period::parse("next quarter"), None);
    }

    #[test]
    fn year_before_keeps_month_ends() {
        let w = Window {
            start: d("2024-02-01"),
            end: d("2024-02-29"),
        };

        assert_eq!(
            w.year_before(),
            Window {
                start: d("2023-02-01"),
                end: d("2023-02-28")
            }
        );
    }

    #[test]
    fn relative_targets() {
        assert_eq!(parse_relative("+40%"), Some(0.4));
        assert_eq!(parse_relative("-15%"), Some(-0.15));
        assert_eq!(parse_relative("40"), None);
    }
}
