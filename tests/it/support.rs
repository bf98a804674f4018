//! Test support: a fresh database per test on SQLite or PostgreSQL, project directories made
//! from the examples or from scratch, and the real binary run on them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use krscore::store::Store;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The server tests create their databases on; CI starts it and fails when it is down.
pub fn postgres_admin_url() -> String {
    std::env::var("KRSCORE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database that exists for one test and is dropped after it.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: tempfile::TempDir,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.path().join("test.db").display()),
                pg_name: None,
                _dir: dir,
            },
            Backend::Postgres => {
                let name = format!(
                    "krscore_test_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::SeqCst)
                );
                let admin = postgres_admin_url();
                let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|err| {
                    panic!("PostgreSQL is required for the tests and is not reachable at {admin}: {err}")
                });
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name}"
                )))
                .execute(&pool)
                .await
                .unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
                TestDb {
                    url: format!("{base}/{name}"),
                    pg_name: Some(name),
                    _dir: dir,
                }
            }
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.url, 2)
            .await
            .expect("connect to the test database")
    }

    /// Runs a query returning one integer.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let store = self.store().await;
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        let value = on_both_pools!(&store, pool => {
            sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await
        });
        store.close().await;
        value.unwrap_or_else(|err| panic!("query failed: {err}"))
    }

    /// Runs a query returning rows of text (cast in SQL as needed).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        use sqlx::Row;
        let store = self.store().await;
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        let rows = on_both_pools!(&store, pool => {
            sqlx::query(sql).fetch_all(pool).await.map(|rows| {
                rows.iter()
                    .map(|r| (0..r.len()).map(|i| r.get::<Option<String>, _>(i)).collect())
                    .collect()
            })
        });
        store.close().await;
        rows.unwrap_or_else(|err| panic!("query failed: {err}"))
    }
}

/// The same code on whichever pool a store holds.
macro_rules! on_both_pools {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}
use on_both_pools;

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // dropped from a plain thread: Drop cannot await
        let admin = postgres_admin_url();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/data/...` next to the repository.
pub fn shared(path: &str) -> PathBuf {
    repo().join("../shared").join(path)
}

/// Runs the krscore binary on a project with the test database.
pub fn krscore(project: &Path, db: Option<&TestDb>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_krscore"));
    command.arg("--project-dir").arg(project).args(args);
    command.env_remove("KRSCORE_ENV").env_remove("RUST_LOG");
    match db {
        Some(db) => command.env("KRSCORE__DATABASE__URL", &db.url),
        None => command.env("KRSCORE__DATABASE__URL", "sqlite::memory:"),
    };
    command.output().expect("run krscore")
}

/// Panics with both streams when the command did not exit with `code`.
pub fn expect_code(output: &Output, code: i32) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(
        output.status.code(),
        Some(code),
        "unexpected exit code\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    format!("{stdout}\n{stderr}")
}

/// A copy of an example project in a temporary directory.
pub fn copy_example(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("examples").join(name), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if !entry.file_name().to_string_lossy().contains(".db") {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Writes `files` (path, content) into a fresh project directory.
pub fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }
    dir
}

/// Defines one test per backend from an async function taking the backend.
#[macro_export]
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(Backend::Postgres).await;
            }
        }
    };
}
