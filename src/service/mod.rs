//! `krscore run`: the long-running service. One loop owns the schedule of every connector and
//! of scoring; each due run is claimed (see [`claims`]), run off the loop under a global limit
//! and a timeout, and followed by scoring. SIGTERM and SIGINT stop new runs and give running
//! ones a grace period; SIGHUP re-reads the configuration. [`http`] serves health and metrics.
//!
//! To schedule a new kind of work, give it a [`Job`] and a branch in [`Service::start_job`].

pub mod claims;
pub mod http;
pub mod telemetry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, error, info, info_span, warn};

use crate::connector::Cancel;
use crate::ingest;
use crate::project::Project;
use crate::schedule::CronSchedule;
use crate::scoring;
use crate::store::Store;
use claims::Claims;
use telemetry::Metrics;

/// The task name of the scoring schedule (connectors use their own names).
const SCORING: &str = "__scoring";

/// One scheduled piece of work.
struct Job {
    schedule: CronSchedule,
    next_due: DateTime<Utc>,
    running: Option<JoinHandle<()>>,
    /// Stops the run in progress.
    cancel: Cancel,
    /// The ingest run id of the run in progress, to clean up if it is aborted.
    run_id: Arc<Mutex<Option<i64>>>,
}

/// State shared with the HTTP listener.
pub struct Shared {
    pub metrics: Metrics,
    pub store: Store,
    /// Last time the scheduler loop went round, for `/healthz`.
    pub heartbeat: Mutex<Instant>,
}

/// The running service.
pub struct Service {
    project_dir: PathBuf,
    project: Arc<RwLock<Arc<Project>>>,
    store: Store,
    shared: Arc<Shared>,
    claims: Claims,
    limit: Arc<Semaphore>,
    jobs: HashMap<String, Job>,
}

fn replica_name(configured: Option<&str>) -> String {
    if let Some(name) = configured {
        return name.to_string();
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "krscore".into());
    format!("{host}-{}", std::process::id())
}

