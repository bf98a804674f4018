//! The integration tests: the real binary on real files, SQL on the resulting tables, on
//! SQLite and on PostgreSQL (a fresh database per test).

mod check;
mod end_to_end;
mod http;
mod ingest;
mod mock;
mod quirks;
mod scoring;
mod service;
mod store;
mod support;
