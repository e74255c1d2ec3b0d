//! The `webrtc-p2p-server` binary: flags, logging, signals; the server itself
//! is the library next to this file.

use std::io::{IsTerminal, Write};

use clap::Parser;
use tracing_subscriber::EnvFilter;
use webrtc_p2p_server::{Config, LogFormat, Server};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
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
