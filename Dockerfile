# syntax=docker/dockerfile:1
# netstack-lat as a container image: one fully static binary (libbpf, libelf, zlib and glibc
# linked in) on an empty base. x86_64 only, like `make static`; on other hosts build with
#   docker build --platform linux/amd64 -t ghcr.io/netstack-lat/netstack-lat:0.1.0 .
# Deployed by deploy/k8s/daemonset.yaml.

FROM rust:1-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# What `make static` needs (scripts/deps.sh also installs test and bench tools, not needed here).
# Versions come from bookworm's archive as of the build; not pinned one by one.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends clang llvm libelf-dev zlib1g-dev pkg-config make file \
    && rm -rf /var/lib/apt/lists/*

# The image's rustup has a rustfmt proxy but not the rustfmt component. libbpf-cargo formats
# the generated skeletons with rustfmt: it skips a rustfmt that is missing, but fails the
# build on the proxy's "not installed" error.
RUN rustup component add rustfmt

WORKDIR /src
COPY . .

# `make static` without its deps step; fails unless `file` calls the result static
# (glibc's static-pie is reported as "static-pie linked").
RUN LIBBPF_SYS_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu \
    RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --features static --target x86_64-unknown-linux-gnu --locked \
    && file target/x86_64-unknown-linux-gnu/release/netstack-lat \
        | tee /dev/stderr | grep -Eq 'statically linked|static-pie linked' \
    && cp target/x86_64-unknown-linux-gnu/release/netstack-lat /netstack-lat

FROM scratch
COPY --from=build /netstack-lat /netstack-lat
EXPOSE 2112
ENTRYPOINT ["/netstack-lat"]
CMD ["serve", "--listen", "0.0.0.0:2112"]
