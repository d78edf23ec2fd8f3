#!/usr/bin/env bash
# Run a command with LEDGER_TEST_DATABASE_URL pointing at a fresh, throwaway PostgreSQL database.
#
# 1. LEDGER_TEST_DATABASE_URL already set: use it as it is.
# 2. A server answers on 127.0.0.1:5432 (user postgres): create a uniquely named database,
#    drop it afterwards.
# 3. Otherwise start a throwaway server from the PostgreSQL server binaries (as the postgres
#    user when running as root: PostgreSQL refuses to run as root), stop and delete it after.
# Under CI=true, no PostgreSQL at all is a failure; elsewhere the PostgreSQL tests skip.
set -euo pipefail
PY=${PY:-.venv/bin/python}

can_connect() {
  "$PY" - "$1" <<'PYEOF' >/dev/null 2>&1
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
PYEOF
}

sql() {  # sql URL STATEMENT
  "$PY" - "$1" "$2" <<'PYEOF'
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(sys.argv[2])
PYEOF
}

if [ -n "${LEDGER_TEST_DATABASE_URL:-}" ]; then
  exec "$@"
fi

db="ledger_test_$$_$RANDOM"
server_dir=""
as_pg=()
drop_url=""
cleanup() {
  if [ -n "$drop_url" ]; then sql "$drop_url" "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true; fi
  if [ -n "$server_dir" ]; then
    "${as_pg[@]}" "$bindir/pg_ctl" -D "$server_dir/data" -m immediate -w stop >/dev/null || true
    rm -rf "$server_dir"
  fi
}
trap cleanup EXIT

admin_url="${LEDGER_PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
if can_connect "$admin_url"; then
  echo "with-postgres: using the server on 127.0.0.1:5432, database $db" >&2
else
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -z "$bindir" ] && bindir=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")
  if [ ! -x "$bindir/initdb" ]; then
    if [ "${CI:-}" = "true" ]; then
      echo "with-postgres: no PostgreSQL reachable and no server binaries (initdb) found; CI needs PostgreSQL" >&2
      exit 1
    fi
    echo "with-postgres: no PostgreSQL available; PostgreSQL tests will be skipped" >&2
    exec "$@"
  fi
  dir=$(mktemp -d /tmp/ledger-pg.XXXXXX)
  port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if [ "$(id -u)" = "0" ]; then
    chown postgres:postgres "$dir"
    as_pg=(runuser -u postgres --)
  fi
  echo "with-postgres: starting a throwaway server in $dir on port $port" >&2
  "${as_pg[@]}" "$bindir/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
  server_dir=$dir
  admin_url="postgresql://postgres@127.0.0.1:$port/postgres"
fi

sql "$admin_url" "CREATE DATABASE $db"
drop_url=$admin_url
export LEDGER_TEST_DATABASE_URL="${admin_url%/postgres}/$db"
set +e
"$@"
status=$?
set -e
exit $status
