//! Starting and stopping the server: database, config import, admin token, the gateway, the
//! listener, and a graceful shutdown that lets streams finish and flushes the usage log.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gateway_core::catalog::CatalogHandle;
use gateway_core::config::ConfigFile;
use gateway_core::store::{RedisStateOptions, RedisStateStore};
use gateway_core::{Gateway, GatewaySettings};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::app::{AppState, app};
use crate::db::{Database, UsageWriter, WriterConfig};
use crate::settings::{CommonArgs, ServeArgs};
use crate::workers::{self, Workers};

/// Settings key of the SHA-256 of the admin token.
pub const ADMIN_TOKEN_HASH_KEY: &str = "admin_token_sha256";

/// Settings key that changes whenever the configuration does; replicas watch it.
pub const CONFIG_VERSION_KEY: &str = "config_version";

/// Opens the database and applies migrations when asked to.
pub async fn open_database(common: &CommonArgs) -> anyhow::Result<Database> {
    let url = common.database_url();
    let db = Database::connect(&url).await.context("cannot open the database")?;
    if common.auto_migrate {
        db.migrate().await.context("cannot apply database migrations")?;
    }
    Ok(db)
}

/// Imports a TOML config into the database.
pub async fn import_file(db: &Database, path: &std::path::Path) -> anyhow::Result<()> {
    let file = ConfigFile::from_path(path)?;
    let summary = db.import_config(&file).await.context("config import failed")?;
    tracing::info!(path = %path.display(), ?summary, "config imported");
    if summary.changed() {
        mark_config_changed(db).await?;
    }
    Ok(())
}

/// Tells every replica that the configuration changed: each reloads it within `CONFIG_POLL_MS`.
pub async fn mark_config_changed(db: &Database) -> anyhow::Result<()> {
    db.set_setting(CONFIG_VERSION_KEY, &uuid::Uuid::now_v7().to_string()).await?;
    Ok(())
}

/// Reloads the catalog whenever the configuration version in the database changes. Polling a
/// one-row read keeps working across database reconnects and on SQLite, where no notification
/// channel exists, and cannot miss a change the way a dropped notification can.
pub fn watch_config(db: Database, catalog: CatalogHandle, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = db.get_setting(CONFIG_VERSION_KEY).await.ok().flatten();
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let current = match db.get_setting(CONFIG_VERSION_KEY).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!("cannot read the configuration version: {e}");
                    continue;
                }
            };
            if current == seen {
                continue;
            }
            match db.load_catalog().await {
                Ok(fresh) => {
                    catalog.store(fresh);
                    seen = current;
                    tracing::info!("configuration changed elsewhere: reloaded");
                }
                Err(e) => tracing::warn!("configuration changed but cannot be loaded: {e}"),
            }
        }
    })
}

/// Makes sure an admin token exists. `ADMIN_TOKEN` wins; else one is generated on first start
/// and printed once (only its hash is stored).
pub async fn ensure_admin_token(db: &Database) -> anyhow::Result<()> {
    let hash = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
    if let Some(token) = std::env::var("ADMIN_TOKEN").ok().filter(|t| !t.is_empty()) {
        db.set_setting(ADMIN_TOKEN_HASH_KEY, &hash(&token)).await?;
        return Ok(());
    }
    if db.get_setting(ADMIN_TOKEN_HASH_KEY).await?.is_some() {
        return Ok(());
    }
    let token = format!("adm-{}", hex::encode(rand::rng().random::<[u8; 24]>()));
    db.set_setting(ADMIN_TOKEN_HASH_KEY, &hash(&token)).await?;
    // Printed to stdout, not the log, and only this once: it is a secret.
    println!("Generated admin token (shown once; set ADMIN_TOKEN to choose your own): {token}");
    Ok(())
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Runs the gateway until a shutdown signal.
pub async fn serve(common: CommonArgs, args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(&args.log_format);
    let db = open_database(&common).await?;
    if let Some(path) = &args.config {
        import_file(&db, path).await?;
    }
    ensure_admin_token(&db).await?;
    let catalog = CatalogHandle::new(db.load_catalog().await.context("cannot load configuration")?);
    let writer = UsageWriter::start(db.clone(), WriterConfig::with_spill_path(args.usage_spill_path.clone()))
        .await
        .context("cannot start the usage writer")?;
    let mut builder = Gateway::builder();
    if let Some(url) = args.redis_url.as_deref().filter(|u| !u.is_empty()) {
        let options =
            RedisStateOptions { prefix: args.redis_key_prefix.clone(), ..RedisStateOptions::default() };
        let store = RedisStateStore::connect(url, options)
            .await
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not usable: {e}"))?;
        tracing::info!(prefix = store.prefix(), "routing state shared through Redis");
        builder = builder.state_store(Arc::new(store));
    }
    let gateway = builder
        .catalog_handle(catalog.clone())
        .usage_sink(Arc::new(writer.clone()))
        .spend_history(Arc::new(db.clone()))
        .settings(GatewaySettings {
            max_body_bytes: args.max_body_bytes,
            routing: args.routing(),
            limits: args.limits(),
            ..Default::default()
        })
        .build()?;
    let config_watch = watch_config(db.clone(), catalog, Duration::from_millis(args.config_poll_ms));

    let app = app(AppState { gateway, db: db.clone() });
    let workers = Workers::start(args.listen, args.workers.unwrap_or_else(workers::default_count), app)?;
    let local = workers.local_addr();
    tracing::info!(address = %local, database = db.backend_name(), "gateway listening");
    println!("listening on http://{local}");

    shutdown_signal().await;
    tracing::info!("shutdown requested: no new connections; letting requests in flight finish");
    workers.drain(Duration::from_secs(args.shutdown_grace_seconds)).await;
    config_watch.abort();
    // Every connection has ended, and with it every response body: their records are queued.
    writer.shutdown().await;
    db.close().await;
    workers.stop().await;
    tracing::info!("stopped");
    Ok(())
}
