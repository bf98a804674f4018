//! Cell values: numbers in any export locale, dates and timestamps, placeholders and censored
//! values. Number cleaning is a vectorised polars expression per column; the same rules in
//! plain Rust ([`parse_number`]) read totals rows and serve as the reference in tests.
//!
//! To accept a new number form, change [`number_expr`] and [`parse_number`] together and add
//! a case to the shared test table.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};
use polars::prelude::*;

/// Cells that mean "no value" in exports.
pub const PLACEHOLDERS: &[&str] = &[
    "--",
    "-",
    "—",
    "–",
    "N/A",
    "n/a",
    "NA",
    "#N/A",
    "#DIV/0!",
    "#VALUE!",
    "null",
    "(not set)",
];

/// Decimal mark and thousands separators of one number column.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberLocale {
    pub decimal: char,
    pub thousands: Vec<char>,
}

impl NumberLocale {
    pub fn new(decimal: char, configured_thousands: Option<&str>) -> NumberLocale {
        let mut thousands: Vec<char> = match configured_thousands {
            Some(t) => t.chars().collect(),
            None => vec![if decimal == ',' { '.' } else { ',' }],
        };
        thousands.extend([' ', '\u{a0}', '\u{202f}', '\'']);
        thousands.retain(|c| *c != decimal);
        thousands.dedup();
        NumberLocale { decimal, thousands }
    }
}

/// Whether the thousands separators of a cell stand where thousands separators can: a
/// separator between two digits of the whole part starts a group of exactly three digits, and
/// the first group has one to three. `12.5` in a column whose thousands separator is `.` is
/// not 125 but a number written with another decimal mark, and is refused rather than read
/// ten times too big. Separators not between digits (`US$ 1.234,50`) are left to the other
/// rules.
pub fn grouping_ok(cell: &str, locale: &NumberLocale) -> bool {
    let whole = cell.split(locale.decimal).next().unwrap_or_default();
    // digits of the group being read, whether a separator opened it, and whether the last
    // character was a digit (read once per numeric cell: no allocation)
    let (mut digits, mut separated, mut after_digit) = (0u32, false, false);
    let mut chars = whole.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            digits += 1;
            after_digit = true;
            continue;
        }
        let between_digits = after_digit && chars.peek().is_some_and(char::is_ascii_digit);
        after_digit = false;
        if separated && digits != 3 {
            return false;
        }
        if locale.thousands.contains(&c) && between_digits {
            if !separated && digits > 3 {
                return false;
            }
            (digits, separated) = (0, true);
        } else {
            (digits, separated) = (0, false);
        }
    }
    !separated || digits == 3
}

/// Whether a cell reads as two numbers a thousand times apart depending on the decimal mark:
/// one `,` or `.` after one to three digits (not a lone zero) and before exactly three, such
/// as `1,234` or `-12.500`.
pub fn ambiguous_mark(cell: &str) -> bool {
    let text = cell.trim().trim_start_matches(['-', '+']);
    let Some(at) = text.find([',', '.']) else {
        return false;
    };
    let (whole, rest) = (&text[..at], &text[at + 1..]);
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    (1..=3).contains(&whole.len())
        && whole != "0"
        && digits(whole)
        && rest.len() == 3
        && digits(rest)
}

/// Votes for a decimal mark, counted per column and per file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Votes {
    pub comma: u32,
    pub dot: u32,
}

impl Votes {
    /// Adds the evidence of one cell: only unambiguous numbers vote.
    pub fn add(&mut self, cell: &str) {
        match vote(cell) {
            Some(',') => self.comma += 1,
            Some('.') => self.dot += 1,
            _ => {}
        }
    }

    pub fn decision(&self) -> Option<char> {
        match self.comma.cmp(&self.dot) {
            std::cmp::Ordering::Greater => Some(','),
            std::cmp::Ordering::Less => Some('.'),
            std::cmp::Ordering::Equal => None,
        }
    }
}

