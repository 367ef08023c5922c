//! The `tenant-authz` binary: parse flags, set up logging, run until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use std::io::Read;

use tenant_authz::cli::{hash_token, Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::HashToken) = cli.command {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("cannot read the token from stdin")?;
        println!("{}", hash_token(&input).map_err(anyhow::Error::msg)?);
        return Ok(());
    }
    let config = cli.load().context("invalid configuration")?;
    if let Some(Command::Explain {
        product,
        method,
        path,
    }) = &cli.command
    {
        print!(
            "{}",
            tenant_authz::cli::explain(&config, *product, method, path)
        );
        return Ok(());
    }
    if cli.print_config {
        print!("{}", serde_yaml_ng::to_string(&config)?);
        return Ok(());
    }
    tenant_authz::telemetry::init(config.log_format);
    tenant_authz::run(config, shutdown_signal())
        .await
        .context("tenant-authz stopped with an error")
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "signal received"),
    }
}
