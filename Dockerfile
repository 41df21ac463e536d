# syntax=docker/dockerfile:1
#
# One image with every Ambit binary, as deploy/kubernetes runs it:
#
#   docker build -t ghcr.io/ambit-mesh/ambit:0.1.0 .
#   kind load docker-image ghcr.io/ambit-mesh/ambit:0.1.0     # for a kind cluster
#
# The tag is the workspace version (Cargo.toml); tests/tests/kubernetes_manifests checks
# that the manifests run that tag and that this file installs each binary they run.
# Build it where a Docker (or BuildKit/Podman) engine runs; the development machine of
# this repository has none, so this file is checked by review, not by a build there.

# --- build: the eBPF object first, then the workspace embedding it -----------------
FROM rust:1.95-bookworm AS build
# The eBPF programs need nightly with rust-src; `cargo xtask build-ebpf` adds rust-src
# if missing and builds bpf-linker against the nightly's own LLVM (about 90 s).
RUN rustup toolchain install nightly --profile minimal --component rust-src
WORKDIR /src
COPY . .
RUN cargo xtask build-ebpf
# The agent embeds the object named by AMBIT_EBPF_OBJECT (agent/build.rs); without it
# it would carry an empty placeholder and refuse to start.
ENV AMBIT_EBPF_OBJECT=/src/target/ebpf/bpfel-unknown-none/release/ambit-ebpf
# One package at a time: built together, cargo would give each binary the union of their
# dependencies' features (ztunnel would carry the controller's: 0.4 MB more resident code).
RUN for package in ambit-controller ambit-agent ambit-ztunnel ambit-waypoint; do \
        cargo build --release --locked -p "$package" || exit 1; \
    done
# ambit-cni is copied onto the node and run there by the container runtime, against the
# node's C library (Amazon Linux, kind's Debian, …): link it statically.
RUN target="$(uname -m)-unknown-linux-gnu" \
    && RUSTFLAGS="-C target-feature=+crt-static" \
       cargo build --release --locked -p ambit-cni --target "$target" \
    && cp "target/$target/release/ambit-cni" target/release/ambit-cni-static

# --- runtime ------------------------------------------------------------------------
# The binaries shell out to nothing (netlink, not iproute2; no iptables). The init
# containers use the base image's sh, grep, mount and cp. ca-certificates: roots for
# HTTPS the waypoint may fetch (JWKS) and for a kubeconfig outside the cluster.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/ambit-controller /usr/local/bin/ambit-controller
COPY --from=build /src/target/release/ambit-agent /usr/local/bin/ambit-agent
COPY --from=build /src/target/release/ambit-ztunnel /usr/local/bin/ambit-ztunnel
COPY --from=build /src/target/release/ambit-waypoint /usr/local/bin/ambit-waypoint
# Next to the agent: it installs the plugin from its own directory.
COPY --from=build /src/target/release/ambit-cni-static /usr/local/bin/ambit-cni
