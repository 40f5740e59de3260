#!/usr/bin/env bash
# Stops a Mosquitto started by scripts/mosquitto-start.sh: exactly the PID
# recorded in DIR/mosquitto.pid, and only if that process is still the broker
# of DIR (its command line names DIR/mosquitto.conf) — never by name.
#
# Usage: scripts/mosquitto-stop.sh --dir DIR [--timeout SECS] [--kill]
#
# Sends SIGTERM (mosquitto then writes its persistence file), waits up to
# SECS (default 10), then SIGKILL. --kill sends SIGKILL at once (a crash:
# nothing is saved). Exits 0 when nothing of ours is left running.
set -euo pipefail

dir="" timeout=10 signal=TERM
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    --kill) signal=KILL; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "mosquitto-stop: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n "$dir" ]] || { echo "mosquitto-stop: --dir is required" >&2; exit 2; }
[[ -d "$dir" ]] || exit 0
dir="$(cd "$dir" && pwd)"

# True when PID is alive and its command line contains NEEDLE.
is_ours() {
  local pid="$1" needle="$2"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$needle"
}

pid_file="$dir/mosquitto.pid"
if [[ -s "$pid_file" ]]; then
  pid="$(cat "$pid_file")"
  if is_ours "$pid" "-c $dir/mosquitto.conf"; then
    kill "-$signal" "$pid" 2>/dev/null || true
    deadline=$((SECONDS + timeout))
    while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do
      sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "mosquitto-stop: pid $pid did not stop in ${timeout}s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pid_file"
fi

# The watchdog exits by itself once the broker is gone; this only spares its
# one-second sleep. It is a bash subshell of the start script.
watchdog_file="$dir/watchdog.pid"
if [[ -s "$watchdog_file" ]]; then
  wpid="$(cat "$watchdog_file")"
  if is_ours "$wpid" "mosquitto-start.sh"; then
    kill -TERM "$wpid" 2>/dev/null || true
  fi
  rm -f "$watchdog_file"
fi
