#!/usr/bin/env bash
# The compose stack from images built on this machine (compose/local.yml):
#   compose/local.sh up [ARGS]   build what is missing, start, wait until HAProxy has a
#                                ready replica (ARGS go to `up -d --build`, e.g.
#                                --scale berth=5)
#   compose/local.sh down        remove the containers, networks and volumes
#   compose/local.sh ARGS...     any other docker-compose command on the same files
#                                (ps, logs lb, exec berth /berthd user list, ...)
# BERTH_PROFILE=release builds berthd optimized (default: dev, much faster to build).
set -euo pipefail
cd "$(dirname "$0")/.."
compose() { docker-compose -f docker-compose.yml -f compose/local.yml "$@"; }

case ${1:-} in
up)
  shift
  args=()
  for a in "$@"; do [[ $a == -d || $a == --detach ]] || args+=("$a"); done
  compose/local-images.sh
  compose up -d --build "${args[@]}"
  # The LB is healthy once a replica passes its readiness check (compose/haproxy.cfg).
  lb=$(compose ps -q lb)
  for _ in $(seq 120); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$lb")" = healthy ] && break
    sleep 1
  done
  compose ps
  [ "$(docker inspect -f '{{.State.Health.Status}}' "$lb")" = healthy ] ||
    { echo "the load balancer is not healthy: compose/local.sh logs lb" >&2; exit 1; }
  echo "registry on http://localhost:5000"
  ;;
down)
  shift
  compose down --volumes --remove-orphans "$@"
  ;;
*)
  compose "$@"
  ;;
esac
