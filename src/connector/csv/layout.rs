//! The shape of an export before its values: encoding, dialect, preamble, which line is the
//! header, where the table ends, which rows are totals, and the period a preamble states.
//!
//! Everything here reads only the first part of a file or one record at a time, so files of
//! any size stream through. To recognise a new report layout, extend the detector it belongs
//! to ([`sniff`], [`preamble_period`], [`is_totals_row`]) and pin it with a test.

use std::io::Read;

use chrono::NaiveDate;
use regex::Regex;

/// How much decoded text is looked at to find the dialect.
pub const SNIFF_BYTES: usize = 256 * 1024;

/// Picks the text encoding: a BOM wins, then the configured one; `auto` means UTF-8 and, when
/// the bytes are not UTF-8, the configured fallback (an error without one).
pub fn choose_encoding(
    head: &[u8],
    configured: Option<&str>,
    fallback: Option<&str>,
    at_eof: bool,
) -> Result<(&'static encoding_rs::Encoding, Option<String>), String> {
    if let Some((encoding, _)) = encoding_rs::Encoding::for_bom(head) {
        return Ok((encoding, None));
    }
    let label = configured.unwrap_or("auto");
    let utf8_ok = match std::str::from_utf8(head) {
        Ok(_) => true,
        // a multi-byte character cut by the end of the sample is fine
        Err(err) => err.error_len().is_none() && !at_eof,
    };
    let has_non_ascii = head.iter().any(|b| *b >= 0x80);
    if label.eq_ignore_ascii_case("auto") {
        if utf8_ok {
            return Ok((encoding_rs::UTF_8, None));
        }
        return match fallback {
            Some(name) => {
                let encoding = encoding_rs::Encoding::for_label(name.as_bytes())
                    .ok_or_else(|| format!("unknown fallback encoding `{name}`"))?;
                Ok((encoding, None))
            }
            None => Err(
                "the file is not UTF-8 and has no BOM; set [format] encoding (\"utf-8\" \
                 rejects only the rows with other bytes; \"windows-1251\" for Russian Excel), \
                 or fallback_encoding"
                    .into(),
            ),
        };
    }
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes())
        .ok_or_else(|| format!("unknown encoding `{label}`"))?;
    if encoding != encoding_rs::UTF_8 && utf8_ok && has_non_ascii {
        // reading UTF-8 as a legacy code page makes mojibake: say so and read it right
        return Ok((
            encoding_rs::UTF_8,
            Some(format!(
                "the file is valid UTF-8 although [format] encoding says {}; read as UTF-8",
                encoding.name()
            )),
        ));
    }
    // a file said to be UTF-8 is read as UTF-8 even with bytes that are not: each row holding
    // them is rejected with its line (a file in another code page is then mostly rejected,
    // which max_reject_share turns into a failed run that says so)
    Ok((encoding, None))
}

/// Decodes a whole stream to UTF-8 text as it is read.
pub fn decoder<R: Read>(reader: R, encoding: &'static encoding_rs::Encoding) -> impl Read {
    encoding_rs_io::DecodeReaderBytesBuilder::new()
        .encoding(Some(encoding))
        .bom_sniffing(true)
        .strip_bom(true)
        .build(reader)
}

/// The dialect of one file, found from its first lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialect {
    pub delimiter: u8,
    /// Lines before the first CSV record: `sep=`, `#` comments and blank lines.
    pub skip_lines: usize,
    /// Byte offset in the decoded text where the first CSV record starts.
    pub skip_bytes: usize,
    /// The skipped lines, for the preview and the preamble period.
    pub skipped: Vec<String>,
}

/// Finds the delimiter and the comment preamble in the first part of the decoded text.
pub fn sniff(text: &str, delimiter: Option<u8>, skip_lines: Option<usize>) -> Dialect {
    let mut delimiter = delimiter;
    let mut skip = 0;
    let mut skip_bytes = 0;
    let mut skipped = Vec::new();
    let mut lines = text.split_inclusive('\n').peekable();
    if let Some(first) = lines.peek()
        && let Some(sep) = first.trim().strip_prefix("sep=")
        && sep.len() == 1
    {
        delimiter = delimiter.or(Some(sep.as_bytes()[0]));
        skipped.push(first.trim_end().to_string());
        skip_bytes += first.len();
        skip = 1;
        lines.next();
    }
    for line in lines {
        let done = match skip_lines {
            Some(n) => skip >= n,
            None => !is_comment_or_blank(line),
        };
        if done {
            break;
        }
        skipped.push(line.trim_end().to_string());
        skip_bytes += line.len();
        skip += 1;
    }
    let body: Vec<&str> = text[skip_bytes..].lines().take(100).collect();
    let delimiter = delimiter.unwrap_or_else(|| detect_delimiter(&body));
    Dialect {
        delimiter,
        skip_lines: skip,
        skip_bytes,
        skipped,
    }
}

