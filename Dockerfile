# syntax=docker/dockerfile:1
# Container images of rcluster: two targets from one build.
#   docker build --target node     -t rcluster-node:0.1.0 .
#   docker build --target operator -t rcluster-operator:0.1.0 .
# Both final images are distroless (glibc + CA certificates, no shell), run as UID/GID 65532, and
# start the binary as PID 1; the binaries handle SIGTERM themselves (graceful shutdown).
# Without a Docker daemon or registry, scripts/podman-image.sh builds equivalent FROM-scratch images
# from host-built binaries.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and target/ between builds (BuildKit), so a rebuild after a
# source change compiles only the workspace crates.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p rcluster-node -p rcluster-operator -p rcluster-cli --bins \
    && mkdir -p /out/data \
    && cp target/release/rcluster-node target/release/rcluster target/release/rcluster-operator /out/

# The data node (and the rcluster CLI, for `kubectl exec`). The operator passes only arguments, so
# the entrypoint must stay the rcluster-node binary.
FROM gcr.io/distroless/cc-debian12:nonroot AS node
COPY --from=build /out/rcluster-node /out/rcluster /usr/local/bin/
# An empty, writable data directory for `docker run` without a volume (Kubernetes mounts a PVC here).
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV RCLUSTER_LISTEN=0.0.0.0:7000 \
    RCLUSTER_DATA_DIR=/data
EXPOSE 7000
ENTRYPOINT ["/usr/local/bin/rcluster-node"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/rcluster-operator /usr/local/bin/
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/rcluster-operator"]
CMD ["run"]
