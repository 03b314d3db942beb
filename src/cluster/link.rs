//! One node's connection to the cluster's NATS servers, shared by everything cluster mode
//! adds (the JetStream journal, leases): the client, its JetStream context, and the runtime
//! both run on.
//!
//! NATS work runs on a runtime of its own (one thread, `peloton-nats`), so callers on any
//! runtime, or on none (the journal's synchronous reads), can wait for it without the two
//! ever waiting for each other.

use crate::config::ClusterConfig;
use crate::metrics as m;
use async_nats::jetstream as js;
use std::future::Future;
use std::time::Duration;

/// Acknowledgements JetStream may owe this node at once before publishing waits for them:
/// bounds the memory of a burst while leaving the pipeline deep enough for group commit.
const MAX_ACKS_IN_FLIGHT: usize = 16_384;

/// A connected node's handle to the cluster; cloned freely.
#[derive(Clone)]
pub struct Link {
    /// Where NATS work runs.
    runtime: tokio::runtime::Handle,
    /// JetStream through the node's one connection.
    context: js::Context,
    /// This node's name (`cluster.node_id`, else the host name).
    node: String,
    /// The cluster section, for names and limits.
    config: ClusterConfig,
}

/// Owns the runtime of a [`Link`]: dropped (or [`LinkRuntime::stop`]ped) last at shutdown,
/// which closes the connection.
pub struct LinkRuntime {
    /// Taken at stop: a runtime must not be dropped inside another.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Link {
    /// Connects to the NATS servers `config` names. Fails, naming what, when none can be
    /// reached or the credentials file cannot be read.
    pub fn connect(config: &ClusterConfig) -> Result<(Link, LinkRuntime), String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("peloton-nats")
            .enable_all()
            .build()
            .map_err(|e| format!("NATS runtime: {e}"))?;
        let handle = runtime.handle().clone();
        let timeout = Duration::from_millis(config.ack_timeout_ms);
        let node = config.node_name();
        // The context is built on the NATS runtime: it spawns the task that collects
        // acknowledgements, which must run there, whatever runtime (if any) calls this.
        let connecting = {
            let config = config.clone();
            let node = node.clone();
            async move {
                let client = client(&config, &node, timeout).await?;
                Ok::<_, String>(
                    js::ContextBuilder::new()
                        .timeout(timeout)
                        .max_ack_inflight(MAX_ACKS_IN_FLIGHT)
                        .backpressure_on_inflight(true)
                        .build(client),
                )
            }
        };
        let owner = LinkRuntime {
            runtime: Some(runtime),
        };
        let context = run_blocking(&handle, timeout * 2, connecting)?;
        // The client's events keep the gauge current from here on; this sets where it starts.
        metrics::gauge!(m::CLUSTER_NATS_CONNECTED).set(connected_value(
            context.client().connection_state() == async_nats::connection::State::Connected,
        ));
        Ok((
            Link {
                runtime: handle,
                context,
                node,
                config: config.clone(),
            },
            owner,
        ))
    }

    /// Whether the connection to NATS is up now (the client reconnects by itself).
    pub fn connected(&self) -> bool {
        self.context.client().connection_state() == async_nats::connection::State::Connected
    }

    /// The JetStream context.
    pub fn context(&self) -> &js::Context {
        &self.context
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The cluster section.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// How long one NATS request may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.ack_timeout_ms)
    }

    /// Starts `task` on the NATS runtime.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(task);
    }

    /// Runs `work` on the NATS runtime and waits for it from async code on any runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        self.runtime
            .spawn(work)
            .await
            .map_err(|e| format!("NATS runtime: {e}"))
    }

    /// Runs `work` on the NATS runtime and blocks this thread until it answers or `limit`
    /// passes: for synchronous callers (the journal's reads), never from the NATS runtime.
    pub fn block_on<T: Send + 'static, E: From<String> + Send + 'static>(
        &self,
        limit: Duration,
        work: impl Future<Output = Result<T, E>> + Send + 'static,
    ) -> Result<T, E> {
        run_blocking(&self.runtime, limit, work)
    }
}

/// Runs `work` on `runtime` and blocks this thread until it answers or `limit` passes.
fn run_blocking<T: Send + 'static, E: From<String> + Send + 'static>(
    runtime: &tokio::runtime::Handle,
    limit: Duration,
    work: impl Future<Output = Result<T, E>> + Send + 'static,
) -> Result<T, E> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(work.await);
    });
    match rx.recv_timeout(limit) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(E::from(format!(
            "NATS did not answer within {} ms",
            limit.as_millis()
        ))),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(E::from("the NATS runtime has stopped".to_owned()))
        }
    }
}

/// The NATS client, connected.
async fn client(
    config: &ClusterConfig,
    node: &str,
    timeout: Duration,
) -> Result<async_nats::Client, String> {
    let options = if config.credentials_file.as_os_str().is_empty() {
        async_nats::ConnectOptions::new()
    } else {
        async_nats::ConnectOptions::with_credentials_file(&config.credentials_file)
            .await
            .map_err(|e| {
                format!(
                    "cluster.credentials_file {}: {e}",
                    config.credentials_file.display()
                )
            })?
    };
    let urls: Vec<String> = config
        .nats_url
        .split(',')
        .map(|url| url.trim().to_owned())
        .collect();
    options
        .event_callback(|event| async move {
            // Reconnection is the client's own: the gauge shows when it is cut off.
            match event {
                async_nats::Event::Connected => {
                    metrics::gauge!(m::CLUSTER_NATS_CONNECTED).set(connected_value(true));
                }
                async_nats::Event::Disconnected | async_nats::Event::Closed => {
                    metrics::gauge!(m::CLUSTER_NATS_CONNECTED).set(connected_value(false));
                }
                _ => {}
            }
        })
        .name(format!("peloton {node}"))
        .connection_timeout(timeout)
        .request_timeout(Some(timeout))
        .connect(urls)
        .await
        .map_err(|e| format!("cannot reach NATS at {}: {e}", config.nats_url))
}

/// [`m::CLUSTER_NATS_CONNECTED`]'s value: 1 connected, 0 not.
fn connected_value(connected: bool) -> f64 {
    if connected {
        1.0
    } else {
        0.0
    }
}

impl LinkRuntime {
    /// Stops the runtime, closing the connection; what still runs on it is dropped.
    pub fn stop(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for LinkRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
