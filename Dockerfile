# syntax=docker/dockerfile:1.7
#
# Container images for both binaries of this workspace, from one multi-stage
# build. Pick the image with the build target:
#
#   docker build --target store-server -t drasi-store-server:dev .
#   docker build --target operator     -t drasi-store-operator:dev .
#
# Requires BuildKit (default in Docker 23+ and in `docker buildx`): the cargo
# registry, git checkouts and the target directory live in cache mounts that
# persist across builds, so a rebuild after a source change only recompiles the
# workspace crates, never the dependencies.
# Both runtime images are distroless (no shell, no package manager) and run as
# the numeric non-root user 65532.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------
# Builder: compiles both release binaries once, with --locked.
# ---------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    CARGO_NET_RETRY=5

COPY . .
RUN --mount=type=cache,id=drasi-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=drasi-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=drasi-cargo-target,target=/src/target \
    cargo build --locked --release \
        -p drasi-store-server --bin drasi-store-server \
        -p drasi-store-operator --bin drasi-store-operator \
 && mkdir -p /out/data \
 && cp target/release/drasi-store-server target/release/drasi-store-operator /out/

# ---------------------------------------------------------------------------
# Runtime images. distroless/cc carries glibc, libgcc and CA certificates and
# nothing else. "nonroot" is uid/gid 65532; it is repeated numerically so that
# Kubernetes `runAsNonRoot: true` can verify it without an /etc/passwd lookup.
# ---------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime-base
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.vendor="The Drasi Authors" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/drasi-project/drasi-store-operator" \
      org.opencontainers.image.url="https://github.com/drasi-project/drasi-store-operator" \
      org.opencontainers.image.documentation="https://github.com/drasi-project/drasi-store-operator#readme" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
USER 65532:65532
WORKDIR /home/nonroot

# drasi-store-server: the durable state store (HTTP on 7070).
FROM runtime-base AS store-server
LABEL org.opencontainers.image.title="drasi-store-server" \
      org.opencontainers.image.description="Durable redb-backed state store server for DrasiLib applications"
COPY --from=builder --chown=65532:65532 /out/drasi-store-server /usr/local/bin/drasi-store-server
# Default data directory, owned by the runtime user so `docker run` works
# without a volume. In a cluster the operator mounts the PVC and passes
# --data-dir explicitly (a flag wins over the env var).
COPY --from=builder --chown=65532:65532 /out/data /var/lib/drasi-store
ENV DRASI_STORE_DATA_DIR=/var/lib/drasi-store
EXPOSE 7070
ENTRYPOINT ["/usr/local/bin/drasi-store-server"]

# drasi-store-operator: the Kubernetes operator (metrics/health on 8080).
FROM runtime-base AS operator
LABEL org.opencontainers.image.title="drasi-store-operator" \
      org.opencontainers.image.description="Kubernetes operator for DrasiStateStore resources"
COPY --from=builder --chown=65532:65532 /out/drasi-store-operator /usr/local/bin/drasi-store-operator
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/drasi-store-operator"]
CMD ["run"]
