# syntax=docker/dockerfile:1
# aiopsd container image.
#
#   docker build -t aiopsd:0.1.0 .
#
# Two stages: a Rust builder, then a distroless runtime with nothing but the
# binary. tests/deploy.rs checks that the binary name and `--locked` here
# match Cargo.toml.

# ---- build -----------------------------------------------------------------
# rust-version in Cargo.toml is 1.89; the builder may be newer.
FROM rust:1-bookworm AS build
WORKDIR /src
# Manifests first so the dependency layer is cached across source edits.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# --locked: exactly the versions in Cargo.lock (reproducible; fails rather
# than silently resolving newer crates).
RUN cargo build --release --locked --bin aiopsd \
    && install -D -m 0755 target/release/aiopsd /out/aiopsd \
    && install -d -m 0755 /out/data

# ---- runtime ---------------------------------------------------------------
# distroless/cc rather than distroless/static or scratch: the binary links
# glibc dynamically — bundled SQLite (rusqlite `bundled`) and aws-lc-rs
# (rustls' crypto) are C code built against libc, so a libc must be there.
# cc-debian12 is glibc + libgcc + CA certificates and nothing else: no
# shell, no package manager. `:nonroot` runs as UID/GID 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="aiopsd" \
      org.opencontainers.image.description="AIOps agent for Kubernetes: detects anomalies, groups them into incidents, explains them." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.source="https://github.com/example/aiopsd" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/aiopsd /usr/local/bin/aiopsd
# The store lives on a volume (emptyDir or PVC in deploy/); the root
# filesystem can then be read-only.
COPY --from=build --chown=65532:65532 /out/data /var/lib/aiopsd
VOLUME ["/var/lib/aiopsd"]
WORKDIR /var/lib/aiopsd
USER 65532:65532
EXPOSE 9464
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz (deploy/base).
ENTRYPOINT ["/usr/local/bin/aiopsd"]
CMD ["run", "--config", "/etc/aiopsd/aiopsd.yaml"]