fn is_comment_or_blank(line: &str) -> bool {
    let trimmed = line.trim();
    trimmed.starts_with('#') || trimmed.is_empty()
}

/// The delimiter that splits most lines into the same number of fields.
pub fn detect_delimiter(lines: &[&str]) -> u8 {
    let mut best = (b',', 0usize, 0usize);
    for c in [b',', b';', b'\t', b'|'] {
        let mut counts: std::collections::HashMap<usize, usize> = Default::default();
        for line in lines.iter().filter(|l| !l.trim().is_empty()) {
            let n = count_outside_quotes(line, c);
            if n > 0 {
                *counts.entry(n).or_default() += 1;
            }
        }
        let Some((&fields, &lines_with)) = counts.iter().max_by_key(|(n, l)| (**l, **n)) else {
            continue;
        };
        if (lines_with, fields) > (best.1, best.2) {
            best = (c, lines_with, fields);
        }
    }
    best.0
}

fn count_outside_quotes(line: &str, c: u8) -> usize {
    let mut quoted = false;
    let mut count = 0;
    for b in line.bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if b == c && !quoted {
            count += 1;
        }
    }
    count
}

/// Words that open a totals or summary row.
const TOTAL_PREFIXES: &[&str] = &[
    "total",
    "totals",
    "grand total",
    "итого",
    "всего",
    "итог",
    "totaal",
    "gesamt",
    "summe",
];

/// Whether a record is a totals or summary row: its first non-empty cell starts with a total
/// word, or every dimension and date cell is empty while numbers follow.
pub fn is_totals_row(first_cell: &str, keys_empty: bool, has_keys: bool) -> bool {
    if has_keys && keys_empty {
        return true;
    }
    // a date or a number cannot start a total word (and needs no lowercase copy)
    if !first_cell.trim_start().starts_with(char::is_alphabetic) {
        return false;
    }
    let first = first_cell.trim().to_lowercase();
    let word_total = TOTAL_PREFIXES.iter().any(|p| {
        first.starts_with(p)
            && first[p.len()..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric())
    });
    word_total || (has_keys && keys_empty)
}

/// `Total rows: 3` as a number of rows, when the line says so.
pub fn stated_row_count(cells: &[&str]) -> Option<u64> {
    let text = cells.iter().map(|c| c.trim()).find(|c| !c.is_empty())?;
    if !text.starts_with(['t', 'T', 'в', 'В']) {
        return None;
    }
    let lower = text.to_lowercase();
    let rest = lower
        .strip_prefix("total rows")
        .or_else(|| lower.strip_prefix("всего строк"))?;
    rest.trim_start_matches([':', ' ']).trim().parse().ok()
}

/// The period a report preamble states, such as `# Start date: 20240101` / `# End date:
/// 20240131`, `# 20190301-20190303`, `"January 1, 2024 - January 31, 2024"` or `(2024-01-01 -
/// 2024-01-02)`.
pub fn preamble_period(lines: &[String]) -> Option<(NaiveDate, NaiveDate)> {
    let text = lines.join("\n");
    let start = labelled_date(&text, r"(?i)start date:\s*(\d{8}|\d{4}-\d{2}-\d{2})");
    let end = labelled_date(&text, r"(?i)end date:\s*(\d{8}|\d{4}-\d{2}-\d{2})");
    if let (Some(start), Some(end)) = (start, end) {
        return (start <= end).then_some((start, end));
    }
    let ranges = [
        (r"(\d{8})\s*[-–]\s*(\d{8})", "%Y%m%d"),
        (
            r"(\d{4}-\d{2}-\d{2})\s*[-–]\s*(\d{4}-\d{2}-\d{2})",
            "%Y-%m-%d",
        ),
        (
            r"(\d{2}\.\d{2}\.\d{4})\s*[-–]\s*(\d{2}\.\d{2}\.\d{4})",
            "%d.%m.%Y",
        ),
        (
            r"([A-Z][a-z]+ \d{1,2}, \d{4})\s*[-–]\s*([A-Z][a-z]+ \d{1,2}, \d{4})",
            "%B %d, %Y",
        ),
        (
            r"([A-Z][a-z]{2} \d{1,2}, \d{4})\s*[-–]\s*([A-Z][a-z]{2} \d{1,2}, \d{4})",
            "%b %d, %Y",
        ),
    ];
    for (pattern, format) in ranges {
        let re = Regex::new(pattern).expect("valid pattern");
        if let Some(c) = re.captures(&text) {
            let start = NaiveDate::parse_from_str(&c[1], format).ok();
            let end = NaiveDate::parse_from_str(&c[2], format).ok();
            if let (Some(start), Some(end)) = (start, end)
                && start <= end
            {
                return Some((start, end));
            }
        }
    }
    None
}

