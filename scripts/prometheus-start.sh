#!/usr/bin/env bash
# Starts a throwaway Prometheus (the Debian `prometheus` binary) on loopback,
# for tests and local demos. Optionally backfills an OpenMetrics file first,
# so the data is in the TSDB when the server starts.
#
# Usage:
#   scripts/prometheus-start.sh --dir DIR --port PORT [--openmetrics FILE]
#                               [--config FILE] [--owner-pid PID]
#                               [--ready-timeout SECS]
#
#   --dir DIR           working directory, created if missing; must not hold
#                       a running server. Gets data/, prometheus.yml,
#                       prometheus.log and prometheus.pid (the server's own PID).
#   --port PORT         listen on 127.0.0.1:PORT.
#   --openmetrics FILE  `promtool tsdb create-blocks-from openmetrics FILE DIR/data`
#                       before start (OpenMetrics text, `# EOF` last, timestamps
#                       in seconds, within the 15d retention).
#   --config FILE       use FILE (copied to DIR/prometheus.yml; checked with
#                       `promtool check config`) instead of the default config
#                       without scrapes — e.g. to scrape a test exporter,
#                       evaluate alerting rules and send alerts to an
#                       Alertmanager. Paths in it (rule_files) must be absolute.
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
service_name=prometheus service_tag=prometheus-start
# shellcheck source-path=SCRIPTDIR source=lib/service.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

dir="" port="" openmetrics="" config="" owner_pid="" ready_timeout=60
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --openmetrics) openmetrics="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --owner-pid) owner_pid="$2"; shift 2 ;;
    --ready-timeout) ready_timeout="$2"; shift 2 ;;
    -h|--help) service_usage; exit 0 ;;
    *) service_die 2 "unknown argument $1" ;;
  esac
done
service_check_start_args "$dir" "$port" "$owner_pid"

prometheus_bin="${PROMETHEUS_BIN:-prometheus}"
promtool_bin="${PROMTOOL_BIN:-promtool}"
command -v "$prometheus_bin" >/dev/null || service_die 3 "$prometheus_bin not found (apt-get install prometheus)"

mkdir -p "$dir/data"
dir="$(cd "$dir" && pwd)"
service_refuse_running "$dir" server

if [[ -n "$config" ]]; then
  [[ -f "$config" ]] || service_die 2 "--config $config does not exist"
  cp "$config" "$dir/prometheus.yml"
  if ! "$promtool_bin" check config "$dir/prometheus.yml" >"$dir/promtool.log" 2>&1; then
    echo "prometheus-start: promtool refused $config:" >&2
    tail -n 20 "$dir/promtool.log" >&2
    exit 5
  fi
else
  cat >"$dir/prometheus.yml" <<YAML
# Written by scripts/prometheus-start.sh: no scrapes, the TSDB holds only
# what was backfilled (or remote-written).
global:
  scrape_interval: 15s
  evaluation_interval: 15s
scrape_configs: []
YAML
fi

if [[ -n "$openmetrics" ]]; then
  if ! "$promtool_bin" tsdb create-blocks-from openmetrics "$openmetrics" "$dir/data" >"$dir/promtool.log" 2>&1; then
    echo "prometheus-start: backfill of $openmetrics failed:" >&2
    tail -n 20 "$dir/promtool.log" >&2
    exit 5
  fi
fi

# The server is started directly by this shell (not after `cd … &&`, which
# would background a subshell), so $! is its own PID. Its command line names
# its data dir: that is how the watchdog and the stop script recognise it.
"$prometheus_bin" \
  --config.file="$dir/prometheus.yml" \
  --storage.tsdb.path="$dir/data" \
  --web.listen-address="127.0.0.1:$port" \
  --web.enable-remote-write-receiver \
  >"$dir/prometheus.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$dir/prometheus.pid"
if [[ -n "$owner_pid" ]]; then
  service_watchdog "$pid" "$owner_pid" "--storage.tsdb.path=$dir/data" "$dir"
fi

service_wait_ready "$pid" "$dir" "$ready_timeout" 0.2 "not ready" \
  curl -fsS -o /dev/null "http://127.0.0.1:$port/-/ready"
echo "prometheus-start: ready on http://127.0.0.1:$port (pid $pid, dir $dir)"
