//! The metric catalogue (`config/metrics.toml`): each metric's kind decides how it rolls up
//! over days and dimensions. Derived metrics carry a formula over other metrics that is
//! evaluated after each side has been rolled up, so a ratio is always a ratio of sums.
//!
//! To add a rollup or an operator, extend [`Rollup`] or [`Formula`] and their parsers here.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// How a gauge rolls up over the days of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rollup {
    /// The value of the newest day with data.
    Last,
    /// The mean of the daily values.
    Mean,
    /// The largest daily value.
    Max,
    /// The smallest daily value.
    Min,
}

/// What a metric is.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricKind {
    /// Summed over days and dimensions.
    Counter,
    /// Summed over dimensions within a day, then rolled up over days.
    Gauge(Rollup),
    /// A formula over other metrics, each rolled up over the window first.
    Derived(Formula),
}

/// One metric of the catalogue.
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    /// Free text such as `RUB` or `sessions`; `%` means values are fractions (0.08 = 8%).
    pub unit: Option<String>,
    pub description: Option<String>,
}

impl Metric {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge(_) => "gauge",
            MetricKind::Derived(_) => "derived",
        }
    }

    /// Whether values are fractions shown as percentages.
    pub fn is_percent(&self) -> bool {
        matches!(self.unit.as_deref(), Some("%") | Some("percent"))
    }
}

/// A metric as written in `config/metrics.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetric {
    /// `counter`, `gauge` or `derived`.
    pub kind: RawKind,
    /// Unit shown next to values; `%` stores fractions.
    pub unit: Option<String>,
    /// What the metric measures, for people reading scores.
    pub description: Option<String>,
    /// Gauges only: `last` (default), `mean`, `max` or `min`.
    pub rollup: Option<Rollup>,
    /// Derived only: metric names, numbers, `+ - * /` and parentheses.
    pub formula: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawKind {
    Counter,
    Gauge,
    Derived,
}

/// All metrics of a project by name.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub metrics: BTreeMap<String, Metric>,
}

impl Catalogue {
    pub fn get(&self, name: &str) -> Option<&Metric> {
        self.metrics.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.metrics.keys().map(String::as_str)
    }

    /// The counters and gauges a metric is computed from (itself when it is not derived).
    pub fn base_metrics(&self, name: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.collect_base(name, &mut out, 0);
        out
    }

    fn collect_base(&self, name: &str, out: &mut BTreeSet<String>, depth: usize) {
        if depth > 32 {
            return;
        }
        match self.metrics.get(name).map(|m| &m.kind) {
            Some(MetricKind::Derived(formula)) => {
                for dep in formula.metric_names() {
                    self.collect_base(&dep, out, depth + 1);
                }
            }
            _ => {
                out.insert(name.to_string());
            }
        }
    }

    /// Names of derived metrics that depend on themselves.
    pub fn cycles(&self) -> Vec<String> {
        fn visits(c: &Catalogue, name: &str, stack: &mut Vec<String>) -> bool {
            if stack.iter().any(|s| s == name) {
                return true;
            }
            let Some(MetricKind::Derived(formula)) = c.metrics.get(name).map(|m| &m.kind) else {
                return false;
            };
            stack.push(name.to_string());
            let found = formula
                .metric_names()
                .iter()
                .any(|dep| visits(c, dep, stack));
            stack.pop();
            found
        }
        self.metrics
            .keys()
            .filter(|name| visits(self, name, &mut Vec::new()))
            .cloned()
            .collect()
    }
}

/// A parsed formula.
#[derive(Debug, Clone, PartialEq)]
pub enum Formula {
    Number(f64),
    Metric(String),
    Negate(Box<Formula>),
    Binary(Op, Box<Formula>, Box<Formula>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

/// Why a formula has no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A metric of the formula has no data in the window.
    #[error("no data for `{0}` in the window")]
    NoData(String),
    /// A denominator is zero.
    #[error("division by zero: `{0}` is 0 in the window")]
    DivisionByZero(String),
}

impl Formula {
    /// Parses `spend / conversions`, `100 * (promoters - detractors) / responses`, ...
    pub fn parse(text: &str) -> Result<Formula, String> {
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens,
            pos: 0,
            depth: 0,
        };
        let formula = parser.expr()?;
        if parser.pos < parser.tokens.len() {
            return Err(format!("unexpected `{}`", parser.tokens[parser.pos]));
        }
        Ok(formula)
    }

    /// Every metric name the formula uses.
    pub fn metric_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        self.walk(&mut |f| {
            if let Formula::Metric(name) = f {
                names.insert(name.clone());
            }
        });
        names
    }

    fn walk(&self, visit: &mut impl FnMut(&Formula)) {
        visit(self);
        match self {
            Formula::Negate(inner) => inner.walk(visit),
            Formula::Binary(_, l, r) => {
                l.walk(visit);
                r.walk(visit);
            }
            _ => {}
        }
    }

    /// Evaluates the formula with each metric's rolled-up value from `lookup`.
    pub fn eval(
        &self,
        lookup: &mut impl FnMut(&str) -> Result<f64, EvalError>,
    ) -> Result<f64, EvalError> {
        match self {
            Formula::Number(n) => Ok(*n),
            Formula::Metric(name) => lookup(name),
            Formula::Negate(inner) => Ok(-inner.eval(lookup)?),
            Formula::Binary(op, l, r) => {
                let a = l.eval(lookup)?;
                let b = r.eval(lookup)?;
                match op {
                    Op::Add => Ok(a + b),
                    Op::Sub => Ok(a - b),
                    Op::Mul => Ok(a * b),
                    Op::Div if b == 0.0 => Err(EvalError::DivisionByZero(r.to_string())),
                    Op::Div => Ok(a / b),
                }
            }
        }
    }
}

