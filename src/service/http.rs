//! The service's HTTP listener: `/healthz` (the scheduler loop is alive), `/readyz` (the
//! database answers) and `/metrics` (OpenMetrics text, which Prometheus reads).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::Shared;

/// The scheduler loop wakes at least once a minute; twice that without a beat is unhealthy.
const HEARTBEAT_LIMIT: Duration = Duration::from_secs(150);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// Serves until the returned task is aborted.
pub async fn serve(
    address: &str,
    shared: Arc<Shared>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {address}: {err}"))?;
    tracing::info!(address = %listener.local_addr()?, "health and metrics listener started");
    Ok(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router(shared)).await {
            tracing::error!(error = %err, "the HTTP listener stopped");
        }
    }))
}

async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let age = shared.heartbeat.lock().expect("heartbeat lock").elapsed();
    if age < HEARTBEAT_LIMIT {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "scheduler stalled\n")
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let ping = tokio::time::timeout(Duration::from_secs(2), shared.store.ping());
    if ping.await.unwrap_or(false) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n")
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}
