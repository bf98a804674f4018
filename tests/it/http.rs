//! HTTP sources against scripted servers on 127.0.0.1: the presets on answers shaped like
//! ../shared/data/quirks, every kind of paging, retries, timeouts, asynchronous reports,
//! incremental windows and secrets, through the library and through the CLI on both
//! databases.

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use krscore::connector::{Cancel, Extract, Fetch};
use krscore::project::Project;

use crate::mock::{Mock, Reply, Seen};
use crate::on_both;
use crate::support::*;

const METRICS: &str = r#"
[sessions]
kind = "counter"
[session_seconds]
kind = "counter"
[avg_session_duration]
kind = "derived"
formula = "session_seconds / sessions"
[revenue]
kind = "counter"
[visits]
kind = "counter"
[users]
kind = "counter"
[clicks]
kind = "counter"
[impressions]
kind = "counter"
[spend]
kind = "counter"
[avg_cpc]
kind = "counter"
[leads]
kind = "counter"
"#;

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn quirk(name: &str) -> String {
    std::fs::read_to_string(shared(&format!("data/quirks/{name}"))).unwrap()
}

/// A project with the test catalogue and one connector file.
fn http_project(connector: &str) -> tempfile::TempDir {
    project(&[
        ("config/metrics.toml", METRICS),
        ("connectors/api.toml", connector),
    ])
}

fn load(dir: &tempfile::TempDir) -> Project {
    Project::load(dir.path()).unwrap_or_else(|err| panic!("{err}"))
}

/// Runs the connector for a range of days through the library.
fn fetch(dir: &tempfile::TempDir, range: Option<(&str, &str)>) -> Result<Extract, String> {
    let project = load(dir);
    let fetch = Fetch {
        position: None,
        range: range.map(|(f, t)| (day(f), day(t))),
    };
    project.connectors[0]
        .extract_with(dir.path(), &Cancel::default(), fetch)
        .map_err(|e| e.to_string())
}

fn sum(extract: &Extract, metric: &str) -> f64 {
    extract
        .points
        .iter()
        .filter(|p| *p.metric == *metric)
        .map(|p| p.value)
        .sum()
}

fn sum_on(extract: &Extract, metric: &str, on: &str) -> f64 {
    extract
        .points
        .iter()
        .filter(|p| *p.metric == *metric && p.day == day(on))
        .map(|p| p.value)
        .sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

// ---- presets on answers shaped like the quirk files ----

#[test]
fn ga4_pages_by_offset_and_signs_in_with_a_service_account() {
    let mock = Mock::start(|req: &Seen, _| {
        if req.path == "/token" {
            return Reply::json(r#"{"access_token": "ya29.test-token", "expires_in": 3600}"#);
        }
        match req.json()["offset"].as_u64() {
            Some(0) => Reply::json(quirk("04a_ga4_runreport_page1_offset0_limit2.json")),
            Some(2) => Reply::json(quirk("04b_ga4_runreport_page2_offset2_limit2.json")),
            _ => Reply::text(400, "unexpected offset"),
        }
    });
    let key = std::fs::read_to_string(repo().join("tests/fixtures/ga4-test-service-account.json"))
        .unwrap();
    let dir = project(&[
        ("config/metrics.toml", METRICS),
        ("secrets/ga4.json", &key),
        (
            "connectors/api.toml",
            &format!(
                r#"
type = "ga4"
property = 123456789
key_file = "secrets/ga4.json"
token_url = "{0}/token"
base_url = "{0}"
start = "2024-01-01"
page_size = 2
timezone = "Europe/Moscow"

[dimensions]
channel = "sessionDefaultChannelGroup"

[metrics]
sessions = "sessions"
revenue = "purchaseRevenue"
session_seconds = {{ field = "averageSessionDuration", times = "sessions" }}
"#,
                mock.url
            ),
        ),
    ]);

    let e = fetch(&dir, Some(("2024-01-31", "2024-02-01"))).unwrap();

    assert_eq!(e.rows_read, 3);
    assert!(close(sum(&e, "sessions"), 1152.0), "{:?}", e.points);
    assert!(close(sum(&e, "revenue"), 1530.25));
    let weighted = sum(&e, "session_seconds") / sum(&e, "sessions");
    assert_eq!(format!("{weighted:.4}"), "83.4297");
    assert!(close(sum_on(&e, "sessions", "2024-01-31"), 852.0));
    assert!(close(sum_on(&e, "sessions", "2024-02-01"), 300.0));
    assert!(
        e.points
            .iter()
            .any(|p| p.dimensions.get("channel").map(String::as_str) == Some("(other)"))
    );
    let flags: Vec<&str> = e.flags.iter().map(String::as_str).collect();
    assert_eq!(flags, ["rolled_up", "thresholded"]);

    let requests = mock.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    let token = &requests[0];
    assert_eq!(token.path, "/token");
    let form: Vec<(String, String)> = url::form_urlencoded::parse(token.body.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(form[0].1, "urn:ietf:params:oauth:grant-type:jwt-bearer");
    let claims = form[1].1.split('.').nth(1).unwrap();
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], format!("{}/token", mock.url));
    assert_eq!(
        claims["iss"],
        "krscore-test@krscore-test.iam.gserviceaccount.com"
    );
    for (page, offset) in requests[1..].iter().zip([0, 2]) {
        assert_eq!(page.path, "/v1beta/properties/123456789:runReport");
        assert_eq!(page.header("authorization"), Some("Bearer ya29.test-token"));
        let body = page.json();
        assert_eq!(body["offset"], offset);
        assert_eq!(body["limit"], 2);
        assert_eq!(body["dateRanges"][0]["startDate"], "2024-01-31");
        assert_eq!(body["dateRanges"][0]["endDate"], "2024-02-01");
        assert_eq!(body["dimensions"][1]["name"], "sessionDefaultChannelGroup");
    }
}

#[test]
fn metrica_pages_from_one_and_flags_sampling() {
    let page2 = r#"{"data": [{"dimensions": [{"name": "2024-01-02"},
        {"id": "organic", "name": "Переходы из поисковых систем"}],
        "metrics": [298.0, 290.0, 80.0]}], "total_rows": 3, "sampled": false,
        "query": {"dimensions": ["ym:s:date", "ym:s:lastTrafficSource"],
                  "metrics": ["ym:s:visits", "ym:s:users", "ym:s:avgVisitDurationSeconds"],
                  "offset": 3, "limit": 2}}"#;
    let mock = Mock::start(move |req: &Seen, _| match req.param("offset").as_deref() {
        Some("1") => Reply::json(quirk("07_yandex_metrica_stat_v1_data.json")),
        Some("3") => Reply::json(page2),
        _ => Reply::text(400, "unexpected offset"),
    });
    let dir = http_project(&format!(
        r#"
type = "yandex_metrica"
counter = 12345678
token = "metrica-token-123"
base_url = "{}"
start = "2024-01-01"
page_size = 2

[dimensions]
source = "ym:s:lastTrafficSource"

[metrics]
visits = "ym:s:visits"
users = "ym:s:users"
"#,
        mock.url
    ));

    let e = fetch(&dir, Some(("2024-01-01", "2024-01-02"))).unwrap();

    assert_eq!(e.rows_read, 3);
    assert!(close(sum(&e, "visits"), 720.0), "{:?}", e.points);
    assert!(close(sum(&e, "users"), 690.0));
    // the row whose source is null is kept, without the dimension
    assert!(
        e.points
            .iter()
            .any(|p| &*p.metric == "visits" && p.value == 12.0 && p.dimensions.is_empty())
    );
    assert!(e.flags.contains("sampled"));
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].param("offset").as_deref(), Some("1"));
    assert_eq!(requests[1].param("offset").as_deref(), Some("3"));
    assert_eq!(requests[0].param("limit").as_deref(), Some("2"));
    assert_eq!(requests[0].param("date1").as_deref(), Some("2024-01-01"));
    assert_eq!(requests[0].param("date2").as_deref(), Some("2024-01-02"));
    assert_eq!(
        requests[0].param("dimensions").as_deref(),
        Some("ym:s:date,ym:s:lastTrafficSource")
    );
    assert_eq!(
        requests[0].header("authorization"),
        Some("OAuth metrica-token-123")
    );
}

