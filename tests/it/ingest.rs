//! CSV ingest as analysts meet it: broken rows, corrected re-exports, locales and the reject
//! threshold, checked through `sync`/`preview` and SQL on both databases.

use crate::on_both;
use crate::support::*;

const METRICS: &str = r#"
[sessions]
kind = "counter"
[spend]
kind = "counter"
unit = "RUB"
[conversions]
kind = "counter"
[cpa]
kind = "derived"
formula = "spend / conversions"
"#;

const CONNECTOR: &str = r#"
type = "csv"
path = "data/ads_*.csv"
timezone = "Europe/Moscow"

[date]
column = "Day"
format = "%Y-%m-%d"

[dimensions]
channel = "Channel"

[[metrics]]
name = "spend"
column = "Cost"

[[metrics]]
name = "conversions"
column = "Conversions"
"#;

fn ads_project(csv: &str) -> tempfile::TempDir {
    project(&[
        ("config/default.toml", "[ingest]\nmax_reject_share = 0.5\n"),
        ("config/metrics.toml", METRICS),
        ("connectors/ads.toml", CONNECTOR),
        ("data/ads_2024.csv", csv),
    ])
}

async fn broken_rows_are_kept_with_line_and_reason(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = ads_project(
        "Day,Channel,Cost,Conversions\n\
         2024-01-01,search,\"1,204.50\",10\n\
         2024-01-01,social,100,--\n\
         2024-01-02,search,12abc,3\n\
         2024-13-45,search,5,1\n\
         2024-01-03,search,200.25,N/A\n",
    );

    let output = krscore(dir.path(), Some(&db), &["sync"]);

    let text = expect_code(&output, 0);
    assert!(
        text.contains("read 5 row(s), loaded 3, rejected 2"),
        "{text}"
    );
    let rejected = db
        .rows("SELECT location, CAST(line AS TEXT), reason, raw FROM rejected_rows ORDER BY line")
        .await;
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0][0].as_deref(), Some("data/ads_2024.csv:4"));
    assert!(
        rejected[0][2]
            .as_deref()
            .unwrap()
            .contains("`12abc` is not a number"),
        "{rejected:?}"
    );
    assert_eq!(rejected[0][3].as_deref(), Some("2024-01-02,search,12abc,3"));
    assert_eq!(rejected[1][1].as_deref(), Some("5"));
    assert!(
        rejected[1][2].as_deref().unwrap().contains("date format"),
        "{rejected:?}"
    );
    let run = db
        .rows(
            "SELECT status, CAST(rows_read AS TEXT), CAST(rows_loaded AS TEXT), \
             CAST(rows_rejected AS TEXT) FROM ingest_runs",
        )
        .await;
    assert_eq!(
        run[0],
        vec![
            Some("succeeded".into()),
            Some("5".into()),
            Some("3".into()),
            Some("2".into())
        ]
    );
    // thousands separator read, placeholders missing (never 0)
    assert_eq!(
        db.scalar(
            "SELECT CAST(sum(value) * 100 AS BIGINT) FROM metric_points WHERE metric = 'spend'"
        )
        .await,
        150475
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM metric_points WHERE metric = 'conversions'")
            .await,
        1,
        "`--` and `N/A` are missing, not zero"
    );
}
on_both!(broken_rows_are_kept_with_line_and_reason);

async fn too_many_rejects_fail_the_run_and_write_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = ads_project(
        "Day,Channel,Cost,Conversions\n2024-01-01,search,x,1\n2024-01-02,search,y,1\n\
         2024-01-02,social,z,1\n2024-01-03,search,3,1\n",
    );

    let output = krscore(dir.path(), Some(&db), &["sync"]);

    let text = expect_code(&output, 1);
    assert!(text.contains("max_reject_share"), "{text}");
    assert!(
        text.contains("; the first, data/ads_2024.csv:2: "),
        "the first rejected row's reason is in the message: {text}"
    );
    assert_eq!(db.scalar("SELECT count(*) FROM metric_points").await, 0);
    assert_eq!(db.scalar("SELECT count(*) FROM rejected_rows").await, 3);
    let status = db.rows("SELECT status, error FROM ingest_runs").await;
    assert_eq!(status[0][0].as_deref(), Some("failed"));
}
on_both!(too_many_rejects_fail_the_run_and_write_nothing);

