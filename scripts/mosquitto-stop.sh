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
service_name=mosquitto service_tag=mosquitto-stop
# shellcheck source-path=SCRIPTDIR source=lib/service.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

dir="" timeout=10 signal=TERM
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    --kill) signal=KILL; shift ;;
    -h|--help) service_usage; exit 0 ;;
    *) service_die 2 "unknown argument $1" ;;
  esac
done
[[ -n "$dir" ]] || service_die 2 "--dir is required"
[[ -d "$dir" ]] || exit 0
dir="$(cd "$dir" && pwd)"

service_stop "$dir" "-c $dir/mosquitto.conf" "$signal" "$timeout" 0.05
service_stop_watchdog "$dir"
