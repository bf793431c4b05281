//! Auth stage: finds the caller's API key (by hash) and checks key and user are usable.
//!
//! Adds to the context: `user`, `key`. Read by: session (key scoping), router (groups), log.

use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{HeaderMap, HeaderName};
use tower::{Layer, Service};

use crate::catalog::CatalogHandle;
use crate::config::api_key_digest;
use crate::error::{ErrorKind, GatewayError};
use crate::header_names::{X_API_KEY, X_GOOG_API_KEY};
use crate::request::{GatewayRequest, GatewayResponse};

/// Adds [`AuthService`].
#[derive(Debug, Clone)]
pub struct AuthLayer {
    catalog: CatalogHandle,
}

impl AuthLayer {
    /// Authenticates against the keys of `catalog`.
    pub fn new(catalog: CatalogHandle) -> Self {
        Self { catalog }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, catalog: self.catalog.clone() }
    }
}

/// Rejects requests without a valid, enabled, unexpired key of an enabled, unexpired user.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    catalog: CatalogHandle,
}

fn auth_error(code: &'static str, message: &str) -> GatewayError {
    GatewayError::new(ErrorKind::Authentication, code, message)
}

/// The key a client presented: `x-api-key`, `Authorization: Bearer`, `x-goog-api-key` or the
/// `key` query parameter. Several are fine only if they agree.
pub fn presented_key<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Result<&'a str, GatewayError> {
    let mut found: Option<&str> = None;
    let bearer = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let query_key =
        query.and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("key=")).filter(|k| !k.is_empty()));
    for candidate in [header(&X_API_KEY), bearer, header(&X_GOOG_API_KEY), query_key].into_iter().flatten() {
        if candidate.is_empty() {
            continue;
        }
        match found {
            None => found = Some(candidate),
            Some(prev) if prev == candidate => {}
            Some(_) => {
                return Err(auth_error(
                    "conflicting_api_keys",
                    "the request carries different API keys in different places",
                ));
            }
        }
    }
    found.ok_or_else(|| {
        auth_error(
            "missing_api_key",
            "missing API key: send it as `x-api-key` or `Authorization: Bearer <key>`",
        )
    })
}

impl<S> AuthService<S> {
    fn authenticate(&self, req: &GatewayRequest) -> Result<(), GatewayError> {
        let plain = presented_key(&req.headers, req.uri.query())?;
        let catalog = self.catalog.load();
        let key = catalog
            .key_by_digest(&api_key_digest(plain))
            .ok_or_else(|| auth_error("invalid_api_key", "invalid API key"))?;
        let now = chrono::Utc::now();
        if !key.enabled {
            return Err(auth_error("key_disabled", "this API key is disabled"));
        }
        if key.expires_at.is_some_and(|t| t <= now) {
            return Err(auth_error("key_expired", "this API key has expired"));
        }
        let user =
            catalog.user(key.user_id).ok_or_else(|| auth_error("invalid_api_key", "invalid API key"))?;
        if !user.enabled {
            return Err(auth_error("user_disabled", "the user of this API key is disabled"));
        }
        if user.expires_at.is_some_and(|t| t <= now) {
            return Err(auth_error("user_expired", "the user of this API key has expired"));
        }
        let (user, key) = (user.clone(), key.clone());
        req.ctx.update(|s| {
            s.user = Some(user);
            s.key = Some(key);
        });
        Ok(())
    }
}

impl<S> Service<GatewayRequest> for AuthService<S>
where
    S: Service<GatewayRequest, Response = GatewayResponse, Error = GatewayError>,
{
    type Response = GatewayResponse;
    type Error = GatewayError;
    type Future = Either<Ready<Result<GatewayResponse, GatewayError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: GatewayRequest) -> Self::Future {
        match self.authenticate(&req) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(e) => Either::Left(ready(Err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn finds_the_key_wherever_clients_put_it() {
        assert_eq!(presented_key(&headers(&[("x-api-key", "k1")]), None).ok(), Some("k1"));
        assert_eq!(presented_key(&headers(&[("authorization", "Bearer k2")]), None).ok(), Some("k2"));
        assert_eq!(presented_key(&headers(&[("authorization", "bearer  k2 ")]), None).ok(), Some("k2"));
        assert_eq!(presented_key(&headers(&[("x-goog-api-key", "k3")]), None).ok(), Some("k3"));
        assert_eq!(presented_key(&HeaderMap::new(), Some("alt=sse&key=k4")).ok(), Some("k4"));
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "k"), ("authorization", "Bearer k")]), None).ok(),
            Some("k")
        );
        let err = presented_key(&headers(&[("x-api-key", "a"), ("authorization", "Bearer b")]), None)
            .expect_err("conflict");
        assert_eq!(err.code, "conflicting_api_keys");
        assert_eq!(presented_key(&HeaderMap::new(), None).expect_err("missing").code, "missing_api_key");
        assert_eq!(
            presented_key(&headers(&[("authorization", "Basic abc")]), None).expect_err("basic").code,
            "missing_api_key"
        );
    }
}
