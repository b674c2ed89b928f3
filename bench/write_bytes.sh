#!/usr/bin/env bash
# Bytes a logbook binary writes to disk per append (/proc/PID/io
# write_bytes over a wrk run; same load as bench/run.sh: 1 KiB payloads,
# one plan, fsynced). Unlike throughput, this hardly moves with the load
# other processes put on a shared machine, so it shows what a storage
# change costs each commit even when requests/s are too noisy to.
#
#   bench/write_bytes.sh BINARY [CLIENTS...]     # default: 1 16 64
# Needs wrk (apt-get install wrk) and Linux /proc.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/write_bytes.sh BINARY [CLIENTS...]" >&2; exit 2; }
binary=$1
shift
DURATION=${DURATION:-5s}
PORT=${PORT:-7599}
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk" >&2; exit 2; }
config="$(dirname "$binary")/../../config.toml"
for clients in "${@:-1 16 64}"; do
  for c in $clients; do
    data=$(mktemp -d)
    LOGBOOK_HMAC_SECRET=bench-secret-bench-secret-bench-secret \
      "$binary" serve --config "$config" --listen 127.0.0.1:$PORT --data-dir "$data" 2>"$data/log" &
    pid=$!
    for _ in $(seq 100); do curl -sf localhost:$PORT/healthz >/dev/null && break; sleep 0.1; done
    before=$(awk '/^write_bytes/ {print $2}' "/proc/$pid/io")
    out=$(PLANS=1 wrk -t$(( c < 2 ? 1 : 2 )) -c"$c" -d"$DURATION" -s bench/append.lua http://127.0.0.1:$PORT/)
    after=$(awk '/^write_bytes/ {print $2}' "/proc/$pid/io")
    appends=$(echo "$out" | awk '/requests in/ {print $1}')
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$data"
    echo "clients $c: $appends appends, $(( (after - before) / appends )) bytes written per append"
  done
done
