//! The HTTP application: proxy routes served by the core gateway, health probes, and (later)
//! the admin API and dashboard.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::BoxFuture;
use gateway_core::Gateway;
use tower::Service;

use crate::db::Database;

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The core pipeline.
    pub gateway: Gateway,
    /// The database, for readiness.
    pub db: Database,
}

/// Paths of the server's own routes; every other path is the gateway's.
const SERVER_PATHS: &[&str] = &["/", "/healthz", "/readyz"];

/// Builds the service a listener serves. Everything that is not a server route goes to the
/// gateway, which decides what is an endpoint and answers unknown paths in the caller's dialect.
pub fn app(state: AppState) -> App {
    App { gateway: state.gateway.clone(), routes: server_routes(state) }
}

fn server_routes(state: AppState) -> Router {
    Router::new()
        // Claude Code probes the base URL with `HEAD /` at start.
        .route("/", get(root).head(root))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The server's routes through axum, and proxy traffic straight to the gateway: routing every
/// proxied request through the router cost a few allocations and boxed futures each (path
/// parameters, extensions map, handler future) for nothing.
#[derive(Clone, Debug)]
pub struct App {
    gateway: Gateway,
    routes: Router,
}

impl Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if SERVER_PATHS.contains(&req.uri().path()) {
            return Box::pin(self.routes.call(req));
        }
        let response = self.gateway.handle(req);
        Box::pin(async move { Ok(response.await.map(Body::new)) })
    }
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