async fn a_corrected_export_replaces_the_days_it_covers(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = ads_project(
        "Day,Channel,Cost,Conversions\n2024-01-01,search,100,1\n2024-01-01,social,50,1\n\
         2024-01-02,search,70,2\n",
    );
    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);

    // the restated export drops `social` on day 1, changes search, and no longer has day 2
    std::fs::write(
        dir.path().join("data/ads_2024.csv"),
        "Day,Channel,Cost,Conversions\n2024-01-01,search,120,1\n",
    )
    .unwrap();
    let output = krscore(dir.path(), Some(&db), &["sync"]);

    let text = expect_code(&output, 0);
    assert!(text.contains("1 point(s) changed, 2 removed"), "{text}");
    let points = db
        .rows(
            "SELECT CAST(day AS TEXT), metric, CAST(value AS TEXT) FROM metric_points \
             ORDER BY day, metric, value",
        )
        .await;
    let flat: Vec<String> = points
        .iter()
        .map(|r| {
            let value: f64 = r[2].as_deref().unwrap().parse().unwrap();
            format!(
                "{} {} {value}",
                r[0].as_deref().unwrap(),
                r[1].as_deref().unwrap()
            )
        })
        .collect();
    assert_eq!(
        flat,
        vec![
            "2024-01-01 conversions 1",
            "2024-01-01 spend 120",
            "2024-01-02 conversions 2",
            "2024-01-02 spend 70",
        ],
        "day 2 is not covered by the new export and stays"
    );
}
on_both!(a_corrected_export_replaces_the_days_it_covers);

/// `--from --to` choose the days of an HTTP connector with a window; a CSV connector reads
/// its whole files, so the flags are refused rather than silently ignored.
#[test]
fn a_day_range_for_a_csv_connector_is_refused() {
    let dir = ads_project("Day,Channel,Cost,Conversions\n2024-01-01,search,100,1\n");
    let range = ["--from", "2024-01-01", "--to", "2024-01-01"];
    for command in [vec!["sync"], vec!["sync", "ads"], vec!["preview", "ads"]] {
        let args: Vec<&str> = command.iter().chain(range.iter()).copied().collect();
        let output = krscore(dir.path(), None, &args);
        let text = expect_code(&output, 2);
        assert!(
            text.contains("`ads` read(s) the whole source on every run"),
            "{args:?}: {text}"
        );
    }
}

/// A column whose first 65 536 rows do not tell the decimal mark is read with a guess. When
/// a later cell reads only with the other mark, values read with the guess may be a thousand
/// times off, so the file fails; where no value could be read two ways, only that row is
/// rejected.
#[test]
fn a_decimal_mark_guessed_wrong_fails_the_file() {
    let rows = |first: &str, last: &str| {
        let mut csv = String::from("Day,Channel,Cost,Conversions\n");
        for _ in 0..70_000 {
            csv.push_str(&format!("2024-01-01,search,{first},1\n"));
        }
        csv.push_str(&format!("2024-01-02,search,{last},1\n"));
        csv
    };
    let dir = ads_project(&rows("\"1,234\"", "\"1,5\""));
    let text = expect_code(&krscore(dir.path(), None, &["preview", "ads"]), 1);
    assert!(
        text.contains(
            "column `Cost`: the first rows did not tell its decimal mark, so `1,234` on line 2 \
             was read with `.` as the decimal mark, but `1,5` on line 70002 reads only with `,`"
        ),
        "{text}"
    );

    let dir = ads_project(&rows("123", "\"12,5\""));
    let text = expect_code(&krscore(dir.path(), None, &["preview", "ads"]), 0);
    assert!(
        text.contains("70001 row(s) read, 70000 loaded, 1 rejected"),
        "{text}"
    );
    assert!(text.contains("spend: 1 point(s), sum 8610000"), "{text}");
}

/// `krscore preview ads | head`: the reader goes away after a few lines, and the preview
/// ends quietly instead of panicking on the closed pipe.
#[test]
fn a_preview_read_in_part_ends_quietly() {
    use std::io::Read as _;
    let mut csv = String::from("Day,Channel,Cost,Conversions\n");
    for i in 0..5000 {
        csv.push_str(&format!("2024-01-01,channel-{i},10,1\n"));
    }
    let dir = ads_project(&csv);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_krscore"))
        .arg("-C")
        .arg(dir.path())
        .args(["preview", "ads", "--rows", "10000"])
        .env("KRSCORE__DATABASE__URL", "sqlite::memory:")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // the pipe's read end is closed here, before the 10 000 lines are written
    let output = child.wait_with_output().unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}