fn vote(cell: &str) -> Option<char> {
    let digits: String = cell
        .trim()
        .trim_end_matches('%')
        .chars()
        .filter(|c| !matches!(c, ' ' | '\u{a0}' | '\u{202f}' | '\''))
        .collect();
    let digits = digits.trim_start_matches(['-', '+']);
    let digits = digits
        .trim_start_matches(|c: char| c.is_alphabetic() || "$€£₽₸¥".contains(c))
        .trim_end_matches(|c: char| c.is_alphabetic() || "$€£₽₸¥.".contains(c) && c != '.');
    if digits.is_empty()
        || !digits
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == '.')
    {
        return None;
    }
    let grouped = |sep: char, dec: Option<char>| {
        let (int, frac) = match dec.and_then(|d| digits.rsplit_once(d)) {
            Some((i, f)) => (i, Some(f)),
            None => (digits, None),
        };
        let mut parts = int.split(sep);
        let first = parts.next().unwrap_or_default();
        !first.is_empty()
            && first.len() <= 3
            && parts.all(|p| p.len() == 3 && p.chars().all(|c| c.is_ascii_digit()))
            && frac.is_none_or(|f| f.chars().all(|c| c.is_ascii_digit()))
    };
    let commas = digits.matches(',').count();
    let dots = digits.matches('.').count();
    match (commas, dots) {
        (0, 0) => None,
        (_, _) if commas > 0 && dots > 0 => {
            if digits.rfind(',') > digits.rfind('.') {
                (dots == 0 || grouped('.', Some(','))).then_some(',')
            } else {
                grouped(',', Some('.')).then_some('.')
            }
        }
        (1, 0) => {
            let at = digits.find(',').unwrap();
            let after = digits.len() - at - 1;
            // `0,001`: a thousands group never follows a lone zero
            (after != 3 || &digits[..at] == "0").then_some(',')
        }
        (0, 1) => {
            let at = digits.find('.').unwrap();
            let after = digits.len() - at - 1;
            (after != 3 || &digits[..at] == "0").then_some('.')
        }
        (_, 0) => grouped(',', None).then_some('.'),
        (0, _) => grouped('.', None).then_some(','),
        _ => None,
    }
}

/// The float value of a text column, a flag for cells that hold something but no number, and
/// a flag for censored cells such as `< 10%`.
pub fn number_expr(cell: Expr, locale: &NumberLocale) -> (Expr, Expr, Expr) {
    let cell = cell.str().strip_chars(lit(NULL));
    let mut missing = cell.clone().is_null().or(cell.clone().eq(lit("")));
    for placeholder in PLACEHOLDERS {
        missing = missing.or(cell.clone().eq(lit(*placeholder)));
    }
    let censored = cell
        .clone()
        .str()
        .contains(lit(r"^[<>]\s*[0-9]"), false)
        .fill_null(lit(false));
    let percent = cell.clone().str().ends_with(lit("%")).fill_null(lit(false));

    // h:mm:ss and mm:ss durations, in seconds
    let part = |pattern: &str, group: usize| {
        cell.clone()
            .str()
            .extract(lit(pattern.to_string()), group)
            .cast(DataType::Float64)
    };
    let hms = r"^(\d+):(\d{2}):(\d{2})$";
    let ms = r"^(\d+):(\d{2})$";
    let hms_value = part(hms, 1) * lit(3600.0) + part(hms, 2) * lit(60.0) + part(hms, 3);
    let ms_value = part(ms, 1) * lit(60.0) + part(ms, 2);

    // currency signs and codes around the number
    let mut body = cell
        .clone()
        .str()
        .replace_all(lit(r"^(?:[A-Z]{2,3}\s?)?\p{Sc}?\s*"), lit(""), false)
        .str()
        .replace_all(
            lit(r"[\s%]*(?:\p{Sc}|[A-Z]{3}|руб\.?|р\.)?[\s%]*$"),
            lit(""),
            false,
        );
    for t in &locale.thousands {
        body = body.str().replace_all(lit(t.to_string()), lit(""), true);
    }
    if locale.decimal == ',' {
        body = body.str().replace_all(lit(","), lit("."), true);
    }
    let number = body.cast(DataType::Float64);
    let number = when(number.clone().is_finite())
        .then(number)
        .otherwise(lit(NULL).cast(DataType::Float64));

    let null = || lit(NULL).cast(DataType::Float64);
    let value = when(missing.clone().or(censored.clone()))
        .then(null())
        .when(hms_value.clone().is_not_null())
        .then(hms_value)
        .when(ms_value.clone().is_not_null())
        .then(ms_value)
        .when(percent)
        .then(number.clone() / lit(100.0))
        .otherwise(number);
    let bad = missing
        .not()
        .and(censored.clone().not())
        .and(value.clone().is_null());
    (value, bad, censored)
}

