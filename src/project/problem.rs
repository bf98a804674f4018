//! Configuration problems: each names the file, the line and the field it concerns.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a project's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file, relative to the project directory where possible.
    pub file: PathBuf,
    /// 1-based line, when the problem can be pinned to one.
    pub line: Option<usize>,
    /// The key path inside the file, such as `objective[0].key_result[1].metric`.
    pub field: String,
    /// What is wrong, in lower case, with a hint where there is one.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found while loading a project, reported together.
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in the project configuration:\n{}", .0.len(), list(.0))]
pub struct ConfigErrors(pub Vec<Problem>);

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The candidate closest to `name`, when it is close enough to be a likely misspelling.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let lowered = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&lowered, &c.to_lowercase()), c))
        .filter(|(similarity, _)| *similarity >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}

/// `message`, followed by a "did you mean" hint when one of `candidates` is close to `name`.
pub fn with_hint<'a>(
    message: String,
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    match closest(name, candidates) {
        Some(hint) => format!("{message} (did you mean `{hint}`?)"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        assert_eq!(
            closest("sesions", ["sessions", "orders"]),
            Some("sessions".into())
        );
        assert_eq!(closest("revenue", ["sessions", "orders"]), None);
    }
}
