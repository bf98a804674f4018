//! The command line: `krscore [--project-dir DIR] COMMAND`.
//!
//! Exit codes: 0 done, 1 a run failed, 2 bad configuration or usage. To add a command, add a
//! variant to [`Command`] and a branch to [`execute`].

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use comfy_table::{Table, presets};

use crate::project::Project;
use crate::settings::redact_url;
use crate::store::Store;
use crate::{ingest, scoring, status, telemetry};

/// Turns marketing exports into scored OKR key results.
#[derive(Debug, Parser)]
#[command(name = "krscore", version, about)]
pub struct Cli {
    /// The project directory (with config/, connectors/ and the data).
    #[arg(
        short = 'C',
        long,
        global = true,
        env = "KRSCORE_PROJECT_DIR",
        default_value = "."
    )]
    pub project_dir: PathBuf,
    /// Log at DEBUG level (RUST_LOG overrides).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The service: connectors and scoring on their schedules, with health and metrics
    /// endpoints; with --once, sync every connector, score, print the status view and exit.
    Run {
        /// Sync, score, print the status view and exit.
        #[arg(long)]
        once: bool,
        /// The as-of day to score (default: today in the scoring time zone).
        #[arg(long, value_parser = parse_day)]
        as_of: Option<NaiveDate>,
    },
    /// Run connectors now (all of them when none is named).
    Sync {
        /// Connector names (file names in connectors/ without .toml).
        connectors: Vec<String>,
        /// HTTP connectors with a [window]: fetch these days instead of the incremental
        /// window (a backfill or a re-fetch).
        #[arg(long, value_parser = parse_day, requires = "to")]
        from: Option<NaiveDate>,
        /// Last day to fetch, with --from.
        #[arg(long, value_parser = parse_day, requires = "from")]
        to: Option<NaiveDate>,
    },
    /// Score every KR for a day or a range of days.
    Score {
        /// The as-of day (default: today in the scoring time zone).
        #[arg(long, value_parser = parse_day, conflicts_with_all = ["from", "to"])]
        as_of: Option<NaiveDate>,
        /// First day of a backfill.
        #[arg(long, value_parser = parse_day, requires = "to")]
        from: Option<NaiveDate>,
        /// Last day of a backfill.
        #[arg(long, value_parser = parse_day, requires = "from")]
        to: Option<NaiveDate>,
    },
    /// Show objectives and KRs with value, target, score, grade and status.
    Status {
        /// Show the scores of this as-of day instead of the latest.
        #[arg(long, value_parser = parse_day)]
        as_of: Option<NaiveDate>,
    },
    /// Check every file of the project and report all problems at once.
    Check,
    /// The end-of-period review: final scores, zones per owner, calibration advice.
    Review {
        /// The period, such as 2026-Q4.
        period: String,
        /// Review as of this day instead of today (clipped to the period's end).
        #[arg(long, value_parser = parse_day)]
        as_of: Option<NaiveDate>,
    },
    /// Show the points a connector would load, writing nothing.
    Preview {
        /// The connector name.
        connector: String,
        /// How many points to show.
        #[arg(long, default_value_t = 20)]
        rows: usize,
        /// HTTP connectors with a [window]: fetch these days (default: what the next run
        /// would fetch).
        #[arg(long, value_parser = parse_day, requires = "to")]
        from: Option<NaiveDate>,
        /// Last day to fetch, with --from.
        #[arg(long, value_parser = parse_day, requires = "from")]
        to: Option<NaiveDate>,
    },
}

/// A day given on the command line, as `YYYY-MM-DD`.
fn parse_day(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("`{text}` is not a day written YYYY-MM-DD, such as 2026-12-03"))
}

/// Longest `score --from --to` range.
const MAX_BACKFILL_DAYS: i64 = 3660;

/// The error and its causes, each said once.
fn describe(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// Exit code for a finished command.
const FAILED: u8 = 1;
const BAD_CONFIG: u8 = 2;

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(FAILED);
        }
    };
    runtime.block_on(execute(cli))
}