fn labelled_date(text: &str, pattern: &str) -> Option<NaiveDate> {
    let c = Regex::new(pattern).expect("valid pattern").captures(text)?;
    let value = &c[1];
    NaiveDate::parse_from_str(value, "%Y%m%d")
        .or_else(|_| NaiveDate::parse_from_str(value, "%Y-%m-%d"))
        .ok()
}

/// Whether a record reads like a header: every non-empty cell is text with a letter in it,
/// not a number, a date or an amount.
pub fn looks_like_header(record: &csv::StringRecord) -> bool {
    let mut any = false;
    for cell in record.iter().map(str::trim).filter(|c| !c.is_empty()) {
        any = true;
        let letters = cell.chars().filter(|c| c.is_alphabetic()).count();
        let digits = cell.chars().filter(|c| c.is_ascii_digit()).count();
        if letters == 0 || digits > letters {
            return false;
        }
    }
    any
}

/// Whether text looks like UTF-8 that was once read as a Western code page (`Ð”Ð°Ñ‚Ð°`,
/// `Ã©`): such a file is already garbled, and its names will not match.
pub fn looks_garbled(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    chars.windows(2).any(|w| {
        matches!(w[0], 'Ð' | 'Ñ' | 'Ã' | 'Â')
            && (('\u{80}'..='\u{bf}').contains(&w[1])
                || "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ".contains(w[1]))
    })
}