/// The values of a column whose every cell is empty or a plain number: digits with the
/// locale's thousands separators, at most one decimal mark with digits after it, and a
/// leading minus. `None` when any cell needs the full rules of [`number_expr`] (currency,
/// `%`, durations, placeholders, censored values, anything else). Both give the same values
/// for plain cells; this is the fast path for the common case.
pub fn plain_numbers(cells: &StringChunked, locale: &NumberLocale) -> Option<Vec<Option<f64>>> {
    let mut out = Vec::with_capacity(cells.len());
    let mut text = String::with_capacity(32);
    for cell in cells.iter() {
        let Some(cell) = cell.map(str::trim).filter(|c| !c.is_empty()) else {
            out.push(None);
            continue;
        };
        if !grouping_ok(cell, locale) {
            return None;
        }
        text.clear();
        let mut digits_after_mark = None;
        let mut digits = 0;
        for (i, c) in cell.chars().enumerate() {
            if c.is_ascii_digit() {
                text.push(c);
                digits += 1;
                digits_after_mark = digits_after_mark.map(|n: u32| n + 1);
            } else if c == '-' && i == 0 {
                text.push(c);
            } else if c == locale.decimal && digits_after_mark.is_none() && digits > 0 {
                text.push('.');
                digits_after_mark = Some(0);
            } else if !locale.thousands.contains(&c) || digits_after_mark.is_some() {
                return None;
            }
        }
        if digits == 0 || digits_after_mark == Some(0) {
            return None;
        }
        let value: f64 = text.parse().ok()?;
        if !value.is_finite() {
            return None;
        }
        out.push(Some(value));
    }
    Some(out)
}

/// The number in `text` by the same rules as [`number_expr`]; `None` for no number.
pub fn parse_number(text: &str, locale: &NumberLocale) -> Option<f64> {
    let cell = text.trim();
    if cell.is_empty() || PLACEHOLDERS.contains(&cell) || cell.starts_with(['<', '>']) {
        return None;
    }
    let parts: Vec<&str> = cell.split(':').collect();
    if parts.len() >= 2
        && parts.len() <= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        let numbers: Vec<f64> = parts.iter().map(|p| p.parse().unwrap_or(0.0)).collect();
        return Some(numbers.iter().fold(0.0, |acc, n| acc * 60.0 + n));
    }
    if !grouping_ok(cell, locale) {
        return None;
    }
    let percent = cell.ends_with('%');
    let body: String = cell
        .chars()
        .filter(|c| {
            c.is_ascii_digit()
                || *c == locale.decimal
                || *c == '-'
                || *c == '+'
                || *c == 'e'
                || *c == 'E'
        })
        .filter(|c| !locale.thousands.contains(c))
        .map(|c| if c == locale.decimal { '.' } else { c })
        .collect();
    let value: f64 = body.parse().ok()?;
    value
        .is_finite()
        .then_some(if percent { value / 100.0 } else { value })
}

/// How one date cell is read.
#[derive(Debug, Clone)]
pub struct DateFormat {
    pub format: String,
    has_time: bool,
    has_offset: bool,
    utc_literal: bool,
}

