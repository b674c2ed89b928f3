#!/usr/bin/env bash
# Bytes a logbook binary writes to disk and CPU time it spends per append
# (/proc/PID/io write_bytes and /proc/PID/stat utime+stime over a wrk run;
# same load as bench/run.sh: 1 KiB payloads, one plan, fsynced). Unlike
# throughput, these move little with the load other processes put on a
# shared machine, so they show what a change costs each append even when
# requests/s are too noisy to. Both depend on the batch sizes reached, so
# compare builds at similar throughput.
#
#   bench/per_append.sh BINARY [CLIENTS...]     # default: 1 16 64
# Needs wrk (apt-get install wrk) and Linux /proc.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/per_append.sh BINARY [CLIENTS...]" >&2; exit 2; }
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
    cpu_before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$(PLANS=1 wrk -t$(( c < 2 ? 1 : 2 )) -c"$c" -d"$DURATION" -s bench/append.lua http://127.0.0.1:$PORT/)
    after=$(awk '/^write_bytes/ {print $2}' "/proc/$pid/io")
    cpu_after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    appends=$(echo "$out" | awk '/requests in/ {print $1}')
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$data"
    ticks=$(getconf CLK_TCK)
    echo "clients $c: $appends appends, $(( (after - before) / appends )) bytes written and $(( (cpu_after - cpu_before) * 1000000 / ticks / appends )) µs CPU per append"
  done
done