/// A rejected row is stored as a CSV line again, its quoted cells quoted, so its cells can
/// be told apart.
#[test]
fn a_rejected_row_keeps_its_quoting() {
    let row = r#"2024-01-02,"a,b",oops,"say ""hi""""#;
    let dir = ads_project(&format!(
        "Day,Channel,Cost,Conversions\n2024-01-01,search,10,1\n{row}\n"
    ));
    let text = expect_code(&krscore(dir.path(), None, &["preview", "ads"]), 0);
    assert!(text.contains(&format!("\n    {row}\n")), "{text}");
}

#[test]
fn preview_writes_nothing() {
    let dir = ads_project("Day,Channel,Cost,Conversions\n2024-01-01,search,\"1,204.50\",10\n");
    std::fs::write(
        dir.path().join("config/default.toml"),
        "[database]\nurl = \"sqlite://k.db\"\n",
    )
    .unwrap();

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_krscore"));
    command
        .arg("-C")
        .arg(dir.path())
        .args(["preview", "ads"])
        .env_remove("KRSCORE__DATABASE__URL");
    let output = command.output().unwrap();

    let text = expect_code(&output, 0);
    assert!(text.contains("1204.5"), "{text}");
    assert!(text.contains("channel=search"), "{text}");
    assert!(
        !dir.path().join("k.db").exists(),
        "preview must not create the database"
    );
}

fn quirk_project(connector: &str, file: &str) -> tempfile::TempDir {
    let data = std::fs::read(shared(&format!("data/quirks/{file}"))).expect("quirk file");
    let dir = project(&[
        (
            "config/metrics.toml",
            "[sessions]\nkind = \"counter\"\n[clicks]\nkind = \"counter\"\n\
             [spend]\nkind = \"counter\"\n\
             [impressions]\nkind = \"counter\"\n",
        ),
        ("connectors/quirk.toml", connector),
    ]);
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data").join(file), data).unwrap();
    dir
}

fn preview_sums(dir: &std::path::Path) -> String {
    let output = krscore(dir, None, &["preview", "quirk", "--rows", "50"]);
    expect_code(&output, 0)
}

#[test]
fn russian_excel_in_windows_1251_with_nbsp_thousands() {
    let dir = quirk_project(
        "type = \"csv\"\npath = \"data/21_excel_ru_cp1251_semicolon.csv\"\n\
         [format]\nencoding = \"windows-1251\"\n[date]\ncolumn = \"Дата\"\nformat = \"%d.%m.%Y\"\n\
         [dimensions]\ncampaign = \"Кампания\"\n\
         [[metrics]]\nname = \"impressions\"\ncolumn = \"Показы\"\n\
         [[metrics]]\nname = \"spend\"\ncolumn = \"Расход, руб.\"\n",
        "21_excel_ru_cp1251_semicolon.csv",
    );

    let text = preview_sums(dir.path());

    assert!(
        text.contains("impressions: 2 point(s), sum 15585"),
        "{text}"
    );
    assert!(text.contains("spend: 2 point(s), sum 5476.2"), "{text}");
    assert!(text.contains("4372.2"), "{text}");
    assert!(text.contains("campaign=Бренд"), "{text}");
}

#[test]
fn excel_sep_directive_and_bom_quoted_header() {
    let sep = quirk_project(
        "type = \"csv\"\npath = \"data/22_excel_sep_directive.csv\"\n[date]\ncolumn = \"date\"\n\
         [[metrics]]\nname = \"sessions\"\ncolumn = \"visits\"\n",
        "22_excel_sep_directive.csv",
    );
    let bom = quirk_project(
        "type = \"csv\"\npath = \"data/23_utf8_bom_quoted_header.csv\"\n[date]\ncolumn = \"date\"\n\
         [[metrics]]\nname = \"sessions\"\ncolumn = \"sessions\"\n",
        "23_utf8_bom_quoted_header.csv",
    );

    let sep_text = preview_sums(sep.path());
    let bom_text = preview_sums(bom.path());

    assert!(
        sep_text.contains("sessions: 2 point(s), sum 22"),
        "{sep_text}"
    );
    assert!(
        bom_text.contains("sessions: 2 point(s), sum 32"),
        "{bom_text}"
    );
}

