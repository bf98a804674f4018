//! The scoring model on a small project whose every number is computed by hand in the test:
//! each KR type, ratios of sums, division by zero, empty windows, revisions, budgets,
//! restatements and the review, on both databases.

use crate::on_both;
use crate::support::*;

const METRICS: &str = r#"
[sessions]
kind = "counter"
[orders]
kind = "counter"
[spend]
kind = "counter"
[conversions]
kind = "counter"
[cpa]
kind = "derived"
formula = "spend / conversions"
[conversion]
kind = "derived"
formula = "orders / sessions"
unit = "%"
"#;

const CONNECTOR: &str = r#"
type = "csv"
path = "data/daily.csv"
[date]
column = "Day"
[dimensions]
channel = "Channel"
[[metrics]]
name = "sessions"
column = "Sessions"
[[metrics]]
name = "orders"
column = "Orders"
[[metrics]]
name = "spend"
column = "Spend"
[[metrics]]
name = "conversions"
column = "Conversions"
"#;

/// Q4 2026 holds the baseline day; Q1 2027 the KR data.
const DATA: &str = "Day,Channel,Sessions,Orders,Spend,Conversions
2026-11-15,web,1000,,,
2027-01-10,web,900,,,
2027-01-05,ads,,,900,1
2027-01-06,ratio,100,10,,
2027-01-07,ratio,900,9,,
2027-01-08,zero,,,50,0
";

const OKRS: &str = r#"
[[objective]]
id = "mixed"
title = "Increase and decrease KRs together"
period = "2027-Q1"
owner = "Team A"

[[objective.key_result]]
id = "below-baseline"
title = "Web sessions +40% over Q4"
metric = "sessions"
where = { channel = "web" }
baseline = "previous_period"
target = "+40%"

[[objective.key_result]]
id = "cpa-half"
title = "CPA from 1000 to 800"
metric = "cpa"
where = { channel = "ads" }
baseline = 1000
target = 800
budget = 1800
spend_metric = "spend"

[[objective.key_result]]
id = "cpa-met"
title = "CPA from 1000 to 900"
metric = "cpa"
where = { channel = "ads" }
baseline = 1000
target = 900
weight = 2

[[objective]]
id = "other"
title = "Every other rule"
period = "2027-Q1"
owner = "Team B"

[[objective.key_result]]
id = "cpa-missed"
title = "CPA from 800 to 700"
metric = "cpa"
where = { channel = "ads" }
baseline = 800
target = 700

[[objective.key_result]]
id = "ratio-of-sums"
title = "Conversion at least 2%"
metric = "conversion"
where = { channel = "ratio" }
target = 0.02
type = "at_least"

[[objective.key_result]]
id = "ratio-band"
title = "Conversion within 1.5-2.5%"
metric = "conversion"
where = { channel = "ratio" }
target = [0.015, 0.025]
type = "within"

[[objective.key_result]]
id = "divide-by-zero"
title = "CPA at most 100 where nothing converted"
metric = "cpa"
where = { channel = "zero" }
target = 100
type = "at_most"

[[objective.key_result]]
id = "empty-window"
title = "Sessions in March"
metric = "sessions"
period = "2027-03"
target = 10
type = "at_least"

[[objective.key_result]]
id = "filter-typo"
title = "Web sessions, the channel misspelled"
metric = "sessions"
where = { channel = "wbe" }
target = 10
type = "at_least"

[[objective.key_result]]
id = "revised"
title = "Web sessions: 2000, revised to 1000 in February"
metric = "sessions"
where = { channel = "web" }
target = 2000
type = "at_least"

[[objective.key_result.revision]]
effective = "2027-02-01"
target = 1000
note = "market shrank"

[[objective.key_result]]
id = "milestone-count"
title = "800 web sessions"
metric = "sessions"
where = { channel = "web" }
target = 800
type = "milestone"

[[objective.key_result]]
id = "milestone-date"
title = "New site live"
type = "milestone"
done = "2027-02-15"
"#;

fn scoring_project() -> tempfile::TempDir {
    project(&[
        ("config/default.toml", "[ingest]\nmax_reject_share = 0.5\n"),
        ("config/metrics.toml", METRICS),
        ("connectors/daily.toml", CONNECTOR),
        ("config/okrs/test.toml", OKRS),
        ("data/daily.csv", DATA),
    ])
}

/// One column of a KR's score row on a day, as a number.
async fn number(db: &TestDb, kr: &str, day: &str, column: &str) -> Option<f64> {
    let rows = db
        .rows(&format!(
            "SELECT CAST({column} AS TEXT) FROM kr_scores WHERE kr_id = '{kr}' AND as_of = '{day}'"
        ))
        .await;
    assert_eq!(rows.len(), 1, "no row for {kr} on {day}");
    rows[0][0].as_ref().map(|v| v.parse().unwrap())
}