/// Header names made unique: a repeated `Clicks` becomes `Clicks_2`, `Clicks_3`.
pub fn unique_headers(cells: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut names: Vec<String> = Vec::new();
    let mut renamed = Vec::new();
    for cell in cells {
        let base = cell.trim().trim_start_matches('\u{feff}').to_string();
        let mut name = base.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        if name != base {
            renamed.push(format!("`{base}` repeated: the second is `{name}`"));
        }
        names.push(name);
    }
    (names, renamed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn comment_preamble_and_delimiter() {
        let text = "# title\n# Start date: 20240101\n\nDay;Clicks\n01.01.2024;1 204,5\n";

        let dialect = sniff(text, None, None);

        assert_eq!(dialect.delimiter, b';');
        assert_eq!(dialect.skip_lines, 3);
        assert_eq!(&text[dialect.skip_bytes..dialect.skip_bytes + 3], "Day");
    }

    #[test]
    fn excel_sep_line() {
        let dialect = sniff("sep=|\na|b\n1|2\n", None, None);

        assert_eq!((dialect.delimiter, dialect.skip_lines), (b'|', 1));
    }

    #[test]
    fn title_lines_do_not_decide_the_delimiter() {
        let lines = [
            "Campaign report",
            "\"January 1, 2024 - January 31, 2024\"",
            "a\tb\tc",
            "1\t2\t3",
        ];

        assert_eq!(detect_delimiter(&lines), b'\t');
    }

    #[test]
    fn periods_from_preambles() {
        let ga4 = vec![
            "# Start date: 20240101".to_string(),
            "# End date: 20240131".to_string(),
        ];
        let ua = vec!["# 20190301-20190303".to_string()];
        let ads = vec!["January 1, 2024 - January 31, 2024".to_string()];
        let direct = vec!["Demo campaign stats (2024-01-01 - 2024-01-02)".to_string()];
        let masked = vec!["# 2014*******".to_string()];

        assert_eq!(
            preamble_period(&ga4),
            Some((d("2024-01-01"), d("2024-01-31")))
        );
        assert_eq!(
            preamble_period(&ua),
            Some((d("2019-03-01"), d("2019-03-03")))
        );
        assert_eq!(
            preamble_period(&ads),
            Some((d("2024-01-01"), d("2024-01-31")))
        );
        assert_eq!(
            preamble_period(&direct),
            Some((d("2024-01-01"), d("2024-01-02")))
        );
        assert_eq!(preamble_period(&masked), None);
    }

    #[test]
    fn totals_rows() {
        assert!(is_totals_row("Total: Account", false, true));
        assert!(is_totals_row("Итого и средние", false, true));
        assert!(is_totals_row("", true, true));
        assert!(!is_totals_row("Totally Awesome Campaign", false, true));
        assert!(!is_totals_row("Brand", false, true));
        assert_eq!(stated_row_count(&["Total rows: 3"]), Some(3));
    }

    #[test]
    fn garbled_text_is_noticed() {
        assert!(looks_garbled("Ð”Ð°Ñ‚Ð°"));
        assert!(looks_garbled("CafÃ©"));
        assert!(!looks_garbled("Дата визита"));
        assert!(!looks_garbled("Café, Ñandú"));
    }

    #[test]
    fn duplicate_headers_are_numbered() {
        let (names, renamed) = unique_headers(&["Campaign", "Clicks", "Cost", "Clicks"]);

        assert_eq!(names, vec!["Campaign", "Clicks", "Cost", "Clicks_2"]);
        assert_eq!(renamed.len(), 1);
    }

    #[test]
    fn encodings() {
        let cp1251 = b"\xc4\xe0\xf2\xe0;1\n";
        assert!(choose_encoding(cp1251, None, None, true).is_err());
        let (enc, _) = choose_encoding(cp1251, None, Some("windows-1251"), true).unwrap();
        assert_eq!(enc, encoding_rs::WINDOWS_1251);
        let (enc, warning) =
            choose_encoding("Дата;1\n".as_bytes(), Some("windows-1251"), None, true).unwrap();
        assert_eq!(enc, encoding_rs::UTF_8);
        assert!(warning.is_some(), "mojibake is never passed on silently");
        let (enc, _) = choose_encoding(b"\xff\xfeD\x00", None, None, true).unwrap();
        assert_eq!(enc, encoding_rs::UTF_16LE);
    }
}

/// Normalises line endings as text streams through: CRLF and a lone CR become LF, and the
/// text always ends with LF. Every record then ends with one LF, so line numbers are exact.
pub struct LineEndings<R> {
    inner: R,
    buffer: Vec<u8>,
    /// The last byte read was a CR (already given out as LF): an LF right after it is dropped.
    after_cr: bool,
    last: Option<u8>,
    done: bool,
}

impl<R: Read> LineEndings<R> {
    pub fn new(inner: R) -> LineEndings<R> {
        LineEndings {
            inner,
            buffer: vec![0; 64 * 1024],
            after_cr: false,
            last: None,
            done: false,
        }
    }
}

impl<R: Read> Read for LineEndings<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() || self.done {
            return Ok(0);
        }
        // every byte read gives at most one byte out
        let room = out.len().min(self.buffer.len());
        loop {
            let n = self.inner.read(&mut self.buffer[..room])?;
            if n == 0 {
                self.done = true;
                if self.last.is_some_and(|b| b != b'\n') {
                    out[0] = b'\n';
                    return Ok(1);
                }
                return Ok(0);
            }
            // most exports end their lines with LF alone: such a block is copied as it is
            if !self.after_cr && memchr::memchr(b'\r', &self.buffer[..n]).is_none() {
                out[..n].copy_from_slice(&self.buffer[..n]);
                self.last = Some(out[n - 1]);
                return Ok(n);
            }
            let mut written = 0;
            for &byte in &self.buffer[..n] {
                if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                    continue;
                }
                if byte == b'\r' {
                    self.after_cr = true;
                    out[written] = b'\n';
                } else {
                    out[written] = byte;
                }
                written += 1;
            }
            if written > 0 {
                self.last = Some(out[written - 1]);
                return Ok(written);
            }
        }
    }
}

#[cfg(test)]
mod line_ending_tests {
    use super::*;

    fn normalise(input: &[u8]) -> String {
        let mut out = String::new();
        LineEndings::new(input).read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn every_ending_becomes_one_lf() {
        assert_eq!(normalise(b"a\r\nb\rc\nd"), "a\nb\nc\nd\n");
        assert_eq!(normalise(b"a\r\n"), "a\n");
        assert_eq!(normalise(b"a\r"), "a\n");
        assert_eq!(normalise(b""), "");
    }

    /// A CR at the end of one read and its LF (or not) at the start of the next, whatever
    /// the sizes of the reads (a CR-only file used to overflow the reader's buffer).
    #[test]
    fn endings_split_between_reads() {
        let input = b"ab\r\rc\r\nd\re\r\n\r\nf\rg";
        let expected = "ab\n\nc\nd\ne\n\nf\ng\n";
        for size in 1..=input.len() + 1 {
            let mut reader = LineEndings::new(&input[..]);
            let mut out = Vec::new();
            let mut buffer = vec![0; size];
            loop {
                let n = reader.read(&mut buffer).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buffer[..n]);
            }
            assert_eq!(String::from_utf8(out).unwrap(), expected, "reads of {size}");
        }
        let lone_crs: Vec<u8> = b"x,1\r".repeat(40_000);
        assert_eq!(normalise(&lone_crs), "x,1\n".repeat(40_000));
    }
}
