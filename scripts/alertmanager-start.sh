#!/usr/bin/env bash
# Starts a throwaway Alertmanager (the Debian `prometheus-alertmanager`
# binary) on loopback, for tests and local demos. Gossip is off
# (`--cluster.listen-address=`), so several can run side by side.
#
# Usage:
#   scripts/alertmanager-start.sh --dir DIR --port PORT --config FILE
#                                 [--owner-pid PID] [--ready-timeout SECS]
#
#   --dir DIR           working directory, created if missing; must not hold
#                       a running server. Gets data/, alertmanager.yml (a copy
#                       of FILE), alertmanager.log and alertmanager.pid (the
#                       server's own PID).
#   --port PORT         listen on 127.0.0.1:PORT.
#   --config FILE       the Alertmanager configuration (routes, receivers);
#                       checked with `amtool check-config` when amtool is
#                       installed. In YAML, quote a receiver named 'null'.
#   --owner-pid PID     also stop the server when process PID exits (so a test
#                       binary killed without unwinding leaves nothing behind).
#   --ready-timeout S   how long to wait for /-/ready (default 30).
#
# Exits 0 once GET /-/ready answers 200; 5 when amtool refuses the config;
# otherwise prints the end of the server's log, stops the server and exits
# non-zero. Stop it with scripts/alertmanager-stop.sh --dir DIR.
#
# Environment: ALERTMANAGER_BIN, AMTOOL_BIN override the binaries.
set -euo pipefail
service_name=alertmanager service_tag=alertmanager-start
# shellcheck source-path=SCRIPTDIR source=lib/service.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

dir="" port="" config="" owner_pid="" ready_timeout=30
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --owner-pid) owner_pid="$2"; shift 2 ;;
    --ready-timeout) ready_timeout="$2"; shift 2 ;;
    -h|--help) service_usage; exit 0 ;;
    *) service_die 2 "unknown argument $1" ;;
  esac
done
service_check_start_args "$dir" "$port" "$owner_pid"
[[ -n "$config" && -f "$config" ]] || service_die 2 "--config FILE is required and must exist"

alertmanager_bin="${ALERTMANAGER_BIN:-prometheus-alertmanager}"
amtool_bin="${AMTOOL_BIN:-amtool}"
command -v "$alertmanager_bin" >/dev/null ||
  service_die 3 "$alertmanager_bin not found (apt-get install prometheus-alertmanager)"

mkdir -p "$dir/data"
dir="$(cd "$dir" && pwd)"
service_refuse_running "$dir" server
cp "$config" "$dir/alertmanager.yml"

if command -v "$amtool_bin" >/dev/null; then
  if ! "$amtool_bin" check-config "$dir/alertmanager.yml" >"$dir/amtool.log" 2>&1; then
    echo "alertmanager-start: amtool refused $config:" >&2
    tail -n 20 "$dir/amtool.log" >&2
    exit 5
  fi
fi

# Started directly by this shell (not after `cd … &&`, which would
# background a subshell), so $! is its own PID. Its command line names its
# storage dir: that is how the watchdog and the stop script recognise it.
"$alertmanager_bin" \
  --config.file="$dir/alertmanager.yml" \
  --storage.path="$dir/data" \
  --web.listen-address="127.0.0.1:$port" \
  --cluster.listen-address= \
  >"$dir/alertmanager.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$dir/alertmanager.pid"
if [[ -n "$owner_pid" ]]; then
  service_watchdog "$pid" "$owner_pid" "--storage.path=$dir/data" "$dir"
fi

service_wait_ready "$pid" "$dir" "$ready_timeout" 0.2 "not ready" \
  curl -fsS -o /dev/null "http://127.0.0.1:$port/-/ready"
echo "alertmanager-start: ready on http://127.0.0.1:$port (pid $pid, dir $dir)"