/// Date formats tried, in order, when none is configured; ambiguous ones are never guessed.
pub const DATE_FORMATS: &[&str] = &[
    "%Y-%m-%d",
    "%Y%m%d",
    "%d.%m.%Y",
    "%Y/%m/%d",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%:z",
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%d %H:%M:%S%:z",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%B %d, %Y",
    "%b %d, %Y",
];

impl DateFormat {
    pub fn new(format: &str) -> Result<DateFormat, String> {
        use chrono::format::{Item, StrftimeItems};
        if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
            return Err(format!("`{format}` is not a valid date format"));
        }
        let has = |specs: &[&str]| specs.iter().any(|s| format.contains(s));
        let has_date =
            has(&["%Y", "%y", "%C"]) && has(&["%m", "%b", "%B", "%h"]) && has(&["%d", "%e"])
                || has(&["%F", "%D", "%x", "%s"])
                || has(&["%Y"]) && has(&["%j"]);
        if !has_date {
            // `DD.MM.YYYY`, as spreadsheets write formats
            let strftime = [("YYYY", "%Y"), ("YY", "%y"), ("MM", "%m"), ("DD", "%d")]
                .iter()
                .fold(format.to_uppercase(), |f, (from, to)| f.replace(from, to));
            let hint = if !format.contains('%') && strftime.contains('%') {
                format!("; write it with % codes, such as \"{strftime}\"")
            } else {
                String::new()
            };
            return Err(format!(
                "`{format}` does not give a full date (year, month and day){hint}"
            ));
        }
        Ok(DateFormat {
            format: format.to_string(),
            has_time: has(&["%H", "%I", "%M", "%S", "%T", "%R", "%s"]),
            has_offset: has(&["%z", "%:z", "%#z", "%Z"]),
            utc_literal: format.ends_with('Z'),
        })
    }

    /// The calendar day of `text` in `tz`; timestamps without an offset are taken in
    /// `naive_zone` (UTC for a literal `Z` suffix).
    pub fn day(
        &self,
        text: &str,
        tz: chrono_tz::Tz,
        naive_zone: chrono_tz::Tz,
    ) -> Option<NaiveDate> {
        let text = text.trim();
        if self.has_offset {
            let at = DateTime::parse_from_str(text, &self.format).ok()?;
            return Some(at.with_timezone(&tz).date_naive());
        }
        if !self.has_time {
            return NaiveDate::parse_from_str(text, &self.format).ok();
        }
        let naive = NaiveDateTime::parse_from_str(text, &self.format).ok()?;
        let zone = if self.utc_literal {
            chrono_tz::UTC
        } else {
            naive_zone
        };
        if zone == tz {
            return Some(naive.date());
        }
        // a local time inside a DST gap is read as the first valid instant after it
        let at = zone.from_local_datetime(&naive).earliest().or_else(|| {
            zone.from_local_datetime(&(naive + chrono::TimeDelta::hours(1)))
                .earliest()
        })?;
        Some(at.with_timezone(&tz).date_naive())
    }
}

/// The first unambiguous format that reads nearly all of `cells`.
pub fn detect_date_format<'a>(
    cells: impl Iterator<Item = &'a str>,
    tz: chrono_tz::Tz,
) -> Option<DateFormat> {
    let sample: Vec<&str> = cells.filter(|c| !c.trim().is_empty()).take(200).collect();
    if sample.is_empty() {
        return None;
    }
    let reads = |format: &DateFormat| {
        sample
            .iter()
            .filter(|s| format.day(s, tz, tz).is_some())
            .count()
            * 10
            >= sample.len() * 9
    };
    let found = DATE_FORMATS
        .iter()
        .filter_map(|f| DateFormat::new(f).ok())
        .find(|f| reads(f));
    if found.is_some() {
        return found;
    }
    // day-first or month-first only when the values themselves settle it (a 13th day)
    for (day_first, month_first) in AMBIGUOUS_PAIRS {
        let a = DateFormat::new(day_first).expect("valid format");
        let b = DateFormat::new(month_first).expect("valid format");
        match (reads(&a), reads(&b)) {
            (true, false) => return Some(a),
            (false, true) => return Some(b),
            _ => {}
        }
    }
    None
}

