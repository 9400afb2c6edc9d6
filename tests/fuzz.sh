#!/usr/bin/env bash
# Fuzzes the registry's request parser (berth-oci's `Action::parse`, the one grammar
# of every /v2 request) with libFuzzer through cargo-fuzz, for a bounded time:
# `bash tests/fuzz.sh [SECONDS]` (default 60). Installs cargo-fuzz when missing.
# cargo-fuzz passes nightly-only compiler flags; RUSTC_BOOTSTRAP lets this machine's
# stable toolchain accept them, so no second toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/../oci/fuzz"
seconds=${1:-60}
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --quiet cargo-fuzz@0.13.2 --locked
fi
mkdir -p corpus/request
# Seeds: one request of each kind, so the fuzzer starts from real paths.
i=0
for seed in 'GET /v2/a/b/manifests/latest' 'PUT /v2/a/manifests/sha256:0' \
  'POST /v2/a/blobs/uploads/?mount=sha256:0&from=b' 'PATCH /v2/a/blobs/uploads/x.1' \
  'GET /v2/_catalog' 'GET /v2/%61/tags/list' 'DELETE /v2/a/blobs/sha256:0'; do
  printf '%s' "$seed" > "corpus/request/seed$i"; i=$((i + 1))
done
RUSTC_BOOTSTRAP=1 cargo fuzz run request corpus/request -- \
  -max_total_time="$seconds" -max_len=512 -print_final_stats=1
