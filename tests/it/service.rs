//! `krscore run` as ops meet it: the real binary on second-level schedules, scraped over
//! HTTP, stopped with signals, and run as several replicas on one PostgreSQL.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::mock::{Mock, Reply};
use crate::support::*;

const METRICS: &str = "[leads]\nkind = \"counter\"\n";

fn connector(schedule: &str) -> String {
    format!(
        "type = \"csv\"\npath = \"data/leads.csv\"\nschedule = \"{schedule}\"\n\
         [date]\ncolumn = \"Day\"\n\
         [dimensions]\nchannel = \"Channel\"\n[[metrics]]\nname = \"leads\"\ncolumn = \"Leads\"\n"
    )
}

/// A lead export of `rows` rows (a few thousand rows a second in a debug build).
fn leads_csv(rows: usize) -> String {
    let mut out = String::from("Day,Channel,Leads\n");
    for i in 0..rows {
        out.push_str(&format!(
            "2026-{:02}-{:02},c{},{}\n",
            1 + (i / 28) % 12,
            1 + i % 28,
            i % 7,
            i % 5
        ));
    }
    out
}

fn service_project(schedule: &str, rows: usize) -> tempfile::TempDir {
    project(&[
        ("config/default.toml", "[scoring]\nschedule = \"\"\n"),
        ("config/metrics.toml", METRICS),
        ("connectors/leads.toml", &connector(schedule)),
        ("data/leads.csv", &leads_csv(rows)),
    ])
}

