# The Peloton server as a container image (deploy/README.md says how to build and run it).
#
# Two stages: the Rust toolchain builds the one `peloton` binary from the locked dependency
# graph, and a slim Debian of the same release runs it, so the binary's glibc matches.
# Everything the server serves (the web page, the default config.toml) is compiled into the
# binary; the image adds only curl for the health check.
#
# The token signing secret is never baked in: pass PELOTON_AUTH_SECRET at run time
# (`docker run -e PELOTON_AUTH_SECRET=$(openssl rand -hex 32) ...`, or a Kubernetes Secret).
# Without it the server generates `secret.key` inside the data volume on first start.
# tests/deploy_manifests.rs checks this file against the server's real configuration.
# Image names are fully qualified so podman and buildah, which refuse short names without a
# registries.conf alias, build it as docker does.

FROM docker.io/library/rust:bookworm AS build
WORKDIR /src
COPY . .
# The release profile keeps line tables for profiling (Cargo.toml); the image drops them
# (108 MB -> 18 MB) and keeps the symbols, so panics and `perf` still name functions.
RUN cargo build --release --locked --bin peloton \
    && strip --strip-debug target/release/peloton

FROM docker.io/library/debian:bookworm-slim
# curl for HEALTHCHECK only: the server has no health subcommand. No ca-certificates: the
# check talks plain HTTP to the container itself, and the default build has no TLS (SMTP TLS
# is the `mail-tls` feature; build with it and add ca-certificates here if you need it).
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid/gid so volume ownership (Kubernetes fsGroup) can name it.
RUN groupadd --gid 10001 peloton \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/peloton --no-create-home \
        --shell /usr/sbin/nologin peloton \
    && mkdir -p /var/lib/peloton \
    && chown peloton:peloton /var/lib/peloton
COPY --from=build /src/target/release/peloton /usr/local/bin/peloton
# The embedded config.toml listens on 127.0.0.1, unreachable from outside a container:
# PELOTON_LISTEN (server.listen) opens it on every interface. PELOTON_DATA (server.data_dir)
# puts the journal, snapshots, backups and a generated secret in the volume.
ENV PELOTON_LISTEN=0.0.0.0:7400 \
    PELOTON_DATA=/var/lib/peloton
VOLUME /var/lib/peloton
EXPOSE 7400
USER 10001:10001
# /healthz answers as soon as the socket is bound, recovery or not (/readyz waits for it).
# The port follows PELOTON_LISTEN if it is changed at run time.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${PELOTON_LISTEN##*:}/healthz" || exit 1
ENTRYPOINT ["/usr/local/bin/peloton"]
CMD ["serve"]
