//! `bare-proxy`: the least a proxy on this stack can do, as a yardstick for the gateway.
//!
//! A hyper server that forwards every request, body streaming both ways, to the first
//! `base_url` of a gateway config file through hyper-util's pooled client, and relays the
//! answer. No auth, routing, metering or logging. `gateway-bench --gateway-bin
//! target/release/bare-proxy` runs the benchmark against it, which tells how much of the
//! direct throughput any hyper-based proxy can reach on the machine.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use http::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Forwards every request to the first provider of a gateway config file.
#[derive(Debug, Parser)]
#[command(name = "bare-proxy")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A gateway config file; its first `[[providers]] base_url` is the upstream.
    #[arg(long)]
    config: PathBuf,
}

fn upstream_of(config: &str) -> anyhow::Result<Uri> {
    let value: toml::Value = toml::from_str(config)?;
    let base = value
        .get("providers")
        .and_then(|p| p.get(0))
        .and_then(|p| p.get("base_url"))
        .and_then(|u| u.as_str())
        .context("no [[providers]] base_url")?;
    Ok(base.parse()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let text =
        std::fs::read_to_string(&cli.config).with_context(|| format!("cannot read {:?}", cli.config))?;
    let upstream = upstream_of(&text)?;
    let authority = upstream.authority().context("base_url has no host")?.clone();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(connector);

    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let client = client.clone();
        let authority = authority.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                let client = client.clone();
                let authority = authority.clone();
                async move {
                    let mut parts = req.uri().clone().into_parts();
                    parts.scheme = Some(http::uri::Scheme::HTTP);
                    parts.authority = Some(authority);
                    *req.uri_mut() = Uri::from_parts(parts)?;
                    req.headers_mut().remove(http::header::HOST);
                    Ok::<_, anyhow::Error>(client.request(req).await?)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}