async fn execute(cli: Cli) -> ExitCode {
    let project = match Project::load(&cli.project_dir) {
        Ok(project) => project,
        Err(errors) => {
            eprintln!("error: {errors}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    telemetry::init(&project.settings.log, cli.verbose);
    for warning in &project.warnings {
        tracing::debug!(warning = %warning, "configuration advice (see `krscore check`)");
    }

    if let Command::Check = cli.command {
        return check(&project);
    }
    if let Command::Preview {
        connector,
        rows,
        from,
        to,
    } = &cli.command
    {
        return preview(&project, connector, *rows, from.zip(*to)).await;
    }

    let url = project.database_url();
    let store = match Store::connect(&url, project.settings.database.max_connections).await {
        Ok(store) => store,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            return ExitCode::from(FAILED);
        }
    };
    tracing::debug!(database = %redact_url(&url), backend = store.backend(), "connected");
    let result = match cli.command {
        Command::Run { once, as_of } => {
            if once {
                run_once(&project, &store, as_of).await
            } else {
                serve(&cli.project_dir, project, store.clone()).await
            }
        }
        Command::Sync {
            connectors,
            from,
            to,
        } => sync(&project, &store, &connectors, from.zip(to)).await,
        Command::Score { as_of, from, to } => score(&project, &store, as_of, from, to).await,
        Command::Status { as_of } => show_status(&project, &store, as_of).await,
        Command::Review { period, as_of } => review(&project, &store, &period, as_of).await,
        Command::Check | Command::Preview { .. } => unreachable!("handled above"),
    };
    store.close().await;
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            ExitCode::from(FAILED)
        }
    }
}

fn check(project: &Project) -> ExitCode {
    for warning in &project.warnings {
        println!("warning: {warning}");
    }
    let krs = project.key_results().count();
    println!(
        "ok: {} metric(s), {} connector(s), {} objective(s), {} key result(s)",
        project.catalogue.metrics.len(),
        project.connectors.len(),
        project.objectives.len(),
        krs
    );
    ExitCode::SUCCESS
}

async fn preview(
    project: &Project,
    name: &str,
    rows: usize,
    range: Option<(NaiveDate, NaiveDate)>,
) -> ExitCode {
    let Some(connector) = project.connector(name) else {
        let names = project.connectors.iter().map(|c| c.name.as_str());
        eprintln!(
            "error: {}",
            crate::project::problem::with_hint(format!("no connector `{name}`"), name, names)
        );
        return ExitCode::from(BAD_CONFIG);
    };
    if let Some((from, to)) = range
        && from > to
    {
        eprintln!("error: --from {from} is after --to {to}");
        return ExitCode::from(BAD_CONFIG);
    }
    if range.is_some()
        && let Err(message) = range_applies(&[connector])
    {
        eprintln!("error: {message}");
        return ExitCode::from(BAD_CONFIG);
    }
    let fetch = preview_fetch(project, connector, range).await;
    let extract = match ingest::extract(project, connector, &Default::default(), fetch).await {
        Ok(extract) => extract,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            return ExitCode::from(FAILED);
        }
    };
    let mut out = String::new();
    // shown by day, metric and dimensions: the names and sets are ranked once, so millions of
    // points sort by numbers
    let all = &extract.points;
    let rank = |len: usize, less: &dyn Fn(usize, usize) -> std::cmp::Ordering| {
        let mut order: Vec<usize> = (0..len).collect();
        order.sort_by(|a, b| less(*a, *b));
        let mut rank = vec![0u32; len];
        for (position, index) in order.into_iter().enumerate() {
            rank[index] = position as u32;
        }
        rank
    };
    let metric_rank = rank(all.metrics().len(), &|a, b| {
        all.metrics()[a].cmp(&all.metrics()[b])
    });
    let set_rank = rank(all.sets().len(), &|a, b| all.sets()[a].cmp(&all.sets()[b]));
    let key = |i: &u32| {
        let row = &all.rows()[*i as usize];
        (
            row.day,
            metric_rank[row.metric as usize],
            set_rank[row.set as usize],
        )
    };
    // only the first `rows` are shown: they are picked out, then sorted
    let mut order: Vec<u32> = (0..all.len() as u32).collect();
    if rows < order.len() {
        order.select_nth_unstable_by_key(rows, key);
        order.truncate(rows);
    }
    order.sort_unstable_by_key(key);
    let points: Vec<crate::connector::Point> =
        order.iter().filter_map(|i| all.get(*i as usize)).collect();
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(["day", "metric", "dimensions", "value"]);
    for p in &points {
        let dims: Vec<String> = p
            .dimensions
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let day = if p.until > p.day {
            format!("{}..{}", p.day, p.until)
        } else {
            p.day.to_string()
        };
        table.add_row([
            day,
            p.metric.to_string(),
            dims.join(" "),
            format!("{}", p.value),
        ]);
    }
    let _ = writeln!(out, "{table}");
    if all.len() > rows {
        let _ = writeln!(out, "... {} more point(s)", all.len() - rows);
    }
    // compensated sums (Neumaier): the total does not depend on the points' order, and
    // matches the source's to the last digit shown
    let mut totals: std::collections::BTreeMap<&str, (usize, f64, f64)> = Default::default();
    for row in all.rows() {
        let (count, sum, lost) = totals.entry(all.metric(row)).or_default();
        *count += 1;
        let next = *sum + row.value;
        *lost += if sum.abs() >= row.value.abs() {
            (*sum - next) + row.value
        } else {
            (row.value - next) + *sum
        };
        *sum = next;
    }
    let _ = writeln!(
        out,
        "\n{}: {}, {} row(s) read, {} loaded, {} rejected, {} line(s) skipped; \
         {} point(s) over {} day(s){}",
        connector.name,
        match &connector.kind {
            crate::connector::ConnectorKind::Csv(_) => format!("{} file(s)", extract.sources.len()),
            crate::connector::ConnectorKind::Http(_) => extract.sources.join(", "),
        },
        extract.rows_read,
        extract.rows_loaded,
        extract.rejected.len(),
        extract.rows_skipped,
        all.len(),
        extract.days.len(),
        match (extract.days.first(), extract.days.last()) {
            (Some(a), Some(b)) => format!(" ({a}..{b})"),
            _ => String::new(),
        }
    );
    for (metric, (n, sum, lost)) in totals {
        let _ = writeln!(out, "  {metric}: {n} point(s), sum {}", exact(sum + lost));
    }
    if extract.rows_skipped > 0 {
        let _ = writeln!(
            out,
            "\nskipped {} line(s) that are not data:",
            extract.rows_skipped
        );
        for line in &extract.skipped {
            let _ = writeln!(out, "  {} ({}): {}", line.location, line.reason, line.text);
        }
    }
    for warning in &extract.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    for row in extract.rejected.iter().take(20) {
        let _ = writeln!(
            out,
            "rejected {}: {}\n    {}",
            row.location, row.reason, row.raw
        );
    }
    if extract.rejected.len() > 20 {
        let _ = writeln!(
            out,
            "... {} more rejected row(s)",
            extract.rejected.len() - 20
        );
    }
    emit(&out);
    ExitCode::SUCCESS
}

