#!/usr/bin/env bash
# Starts a throwaway Mosquitto MQTT broker (the Debian `mosquitto` binary) on
# loopback, for tests, benchmarks and local demos.
#
# Usage:
#   scripts/mosquitto-start.sh --dir DIR --port PORT [--owner-pid PID]
#                              [--ready-timeout SECS]
#
#   --dir DIR           working directory, created if missing; must not hold
#                       a running broker. Gets mosquitto.conf, data/ (the
#                       persistence file), mosquitto.log and mosquitto.pid.
#                       Starting again with the same DIR and PORT after
#                       mosquitto-stop.sh restarts "the same" broker: the
#                       persistent sessions and queued QoS 1 messages of
#                       clients with clean_session=false survive.
#   --port PORT         listen on 127.0.0.1:PORT (anonymous clients allowed).
#   --owner-pid PID     also stop the broker when process PID exits (so a test
#                       binary killed without unwinding leaves nothing behind).
#   --ready-timeout S   how long to wait for the port to accept (default 20).
#
# Exits 0 once the broker accepts TCP connections; otherwise prints the end
# of its log, stops it and exits non-zero. Stop it with
# scripts/mosquitto-stop.sh --dir DIR.
#
# Environment: MOSQUITTO_BIN overrides the binary.
set -euo pipefail
service_name=mosquitto service_tag=mosquitto-start
# shellcheck source-path=SCRIPTDIR source=lib/service.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

dir="" port="" owner_pid="" ready_timeout=20
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --owner-pid) owner_pid="$2"; shift 2 ;;
    --ready-timeout) ready_timeout="$2"; shift 2 ;;
    -h|--help) service_usage; exit 0 ;;
    *) service_die 2 "unknown argument $1" ;;
  esac
done
service_check_start_args "$dir" "$port" "$owner_pid"

# Debian installs the broker in /usr/sbin, which is not on every user's PATH.
mosquitto_bin="${MOSQUITTO_BIN:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}"
[[ -x "$mosquitto_bin" ]] || service_die 3 "mosquitto not found (apt-get install mosquitto)"

mkdir -p "$dir/data"
dir="$(cd "$dir" && pwd)"
conf="$dir/mosquitto.conf"
service_refuse_running "$dir" broker

cat >"$conf" <<CONF
# Written by scripts/mosquitto-start.sh: loopback only, anonymous, with
# persistence so a restart keeps sessions and queued messages.
listener $port 127.0.0.1
allow_anonymous true
# Run as whoever started us: as root, mosquitto would otherwise switch to the
# 'mosquitto' user, which cannot write to our temporary directory.
user $(id -un)
persistence true
persistence_location $dir/data/
# Tests and benchmarks queue many QoS 1 messages for offline subscribers;
# the default (1000 per client) would drop the rest.
max_queued_messages 0
max_queued_bytes 0
log_dest stderr
log_type error
log_type warning
log_type notice
connection_messages true
CONF

# Started directly by this shell, so $! is the broker's own PID. Its command
# line names our config file: that is how the watchdog and the stop script
# recognise it.
"$mosquitto_bin" -c "$conf" >>"$dir/mosquitto.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$dir/mosquitto.pid"
if [[ -n "$owner_pid" ]]; then
  service_watchdog "$pid" "$owner_pid" "-c $conf" "$dir"
fi

# True once 127.0.0.1:$port accepts a TCP connection.
accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$port"); }
service_wait_ready "$pid" "$dir" "$ready_timeout" 0.05 "not accepting" accepts
echo "mosquitto-start: ready on mqtt://127.0.0.1:$port (pid $pid, dir $dir)"
