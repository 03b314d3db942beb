//! The deployment files (`Dockerfile`, `deploy/k8s/*.yaml`) checked against the server they
//! deploy: its real configuration loader, its real routes and its real binary.
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
    let dir = repo().join("deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/k8s exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML in {}", dir.display());
    let mut docs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read manifest");
        let name = file_name(&path);
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(doc).unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
            if !value.is_null() {
                docs.push((name.clone(), value));
            }
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
    assert_eq!(found.len(), 1, "expected one {kind} {name:?} in deploy/k8s");
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

/// The StatefulSet's server container.
fn container(docs: &[(String, Value)]) -> &Value {
    let set = object(docs, "StatefulSet", None);
    let containers = seq(&set["spec"]["template"]["spec"]["containers"], "containers");
    assert_eq!(containers.len(), 1, "one server container");
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
    for var in seq(&c["env"], "env") {
        if let Some(value) = var["value"].as_str() {
            env.insert(text(&var["name"], "env name").to_owned(), value.to_owned());
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

/// (ConfigMap name, key) of the file at `path` inside the container.
fn mounted_config_map(docs: &[(String, Value)], c: &Value, path: &str) -> (String, String) {
    let volumes = seq(
        &object(docs, "StatefulSet", None)["spec"]["template"]["spec"]["volumes"],
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
    let (_, health_path) = healthcheck_url(runtime_stage(&dockerfile()));
    paths.push(("Dockerfile HEALTHCHECK".to_owned(), health_path));

    // `start` returns once recovery has finished, so /readyz is due 200 as well.
    let server = TestServer::start().await;
    for (what, path) in &paths {
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