#[test]
fn french_export_with_narrow_and_plain_no_break_spaces() {
    let dir = quirk_project(
        "type = \"csv\"\npath = \"data/15_meta_ads_export_fr_semicolon.csv\"\n\
         [date]\ncolumn = \"Jour\"\nformat = \"%d/%m/%Y\"\n\
         [[metrics]]\nname = \"spend\"\ncolumn = \"Montant dépensé (EUR)\"\n",
        "15_meta_ads_export_fr_semicolon.csv",
    );

    let text = preview_sums(dir.path());

    assert!(text.contains("1234.56"), "{text}");
    assert!(text.contains("1002"), "{text}");
    assert!(text.contains("1000.1"), "{text}");
}

async fn a_blank_line_inside_the_data_loses_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = ads_project(
        "Day,Channel,Cost,Conversions\n2024-01-01,search,10,1\n\n2024-01-02,search,20,1\n\
         \n\n2024-01-03,search,30,1\n",
    );

    let output = krscore(dir.path(), Some(&db), &["sync"]);

    let text = expect_code(&output, 0);
    assert!(
        text.contains("read 3 row(s), loaded 3, rejected 0"),
        "{text}"
    );
    assert_eq!(
        db.scalar("SELECT CAST(sum(value) AS BIGINT) FROM metric_points WHERE metric = 'spend'")
            .await,
        60
    );
}
on_both!(a_blank_line_inside_the_data_loses_nothing);

#[test]
fn hostile_cells_are_rejected_with_short_reasons() {
    let huge = "9".repeat(100_000);
    let dir = ads_project(&format!(
        "Day,Channel,Cost,Conversions\n2024-01-01,search,NaN,1\n2024-01-02,search,inf,1\n\
         2024-01-03,search,1e400,1\n0000-01-01,search,5,1\n2024-01-04,search,{huge}x,1\n\
         2024-01-05,search,5,1\n"
    ));

    let project = krscore::project::Project::load(dir.path()).unwrap();
    let e = project.connectors[0].extract(dir.path()).unwrap();

    let reasons: Vec<&str> = e.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(e.rejected.len(), 5, "{reasons:?}");
    assert!(reasons[3].contains("outside the years"), "{reasons:?}");
    assert!(
        e.rejected
            .iter()
            .all(|r| r.reason.len() < 400 && r.raw.len() < 2200)
    );
    assert_eq!(e.rows_loaded, 1);
}

#[test]
fn sums_too_large_to_store_fail_the_run() {
    let dir =
        ads_project("Day,Channel,Cost,Conversions\n2024-01-01,a,1e308,1\n2024-01-01,a,1e308,1\n");
    let project = krscore::project::Project::load(dir.path()).unwrap();

    let err = project.connectors[0]
        .extract(dir.path())
        .unwrap_err()
        .to_string();

    assert!(err.contains("too large"), "{err}");
}

async fn an_interrupted_run_is_closed_by_the_next_one(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = ads_project("Day,Channel,Cost,Conversions\n2024-01-01,search,10,1\n");
    let store = db.store().await;
    let stale = store.start_ingest_run("ads", "manual").await.unwrap();
    store.close().await;

    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);

    let rows = db
        .rows(&format!(
            "SELECT status, error FROM ingest_runs WHERE id = {stale}"
        ))
        .await;
    assert_eq!(rows[0][0].as_deref(), Some("failed"));
    assert!(rows[0][1].as_deref().unwrap().contains("interrupted"));
}
on_both!(an_interrupted_run_is_closed_by_the_next_one);

#[test]
fn passwords_never_reach_the_output() {
    let dir = ads_project("Day,Channel,Cost,Conversions\n2024-01-01,search,10,1\n");
    for url in [
        "postgres://bob@127.0.0.1:1/x?password=S3cretPW",
        "postgres://bob:S3cretPW@127.0.0.1:1/x",
        "postgres:/bob:S3cretPW@127.0.0.1:1/x",
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_krscore"))
            .arg("-C")
            .arg(dir.path())
            .args(["-v", "sync"])
            .env("KRSCORE__DATABASE__URL", url)
            .output()
            .unwrap();

        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!output.status.success());
        assert!(!text.contains("S3cretPW"), "{url}: {text}");
    }
}

