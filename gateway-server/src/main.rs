//! `gateway-server`: run the gateway, apply migrations, or import a config file.

use clap::Parser;
use gateway_server::serve;
use gateway_server::settings::{Cli, Command};

/// jemalloc's per-thread caches take back memory that another thread allocated without taking a
/// lock. With glibc's malloc, requests that moved between tokio's worker threads made arena-lock
/// wake-ups about half of the gateway's futex calls under load (0.78 futex calls per request,
/// 0.11 with jemalloc), at the same memory use.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Connections are served by threads of their own (`workers`); this runtime runs start-up,
    // shutdown and background work such as the usage writer, which one thread keeps up with.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve::serve(cli.common, cli.serve).await,
            Command::Migrate => {
                let mut common = cli.common;
                common.auto_migrate = true;
                serve::open_database(&common).await?;
                println!("migrations applied");
                Ok(())
            }
            Command::Import { file } => {
                let db = serve::open_database(&cli.common).await?;
                serve::import_file(&db, &file).await?;
                println!("imported {}", file.display());
                Ok(())
            }
        }
    })
}
