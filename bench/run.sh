#!/usr/bin/env bash
# Append throughput of logbook with 1, 16 and 64 clients on one plan, 1 KiB
# payloads, every 201 fsynced. With BENCH_REDIS=1 it also runs Redis XADD with
# appendfsync always in the same run, for a same-day ratio (see
# ../shared/peers.md for why only same-run ratios mean anything).
#
# Needs wrk (apt-get install wrk; and redis-server for the comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
PORT=${PORT:-7599}
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk" >&2; exit 2; }

cargo build --release --locked -q
data=$(mktemp -d)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
./target/release/logbook serve --listen 127.0.0.1:$PORT --data-dir "$data" 2>"$data/log" &
pid=$!
for _ in $(seq 50); do curl -sf localhost:$PORT/healthz >/dev/null && break; sleep 0.1; done

for c in 1 16 64; do
  threads=$(( c < 2 ? 1 : 2 ))
  rps=$(PLANS=1 wrk -t$threads -c$c -d$DURATION -s bench/append.lua http://127.0.0.1:$PORT/ \
        | awk '/Requests\/sec/ {print $2}')
  echo "logbook append, one plan, $c clients: $rps/s"
done

if [ "${BENCH_REDIS:-0}" = 1 ] && command -v redis-server >/dev/null; then
  rdir=$(mktemp -d)
  redis-server --port 7600 --bind 127.0.0.1 --dir "$rdir" --appendonly yes \
    --appendfsync always --save '' --daemonize yes --logfile "$rdir/log"
  sleep 0.5
  payload=$(head -c 1024 /dev/zero | tr '\0' x)
  for c in 1 16 64; do
    rps=$(redis-benchmark -p 7600 -c $c -n $((c * 2000)) -r 16 --csv \
          XADD "ev:__rand_int__" '*' payload "$payload" | tail -1 | cut -d, -f2 | tr -d '"')
    echo "redis XADD appendfsync always, $c clients: $rps/s"
  done
  redis-cli -p 7600 shutdown nosave >/dev/null || true
  rm -rf "$rdir"
fi
