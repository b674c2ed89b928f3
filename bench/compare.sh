#!/usr/bin/env bash
# Append throughput of two logbook binaries in one run, alternating
# A B A B per client count, so that a change's cost is measured against the
# same machine state (on a shared machine only same-run ratios mean
# anything). Same load as bench/run.sh: 1 KiB payloads, one plan, fsynced.
#
#   bench/compare.sh OLD_BINARY NEW_BINARY      # e.g. a release build of the
#                                               # commit before, and this one
# Needs wrk (apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bench/compare.sh OLD_BINARY NEW_BINARY" >&2; exit 2; }
DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-2}
PORT=${PORT:-7599}
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk" >&2; exit 2; }

# One fresh daemon of BINARY per measurement, with the config.toml of its
# own checkout (target/release/logbook → ../../config.toml); prints requests/s.
measure() {
  local binary=$1 clients=$2 data pid rps config
  config="$(dirname "$binary")/../../config.toml"
  data=$(mktemp -d)
  LOGBOOK_HMAC_SECRET=bench-secret-bench-secret-bench-secret \
    "$binary" serve --config "$config" --listen 127.0.0.1:$PORT --data-dir "$data" 2>"$data/log" &
  pid=$!
  for _ in $(seq 100); do curl -sf localhost:$PORT/healthz >/dev/null && break; sleep 0.1; done
  rps=$(PLANS=1 wrk -t$(( clients < 2 ? 1 : 2 )) -c"$clients" -d"$DURATION" -s bench/append.lua \
        http://127.0.0.1:$PORT/ | awk '/Requests\/sec/ {print $2}')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$data"
  echo "$rps"
}

for clients in 1 16 64; do
  for round in $(seq "$ROUNDS"); do
    old=$(measure "$1" "$clients")
    new=$(measure "$2" "$clients")
    echo "clients $clients, round $round: old $old/s, new $new/s"
  done
done
