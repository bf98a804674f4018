//! The store's point reads and writes on every way a database can be opened: a SQLite file
//! (read over a connection of its own), SQLite in memory (through sqlx) and PostgreSQL.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use krscore::connector::Point;
use krscore::store::{RunRecord, Store};

use crate::on_both;
use crate::support::*;

fn day(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

fn point(
    metric: &str,
    from: &str,
    until: &str,
    dims: &Arc<BTreeMap<String, String>>,
    value: f64,
) -> Point {
    Point {
        metric: metric.into(),
        day: day(from),
        until: day(until),
        dimensions: dims.clone(),
        value,
    }
}

fn dims(pairs: &[(&str, &str)]) -> Arc<BTreeMap<String, String>> {
    Arc::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Writes daily points over ten days, two period values and another metric, then reads a
/// range: the days inside it, the period that overlaps it and nothing else, in day,
/// connector and dimension order, with dimension sets shared between points.
async fn reads_the_days_and_overlapping_periods(store: &Store) {
    let (x, y) = (dims(&[("region", "x")]), dims(&[("region", "y")]));
    let monthly = dims(&[("region", "x"), ("report", "monthly")]);
    let mut points = Vec::new();
    for d in 1..=10 {
        let date = format!("2026-01-{d:02}");
        points.push(point("sessions", &date, &date, &y, d as f64));
        points.push(point("sessions", &date, &date, &x, 100.0 + d as f64));
        points.push(point("orders", &date, &date, &x, 1.0));
    }
    // a month that overlaps the range, one that ends before it, one that starts after it
    points.push(point("sessions", "2025-12-20", "2026-01-06", &monthly, 7.5));
    points.push(point("sessions", "2025-11-01", "2025-11-30", &monthly, 9.0));
    points.push(point("sessions", "2026-01-09", "2026-01-31", &monthly, 3.0));
    let mut days: Vec<NaiveDate> = points.iter().map(|p| p.day).collect();
    days.sort();
    days.dedup();
    let run = store.start_ingest_run("web", "manual").await.unwrap();
    store
        .commit_ingest_run(
            run,
            "web",
            points.clone(),
            &days,
            &[],
            &RunRecord::default(),
        )
        .await
        .unwrap();
    // the same days from a second connector sort after the first within a day
    let run = store.start_ingest_run("app", "manual").await.unwrap();
    let app = [point("sessions", "2026-01-05", "2026-01-05", &x, 0.5)];
    store
        .commit_ingest_run(
            run,
            "app",
            app.to_vec(),
            &[day("2026-01-05")],
            &[],
            &RunRecord::default(),
        )
        .await
        .unwrap();

    let loaded = store
        .load_points(
            &["sessions".to_string()],
            day("2026-01-05"),
            day("2026-01-07"),
        )
        .await
        .unwrap();
    let seen: Vec<(String, String, String, f64)> = loaded
        .iter()
        .map(|p| {
            let region = p.dimensions.get("region").cloned().unwrap_or_default();
            (p.day.to_string(), p.period_end.to_string(), region, p.value)
        })
        .collect();
    let expected = [
        ("2025-12-20", "2026-01-06", "x", 7.5),
        ("2026-01-05", "2026-01-05", "x", 0.5),
        ("2026-01-05", "2026-01-05", "x", 105.0),
        ("2026-01-05", "2026-01-05", "y", 5.0),
        ("2026-01-06", "2026-01-06", "x", 106.0),
        ("2026-01-06", "2026-01-06", "y", 6.0),
        ("2026-01-07", "2026-01-07", "x", 107.0),
        ("2026-01-07", "2026-01-07", "y", 7.0),
    ];
    let expected: Vec<(String, String, String, f64)> = expected
        .iter()
        .map(|(d, e, r, v)| (d.to_string(), e.to_string(), r.to_string(), *v))
        .collect();
    assert_eq!(seen, expected);
    assert!(loaded.iter().all(|p| &*p.metric == "sessions"));
    let first_x = loaded.iter().find(|p| *p.dimensions == *x).unwrap();
    let shared = loaded
        .iter()
        .filter(|p| Arc::ptr_eq(&p.dimensions, &first_x.dimensions))
        .count();
    assert_eq!(
        shared, 4,
        "points of one dimension set share one parsed map"
    );

    // a re-sync without the second region deletes its points on the covered days only
    let run = store.start_ingest_run("web", "manual").await.unwrap();
    let again: Vec<Point> = points
        .iter()
        .filter(|p| p.dimensions.get("region").unwrap() == "x" || p.day > day("2026-01-06"))
        .cloned()
        .collect();
    let covered: Vec<NaiveDate> = (1..=6).map(|d| day(&format!("2026-01-{d:02}"))).collect();
    let stats = store
        .commit_ingest_run(run, "web", again, &covered, &[], &RunRecord::default())
        .await
        .unwrap();
    assert_eq!(stats.deleted, 6, "the y points of January 1-6");
    let left = store
        .load_points(
            &["sessions".to_string()],
            day("2026-01-01"),
            day("2026-01-10"),
        )
        .await
        .unwrap();
    let y_days: Vec<String> = left
        .iter()
        .filter(|p| p.dimensions.get("region").unwrap() == "y")
        .map(|p| p.day.to_string())
        .collect();
    assert_eq!(
        y_days,
        ["2026-01-07", "2026-01-08", "2026-01-09", "2026-01-10"]
    );
}

async fn points_round_trip(backend: Backend) {
    let db = TestDb::new(backend).await;
    reads_the_days_and_overlapping_periods(&db.store().await).await;
}
on_both!(points_round_trip);

#[tokio::test]
async fn points_round_trip_in_memory() {
    let store = Store::connect("sqlite::memory:", 1).await.unwrap();
    reads_the_days_and_overlapping_periods(&store).await;
}

/// A run covering days the connector has points on and days it has none: the first are
/// compared (unchanged, changed, stale), the others inserted as they are, with the run and
/// its flags; another connector's points on the same days stay.
async fn writes_stored_and_new_days(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let (x, y) = (dims(&[("region", "x")]), dims(&[("region", "y")]));
    let mut first = Vec::new();
    for d in 1..=3 {
        let date = format!("2026-01-{d:02}");
        first.push(point("sessions", &date, &date, &x, d as f64));
        first.push(point("sessions", &date, &date, &y, 10.0 * d as f64));
    }
    let days = |from: u32, to: u32| -> Vec<NaiveDate> {
        (from..=to)
            .map(|d| day(&format!("2026-01-{d:02}")))
            .collect()
    };
    let run = store.start_ingest_run("web", "manual").await.unwrap();
    let stats = store
        .commit_ingest_run(run, "web", first, &days(1, 3), &[], &RunRecord::default())
        .await
        .unwrap();
    assert_eq!((stats.written, stats.deleted), (6, 0));
    assert_eq!(stats.first_changed, Some(day("2026-01-01")));
    let run = store.start_ingest_run("app", "manual").await.unwrap();
    let app = [point("sessions", "2026-01-04", "2026-01-04", &x, 0.5)];
    store
        .commit_ingest_run(
            run,
            "app",
            app.to_vec(),
            &days(4, 4),
            &[],
            &RunRecord::default(),
        )
        .await
        .unwrap();

    // days 2-3 are stored (x unchanged on the 2nd, changed on the 3rd, y gone), 4-5 are new
    let second = [
        point("sessions", "2026-01-02", "2026-01-02", &x, 2.0),
        point("sessions", "2026-01-03", "2026-01-03", &x, 33.0),
        point("sessions", "2026-01-04", "2026-01-04", &x, 4.0),
        point("sessions", "2026-01-04", "2026-01-04", &y, 40.0),
        point("sessions", "2026-01-05", "2026-01-05", &x, 5.0),
    ];
    let run = store.start_ingest_run("web", "manual").await.unwrap();
    let stats = store
        .commit_ingest_run(
            run,
            "web",
            second.to_vec(),
            &days(2, 5),
            &[],
            &RunRecord::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        (stats.written, stats.deleted),
        (4, 2),
        "one changed and three new points written, y of the 2nd and 3rd deleted"
    );
    assert_eq!(
        stats.first_changed,
        Some(day("2026-01-02")),
        "the y point deleted on the 2nd is the earliest change"
    );
    // flags reach the points of new days too
    let flagged = RunRecord {
        flags: Some("sampled".to_string()),
        ..RunRecord::default()
    };
    let sixth = [point("sessions", "2026-01-06", "2026-01-06", &x, 6.0)];
    let last_run = store.start_ingest_run("web", "manual").await.unwrap();
    let stats = store
        .commit_ingest_run(last_run, "web", sixth.to_vec(), &days(6, 6), &[], &flagged)
        .await
        .unwrap();
    assert_eq!(stats.first_changed, Some(day("2026-01-06")));
    // the same again changes nothing, so nothing needs scoring again
    let again = store.start_ingest_run("web", "manual").await.unwrap();
    let stats = store
        .commit_ingest_run(again, "web", sixth.to_vec(), &days(6, 6), &[], &flagged)
        .await
        .unwrap();
    assert_eq!(
        (stats.written, stats.deleted, stats.first_changed),
        (0, 0, None)
    );

    let loaded = store
        .load_points(
            &["sessions".to_string()],
            day("2026-01-01"),
            day("2026-01-06"),
        )
        .await
        .unwrap();
    let seen: Vec<(u32, String, f64, bool)> = loaded
        .iter()
        .map(|p| {
            let region = p.dimensions.get("region").cloned().unwrap_or_default();
            (p.day.day0() + 1, region, p.value, p.run_id == run)
        })
        .collect();
    let expected = [
        (1, "x", 1.0, false),
        (1, "y", 10.0, false),
        (2, "x", 2.0, false),
        (3, "x", 33.0, true),
        (4, "x", 0.5, false),
        (4, "x", 4.0, true),
        (4, "y", 40.0, true),
        (5, "x", 5.0, true),
        (6, "x", 6.0, false),
    ];
    let expected: Vec<(u32, String, f64, bool)> = expected
        .iter()
        .map(|(d, r, v, by_run)| (*d, r.to_string(), *v, *by_run))
        .collect();
    assert_eq!(seen, expected);
    let sixth = loaded.last().unwrap();
    assert_eq!(
        (sixth.run_id, sixth.flags.as_deref()),
        (last_run, Some("sampled"))
    );
    assert!(loaded[..8].iter().all(|p| p.flags.is_none()));
}
on_both!(writes_stored_and_new_days);

/// A re-sync of days already stored compares each point with the stored one: a changed
/// period end or flags is a write, a metric the run no longer has loses its points on the
/// covered days, another connector's points on the same metric and days stay, and a few
/// hundred points (several insert batches) come back as written.
async fn a_resync_writes_only_what_differs(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = db.store().await;
    let sets: Vec<_> = (0..150)
        .map(|i| dims(&[("campaign", &format!("c{i:03}"))]))
        .collect();
    let days: Vec<NaiveDate> = (1..=3).map(|d| day(&format!("2026-02-{d:02}"))).collect();
    let mut first = Vec::new();
    for date in ["2026-02-01", "2026-02-02", "2026-02-03"] {
        for (i, set) in sets.iter().enumerate() {
            first.push(point("clicks", date, date, set, i as f64));
        }
        first.push(point("spend", date, date, &sets[0], 9.5));
    }
    let run = store.start_ingest_run("ads", "manual").await.unwrap();
    let stats = store
        .commit_ingest_run(run, "ads", first.clone(), &days, &[], &RunRecord::default())
        .await
        .unwrap();
    assert_eq!((stats.written, stats.deleted), (453, 0));
    let run = store.start_ingest_run("crm", "manual").await.unwrap();
    let crm = [point(
        "clicks",
        "2026-02-02",
        "2026-02-02",
        &sets[7],
        1000.0,
    )];
    store
        .commit_ingest_run(
            run,
            "crm",
            crm.to_vec(),
            &days[1..2],
            &[],
            &RunRecord::default(),
        )
        .await
        .unwrap();

    // unchanged: nothing written
    let run = store.start_ingest_run("ads", "manual").await.unwrap();
    let stats = store
        .commit_ingest_run(run, "ads", first.clone(), &days, &[], &RunRecord::default())
        .await
        .unwrap();
    assert_eq!(
        (stats.written, stats.deleted, stats.first_changed),
        (0, 0, None)
    );

    // spend is gone from the export; on the 2nd one value changes and one point becomes a
    // period; on the 3rd every point is flagged
    let mut second: Vec<Point> = first
        .iter()
        .filter(|p| &*p.metric == "clicks")
        .cloned()
        .collect();
    second[150 + 3].value = 3.25;
    second[150 + 4].until = day("2026-02-03");
    let run = store.start_ingest_run("ads", "manual").await.unwrap();
    let stats = store
        .commit_ingest_run(
            run,
            "ads",
            second[..300].to_vec(),
            &days[..2],
            &[],
            &RunRecord::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        (stats.written, stats.deleted, stats.first_changed),
        (2, 2, Some(day("2026-02-01"))),
        "two clicks points changed; spend of the 1st and 2nd deleted, of the 3rd kept"
    );
    let flagged = RunRecord {
        flags: Some("sampled".to_string()),
        ..RunRecord::default()
    };
    let run = store.start_ingest_run("ads", "manual").await.unwrap();
    let stats = store
        .commit_ingest_run(
            run,
            "ads",
            second[300..].to_vec(),
            &days[2..],
            &[],
            &flagged,
        )
        .await
        .unwrap();
    assert_eq!(
        (stats.written, stats.deleted),
        (150, 1),
        "flags changed; spend of the 3rd gone"
    );

    let loaded = store
        .load_points(
            &["clicks".to_string(), "spend".to_string()],
            day("2026-02-01"),
            day("2026-02-03"),
        )
        .await
        .unwrap();
    assert_eq!(loaded.len(), 451, "450 clicks points of ads and one of crm");
    assert!(loaded.iter().all(|p| &*p.metric == "clicks"));
    let on = |date: &str, campaign: &str| {
        loaded
            .iter()
            .filter(|p| p.day == day(date) && p.dimensions.get("campaign").unwrap() == campaign)
            .map(|p| (p.value, p.period_end, p.flags.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(on("2026-02-02", "c003"), [(3.25, day("2026-02-02"), None)]);
    assert_eq!(on("2026-02-02", "c004"), [(4.0, day("2026-02-03"), None)]);
    assert_eq!(
        on("2026-02-02", "c007"),
        [
            (7.0, day("2026-02-02"), None),
            (1000.0, day("2026-02-02"), None)
        ],
        "the other connector's point stays"
    );
    assert_eq!(
        on("2026-02-03", "c149"),
        [(149.0, day("2026-02-03"), Some("sampled".to_string()))]
    );
}
on_both!(a_resync_writes_only_what_differs);

/// A database written before points were keyed by metric and then by dimension set keeps
/// its points through both migrations, each point numbered with its own set, and a sync
/// afterwards adds to the same sets.
async fn old_points_survive_the_rekeying_migrations(backend: Backend) {
    let db = TestDb::new(backend).await;
    let old = tempfile::tempdir().unwrap();
    let dir = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    for name in ["0001_initial.sql", "0002_point_flags.sql"] {
        std::fs::copy(
            repo().join("migrations").join(dir).join(name),
            old.path().join(name),
        )
        .unwrap();
    }
    let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
    // the schema as migrations 1 and 2 left it, with one run and three points
    let rows = "INSERT INTO ingest_runs (connector, trigger, started_at, status) \
         VALUES ('web', 'manual', '2026-01-01T00:00:00Z', 'succeeded'); \
         INSERT INTO metric_points (connector, metric, day, period_end, dimensions, value, \
             run_id) \
         VALUES ('web', 'sessions', '2026-01-02', '2026-01-02', '{\"region\":\"x\"}', 4.0, 1), \
                ('web', 'sessions', '2026-01-01', '2026-01-01', '{}', 2.5, 1), \
                ('web', 'orders', '2026-01-01', '2026-01-01', '{\"region\":\"x\"}', 1.0, 1);";
    match backend {
        Backend::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url)
                .unwrap()
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            migrator.run(&pool).await.unwrap();
            sqlx::raw_sql(rows).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            sqlx::raw_sql(rows).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    let store = db.store().await;
    let loaded = store
        .load_points(
            &["sessions".to_string()],
            day("2026-01-01"),
            day("2026-01-31"),
        )
        .await
        .unwrap();
    let values: Vec<(String, f64)> = loaded
        .iter()
        .map(|p| (p.day.to_string(), p.value))
        .collect();
    assert_eq!(
        values,
        [
            ("2026-01-01".to_string(), 2.5),
            ("2026-01-02".to_string(), 4.0)
        ]
    );
    assert_eq!(db.scalar("SELECT count(*) FROM dimension_sets").await, 2);
    let matching = "SELECT count(*) FROM metric_points p \
        JOIN dimension_sets s ON s.id = p.dimension_set WHERE s.dimensions = p.dimensions";
    assert_eq!(
        db.scalar(matching).await,
        3,
        "every point has its own set's number"
    );

    // a sync after the migration finds the stored sets and adds the new one
    let run = store.start_ingest_run("web", "manual").await.unwrap();
    let points = [
        point(
            "sessions",
            "2026-01-02",
            "2026-01-02",
            &dims(&[("region", "x")]),
            5.0,
        ),
        point(
            "sessions",
            "2026-01-03",
            "2026-01-03",
            &dims(&[("region", "y")]),
            6.0,
        ),
    ];
    let covered = [day("2026-01-02"), day("2026-01-03")];
    let stats = store
        .commit_ingest_run(
            run,
            "web",
            points.to_vec(),
            &covered,
            &[],
            &RunRecord::default(),
        )
        .await
        .unwrap();
    assert_eq!((stats.written, stats.deleted), (2, 0));
    assert_eq!(db.scalar("SELECT count(*) FROM dimension_sets").await, 3);
    assert_eq!(db.scalar("SELECT count(*) FROM metric_points").await, 4);
}
on_both!(old_points_survive_the_rekeying_migrations);
