#!/usr/bin/env bash
# Recovery time after kill -9, per million events, with and without redb's
# quick repair, and what quick repair costs a commit. Results and the
# decision they support: docs/benchmarks.md.
#
#   EVENTS=1000000 bench/recovery.sh        # a few minutes, ~1.2 GB in $TMPDIR
#
# The journal is filled through the real store (bench/recovery.rs: group
# commit, every commit fsynced). Opens and commits are timed with redb alone
# (bench/redb-recovery), built with --release: a dev build of redb has debug
# assertions, which walk the whole file on every open. PROFILE=dev fills
# with the dev build of logbook (the file is the same, only slower to write).
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-1000000}
SECS=${SECS:-4}
REPS=${REPS:-3}
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
  cargo build --release --locked -q --example recovery
  fill=target/release/examples/recovery
else
  cargo build --locked -q --example recovery
  fill=target/debug/examples/recovery
fi
(cd bench/redb-recovery && cargo build --release -q)
redb=bench/redb-recovery/target/release/redb-recovery
dir=$(mktemp -d "${TMPDIR:-/var/tmp}/logbook-recovery.XXXXXX")
trap 'rm -rf "$dir"' EXIT

$fill fill "$dir/journal.redb" "$EVENTS"
echo "events: $EVENTS, file: $(du -m "$dir/journal.redb" | cut -f1) MiB"
for rep in $(seq "$REPS"); do
  echo "open after a clean stop: $($redb open "$dir/journal.redb")s"
  for mode in off on; do
    qr=""; [ "$mode" = on ] && qr=--quick-repair
    cp "$dir/journal.redb" "$dir/crashed.redb"
    # Durable commits as the daemon makes them, then SIGKILL.
    ($redb crash "$dir/crashed.redb" $qr) 2>/dev/null || true
    echo "quick repair $mode: open after kill -9: $($redb open "$dir/crashed.redb")s"
  done
  for batch in 1 64; do
    for mode in off on; do
      qr=""; [ "$mode" = on ] && qr=--quick-repair
      cp "$dir/journal.redb" "$dir/commits.redb"
      echo "quick repair $mode, $batch records per commit: $($redb commits "$dir/commits.redb" "$batch" "$SECS" $qr) records/s"
    done
  done
done