impl Service {
    pub fn new(project_dir: PathBuf, project: Project, store: Store) -> Service {
        let settings = &project.settings.service;
        let claims = Claims::new(
            store.clone(),
            replica_name(settings.replica_id.as_deref()),
            Duration::from_secs(settings.lease_secs),
        );
        let limit = Arc::new(Semaphore::new(settings.max_concurrent_runs));
        let shared = Arc::new(Shared {
            metrics: Metrics::new(),
            store: store.clone(),
            heartbeat: Mutex::new(Instant::now()),
        });
        Service {
            project_dir,
            project: Arc::new(RwLock::new(Arc::new(project))),
            store,
            shared,
            claims,
            limit,
            jobs: HashMap::new(),
        }
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn project(&self) -> Arc<Project> {
        self.project.read().expect("project lock").clone()
    }

    /// (Re)builds the job list from the project's schedules, keeping running jobs.
    fn plan(&mut self, now: DateTime<Utc>) {
        let project = self.project();
        let mut wanted: HashMap<String, CronSchedule> = HashMap::new();
        for connector in &project.connectors {
            if let Some(line) = connector.schedule()
                && let Ok(schedule) = CronSchedule::parse(line, connector.timezone)
            {
                wanted.insert(connector.name.clone(), schedule);
            }
        }
        let scoring_line = project.settings.scoring.schedule.trim();
        if !scoring_line.is_empty() {
            let tz = project
                .settings
                .scoring
                .timezone
                .parse()
                .unwrap_or(chrono_tz::UTC);
            if let Ok(schedule) = CronSchedule::parse(scoring_line, tz) {
                wanted.insert(SCORING.to_string(), schedule);
            }
        }
        self.jobs.retain(|name, _| wanted.contains_key(name));
        for (name, schedule) in wanted {
            let next_due = schedule
                .next_after(now)
                .unwrap_or(now + chrono::TimeDelta::days(3650));
            match self.jobs.get_mut(&name) {
                Some(job) if job.schedule.source == schedule.source => {}
                Some(job) => {
                    job.schedule = schedule;
                    job.next_due = next_due;
                }
                None => {
                    self.jobs.insert(
                        name,
                        Job {
                            schedule,
                            next_due,
                            running: None,
                            cancel: Cancel::default(),
                            run_id: Arc::new(Mutex::new(None)),
                        },
                    );
                }
            }
        }
    }

    /// Runs until SIGTERM or SIGINT.
    pub async fn run(mut self) -> anyhow::Result<()> {
        // signals first, so a SIGTERM or SIGHUP during start-up is handled, not fatal
        let (stop_tx, mut stop_rx) = watch::channel(false);
        spawn_signal_listener(stop_tx);
        #[cfg(unix)]
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let started = Utc::now();
        self.plan(started);
        info!(
            replica = %self.claims.replica,
            jobs = self.jobs.len(),
            backend = self.store.backend(),
            "krscore service started"
        );

        // series exist from the start, and the last success survives restarts
        for name in self.jobs.keys().filter(|n| n.as_str() != SCORING) {
            let label = telemetry::ConnectorLabel {
                connector: name.clone(),
            };
            let metrics = &self.shared.metrics;
            let _ = metrics.skipped_ticks.get_or_create(&label);
            for outcome in ["succeeded", "failed"] {
                let run = telemetry::RunLabel {
                    connector: name.clone(),
                    outcome: outcome.into(),
                };
                let _ = metrics.runs.get_or_create(&run);
            }
            if let Ok(Some(last)) = self.store.last_success(name).await {
                let seconds = last.timestamp_millis() as f64 / 1000.0;
                metrics.last_success.get_or_create(&label).set(seconds);
            }
        }
        update_score_metrics(&self.store, &self.shared).await;

        // catch up: a job whose last success is older than its previous tick runs once now
        let names: Vec<String> = self.jobs.keys().cloned().collect();
        for name in names {
            if name == SCORING {
                continue;
            }
            let last = self.store.last_success(&name).await?;
            let job = self.jobs.get(&name).expect("planned");
            let missed = match last {
                None => true,
                Some(last) => job.schedule.next_after(last).is_some_and(|t| t <= started),
            };
            if missed {
                // the same tick on every replica, so only one of them runs it
                let due = last
                    .and_then(|l| job.schedule.next_after(l))
                    .or_else(|| job.schedule.previous_at_or_before(started))
                    .unwrap_or(started);
                info!(connector = %name, due = %due, "catching up a missed run");
                self.start_job(&name, due).await;
            }
        }

        let sweep_every = self.claims.lease / 2;
        let mut sweep = tokio::time::interval(sweep_every.max(Duration::from_secs(1)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            *self.shared.heartbeat.lock().expect("heartbeat lock") = Instant::now();
            let now = Utc::now();
            let next = self.jobs.values().map(|j| j.next_due).min();
            let wait = next
                .map(|n| (n - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop_rx.changed() => break,
                _ = sweep.tick() => {
                    self.take_over_expired().await;
                    continue;
                }
                _ = hangup_recv(&mut hangup) => {
                    self.reload();
                    continue;
                }
            }
            let now = Utc::now();
            let due: Vec<(String, DateTime<Utc>)> = self
                .jobs
                .iter()
                .filter(|(_, j)| j.next_due <= now)
                .map(|(n, j)| (n.clone(), j.next_due))
                .collect();
            for (name, due_at) in due {
                if let Some(job) = self.jobs.get_mut(&name) {
                    job.next_due = job
                        .schedule
                        .next_after(now.max(due_at))
                        .unwrap_or(now + chrono::TimeDelta::days(3650));
                }
                self.start_job(&name, due_at).await;
            }
        }

        self.shutdown().await;
        Ok(())
    }

    /// Claims and starts one due run, unless the previous one is still going. The loop itself
    /// never waits on the database: claiming happens in the run's task.
    async fn start_job(&mut self, name: &str, due: DateTime<Utc>) {
        let Some(job) = self.jobs.get_mut(name) else {
            return;
        };
        if job.running.as_ref().is_some_and(|h| !h.is_finished()) {
            warn!(connector = %name, due = %due, "previous run still going: tick skipped");
            self.shared
                .metrics
                .skipped_ticks
                .get_or_create(&telemetry::ConnectorLabel {
                    connector: name.to_string(),
                })
                .inc();
            return;
        }
        let cancel = Cancel::default();
        job.cancel = cancel.clone();
        let run_id = job.run_id.clone();
        let project = self.project();
        let store = self.store.clone();
        let shared = self.shared.clone();
        let claims = self.claims.clone();
        let limit = self.limit.clone();
        let task = name.to_string();
        let timeout = Duration::from_secs(project.settings.service.run_timeout_secs);
        let handle = tokio::spawn(async move {
            let Ok(_permit) = limit.acquire_owned().await else {
                return;
            };
            match claims.try_claim(&task, due).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(err) => {
                    error!(error = %err, connector = %task, "cannot claim a run");
                    return;
                }
            }
            let lock = match claims.lock(&task).await {
                Ok(Some(lock)) => lock,
                Ok(None) => {
                    warn!(connector = %task, "already running on another replica: tick skipped");
                    shared
                        .metrics
                        .skipped_ticks
                        .get_or_create(&telemetry::ConnectorLabel {
                            connector: task.clone(),
                        })
                        .inc();
                    let _ = claims.finish(&task, due).await;
                    return;
                }
                Err(err) => {
                    error!(error = %err, connector = %task, "cannot take the run lock");
                    return;
                }
            };
            // keep the claim alive while the run goes on
            let renewer = {
                let (claims, task) = (claims.clone(), task.clone());
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(claims.lease / 3);
                    every.tick().await;
                    loop {
                        every.tick().await;
                        let _ = claims.renew(&task, due).await;
                    }
                })
            };
            let work = run_task(
                &project,
                &store,
                &shared,
                &claims.replica,
                &task,
                due,
                &run_id,
                &cancel,
            );
            tokio::pin!(work);
            tokio::select! {
                _ = &mut work => {}
                _ = tokio::time::sleep(timeout) => {
                    // stop the read; the run is then recorded as failed
                    error!(
                        connector = %task,
                        timeout_secs = timeout.as_secs(),
                        "run timed out: cancelling it"
                    );
                    cancel.cancel();
                    work.await;
                }
            }
            renewer.abort();
            let _ = claims.finish(&task, due).await;
            lock.release().await;
        });
        if let Some(job) = self.jobs.get_mut(name) {
            job.running = Some(handle);
        }
    }