impl std::fmt::Display for Formula {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Formula::Number(n) => write!(f, "{n}"),
            Formula::Metric(name) => write!(f, "{name}"),
            Formula::Negate(inner) => write!(f, "-{inner}"),
            Formula::Binary(op, l, r) => {
                let symbol = match op {
                    Op::Add => "+",
                    Op::Sub => "-",
                    Op::Mul => "*",
                    Op::Div => "/",
                };
                let wrap = |e: &Formula| match e {
                    Formula::Binary(..) => format!("({e})"),
                    _ => e.to_string(),
                };
                write!(f, "{} {symbol} {}", wrap(l), wrap(r))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Name(String),
    Symbol(char),
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Number(n) => write!(f, "{n}"),
            Token::Name(s) => write!(f, "{s}"),
            Token::Symbol(c) => write!(f, "{c}"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let literal: String = chars[start..i].iter().collect();
            let n = literal
                .parse()
                .map_err(|_| format!("bad number `{literal}`"))?;
            tokens.push(Token::Number(n));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Name(chars[start..i].iter().collect()));
        } else if "+-*/()".contains(c) {
            tokens.push(Token::Symbol(c));
            i += 1;
        } else {
            return Err(format!("unexpected character `{c}`"));
        }
    }
    if tokens.is_empty() {
        return Err("empty formula".into());
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

/// Deepest nesting of parentheses and signs a formula may use.
const MAX_DEPTH: usize = 64;

impl Parser {
    fn peek_symbol(&self) -> Option<char> {
        match self.tokens.get(self.pos) {
            Some(Token::Symbol(c)) => Some(*c),
            _ => None,
        }
    }

    fn expr(&mut self) -> Result<Formula, String> {
        let mut left = self.term()?;
        while let Some(c @ ('+' | '-')) = self.peek_symbol() {
            self.pos += 1;
            let right = self.term()?;
            let op = if c == '+' { Op::Add } else { Op::Sub };
            left = Formula::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Formula, String> {
        let mut left = self.factor()?;
        while let Some(c @ ('*' | '/')) = self.peek_symbol() {
            self.pos += 1;
            let right = self.factor()?;
            let op = if c == '*' { Op::Mul } else { Op::Div };
            left = Formula::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn factor(&mut self) -> Result<Formula, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "the formula nests more than {MAX_DEPTH} levels deep"
            ));
        }
        let result = self.factor_inner();
        self.depth -= 1;
        result
    }

    fn factor_inner(&mut self) -> Result<Formula, String> {
        let token = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or("formula ends too early")?;
        self.pos += 1;
        match token {
            Token::Number(n) => Ok(Formula::Number(n)),
            Token::Name(name) => Ok(Formula::Metric(name)),
            Token::Symbol('-') => Ok(Formula::Negate(Box::new(self.factor()?))),
            Token::Symbol('(') => {
                let inner = self.expr()?;
                if self.peek_symbol() != Some(')') {
                    return Err("missing `)`".into());
                }
                self.pos += 1;
                Ok(inner)
            }
            Token::Symbol(c) => Err(format!("unexpected `{c}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, values: &[(&str, f64)]) -> Result<f64, EvalError> {
        let formula = Formula::parse(text).unwrap();
        formula.eval(&mut |name| {
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| EvalError::NoData(name.into()))
        })
    }

    #[test]
    fn nps_formula_respects_precedence() {
        let v = eval(
            "100 * (promoters - detractors) / responses",
            &[
                ("promoters", 50.0),
                ("detractors", 10.0),
                ("responses", 100.0),
            ],
        );

        assert_eq!(v, Ok(40.0));
    }

    #[test]
    fn division_by_zero_has_no_value() {
        let v = eval(
            "spend / conversions",
            &[("spend", 10.0), ("conversions", 0.0)],
        );

        assert_eq!(v, Err(EvalError::DivisionByZero("conversions".into())));
    }

    #[test]
    fn bad_formulas_are_rejected() {
        assert!(Formula::parse("spend /").is_err());
        assert!(Formula::parse("(a + b").is_err());
        assert!(Formula::parse("a $ b").is_err());
        assert!(Formula::parse(&format!("{}a{}", "(".repeat(5000), ")".repeat(5000))).is_err());
        assert!(Formula::parse(&format!("{}a", "-".repeat(100_000))).is_err());
        assert_eq!(
            Formula::parse("a - -b")
                .unwrap()
                .metric_names()
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["a", "b"]
        );
    }
}
