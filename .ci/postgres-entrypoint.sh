#!/usr/bin/env bash
# The entrypoint of the CI PostgreSQL image (.ci/docker-bootstrap), a small subset of the official
# postgres image's: an empty PGDATA is initialised from POSTGRES_USER (default postgres),
# POSTGRES_DB (default: the user) and POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE (required);
# connections over TCP need the password (scram-sha-256), from any address; the server listens on
# every container interface. Runs as the unprivileged `postgres` user (compose sets `user:`); as
# root it first takes PGDATA over for `postgres` and drops to it. The password never reaches a
# command line: initdb reads it from a file descriptor.
set -Eeuo pipefail

if [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi
if [ "$1" != 'postgres' ]; then
  exec "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
if [ "$(id -u)" = '0' ]; then
  mkdir -p "$PGDATA" && chown -R postgres:postgres "$PGDATA" && chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    [ -z "${POSTGRES_PASSWORD:-}" ] || fail "set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE, not both"
    [ -r "$POSTGRES_PASSWORD_FILE" ] || fail "POSTGRES_PASSWORD_FILE $POSTGRES_PASSWORD_FILE is not readable"
    POSTGRES_PASSWORD=$(<"$POSTGRES_PASSWORD_FILE")
  fi
  [ -n "${POSTGRES_PASSWORD:-}" ] \
    || fail "the database is uninitialised and no superuser password is set: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE"
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  echo "initialising $PGDATA for user $user, database $db"
  initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  printf '\n# every address, with the password (scram-sha-256)\nhost all all all scram-sha-256\n' \
    >>"$PGDATA/pg_hba.conf"
  printf "\nlisten_addresses = '*'\npassword_encryption = 'scram-sha-256'\n" \
    >>"$PGDATA/postgresql.conf"
  unset POSTGRES_PASSWORD
  if [ "$db" != 'postgres' ]; then
    # A server on the Unix socket only, so nothing connects (or sees it healthy) before it is ready.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$user" --dbname postgres \
      --set db="$db" <<<'CREATE DATABASE :"db";' >/dev/null
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
  echo "PostgreSQL initialised; starting the server"
fi
unset POSTGRES_PASSWORD

exec "$@"