    /// Claims runs whose replica died and runs them here.
    async fn take_over_expired(&mut self) {
        let expired = match self.claims.expired().await {
            Ok(expired) => expired,
            Err(err) => {
                error!(error = %err, "cannot read expired claims");
                return;
            }
        };
        for (task, due) in expired {
            if self.jobs.contains_key(&task) {
                info!(connector = %task, due = %due, "taking over a run whose replica stopped");
                self.start_job(&task, due).await;
            }
        }
    }

    fn reload(&mut self) {
        match Project::load(&self.project_dir) {
            Ok(project) => {
                let old = self.project();
                let changed = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
                    format!("{a:?}") != format!("{b:?}")
                };
                let restart: Vec<&str> = [
                    (
                        "[database]",
                        changed(&old.settings.database, &project.settings.database),
                    ),
                    (
                        "[service]",
                        changed(&old.settings.service, &project.settings.service),
                    ),
                    ("[log]", changed(&old.settings.log, &project.settings.log)),
                ]
                .into_iter()
                .filter_map(|(name, changed)| changed.then_some(name))
                .collect();
                if !restart.is_empty() {
                    warn!(
                        sections = %restart.join(", "),
                        "changed settings take effect only after a restart"
                    );
                }
                info!("configuration reloaded");
                *self.project.write().expect("project lock") = Arc::new(project);
                self.plan(Utc::now());
            }
            Err(errors) => {
                error!(error = %errors, "the new configuration is invalid; keeping the old one");
            }
        }
    }

    async fn shutdown(mut self) {
        let grace = Duration::from_secs(self.project().settings.service.shutdown_grace_secs);
        let running: Vec<(String, Job)> = self
            .jobs
            .drain()
            .filter(|(_, j)| j.running.as_ref().is_some_and(|h| !h.is_finished()))
            .collect();
        info!(
            running = running.len(),
            grace_secs = grace.as_secs(),
            "shutting down"
        );
        let deadline = tokio::time::Instant::now() + grace;
        for (name, job) in running {
            let Some(mut handle) = job.running else {
                continue;
            };
            if tokio::time::timeout_at(deadline, &mut handle).await.is_ok() {
                continue;
            }
            // past the grace period: stop the read, give it a moment, then drop the task (its
            // transaction rolls back; a SQLite write already under way on its blocking thread
            // finishes first, and one not yet begun finds its run gone and writes nothing); the
            // run's row goes too unless it was committed, leaving no trace
            job.cancel.cancel();
            if tokio::time::timeout(Duration::from_secs(10), &mut handle)
                .await
                .is_err()
            {
                handle.abort();
                let _ = handle.await;
            }
            let aborted = job.run_id.lock().expect("run id lock").take();
            if let Some(id) = aborted {
                let _ = self.store.forget_run(id).await;
            }
            warn!(connector = %name, "run cancelled at shutdown and rolled back");
        }
        self.store.close().await;
        info!("krscore service stopped");
    }
}

