# syntax=docker/dockerfile:1
# tenant-authz container image: a static-enough Rust binary (rustls + ring, no OpenSSL) on
# distroless/cc (glibc, CA certificates, no shell, no package manager), as UID 65532.
#   docker build -t ghcr.io/tenant-authz/tenant-authz:0.1.0 .

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them (a stub main, then the real one).
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --locked --release --bin tenant-authz \
 && rm -rf src target/release/deps/tenant_authz* target/release/deps/libtenant_authz* \
           target/release/.fingerprint/tenant-authz-*
COPY src ./src
RUN cargo build --locked --release --bin tenant-authz \
 && install -m 0755 target/release/tenant-authz /tenant-authz

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /tenant-authz /usr/local/bin/tenant-authz
# nonroot = 65532:65532; the Deployment also sets runAsNonRoot and runAsUser 65532.
USER 65532:65532
# gRPC (ext_authz Check, grpc.health.v1) and admin (/healthz /readyz /metrics).
EXPOSE 9001 9090
ENTRYPOINT ["/usr/local/bin/tenant-authz"]
