#!/usr/bin/env bash
# `make run`: the ledger's API and a console for a first agency, on this machine.
# The ledger serves on HOST:PORT; the console on HOST:CONSOLE_PORT, holding the agency's key.
set -euo pipefail
VENV="${VENV:-.venv}"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
CONSOLE_PORT="${CONSOLE_PORT:-8100}"
AGENCY="${AGENCY:-ngo-first}"

"$VENV/bin/ledger" serve --host "$HOST" --port "$PORT" &
ledger_pid=$!
trap 'kill "$ledger_pid" 2>/dev/null; wait "$ledger_pid" 2>/dev/null || true' EXIT INT TERM

for _ in $(seq 1 100); do  # up to 20 s for the API to answer
  if "$VENV/bin/python" -c "import httpx,sys; sys.exit(httpx.get('http://$HOST:$PORT/v1/health').status_code != 200)" 2>/dev/null; then
    break
  fi
  kill -0 "$ledger_pid" 2>/dev/null || { echo "run: the ledger did not start" >&2; exit 1; }
  sleep 0.2
done

export LEDGER_CONSOLE_LEDGER_URL="http://$HOST:$PORT"
export LEDGER_CONSOLE_STATE_DIR="${LEDGER_CONSOLE_STATE_DIR:-.console}"
# The agency's key lives with its console, never among the ledger's keys.
export LEDGER_CONSOLE_AGENCY_KEY_FILE="${LEDGER_CONSOLE_AGENCY_KEY_FILE:-$LEDGER_CONSOLE_STATE_DIR/$AGENCY.key}"
export LEDGER_CONSOLE_HOST="$HOST" LEDGER_CONSOLE_PORT="$CONSOLE_PORT"
"$VENV/bin/ledger" console bootstrap --agency "$AGENCY"

cat <<INFO

  ledger API:       http://$HOST:$PORT   (admin token in keys/admin.token)
  agency console:   http://$HOST:$CONSOLE_PORT   (agency $AGENCY)
  first login:      $LEDGER_CONSOLE_STATE_DIR/first-login, if this is the first run:
                    username, a one-time password (changed at the first login, which
                    deletes the file) and the TOTP secret to enrol in an authenticator app
                    (supervisors log in with its code). A trial on one machine: in a real
                    deployment the agency runs its console and holds its key, not the operator.
  demo cases:       .venv/bin/ledger demo --url http://$HOST:$PORT --shelter-key $LEDGER_CONSOLE_AGENCY_KEY_FILE
                    (in another terminal: the console's agency then plays the demo's shelter)

INFO
"$VENV/bin/ledger" console serve
