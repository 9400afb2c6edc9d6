# Shared by the bench scripts (sourced, from the repository's root).

# install_missing COMMAND:PACKAGE…: installs from Debian the packages whose command is
# not on this machine.
install_missing() {
  local need=() t
  for t in "$@"; do
    command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# install_postgres: installs Debian's PostgreSQL server when it is not on this machine (its
# commands are not on PATH, so install_missing cannot tell).
install_postgres() {
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
}

# start_distribution DIR PORT: Distribution (Debian's docker-registry) storing in DIR/peer,
# listening on 127.0.0.1:PORT, logging to DIR/peer.log; sets peer_pid.
start_distribution() {
  cat >"$1/peer.yml" <<YML
version: 0.1
log: { level: error }
storage:
  filesystem: { rootdirectory: $1/peer }
  delete: { enabled: true }
http: { addr: 127.0.0.1:$2 }
YML
  docker-registry serve "$1/peer.yml" >"$1/peer.log" 2>&1 &
  peer_pid=$!
}
