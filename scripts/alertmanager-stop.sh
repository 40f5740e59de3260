#!/usr/bin/env bash
# Stops an Alertmanager started by scripts/alertmanager-start.sh: exactly the
# PID recorded in DIR/alertmanager.pid, and only if that process is still the
# server of DIR (its command line names DIR/data) — never by name.
#
# Usage: scripts/alertmanager-stop.sh --dir DIR [--timeout SECS]
#
# Sends SIGTERM, waits up to SECS (default 10), then SIGKILL. Exits 0 when
# nothing of ours is left running.
set -euo pipefail
service_name=alertmanager service_tag=alertmanager-stop
# shellcheck source-path=SCRIPTDIR source=lib/service.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/service.sh"

dir="" timeout=10
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    -h|--help) service_usage; exit 0 ;;
    *) service_die 2 "unknown argument $1" ;;
  esac
done
[[ -n "$dir" ]] || service_die 2 "--dir is required"
[[ -d "$dir" ]] || exit 0
dir="$(cd "$dir" && pwd)"

service_stop "$dir" "--storage.path=$dir/data" TERM "$timeout" 0.1
service_stop_watchdog "$dir"
