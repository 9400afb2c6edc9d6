#!/usr/bin/env bash
# Fuzzes every parser of outside input with libFuzzer through cargo-fuzz (targets in
# fuzz/fuzz_targets, one file each, saying what it checks):
#   request        a /v2 request line to its typed action (berth-oci's registry_request)
#   reference      digests, references, repository names, tags, upload ids (berth-oci)
#   content_range  a chunk's Content-Range and a blob GET's Range (berth_server::http)
#   token          bearer JWTs as the gate verifies them, claims, token scopes (berth-auth)
#   manifest       manifests and indexes as pushed and as pulled (berth-oci's Manifest)
#   manifest_store manifests as PUT, all the way through storage on SQLite (berth-storage)
#   dockerfile     Dockerfiles as `berth image build` parses them (berth-cli)
#   image_archive  `docker save` / OCI-layout tars as `berth image load` reads them (berth-cli)
#
#   bash tests/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS (default 200) is the fuzzing time of the whole run, split evenly over the
# targets (all of them unless some are named); building comes on top (the first build
# compiles the server's dependency tree once more, optimised and instrumented, in
# fuzz/target). The test command (tests/run-all.sh) runs it with 200 s, 25 s a
# target. For a longer search:
#
#   bash tests/fuzz.sh 7200                 # two hours, 15 minutes a target
#   bash tests/fuzz.sh 3600 manifest token  # an hour on two targets
#
# Each target starts from the real inputs in fuzz/seeds/TARGET (kept in git) and from
# what earlier runs found (fuzz/corpus/TARGET, not kept); the structured formats have
# a dictionary of their words (fuzz/dicts). A crash stops the script;
# libFuzzer names the input (fuzz/artifacts/TARGET/crash-…), which
# `cargo fuzz run TARGET FILE` replays. A crash becomes a unit test in the crate that
# owns the parser, next to its fix.
#
# Installs cargo-fuzz when missing. cargo-fuzz passes nightly-only compiler flags;
# RUSTC_BOOTSTRAP lets this machine's stable toolchain accept them, so no second
# toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-200}
shift || true
all=(request reference content_range token manifest manifest_store dockerfile image_archive)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all[@]}"); fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --quiet cargo-fuzz@0.13.2 --locked
fi
export RUSTC_BOOTSTRAP=1
# The parsers are safe Rust, where a bug shows as a panic, which libFuzzer catches
# without AddressSanitizer; leaving it out keeps the build (the whole server's
# dependency tree, instrumented) shorter for the test command. For a long search,
# BERTH_FUZZ_SANITIZER=address adds it.
sanitizer=(--sanitizer "${BERTH_FUZZ_SANITIZER:-none}")
cargo fuzz build "${sanitizer[@]}"
each=$((seconds / ${#targets[@]}))
[ "$each" -ge 1 ] || each=1
for target in "${targets[@]}"; do
  # Longest input tried, and the dictionary of words the format is made of (if any).
  options=()
  case $target in
    manifest | manifest_store) options=(-max_len=16384 -dict=fuzz/dicts/manifest.dict) ;;
    token) options=(-max_len=4096 -dict=fuzz/dicts/token.dict) ;;
    image_archive) options=(-max_len=65536) ;;
    dockerfile) options=(-max_len=4096) ;;
    *) options=(-max_len=512) ;;
  esac
  echo "fuzzing $target for ${each}s"
  mkdir -p "fuzz/corpus/$target"
  cargo fuzz run "${sanitizer[@]}" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$each" -print_final_stats=1 "${options[@]}"
done
