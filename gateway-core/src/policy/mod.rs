//! Policy stage: what an authenticated caller may ask for, checked before any provider is
//! chosen. Today: the user's and the key's `allowed_models` (both must allow the model).
//!
//! Reads: context `user`, `key`; request `hints.model`. Rejects with 403 in the caller's dialect.

use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use tower::{Layer, Service};

use crate::config::model_allowed;
use crate::error::{ErrorKind, GatewayError};
use crate::request::{GatewayRequest, GatewayResponse};

/// Adds [`PolicyService`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyLayer;

impl<S> Layer<S> for PolicyLayer {
    type Service = PolicyService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PolicyService { inner }
    }
}

/// Rejects requests for models the caller may not use.
#[derive(Debug, Clone)]
pub struct PolicyService<S> {
    inner: S,
}

fn check(req: &GatewayRequest) -> Result<(), GatewayError> {
    let Some(model) = req.hints.model.as_deref() else { return Ok(()) };
    let (user, key) = req.ctx.update(|s| (s.user.clone(), s.key.clone()));
    let user_ok = user.as_ref().is_none_or(|u| model_allowed(&u.allowed_models, model));
    let key_ok = key.as_ref().is_none_or(|k| model_allowed(&k.allowed_models, model));
    if user_ok && key_ok {
        return Ok(());
    }
    Err(GatewayError::new(
        ErrorKind::Permission,
        "model_not_allowed",
        format!("model {model:?} is not allowed for this API key"),
    ))
}

impl<S> Service<GatewayRequest> for PolicyService<S>
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
        match check(&req) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(e) => Either::Left(ready(Err(e))),
        }
    }
}
