//! Claims on scheduled runs, so that several replicas on one PostgreSQL share the work: each
//! due run is claimed by exactly one replica through `run_claims`, the lease is renewed while
//! the run goes on, and a run whose lease expired (its replica died) is claimed by another.
//! A connector also holds a session advisory lock while it runs, so it never runs twice at once.
//! With SQLite a single process runs everything and claims always succeed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;

use crate::store::Store;

/// Claims for one replica.
#[derive(Clone)]
pub struct Claims {
    store: Store,
    pub replica: String,
    pub lease: Duration,
}

/// A connector's run lock, held while it runs, by the service and by a manual `sync` alike:
/// a session advisory lock on PostgreSQL, a lock file next to a SQLite database. Released on
/// `release` or when dropped (the session or the file handle ends).
pub struct RunLock {
    connection: Option<PoolConnection<sqlx::Postgres>>,
    key: i64,
    _file: Option<std::fs::File>,
}

impl RunLock {
    pub async fn release(mut self) {
        if let Some(mut connection) = self.connection.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.key)
                .execute(&mut *connection)
                .await;
        }
    }
}

/// Takes `task`'s run lock, or `None` when it runs elsewhere right now.
pub async fn lock_task(store: &Store, task: &str) -> anyhow::Result<Option<RunLock>> {
    match store {
        Store::Postgres(pool) => {
            let key = lock_key(task);
            let mut connection = pool.acquire().await?;
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut *connection)
                .await?;
            Ok(locked.then_some(RunLock {
                connection: Some(connection),
                key,
                _file: None,
            }))
        }
        Store::Sqlite(pool) => {
            // an in-memory database lives in this process only: nothing to share, and no lock
            // file to leave in the working directory
            let Some(database) = crate::store::sqlite_database_file(pool) else {
                return Ok(Some(RunLock {
                    connection: None,
                    key: 0,
                    _file: None,
                }));
            };
            let path = format!("{}.{task}.run.lock", database.display());
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|err| anyhow::anyhow!("cannot open {path}: {err}"))?;
            Ok(file.try_lock().is_ok().then_some(RunLock {
                connection: None,
                key: 0,
                _file: Some(file),
            }))
        }
    }
}

fn lock_key(task: &str) -> i64 {
    // a stable 63-bit key from the task name (FNV-1a)
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in format!("krscore:{task}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    (hash >> 1) as i64
}

impl Claims {
    pub fn new(store: Store, replica: String, lease: Duration) -> Claims {
        Claims {
            store,
            replica,
            lease,
        }
    }

    fn lease_until(&self) -> DateTime<Utc> {
        Utc::now()
            + chrono::TimeDelta::from_std(self.lease).unwrap_or(chrono::TimeDelta::seconds(60))
    }

    /// Claims the run of `task` due at `due`; false when another replica holds it or did it.
    pub async fn try_claim(&self, task: &str, due: DateTime<Utc>) -> sqlx::Result<bool> {
        let Store::Postgres(pool) = &self.store else {
            return Ok(true);
        };
        let sql = "INSERT INTO run_claims (task, due_at, claimed_by, lease_until, finished) \
                   VALUES ($1, $2, $3, $4, FALSE) \
                   ON CONFLICT (task, due_at) DO UPDATE SET claimed_by = excluded.claimed_by, \
                   lease_until = excluded.lease_until \
                   WHERE run_claims.finished = FALSE AND run_claims.lease_until < now() \
                   RETURNING claimed_by";
        let claimed: Option<String> = sqlx::query_scalar(sql)
            .bind(task)
            .bind(due)
            .bind(&self.replica)
            .bind(self.lease_until())
            .fetch_optional(pool)
            .await?;
        Ok(claimed.as_deref() == Some(self.replica.as_str()))
    }

    /// Extends the lease of a claim this replica holds.
    pub async fn renew(&self, task: &str, due: DateTime<Utc>) -> sqlx::Result<()> {
        let Store::Postgres(pool) = &self.store else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE run_claims SET lease_until = $4 WHERE task = $1 AND due_at = $2 AND claimed_by = $3",
        )
        .bind(task)
        .bind(due)
        .bind(&self.replica)
        .bind(self.lease_until())
        .execute(pool)
        .await
        .map(|_| ())
    }

    /// Marks a claimed run done (succeeded, failed or skipped): nobody runs it again.
    pub async fn finish(&self, task: &str, due: DateTime<Utc>) -> sqlx::Result<()> {
        let Store::Postgres(pool) = &self.store else {
            return Ok(());
        };
        sqlx::query("UPDATE run_claims SET finished = TRUE WHERE task = $1 AND due_at = $2 AND claimed_by = $3")
            .bind(task)
            .bind(due)
            .bind(&self.replica)
            .execute(pool)
            .await
            .map(|_| ())
    }

    /// Runs whose replica stopped renewing their lease, oldest first.
    pub async fn expired(&self) -> sqlx::Result<Vec<(String, DateTime<Utc>)>> {
        let Store::Postgres(pool) = &self.store else {
            return Ok(Vec::new());
        };
        sqlx::query_as(
            "SELECT task, due_at FROM run_claims WHERE finished = FALSE AND lease_until < now() \
             ORDER BY due_at LIMIT 20",
        )
        .fetch_all(pool)
        .await
    }

    /// Takes the task's run lock, or `None` when the task runs elsewhere right now.
    pub async fn lock(&self, task: &str) -> anyhow::Result<Option<RunLock>> {
        lock_task(&self.store, task).await
    }
}
