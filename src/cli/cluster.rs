//! `peloton cluster status`: the cluster as NATS holds it (nodes up, leases and their
//! holders, the journal streams and their replicas' lag), read straight from NATS with the
//! `[cluster]` configuration, so it works whichever nodes are up, or none.

use super::args::ClusterCommand;
use super::{output, CliError};
use crate::cluster::status::{self, ClusterStatus};
use crate::cluster::Link;
use crate::config::{Config, Overrides};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

/// Runs a `peloton cluster …` command.
pub fn run(command: ClusterCommand) -> Result<(), CliError> {
    match command {
        ClusterCommand::Status { config, json } => {
            let config = Config::load(config.as_deref(), &Overrides::default())
                .map_err(|e| CliError::Usage(e.to_string()))?;
            if !config.cluster.enabled() {
                return Err(CliError::Usage(
                    "cluster mode is off: set cluster.nats_url (or PELOTON_CLUSTER_NATS_URL)"
                        .into(),
                ));
            }
            let (link, runtime) = Link::connect(&config.cluster).map_err(CliError::Failed)?;
            let reader = link.clone();
            let read = link.block_on(
                link.timeout() * 6,
                async move { status::read(&reader).await },
            );
            runtime.stop();
            let status = read.map_err(CliError::Failed)?;
            output::json_or(json, &status, print)
        }
    }
}

/// The status as three tables.
fn print(status: &ClusterStatus) {
    let mut nodes = Table::new();
    nodes.load_preset(UTF8_FULL_CONDENSED);
    nodes.set_header(["node", "address", "version", "up since"]);
    for card in &status.nodes {
        nodes.add_row([
            card.node.clone(),
            card.address.clone(),
            card.version.clone(),
            crate::time::format_rfc3339(card.started_at_ms),
        ]);
    }
    println!("nodes ({})\n{nodes}", status.nodes.len());
    let mut leases = Table::new();
    leases.load_preset(UTF8_FULL_CONDENSED);
    leases.set_header(["lease", "held by"]);
    for lease in &status.leases {
        leases.add_row([lease.key.clone(), lease.node.clone()]);
    }
    println!("leases ({})\n{leases}", status.leases.len());
    let mut streams = Table::new();
    streams.load_preset(UTF8_FULL_CONDENSED);
    streams.set_header([
        "stream", "records", "bytes", "actors", "replicas", "leader", "max lag",
    ]);
    for s in &status.streams {
        streams.add_row([
            s.name.clone(),
            s.messages.to_string(),
            s.bytes.to_string(),
            s.actors.to_string(),
            s.replicas.to_string(),
            s.leader.clone().unwrap_or_else(|| "-".into()),
            s.max_lag.to_string(),
        ]);
    }
    println!("streams ({})\n{streams}", status.streams.len());
}
