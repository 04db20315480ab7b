# syntax=docker/dockerfile:1.7
# The otelcol-multitudes image:
#   docker build -t otelcol-multitudes:$(cat VERSION) .      (or: cargo xtask docker)
#   docker run -e MULTITUDES_INTEGRATION_TOKEN=... -e MULTITUDES_INTEGRATION_ENDPOINT=... \
#     -p 4317:4317 -p 4318:4318 -p 13133:13133 otelcol-multitudes:0.1.0

# ---- build: the release binary, with the cargo registry and target dir cached
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock VERSION ./
COPY .cargo .cargo
COPY crates crates
COPY collector-bin collector-bin
COPY xtask xtask
COPY configs configs
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p otelcol-multitudes \
    && cp target/release/otelcol-multitudes /otelcol-multitudes \
    && mkdir -p /storage

# ---- runtime: glibc, CA certificates, a non-root user, nothing else
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /otelcol-multitudes /otelcol-multitudes
COPY VERSION /VERSION
COPY configs/otel-collector-config.yaml /etc/otelcol-multitudes/config.yaml
# Tier 1 of the two-tier deployment (README "Scaling out"): run with
# --config /etc/otelcol-multitudes/gateway.yaml.
COPY configs/gateway.yaml /etc/otelcol-multitudes/gateway.yaml
# The persistent sending queue (file_storage): owned by the non-root user;
# mount a volume here so queued totals survive the container.
COPY --from=build --chown=65532:65532 /storage /var/lib/otelcol-multitudes
VOLUME /var/lib/otelcol-multitudes
USER nonroot:nonroot
EXPOSE 4317 4318 13133 55679
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/otelcol-multitudes", "healthcheck", "--url", "http://127.0.0.1:13133/"]
ENTRYPOINT ["/otelcol-multitudes"]
CMD ["--config", "/etc/otelcol-multitudes/config.yaml"]