fn direct_project(url: &str, extra: &str) -> tempfile::TempDir {
    direct_with(url, extra, DIRECT_FIELDS)
}

const DIRECT_FIELDS: &str = r#"
[dimensions]
campaign = "CampaignName"

[metrics]
clicks = "Clicks"
impressions = "Impressions"
spend = "Cost"
avg_cpc = "AvgCpc"
"#;

fn direct_with(url: &str, extra: &str, fields: &str) -> tempfile::TempDir {
    http_project(&format!(
        r#"
type = "yandex_direct"
token = "direct-token-1"
client_login = "demo-client"
base_url = "{url}"
start = "2024-01-01"
{extra}
{fields}"#
    ))
}

#[test]
fn direct_money_in_micros_with_title_and_row_count_lines() {
    let mock = Mock::start(|_, _| {
        Reply::text(200, quirk("09_yandex_direct_report_micros.tsv"))
            .header("content-type", "text/tab-separated-values")
    });
    let dir = direct_project(&mock.url, "");

    let e = fetch(&dir, Some(("2024-01-01", "2024-01-02"))).unwrap();

    assert_eq!(e.rows_read, 3);
    assert!(close(sum(&e, "spend"), 2234.56), "{:?}", e.points);
    assert!(close(sum_on(&e, "spend", "2024-01-01"), 1234.56));
    assert!(close(sum(&e, "clicks"), 88.0));
    // `--` in AvgCpc is missing, not a reject
    assert!(e.rejected.is_empty(), "{:?}", e.rejected);
    assert!(close(sum(&e, "avg_cpc"), 25.72 + 25.0));
    assert!(
        !e.warnings.iter().any(|w| w.contains("says")),
        "{:?}",
        e.warnings
    );
    let requests = mock.requests();
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/json/v5/reports");
    assert_eq!(
        request.header("authorization"),
        Some("Bearer direct-token-1")
    );
    assert_eq!(request.header("client-login"), Some("demo-client"));
    assert_eq!(request.header("returnmoneyinmicros"), None);
    let body = request.json();
    assert_eq!(body["params"]["Format"], "TSV");
    assert_eq!(
        body["params"]["SelectionCriteria"]["DateFrom"],
        "2024-01-01"
    );
    assert_eq!(
        body["params"]["FieldNames"],
        serde_json::json!([
            "Date",
            "CampaignName",
            "AvgCpc",
            "Clicks",
            "Impressions",
            "Cost"
        ])
    );
}

#[test]
fn direct_without_micros_asks_for_money_in_units() {
    let body = "Report\nDate\tCampaignName\tImpressions\tClicks\tCost\tAvgCpc\n\
                2024-01-01\tBrand\t10\t2\t12.5\t6.25\nTotal rows: 1\n";
    let mock = Mock::start(move |_, _| Reply::text(200, body));
    let dir = direct_project(&mock.url, "money_in_micros = false");

    let e = fetch(&dir, Some(("2024-01-01", "2024-01-01"))).unwrap();

    assert!(close(sum(&e, "spend"), 12.5));
    assert_eq!(
        mock.requests()[0].header("returnmoneyinmicros"),
        Some("false")
    );
}

