//! The HTTP application: proxy routes served by the core gateway, health probes, and (later)
//! the admin API and dashboard.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gateway_core::Gateway;

use crate::db::Database;

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The core pipeline.
    pub gateway: Gateway,
    /// The database, for readiness.
    pub db: Database,
}

/// Builds the router. Everything that is not a server route goes to the gateway, which decides
/// what is an endpoint and answers unknown paths in the caller's dialect.
pub fn router(state: AppState) -> Router {
    Router::new()
        // Claude Code probes the base URL with `HEAD /` at start.
        .route("/", get(root).head(root))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(proxy)
        .with_state(state)
}

async fn root() -> &'static str {
    "llm-gateway\n"
}

async fn healthz() -> impl IntoResponse {
    ([("content-type", "application/json")], r#"{"status":"ok"}"#)
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    // Limit-store failures (Redis unreachable) do not make the gateway unready, since limits
    // fail open by default, but operators see them here and in the log.
    let limit_failures = state.gateway.limits().failures();
    match state.db.ping().await {
        Ok(()) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            serde_json::json!({"status": "ready", "limit_store_failures": limit_failures}).to_string(),
        ),
        Err(e) => {
            tracing::warn!("readiness check failed: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [("content-type", "application/json")],
                serde_json::json!({"status": "unavailable", "reason": "database unreachable"}).to_string(),
            )
        }
    }
}

async fn proxy(State(state): State<AppState>, req: Request) -> Response {
    state.gateway.handle(req).await.map(Body::new)
}
