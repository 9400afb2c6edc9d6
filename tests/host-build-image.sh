#!/usr/bin/env bash
# Makes a Docker image holding this machine's Rust toolchain, C compiler and crate
# cache, for the Dockerfile's build stage where no image can be pulled (this CI):
#   tests/host-build-image.sh berth-build-host
#   docker build --build-arg BUILD_IMAGE=berth-build-host .
# Cargo runs offline in it, from the crates already downloaded here.
set -euo pipefail
name=${1:-berth-build-host}
sysroot=$(rustc --print sysroot)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
# The system (compiler, linker, C headers and libraries, certificates) without what a
# build never touches; the toolchain becomes /opt/rust, the crate cache /cargo.
tar -C / -cf - \
  --exclude=usr/lib/jvm --exclude=usr/lib/google-cloud-sdk --exclude=usr/lib/llvm-14 \
  --exclude=usr/share/doc --exclude=usr/share/man --exclude=usr/share/locale \
  --exclude=usr/lib/postgresql --exclude=usr/local \
  --exclude=./share/doc \
  --transform 's,^\./,opt/rust/,' --transform 's,^registry/,cargo/registry/,' \
  usr bin lib lib64 sbin etc \
  -C "$sysroot" ./ \
  -C "$cargo_home" registry |
  docker import \
    --change 'ENV PATH=/opt/rust/bin:/usr/bin:/bin CARGO_HOME=/cargo CARGO_NET_OFFLINE=true' \
    - "$name" >/dev/null
echo "$name"
