//! Templates in URLs, query values, headers and bodies: `{from}`, `{to}` (with an optional
//! chrono format, `{from:%Y%m%d}`), the paging values `{offset}`, `{limit}`, `{page}`,
//! `{cursor}`, and secrets written as `${ENV_NAME}`.
//!
//! Rendering gives two texts: the real one that is sent, and a shown one in which every
//! secret is still written `${ENV_NAME}`. Only the shown text reaches logs, tables and the
//! preview; [`Secrets::redact`] cleans anything else that might echo a secret (server error
//! bodies, transport errors).

use std::sync::LazyLock;

use chrono::NaiveDate;
use regex::Regex;

/// Placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &["from", "to", "offset", "limit", "page", "cursor"];

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$\{([^{}]*)\}|\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*))?\}").expect("regex")
});

/// A `{name}` or `${NAME}` found in a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Env(String),
    Var {
        name: String,
        format: Option<String>,
    },
}

/// Every placeholder of a template, in order.
pub fn parts(text: &str) -> Vec<Part> {
    PLACEHOLDER
        .captures_iter(text)
        .map(|c| match (c.get(1), c.get(2)) {
            (Some(env), _) => Part::Env(env.as_str().to_string()),
            (None, Some(name)) => Part::Var {
                name: name.as_str().to_string(),
                format: c.get(3).map(|f| f.as_str().to_string()),
            },
            (None, None) => unreachable!("one of the groups matches"),
        })
        .collect()
}

/// Whether an environment variable name is usable.
pub fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// The values a template can use in one request.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// The format of `{from}` and `{to}` without an explicit one.
    pub date_format: String,
    pub offset: Option<u64>,
    pub limit: Option<u64>,
    pub page: Option<u64>,
    pub cursor: Option<String>,
}

/// Secrets read from the environment for one run. `Debug` shows their names only.
#[derive(Clone, Default)]
pub struct Secrets {
    values: Vec<(String, String)>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.values.iter().map(|(name, _)| format!("${{{name}}}")))
            .finish()
    }
}

impl Secrets {
    /// Reads every `${NAME}` the templates use; a missing variable is an error naming it.
    pub fn from_env<'a>(
        templates: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Secrets, String> {
        let mut values: Vec<(String, String)> = Vec::new();
        for (field, text) in templates {
            for part in parts(text) {
                let Part::Env(name) = part else { continue };
                if values.iter().any(|(n, _)| *n == name) {
                    continue;
                }
                match std::env::var(&name) {
                    Ok(value) if !value.is_empty() => values.push((name, value)),
                    _ => {
                        return Err(format!(
                            "configuration error: environment variable `{name}` (used in \
                             `{field}`) is not set"
                        ));
                    }
                }
            }
        }
        // longest first, so a secret containing another is replaced whole
        values.sort_by_key(|v| std::cmp::Reverse(v.1.len()));
        Ok(Secrets { values })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Adds a value that must never be shown (an access token obtained at run time).
    pub fn add(&mut self, name: &str, value: String) {
        if !value.is_empty() {
            self.values.push((name.to_string(), value));
            self.values.sort_by_key(|v| std::cmp::Reverse(v.1.len()));
        }
    }

    /// Replaces every secret value (as is and percent-encoded) by its `${NAME}`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (name, value) in &self.values {
            if value.len() < 3 {
                continue;
            }
            let shown = format!("${{{name}}}");
            for form in forms(value) {
                out = out.replace(form.as_str(), &shown);
            }
        }
        out
    }
}

/// A secret as a server may echo it: as is, form- and percent-encoded, JSON-escaped.
fn forms(value: &str) -> Vec<String> {
    let mut out = vec![value.to_string()];
    let mut add = |form: String| {
        if !out.contains(&form) {
            out.push(form);
        }
    };
    add(url::form_urlencoded::byte_serialize(value.as_bytes()).collect());
    add(percent(value));
    let json = serde_json::to_string(value).expect("a string serializes");
    let json = json[1..json.len() - 1].to_string();
    // the escapes other JSON writers use: `\/`, and `\u` with four hex digits for non-ASCII
    add(json.replace('/', "\\/"));
    let ascii: String = json
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                let mut units = [0u16; 2];
                c.encode_utf16(&mut units)
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect()
            }
        })
        .collect();
    add(ascii.replace('/', "\\/"));
    add(ascii);
    add(json);
    out.sort_by_key(|f| std::cmp::Reverse(f.len()));
    out
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn percent(value: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(value, KEEP).to_string()
}

/// How substituted values are written into the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    None,
    /// Inside a JSON string: `"` and `\` escaped.
    Json,
    /// Inside a URL: secrets percent-encoded, so a `/` or a space cannot change the address.
    Url,
}

/// A rendered template: what is sent, and what may be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub real: String,
    pub shown: String,
}

