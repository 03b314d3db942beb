//! `peloton`: the server, its admin CLI, restore, backup checks and the simulator, in one
//! binary.

use clap::Parser;
use peloton::cli::args::{Cli, Command, ServeArgs};
use peloton::cli::{admin, sim, CliError};
use peloton::config::{Config, Overrides};
use std::io::Write;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Admin(args) => runtime().and_then(|rt| rt.block_on(admin::run(args))),
        Command::Restore(args) => admin::restore(args),
        Command::Backup(command) => admin::backup(command),
        Command::Sim(command) => runtime().and_then(|rt| rt.block_on(sim::run(command))),
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
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.filter.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = runtime()?;
    rt.block_on(async {
        let server = peloton::engine::start(config)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        // Tools wait for exactly this line on stdout.
        println!("listening on {}", server.addr);
        let _ = std::io::stdout().flush();
        server.run_until_signal().await;
        Ok(())
    })
}
