//! Runs the mock upstream (every dialect: Anthropic, OpenAI Chat Completions and Responses,
//! Gemini) as a standalone process for benchmarks and cross-language tests.
//!
//! ```text
//! mock-upstream [--listen 127.0.0.1:PORT] [--chunks N] [--chunk-delay-ms N]
//!               [--first-byte-delay-ms N] [--reply-text TEXT]
//! ```
//!
//! Prints `listening on http://ADDR` once ready and serves until interrupted. Request recording
//! is off so memory stays flat under load.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use gateway_mock::{MockBehavior, MockUpstream};

const USAGE: &str = "usage: mock-upstream [--listen ADDR] [--chunks N] [--chunk-delay-ms N] \
                     [--first-byte-delay-ms N] [--reply-text TEXT]";

struct Args {
    listen: SocketAddr,
    behavior: MockBehavior,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed =
        Args { listen: SocketAddr::from(([127, 0, 0, 1], 0)), behavior: MockBehavior::default() };
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || value.parse::<u64>().map_err(|err| format!("{flag} {value}: {err}"));
        match flag.as_str() {
            "--listen" => {
                parsed.listen = value.parse().map_err(|err| format!("--listen {value}: {err}"))?;
            }
            "--chunks" => parsed.behavior.chunks = usize::try_from(number()?).unwrap_or(usize::MAX),
            "--chunk-delay-ms" => parsed.behavior.chunk_delay = Duration::from_millis(number()?),
            "--first-byte-delay-ms" => {
                parsed.behavior.first_byte_delay = Duration::from_millis(number()?);
            }
            "--reply-text" => parsed.behavior.reply_text = value,
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let mock = match MockUpstream::start_on(args.listen, args.behavior).await {
        Ok(mock) => mock,
        Err(err) => {
            eprintln!("mock-upstream: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    mock.set_recording(false);
    // Callers wait for this exact line (and read the port from it), so flush it right away.
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "listening on {}", mock.url()).and_then(|()| stdout.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    if let Err(err) = tokio::signal::ctrl_c().await {
        eprintln!("mock-upstream: cannot wait for Ctrl-C ({err}); serving forever");
        std::future::pending::<()>().await;
    }
    mock.shutdown();
    ExitCode::SUCCESS
}
