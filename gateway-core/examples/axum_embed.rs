//! The gateway inside your own axum app: served under `/llm` next to the app's own routes, behind
//! the app's own authentication. App users present the app's session token; the app maps it to
//! a gateway key, so gateway keys never leave the server.
//!
//! Run it (no network needed: it starts a mock Anthropic upstream on loopback):
//!
//! ```text
//! cargo run -p gateway-core --example axum_embed
//! curl -s localhost:3000/llm/v1/messages -H 'authorization: Bearer app-session-alice' \
//!   -H 'content-type: application/json' \
//!   -d '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}'
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gateway_core::config::ConfigFile;
use gateway_core::store::{MemoryUsageSink, UsageSink};
use gateway_core::{Gateway, GatewayError};

/// The app's own sessions, mapped to the gateway key each user's traffic is billed to.
#[derive(Clone, Default)]
pub struct AppAuth {
    gateway_key_by_session: Arc<HashMap<String, String>>,
}

impl AppAuth {
    /// Sessions → gateway keys.
    pub fn new(pairs: &[(&str, &str)]) -> Self {
        let map = pairs.iter().map(|(s, k)| ((*s).to_owned(), (*k).to_owned())).collect();
        Self { gateway_key_by_session: Arc::new(map) }
    }
}

/// The app's authentication: only its own sessions get through, and the gateway sees the
/// gateway key that session maps to instead of the app's token.
async fn app_auth(State(auth): State<AppAuth>, mut req: Request, next: Next) -> Response {
    let session = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(key) = session.and_then(|s| auth.gateway_key_by_session.get(&s).cloned()) else {
        return (StatusCode::UNAUTHORIZED, "sign in to the app first\n").into_response();
    };
    let headers = req.headers_mut();
    headers.remove("authorization");
    match HeaderValue::from_str(&key) {
        Ok(v) => {
            headers.insert("x-api-key", v);
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
    next.run(req).await
}

/// The app: its own routes plus the gateway under `/llm`.
pub fn app(gateway: Gateway, auth: AppAuth) -> Router {
    let llm = Router::new().fallback_service(gateway).layer(from_fn_with_state(auth, app_auth));
    Router::new().route("/", get(|| async { "my app\n" })).nest("/llm", llm)
}

/// A gateway in front of one Anthropic-compatible upstream, with one user and key.
pub fn gateway(upstream: &str, sink: Arc<dyn UsageSink>) -> Result<Gateway, GatewayError> {
    let toml = format!(
        r#"
[[providers]]
name = "anthropic"
type = "claude"
base_url = "{upstream}"
api_key = "upstream-secret"

[[users]]
name = "alice"
rpm_limit = 60
limit_daily_usd = "5"
[[users.keys]]
name = "app"
key = "sk-gateway-alice-app"

[[prices]]
model = "claude-sonnet-4-5"
input_per_mtok = "3"
output_per_mtok = "15"
"#
    );
    let config = ConfigFile::from_toml_str(&toml).map_err(|e| {
        GatewayError::new(gateway_core::error::ErrorKind::Internal, "invalid_config", e.to_string())
    })?;
    Gateway::builder().config(&config).usage_sink(sink).build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let upstream = gateway_mock::MockUpstream::start().await?;
    let sink = MemoryUsageSink::new();
    let gw = gateway(&upstream.url(), Arc::new(sink.clone()))?;
    let auth = AppAuth::new(&[("app-session-alice", "sk-gateway-alice-app")]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("app on http://{}; the gateway is under /llm", listener.local_addr()?);
    axum::serve(listener, app(gw, auth)).await?;
    Ok(())
}
