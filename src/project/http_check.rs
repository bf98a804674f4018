//! `check` for HTTP connectors and presets: templates, pointers, windows, paging and auth,
//! all without sending a request.

use std::path::Path;

use chrono::NaiveDate;

use super::problem::{Problem, with_hint};
use super::toml_file::{KeyPath, TomlFile};
use crate::connector::http::json::{Field, check_records};
use crate::connector::http::template::{self, PLACEHOLDERS, Part};
use crate::connector::http::{HttpConfig, PagingKind, ResponseKind, Shape};

/// Where a generated field of a preset is written in the file.
fn locate(kind: &str, field: &str) -> KeyPath {
    let root = KeyPath::root();
    if kind == "http" {
        let mut path = root;
        let mut parts = field.splitn(2, '.');
        if let Some(first) = parts.next() {
            path = path.key(first);
        }
        if let Some(rest) = parts.next() {
            // header and query names may contain dots: keep the rest whole
            let mut rest_parts = rest.splitn(2, '.');
            let second = rest_parts.next().unwrap_or_default();
            path = path.key(second);
            if let Some(third) = rest_parts.next()
                && matches!(field.split('.').next(), Some("auth"))
            {
                path = path.key(third);
            }
        }
        return path;
    }
    match field {
        "url" => match kind {
            "google_sheets" => root.key("url"),
            _ => root.key("base_url"),
        },
        "key_file" => root.key("key_file"),
        f if f.starts_with("auth.") => root.key("token"),
        "headers.Client-Login" => root.key("client_login"),
        _ => root,
    }
}

