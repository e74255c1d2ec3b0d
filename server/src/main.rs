//! The `webrtc-p2p-server` binary: flags, logging, signals, and the `token`
//! subcommand; the server itself is the library next to this file.

use std::io::{IsTerminal, Write};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use webrtc_p2p_interfaces::GroupId;
use webrtc_p2p_server::{Config, LogFormat, Server};
use webrtc_p2p_simple::auth::{Claims, GroupGrant};

/// webrtc-p2p signaling server: JSON-RPC 2.0 over WebSocket at /ws, the demo
/// page at /, the client bundle at /webrtc-p2p.js.
#[derive(Debug, Parser)]
#[command(name = "webrtc-p2p-server", version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prints a join token signed with --auth-secret, for testing (an app's
    /// backend mints its own).
    Token {
        /// How long the token is valid.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// The token lets its user create groups.
        #[arg(long)]
        create: bool,
        /// A group the token lets its user join, or `*` for any; repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// What other members are told about the user: JSON, at most 1 KiB.
        #[arg(long, value_parser = parse_json)]
        info: Option<serde_json::Value>,
    },
}

fn parse_json(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s).map_err(|e| e.to_string())
}

/// `token`: the claims from the flags, signed.
fn mint(
    secret: &str,
    ttl: humantime::Duration,
    create: bool,
    groups: &[String],
    info: Option<serde_json::Value>,
) -> Result<String, String> {
    let groups = if groups.iter().any(|g| g == "*") {
        GroupGrant::Any
    } else if groups.is_empty() {
        GroupGrant::None
    } else {
        GroupGrant::Only(
            groups
                .iter()
                .map(|g| g.parse::<GroupId>().map_err(|e| format!("--group {g}: {e}")))
                .collect::<Result<_, _>>()?,
        )
    };
    Ok(Claims { create, groups, info, ..Claims::expiring_in(ttl.into()) }.sign(secret.as_bytes()))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Cli { config, command } = Cli::parse();
    if let Some(Command::Token { ttl, create, groups, info }) = command {
        let Some(secret) = &config.auth_secret else {
            eprintln!("token: --auth-secret (or WEBRTC_P2P_AUTH_SECRET) is required");
            return std::process::ExitCode::FAILURE;
        };
        return match mint(secret, ttl, create, &groups, info) {
            Ok(token) => {
                println!("{token}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("token: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    init_logging(config.log_format);
    let server = match Server::bind(config.clone()).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!(listen = %config.listen, error = %e, "cannot start (listen address, or TLS files)");
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = match server.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the bound address");
            return std::process::ExitCode::FAILURE;
        }
    };
    // One line on stdout, for people and for tests that bind port 0.
    println!("listening on {addr}");
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, demo = %format!("http://{addr}/"), "listening");
    match server.serve(shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
