//! The command line: `peloton serve`, `peloton admin …`, `peloton restore`, `peloton sim …`.
//!
//! The top of the command line lives in [`args`]; each command's own flags live with the code
//! that runs them ([`mail`], [`patrol`], [`sim`]). Admin commands in [`admin`] and the
//! simulators in [`sim`] (with the faults it can rehearse in [`sim::faults`]) speak the binary
//! protocol through [`crate::net::client`]; [`racers`] builds registrations and CSV imports;
//! [`mail`] runs `peloton admin mail …`; [`cluster`] reads the cluster's state from NATS; [`patrol`] runs imports, voucher checks and the patrol
//! report; [`keys`] finds the server's signing secret for the commands that sign offline;
//! [`output`] prints tables for people and exactly one JSON document for scripts (`--json`).
//!
//! Dependencies point one way: [`args`] → the commands → [`output`] and [`keys`] (leaves),
//! and inside [`sim`] the shell (race, racer, monitor) → the pure ride model, plans and
//! faults → the generator. Nothing imports back up.

pub mod admin;
pub mod args;
pub mod cluster;
pub mod invite;
pub mod keys;
pub mod mail;
pub mod output;
pub mod patrol;
pub mod racers;
pub mod sim;

/// How a command failed, which decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags or configuration: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The operation failed (server refused, connection lost, file unreadable): exit code 1.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
        }
    }

    /// A reply of the wrong type: a server bug or a version mismatch.
    pub fn unexpected(reply: &crate::net::protocol::Reply) -> CliError {
        CliError::Failed(format!("unexpected reply {}", reply.type_name()))
    }
}

impl From<crate::net::client::ClientError> for CliError {
    fn from(e: crate::net::client::ClientError) -> Self {
        CliError::Failed(e.to_string())
    }
}

impl From<crate::config::ConfigError> for CliError {
    fn from(e: crate::config::ConfigError) -> Self {
        CliError::Usage(e.to_string())
    }
}
