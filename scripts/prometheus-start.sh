#!/usr/bin/env bash
# Starts a throwaway Prometheus (the Debian `prometheus` binary) on loopback,
# for tests and local demos. Optionally backfills an OpenMetrics file first,
# so the data is in the TSDB when the server starts.
#
# Usage:
#   scripts/prometheus-start.sh --dir DIR --port PORT [--openmetrics FILE]
#                               [--owner-pid PID] [--ready-timeout SECS]
#
#   --dir DIR           working directory, created if missing; must not hold
#                       a running server. Gets data/, prometheus.yml,
#                       prometheus.log and prometheus.pid (the server's own PID).
#   --port PORT         listen on 127.0.0.1:PORT.
#   --openmetrics FILE  `promtool tsdb create-blocks-from openmetrics FILE DIR/data`
#                       before start (OpenMetrics text, `# EOF` last, timestamps
#                       in seconds, within the 15d retention).
#   --owner-pid PID     also stop the server when process PID exits (so a test
#                       binary killed without unwinding leaves nothing behind).
#   --ready-timeout S   how long to wait for /-/ready (default 60).
#
# Exits 0 once GET /-/ready answers 200; otherwise prints the end of the
# server's log, stops the server and exits non-zero. Stop it with
# scripts/prometheus-stop.sh --dir DIR.
#
# Environment: PROMETHEUS_BIN, PROMTOOL_BIN override the binaries.
set -euo pipefail

dir="" port="" openmetrics="" owner_pid="" ready_timeout=60
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --openmetrics) openmetrics="$2"; shift 2 ;;
    --owner-pid) owner_pid="$2"; shift 2 ;;
    --ready-timeout) ready_timeout="$2"; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "prometheus-start: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n "$dir" && -n "$port" ]] || { echo "prometheus-start: --dir and --port are required" >&2; exit 2; }
[[ "$port" =~ ^[0-9]+$ ]] || { echo "prometheus-start: --port must be a number" >&2; exit 2; }
[[ -z "$owner_pid" || "$owner_pid" =~ ^[0-9]+$ ]] || { echo "prometheus-start: --owner-pid must be a number" >&2; exit 2; }

prometheus_bin="${PROMETHEUS_BIN:-prometheus}"
promtool_bin="${PROMTOOL_BIN:-promtool}"
command -v "$prometheus_bin" >/dev/null || { echo "prometheus-start: $prometheus_bin not found (apt-get install prometheus)" >&2; exit 3; }

mkdir -p "$dir/data"
dir="$(cd "$dir" && pwd)"
pid_file="$dir/prometheus.pid"
log_file="$dir/prometheus.log"
if [[ -s "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
  echo "prometheus-start: $dir already has a running server (pid $(cat "$pid_file"))" >&2
  exit 4
fi

cat >"$dir/prometheus.yml" <<YAML
# Written by scripts/prometheus-start.sh: no scrapes, the TSDB holds only
# what was backfilled (or remote-written).
global:
  scrape_interval: 15s
  evaluation_interval: 15s
scrape_configs: []
YAML

if [[ -n "$openmetrics" ]]; then
  if ! "$promtool_bin" tsdb create-blocks-from openmetrics "$openmetrics" "$dir/data" >"$dir/promtool.log" 2>&1; then
    echo "prometheus-start: backfill of $openmetrics failed:" >&2
    tail -n 20 "$dir/promtool.log" >&2
    exit 5
  fi
fi

# The server is started directly by this shell (not after `cd … &&`, which
# would background a subshell), so $! is its own PID.
"$prometheus_bin" \
  --config.file="$dir/prometheus.yml" \
  --storage.tsdb.path="$dir/data" \
  --web.listen-address="127.0.0.1:$port" \
  --web.enable-remote-write-receiver \
  >"$log_file" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pid_file"

if [[ -n "$owner_pid" ]]; then
  # Watchdog: ends with the server; stops the server when the owner is gone.
  # Before killing it re-checks that the PID is still our server (its
  # command line names our data dir), so a recycled PID is never hit.
  (
    while kill -0 "$pid" 2>/dev/null; do
      if ! kill -0 "$owner_pid" 2>/dev/null; then
        if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "--storage.tsdb.path=$dir/data"; then
          kill "$pid" 2>/dev/null || true
        fi
        exit 0
      fi
      sleep 1
    done
  ) >/dev/null 2>&1 </dev/null &
  echo "$!" >"$dir/watchdog.pid"
fi

deadline=$((SECONDS + ready_timeout))
until curl -fsS -o /dev/null "http://127.0.0.1:$port/-/ready" 2>/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "prometheus-start: prometheus (pid $pid) exited during start-up; log:" >&2
    tail -n 30 "$log_file" >&2
    rm -f "$pid_file"
    exit 6
  fi
  if (( SECONDS >= deadline )); then
    echo "prometheus-start: not ready after ${ready_timeout}s; log:" >&2
    tail -n 30 "$log_file" >&2
    "$(dirname "$0")/prometheus-stop.sh" --dir "$dir" || true
    exit 7
  fi
  sleep 0.2
done
echo "prometheus-start: ready on http://127.0.0.1:$port (pid $pid, dir $dir)"
