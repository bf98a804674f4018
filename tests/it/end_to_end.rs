//! The README's path: the demo and the Olist projects scored end to end.

use crate::on_both;
use crate::support::*;

fn close(actual: Option<String>, expected: f64, tolerance: f64) -> bool {
    actual
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(|v| (v - expected).abs() <= tolerance)
}

async fn demo_run_once_scores_every_kr(backend: Backend) {
    let db = TestDb::new(backend).await;
    let demo = repo().join("examples/demo");

    let output = krscore(
        &demo,
        Some(&db),
        &["run", "--once", "--as-of", "2026-12-03"],
    );

    let text = expect_code(&output, 0);
    assert!(text.contains("Launch the brand in Kazakhstan"), "{text}");
    assert!(
        text.contains("██"),
        "the status view draws progress bars: {text}"
    );
    let krs = db.scalar("SELECT count(*) FROM key_results").await;
    let scored = db
        .scalar("SELECT count(*) FROM kr_scores_latest WHERE score IS NOT NULL")
        .await;
    assert_eq!(krs, 14);
    assert_eq!(scored, krs, "every KR has a score row");
    assert_eq!(
        db.scalar("SELECT count(*) FROM objective_scores_latest")
            .await,
        4
    );

    // values computed independently from the raw files (examples/demo/EXPECTED.md)
    let rows = db
        .rows(
            "SELECT kr_id, CAST(value AS TEXT), CAST(baseline AS TEXT), CAST(target AS TEXT), \
             CAST(raw AS TEXT), CAST(score AS TEXT), CAST(as_of AS TEXT) \
             FROM kr_scores_latest ORDER BY kr_id",
        )
        .await;
    let get = |id: &str| {
        rows.iter()
            .find(|r| r[0].as_deref() == Some(id))
            .unwrap()
            .clone()
    };
    // the target was revised to 1 800 on 2026-11-15: 1379 / 1800 = 0.766111
    let kz = get("kz-qualified-leads");
    assert!(
        close(kz[1].clone(), 1379.0, 1e-9) && close(kz[5].clone(), 1379.0 / 1800.0, 1e-9),
        "{kz:?}"
    );
    let cpa = get("cpa-down");
    assert!(close(cpa[1].clone(), 994.13, 0.01), "{cpa:?}");
    assert!(close(cpa[2].clone(), 1123.22, 0.01), "{cpa:?}");
    assert!(close(cpa[3].clone(), 954.73, 0.01), "{cpa:?}");
    assert!(close(cpa[4].clone(), 0.7662, 1e-4), "{cpa:?}");
    let conversion = get("conversion-rate-up");
    assert!(close(conversion[4].clone(), 0.7877, 1e-4), "{conversion:?}");
    let lead_rate = get("kz-lead-rate");
    assert!(
        close(lead_rate[1].clone(), 1379.0 / 19480.0, 1e-9),
        "{lead_rate:?}"
    );
    let awareness = get("kz-aided-awareness");
    assert!(close(awareness[1].clone(), 0.131, 1e-9), "{awareness:?}");
    let organic = get("organic-sessions-up");
    assert!(close(organic[2].clone(), 505609.0, 1e-6), "{organic:?}");
    assert!(
        close(organic[4].clone(), -0.2186, 1e-4),
        "raw below baseline is kept: {organic:?}"
    );
    assert!(
        close(organic[5].clone(), 0.0, 1e-12),
        "score is clamped: {organic:?}"
    );
    let nps = get("nps-first-30-days");
    assert!(close(nps[1].clone(), 42.6056, 1e-4), "{nps:?}");
    assert_eq!(
        nps[6].as_deref(),
        Some("2026-11-30"),
        "as-of clipped to the KR window"
    );

    let objective = db
        .rows("SELECT CAST(score AS TEXT) FROM objective_scores_latest WHERE objective_id = 'kz-launch'")
        .await;
    // (2 x 0.766111 + 0.873333 + 0.884880 + 1 x 1.0) / 5 = 0.858087
    let expected = (2.0 * 1379.0 / 1800.0 + 0.131 / 0.15 + (1379.0 / 19480.0) / 0.08 + 1.0) / 5.0;
    assert!(
        close(objective[0][0].clone(), expected, 1e-6),
        "{objective:?}"
    );
    let original = db
        .rows(
            "SELECT CAST(score_original AS TEXT) FROM kr_scores_latest \
             WHERE kr_id = 'kz-qualified-leads'",
        )
        .await;
    assert!(close(original[0][0].clone(), 0.6895, 1e-9), "{original:?}");
}
on_both!(demo_run_once_scores_every_kr);

