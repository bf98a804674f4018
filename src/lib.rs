//! krscore: marketing exports in, scored OKR key results out.
//!
//! The flow is `connector` (read a source into daily points) -> `store` (SQLite or
//! PostgreSQL) -> `scoring` (roll points up over each KR's window and score them) ->
//! tables BI tools read. `project` loads and checks what analysts write; `cli` is the
//! command line.

pub mod cli;
pub mod connector;
pub mod cores;
pub mod ingest;
pub mod metrics;
pub mod okr;
pub mod project;
pub mod schedule;
pub mod scoring;
pub mod service;
pub mod settings;
pub mod status;
pub mod store;
pub mod telemetry;
