//! JSON responses: find the records, read their fields, and write them as a table of text
//! cells that the CSV pipeline cleans (so numbers sent as strings, placeholders, dates and
//! rejected rows behave exactly as in exports).

use serde_json::Value;

/// A field of a record: a JSON pointer such as `/base/spent`, a plain name (`date` is
/// `/date`), or `../id` for a field of the record that holds the array (one `..` per level).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub ups: usize,
    pub pointer: String,
}

impl Field {
    pub fn parse(text: &str) -> Result<Field, String> {
        let mut rest = text.trim();
        let mut ups = 0;
        while let Some(r) = rest.strip_prefix("../") {
            ups += 1;
            rest = r;
        }
        if rest.is_empty() {
            return Err(format!("`{text}` names no field"));
        }
        let pointer = if rest.starts_with('/') {
            rest.to_string()
        } else if rest.contains('/') {
            // `../account/name`: a path below the parent
            format!("/{rest}")
        } else {
            format!("/{}", rest.replace('~', "~0").replace('/', "~1"))
        };
        if pointer.split('/').skip(1).any(|s| s == "*") {
            return Err(format!(
                "`{text}`: `*` belongs in `records`, not in a field pointer"
            ));
        }
        check_escapes(&pointer).map_err(|e| format!("`{text}`: {e}"))?;
        Ok(Field { ups, pointer })
    }
}

fn check_escapes(pointer: &str) -> Result<(), String> {
    let mut chars = pointer.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.peek(), Some('0') | Some('1')) {
            return Err("`~` in a JSON pointer must be written `~0` (and `/` as `~1`)".into());
        }
    }
    Ok(())
}

/// Checks a `records` pointer: `""` (the whole body is the array), `/rows`, or
/// `/items/*/rows` (every element of `items`, then its `rows`).
pub fn check_records(pointer: &str) -> Result<(), String> {
    if !(pointer.is_empty() || pointer.starts_with('/')) {
        return Err(format!(
            "`{pointer}` is not a JSON pointer: start it with `/`, such as \"/rows\""
        ));
    }
    check_escapes(pointer)
}

/// One record with the records that hold it (outermost first).
#[derive(Debug)]
pub struct Record<'a> {
    pub value: &'a Value,
    pub parents: Vec<&'a Value>,
    /// Its pointer in the body, such as `/items/0/rows/1`.
    pub at: String,
}

/// The records a pointer selects. A missing or `null` array is no records (GA4 leaves `rows`
/// out of an empty report); anything else that is not an array is an error.
pub fn records<'a>(body: &'a Value, pointer: &str) -> Result<Vec<Record<'a>>, String> {
    let segments: Vec<&str> = if pointer.is_empty() {
        Vec::new()
    } else {
        pointer[1..].split('/').collect()
    };
    let mut current: Vec<(Vec<&Value>, &Value, String)> = vec![(Vec::new(), body, String::new())];
    for segment in segments {
        let mut next = Vec::new();
        for (parents, value, at) in current {
            if segment == "*" {
                match value {
                    Value::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let mut parents = parents.clone();
                            parents.push(item);
                            next.push((parents, item, format!("{at}/{i}")));
                        }
                    }
                    other => {
                        return Err(format!(
                            "`{at}` is {}, not an array to walk with `*`",
                            kind(other)
                        ));
                    }
                }
                continue;
            }
            let key = segment.replace("~1", "/").replace("~0", "~");
            let child = match value {
                Value::Object(map) => map.get(&key),
                Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            // a missing step is never "no data": an API that renamed a key, or answered an
            // error in a 200, would otherwise empty the window's days
            match child {
                Some(child) => next.push((parents, child, format!("{at}/{segment}"))),
                None => {
                    return Err(format!(
                        "the answer has no `{at}/{segment}`{}; is `records` right?",
                        match value {
                            Value::Object(map) => format!(
                                " (it has: {})",
                                map.keys().take(12).cloned().collect::<Vec<_>>().join(", ")
                            ),
                            other => format!(" (`{}` is {})", at, kind(other)),
                        }
                    ));
                }
            }
        }
        current = next;
    }
    let mut out = Vec::new();
    for (parents, value, at) in current {
        match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    out.push(Record {
                        value: item,
                        parents: parents.clone(),
                        at: format!("{at}/{i}"),
                    });
                }
            }
            other => {
                return Err(format!(
                    "records: `{}` is {}, not an array",
                    if at.is_empty() { "the body" } else { &at },
                    kind(other)
                ));
            }
        }
    }
    Ok(out)
}

pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field's value as a table cell: text as is, numbers as JSON writes them (with a decimal
/// comma when the connector's `[format] decimal` is `,`), `null` and missing fields empty.
/// Line breaks become spaces so every record stays one line. The flag says whether the field
/// exists in the record.
pub fn cell(record: &Record, field: &Field, decimal_comma: bool) -> (String, bool) {
    let value = lookup(record, field);
    let text = match value {
        Some(Value::Number(n)) if decimal_comma => n.to_string().replace('.', ","),
        other => text(other),
    };
    (text, value.is_some())
}

/// The field's value in the record, if it has the field.
pub fn lookup<'a>(record: &Record<'a>, field: &Field) -> Option<&'a Value> {
    let base = if field.ups == 0 {
        Some(record.value)
    } else {
        record
            .parents
            .len()
            .checked_sub(field.ups)
            .and_then(|i| record.parents.get(i).copied())
    };
    base.and_then(|b| b.pointer(&field.pointer))
}

/// A JSON value as cell text.
pub fn text(value: Option<&Value>) -> String {
    let out = match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(other) => other.to_string(),
    };
    if out.chars().any(char::is_control) {
        // a record stays one line, and NUL and other controls never reach the tables
        out.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        out
    }
}

/// Whether a flag field is set: `true`, a non-zero number or a non-empty text.
pub fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|v| v != 0.0),
        Some(Value::String(s)) => !s.is_empty() && s != "false" && s != "0",
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_records_and_parent_fields() {
        let body: Value = serde_json::from_str(
            r#"{"items": [{"id": 101,
                           "rows": [{"date": "2024-01-01", "base": {"spent": "450.50"}}]},
                          {"id": 102, "rows": []}]}"#,
        )
        .unwrap();
        let found = records(&body, "/items/*/rows").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].at, "/items/0/rows/0");
        let id = Field::parse("../id").unwrap();
        let spent = Field::parse("/base/spent").unwrap();
        let date = Field::parse("date").unwrap();
        assert_eq!(cell(&found[0], &id, false).0, "101");
        assert_eq!(cell(&found[0], &spent, false).0, "450.50");
        assert_eq!(cell(&found[0], &date, false).0, "2024-01-01");
        let missing = cell(&found[0], &Field::parse("../../x").unwrap(), false);
        assert_eq!(missing, (String::new(), false));
        assert_eq!(Field::parse("../a/b").unwrap().pointer, "/a/b");
    }

    #[test]
    fn missing_rows_are_no_records_but_a_scalar_is_an_error() {
        let body: Value = serde_json::from_str(r#"{"rowCount": 0, "rows": 5}"#).unwrap();
        let nested: Value = serde_json::from_str(r#"{"items": [{"id": 5}]}"#).unwrap();
        assert!(
            records(&nested, "/items/*/rows")
                .unwrap_err()
                .contains("/items/0/rows")
        );
        let null: Value = serde_json::from_str(r#"{"items": null}"#).unwrap();
        assert!(records(&null, "/items/*/rows").is_err());
        assert!(
            records(&body, "/nothing")
                .unwrap_err()
                .contains("rowCount, rows")
        );
        assert!(records(&body, "/rows").unwrap_err().contains("a number"));
        assert!(check_records("rows").is_err());
        assert!(Field::parse("/a/*/b").is_err());
        assert!(Field::parse("/a~2").is_err());
    }
}