async fn olist_reproduces_the_known_facts(backend: Backend) {
    let db = TestDb::new(backend).await;
    let olist = repo().join("examples/olist");

    let output = krscore(
        &olist,
        Some(&db),
        &["run", "--once", "--as-of", "2018-03-31"],
    );

    expect_code(&output, 0);
    let row = db
        .rows(
            "SELECT CAST(value AS TEXT), CAST(baseline AS TEXT), CAST(target AS TEXT), \
             CAST(raw AS TEXT), CAST(score AS TEXT) FROM kr_scores_latest \
             WHERE kr_id = 'organic-leads'",
        )
        .await
        .remove(0);
    assert!(close(row[0].clone(), 1043.0, 0.0), "{row:?}");
    assert!(close(row[1].clone(), 306.0, 0.0), "{row:?}");
    assert!(close(row[2].clone(), 428.4, 1e-9), "{row:?}");
    assert!(close(row[3].clone(), 6.02, 0.01), "{row:?}");
    assert!(close(row[4].clone(), 1.0, 0.0), "{row:?}");
    let leads = db
        .scalar(
            "SELECT CAST(sum(value) AS BIGINT) FROM metric_points WHERE metric = 'leads' \
             AND day >= '2018-01-01' AND day <= '2018-03-31'",
        )
        .await;
    assert_eq!(leads, 3343);
    let deals = db
        .rows("SELECT CAST(value AS TEXT) FROM kr_scores_latest WHERE kr_id = 'deals-won'")
        .await;
    assert!(close(deals[0][0].clone(), 333.0, 0.0), "{deals:?}");
}
on_both!(olist_reproduces_the_known_facts);

async fn sync_twice_changes_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let demo = repo().join("examples/demo");
    let points = "SELECT connector, metric, CAST(day AS TEXT), CAST(dimensions AS TEXT), \
                  CAST(value AS TEXT), CAST(run_id AS TEXT) FROM metric_points \
                  ORDER BY 1, 2, 3, 4";
    let scores = "SELECT kr_id, CAST(as_of AS TEXT), CAST(value AS TEXT), CAST(score AS TEXT), \
                  status FROM kr_scores ORDER BY 1, 2";
    expect_code(&krscore(&demo, Some(&db), &["sync"]), 0);
    expect_code(
        &krscore(&demo, Some(&db), &["score", "--as-of", "2026-12-01"]),
        0,
    );
    let points_before = db.rows(points).await;
    let scores_before = db.rows(scores).await;

    let output = krscore(&demo, Some(&db), &["sync"]);
    expect_code(
        &krscore(&demo, Some(&db), &["score", "--as-of", "2026-12-01"]),
        0,
    );

    let text = expect_code(&output, 0);
    assert!(text.contains("0 point(s) changed, 0 removed"), "{text}");
    assert_eq!(db.rows(points).await, points_before);
    assert_eq!(db.rows(scores).await, scores_before);
    assert_eq!(db.scalar("SELECT count(*) FROM ingest_runs").await, 10);
}
on_both!(sync_twice_changes_nothing);

async fn backfill_writes_a_row_per_day(backend: Backend) {
    let db = TestDb::new(backend).await;
    let demo = repo().join("examples/demo");
    expect_code(&krscore(&demo, Some(&db), &["sync", "crm_leads"]), 0);

    let output = krscore(
        &demo,
        Some(&db),
        &["score", "--from", "2026-11-01", "--to", "2026-11-07"],
    );

    expect_code(&output, 0);
    let days = db
        .scalar("SELECT count(DISTINCT as_of) FROM kr_scores WHERE kr_id = 'kz-qualified-leads'")
        .await;
    assert_eq!(days, 7);
    let growing = db
        .rows(
            "SELECT CAST(value AS TEXT) FROM kr_scores WHERE kr_id = 'kz-qualified-leads' \
             ORDER BY as_of",
        )
        .await;
    let values: Vec<f64> = growing
        .iter()
        .map(|r| r[0].as_ref().unwrap().parse().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "a counter only grows: {values:?}"
    );
    let unscored = db
        .rows("SELECT reason FROM kr_scores WHERE kr_id = 'cpa-down' AND as_of = '2026-11-07'")
        .await;
    assert!(
        unscored[0][0]
            .as_deref()
            .unwrap_or_default()
            .contains("no data"),
        "a KR without data has no score and says why: {unscored:?}"
    );
}
on_both!(backfill_writes_a_row_per_day);

#[test]
fn status_before_any_score_says_what_to_do() {
    let demo = repo().join("examples/demo");

    let output = krscore(&demo, None, &["status"]);

    let text = expect_code(&output, 0);
    assert!(text.contains("No scores yet"), "{text}");
}

async fn status_as_of_a_day_between_scores_shows_the_scores_before_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let demo = repo().join("examples/demo");
    expect_code(&krscore(&demo, Some(&db), &["sync", "crm_leads"]), 0);
    expect_code(
        &krscore(&demo, Some(&db), &["score", "--as-of", "2026-11-10"]),
        0,
    );

    let output = krscore(&demo, Some(&db), &["status", "--as-of", "2026-11-15"]);

    let text = expect_code(&output, 0);
    assert!(!text.contains("No scores yet"), "{text}");
    assert!(text.contains("2026-11-10"), "{text}");
}
on_both!(status_as_of_a_day_between_scores_shows_the_scores_before_it);