async fn text(db: &TestDb, kr: &str, day: &str, column: &str) -> Option<String> {
    let rows = db
        .rows(&format!(
            "SELECT CAST({column} AS TEXT) FROM kr_scores WHERE kr_id = '{kr}' AND as_of = '{day}'"
        ))
        .await;
    rows[0][0].clone()
}

fn near(actual: Option<f64>, expected: f64) -> bool {
    actual.is_some_and(|a| (a - expected).abs() < 1e-9)
}

async fn every_rule_scores_as_computed_by_hand(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = scoring_project();
    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);

    let output = krscore(dir.path(), Some(&db), &["score", "--as-of", "2027-03-31"]);

    expect_code(&output, 0);
    let day = "2027-03-31";
    // value below baseline: (900 - 1000) / (1400 - 1000) = -0.25 -> score 0
    assert!(near(
        number(&db, "below-baseline", day, "baseline").await,
        1000.0
    ));
    assert!(near(
        number(&db, "below-baseline", day, "target").await,
        1400.0
    ));
    assert!(near(number(&db, "below-baseline", day, "raw").await, -0.25));
    assert!(near(number(&db, "below-baseline", day, "score").await, 0.0));
    assert_eq!(
        text(&db, "below-baseline", day, "kr_type").await.as_deref(),
        Some("increase")
    );
    // decrease, CPA = 900 / 1 = 900: met (1000 -> 900) raw 1; half (1000 -> 800) raw 0.5;
    // missed (800 -> 700) raw (900 - 800) / (700 - 800) = -1 -> score 0
    assert!(near(number(&db, "cpa-met", day, "raw").await, 1.0));
    assert!(near(number(&db, "cpa-half", day, "score").await, 0.5));
    assert!(near(number(&db, "cpa-missed", day, "raw").await, -1.0));
    assert!(near(number(&db, "cpa-missed", day, "score").await, 0.0));
    assert_eq!(
        text(&db, "cpa-half", day, "kr_type").await.as_deref(),
        Some("decrease")
    );
    // mixed objective: (1 x 0 + 1 x 0.5 + 2 x 1.0) / 4 = 0.625, never below 0 from a raw < 0
    let mixed = db
        .rows("SELECT CAST(score AS TEXT) FROM objective_scores WHERE objective_id = 'mixed'")
        .await;
    assert!(
        near(mixed[0][0].as_ref().map(|v| v.parse().unwrap()), 0.625),
        "{mixed:?}"
    );
    // ratio of sums: (10 + 9) / (100 + 900) = 0.019, not the mean of daily ratios (0.1 + 0.01)
    // / 2 = 0.055; at_least 0.02: 0.019 / 0.02 = 0.95
    assert!(near(
        number(&db, "ratio-of-sums", day, "value").await,
        0.019
    ));
    assert!(near(number(&db, "ratio-of-sums", day, "score").await, 0.95));
    // within 0.015..0.025: inside, distance 0
    assert!(near(number(&db, "ratio-band", day, "score").await, 1.0));
    assert!(near(number(&db, "ratio-band", day, "distance").await, 0.0));
    assert!(near(
        number(&db, "ratio-band", day, "target_low").await,
        0.015
    ));
    // division by zero: 50 / 0 has no value and says why
    assert_eq!(number(&db, "divide-by-zero", day, "score").await, None);
    let reason = text(&db, "divide-by-zero", day, "reason").await.unwrap();
    assert!(reason.contains("division by zero"), "{reason}");
    // empty window: no data in March, no score, never 0
    assert_eq!(number(&db, "empty-window", day, "score").await, None);
    assert!(
        text(&db, "empty-window", day, "reason")
            .await
            .unwrap()
            .contains("no data")
    );
    // a filter value no point has: the reason names the filter
    let reason = text(&db, "filter-typo", day, "reason").await.unwrap();
    assert!(
        reason.contains(
            "no data for `sessions` in the window where channel = wbe; `krscore preview`"
        ),
        "{reason}"
    );
    // milestones: 900 >= 800 done; the site went live on 2027-02-15
    assert!(near(
        number(&db, "milestone-count", day, "score").await,
        1.0
    ));
    assert!(near(number(&db, "milestone-date", day, "score").await, 1.0));
    // budget on cpa-half: spent 900 of 1800 = 0.5; 900 / (0.5 x 100) = 18 per point
    assert!(near(number(&db, "cpa-half", day, "spend").await, 900.0));
    assert!(near(number(&db, "cpa-half", day, "budget_used").await, 0.5));
    assert!(near(
        number(&db, "cpa-half", day, "cost_per_point").await,
        18.0
    ));
    // provenance: the run that loaded the points, and the definitions' hash
    assert_eq!(
        text(&db, "cpa-half", day, "source_runs").await.as_deref(),
        Some("1")
    );
    assert_eq!(
        text(&db, "cpa-half", day, "definition_hash")
            .await
            .map(|h| h.len()),
        Some(64)
    );
}
on_both!(every_rule_scores_as_computed_by_hand);

