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
fn bad_settings_and_env_are_reported() {
    let dir = copy_example("demo");
    std::fs::write(
        dir.path().join("config/default.toml"),
        "[database]\nurl = \"sqlite://krscore.db\"\n[scoring]\ntimezone = \"Europe/Mosow\"\n",
    )
    .unwrap();

    let output = krscore(dir.path(), None, &["check"]);

    let text = expect_code(&output, 2);
    assert!(text.contains("scoring.timezone"), "{text}");
    assert!(text.contains("Europe/Mosow"), "{text}");
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
