//! The `tenant-authz` binary: parse flags, set up logging, run until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use std::io::{IsTerminal, Read, Write};

use tenant_authz::cli::{hash_token, Cli, Command, ExplainArgs, ExplainOutput};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    if let Some(Command::HashToken) = cli.command {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("cannot read the token from stdin")?;
        println!("{}", hash_token(&input).map_err(anyhow::Error::msg)?);
        return Ok(());
    }
    if let Some(Command::Explain(args)) = &cli.command {
        let code = match explain(&cli, args).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("tenant-authz explain: {e:#}");
                2
            }
        };
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }
    let config = cli.load().context("invalid configuration")?;
    if cli.print_config {
        print!("{}", serde_yaml_ng::to_string(&config)?);
        return Ok(());
    }
    tenant_authz::telemetry::init(config.log.format);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    tenant_authz::run(config, shutdown_signal())
        .await
        .context("tenant-authz stopped with an error")
}

/// Exits with clap's usage error, except that `explain` never echoes a value from the command
/// line: that is where a token pasted by mistake would be. It names the argument only.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let explain = std::env::args_os().any(|a| a == "explain");
    // These carry argument names or help text, never a value given on the command line.
    let shows_no_value = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            | ErrorKind::MissingRequiredArgument
            | ErrorKind::MissingSubcommand
            | ErrorKind::ArgumentConflict
    );
    if explain && !shows_no_value {
        let what = e.kind().as_str().unwrap_or("invalid command line");
        // For these kinds clap's `InvalidArg` is the declared argument (`--action <ACTION>`);
        // for an unknown argument it is what was typed, which may be the token.
        let names_a_declared_argument = matches!(
            e.kind(),
            ErrorKind::InvalidValue
                | ErrorKind::ValueValidation
                | ErrorKind::InvalidUtf8
                | ErrorKind::WrongNumberOfValues
                | ErrorKind::TooManyValues
                | ErrorKind::TooFewValues
        );
        let argument = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(name)) if names_a_declared_argument => format!(" ({name})"),
            _ => String::new(),
        };
        eprintln!(
            "error: {what}{argument}; the value is not shown (it may be a token). The token is \
             read from --token-file or stdin, never from the command line; see tenant-authz \
             explain --help"
        );
        std::process::exit(2);
    }
    e.exit()
}

/// `tenant-authz explain`: the exit code of the answer, or an error (exit 2) when the config,
/// the token or the backend's set-up is not usable. No error names the token file's path: a
/// token pasted where the path belongs would be printed.
async fn explain(cli: &Cli, args: &ExplainArgs) -> anyhow::Result<i32> {
    let config = cli.load().context("invalid configuration")?;
    // A few bytes past the limit are enough for the parser to refuse a longer token (401), and
    // a device that never ends cannot hang explain.
    let limit = u64::try_from(config.max_token_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(3);
    let mut input = Vec::new();
    match &args.token_file {
        Some(path) => {
            std::fs::File::open(path)
                .and_then(|f| f.take(limit).read_to_end(&mut input))
                .context("cannot read the file given with --token-file")?;
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("reading the token from stdin (end with Ctrl-D); or use --token-file");
            }
            stdin
                .lock()
                .take(limit)
                .read_to_end(&mut input)
                .context("cannot read the token from stdin")?;
        }
    }
    let token = tenant_authz::explain::token_from_input(input)?;
    let report = tenant_authz::explain::explain(&config, &args.question(), &token).await?;
    let json = matches!(args.output, ExplainOutput::Json);
    print!("{}", tenant_authz::explain::render(&report, json, &token));
    Ok(report.exit_code.into())
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
