# Sourced by scripts: a throwaway PostgreSQL cluster for tests and rehearsals.
#
#   source scripts/lib/postgres.sh
#   [ -n "${DATABASE_URL:-}" ] || eq_throwaway_postgres
#
# eq_throwaway_postgres starts a cluster (initdb/pg_ctl from the newest
# /usr/lib/postgresql/*/bin; as the `postgres` user when running as root; trust auth,
# fsync off, 300 connections) on a free port under a temp dir, exports DATABASE_URL
# (postgres://postgres@127.0.0.1:<port>/postgres; the harness creates a fresh database on
# it per run) and sets an EXIT trap that stops it and removes the directory. The caller
# must not set its own EXIT trap afterwards (or must call eq_stop_throwaway_postgres).

eq_as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }

eq_throwaway_postgres() {
  EQ_PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [ -x "$EQ_PG_BIN/initdb" ] || { echo "no PostgreSQL server binaries (initdb) found; set DATABASE_URL" >&2; return 1; }
  EQ_PG_DIR="$(mktemp -d /tmp/eq-pg-XXXXXX)"
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  [ "$(id -u)" = 0 ] && chown postgres "$EQ_PG_DIR"
  eq_as_pg "$EQ_PG_BIN/initdb -D $EQ_PG_DIR/data -A trust -U postgres -E UTF8 --no-sync" >/dev/null
  eq_as_pg "$EQ_PG_BIN/pg_ctl -D $EQ_PG_DIR/data -o '-p $port -k $EQ_PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300' -l $EQ_PG_DIR/log -w start" >/dev/null
  trap eq_stop_throwaway_postgres EXIT
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "== throwaway PostgreSQL on port $port" >&2
}

eq_stop_throwaway_postgres() {
  [ -n "${EQ_PG_DIR:-}" ] || return 0
  eq_as_pg "$EQ_PG_BIN/pg_ctl -D $EQ_PG_DIR/data -m immediate stop" >/dev/null 2>&1 || true
  rm -rf "$EQ_PG_DIR"
  EQ_PG_DIR=""
}
