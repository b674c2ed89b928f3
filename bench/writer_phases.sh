#!/usr/bin/env bash
# Where one append's time goes on the journal writer thread at one client
# (docs/benchmarks.md, "Appends at one client"): the writer's system calls
# are traced with perf's raw_syscalls tracepoints (cheap, no call graphs)
# while one wrk connection appends, and each batch is cut into phases by
# its calls: from the last call before the frame's pwrite (the spin's
# sched_yield, or the park) to that pwrite (tables opened, sequencing,
# signing, rows and Merkle nodes, the frame encoded), the pwrite, the
# fdatasync, from the sync's return to the next futex (redb's None commit;
# redb's own condvar wake), and the wake-up of the answering task.
#
#   bench/writer_phases.sh [BINARY=target/release/logbook] [SECONDS=2]
#
# Needs perf, wrk and python3; runs as root (tracepoints).
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/release/logbook}
seconds=${2:-2}
PORT=${PORT:-7596}
for tool in perf wrk python3; do
  command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
work=$(mktemp -d "${TMPDIR:-/var/tmp}/logbook-phases.XXXXXX")
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
LOGBOOK_HMAC_SECRET=bench-secret-bench-secret-bench-secret \
  "$binary" serve --config config.toml --listen 127.0.0.1:$PORT --data-dir "$work/data" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
tid=$(grep -l '^journal-writer$' /proc/$pid/task/*/comm | head -1 | cut -d/ -f5)
wrk -t1 -c1 -d$((seconds + 2))s -s bench/append.lua "http://127.0.0.1:$PORT" >"$work/wrk" &
load=$!
sleep 1
timeout "$seconds" perf record -q -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit \
  -t "$tid" -o "$work/perf.data" >/dev/null 2>&1 || true
wait "$load"
grep Requests "$work/wrk"
perf script -i "$work/perf.data" -F time,event,trace 2>/dev/null | python3 -c '
import re, statistics as st, sys
PWRITE, FDATASYNC, FUTEX = 18, 75, 202   # x86_64 syscall numbers
phases = {k: [] for k in ("apply", "pwrite", "fdatasync", "commit", "answer wake")}
last_exit = stage = None
start = {}
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+):\s+raw_syscalls:sys_(enter|exit): NR (\d+)", line)
    if not m:
        continue
    t, kind, nr = float(m.group(1)) * 1e6, m.group(2), int(m.group(3))
    if kind == "enter" and nr in (PWRITE, FDATASYNC):
        if nr == PWRITE and last_exit is not None:
            phases["apply"].append(t - last_exit)
        start[nr] = t
    elif kind == "exit" and nr in start:
        phases["pwrite" if nr == PWRITE else "fdatasync"].append(t - start.pop(nr))
        if nr == FDATASYNC:
            stage, synced = "commit", t
    elif kind == "enter" and nr == FUTEX and stage == "commit":
        phases["commit"].append(t - synced)
        stage = "wake"
    elif kind == "enter" and nr == FUTEX and stage == "wake":
        stage, woke = "woken", t
    elif kind == "exit" and nr == FUTEX and stage == "woken":
        phases["answer wake"].append(t - woke)
        stage = None
    if kind == "exit" and nr not in (PWRITE, FDATASYNC):
        last_exit = t
for name, v in phases.items():
    if v:
        print(f"{name:12s} median {st.median(v):6.1f} us  mean {st.mean(v):6.1f} us  ({len(v)} batches)")
'
