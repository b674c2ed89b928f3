#!/usr/bin/env bash
# Verification rate of two logbook binaries in one run, alternating old and
# new each round (issue 14, verify row): `logbook admin verify` of one plan
# through a running daemon, and offline `logbook verify --export` of the
# same plan. On a shared machine only same-run ratios mean anything.
#
#   bench/verify_compare.sh OLD_BINARY NEW_BINARY
#
# Knobs: EVENTS (200000, 1 KiB payloads, filled once with this checkout's
# examples/recovery), ROUNDS (3), PORT (7598). Prints one line per run and
# the openssl sha256 1 KiB rate of one core.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bench/verify_compare.sh OLD_BINARY NEW_BINARY" >&2; exit 2; }
old=$(realpath "$1") new=$(realpath "$2")
EVENTS=${EVENTS:-200000}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-7598}
export LOGBOOK_HMAC_SECRET=bench-secret-bench-secret-bench-secret
work=$(mktemp -d "${TMPDIR:-/var/tmp}/logbook-verify.XXXXXX")
trap 'rm -rf "$work"' EXIT
plan=00000000-0000-0000-0000-000000000001

cargo build --release --locked -q --example recovery
mkdir -p "$work/data"
target/release/examples/recovery fill "$work/data/journal.redb" "$EVENTS" 1 1000 2>/dev/null

now() { date +%s.%N; }
rate() { awk -v n="$EVENTS" -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", n / (b - a) }'; }

admin_verify() {  # admin_verify BINARY: events/s of one admin verify
  local binary=$1 pid t0 r
  "$binary" serve --config config.toml --listen 127.0.0.1:$PORT --data-dir "$work/data" 2>>"$work/log" &
  pid=$!
  for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
  t0=$(now)
  "$binary" admin --socket "$work/data/admin.sock" verify "$plan" >"$work/out"
  r=$(rate "$t0")
  grep -q ": ok, " "$work/out" || { cat "$work/out" >&2; exit 1; }
  if [ ! -f "$work/export.ndjson" ]; then
    "$binary" admin --socket "$work/data/admin.sock" export "$plan" >"$work/export.ndjson"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$r"
}

offline_verify() {  # offline_verify BINARY: events/s of one offline verify
  local t0 r
  t0=$(now)
  "$1" verify --export "$work/export.ndjson" >"$work/out"
  r=$(rate "$t0")
  grep -q "^ok: " "$work/out" || { cat "$work/out" >&2; exit 1; }
  echo "$r"
}

for round in $(seq "$ROUNDS"); do
  a_old=$(admin_verify "$old"); a_new=$(admin_verify "$new")
  o_old=$(offline_verify "$old"); o_new=$(offline_verify "$new")
  echo "round $round: admin old $a_old/s new $a_new/s ($(awk -v a="$a_new" -v b="$a_old" 'BEGIN { printf "%.2f", a / b }')x);" \
    "offline old $o_old/s new $o_new/s ($(awk -v a="$o_new" -v b="$o_old" 'BEGIN { printf "%.2f", a / b }')x)"
done
if command -v openssl >/dev/null; then
  kbs=$(openssl speed -evp sha256 -bytes 1024 -seconds 2 2>/dev/null | awk '/^sha256/ { sub(/k$/, "", $NF); print $NF }')
  echo "openssl sha256, 1 KiB blocks per second, one core: $(awk -v k="$kbs" 'BEGIN { printf "%.0f", k * 1000 / 1024 }')"
fi
