#!/usr/bin/env bash
# Recovery time after kill -9 (seconds per million events), with and without
# redb's quick repair, and what quick repair costs append throughput.
# Results and the decision they support: docs/benchmarks.md.
#
#   EVENTS=1000000 SECS=10 bench/recovery.sh       # a few minutes, ~0.8 GB of disk
#
# PROFILE=dev skips the release build: the dev profile optimizes every
# dependency (redb included), so recovery times are the same; only the
# throughput numbers are lower.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-1000000}
SECS=${SECS:-10}
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release --locked -q --example recovery
  bin=target/release/examples/recovery
else
  cargo build --locked -q --example recovery
  bin=target/debug/examples/recovery
fi
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/logbook-recovery.XXXXXX")
trap 'rm -rf "$dir"' EXIT

$bin fill "$dir/base.redb" "$EVENTS"
echo "events: $EVENTS, file: $(du -m "$dir/base.redb" | cut -f1) MiB"
echo "open after a clean stop: $($bin open "$dir/base.redb")s"
for mode in off on; do
  qr=""; [ "$mode" = on ] && qr=--quick-repair
  cp "$dir/base.redb" "$dir/crash.redb"
  # Commits a few appends and SIGKILLs itself, like kill -9 of the daemon.
  ($bin crash "$dir/crash.redb" $qr) 2>/dev/null || true
  echo "quick repair $mode: open after kill -9: $($bin open "$dir/crash.redb" $qr)s"
  rm "$dir/crash.redb"
done
for clients in 1 64; do
  for mode in off on; do
    qr=""; [ "$mode" = on ] && qr=--quick-repair
    cp "$dir/base.redb" "$dir/tp.redb"
    echo "quick repair $mode, $clients clients: $($bin throughput "$dir/tp.redb" "$clients" "$SECS" $qr) appends/s"
    rm "$dir/tp.redb"
  done
done
