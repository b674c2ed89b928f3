#!/usr/bin/env bash
# CPU time per append of the journal writer thread and of all the other
# threads together (/proc/PID/task/*/stat utime+stime over a wrk run; same
# load as bench/run.sh: 1 KiB payloads, one plan, fsynced), for several
# binaries alternated round by round, so that only same-run numbers are
# compared (docs/benchmarks.md, "The writer's own work, cut").
#
#   bench/per_thread.sh ROUNDS CLIENTS OLD_BINARY NEW_BINARY...
# Each binary needs ../../config.toml beside its dir (a worktree's target/release).
# Needs wrk (apt-get install wrk), bc and Linux /proc.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { echo "usage: bench/per_thread.sh ROUNDS CLIENTS BINARY..." >&2; exit 2; }
rounds=$1
clients=$2
shift 2
DURATION=${DURATION:-5s}
PORT=${PORT:-7599}
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk" >&2; exit 2; }
ticks=$(getconf CLK_TCK)

# "writer_ticks all_ticks" of process $1
snapshot() {
  local writer=0 all=0 line name ticks_used
  for f in /proc/"$1"/task/*/stat; do
    read -r line <"$f" || continue
    name=${line#*(}
    name=${name%%)*}
    # Fields after the command name: state is the 1st, utime the 12th, stime the 13th.
    read -r -a rest <<<"${line##*) }"
    ticks_used=$((rest[11] + rest[12]))
    all=$((all + ticks_used))
    [ "$name" = journal-writer ] && writer=$((writer + ticks_used))
  done
  echo "$writer $all"
}

per_append() { echo "scale=1; $1 * 1000000 / $ticks / $2" | bc; }

for round in $(seq "$rounds"); do
  for binary in "$@"; do
    config="$(dirname "$binary")/../../config.toml"
    data=$(mktemp -d)
    LOGBOOK_HMAC_SECRET=bench-secret-bench-secret-bench-secret \
      "$binary" serve --config "$config" --listen 127.0.0.1:$PORT --data-dir "$data" 2>"$data/log" &
    pid=$!
    for _ in $(seq 100); do curl -sf localhost:$PORT/healthz >/dev/null && break; sleep 0.1; done
    read -r w0 a0 < <(snapshot "$pid")
    out=$(PLANS=1 wrk -t$(( clients < 2 ? 1 : 2 )) -c"$clients" -d"$DURATION" -s bench/append.lua http://127.0.0.1:$PORT/)
    read -r w1 a1 < <(snapshot "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$data"
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    echo "clients $clients, round $round, $binary: $rps appends/s; CPU per append: writer $(per_append $((w1 - w0)) "$n") µs, other threads $(per_append $((a1 - a0 - w1 + w0)) "$n") µs"
  done
done
