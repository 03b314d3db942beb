//! `peloton`: the server, its admin CLI, restore, backup checks and the simulator, in one
//! binary.

use clap::Parser;
use peloton::cli::args::{Cli, Command, ServeArgs};
use peloton::cli::{admin, cluster, sim, CliError};
use peloton::config::{Config, LogConfig, LogFormat, Overrides};
use std::io::{IsTerminal, Write};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Admin(args) => runtime().and_then(|rt| rt.block_on(admin::run(args))),
        Command::Restore(args) => admin::restore(args),
        Command::Backup(command) => admin::backup(command),
        Command::Sim(command) => runtime().and_then(|rt| rt.block_on(sim::run(command))),
        Command::Cluster(command) => cluster::run(command),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))
}

fn serve(args: ServeArgs) -> Result<(), CliError> {
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data,
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    init_logs(&config.log);
    let rt = runtime()?;
    rt.block_on(async {
        let server = peloton::engine::start(config)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        server
            .run_until_signal(|addr| {
                // Tools wait for exactly this line on stdout, then may signal at once.
                println!("listening on {addr}");
                let _ = std::io::stdout().flush();
            })
            .await;
        Ok(())
    })
}

/// Starts logging to stderr as `[log]` says: `RUST_LOG` (else `log.filter`) chooses what,
/// `log.format` how. Text is coloured only when stderr is a terminal, so a log file, a pipe
/// or journald never holds escape codes; JSON is never coloured.
fn init_logs(log: &LogConfig) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| log.filter.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}