async fn a_revised_target_keeps_both_scores(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = scoring_project();
    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);

    expect_code(
        &krscore(dir.path(), Some(&db), &["score", "--as-of", "2027-01-20"]),
        0,
    );
    expect_code(
        &krscore(dir.path(), Some(&db), &["score", "--as-of", "2027-03-31"]),
        0,
    );

    // before the revision: 900 / 2000 = 0.45 against the original, in force
    assert!(near(
        number(&db, "revised", "2027-01-20", "score").await,
        0.45
    ));
    assert!(near(
        number(&db, "revised", "2027-01-20", "target").await,
        2000.0
    ));
    assert_eq!(
        text(&db, "revised", "2027-01-20", "target_effective").await,
        None
    );
    // after it: 900 / 1000 = 0.9 in force, 0.45 against the original 2000
    assert!(near(
        number(&db, "revised", "2027-03-31", "score").await,
        0.9
    ));
    assert!(near(
        number(&db, "revised", "2027-03-31", "score_original").await,
        0.45
    ));
    assert!(near(
        number(&db, "revised", "2027-03-31", "target_original").await,
        2000.0
    ));
    assert_eq!(
        text(&db, "revised", "2027-03-31", "target_effective")
            .await
            .as_deref(),
        Some("2027-02-01")
    );
    // the date milestone was not done on 2027-01-20
    assert!(near(
        number(&db, "milestone-date", "2027-01-20", "score").await,
        0.0
    ));
    // pace on 2027-01-20 for the revised KR: f = 20 / 90, a counter expected at 2000 x f
    assert!(near(
        number(&db, "revised", "2027-01-20", "expected").await,
        2000.0 * 20.0 / 90.0
    ));
}
on_both!(a_revised_target_keeps_both_scores);

async fn a_restated_past_day_is_rescored(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = scoring_project();
    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);
    expect_code(
        &krscore(dir.path(), Some(&db), &["score", "--as-of", "2027-01-20"]),
        0,
    );
    expect_code(
        &krscore(dir.path(), Some(&db), &["score", "--as-of", "2027-03-31"]),
        0,
    );

    // the export is restated: web sessions on 2027-01-10 were 1200, not 900
    let restated = DATA.replace("2027-01-10,web,900", "2027-01-10,web,1200");
    std::fs::write(dir.path().join("data/daily.csv"), restated).unwrap();
    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);

    // both stored as-of days were scored again: (1200 - 1000) / (1400 - 1000) = 0.5
    assert!(near(
        number(&db, "below-baseline", "2027-03-31", "raw").await,
        0.5
    ));
    assert!(near(
        number(&db, "below-baseline", "2027-01-20", "raw").await,
        0.5
    ));
    assert_eq!(
        text(&db, "below-baseline", "2027-03-31", "source_runs")
            .await
            .as_deref(),
        Some("1,2")
    );
}
on_both!(a_restated_past_day_is_rescored);

async fn the_review_zones_and_stores_final_scores(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = scoring_project();
    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);

    let output = krscore(
        dir.path(),
        Some(&db),
        &["review", "2027-Q1", "--as-of", "2027-04-15"],
    );

    let text = expect_code(&output, 0);
    assert!(text.contains("Review of 2027-Q1"), "{text}");
    // Team A: below-baseline 0 (fail), cpa-half 0.5 (commit), cpa-met 1.0 raw 1.0 (target)
    assert!(
        text.contains("Team A: fail 33%, commit 33%, target 33%, stretch 0% (3 KRs)"),
        "{text}"
    );
    let zones = db
        .rows("SELECT kr_id, zone FROM okr_reviews WHERE period = '2027-Q1' ORDER BY kr_id")
        .await;
    let zone_of = |id: &str| {
        zones
            .iter()
            .find(|r| r[0].as_deref() == Some(id))
            .and_then(|r| r[1].clone())
    };
    assert_eq!(zone_of("below-baseline").as_deref(), Some("fail"));
    assert_eq!(zone_of("cpa-half").as_deref(), Some("commit"));
    assert_eq!(
        zone_of("milestone-count").as_deref(),
        Some("stretch"),
        "900 / 800 > 1"
    );
    assert_eq!(zone_of("divide-by-zero"), None, "no score, no zone");
}
on_both!(the_review_zones_and_stores_final_scores);