/// One scheduled run: a connector sync followed by scoring, or a scoring pass.
#[expect(
    clippy::too_many_arguments,
    reason = "the run's context, passed once from its task"
)]
async fn run_task(
    project: &Project,
    store: &Store,
    shared: &Shared,
    replica: &str,
    task: &str,
    due: DateTime<Utc>,
    run_id: &Mutex<Option<i64>>,
    cancel: &Cancel,
) {
    let today = scoring::today(project);
    if task == SCORING {
        let span = info_span!("scheduled_scoring");
        if let Err(err) = scoring::run(project, store, &[today], "schedule")
            .instrument(span)
            .await
        {
            error!(error = %format!("{err:#}"), "scheduled scoring failed");
        }
        update_score_metrics(store, shared).await;
        return;
    }
    let Some(connector) = project.connector(task) else {
        return;
    };
    let started = Instant::now();
    let outcome =
        ingest::sync_connector_scheduled(project, store, connector, due, replica, run_id, cancel)
            .await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(err) => {
            // the database failed under the run: count it, and record it if it answers
            let message = format!("{err:#}");
            error!(connector = %task, error = %message, "connector run failed");
            let label = telemetry::RunLabel {
                connector: task.to_string(),
                outcome: "failed".into(),
            };
            shared.metrics.runs.get_or_create(&label).inc();
            let id = run_id.lock().expect("run id lock").take();
            if let Some(id) = id {
                let record = crate::store::RunRecord::default();
                let _ = store
                    .fail_ingest_run(id, task, &[], &record, &message)
                    .await;
            }
            return;
        }
    };
    shared
        .metrics
        .record_run(&outcome, started.elapsed().as_secs_f64());
    if cancel.is_cancelled() {
        // a cancelled run is recorded as failed; at shutdown its row is removed after this
        return;
    }
    *run_id.lock().expect("run id lock") = None;
    if outcome.succeeded {
        // every successful sync re-scores: restated days, then today
        let result = async {
            ingest::rescore_restated(project, store, std::slice::from_ref(&outcome)).await?;
            scoring::run(project, store, &[today], "after_sync").await
        }
        .await;
        if let Err(err) = result {
            error!(error = %format!("{err:#}"), "scoring after the sync failed");
        }
        update_score_metrics(store, shared).await;
    }
}

async fn update_score_metrics(store: &Store, shared: &Shared) {
    if let Ok((counts, newest)) = store.score_summary().await {
        shared.metrics.krs_by_status.clear();
        for (status, n) in counts {
            shared
                .metrics
                .krs_by_status
                .get_or_create(&telemetry::StatusLabel { status })
                .set(n);
        }
        *shared.metrics.newest_score_at.lock().expect("metrics lock") =
            newest.map(|t| t.timestamp_millis() as f64 / 1000.0);
    }
}

fn spawn_signal_listener(stop: watch::Sender<bool>) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received"),
                _ = int.recv() => info!("SIGINT received"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        let _ = stop.send(true);
    });
}

#[cfg(unix)]
async fn hangup_recv(signal: &mut tokio::signal::unix::Signal) {
    signal.recv().await;
}
