//! The server's signing keys as the CLI's offline commands find them (`--data`, `--config`,
//! `PELOTON_DATA`, `PELOTON_AUTH_SECRET`), for the simulators' device tokens and
//! `admin voucher verify`.
//!
//! How it fits: a leaf below [`super::patrol`] and the simulators ([`super::sim`]), so neither
//! imports the other for it.

use super::CliError;
use crate::auth::{secret_path, Keys, SECRET_ENV};
use crate::config::{Config, Overrides};
use clap::Args;
use std::path::PathBuf;

/// The flags every offline signer shares to find the server's secret where the server does.
#[derive(Debug, Args)]
pub struct ServerFiles {
    /// The server's data folder (where the signing secret lives).
    #[arg(long, env = "PELOTON_DATA")]
    pub data: Option<PathBuf>,
    /// The server's config file, if it sets auth.secret_file.
    #[arg(long, env = "PELOTON_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ServerFiles {
    /// The configuration the server reads from these files (the secret's path among it).
    pub(crate) fn config(&self) -> Result<Config, CliError> {
        let overrides = Overrides {
            listen: None,
            data_dir: self.data.clone(),
        };
        Ok(Config::load(self.config.as_deref(), &overrides)?)
    }
}

/// The server's signing keys, refusing to create a secret the server would not know.
pub(crate) fn server_keys(config: &Config) -> Result<Keys, CliError> {
    let from_env = std::env::var(SECRET_ENV).is_ok_and(|v| !v.is_empty());
    let path = secret_path(config);
    if !from_env && !path.exists() {
        return Err(CliError::Usage(format!(
            "no signing secret at {}: tokens and vouchers are signed with the server's secret, \
             so run this where it can read it (--data DIR or --config FILE as the server uses \
             them, or PELOTON_AUTH_SECRET)",
            path.display()
        )));
    }
    Keys::load_or_create(config).map_err(|e| CliError::Failed(e.to_string()))
}
