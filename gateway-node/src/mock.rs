//! `MockUpstream`: gateway-mock's fake vendor APIs for users' own tests.

use std::net::{IpAddr, SocketAddr};

use gateway_mock::{MockBehavior, MockUpstream};
use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::body::flat_headers;
use crate::js_error;

/// A request the mock received.
#[napi(object)]
pub struct NativeReceived {
    /// HTTP method.
    pub method: String,
    /// Path and query string.
    pub path: String,
    /// `[name, value, ...]`.
    pub headers: Vec<String>,
    /// The complete body.
    pub body: Buffer,
}

fn behavior_from_json(json: Option<&str>) -> napi::Result<MockBehavior> {
    match json {
        None => Ok(MockBehavior::default()),
        Some(text) => serde_json::from_str(text).map_err(|e| js_error(format!("invalid mock behavior: {e}"))),
    }
}

/// A running mock; `index.js` wraps it as `MockUpstream`.
#[napi]
pub struct NativeMock {
    mock: MockUpstream,
}

/// Starts a mock on `host:port` (port 0 picks a free one); `behavior` is MockBehavior's serde
/// JSON (missing fields default).
#[napi]
pub async fn start_mock(behavior: Option<String>, host: String, port: u32) -> napi::Result<NativeMock> {
    let behavior = behavior_from_json(behavior.as_deref())?;
    let ip: IpAddr =
        host.parse().map_err(|_| js_error(format!("host must be an IP address, got {host:?}")))?;
    let port = u16::try_from(port).map_err(|_| js_error(format!("port {port} is out of range")))?;
    let mock = MockUpstream::start_on(SocketAddr::new(ip, port), behavior)
        .await
        .map_err(|e| js_error(format!("cannot start the mock on {host}:{port}: {e}")))?;
    Ok(NativeMock { mock })
}

#[napi]
impl NativeMock {
    /// Base URL without a trailing slash.
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.mock.url()
    }

    /// Replaces the behavior (JSON; missing fields default).
    #[napi]
    pub fn set_behavior(&self, behavior: String) -> napi::Result<()> {
        self.mock.set_behavior(behavior_from_json(Some(&behavior))?);
        Ok(())
    }

    /// The current behavior as JSON.
    #[napi]
    pub fn behavior(&self) -> napi::Result<String> {
        serde_json::to_string(&self.mock.behavior()).map_err(js_error)
    }

    /// Requests received so far, in arrival order.
    #[napi]
    pub fn received(&self) -> Vec<NativeReceived> {
        self.mock
            .received()
            .into_iter()
            .map(|r| NativeReceived {
                headers: flat_headers(&r.headers),
                method: r.method,
                path: r.path_and_query,
                body: Buffer::from(Vec::from(r.body)),
            })
            .collect()
    }

    /// Forgets the received requests.
    #[napi]
    pub fn clear_received(&self) {
        self.mock.clear_received();
    }

    /// Turns request recording on (default) or off; long benchmarks turn it off so memory
    /// stays flat.
    #[napi]
    pub fn set_recording(&self, on: bool) {
        self.mock.set_recording(on);
    }

    /// Stops accepting connections; requests in flight finish.
    #[napi]
    pub fn stop(&self) {
        self.mock.shutdown();
    }
}
