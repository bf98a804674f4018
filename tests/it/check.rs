//! `krscore check`: every problem in one run, each with file, line and field.

use crate::support::*;

#[test]
fn check_names_every_problem_with_file_line_and_hint() {
    let dir = copy_example("demo");
    let edit = |path: &str, from: &str, to: &str| {
        let full = dir.path().join(path);
        let text = std::fs::read_to_string(&full).unwrap();
        assert!(text.contains(from), "{path} has no `{from}`");
        std::fs::write(full, text.replacen(from, to, 1)).unwrap();
    };
    edit(
        "config/okrs/digital.toml",
        "metric = \"cpa\"",
        "metric = \"cpaa\"",
    );
    edit("config/okrs/digital.toml", "owner = ", "ownr = ");
    edit(
        "connectors/web_analytics.toml",
        "format = \"%d.%m.%Y\"",
        "format = \"%d.%m\"",
    );
    edit(
        "connectors/crm_leads.toml",
        "[date]",
        "delimter = \",\"\n[date]",
    );

    let output = krscore(dir.path(), None, &["check"]);

    let text = expect_code(&output, 2);
    assert!(
        text.contains("config/okrs/digital.toml:20: objective[0].key_result[1].metric: unknown metric `cpaa` (did you mean `cpa`?)"),
        "{text}"
    );
    assert!(text.contains("config/okrs/digital.toml:7: objective[0].ownr: unknown key `ownr` (did you mean `owner`?)"), "{text}");
    assert!(text.contains("connectors/web_analytics.toml:"), "{text}");
    assert!(text.contains("date.format"), "{text}");
    assert!(
        text.contains("connectors/crm_leads.toml:") && text.contains("delimter"),
        "{text}"
    );
    assert!(text.contains("4 problem(s)"), "{text}");
}

#[test]
fn check_passes_on_the_demo_with_hygiene_advice() {
    let output = krscore(&repo().join("examples/demo"), None, &["check"]);

    let text = expect_code(&output, 0);
    assert!(text.contains("ok: "), "{text}");
    assert!(
        text.contains("3 to 5 keep it focused"),
        "OKR hygiene is reminded: {text}"
    );
}

#[test]
fn unknown_connector_gets_a_hint() {
    let output = krscore(
        &repo().join("examples/demo"),
        None,
        &["preview", "crm_lead"],
    );

    let text = expect_code(&output, 2);
    assert!(text.contains("did you mean `crm_leads`"), "{text}");
}

#[test]
fn every_kr_problem_is_reported_even_when_the_period_is_wrong() {
    let dir = copy_example("demo");
    let path = dir.path().join("config/okrs/digital.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    // the line the id is first written on, which the second use names
    let first_line = text
        .lines()
        .position(|l| l.trim() == "id = \"cpa-down\"")
        .expect("the demo has the KR")
        + 1;
    let twice = format!(
        "key result id `cpa-down` is used twice (first at config/okrs/digital.toml:{first_line})"
    );
    let text = text
        .replacen("period = \"2026-Q4\"", "period = \"2026-Q5\"", 1)
        .replacen("target = \"-15%\"", "target = \"-abc%\"", 1)
        .replacen("metric = \"ctr\"", "metric = \"ctrr\"", 1);
    std::fs::write(&path, text).unwrap();
    std::fs::write(
        dir.path().join("config/okrs/zz_more.toml"),
        "[[objective]]\nid = \"more\"\ntitle = \"More\"\nperiod = \"2026-Q4\"\n\
         [[objective.key_result]]\nid = \"cpa-down\"\ntitle = \"Twice\"\n\
         metric = \"cpa\"\ntarget = 1\n\
         weight = 0\nstart = \"2026-10-01\"\ndays = 100000000\n",
    )
    .unwrap();

    let output = krscore(dir.path(), None, &["check"]);

    let text = expect_code(&output, 2);
    for expected in [
        "period `2026-Q5`",
        "target `-abc%`",
        "unknown metric `ctrr` (did you mean `ctr`?)",
        twice.as_str(),
        "weight must be a positive number",
        "`days` (1 to 3660)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn a_setting_from_the_environment_is_blamed_on_the_variable() {
    let demo = repo().join("examples/demo");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_krscore"))
        .arg("-C")
        .arg(&demo)
        .arg("check")
        .env("KRSCORE__SCORING__TIMEZONE", "Nowhere")
        .env("KRSCORE__LOG__LEVEL", "loud")
        .output()
        .unwrap();

    let text = expect_code(&output, 2);
    assert!(
        text.contains("(environment): KRSCORE__SCORING__TIMEZONE: unknown time zone `Nowhere`"),
        "{text}"
    );
    assert!(text.contains("KRSCORE__LOG__LEVEL"), "{text}");
}

#[test]
fn a_bad_setting_in_a_file_names_its_line() {
    let dir = copy_example("demo");
    std::fs::write(
        dir.path().join("config/default.toml"),
        "[database]\nurl = \"sqlite://krscore.db\"\n\n[scoring]\ntimezone = \"Europe/Mosow\"\n",
    )
    .unwrap();

    let output = krscore(dir.path(), None, &["check"]);

    let text = expect_code(&output, 2);
    assert!(
        text.contains("config/default.toml:5: scoring.timezone"),
        "{text}"
    );
}

/// A relative SQLite file is found in the project; SQLite's own names for a database in
/// memory (`file::memory:`, `:memory:`) stay in memory instead of becoming files.
#[test]
fn sqlite_urls_are_resolved_in_the_project() {
    for (url, memory) in [
        ("sqlite://k.db", false),
        ("sqlite://file::memory:", true),
        ("sqlite://:memory:", true),
        ("sqlite::memory:", true),
    ] {
        let dir = project(&[
            (
                "config/default.toml",
                &format!("[database]\nurl = \"{url}\"\n"),
            ),
            ("config/metrics.toml", "[visits]\nkind = \"counter\"\n"),
        ]);
        let project = krscore::project::Project::load(dir.path()).unwrap();
        let resolved = project.database_url();
        if memory {
            assert_eq!(resolved, "sqlite::memory:", "{url}");
        } else {
            assert_eq!(
                resolved,
                format!("sqlite://{}", dir.path().join("k.db").display())
            );
        }
    }
}
