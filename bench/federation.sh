#!/usr/bin/env bash
# Federation delivery rate to one subscribed peer, and the sender's RSS
# (issue 14). One command, bounded run time (under 2 minutes with the
# defaults, build excluded):
#
#   bench/federation.sh                 # EVENTS=20000 DEADLINE=90 REPS=1
#   EVENTS=60000 REPS=3 bench/federation.sh
#
# Two release daemons on loopback with the shipped config.toml (default
# settings: nothing is tuned for the benchmark), `beta` subscribed to `>` on
# `alpha`. EVENTS events of 1 KiB are appended to one plan on `alpha` by 64
# clients as fast as it takes them; `beta`'s message stream counts arrivals.
# BINARY=path runs another build (its config.toml in BENCH_CONFIG=path), for
# a before/after in one session. Keys are generated once and cached in $TMPDIR. Driver: bench/federation.rs.
#
# Output, one line per repetition (for bench/run.sh to include verbatim or
# to parse; key=value pairs separated by single spaces, never reordered,
# new keys only appended):
#
#   federation events=N delivered=D appended_secs=A secs=S delivered_per_sec=R sender_rss_max_mib=M receiver_rss_mib=Q complete=true|false backlog_at_appended=B drain_per_sec=T
#
#   events             events appended on the sender
#   delivered          events the receiver had stored (and streamed) by the end
#   appended_secs      when the last append was answered (from the first)
#   secs               from the first append to the last delivery, or DEADLINE
#   delivered_per_sec  delivered / secs: the sustained delivery rate
#   sender_rss_max_mib the sender's largest RSS, sampled every 100 ms
#   receiver_rss_mib   the receiver's RSS at the end
#   complete           whether every event arrived before DEADLINE
#   backlog_at_appended events not yet delivered when the last append was answered
#   drain_per_sec      the rate that backlog was delivered at, with no appends
#                      competing for the cores (NaN if there was none)
#   appends_per_sec    events / appended_secs: the sender's append rate
#
# FEDERATION_CLIENTS=N appends with N clients (64); FEDERATION_SUBSCRIBE=0
# runs with no peer subscribed (it then ends with the appends): together,
# what a subscribed peer costs the sender's appends.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-20000}
DEADLINE=${DEADLINE:-90}
REPS=${REPS:-1}
BINARY=${BINARY:-target/release/logbook}

if [ "$BINARY" = target/release/logbook ]; then
  cargo build --release --locked -q --bin logbook --example federation
else
  cargo build --release --locked -q --example federation
fi
for _ in $(seq "$REPS"); do
  target/release/examples/federation "$BINARY" "$EVENTS" "$DEADLINE"
done
