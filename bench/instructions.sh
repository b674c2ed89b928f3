#!/usr/bin/env bash
# Instructions a logbook binary executes per append or per SSE delivery,
# counted by valgrind's callgrind over the whole process after a warm-up.
# Unlike time, the count hardly moves with what else the machine runs, so
# it shows what a change costs on a shared machine. valgrind runs the
# portable SHA-256 (no SHA extensions), so hashing weighs more here than on
# the real CPU: compare builds with each other, not with time.
#
#   bench/instructions.sh append BINARY [CONNECTIONS=16] [APPENDS=2000]
#   bench/instructions.sh sse BINARY [FOLLOWERS=200] [EVENTS=60]
#
# Needs valgrind (apt-get install valgrind) and python3; `sse` needs the
# release example `target/release/examples/sse-fanout`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '7,8p' "$0" >&2; exit 2; }
mode=$1 binary=$2
command -v callgrind_control >/dev/null || { echo "install valgrind: apt-get install -y valgrind" >&2; exit 2; }
PORT=${PORT:-7613}
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
LOGBOOK_HMAC_SECRET=bench-secret-bench-secret-bench-secret \
  valgrind --tool=callgrind --callgrind-out-file="$data/cg.%p" --dump-instr=no \
  "$binary" serve --config config.toml --listen 127.0.0.1:$PORT --data-dir "$data/journal" 2>"$data/log" &
pid=$!
for _ in $(seq 300); do curl -sf localhost:$PORT/healthz >/dev/null && break; sleep 0.2; done
case $mode in
  append)
    conns=${3:-16} appends=${4:-2000}
    python3 bench/append_load.py $PORT "$conns" 500 >/dev/null   # warm-up, not counted
    callgrind_control -z $pid >/dev/null
    done_=$(python3 bench/append_load.py $PORT "$conns" "$appends")
    what=append whats=appends ;;
  sse)
    followers=${3:-200} events=${4:-60}
    callgrind_control -z $pid >/dev/null
    line=$(target/release/examples/sse-fanout 127.0.0.1:$PORT 0192f3a4-5b6c-7d8e-9f00-00000000aaaa "$followers" "$events" 10)
    echo "$line"
    done_=$(echo "$line" | sed 's/.*delivered=\([0-9]*\).*/\1/')
    what=delivery whats=deliveries ;;
  *) echo "unknown mode $mode (append or sse)" >&2; exit 2 ;;
esac
callgrind_control -d $pid >/dev/null
sleep 1
kill $pid; wait $pid 2>/dev/null || true
total=$(awk '/^(summary|totals):/ {print $2; exit}' "$data"/cg.*.*)
echo "$done_ $whats, $(( total / done_ )) instructions per $what"
