//! `GET /v1/models`: the models a caller can use, in the caller's list shape.
//!
//! The list is the upstream's own model list (from a provider the caller may use, chosen like
//! any request) plus every model name the provider's redirects accept. When the upstream list
//! cannot be fetched, the redirect names and the priced models are listed instead.

use std::collections::BTreeSet;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use serde::Deserialize;
use tower::Service;

use crate::catalog::CatalogHandle;
use crate::config::MatchKind;
use crate::dialect::Dialect;
use crate::error::GatewayError;
use crate::forward::{ClientPool, headers, url};
use crate::request::{GatewayRequest, GatewayResponse, full_body};
use crate::route::select::pick_weighted;

/// Lists models; the leaf service of the models stack.
#[derive(Debug, Clone)]
pub struct ModelsService {
    catalog: CatalogHandle,
    clients: ClientPool,
}

impl ModelsService {
    /// Lists from `catalog`'s providers through `client`.
    pub fn new(catalog: CatalogHandle, clients: ClientPool) -> Self {
        Self { catalog, clients }
    }
}

/// An upstream model list: OpenAI/Anthropic `data[].id` or Gemini `models[].name`.
#[derive(Deserialize)]
struct UpstreamList {
    #[serde(default)]
    data: Vec<UpstreamModel>,
    #[serde(default)]
    models: Vec<GeminiModel>,
}

#[derive(Deserialize)]
struct GeminiModel {
    name: String,
}

#[derive(Deserialize)]
struct UpstreamModel {
    id: String,
}

/// Model listing requests to upstreams must not hang a client's startup.
const UPSTREAM_LIST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Service<GatewayRequest> for ModelsService {
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<GatewayResponse, GatewayError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GatewayRequest) -> Self::Future {
        let catalog = self.catalog.load();
        let clients = self.clients.clone();
        let (user, key) = req.ctx.update(|s| (s.user.clone(), s.key.clone()));
        let groups = crate::route::caller_groups(user.as_deref(), key.as_deref()).to_vec();
        // Active windows and health are ignored: a model served only at night still exists.
        let candidates: Vec<usize> = catalog
            .providers()
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.enabled && p.serves(req.dialect) && crate::route::groups_overlap(&groups, &p.groups)
            })
            .map(|(i, _)| i)
            .collect();
        let chosen = pick_weighted(catalog.providers(), &candidates, &groups, req.dialect, &mut rand::rng())
            .map(|(i, _)| catalog.providers()[i].clone());
        Box::pin(async move {
            let mut names = BTreeSet::new();
            let mut upstream_ok = false;
            if let Some(provider) = chosen {
                req.ctx.update(|s| s.provider = Some(provider.clone()));
                for rule in &provider.model_redirects {
                    if rule.match_kind() == MatchKind::Exact {
                        names.insert(rule.from().to_owned());
                    }
                }
                let gemini = provider.provider_type.native_dialect() == Dialect::Gemini;
                let list_url = if gemini {
                    url::join_upstream_url(&provider.base_url, "/v1beta/models", Some("pageSize=1000"))
                } else {
                    url::join_upstream_url(&provider.base_url, "/v1/models", Some("limit=1000"))
                };
                let sent = match (clients.for_provider(&provider), clients.parsed_uri(&list_url)) {
                    (Ok(clients_for), Ok(uri)) => {
                        let mut list_req = http::Request::new(Bytes::new());
                        *list_req.uri_mut() = uri;
                        *list_req.headers_mut() = headers::upstream_request_headers(
                            &req.headers,
                            &provider,
                            provider.provider_type.native_dialect() != req.dialect,
                        );
                        let call = async {
                            let resp = clients_for.primary.send(list_req).await.ok()?;
                            let ok = resp.status().is_success();
                            let body = resp.into_body().collect().await.ok()?.to_bytes();
                            Some((ok, body))
                        };
                        tokio::time::timeout(UPSTREAM_LIST_TIMEOUT, call).await.ok().flatten()
                    }
                    _ => None,
                };
                if let Some((true, bytes)) = sent
                    && let Ok(list) = serde_json::from_slice::<UpstreamList>(&bytes)
                {
                    upstream_ok = true;
                    names.extend(list.data.into_iter().map(|m| m.id));
                    names.extend(
                        list.models
                            .into_iter()
                            .map(|m| m.name.strip_prefix("models/").unwrap_or(&m.name).to_owned()),
                    );
                }
            }
            if !upstream_ok {
                for p in catalog.providers() {
                    if p.enabled && crate::route::groups_overlap(&groups, &p.groups) {
                        names.extend(
                            p.model_redirects
                                .iter()
                                .filter(|r| r.match_kind() == MatchKind::Exact)
                                .map(|r| r.from().to_owned()),
                        );
                    }
                }
                names.extend(catalog.prices().map(|p| p.model.clone()));
            }
            let body = render(&names, req.dialect);
            let mut resp = http::Response::new(full_body(body));
            *resp.status_mut() = StatusCode::OK;
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(resp)
        })
    }
}

/// A fixed, plausible creation time: the list is a union over providers, so no single
/// upstream timestamp applies.
const LISTED_CREATED_AT: &str = "2025-01-01T00:00:00Z";
const LISTED_CREATED_UNIX: i64 = 1_735_689_600;

fn render(names: &BTreeSet<String>, dialect: Dialect) -> String {
    let value = if dialect == Dialect::Anthropic {
        let data: Vec<_> = names
            .iter()
            .map(|id| serde_json::json!({"type": "model", "id": id, "display_name": id, "created_at": LISTED_CREATED_AT}))
            .collect();
        serde_json::json!({
            "data": data,
            "has_more": false,
            "first_id": names.first(),
            "last_id": names.last(),
        })
    } else if dialect == Dialect::Gemini {
        let models: Vec<_> = names
            .iter()
            .map(|id| {
                serde_json::json!({
                    "name": format!("models/{id}"),
                    "displayName": id,
                    "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
                })
            })
            .collect();
        serde_json::json!({ "models": models })
    } else {
        let data: Vec<_> = names
            .iter()
            .map(|id| serde_json::json!({"id": id, "object": "model", "created": LISTED_CREATED_UNIX, "owned_by": "llm-gateway"}))
            .collect();
        serde_json::json!({"object": "list", "data": data})
    };
    value.to_string()
}