/// A project whose connector's source answers only after `seconds`: a run that lasts as long
/// as a test needs, on any machine (an HTTP source on 127.0.0.1).
fn slow_project(schedule: &str, seconds: f64) -> (tempfile::TempDir, Mock) {
    let mock = Mock::start(move |_, _| {
        Reply::json(r#"[{"Day": "2026-01-01", "Channel": "c1", "Leads": 3}]"#)
            .after(Duration::from_secs_f64(seconds))
    });
    let connector = format!(
        "type = \"http\"\nurl = \"{}/leads\"\nschedule = \"{schedule}\"\n\
         [request]\ntimeout_secs = 120\n\
         [date]\ncolumn = \"Day\"\n\
         [dimensions]\nchannel = \"Channel\"\n[[metrics]]\nname = \"leads\"\ncolumn = \"Leads\"\n",
        mock.url
    );
    let dir = project(&[
        ("config/default.toml", "[scoring]\nschedule = \"\"\n"),
        ("config/metrics.toml", METRICS),
        ("connectors/leads.toml", &connector),
    ]);
    (dir, mock)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &Path, db: &TestDb, port: u16, env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_krscore"));
    command
        .arg("-C")
        .arg(dir)
        .arg("run")
        .env("KRSCORE__DATABASE__URL", &db.url)
        .env("KRSCORE__SERVICE__LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        // a file, not a pipe nobody reads: a full pipe would stall the service's logging
        .stderr(std::fs::File::create(dir.join(format!("service-{port}.log"))).unwrap());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("start krscore run")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status();
    assert!(status.unwrap().success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    None
}

/// A plain HTTP GET on 127.0.0.1, tried for a few seconds while the listener starts.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    for _ in 0..50 {
        if let Some(answer) = get_once(port, path) {
            return Some(answer);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

fn get_once(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

async fn wait_for(db: &TestDb, sql: &str, at_least: i64, limit: Duration) -> i64 {
    let deadline = Instant::now() + limit;
    loop {
        let n = db.scalar(sql).await;
        if n >= at_least || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_service_runs_on_schedule_reports_metrics_and_stops_on_sigterm() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = service_project("*/2 * * * * *", 20);
    let port = free_port();
    let mut child = start(dir.path(), &db, port, &[]);

    let runs = wait_for(
        &db,
        "SELECT count(*) FROM ingest_runs WHERE status = 'succeeded'",
        3,
        Duration::from_secs(30),
    )
    .await;
    let health = get(port, "/healthz");
    let ready = get(port, "/readyz");
    let (status, body) = get(port, "/metrics").expect("metrics answer");
    signal(&child, "TERM");
    let code = wait_exit(&mut child, Duration::from_secs(20));

    assert!(runs >= 3, "the catch-up run and two ticks: {runs}");
    assert_eq!(health.map(|h| h.0), Some(200));
    assert_eq!(ready.map(|r| r.0), Some(200));
    assert_eq!(status, 200);
    assert_eq!(code, Some(0), "a clean exit on SIGTERM");
    // a real Prometheus text-format parser reads it, and the counters match ingest_runs
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    let counter = |name: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let scraped_runs = counter("krscore_runs_total");
    let stored_at_scrape = scraped_runs as i64;
    assert!(stored_at_scrape >= 3, "{body}");
    let stored = db
        .scalar("SELECT count(*) FROM ingest_runs WHERE status = 'succeeded'")
        .await;
    assert!(
        stored >= stored_at_scrape,
        "metrics never count more runs than were stored"
    );
    let rows_read = db
        .scalar(&format!(
            "SELECT CAST(sum(rows_read) AS BIGINT) FROM (SELECT rows_read FROM ingest_runs \
             WHERE status = 'succeeded' ORDER BY id LIMIT {stored_at_scrape}) AS t"
        ))
        .await;
    assert_eq!(counter("krscore_rows_read_total") as i64, rows_read);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "krscore_last_success_timestamp_seconds")
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM ingest_runs WHERE status = 'running'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_second_service_on_the_same_sqlite_file_refuses_to_start() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = service_project("0 3 * * *", 5);
    let mut first = start(dir.path(), &db, free_port(), &[]);
    wait_for(
        &db,
        "SELECT count(*) FROM ingest_runs",
        1,
        Duration::from_secs(20),
    )
    .await;

    let second = Command::new(env!("CARGO_BIN_EXE_krscore"))
        .arg("-C")
        .arg(dir.path())
        .arg("run")
        .env("KRSCORE__DATABASE__URL", &db.url)
        .env("KRSCORE__SERVICE__LISTEN", "")
        .output()
        .unwrap();
    signal(&first, "TERM");
    wait_exit(&mut first, Duration::from_secs(20));

    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another `krscore run` already serves")
    );
}

#[tokio::test]
async fn missed_runs_are_caught_up_once_and_overlapping_ticks_are_skipped() {
    let db = TestDb::new(Backend::Sqlite).await;
    // a daily schedule never due during the test: only the catch-up runs, once
    let daily = service_project("0 3 * * *", 5);
    let port = free_port();
    let mut child = start(daily.path(), &db, port, &[]);
    wait_for(
        &db,
        "SELECT count(*) FROM ingest_runs WHERE status = 'succeeded'",
        1,
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&child, "TERM");
    wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(
        db.scalar("SELECT count(*) FROM ingest_runs").await,
        1,
        "one catch-up, not one per missed tick"
    );

    // started again right away: the last success is after the previous tick, nothing to catch up
    let mut again = start(daily.path(), &db, port, &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&again, "TERM");
    wait_exit(&mut again, Duration::from_secs(20));
    assert_eq!(db.scalar("SELECT count(*) FROM ingest_runs").await, 1);

    // a run slower than its one-second schedule: the ticks that arrive meanwhile are skipped
    let slow_db = TestDb::new(Backend::Sqlite).await;
    let (slow, _source) = slow_project("* * * * * *", 2.5);
    let slow_port = free_port();
    let mut child = start(slow.path(), &slow_db, slow_port, &[]);
    wait_for(
        &slow_db,
        "SELECT count(*) FROM ingest_runs WHERE status = 'succeeded'",
        2,
        Duration::from_secs(60),
    )
    .await;
    let (_, body) = get(slow_port, "/metrics").unwrap_or_else(|| {
        let log = std::fs::read_to_string(slow.path().join(format!("service-{slow_port}.log")));
        panic!("no metrics; service log:\n{}", log.unwrap_or_default())
    });
    signal(&child, "TERM");
    wait_exit(&mut child, Duration::from_secs(60));
    let skipped: f64 = body
        .lines()
        .filter(|l| l.starts_with("krscore_skipped_ticks_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(skipped >= 1.0, "skipped ticks are counted: {body}");
    let overlapping = slow_db
        .scalar(
            "SELECT count(*) FROM ingest_runs a JOIN ingest_runs b ON a.id < b.id \
             AND b.started_at < a.finished_at",
        )
        .await;
    assert_eq!(
        overlapping, 0,
        "a connector never runs twice at the same time"
    );
}

#[tokio::test]
async fn sigterm_mid_run_leaves_a_committed_run_or_no_trace() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (dir, _source) = slow_project("0 3 * * *", 3.0);
    let mut child = start(
        dir.path(),
        &db,
        free_port(),
        &[("KRSCORE__SERVICE__SHUTDOWN_GRACE_SECS", "0")],
    );
    wait_for(
        &db,
        "SELECT count(*) FROM ingest_runs WHERE status = 'running'",
        1,
        Duration::from_secs(20),
    )
    .await;

    signal(&child, "TERM");
    let stopping = Instant::now();
    let code = wait_exit(&mut child, Duration::from_secs(30));

    assert_eq!(code, Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the read stops soon after the grace period"
    );
    let runs = db.rows("SELECT status FROM ingest_runs").await;
    let points = db.scalar("SELECT count(*) FROM metric_points").await;
    match runs.as_slice() {
        [] => assert_eq!(points, 0, "no run, no points"),
        [status] => {
            assert_eq!(status[0].as_deref(), Some("succeeded"));
            assert!(points > 0);
        }
        more => panic!("unexpected runs: {more:?}"),
    }
}

#[tokio::test]
async fn three_replicas_run_every_tick_exactly_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = service_project("*/2 * * * * *", 20);
    let mut replicas: Vec<Child> = (0..3)
        .map(|i| {
            let id = format!("replica-{i}");
            start(
                dir.path(),
                &db,
                free_port(),
                &[("KRSCORE__SERVICE__REPLICA_ID", id.as_str())],
            )
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(9)).await;
    for replica in &replicas {
        signal(replica, "TERM");
    }
    for replica in &mut replicas {
        assert_eq!(wait_exit(replica, Duration::from_secs(30)), Some(0));
    }

    let per_tick = db
        .rows(
            "SELECT CAST(due_at AS TEXT), CAST(count(*) AS TEXT) FROM ingest_runs GROUP BY due_at",
        )
        .await;
    assert!(per_tick.len() >= 3, "several ticks ran: {per_tick:?}");
    for row in &per_tick {
        assert_eq!(
            row[1].as_deref(),
            Some("1"),
            "tick {:?} ran more than once",
            row[0]
        );
    }
    let by_replica: BTreeMap<String, i64> = db
        .rows("SELECT replica, CAST(count(*) AS TEXT) FROM ingest_runs GROUP BY replica")
        .await
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].as_ref().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert!(
        by_replica.keys().all(|r| r.starts_with("replica-")),
        "{by_replica:?}"
    );
}

#[tokio::test]
async fn a_killed_replicas_run_is_finished_by_a_survivor() {
    let db = TestDb::new(Backend::Postgres).await;
    let (dir, _source) = slow_project("0 3 * * *", 2.0);
    let lease = [("KRSCORE__SERVICE__LEASE_SECS", "3")];
    let mut first = start(
        dir.path(),
        &db,
        free_port(),
        &[lease[0], ("KRSCORE__SERVICE__REPLICA_ID", "doomed")],
    );
    wait_for(
        &db,
        "SELECT count(*) FROM ingest_runs WHERE status = 'running'",
        1,
        Duration::from_secs(20),
    )
    .await;
    let mut survivor = start(
        dir.path(),
        &db,
        free_port(),
        &[lease[0], ("KRSCORE__SERVICE__REPLICA_ID", "survivor")],
    );

    signal(&first, "KILL");
    let _ = first.wait();
    let done = wait_for(
        &db,
        "SELECT count(*) FROM ingest_runs WHERE status = 'succeeded' AND replica = 'survivor'",
        1,
        Duration::from_secs(60),
    )
    .await;
    signal(&survivor, "TERM");
    wait_exit(&mut survivor, Duration::from_secs(30));

    assert_eq!(
        done, 1,
        "the survivor completed the run after the lease expired"
    );
    let succeeded = db
        .scalar("SELECT count(*) FROM ingest_runs WHERE status = 'succeeded'")
        .await;
    assert_eq!(succeeded, 1, "the tick ran to completion exactly once");
}

#[tokio::test]
async fn a_run_past_its_timeout_is_cancelled_and_recorded_as_failed() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (dir, _source) = slow_project("0 3 * * *", 10.0);
    let port = free_port();
    let mut child = start(
        dir.path(),
        &db,
        port,
        &[("KRSCORE__SERVICE__RUN_TIMEOUT_SECS", "1")],
    );

    let failed = wait_for(
        &db,
        "SELECT count(*) FROM ingest_runs WHERE status = 'failed'",
        1,
        Duration::from_secs(30),
    )
    .await;
    let (_, body) = get(port, "/metrics").unwrap();
    signal(&child, "TERM");
    let code = wait_exit(&mut child, Duration::from_secs(20));

    assert_eq!(failed, 1);
    let error = db.rows("SELECT error FROM ingest_runs").await;
    assert!(
        error[0][0]
            .as_deref()
            .unwrap_or_default()
            .contains("cancelled"),
        "{error:?}"
    );
    assert!(
        body.contains("krscore_runs_total{connector=\"leads\",outcome=\"failed\"} 1"),
        "{body}"
    );
    assert_eq!(code, Some(0));
    assert_eq!(db.scalar("SELECT count(*) FROM metric_points").await, 0);
}

#[tokio::test]
async fn a_manual_sync_of_a_connector_the_service_is_running_reports_it_busy() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (dir, _source) = slow_project("0 3 * * *", 4.0);
    let mut child = start(dir.path(), &db, free_port(), &[]);
    wait_for(
        &db,
        "SELECT count(*) FROM ingest_runs WHERE status = 'running'",
        1,
        Duration::from_secs(20),
    )
    .await;

    let manual = krscore(dir.path(), Some(&db), &["sync", "leads"]);
    let finished = wait_for(
        &db,
        "SELECT count(*) FROM ingest_runs WHERE status = 'succeeded'",
        1,
        Duration::from_secs(120),
    )
    .await;
    signal(&child, "TERM");
    wait_exit(&mut child, Duration::from_secs(30));

    let text = expect_code(&manual, 1);
    assert!(
        text.contains("is being run right now by another krscore"),
        "{text}"
    );
    assert_eq!(finished, 1, "the service's run was not disturbed");
    assert_eq!(db.scalar("SELECT count(*) FROM ingest_runs").await, 1);
}
