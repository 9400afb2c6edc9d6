#!/bin/sh
# PostgreSQL from Debian's package, started the way the official `postgres` image
# starts it (compose/local.yml): POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB make
# the cluster on an empty data directory; clients on the network sign in with a
# SCRAM password, local socket users are trusted (pg_isready, psql in the container).
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA

# As root: give the data and socket directories to postgres (a fresh volume or a
# bind mount may belong to root), then run the rest as postgres.
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /run/postgresql
  chown postgres:postgres "$PGDATA" /run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  # initdb's pg_hba.conf admits only loopback hosts: admit the network too.
  echo 'host all all all scram-sha-256' >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    # Single-user mode: no server listens before the database exists.
    quoted=$(printf '%s' "$db" | sed 's/"/""/g')
    echo "CREATE DATABASE \"$quoted\";" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "initialized $PGDATA (user $user, database $db)"
fi

# exec: postgres is PID 1 and gets `docker stop`'s signal itself (SIGINT, set by the
# image's STOPSIGNAL: a fast shutdown, as in the official image).
exec postgres -c listen_addresses='*' "$@"