/// A value PostgreSQL cannot store (a dimension value too long for its index) fails that
/// connector's run, recorded with the reason, and the other connectors still load.
#[tokio::test]
async fn a_point_the_database_refuses_fails_only_its_connector() {
    let db = TestDb::new(Backend::Postgres).await;
    let web = CONNECTOR
        .replace("data/ads_*.csv", "data/web_*.csv")
        .replace("[dimensions]\nchannel = \"Channel\"\n", "");
    // a dimension value too long for PostgreSQL's index of dimension sets (4 000 characters
    // that do not compress)
    let mut seed = 12345u64;
    let long: String = (0..4000)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let letters = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
            letters[(seed >> 33) as usize % letters.len()] as char
        })
        .collect();
    let ads = format!("Day,Channel,Cost,Conversions\n2024-01-01,{long},10,1\n");
    let dir = project(&[
        ("config/metrics.toml", METRICS),
        ("connectors/ads.toml", CONNECTOR),
        ("connectors/web.toml", &web),
        ("data/ads_2024.csv", &ads),
        (
            "data/web_2024.csv",
            "Day,Cost,Conversions\n2024-01-01,5,2\n",
        ),
    ]);

    let output = krscore(dir.path(), Some(&db), &["sync"]);

    let text = expect_code(&output, 1);
    assert!(text.contains("web"), "{text}");
    let runs = db
        .rows("SELECT connector, status, error FROM ingest_runs ORDER BY connector")
        .await;
    assert_eq!(runs[0][0].as_deref(), Some("ads"));
    assert_eq!(runs[0][1].as_deref(), Some("failed"));
    let error = runs[0][2].clone().unwrap_or_default();
    assert!(error.contains("cannot store the points"), "{error}");
    assert_eq!(runs[1][0].as_deref(), Some("web"));
    assert_eq!(runs[1][1].as_deref(), Some("succeeded"));
    let loaded = "SELECT count(*) FROM metric_points WHERE connector = 'web'";
    assert_eq!(db.scalar(loaded).await, 2);
    assert_eq!(db.scalar("SELECT count(*) FROM metric_points").await, 2);
}

/// A quote that is never closed swallows the rest of the file into one cell: the run fails
/// with the line, and the points stored before stay as they were (the last row's day was
/// restated without that row's values when the quote was in the last row).
async fn an_unclosed_quote_fails_the_run_and_keeps_the_stored_days(backend: Backend) {
    let db = TestDb::new(backend).await;
    let good = "Day,Channel,Cost,Conversions\n2024-01-01,search,10,1\n\
                2024-01-01,social,20,2\n2024-01-01,video,30,3\n2024-01-02,search,40,4\n";
    let dir = ads_project(good);
    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);
    let stored = "SELECT CAST(sum(value) AS BIGINT) FROM metric_points WHERE metric = 'spend'";
    assert_eq!(db.scalar(stored).await, 100);

    // in a middle row, and in the last row (where it swallows only that row's own line end)
    for (row, line) in [("2024-01-01,social,20,2", 3), ("2024-01-02,search,40,4", 5)] {
        let broken = good.replace(row, &row.replacen(',', ",\"", 1));
        std::fs::write(dir.path().join("data/ads_2024.csv"), broken).unwrap();
        let output = krscore(dir.path(), Some(&db), &["sync"]);

        let text = expect_code(&output, 1);
        assert!(
            text.contains(&format!(
                "line {line}: a quote opened in this row is never closed"
            )),
            "{text}"
        );
        assert_eq!(
            db.scalar(stored).await,
            100,
            "the stored days are untouched"
        );
    }
    let status = db
        .rows("SELECT status FROM ingest_runs ORDER BY id DESC LIMIT 1")
        .await;
    assert_eq!(status[0][0].as_deref(), Some("failed"));
}
on_both!(an_unclosed_quote_fails_the_run_and_keeps_the_stored_days);

/// A value too small for a normal float (1e-315) syncs again without an error (a change test
/// with a relative tolerance made PostgreSQL underflow).
async fn a_subnormal_value_syncs_twice(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = ads_project("Day,Channel,Cost,Conversions\n2024-01-01,search,1e-315,1\n");
    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);
    std::fs::write(
        dir.path().join("data/ads_2024.csv"),
        "Day,Channel,Cost,Conversions\n2024-01-01,search,1e-315,2\n",
    )
    .unwrap();
    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);
    let changed = "SELECT points_written FROM ingest_runs ORDER BY id DESC LIMIT 1";
    assert_eq!(db.scalar(changed).await, 1, "only the conversions changed");
}
on_both!(a_subnormal_value_syncs_twice);