pub fn check(
    file: &TomlFile,
    config: &HttpConfig,
    kind: &str,
    root: &Path,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) {
    let at = KeyPath::root();
    let windowed = config.window.is_some();

    // templates: known placeholders, environment names, a window for dates
    for (field, text) in config.templates() {
        let path = locate(kind, &field);
        for part in template::parts(text) {
            match part {
                Part::Env(name) if !template::valid_env_name(&name) => {
                    problems.push(file.problem(
                        &path,
                        format!(
                            "`${{{name}}}`: an environment variable name is letters, digits and `_`"
                        ),
                    ));
                }
                Part::Env(name) => {
                    if std::env::var(&name).map(|v| v.is_empty()).unwrap_or(true) {
                        warnings.push(file.problem(
                            &path,
                            format!(
                                "environment variable `{name}` is not set here; runs fail until \
                                 it is"
                            ),
                        ));
                    }
                }
                Part::Var { name, format } => {
                    if !PLACEHOLDERS.contains(&name.as_str()) {
                        problems.push(file.problem(
                            &path,
                            with_hint(
                                format!("unknown placeholder `{{{name}}}`"),
                                &name,
                                PLACEHOLDERS.iter().copied(),
                            ),
                        ));
                        continue;
                    }
                    if (name == "from" || name == "to") && !windowed {
                        problems.push(file.problem(
                            &path,
                            format!(
                                "`{{{name}}}` needs the days of a run: add [window] with `start`"
                            ),
                        ));
                    }
                    if let Some(format) = format
                        && let Err(err) = date_format(&format)
                    {
                        problems.push(file.problem(&path, err));
                    }
                    let paging = config.paging_kind();
                    let fits = match name.as_str() {
                        "offset" => paging == PagingKind::Offset,
                        "page" => paging == PagingKind::Page,
                        "cursor" => paging == PagingKind::Cursor,
                        "limit" => matches!(
                            paging,
                            PagingKind::Offset | PagingKind::Page | PagingKind::Cursor
                        ),
                        _ => true,
                    };
                    if !fits {
                        problems.push(file.problem(
                            &path,
                            format!(
                                "`{{{name}}}` is set by [paging], but paging kind is `{}`",
                                format!("{paging:?}").to_lowercase()
                            ),
                        ));
                    }
                }
            }
        }
    }

    // the address, with sample values
    let sample = template::Vars {
        from: NaiveDate::from_ymd_opt(2024, 1, 1),
        to: NaiveDate::from_ymd_opt(2024, 1, 31),
        date_format: "%Y-%m-%d".into(),
        offset: Some(0),
        limit: Some(1),
        page: Some(1),
        cursor: Some("c".into()),
    };
    let sample_url = &config.url;
    let mut secrets = template::Secrets::default();
    for part in template::parts(sample_url) {
        if let Part::Env(name) = part {
            secrets.add(&name, "secret".into());
        }
    }
    if let Ok(rendered) = template::render(sample_url, &sample, &secrets, template::Escape::None) {
        match url::Url::parse(&rendered.real) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => problems.push(file.problem(
                &locate(kind, "url"),
                format!("`{}`: only http and https addresses are read", u.scheme()),
            )),
            Err(err) => problems.push(file.problem(
                &locate(kind, "url"),
                format!("`{}` is not an address: {err}", config.url),
            )),
        }
    }

    if let Some(window) = &config.window {
        if window.start.parse().is_none() {
            problems.push(file.problem(
                &locate_window(kind, "start"),
                "start must be a YYYY-MM-DD date",
            ));
        }
        if let Some(format) = &window.date_format
            && let Err(err) = date_format(format)
        {
            problems.push(file.problem(&at.key("window").key("date_format"), err));
        }
        if window.max_days == Some(0) {
            problems.push(file.problem(
                &locate_window(kind, "max_days"),
                "max_days must be at least 1",
            ));
        }
    }

    // paging
    let paging = &config.paging;
    let at_paging = at.key("paging");
    if paging.kind == Some(PagingKind::Cursor) && paging.cursor_at.is_none() {
        problems.push(file.problem(
            &at_paging.key("kind"),
            "cursor paging needs `cursor_at`, the JSON pointer of the next cursor",
        ));
    }
    for (key, value) in [
        ("cursor_at", &paging.cursor_at),
        ("total_at", &paging.total_at),
    ] {
        if let Some(pointer) = value
            && !pointer.starts_with('/')
        {
            problems.push(file.problem(
                &at_paging.key(key),
                format!("`{pointer}` is not a JSON pointer: start it with `/`"),
            ));
        }
    }
    if paging.cursor_at.is_some() && paging.kind != Some(PagingKind::Cursor) {
        warnings.push(file.problem(
            &at_paging.key("cursor_at"),
            "`cursor_at` is only read with kind = \"cursor\"",
        ));
    }
    if paging.limit == Some(0) {
        problems.push(file.problem(&at_paging.key("limit"), "limit must be at least 1"));
    }
    if paging.max_pages == Some(0) {
        problems.push(file.problem(&at_paging.key("max_pages"), "max_pages must be at least 1"));
    }
    if let Some(first) = paging.first
        && paging.kind == Some(PagingKind::Offset)
        && first > 1
    {
        warnings.push(file.problem(
            &at_paging.key("first"),
            format!("offsets usually start at 0 or 1, not {first}"),
        ));
    }

    // JSON fields and records
    if config.response != Some(ResponseKind::Csv) && config.shape == Shape::Records {
        if let Some(records) = &config.json.records
            && let Err(err) = check_records(records)
        {
            problems.push(file.problem(&at.key("json").key("records"), err));
        }
        let wildcard = config
            .json
            .records
            .as_deref()
            .map(|r| r.split('/').filter(|s| *s == "*").count())
            .unwrap_or(0);
        let mut fields: Vec<(KeyPath, String)> = Vec::new();
        if let Some(column) = &config.date.column {
            for c in column.values() {
                fields.push((at.key("date").key("column"), c));
            }
        }
        for (name, column) in &config.dimensions {
            for c in column.values() {
                fields.push((at.key("dimensions").key(name), c));
            }
        }
        for (i, metric) in config.metrics.iter().enumerate() {
            let path = at.key("metrics").index(i);
            if let Some(column) = &metric.column {
                for c in column.values() {
                    fields.push((path.key("column"), c));
                }
            }
        }
        if kind == "http" {
            for (path, field) in fields {
                match Field::parse(&field) {
                    Err(err) => problems.push(file.problem(&path, err)),
                    Ok(f) if f.ups > wildcard => problems.push(file.problem(
                        &path,
                        format!(
                            "`{field}` goes up {} level(s), but [json] records walks {wildcard} \
                             array(s) with `*`",
                            f.ups
                        ),
                    )),
                    Ok(_) => {}
                }
            }
        }
        for (flag, pointer) in &config.json.flags {
            if !pointer.starts_with('/') {
                problems.push(file.problem(
                    &at.key("json").key("flags").key(flag),
                    format!("`{pointer}` is not a JSON pointer: start it with `/`"),
                ));
            }
        }
    }

    // auth: exactly one way
    if let Some(auth) = &config.auth {
        let ways = [
            auth.bearer.is_some(),
            auth.basic.is_some(),
            auth.header.is_some(),
            auth.query.is_some(),
        ]
        .iter()
        .filter(|w| **w)
        .count();
        if ways != 1 && kind == "http" {
            problems.push(file.problem(
                &at.key("auth"),
                "give exactly one of `bearer`, `basic`, `header` or `query`",
            ));
        }
    }
    // a JSON body must still be JSON once its placeholders are filled
    if let Some(body) = &config.body
        && body.trim_start().starts_with(['{', '['])
    {
        let mut secrets = template::Secrets::default();
        for part in template::parts(body) {
            if let Part::Env(name) = part {
                secrets.add(&name, "secret".into());
            }
        }
        if let Ok(rendered) = template::render(body, &sample, &secrets, template::Escape::Json)
            && let Err(err) = serde_json::from_str::<serde_json::Value>(&rendered.real)
        {
            problems.push(file.problem(
                &locate(kind, "body"),
                format!("the body is not JSON once its placeholders are filled: {err}"),
            ));
        }
    }
    // a token in the file ends up in version control
    if let Some(auth) = &config.auth {
        let written = [
            ("auth.bearer", auth.bearer.as_deref()),
            (
                "auth.basic.password",
                auth.basic.as_ref().map(|b| b.password.as_str()),
            ),
            (
                "auth.header.value",
                auth.header.as_ref().map(|h| h.value.as_str()),
            ),
            (
                "auth.query.value",
                auth.query.as_ref().map(|q| q.value.as_str()),
            ),
        ];
        for (field, value) in written {
            if let Some(value) = value
                && !value.contains("${")
            {
                warnings.push(file.problem(
                    &locate(kind, field),
                    "a secret written in the file ends up in version control and backups; \
                     write `${ENV_NAME}` and set the variable",
                ));
            }
        }
    }
    if config.body.is_some() && config.method() == crate::connector::http::HttpMethod::Get {
        warnings.push(file.problem(
            &at.key("body"),
            "a body with method GET is unusual; set method = \"POST\"",
        ));
    }
    let r = &config.request;
    for (key, value) in [
        ("timeout_secs", r.timeout_secs),
        ("connect_timeout_secs", r.connect_timeout_secs),
        ("max_backoff_secs", r.max_backoff_secs),
        ("max_retry_after_secs", r.max_retry_after_secs),
        ("report_wait_secs", r.report_wait_secs),
    ] {
        if let Some(v) = value
            && !(v.is_finite() && v > 0.0)
        {
            problems.push(file.problem(
                &at.key("request").key(key),
                format!("{key} must be a positive number of seconds"),
            ));
        }
    }
    if r.max_attempts == Some(0) {
        problems.push(file.problem(
            &at.key("request").key("max_attempts"),
            "max_attempts must be at least 1",
        ));
    }
    if r.max_response_mb == Some(0) {
        problems.push(file.problem(
            &at.key("request").key("max_response_mb"),
            "max_response_mb must be at least 1",
        ));
    }

    // GA4: the key file
    if let Some(account) = &config.service_account
        && !account.key_file.contains("${")
        && !root.join(&account.key_file).is_file()
    {
        warnings.push(file.problem(
            &at.key("key_file"),
            format!(
                "no key file at `{}` yet; runs fail until it is there",
                account.key_file
            ),
        ));
    }
}

fn locate_window(kind: &str, key: &str) -> KeyPath {
    if kind == "http" {
        KeyPath::root().key("window").key(key)
    } else {
        KeyPath::root().key(key)
    }
}

/// A chrono format must write a full date.
fn date_format(format: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
        return Err(format!("`{format}` is not a chrono date format"));
    }
    let day = NaiveDate::from_ymd_opt(2024, 2, 9).expect("date");
    let text = template::format_day(day, format)?;
    if !(text.contains("2024") || text.contains("24")) || !text.contains('9') {
        return Err(format!(
            "`{format}` does not write the whole date (2024-02-09 becomes `{text}`)"
        ));
    }
    Ok(())
}
