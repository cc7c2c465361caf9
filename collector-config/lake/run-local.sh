#!/usr/bin/env bash
# A lake cluster on this host, for trying scale-out: a throwaway PostgreSQL (the DuckLake catalog),
# three receivers writing one lake, a reader-only node, and the OpenTelemetry Collector in front
# if `otelcol-contrib` is on PATH. Ctrl-C stops everything; the work directory is removed unless
# KEEP=1 (or WORK was given).
#
#   collector-config/lake/run-local.sh
#   WORK=/tmp/lake-demo KEEP=1 collector-config/lake/run-local.sh
#
# Ports (all 127.0.0.1):
#   PostgreSQL 15432 (trust authentication: loopback, throwaway)
#   receiver 1: OTLP gRPC 14317, OTLP/HTTP 14318, HTTP API 19464
#   receiver 2: OTLP gRPC 24317, OTLP/HTTP 24318, HTTP API 29464
#   receiver 3: OTLP gRPC 34317, OTLP/HTTP 34318, HTTP API 39464
#   reader:     HTTP API, dashboard, /metrics 9464; gRPC queries 4417
#   Collector:  OTLP gRPC 4317, OTLP/HTTP 4318 -> the receivers, by trace id
#     (collector-config/load_balancing.yaml, whose static resolver lists the ports above)
#
# Needs PostgreSQL's server binaries (PG_BIN, else the newest /usr/lib/postgresql/*/bin, else PATH)
# and `user-metrics` (USER_METRICS overrides, e.g. USER_METRICS="python -m user_metrics").
set -euo pipefail

RECEIVER_GRPC_PORTS="14317 24317 34317"
PG_PORT=15432
READER_API=127.0.0.1:9464
READER_GRPC=127.0.0.1:4417
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
USER_METRICS="${USER_METRICS:-user-metrics}"

if [ -z "${PG_BIN:-}" ]; then
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -z "$PG_BIN" ] && command -v pg_ctl >/dev/null; then
    PG_BIN="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
  fi
fi
[ -x "$PG_BIN/pg_ctl" ] || { echo "PostgreSQL binaries not found: set PG_BIN" >&2; exit 1; }

if [ -n "${WORK:-}" ]; then
  KEEP="${KEEP:-1}"
  mkdir -p "$WORK"
else
  WORK="$(mktemp -d -t user-metrics-lake.XXXXXX)"
  KEEP="${KEEP:-0}"
fi
WORK="$(cd "$WORK" && pwd)"
chmod 755 "$WORK"

# initdb refuses to run as root: PostgreSQL then runs as the `postgres` user, in a directory it owns.
AS_PG=()
if [ "$(id -u)" = 0 ]; then
  AS_PG=(runuser -u postgres --)
fi
PGROOT="$WORK/pg"  # owned by the user PostgreSQL runs as: its data and its log
PGDATA="$PGROOT/data"
CATALOG="host=127.0.0.1 port=$PG_PORT dbname=lake user=lake"
LAKE_DATA="$WORK/lake-data"
PIDS=()

stop() {
  trap - INT TERM EXIT
  echo "stopping..." >&2
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ -f "$PGDATA/postmaster.pid" ]; then
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null || true
  fi
  if [ "$KEEP" = 1 ]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap stop EXIT
trap 'stop; exit 130' INT TERM

# Waits until something listens on 127.0.0.1:$1 (bash's /dev/tcp: no other tool needed).
wait_port() {
  local port=$1 tries=600
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || { echo "nothing listens on port $port" >&2; exit 1; }
    sleep 0.2
  done
}

if [ ! -f "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGROOT"
  [ ${#AS_PG[@]} -eq 0 ] || chown postgres "$PGROOT"
  "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PGDATA" -U lake --auth=trust >"$WORK/initdb.log"
fi
"${AS_PG[@]}" setsid "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGROOT/postgres.log" -w start \
  -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=''" >/dev/null
"${AS_PG[@]}" "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U lake -d postgres -qtAc \
  "SELECT 1 FROM pg_database WHERE datname = 'lake'" | grep -q 1 \
  || "${AS_PG[@]}" "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U lake lake
mkdir -p "$LAKE_DATA"

# Every node names the same catalog and data path; each receiver has its own local file. Each
# process runs in a session of its own (setsid): Ctrl-C reaches this script only, which stops
# them in order (the nodes ship what they hold, then PostgreSQL stops).
LAKE_ARGS=(--lake "$CATALOG" --lake-data "$LAKE_DATA")
n=0
for grpc_port in $RECEIVER_GRPC_PORTS; do
  n=$((n + 1))
  base=$((grpc_port - 4317))
  setsid $USER_METRICS serve "${LAKE_ARGS[@]}" --db "$WORK/receiver-$n.duckdb" \
    --grpc-listen "127.0.0.1:$grpc_port" --http-listen "127.0.0.1:$((base + 4318))" \
    --api-listen "127.0.0.1:$((base + 9464))" 2>"$WORK/receiver-$n.log" &
  PIDS+=($!)
  # The first receiver creates the lake (catalog tables, data path): the others start after it.
  [ "$n" -gt 1 ] || wait_port "$grpc_port"
done
setsid $USER_METRICS serve "${LAKE_ARGS[@]}" --no-ingest \
  --grpc-listen "$READER_GRPC" --api-listen "$READER_API" 2>"$WORK/reader.log" &
PIDS+=($!)
for grpc_port in $RECEIVER_GRPC_PORTS; do
  wait_port "$grpc_port"
done
wait_port "${READER_API##*:}"

if command -v "${OTELCOL:-otelcol-contrib}" >/dev/null; then
  setsid "${OTELCOL:-otelcol-contrib}" --config "$HERE/../load_balancing.yaml" 2>"$WORK/collector.log" &
  PIDS+=($!)
  front="the Collector on 127.0.0.1:4317 (gRPC) and :4318 (HTTP)"
else
  front="any receiver (no otelcol-contrib on PATH: no Collector started)"
fi
cat >&2 <<INFO
lake cluster up (work directory $WORK, logs there):
  send OTLP to $front
  dashboard and API: http://$READER_API/   (reader-only node, over the lake)
  CLI:               $USER_METRICS users --lake "$CATALOG"
Ctrl-C stops it.
INFO
wait -n "${PIDS[@]}" || true
echo "a process ended; see the logs in $WORK" >&2
KEEP=1
