//! `gateway-server`: run the gateway, apply migrations, or import a config file.

use clap::Parser;
use gateway_server::serve;
use gateway_server::settings::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
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
