//! The direct upstream client over TLS, against a real rustls server on loopback whose
//! certificate comes from a private CA: HTTP/2 when the server offers it by ALPN, HTTP/1.1
//! otherwise, one pooled connection reused across calls, and a certificate the client does not
//! trust refused as a connect failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use gateway_core::forward::{ClientOptions, ClientPool};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A private CA and a server certificate for `localhost` signed by it.
struct Pki {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    Pki {
        ca: ca_cert.der().clone(),
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// What the TLS upstream saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    versions: Mutex<Vec<http::Version>>,
}

/// Serves an Anthropic-shaped JSON answer over TLS, offering `alpn`; returns its port.
async fn tls_upstream(pki: &Pki, alpn: &[&[u8]], seen: Arc<Seen>) -> u16 {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(pki.chain.clone(), pki.key.clone_key())
            .expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                // A handshake the client aborts (untrusted certificate) just ends here.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                seen.connections.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        seen.versions.lock().push(req.version());
                        let body = req.into_body().collect().await?.to_bytes();
                        let answer = format!(
                            r#"{{"id":"msg_tls","type":"message","role":"assistant","content":[],"usage":{{"input_tokens":{},"output_tokens":1}}}}"#,
                            body.len()
                        );
                        Ok::<_, hyper::Error>(
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(Bytes::from(answer)))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

fn request(port: u16, body: &'static str) -> http::Request<Bytes> {
    http::Request::post(format!("https://localhost:{port}/v1/messages"))
        .header("content-type", "application/json")
        .body(Bytes::from_static(body.as_bytes()))
        .expect("request")
}

async fn call_twice(pki: &Pki, alpn: &[&[u8]]) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let port = tls_upstream(pki, alpn, seen.clone()).await;
    let opts = ClientOptions { extra_root_certificates: vec![pki.ca.clone()], ..ClientOptions::default() };
    let client = ClientPool::new(opts).default_client().expect("client");
    for body in [r#"{"model":"m"}"#, r#"{"model":"m","max_tokens":1}"#] {
        let resp = client.send(request(port, body)).await.expect("an answer over TLS");
        assert_eq!(resp.status(), http::StatusCode::OK);
        let answer = resp.into_body().collect().await.expect("body").to_bytes();
        let expected = format!("\"input_tokens\":{}", body.len());
        assert!(String::from_utf8_lossy(&answer).contains(&expected), "the request body arrived whole");
    }
    seen
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn_and_the_connection_is_reused() {
    let pki = pki();
    let seen = call_twice(&pki, &[b"h2", b"http/1.1"]).await;
    assert_eq!(*seen.versions.lock(), vec![http::Version::HTTP_2; 2]);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn http1_is_used_when_the_server_offers_only_http1() {
    let pki = pki();
    let seen = call_twice(&pki, &[b"http/1.1"]).await;
    assert_eq!(*seen.versions.lock(), vec![http::Version::HTTP_11; 2]);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_connect_failure() {
    let pki = pki();
    let seen = Arc::new(Seen::default());
    let port = tls_upstream(&pki, &[b"h2", b"http/1.1"], seen.clone()).await;
    // Only the webpki roots: the private CA is not among them.
    let client = ClientPool::new(ClientOptions::default()).default_client().expect("client");
    let err = client.send(request(port, "{}")).await.expect_err("the certificate is not trusted");
    assert!(err.connect, "{err}");
    assert!(!err.timeout, "{err}");
    assert!(err.detail.to_lowercase().contains("certificate"), "the cause is named: {err}");
    assert!(seen.versions.lock().is_empty());
}
