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

dir="" port="" owner_pid="" ready_timeout=20
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --owner-pid) owner_pid="$2"; shift 2 ;;
    --ready-timeout) ready_timeout="$2"; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "mosquitto-start: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n "$dir" && -n "$port" ]] || { echo "mosquitto-start: --dir and --port are required" >&2; exit 2; }
[[ "$port" =~ ^[0-9]+$ ]] || { echo "mosquitto-start: --port must be a number" >&2; exit 2; }
[[ -z "$owner_pid" || "$owner_pid" =~ ^[0-9]+$ ]] || { echo "mosquitto-start: --owner-pid must be a number" >&2; exit 2; }

# Debian installs the broker in /usr/sbin, which is not on every user's PATH.
mosquitto_bin="${MOSQUITTO_BIN:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}"
[[ -x "$mosquitto_bin" ]] || { echo "mosquitto-start: mosquitto not found (apt-get install mosquitto)" >&2; exit 3; }

mkdir -p "$dir/data"
dir="$(cd "$dir" && pwd)"
pid_file="$dir/mosquitto.pid"
log_file="$dir/mosquitto.log"
conf="$dir/mosquitto.conf"
if [[ -s "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
  echo "mosquitto-start: $dir already has a running broker (pid $(cat "$pid_file"))" >&2
  exit 4
fi

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

# Started directly by this shell, so \$! is the broker's own PID.
"$mosquitto_bin" -c "$conf" >>"$log_file" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pid_file"

if [[ -n "$owner_pid" ]]; then
  # Watchdog: ends with the broker; stops the broker when the owner is gone.
  # Re-checks that the PID is still our broker (its command line names our
  # config file) so a recycled PID is never hit.
  (
    while kill -0 "$pid" 2>/dev/null; do
      if ! kill -0 "$owner_pid" 2>/dev/null; then
        if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "-c $conf"; then
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
until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "mosquitto-start: mosquitto (pid $pid) exited during start-up; log:" >&2
    tail -n 30 "$log_file" >&2
    rm -f "$pid_file"
    exit 6
  fi
  if (( SECONDS >= deadline )); then
    echo "mosquitto-start: not accepting after ${ready_timeout}s; log:" >&2
    tail -n 30 "$log_file" >&2
    "$(dirname "$0")/mosquitto-stop.sh" --dir "$dir" || true
    exit 7
  fi
  sleep 0.05
done
echo "mosquitto-start: ready on mqtt://127.0.0.1:$port (pid $pid, dir $dir)"
