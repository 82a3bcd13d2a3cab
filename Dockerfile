# syntax=docker/dockerfile:1
# Two images from one build: the replica and the operator.
#   docker build --target replica  -t dledger-replica:dev .
#   docker build --target operator -t dledger-operator:dev .
# The test bed (e2e/cluster/image.sh) builds images with the same layout,
# user and entrypoint without a Docker engine; a test compares the two.

ARG RUST_VERSION=1.95
ARG VERSION=0.1.0

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target/ between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p dledger-replica -p dledger-operator \
 && mkdir -p /out \
 && cp target/release/dledger-replica target/release/dledger-operator /out/

# distroless/cc carries glibc, libgcc_s and CA certificates and nothing else:
# no shell, no package manager. Its "nonroot" user is 65532:65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime-base
ARG VERSION
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/dledger-k8s/dledger" \
      org.opencontainers.image.vendor="DLedger for Kubernetes"
USER 65532:65532

FROM runtime-base AS replica
ARG VERSION
LABEL org.opencontainers.image.title="dledger-replica" \
      org.opencontainers.image.description="A Raft-replicated append-only log replica"
COPY --from=build --chown=0:0 --chmod=0755 /out/dledger-replica /usr/local/bin/dledger-replica
# 20911: peers and clients (binary protocol); 8080: HTTP API, probes, metrics.
EXPOSE 20911 8080
# Writes go only to the data directory (a mounted volume, DLEDGER_DATA_DIR),
# so the root filesystem can be read-only.
ENTRYPOINT ["/usr/local/bin/dledger-replica"]
CMD ["serve"]

FROM runtime-base AS operator
ARG VERSION
LABEL org.opencontainers.image.title="dledger-operator" \
      org.opencontainers.image.description="Kubernetes operator for DLedger replica groups"
COPY --from=build --chown=0:0 --chmod=0755 /out/dledger-operator /usr/local/bin/dledger-operator
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/dledger-operator"]
CMD ["run"]