/// The offline protocol of quirk 10: 201, 202, 400 with error code 9000, 202, then the TSV.
async fn direct_offline_report_is_polled_until_ready(backend: Backend) {
    let script: Vec<serde_json::Value> = quirk("10_yandex_direct_offline_polling.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(script.len(), 5);
    let mock = Mock::start(move |_, n| {
        let step = &script[n.min(4)];
        let status = step["status"].as_u64().unwrap() as u16;
        let body = match &step["body"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut reply = Reply::text(status, body);
        if step["headers"]["retryIn"].is_string() {
            // the file's 10 and 20 seconds, scaled down to keep the test short
            reply = reply.header("retryIn", "0.2");
        }
        reply
    });
    let db = TestDb::new(backend).await;
    let dir = direct_with(
        &mock.url,
        "[request]\nbackoff_ms = 100\n",
        "[metrics]\nclicks = \"Clicks\"\n",
    );

    let output = krscore(
        dir.path(),
        Some(&db),
        &["sync", "--from", "2024-01-01", "--to", "2024-01-01"],
    );

    expect_code(&output, 0);
    let requests = mock.requests();
    assert_eq!(requests.len(), 5, "{requests:?}");
    assert!(requests.iter().all(|r| r.body == requests[0].body));
    let clicks = db
        .rows(
            "SELECT CAST(day AS TEXT), CAST(value AS TEXT) FROM metric_points \
             WHERE metric = 'clicks'",
        )
        .await;
    assert_eq!(clicks.len(), 1, "{clicks:?}");
    assert!(clicks[0][0].as_deref().unwrap().starts_with("2024-01-01"));
    assert_eq!(
        clicks[0][1].as_deref().map(|v| v.parse::<f64>().unwrap()),
        Some(48.0)
    );
    let status = db
        .rows("SELECT status, CAST(last_day AS TEXT) FROM ingest_runs")
        .await;
    assert_eq!(status[0][0].as_deref(), Some("succeeded"));
}
on_both!(direct_offline_report_is_polled_until_ready);

#[test]
fn vk_ads_rows_nested_in_campaigns_with_money_as_text() {
    let mock = Mock::start(|_, _| Reply::json(quirk("16_vk_ads_statistics_campaigns_day.json")));
    let dir = http_project(&format!(
        r#"
type = "http"
url = "{}/api/v2/statistics/campaigns/day.json"
query = {{ date_from = "{{from}}", date_to = "{{to}}", id = "101,102" }}
auth = {{ bearer = "vk-token-1" }}

[window]
start = "2024-01-01"

[json]
records = "/items/*/rows"

[date]
column = "date"

[dimensions]
campaign = "../id"

[[metrics]]
name = "clicks"
column = "/base/clicks"

[[metrics]]
name = "spend"
field = "/base/spent"
"#,
        mock.url
    ));

    let e = fetch(&dir, Some(("2024-01-01", "2024-01-02"))).unwrap();

    assert!(close(sum(&e, "spend"), 450.50), "{:?}", e.points);
    assert!(close(sum(&e, "clicks"), 30.0));
    assert_eq!(e.rows_read, 2);
    assert!(e.points.iter().all(|p| p.dimensions["campaign"] == "101"));
    // every day of the window is covered, so a day the API reports nothing for is replaced
    assert_eq!(e.days.len(), 2);
    let r = &mock.requests()[0];
    assert_eq!(r.param("date_from").as_deref(), Some("2024-01-01"));
    assert_eq!(r.header("authorization"), Some("Bearer vk-token-1"));
}

#[test]
fn google_sheets_published_csv() {
    let mock = Mock::start(|_, _| {
        Reply::text(
            200,
            "Date,Leads\r\n2024-03-01,5\r\n2024-03-02,\"1,200\"\r\n",
        )
        .header("content-type", "text/csv")
    });
    let dir = http_project(&format!(
        r#"
type = "google_sheets"
sheet_id = "1AbC"
gid = 42
base_url = "{}"

[date]
column = "Date"

[[metrics]]
name = "leads"
column = "Leads"
"#,
        mock.url
    ));

    let e = fetch(&dir, None).unwrap();

    assert!(close(sum(&e, "leads"), 1205.0), "{:?}", e.points);
    assert_eq!(e.days.len(), 2);
    let r = &mock.requests()[0];
    assert_eq!(r.path, "/spreadsheets/d/1AbC/export");
    assert_eq!(r.param("gid").as_deref(), Some("42"));
}

// ---- paging ----

fn generic(url: &str, paging: &str, records: &str) -> tempfile::TempDir {
    generic_with(url, paging, records, "")
}

fn generic_with(url: &str, paging: &str, records: &str, request: &str) -> tempfile::TempDir {
    http_project(&format!(
        r#"
type = "http"
url = "{url}/stats"

[request]
backoff_ms = 50
timeout_secs = 2
{request}

{paging}

[json]
records = "{records}"

[date]
column = "day"
format = "%Y-%m-%d"

[[metrics]]
name = "leads"
column = "n"
"#
    ))
}

fn rows(from: usize, to: usize) -> String {
    let rows: Vec<String> = (from..to)
        .map(|i| {
            format!(
                r#"{{"day": "2024-01-{:02}", "n": "{}"}}"#,
                i % 28 + 1,
                i + 1
            )
        })
        .collect();
    format!("[{}]", rows.join(","))
}

#[test]
fn page_numbers_until_an_empty_page() {
    let mock = Mock::start(|req: &Seen, _| {
        let page: usize = req.param("p").unwrap().parse().unwrap();
        let body = if page <= 3 {
            rows((page - 1) * 2, page * 2)
        } else {
            "[]".into()
        };
        Reply::json(format!(r#"{{"items": {body}}}"#))
    });
    let dir = generic(
        &mock.url,
        "[paging]\nkind = \"page\"\npage_param = \"p\"",
        "/items",
    );

    let e = fetch(&dir, None).unwrap();

    assert_eq!(e.rows_read, 6);
    assert!(close(sum(&e, "leads"), 21.0));
    let pages: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.param("p").unwrap())
        .collect();
    assert_eq!(pages, ["1", "2", "3", "4"]);
}

#[test]
fn offsets_stop_at_the_total_count_and_short_pages() {
    let mock = Mock::start(|req: &Seen, _| {
        let offset: usize = req.param("offset").unwrap().parse().unwrap();
        let end = (offset + 4).min(10);
        Reply::json(format!(r#"{{"total": 10, "data": {}}}"#, rows(offset, end)))
    });
    let dir = generic(
        &mock.url,
        "[paging]\nkind = \"offset\"\nlimit = 4\ntotal_at = \"/total\"",
        "/data",
    );

    let e = fetch(&dir, None).unwrap();

    assert_eq!(e.rows_read, 10);
    assert!(close(sum(&e, "leads"), 55.0));
    let offsets: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.param("offset").unwrap())
        .collect();
    assert_eq!(offsets, ["0", "4", "8"]);
}

#[test]
fn cursors_until_none_is_given() {
    let mock = Mock::start(|req: &Seen, _| match req.param("after").as_deref() {
        None => Reply::json(format!(r#"{{"next": "c2", "rows": {}}}"#, rows(0, 2))),
        Some("c2") => Reply::json(format!(r#"{{"next": "c3", "rows": {}}}"#, rows(2, 4))),
        Some("c3") => Reply::json(format!(r#"{{"next": null, "rows": {}}}"#, rows(4, 5))),
        Some(_) => Reply::text(400, "bad cursor"),
    });
    let dir = generic(
        &mock.url,
        "[paging]\nkind = \"cursor\"\ncursor_param = \"after\"\ncursor_at = \"/next\"",
        "/rows",
    );

    let e = fetch(&dir, None).unwrap();

    assert_eq!(e.rows_read, 5);
    assert_eq!(mock.requests().len(), 3);
}

#[test]
fn link_headers_until_there_is_no_next() {
    let mock = Mock::start(|req: &Seen, _| {
        let page: usize = req.param("page").map_or(1, |p| p.parse().unwrap());
        let mut reply = Reply::json(rows(page * 10, page * 10 + 2));
        if page < 3 {
            reply = reply.header(
                "link",
                &format!(
                    r#"</stats?page={}>; rel="next", </stats?page=1>; rel="first""#,
                    page + 1
                ),
            );
        }
        reply
    });
    let dir = generic(&mock.url, "[paging]\nkind = \"link\"", "");

    let e = fetch(&dir, None).unwrap();

    assert_eq!(e.rows_read, 6);
    assert_eq!(mock.requests().len(), 3);
}

#[test]
fn endless_paging_is_stopped_by_the_page_limit() {
    let mock =
        Mock::start(|_, n| Reply::json(format!(r#"{{"next": "c{n}", "rows": {}}}"#, rows(0, 1))));
    let dir = generic(
        &mock.url,
        "[paging]\nkind = \"cursor\"\ncursor_at = \"/next\"\nmax_pages = 5",
        "/rows",
    );

    let err = fetch(&dir, None).unwrap_err();

    assert!(err.contains("stopped after 5 pages"), "{err}");
    assert_eq!(mock.requests().len(), 5);
}

// ---- failures ----

#[test]
fn too_many_requests_waits_as_retry_after_says() {
    let mock = Mock::start(|_, n| match n {
        0 => Reply::text(429, "slow down").header("retry-after", "1"),
        _ => Reply::json(rows(0, 2)),
    });
    let dir = generic(&mock.url, "", "");
    let started = Instant::now();

    let e = fetch(&dir, None).unwrap();

    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(e.rows_read, 2);
    assert_eq!(mock.requests().len(), 2);
}

#[test]
fn a_server_error_is_retried_with_backoff() {
    let mock = Mock::start(|_, n| match n {
        0 | 1 => Reply::text(503, "busy"),
        _ => Reply::json(rows(0, 3)),
    });
    let dir = generic(&mock.url, "", "");

    let e = fetch(&dir, None).unwrap();

    assert_eq!(e.rows_read, 3);
    assert_eq!(mock.requests().len(), 3);
}

#[test]
fn a_timeout_is_retried_and_then_gives_up() {
    let mock = Mock::start(|_, n| match n {
        0 => Reply::json(rows(0, 1)).after(Duration::from_secs(4)),
        _ => Reply::json(rows(0, 2)),
    });
    let dir = generic(&mock.url, "", "");
    let e = fetch(&dir, None).unwrap();
    assert_eq!(e.rows_read, 2);

    let slow = Mock::start(|_, _| Reply::json(rows(0, 1)).after(Duration::from_secs(4)));
    let dir = http_project(&format!(
        r#"
type = "http"
url = "{}/stats"
request = {{ timeout_secs = 0.3, max_attempts = 2, backoff_ms = 10 }}
[date]
column = "day"
[[metrics]]
name = "leads"
column = "n"
"#,
        slow.url
    ));
    let err = fetch(&dir, None).unwrap_err();
    assert!(err.contains("gave up after 2 attempts"), "{err}");
    assert!(err.contains("timed out"), "{err}");
}

#[test]
fn other_client_errors_are_not_retried() {
    let mock = Mock::start(|_, _| Reply::text(404, "no such report"));
    let dir = generic(&mock.url, "", "");

    let err = fetch(&dir, None).unwrap_err();

    assert!(err.contains("404"), "{err}");
    assert!(err.contains("no such report"), "{err}");
    assert_eq!(mock.requests().len(), 1);
}

#[test]
fn an_asynchronous_report_is_polled_until_ready() {
    let mock = Mock::start(|_, n| match n {
        0 => Reply::text(201, "").header("retry-after", "0.1"),
        1 => Reply::text(202, "").header("retry-after", "0.1"),
        _ => Reply::json(rows(0, 2)),
    });
    let dir = generic(&mock.url, "", "");

    let e = fetch(&dir, None).unwrap();

    assert_eq!(e.rows_read, 2);
    assert_eq!(mock.requests().len(), 3);
}

#[test]
fn a_report_that_never_gets_ready_fails_in_bounded_time() {
    let mock = Mock::start(|_, _| Reply::text(202, "").header("retry-after", "0.2"));
    let dir = generic_with(&mock.url, "", "", "report_wait_secs = 1");
    let started = Instant::now();

    let err = fetch(&dir, None).unwrap_err();

    assert!(err.contains("still not ready"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_malformed_body_fails_the_run() {
    let mock = Mock::start(|_, _| {
        Reply::text(200, r#"{"rows": [{"day": "2024-01-01", "n": 1},"#)
            .header("content-type", "application/json")
    });
    let dir = generic(&mock.url, "", "/rows");

    let err = fetch(&dir, None).unwrap_err();

    assert!(err.contains("not valid JSON"), "{err}");
}

#[test]
fn bad_records_are_rejected_with_their_place() {
    let mock = Mock::start(|_, _| {
        Reply::json(
            r#"{"rows": [{"day": "2024-01-01", "n": "5"}, {"day": "2024-01-02", "n": "lots"},
                                 {"day": "yesterday", "n": 2}]}"#,
        )
    });
    let dir = generic(&mock.url, "", "/rows");

    let e = fetch(&dir, None).unwrap();

    assert_eq!(e.rows_read, 3);
    assert_eq!(e.rejected.len(), 2);
    assert!(
        e.rejected[0].location.ends_with("page 1 /rows/1"),
        "{:?}",
        e.rejected
    );
    assert!(e.rejected[0].reason.contains("`lots` is not a number"));
    assert!(e.rejected[1].location.ends_with("page 1 /rows/2"));
}

// ---- runs through the CLI: windows, positions, failures and secrets ----

const SECRET: &str = "sk-live-7f3a9c1e5b";

fn windowed(url: &str) -> String {
    format!(
        r#"
type = "http"
url = "{url}/stats"
query = {{ since = "{{from}}", until = "{{to}}" }}
auth = {{ query = {{ name = "api_key", value = "${{KRSCORE_TEST_API_KEY}}" }} }}
timezone = "UTC"

[window]
start = "2024-01-01"
lookback_days = 2

[request]
backoff_ms = 20
max_attempts = 2

[json]
records = "/rows"

[date]
column = "day"

[[metrics]]
name = "leads"
column = "n"
"#
    )
}

/// `sync --from --to` over every connector: the HTTP connector with a window fetches the
/// range; a CSV connector reads its whole file as always, and a note says so.
#[test]
fn a_range_goes_to_windowed_connectors_and_a_note_names_the_others() {
    let mock = Mock::start(|req: &Seen, _| window_rows(req));
    let dir = project(&[
        ("config/metrics.toml", METRICS),
        ("connectors/api.toml", &windowed(&mock.url)),
        (
            "connectors/sheet.toml",
            "type = \"csv\"\npath = \"sheet.csv\"\n[date]\ncolumn = \"day\"\n\
             [[metrics]]\nname = \"visits\"\ncolumn = \"n\"\n",
        ),
        ("sheet.csv", "day,n\n2023-05-01,3\n2023-05-02,4\n"),
    ]);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_krscore"))
        .arg("--project-dir")
        .arg(dir.path())
        .args(["sync", "--from", "2024-01-01", "--to", "2024-01-02"])
        .env("KRSCORE__DATABASE__URL", "sqlite::memory:")
        .env("KRSCORE_TEST_API_KEY", SECRET)
        .output()
        .unwrap();

    let text = expect_code(&output, 0);
    assert!(
        text.contains("note: --from/--to do not apply to `sheet`: they read the whole source"),
        "{text}"
    );
    assert!(text.contains("sheet: run"), "{text}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].param("since").as_deref(), Some("2024-01-01"));
    assert_eq!(requests[0].param("until").as_deref(), Some("2024-01-02"));
}

/// Rows for each day of the asked window.
fn window_rows(req: &Seen) -> Reply {
    let from: NaiveDate = req.param("since").unwrap().parse().unwrap();
    let to: NaiveDate = req.param("until").unwrap().parse().unwrap();
    let rows: Vec<String> = from
        .iter_days()
        .take_while(|d| *d <= to)
        .map(|d| format!(r#"{{"day": "{d}", "n": 1}}"#))
        .collect();
    Reply::json(format!(r#"{{"rows": [{}]}}"#, rows.join(",")))
}

async fn incremental_windows_go_on_from_the_last_committed_day(backend: Backend) {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fail = failing.clone();
    let mock = Mock::start(move |req: &Seen, _| {
        if fail.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::text(
                500,
                format!("internal error for key {}", req.param("api_key").unwrap()),
            )
        } else {
            window_rows(req)
        }
    });
    let db = TestDb::new(backend).await;
    let dir = http_project(&windowed(&mock.url));
    let yesterday = chrono::Utc::now().date_naive() - chrono::Days::new(1);

    // the first run backfills from start to the newest complete day
    let first = std::process::Command::new(env!("CARGO_BIN_EXE_krscore"))
        .arg("--project-dir")
        .arg(dir.path())
        .arg("sync")
        .env("KRSCORE__DATABASE__URL", &db.url)
        .env("KRSCORE_TEST_API_KEY", SECRET)
        .output()
        .unwrap();
    expect_code(&first, 0);
    let r = &mock.requests()[0];
    assert_eq!(r.param("since").as_deref(), Some("2024-01-01"));
    assert_eq!(r.param("until"), Some(yesterday.to_string()));
    assert_eq!(r.param("api_key").as_deref(), Some(SECRET));

    // a failed run writes nothing and does not move the position
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = std::process::Command::new(env!("CARGO_BIN_EXE_krscore"))
        .arg("--project-dir")
        .arg(dir.path())
        .args(["sync", "--verbose"])
        .env("KRSCORE__DATABASE__URL", &db.url)
        .env("KRSCORE__LOG__LEVEL", "trace")
        .env("KRSCORE__LOG__FORMAT", "json")
        .env("KRSCORE_TEST_API_KEY", SECRET)
        .output()
        .unwrap();
    let text = expect_code(&failed, 1);
    assert!(text.contains("500"), "{text}");
    assert!(
        !text.contains(SECRET),
        "the key leaked into the output:\n{text}"
    );
    assert!(text.contains("${KRSCORE_TEST_API_KEY}"), "{text}");

    // the next run starts `lookback_days` before the last committed day
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_krscore"))
        .arg("--project-dir")
        .arg(dir.path())
        .arg("sync")
        .env("KRSCORE__DATABASE__URL", &db.url)
        .env("KRSCORE_TEST_API_KEY", SECRET)
        .output()
        .unwrap();
    expect_code(&again, 0);
    let last = mock.requests().last().unwrap().clone();
    assert_eq!(
        last.param("since"),
        Some((yesterday - chrono::Days::new(2)).to_string())
    );

    let days = (yesterday - day("2024-01-01")).num_days() + 1;
    assert_eq!(
        db.scalar("SELECT count(*) FROM metric_points WHERE metric = 'leads'")
            .await,
        days
    );
    let runs = db
        .rows("SELECT status, error, sources FROM ingest_runs ORDER BY id")
        .await;
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[1][0].as_deref(), Some("failed"));
    for run in &runs {
        for cell in run.iter().flatten() {
            assert!(
                !cell.contains(SECRET),
                "the key leaked into ingest_runs: {cell}"
            );
        }
    }
    assert!(
        runs[1][1]
            .as_deref()
            .unwrap()
            .contains("${KRSCORE_TEST_API_KEY}")
    );
}
on_both!(incremental_windows_go_on_from_the_last_committed_day);

#[test]
fn secrets_stay_out_of_preview_logs_and_rejected_rows() {
    let mock = Mock::start(|req: &Seen, _| {
        let key = req.param("api_key").unwrap();
        Reply::json(format!(
            r#"{{"rows": [{{"day": "2024-01-01", "n": 3}},
                          {{"day": "2024-01-02", "n": "{key}"}}]}}"#
        ))
    });
    let dir = http_project(&windowed(&mock.url));

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_krscore"))
        .arg("--project-dir")
        .arg(dir.path())
        .args([
            "--verbose",
            "preview",
            "api",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-02",
        ])
        .env("KRSCORE__DATABASE__URL", "sqlite::memory:")
        .env("KRSCORE__LOG__LEVEL", "trace")
        .env("RUST_LOG", "trace")
        .env("KRSCORE_TEST_API_KEY", SECRET)
        .output()
        .unwrap();

    let text = expect_code(&output, 0);
    assert!(text.contains("2024-01-01"), "{text}");
    assert!(text.contains("is not a number"), "{text}");
    assert!(!text.contains(SECRET), "the key leaked:\n{text}");
}

#[test]
fn a_missing_variable_fails_the_run_and_names_it() {
    let mock = Mock::start(|req: &Seen, _| window_rows(req));
    let dir = http_project(&windowed(&mock.url));

    let output = krscore(
        dir.path(),
        None,
        &["sync", "--from", "2024-01-01", "--to", "2024-01-02"],
    );

    let text = expect_code(&output, 1);
    assert!(text.contains("`KRSCORE_TEST_API_KEY`"), "{text}");
    assert!(mock.requests().is_empty());
    let check = krscore(dir.path(), None, &["check"]);
    let text = expect_code(&check, 0);
    assert!(text.contains("KRSCORE_TEST_API_KEY"), "{text}");
}

#[test]
fn check_finds_template_pointer_and_paging_mistakes_without_a_request() {
    let dir = http_project(
        r#"
type = "http"
url = "http://127.0.0.1:9/stats?from={form}"
query = { until = "{to}" }

[paging]
kind = "cursor"

[json]
records = "rows"

[date]
column = "/a/*/b"

[[metrics]]
name = "leads"
column = "../n"
"#,
    );

    let output = krscore(dir.path(), None, &["check"]);

    let text = expect_code(&output, 2);
    for expected in [
        "connectors/api.toml:3: url: unknown placeholder `{form}` (did you mean `from`?)",
        "connectors/api.toml:4: query.until: `{to}` needs the days of a run",
        "cursor paging needs `cursor_at`",
        "json.records: `rows` is not a JSON pointer",
        "`*` belongs in `records`",
        "`../n` goes up 1 level(s)",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[test]
fn check_knows_the_preset_keys() {
    let dir = http_project(
        r#"
type = "yandex_metrica"
counter = 1
token = "${METRICA_TOKEN}"
start = "2024-01-01"
page_sise = 10
[metrics]
visits = "ym:s:visits"
"#,
    );

    let output = krscore(dir.path(), None, &["check"]);

    let text = expect_code(&output, 2);
    assert!(
        text.contains(
            "connectors/api.toml:6: page_sise: unknown key `page_sise` (did you mean `page_size`?)"
        ),
        "{text}"
    );
}

/// Metrica answers with `sampled: true`: the points carry the flag and so do the scores that
/// use them.
async fn sampled_points_mark_the_scores_that_use_them(backend: Backend) {
    let mock = Mock::start(|_, _| Reply::json(quirk("07_yandex_metrica_stat_v1_data.json")));
    let db = TestDb::new(backend).await;
    let dir = project(&[
        ("config/metrics.toml", METRICS),
        (
            "connectors/metrica.toml",
            &format!(
                r#"
type = "yandex_metrica"
counter = 12345678
token = "literal-token"
base_url = "{}"
start = "2024-01-01"
timezone = "Europe/Moscow"
[metrics]
visits = "ym:s:visits"
"#,
                mock.url
            ),
        ),
        (
            "config/okrs/q1.toml",
            r#"
[[objective]]
id = "traffic"
title = "More visits"
period = "2024-01"
owner = "Web"

[[objective.key_result]]
id = "visits"
title = "1 000 visits in January"
metric = "visits"
baseline = 0
target = 1000
"#,
        ),
    ]);

    let sync = krscore(
        dir.path(),
        Some(&db),
        &["sync", "--from", "2024-01-01", "--to", "2024-01-02"],
    );
    expect_code(&sync, 0);
    let score = krscore(dir.path(), Some(&db), &["score", "--as-of", "2024-01-02"]);
    expect_code(&score, 0);

    assert_eq!(
        db.scalar("SELECT count(*) FROM metric_points WHERE flags = 'sampled'")
            .await,
        1
    );
    let flags = db
        .rows("SELECT flags, CAST(value AS TEXT) FROM kr_scores WHERE kr_id = 'visits'")
        .await;
    assert_eq!(flags[0][0].as_deref(), Some("source: sampled"), "{flags:?}");
    assert_eq!(
        flags[0][1].as_deref().map(|v| v.parse::<f64>().unwrap()),
        Some(422.0)
    );
}
on_both!(sampled_points_mark_the_scores_that_use_them);

/// Every connector file the README shows for HTTP sources passes `check` as written.
#[test]
fn the_readme_examples_pass_check() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme.find("### HTTP connectors").unwrap();
    let end = start
        + readme[start..]
            .find("### Objectives and key results")
            .unwrap();
    let mut files = vec![(
        "config/metrics.toml".to_string(),
        [
            "ad_clicks",
            "ad_spend",
            "ad_impressions",
            "sessions",
            "purchase_revenue",
            "session_seconds",
            "visits",
            "users",
            "brand_mentions",
        ]
        .iter()
        .map(|m| format!("[{m}]\nkind = \"counter\"\n"))
        .collect::<String>(),
    )];
    for (i, block) in readme[start..end].split("```toml\n").skip(1).enumerate() {
        let text = &block[..block.find("```").unwrap()];
        assert!(text.starts_with("type = "), "{text}");
        files.push((format!("connectors/example_{i}.toml"), text.to_string()));
    }
    assert_eq!(files.len(), 6, "one generic example and four presets");
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let dir = project(&refs);

    let output = krscore(dir.path(), None, &["check"]);

    let text = expect_code(&output, 0);
    assert!(!text.contains("error"), "{text}");
}

// ---- defects found by trying it: each must stay fixed ----

#[test]
fn an_answer_without_the_records_fails_instead_of_emptying_the_days() {
    let mock = Mock::start(|_, _| Reply::json(r#"{"data": [{"day": "2024-01-01", "n": 1}]}"#));
    let dir = generic(&mock.url, "", "/items");

    let err = fetch(&dir, None).unwrap_err();

    assert!(
        err.contains("the answer has no `/items` (it has: data)"),
        "{err}"
    );
}

#[test]
fn a_field_no_record_has_fails_the_run() {
    let mock = Mock::start(|_, _| Reply::json(r#"[{"day": "2024-01-01", "count": 1}]"#));
    let dir = generic(&mock.url, "", "");

    let err = fetch(&dir, None).unwrap_err();

    assert!(
        err.contains("no record has `n`; the first record has: count, day"),
        "{err}"
    );
}

#[test]
fn numbers_as_text_with_a_decimal_comma_and_numbers_as_json() {
    let mock = Mock::start(|_, _| {
        Reply::json(
            r#"[{"day": "2024-01-01", "n": "1 234,56", "x": 2.5},
                {"day": "2024-01-02", "n": "1,5", "x": 1}]"#,
        )
    });
    let dir = generic(&mock.url, "", "");
    let e = fetch(&dir, None).unwrap();
    assert!(close(sum(&e, "leads"), 1236.06), "{:?}", e.points);

    // with a decimal comma declared, JSON numbers keep their value
    let dir = http_project(&format!(
        r#"
type = "http"
url = "{}/stats"
[format]
decimal = ","
[date]
column = "day"
[[metrics]]
name = "leads"
column = "x"
[[metrics]]
name = "clicks"
column = "n"
"#,
        mock.url
    ));
    let e = fetch(&dir, None).unwrap();
    assert!(close(sum(&e, "leads"), 3.5), "{:?}", e.points);
    assert!(close(sum(&e, "clicks"), 1236.06), "{:?}", e.points);
}

#[test]
fn records_outside_the_asked_days_are_rejected() {
    let mock = Mock::start(|_, _| {
        Reply::json(r#"{"rows": [{"day": "2024-01-01", "n": 1}, {"day": "2030-01-01", "n": 5}]}"#)
    });
    let dir = http_project(&windowed(&mock.url).replace(
        "auth = { query = { name = \"api_key\", value = \"${KRSCORE_TEST_API_KEY}\" } }\n",
        "",
    ));

    let e = fetch(&dir, Some(("2024-01-01", "2024-01-02"))).unwrap();

    assert!(close(sum(&e, "leads"), 1.0));
    assert_eq!(e.rejected.len(), 1);
    assert!(
        e.rejected[0]
            .reason
            .contains("`2030-01-01` is outside the days asked for (2024-01-01..2024-01-02)"),
        "{:?}",
        e.rejected
    );
    assert_eq!(e.days.last(), Some(&day("2024-01-02")));
}

#[test]
fn a_server_that_echoes_basic_credentials_does_not_leak_them() {
    let mock = Mock::start(|req: &Seen, _| {
        Reply::text(
            400,
            format!("bad credentials: {}", req.header("authorization").unwrap()),
        )
    });
    let dir = http_project(&format!(
        r#"
type = "http"
url = "{}/stats"
auth = {{ basic = {{ user = "api", password = "Bpw:Secret3" }} }}
[date]
column = "day"
[[metrics]]
name = "leads"
column = "n"
"#,
        mock.url
    ));

    let err = fetch(&dir, None).unwrap_err();

    assert!(
        err.contains("bad credentials: Basic ${basic_auth}"),
        "{err}"
    );
    assert!(!err.contains("YXBpOkJwdzpTZWNyZXQz"), "{err}");
}

#[test]
fn check_reports_formats_that_cannot_write_a_date_and_ids_that_are_not_numbers() {
    let dir = project(&[
        ("config/metrics.toml", METRICS),
        (
            "connectors/api.toml",
            r#"
type = "http"
url = "http://127.0.0.1:9/stats?from={from:%H}"
[window]
start = "2024-01-01"
[date]
column = "day"
[[metrics]]
name = "leads"
column = "n"
"#,
        ),
        (
            "connectors/metrica.toml",
            r#"
type = "yandex_metrica"
counter = "abc"
token = "${METRICA_TOKEN}"
start = "2024-01-01"
[metrics]
visits = "ym:s:visits"
"#,
        ),
    ]);

    let output = krscore(dir.path(), None, &["check"]);

    let text = expect_code(&output, 2);
    assert!(text.contains("`%H` cannot write a date"), "{text}");
    assert!(
        text.contains("connectors/metrica.toml:3: counter: `abc` is not an id"),
        "{text}"
    );
}

#[test]
fn a_backfill_of_chosen_days_does_not_skip_the_first_backfill() {
    let mock = Mock::start(|req: &Seen, _| window_rows(req));
    let db_dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db_dir.path().join("x.db").display());
    let dir = http_project(&windowed(&mock.url));
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_krscore"))
            .arg("--project-dir")
            .arg(dir.path())
            .args(args)
            .env("KRSCORE__DATABASE__URL", &url)
            .env("KRSCORE_TEST_API_KEY", SECRET)
            .output()
            .unwrap()
    };

    expect_code(
        &run(&["sync", "--from", "2024-03-01", "--to", "2024-03-05"]),
        0,
    );
    expect_code(&run(&["sync"]), 0);

    let requests = mock.requests();
    assert_eq!(requests[1].param("since").as_deref(), Some("2024-01-01"));
}

#[test]
fn a_connection_closed_mid_body_is_retried() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        for n in 0..2 {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = r#"[{"day": "2024-01-01", "n": 4}]"#;
            if n == 0 {
                // promise more than is sent, then hang up
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            content-length: 1000\r\nconnection: close\r\n\r\n";
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(&body.as_bytes()[..10]).unwrap();
            } else {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(body.as_bytes()).unwrap();
            }
        }
    });
    let dir = generic(&url, "", "");

    let e = fetch(&dir, None).unwrap();

    assert!(close(sum(&e, "leads"), 4.0));
    server.join().unwrap();
}

#[test]
fn records_that_are_not_objects_are_rejected() {
    let mock = Mock::start(|_, _| {
        Reply::json(r#"{"rows": [{"day": "2024-01-01", "n": 2}, "oops", [1, 2], null]}"#)
    });
    let dir = generic(&mock.url, "", "/rows");

    let e = fetch(&dir, None).unwrap();

    assert_eq!(e.rows_read, 4);
    assert_eq!(e.rows_loaded, 1);
    assert_eq!(e.rejected.len(), 3);
    assert!(
        e.rejected[0].reason.contains("a string, not an object"),
        "{:?}",
        e.rejected
    );
    assert!(e.rejected[0].location.ends_with("page 1 /rows/1"));
    assert!(close(sum(&e, "leads"), 2.0));
}

#[test]
fn a_missing_step_below_a_wildcard_fails_instead_of_emptying_the_days() {
    for body in [
        r#"{"items": null}"#,
        r#"{"items": [{"id": 5}]}"#,
        r#"{"items": [{"id": 5, "rows": null}]}"#,
    ] {
        let mock = Mock::start(move |_, _| Reply::json(body));
        let dir = generic(&mock.url, "", "/items/*/rows");

        let err = fetch(&dir, None).unwrap_err();

        assert!(err.contains("/items"), "{body}: {err}");
    }
}

#[test]
fn json_numbers_follow_the_decimal_mark_of_the_text_values() {
    let mock = Mock::start(|_, _| {
        Reply::json(
            r#"[{"day": "2024-01-01", "n": "1,5"}, {"day": "2024-01-01", "n": 2.5},
                {"day": "2024-01-02", "n": "0,001"}]"#,
        )
    });
    let dir = generic(&mock.url, "", "");

    let e = fetch(&dir, None).unwrap();

    assert!(
        close(sum_on(&e, "leads", "2024-01-01"), 4.0),
        "{:?}",
        e.points
    );
    assert!(
        close(sum_on(&e, "leads", "2024-01-02"), 0.001),
        "{:?}",
        e.points
    );
}

#[test]
fn a_next_link_to_another_host_gets_no_credentials() {
    let other = Mock::start(|_, _| Reply::json("[]"));
    let other_url = other.url.replace("127.0.0.1", "localhost");
    let mock = Mock::start(move |_, _| {
        Reply::json(rows(0, 1)).header("link", &format!(r#"<{other_url}/x>; rel="next""#))
    });
    let dir = http_project(&format!(
        r#"
type = "http"
url = "{}/stats"
auth = {{ bearer = "tok-123" }}
[paging]
kind = "link"
[date]
column = "day"
[[metrics]]
name = "leads"
column = "n"
"#,
        mock.url
    ));

    let err = fetch(&dir, None).unwrap_err();

    assert!(err.contains("points to another host"), "{err}");
    assert!(other.requests().is_empty());
}

#[test]
fn check_refuses_a_platform_dimension_asked_for_twice() {
    let dir = http_project(
        r#"
type = "ga4"
property = 1
key_file = "secrets/ga4.json"
start = "2024-01-01"
[dimensions]
channel = "sessionDefaultChannelGroup"
group = "sessionDefaultChannelGroup"
[metrics]
sessions = "sessions"
"#,
    );

    let output = krscore(dir.path(), None, &["check"]);

    let text = expect_code(&output, 2);
    assert!(
        text.contains("`sessionDefaultChannelGroup` is already asked for as dimension `channel`"),
        "{text}"
    );
}