/// A correction tiny next to the value is written, and so is a huge value changing sign
/// (the change test once ignored relative changes under 1e-12 and overflowed on PostgreSQL).
async fn every_correction_is_written_however_small(backend: Backend) {
    let db = TestDb::new(backend).await;
    let file = |cost: &str, conversions: &str| {
        format!("Day,Channel,Cost,Conversions\n2024-01-01,search,{cost},{conversions}\n")
    };
    let dir = ads_project(&file("1234567890123.25", "1e308"));
    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);
    let data = dir.path().join("data/ads_2024.csv");
    std::fs::write(&data, file("1234567890124", "-1e308")).unwrap();
    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);

    let changed = "SELECT points_written FROM ingest_runs ORDER BY id DESC LIMIT 1";
    assert_eq!(db.scalar(changed).await, 2);
    let values = db
        .rows("SELECT metric, CAST(value AS TEXT) FROM metric_points ORDER BY metric")
        .await;
    let value = |row: &Vec<Option<String>>| row[1].as_deref().unwrap().parse::<f64>().unwrap();
    assert_eq!(values[0][0].as_deref(), Some("conversions"));
    assert_eq!(value(&values[0]), -1e308);
    assert_eq!(values[1][0].as_deref(), Some("spend"));
    assert_eq!(value(&values[1]), 1234567890124.0);
    std::fs::write(&data, file("1234567890124", "-1e308")).unwrap();
    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);
    assert_eq!(db.scalar(changed).await, 0, "unchanged data writes nothing");
}
on_both!(every_correction_is_written_however_small);

/// A file said to be UTF-8 with one row of bytes that are not: that row is rejected with
/// its line, the others load.
async fn a_row_of_bad_bytes_in_a_utf8_file_is_rejected(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = ads_project("");
    let connector = format!("{CONNECTOR}\n[format]\nencoding = \"utf-8\"\n");
    std::fs::write(dir.path().join("connectors/ads.toml"), connector).unwrap();
    let mut csv = b"Day,Channel,Cost,Conversions\n2024-01-01,search,10,1\n".to_vec();
    csv.extend_from_slice(b"2024-01-01,soc\xff\xfeial,20,2\n2024-01-02,search,40,4\n");
    std::fs::write(dir.path().join("data/ads_2024.csv"), csv).unwrap();

    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);

    let rejected = db.rows("SELECT location, reason FROM rejected_rows").await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0][0]
            .as_deref()
            .unwrap()
            .ends_with("ads_2024.csv:3")
    );
    assert!(rejected[0][1].as_deref().unwrap().contains("not valid"));
    let spend = "SELECT CAST(sum(value) AS BIGINT) FROM metric_points WHERE metric = 'spend'";
    assert_eq!(db.scalar(spend).await, 50);
}
on_both!(a_row_of_bad_bytes_in_a_utf8_file_is_rejected);

/// A NUL character in a dimension cell rejects that row with its line on both databases
/// (PostgreSQL cannot store it; it once failed the whole run there).
async fn a_nul_in_a_dimension_rejects_the_row(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = ads_project(
        "Day,Channel,Cost,Conversions\n2024-01-01,search,10,1\n2024-01-01,so\u{0}cial,20,2\n",
    );

    expect_code(&krscore(dir.path(), Some(&db), &["sync"]), 0);

    let rejected = db.rows("SELECT location, reason FROM rejected_rows").await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0][0]
            .as_deref()
            .unwrap()
            .ends_with("ads_2024.csv:3")
    );
    assert!(rejected[0][1].as_deref().unwrap().contains("NUL character"));
    let raw = db.rows("SELECT raw FROM rejected_rows").await;
    assert_eq!(raw[0][0].as_deref(), Some("2024-01-01,so\u{2400}cial,20,2"));
    let spend = "SELECT CAST(sum(value) AS BIGINT) FROM metric_points WHERE metric = 'spend'";
    assert_eq!(db.scalar(spend).await, 10);
}
on_both!(a_nul_in_a_dimension_rejects_the_row);