async fn sync(
    project: &Project,
    store: &Store,
    names: &[String],
    range: Option<(NaiveDate, NaiveDate)>,
) -> anyhow::Result<ExitCode> {
    for name in names {
        if project.connector(name).is_none() {
            let known = project.connectors.iter().map(|c| c.name.as_str());
            eprintln!(
                "error: {}",
                crate::project::problem::with_hint(format!("no connector `{name}`"), name, known)
            );
            return Ok(ExitCode::from(BAD_CONFIG));
        }
    }
    if let Some((from, to)) = range
        && from > to
    {
        eprintln!("error: --from {from} is after --to {to}");
        return Ok(ExitCode::from(BAD_CONFIG));
    }
    if range.is_some() {
        let chosen: Vec<&crate::connector::Connector> = if names.is_empty() {
            project.connectors.iter().collect()
        } else {
            names.iter().filter_map(|n| project.connector(n)).collect()
        };
        if let Err(message) = range_applies(&chosen) {
            eprintln!("error: {message}");
            return Ok(ExitCode::from(BAD_CONFIG));
        }
    }
    let outcomes = ingest::sync(project, store, names, "manual", range).await?;
    ingest::rescore_restated(project, store, &outcomes).await?;
    Ok(report_runs(&outcomes))
}

/// `--from --to` choose the days an HTTP connector with a `[window]` fetches; a connector
/// that reads its whole source every run would ignore them. An error when none of `chosen`
/// uses them; a note on stderr naming those that do not, otherwise.
fn range_applies(chosen: &[&crate::connector::Connector]) -> Result<(), String> {
    let whole: Vec<String> = chosen
        .iter()
        .filter(|c| !c.is_incremental())
        .map(|c| format!("`{}`", c.name))
        .collect();
    if whole.is_empty() {
        return Ok(());
    }
    if whole.len() == chosen.len() {
        return Err(format!(
            "--from/--to choose the days an HTTP connector with a [window] fetches; {} \
             read(s) the whole source on every run, so run it without --from/--to",
            whole.join(", ")
        ));
    }
    eprintln!(
        "note: --from/--to do not apply to {}: they read the whole source",
        whole.join(", ")
    );
    Ok(())
}