/// Fills a template. Unknown `{words}` stay as written (`check` reports them), as do braces
/// that are not placeholders (JSON bodies).
pub fn render(
    text: &str,
    vars: &Vars,
    secrets: &Secrets,
    escape: Escape,
) -> Result<Rendered, String> {
    let mut real = String::with_capacity(text.len());
    let mut shown = String::with_capacity(text.len());
    let mut last = 0;
    for c in PLACEHOLDER.captures_iter(text) {
        let whole = c.get(0).expect("match");
        real.push_str(&text[last..whole.start()]);
        shown.push_str(&text[last..whole.start()]);
        last = whole.end();
        if let Some(env) = c.get(1) {
            let value = secrets
                .get(env.as_str())
                .ok_or_else(|| format!("environment variable `{}` is not set", env.as_str()))?;
            let value = match escape {
                Escape::Url => percent(value),
                _ => escaped(value, escape),
            };
            real.push_str(&value);
            shown.push_str(whole.as_str());
            continue;
        }
        let name = c.get(2).expect("name").as_str();
        let format = c.get(3).map(|f| f.as_str());
        let value = match name {
            "from" | "to" => {
                let day = if name == "from" { vars.from } else { vars.to };
                let day = day.ok_or_else(|| {
                    format!("`{{{name}}}` needs a date window: add [window] with `start`")
                })?;
                let format = format.unwrap_or(&vars.date_format);
                format_day(day, format)?
            }
            "offset" => number(vars.offset, name)?,
            "limit" => number(vars.limit, name)?,
            "page" => number(vars.page, name)?,
            "cursor" => vars.cursor.clone().unwrap_or_default(),
            _ => {
                real.push_str(whole.as_str());
                shown.push_str(whole.as_str());
                continue;
            }
        };
        let value = escaped(&value, escape);
        real.push_str(&value);
        shown.push_str(&value);
    }
    real.push_str(&text[last..]);
    shown.push_str(&text[last..]);
    Ok(Rendered { real, shown })
}

/// A day in a chrono format; a format that cannot write a date is an error, not a panic.
pub fn format_day(day: NaiveDate, format: &str) -> Result<String, String> {
    use chrono::format::{Item, StrftimeItems};
    use std::fmt::Write as _;
    if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
        return Err(format!("`{format}` is not a chrono date format"));
    }
    let mut out = String::new();
    write!(out, "{}", day.format(format))
        .map_err(|_| format!("`{format}` cannot write a date (it asks for a time or a zone)"))?;
    Ok(out)
}

fn number(value: Option<u64>, name: &str) -> Result<String, String> {
    value
        .map(|v| v.to_string())
        .ok_or_else(|| format!("`{{{name}}}` is only known with [paging] that sets it"))
}

fn escaped(value: &str, escape: Escape) -> String {
    match escape {
        Escape::None | Escape::Url => value.to_string(),
        Escape::Json => {
            let quoted = serde_json::to_string(value).expect("a string serializes");
            quoted[1..quoted.len() - 1].to_string()
        }
    }
}

/// Whether a template uses a `{name}` placeholder.
pub fn uses(text: &str, wanted: &str) -> bool {
    parts(text)
        .iter()
        .any(|p| matches!(p, Part::Var { name, .. } if name == wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            from: NaiveDate::from_ymd_opt(2024, 1, 1),
            to: NaiveDate::from_ymd_opt(2024, 1, 31),
            date_format: "%Y-%m-%d".into(),
            offset: Some(3),
            ..Vars::default()
        }
    }

    #[test]
    fn dates_paging_and_secrets() {
        let secrets = Secrets {
            values: vec![("TOKEN".into(), "s3cr\"et".into())],
        };
        let out = render(
            r#"{"from": "{from}", "to": "{to:%Y%m%d}", "o": {offset}, "t": "${TOKEN}", "x": {}}"#,
            &vars(),
            &secrets,
            Escape::Json,
        )
        .unwrap();
        assert_eq!(
            out.real,
            r#"{"from": "2024-01-01", "to": "20240131", "o": 3, "t": "s3cr\"et", "x": {}}"#
        );
        assert_eq!(
            out.shown,
            r#"{"from": "2024-01-01", "to": "20240131", "o": 3, "t": "${TOKEN}", "x": {}}"#
        );
        assert_eq!(
            secrets.redact("bad token s3cr\"et and s3cr%22et"),
            "bad token ${TOKEN} and ${TOKEN}"
        );
        let odd = Secrets {
            values: vec![("K".into(), "a/bé".into())],
        };
        assert_eq!(odd.redact(r"x a\/b\u00e9 y a\/bé"), "x ${K} y ${K}");
    }

    #[test]
    fn unknown_words_stay_and_are_listed() {
        let out = render("a{form}b", &vars(), &Secrets::default(), Escape::None).unwrap();
        assert_eq!(out.real, "a{form}b");
        assert_eq!(
            parts("{form} ${X}"),
            vec![
                Part::Var {
                    name: "form".into(),
                    format: None
                },
                Part::Env("X".into())
            ]
        );
    }

    #[test]
    fn a_date_without_a_window_is_an_error() {
        let err = render(
            "{from}",
            &Vars::default(),
            &Secrets::default(),
            Escape::None,
        );
        assert!(err.unwrap_err().contains("[window]"));
    }
}
