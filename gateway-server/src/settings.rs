//! Server settings from the command line and the environment. Every flag has an environment
//! variable, so containers are configured without arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Default database: a SQLite file under `./data`, created on first start.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/gateway.db";

/// The `gateway-server` command line.
#[derive(Debug, Parser)]
#[command(
    name = "gateway-server",
    version,
    about = "An AI API gateway for teams: one endpoint in front of many upstream LLM accounts."
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every command.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Settings of `serve` (accepted without the subcommand name).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Import a TOML config file into the database (upsert by name) and exit.
    Import {
        /// The TOML file.
        file: PathBuf,
    },
}

/// Settings every command needs.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// Database URL: `sqlite://path/to/file.db` or `postgres://user@host/db`.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Apply migrations at start.
    #[arg(long, env = "AUTO_MIGRATE", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub auto_migrate: bool,
}

impl CommonArgs {
    /// `DATABASE_URL`, else its alias `DSN`, else the embedded SQLite default.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .or_else(|| std::env::var("DSN").ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
    }
}

/// Settings of the running gateway.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:23000")]
    pub listen: SocketAddr,
    /// Threads serving connections, each with its own runtime; one per CPU when unset.
    #[arg(long, env = "GATEWAY_WORKERS")]
    pub workers: Option<usize>,
    /// TOML file imported at start (upsert by name).
    #[arg(long, env = "GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Largest request body accepted, after decompression.
    #[arg(long, env = "MAX_REQUEST_BODY_BYTES", default_value_t = gateway_core::ingress::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Seconds in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// Where usage records wait while the database is unreachable.
    #[arg(long, env = "USAGE_SPILL_PATH", default_value = "./data/usage-spill.jsonl")]
    pub usage_spill_path: PathBuf,
    /// Seconds a session stays bound to its provider after its last request.
    #[arg(long, env = "SESSION_TTL", default_value_t = 300)]
    pub session_ttl: u64,
    /// Most providers tried for one request.
    #[arg(long, env = "MAX_PROVIDER_SWITCHES", default_value_t = 3)]
    pub max_provider_switches: u32,
    /// Count connection failures toward opening a provider's circuit.
    #[arg(long, env = "ENABLE_CIRCUIT_BREAKER_ON_NETWORK_ERRORS", default_value_t = false, action = clap::ArgAction::Set)]
    pub circuit_breaker_on_network_errors: bool,
    /// IANA timezone of providers' active windows, e.g. `Europe/Berlin`.
    #[arg(long = "timezone", env = "TZ", default_value = "UTC", value_parser = parse_timezone)]
    pub timezone: chrono_tz::Tz,
    /// Redis for routing state shared by replicas (session bindings, breakers, cooldowns,
    /// provider session counts); in-process memory when unset.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key, to share one Redis between deployments.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "gw:")]
    pub redis_key_prefix: String,
    /// Enforce user, key and provider limits (RPM, concurrent sessions, spend windows).
    #[arg(long, env = "ENABLE_RATE_LIMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_rate_limit: bool,
    /// When limits cannot be checked (Redis unreachable): `open` admits, `closed` refuses with 503.
    #[arg(long, env = "RATE_LIMIT_FAIL_MODE", default_value = "open")]
    pub rate_limit_fail_mode: gateway_core::limit::RateLimitFailMode,
    /// How often the configuration in the database is checked for changes made by another
    /// replica or an import, in milliseconds.
    #[arg(long, env = "CONFIG_POLL_MS", default_value_t = 500)]
    pub config_poll_ms: u64,
    /// Log format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Parses an IANA timezone name; a leading `:` (a POSIX `TZ` file form) is accepted.
fn parse_timezone(value: &str) -> Result<chrono_tz::Tz, String> {
    let name = value.trim().trim_start_matches(':');
    let name = name.strip_prefix("/usr/share/zoneinfo/").unwrap_or(name);
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("{value:?} is not an IANA timezone name such as UTC or Asia/Shanghai"))
}

impl ServeArgs {
    /// The core gateway's limit settings (timezone and session TTL come from [`Self::routing`]).
    pub fn limits(&self) -> gateway_core::limit::LimitSettings {
        gateway_core::limit::LimitSettings {
            enabled: self.enable_rate_limit,
            fail_mode: self.rate_limit_fail_mode,
            ..Default::default()
        }
    }

    /// The core gateway's routing settings.
    pub fn routing(&self) -> gateway_core::route::RoutingSettings {
        gateway_core::route::RoutingSettings {
            session_ttl: std::time::Duration::from_secs(self.session_ttl),
            max_provider_switches: self.max_provider_switches.max(1),
            breaker_on_network_errors: self.circuit_breaker_on_network_errors,
            timezone: self.timezone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timezones_parse_like_tz() {
        assert_eq!(parse_timezone("UTC"), Ok(chrono_tz::UTC));
        assert_eq!(parse_timezone("Asia/Shanghai"), Ok(chrono_tz::Asia::Shanghai));
        assert_eq!(parse_timezone(":Europe/Berlin"), Ok(chrono_tz::Europe::Berlin));
        assert!(parse_timezone("Mars/Olympus").is_err());
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let cli = Cli::parse_from(["gateway-server"]);
        let routing = cli.serve.routing();
        assert_eq!(routing.session_ttl, std::time::Duration::from_secs(300));
        assert_eq!(routing.max_provider_switches, 3);
        assert!(!routing.breaker_on_network_errors);
        let limits = cli.serve.limits();
        assert!(limits.enabled);
        assert_eq!(limits.fail_mode, gateway_core::limit::RateLimitFailMode::Open);
        let cli = Cli::parse_from([
            "gateway-server",
            "--enable-rate-limit",
            "false",
            "--rate-limit-fail-mode",
            "closed",
        ]);
        assert!(!cli.serve.limits().enabled);
        assert_eq!(cli.serve.limits().fail_mode, gateway_core::limit::RateLimitFailMode::Closed);
    }
}
