#!/usr/bin/env bash
# Appends to one plan while FOLLOWERS SSE streams follow another, quiet one
# (issue 14, the SSE lead "a per-plan channel"): what followers of one plan
# cost everyone else's appends. Each binary runs in turn, each round on a
# fresh data dir; on a shared machine only same-run ratios mean anything.
#
#   bench/quiet_followers.sh BINARY...
#
# Knobs: FOLLOWERS (1000), CLIENTS (16), ROUNDS (3), DURATION (5s), PORT
# (7612). Prints, per binary and round: appends/s, the daemon's CPU per
# 1,000 appends, and the followers' tally (the quiet plan gets one event a
# second; every follower must see each once).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/quiet_followers.sh BINARY..." >&2; exit 2; }
FOLLOWERS=${FOLLOWERS:-1000}
CLIENTS=${CLIENTS:-16}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
PORT=${PORT:-7612}
export LOGBOOK_HMAC_SECRET=bench-secret-bench-secret-bench-secret
command -v wrk >/dev/null || { echo "bench/quiet_followers.sh needs wrk (bench/run.sh installs it)" >&2; exit 2; }
cargo build --release --locked -q --example sse-fanout
work=$(mktemp -d "${TMPDIR:-/var/tmp}/logbook-quiet.XXXXXX")
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

measure() {  # measure BINARY: one line
  local data=$work/data fan=$work/fan rps before after followers_pid
  rm -rf "$data" && mkdir "$data"
  "$1" serve --config config.toml --listen 127.0.0.1:$PORT --data-dir "$data" 2>"$work/log" &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  # The quiet plan: one event a second for 12 s, followed by FOLLOWERS streams.
  target/release/examples/sse-fanout 127.0.0.1:$PORT 0192f3a4-5b6c-7d8e-9f00-00000000aaaa \
    "$FOLLOWERS" 12 1 >"$fan" 2>/dev/null &
  followers_pid=$!
  sleep 3
  before=$(cpu_ticks "$pid")
  # bench/append.lua's one plan is ...-000000000000, not the followed one.
  rps=$(PLANS=1 wrk -t2 -c"$CLIENTS" -d"$DURATION" -s bench/append.lua "http://127.0.0.1:$PORT/" \
    | awk '/Requests\/sec/ { printf "%.0f", $2 }')
  after=$(cpu_ticks "$pid")
  wait "$followers_pid"
  kill "$pid" && wait "$pid" 2>/dev/null || true
  pid=
  awk -v rps="$rps" -v ticks=$((after - before)) -v d="${DURATION%s}" -v tally="$(cat "$fan")" \
    'BEGIN { printf "appends/s=%d cpu_ms_per_1k=%.1f %s\n", rps, ticks * 10 / (rps * d / 1000), tally }'
}

for round in $(seq "$ROUNDS"); do
  for binary in "$@"; do
    echo "round $round $(basename "$binary"): $(measure "$(realpath "$binary")")"
  done
done