/// Writes a command's output to stdout at once; a reader that has gone away (`| head`) ends
/// it quietly.
fn emit(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// A sum as it is, so an analyst can compare it with the source (no rounding).
fn exact(value: f64) -> String {
    if value.abs() >= 1e15 || (value != 0.0 && value.abs() < 1e-6) {
        format!("{value:e}")
    } else {
        let text = format!("{value:.6}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// What a preview asks a dated source for: the range given, else what the next run would
/// fetch (the position is read only from a database that already exists).
async fn preview_fetch(
    project: &Project,
    connector: &crate::connector::Connector,
    range: Option<(NaiveDate, NaiveDate)>,
) -> crate::connector::Fetch {
    let mut fetch = crate::connector::Fetch {
        position: None,
        range,
    };
    if range.is_some() || !connector.is_incremental() {
        return fetch;
    }
    let url = project.database_url();
    if let Some(path) = url.strip_prefix("sqlite://") {
        let file = path.split('?').next().unwrap_or_default();
        if !std::path::Path::new(file).is_file() {
            return fetch;
        }
    }
    if let Ok(store) = Store::connect(&url, 1).await {
        fetch.position = store.last_loaded_day(&connector.name).await.ok().flatten();
        store.close().await;
    }
    fetch
}

fn report_runs(outcomes: &[ingest::RunOutcome]) -> ExitCode {
    let mut failed = false;
    for o in outcomes {
        match &o.error {
            None => println!(
                "{}: run {} read {} row(s), loaded {}, rejected {}; {} point(s) changed, {} removed",
                o.connector,
                o.run_id,
                o.rows_read,
                o.rows_loaded,
                o.rows_rejected,
                o.points_written,
                o.points_deleted
            ),
            Some(error) => {
                failed = true;
                println!("{}: run {} FAILED: {error}", o.connector, o.run_id);
            }
        }
    }
    if failed {
        ExitCode::from(FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

async fn score(
    project: &Project,
    store: &Store,
    as_of: Option<NaiveDate>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> anyhow::Result<ExitCode> {
    let days: Vec<NaiveDate> = match (from, to) {
        (Some(from), Some(to)) if (to - from).num_days() > MAX_BACKFILL_DAYS => {
            eprintln!("error: a backfill covers at most {MAX_BACKFILL_DAYS} days; split the range");
            return Ok(ExitCode::from(BAD_CONFIG));
        }
        (Some(from), Some(to)) if from <= to => from.iter_days().take_while(|d| *d <= to).collect(),
        (Some(_), Some(_)) => {
            eprintln!("error: --from must not be after --to");
            return Ok(ExitCode::from(BAD_CONFIG));
        }
        _ => vec![as_of.unwrap_or_else(|| scoring::today(project))],
    };
    let summary = scoring::run(project, store, &days, "manual").await?;
    println!(
        "scored {} KR row(s) and {} objective row(s) in scoring run {} ({} without a score)",
        summary.kr_rows, summary.objective_rows, summary.run_id, summary.unscored
    );
    Ok(ExitCode::SUCCESS)
}

async fn show_status(
    project: &Project,
    store: &Store,
    as_of: Option<NaiveDate>,
) -> anyhow::Result<ExitCode> {
    let objectives = store.objective_scores(as_of).await?;
    let krs = store.kr_scores(as_of).await?;
    let runs = store.latest_ingest_runs().await?;
    emit(&status::render(project, &objectives, &krs, &runs));
    Ok(ExitCode::SUCCESS)
}

async fn review(
    project: &Project,
    store: &Store,
    period: &str,
    as_of: Option<NaiveDate>,
) -> anyhow::Result<ExitCode> {
    let today = as_of.unwrap_or_else(|| scoring::today(project));
    let review = scoring::review::review(project, store, period, today).await?;
    emit(&scoring::review::render(project, &review));
    Ok(ExitCode::SUCCESS)
}

/// `krscore run`: the service, until SIGTERM or SIGINT.
async fn serve(
    project_dir: &std::path::Path,
    project: Project,
    store: Store,
) -> anyhow::Result<ExitCode> {
    // one service per SQLite file: a second one would double every run
    let _lock = match &store {
        Store::Sqlite(_) => Some(sqlite_service_lock(&project)?),
        Store::Postgres(_) => None,
    };
    let listen = project.settings.service.listen.clone();
    let service = crate::service::Service::new(project_dir.to_path_buf(), project, store);
    let listener = if listen.is_empty() {
        None
    } else {
        Some(crate::service::http::serve(&listen, service.shared()).await?)
    };
    let result = service.run().await;
    if let Some(listener) = listener {
        listener.abort();
    }
    result.map(|()| ExitCode::SUCCESS)
}

fn sqlite_service_lock(project: &Project) -> anyhow::Result<std::fs::File> {
    let Some(path) = crate::store::sqlite_file(&project.database_url()) else {
        anyhow::bail!(
            "`krscore run` needs a database file or PostgreSQL, not an in-memory database"
        );
    };
    let lock_path = format!("{path}.service.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|err| anyhow::anyhow!("cannot open {lock_path}: {err}"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => anyhow::bail!(
            "another `krscore run` already serves {path}; with SQLite only one may run \
             (use PostgreSQL for several replicas)"
        ),
    }
}

async fn run_once(
    project: &Project,
    store: &Store,
    as_of: Option<NaiveDate>,
) -> anyhow::Result<ExitCode> {
    let outcomes = ingest::sync(project, store, &[], "run_once", None).await?;
    ingest::rescore_restated(project, store, &outcomes).await?;
    let code = report_runs(&outcomes);
    let day = as_of.unwrap_or_else(|| scoring::today(project));
    scoring::run(project, store, &[day], "run_once").await?;
    show_status(project, store, None).await?;
    Ok(code)
}
