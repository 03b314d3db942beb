//! The crate graph is the architecture (ARCHITECTURE.md, "Crates"), so it is checked here,
//! transitively, from what Cargo actually resolves:
//!
//! - `peloton-domain` holds the rules. Nothing it builds on may run tasks, store, or open a
//!   socket: no tokio, ractor, sled, hyper, tungstenite or lettre anywhere below it, so a
//!   rule can be tested (and reasoned about) without a runtime.
//! - `peloton-protocol` is the wire: it may use tokio and tungstenite for its client, but not
//!   the server's parts (ractor, sled, hyper, lettre), and never the server crate.
//! - Neither depends on the server package `peloton`; Cargo already refuses a cycle, this
//!   names the rule.
//!
//! A failure names the crate, the forbidden dependency, and the path that pulls it in.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Package name -> names of its normal (non-dev, non-build) dependencies, as resolved.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The workspace's resolved dependency graph, from `cargo metadata` (offline: Cargo.lock).
fn resolved_graph() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let name_of: BTreeMap<String, String> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap_or_default().to_string(),
                p["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut graph = Graph::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve nodes") {
        let name = name_of[node["id"].as_str().unwrap_or_default()].clone();
        let deps = graph.entry(name).or_default();
        for dep in node["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            if normal {
                deps.insert(name_of[dep["pkg"].as_str().unwrap_or_default()].clone());
            }
        }
    }
    graph
}

/// The path from `from` to `to` through normal dependencies, if there is one.
fn path(graph: &Graph, from: &str, to: &str) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![from.to_string()]];
    while let Some(route) = stack.pop() {
        let last = route.last().cloned().unwrap_or_default();
        if last == to {
            return Some(route);
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        for next in graph.get(&last).into_iter().flatten() {
            let mut longer = route.clone();
            longer.push(next.clone());
            stack.push(longer);
        }
    }
    None
}

/// Every forbidden crate reachable from `krate`, each with the path that pulls it in.
fn violations(graph: &Graph, krate: &str, forbidden: &[&str]) -> Vec<String> {
    forbidden
        .iter()
        .filter_map(|bad| path(graph, krate, bad).map(|route| route.join(" -> ")))
        .collect()
}

#[test]
fn the_domain_crate_builds_on_no_runtime_storage_or_socket() {
    let graph = resolved_graph();
    let found = violations(
        &graph,
        "peloton-domain",
        &[
            "tokio",
            "ractor",
            "sled",
            "hyper",
            "tokio-tungstenite",
            "tungstenite",
            "lettre",
            "mio",
            "peloton",
            "peloton-protocol",
        ],
    );
    assert!(
        found.is_empty(),
        "peloton-domain must stay pure:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_protocol_crate_builds_on_no_server_part() {
    let graph = resolved_graph();
    let found = violations(
        &graph,
        "peloton-protocol",
        &["ractor", "sled", "hyper", "lettre", "peloton"],
    );
    assert!(
        found.is_empty(),
        "peloton-protocol must not reach the server:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_a_forbidden_path() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("tokio".into());
    assert_eq!(
        violations(&graph, "a", &["tokio", "sled"]),
        vec!["a -> b -> tokio"]
    );
}
