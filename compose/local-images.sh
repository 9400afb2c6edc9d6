#!/usr/bin/env bash
# Builds every image compose/local.yml runs, where no image can be pulled but Debian
# packages and crates can be installed (this CI):
#   berth-local/base      Debian bookworm (debootstrap minbase) with PostgreSQL, HAProxy
#   berth-local/postgres  the base + an entrypoint that reads POSTGRES_* as the official image does
#   berth-local/haproxy   the base running HAProxy on compose/haproxy.cfg
#   berth-local/s3s-fs    the base + s3s-fs (the S3 server of the tests: cargo install s3s-fs)
#   berth-build-host:<12 hex of sha256(Cargo.lock)>  the Dockerfile's build stage
#                         (tests/host-build-image.sh), for compose/local.yml and the tests
# Each is tagged by a hash of what it is made from, so a second run finds them all and
# takes a second; `:latest` points at the current one (what compose/local.yml names).
# Needs root (debootstrap), docker, and s3s-fs on PATH. Prints the images.
set -euo pipefail
cd "$(dirname "$0")/.."
# One run at a time (tests may start several): none removes or half-builds what
# another is about to use.
exec 9>/tmp/berth-local-images.lock
flock 9

if ! command -v debootstrap >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  else
    echo "debootstrap is missing: install it (apt-get install debootstrap) as root" >&2
    exit 1
  fi
fi

have() { docker image inspect "$1" >/dev/null 2>&1; }
hash() { sha256sum | cut -c1-12; }

# The base: one root file system for the three services (they share its layer).
packages=ca-certificates,postgresql-15,haproxy
base=berth-local/base:$(echo "bookworm minbase $packages" | hash)
if ! have "$base"; then
  root=$(mktemp -d /tmp/berth-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include="$packages" bookworm "$root" \
    http://deb.debian.org/debian >/dev/null
  # What a container never uses: package caches and lists, documentation, and the
  # cluster the postgresql package made (the entrypoint makes its own in the volume).
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale \
    "$root"/var/lib/postgresql/15 "$root"/etc/postgresql/15
  tar -C "$root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
    docker import - "$base" >/dev/null
  rm -rf "$root"
  trap - EXIT
fi
echo "$base"

# build NAME CONTEXT_DIR: a small image FROM the base, its Dockerfile on stdin; the tag
# hashes the base, the Dockerfile and the context's files.
build() {
  local name=$1 context=$2 dockerfile tag
  dockerfile=$(cat)
  tag=$name:$( (echo "$base" && echo "$dockerfile" &&
    cd "$context" && find . -type f | sort | xargs -r sha256sum) | hash)
  if ! have "$tag"; then
    # Quiet unless it fails (the legacy builder warns on every build).
    local log
    log=$(mktemp)
    echo "$dockerfile" | docker build -q -t "$tag" --build-arg BASE="$base" -f - "$context" \
      >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; return 1; }
    rm -f "$log"
  fi
  docker tag "$tag" "$name:latest"
  echo "$tag"
}

build berth-local/postgres compose/local <<'EOF'
ARG BASE
FROM ${BASE}
COPY postgres-entrypoint.sh /usr/local/bin/
# pg_isready, initdb and postgres itself, as on the official image's PATH.
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
EXPOSE 5432
# A fast shutdown (SIGTERM would wait for every client to disconnect).
STOPSIGNAL SIGINT
ENTRYPOINT ["postgres-entrypoint.sh"]
EOF

build berth-local/haproxy compose/local <<'EOF'
ARG BASE
FROM ${BASE}
# The official image's config path; compose mounts compose/haproxy.cfg there.
USER haproxy
EXPOSE 5000
# SIGUSR1: a soft stop (finish the requests in flight), as the official image.
STOPSIGNAL SIGUSR1
# -W master-worker, -db in the foreground, logs to stdout.
ENTRYPOINT ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
EOF

# s3s-fs links glibc only (the base has it); the binary is copied into a context of its own.
command -v s3s-fs >/dev/null ||
  { echo "no s3s-fs: cargo install s3s-fs@0.14.1 --features binary --locked" >&2; exit 1; }
s3=$(mktemp -d /tmp/berth-s3s.XXXXXX)
cp "$(command -v s3s-fs)" "$s3/"
build berth-local/s3s-fs "$s3" <<'EOF'
ARG BASE
FROM ${BASE}
COPY s3s-fs /usr/local/bin/
# A bucket is a directory of /data; nobody (65534) owns it and runs the server.
RUN mkdir /data && chown 65534:65534 /data
USER 65534:65534
VOLUME /data
ENTRYPOINT ["s3s-fs"]
EOF
rm -rf "$s3"

# The Dockerfile's build stage: this machine's toolchain and crates, one per Cargo.lock.
builder=berth-build-host:$(hash <Cargo.lock)
if ! have "$builder"; then
  # Older ones (another Cargo.lock) are gigabytes each.
  docker images -q berth-build-host | sort -u | xargs -r docker rmi -f >/dev/null
  tests/host-build-image.sh "$builder" >/dev/null
fi
docker tag "$builder" berth-build-host:latest
echo "$builder"