/// Formats that differ only in the order of day and month.
const AMBIGUOUS_PAIRS: &[(&str, &str)] = &[
    ("%d/%m/%Y", "%m/%d/%Y"),
    ("%d-%m-%Y", "%m-%d-%Y"),
    ("%d/%m/%y", "%m/%d/%y"),
    ("%d-%m-%y", "%m-%d-%y"),
    ("%d.%m.%y", "%m.%d.%y"),
];

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();

/// Days since 1970-01-01.
pub fn day_number(day: NaiveDate) -> i32 {
    (day - EPOCH).num_days() as i32
}

pub fn day_from_number(n: i32) -> NaiveDate {
    EPOCH + chrono::TimeDelta::days(n as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spreadsheet_date_format_gets_its_strftime_spelling() {
        let err = DateFormat::new("DD.MM.YYYY").unwrap_err();
        assert!(
            err.ends_with("write it with % codes, such as \"%d.%m.%Y\""),
            "{err}"
        );
        let err = DateFormat::new("%Y-%m").unwrap_err();
        assert!(!err.contains("such as"), "{err}");
        assert!(ambiguous_mark("1,234") && ambiguous_mark("-12.500"));
        assert!(!ambiguous_mark("0,123") && !ambiguous_mark("1,5") && !ambiguous_mark("1,234,567"));
    }

    /// (cell, decimal mark, expected value)
    const CASES: &[(&str, char, Option<f64>)] = &[
        ("1,204", '.', Some(1204.0)),
        ("12,345.67", '.', Some(12345.67)),
        ("1 234,56", ',', Some(1234.56)),
        ("12\u{a0}480", ',', Some(12480.0)),
        ("1\u{202f}234,56", ',', Some(1234.56)),
        ("2.546", ',', Some(2546.0)),
        ("9.38%", '.', Some(0.0938)),
        ("99,88%", ',', Some(0.9988)),
        ("US$ 1.234,50", ',', Some(1234.5)),
        ("1 234,56 ₽", ',', Some(1234.56)),
        ("4 372,20", ',', Some(4372.2)),
        ("00:01:35", '.', Some(95.0)),
        ("0:01:34", '.', Some(94.0)),
        ("--", '.', None),
        (" --", '.', None),
        ("N/A", '.', None),
        ("#DIV/0!", '.', None),
        ("< 10%", '.', None),
        ("> 90%", '.', None),
        ("<1", '.', None),
        ("0", '.', Some(0.0)),
        ("-5.5", '.', Some(-5.5)),
        ("abc", '.', None),
        ("1e400", '.', None),
    ];

    fn polars_values(cells: &[&str], locale: &NumberLocale) -> Vec<Option<f64>> {
        let frame = df!("c" => cells).unwrap();
        let (value, _, _) = number_expr(col("c"), locale);
        let out = frame.lazy().select([value.alias("v")]).collect().unwrap();
        out.column("v").unwrap().f64().unwrap().iter().collect()
    }

    #[test]
    fn the_plain_path_agrees_with_the_full_rules() {
        let cells = [
            "1204.50",
            "1,204.50",
            "-5.5",
            "0",
            "0023",
            "12 480",
            "1\u{a0}234",
            "",
            "7",
            "100000000000000000000",
        ];
        let locale = NumberLocale::new('.', None);
        let ca = StringChunked::from_slice("c".into(), &cells);
        let fast = plain_numbers(&ca, &locale).expect("all plain");
        assert_eq!(fast, polars_values(&cells, &locale));
        let comma = NumberLocale::new(',', None);
        let cells = ["4 372,20", "1.234,5", "12"];
        let ca = StringChunked::from_slice("c".into(), &cells);
        assert_eq!(
            plain_numbers(&ca, &comma).unwrap(),
            polars_values(&cells, &comma)
        );
        for odd in [
            "12%", "$5", "1:30", "--", "<1", "1.", ".5", "+5", "1e5", "12abc", "1.2.3", "1,2,3",
        ] {
            let ca = StringChunked::from_slice("c".into(), &["1", odd]);
            assert!(plain_numbers(&ca, &locale).is_none(), "{odd}");
        }
    }

    #[test]
    fn polars_and_rust_rules_agree_on_every_case() {
        for (cell, decimal, expected) in CASES {
            let locale = NumberLocale::new(*decimal, None);

            let rust = parse_number(cell, &locale);
            let vectorised = polars_values(&[cell], &locale)[0];

            let close = |v: Option<f64>| match (v, expected) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                (None, None) => true,
                _ => false,
            };
            assert!(
                close(rust),
                "rust: {cell:?} -> {rust:?}, expected {expected:?}"
            );
            assert!(
                close(vectorised),
                "polars: {cell:?} -> {vectorised:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn thousands_separators_need_groups_of_three() {
        let comma = NumberLocale::new(',', None);
        let dot = NumberLocale::new('.', None);
        for ok in [
            "1.234",
            "1.234.567,5",
            "12 345",
            "-1.234",
            "US$ 1.234,50",
            "4 372,20 ₽",
            "7",
        ] {
            assert!(grouping_ok(ok, &comma), "{ok}");
        }
        for bad in ["12.5", "0.75", "1.23", "1.2345", "1234.567", "1.234.56"] {
            assert!(!grouping_ok(bad, &comma), "{bad}");
            assert_eq!(parse_number(bad, &comma), None, "{bad}");
        }
        assert!(grouping_ok("1,234.5", &dot) && !grouping_ok("1,5", &dot));
        let cells = StringChunked::new("c".into(), ["1", "12.5"]);
        assert_eq!(
            plain_numbers(&cells, &comma),
            None,
            "left to the full rules"
        );
        assert_eq!(parse_number("1.234,5", &comma), Some(1234.5));
    }

    #[test]
    fn unambiguous_cells_vote_for_a_decimal_mark() {
        assert_eq!(vote("0,001"), Some(','));
        assert_eq!(vote("0.001"), Some('.'));
        assert_eq!(vote("1,001"), None);
        let mut votes = Votes::default();
        for cell in ["2.546", "449", "40.0.2214.111", "99,88%", "1,15"] {
            votes.add(cell);
        }

        assert_eq!(votes.decision(), Some(','));
        assert_eq!(vote("1,204"), None, "fits both readings");
        assert_eq!(vote("12,345.67"), Some('.'));
        assert_eq!(vote("1.234.567"), Some(','));
        assert_eq!(vote("US$ 0,00"), Some(','));
    }

    #[test]
    fn utc_timestamps_become_local_days_across_dst() {
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let format = DateFormat::new("%Y-%m-%dT%H:%M:%SZ").unwrap();

        let day = |s: &str| format.day(s, berlin, berlin).unwrap().to_string();

        assert_eq!(day("2024-03-30T22:30:00Z"), "2024-03-30");
        assert_eq!(day("2024-03-30T23:30:00Z"), "2024-03-31");
        assert_eq!(day("2024-03-31T21:30:00Z"), "2024-03-31");
        assert_eq!(day("2024-03-31T22:30:00Z"), "2024-04-01");
    }

    #[test]
    fn day_first_is_detected_only_when_the_values_prove_it() {
        let tz = chrono_tz::UTC;

        let proven = detect_date_format(["01/02/2026", "13/04/2026"].into_iter(), tz);
        let ambiguous = detect_date_format(["01/02/2026", "03/04/2026"].into_iter(), tz);

        assert_eq!(proven.map(|f| f.format), Some("%d/%m/%Y".to_string()));
        assert!(ambiguous.is_none());
    }

    #[test]
    fn formats_without_a_full_date_are_refused() {
        assert!(DateFormat::new("%H:%M").is_err());
        assert!(DateFormat::new("%d.%m").is_err());
        assert!(DateFormat::new("%d-%m-%Y").is_ok());
        assert!(DateFormat::new("%m/%d/%y").is_ok());
    }
}
