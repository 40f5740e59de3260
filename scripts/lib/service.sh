# shellcheck shell=bash
# Shared by scripts/*-start.sh and scripts/*-stop.sh: the mechanics of running
# a throwaway server in the background with all its files in one directory,
# and of stopping exactly the process that was started — never one found by
# name.
#
# Source it after `set -euo pipefail`, having set
#   service_name   the server, e.g. "prometheus": its files in DIR are
#                  NAME.pid (the server's PID) and NAME.log, its scripts
#                  NAME-start.sh and NAME-stop.sh next to each other;
#   service_tag    the prefix of every message, e.g. "prometheus-start".
# Functions that fail call `exit` with the code the scripts document.
#
# Identity: a server's command line contains a string unique to its directory
# (its data dir or config file: the caller's "needle"). A PID read from a
# file is signalled only while its command line still holds that needle, so
# a PID the kernel has recycled is never hit.

: "${service_name:?set service_name before sourcing lib/service.sh}"
: "${service_tag:?set service_tag before sourcing lib/service.sh}"

# service_die CODE MESSAGE: prints "TAG: MESSAGE" on stderr and exits CODE.
service_die() {
  echo "$service_tag: $2" >&2
  exit "$1"
}

# service_usage: prints the calling script's header comment (the lines after
# the shebang up to the first line that is not a comment), for --help.
service_usage() {
  awk 'NR == 1 { next } /^#/ { print; next } { exit }' "$0"
}

# service_check_start_args DIR PORT OWNER_PID: exits 2 unless DIR and PORT
# are given, PORT is a number and OWNER_PID is empty or a number.
service_check_start_args() {
  [[ -n "$1" && -n "$2" ]] || service_die 2 "--dir and --port are required"
  [[ "$2" =~ ^[0-9]+$ ]] || service_die 2 "--port must be a number"
  [[ -z "$3" || "$3" =~ ^[0-9]+$ ]] || service_die 2 "--owner-pid must be a number"
}

# service_is_ours PID NEEDLE: true when PID is a number, the process is alive
# and its command line contains NEEDLE.
service_is_ours() {
  local pid="$1" needle="$2"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$needle"
}

# service_refuse_running DIR WHAT: exits 4 when DIR/NAME.pid names a live
# process ("DIR already has a running WHAT"): two servers never share a DIR.
service_refuse_running() {
  local dir="$1" what="$2" pid_file="$1/$service_name.pid"
  if [[ -s "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    service_die 4 "$dir already has a running $what (pid $(cat "$pid_file"))"
  fi
}

# service_watchdog PID OWNER_PID NEEDLE DIR: starts a background subshell
# that ends with PID, and stops PID (SIGTERM, if still ours) once OWNER_PID
# is gone, so a test binary killed without unwinding leaves nothing behind.
# Its PID goes to DIR/watchdog.pid. Being a subshell of the start script, its
# command line is NAME-start.sh's: service_stop_watchdog relies on that.
service_watchdog() {
  local pid="$1" owner_pid="$2" needle="$3" dir="$4"
  (
    while kill -0 "$pid" 2>/dev/null; do
      if ! kill -0 "$owner_pid" 2>/dev/null; then
        if service_is_ours "$pid" "$needle"; then
          kill "$pid" 2>/dev/null || true
        fi
        exit 0
      fi
      sleep 1
    done
  ) >/dev/null 2>&1 </dev/null &
  echo "$!" >"$dir/watchdog.pid"
}

# service_wait_ready PID DIR TIMEOUT INTERVAL NOT_READY PROBE...: runs the
# command PROBE... (stderr discarded) every INTERVAL seconds until it
# succeeds. If PID exits first, prints the end of DIR/NAME.log, removes
# DIR/NAME.pid and exits 6. After TIMEOUT seconds, prints "NOT_READY after
# TIMEOUTs" and the end of the log, stops the server with NAME-stop.sh and
# exits 7.
service_wait_ready() {
  local pid="$1" dir="$2" timeout="$3" interval="$4" not_ready="$5"
  shift 5
  local log_file="$dir/$service_name.log"
  local deadline=$((SECONDS + timeout))
  until "$@" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$service_tag: $service_name (pid $pid) exited during start-up; log:" >&2
      tail -n 30 "$log_file" >&2
      rm -f "$dir/$service_name.pid"
      exit 6
    fi
    if ((SECONDS >= deadline)); then
      echo "$service_tag: $not_ready after ${timeout}s; log:" >&2
      tail -n 30 "$log_file" >&2
      "$(dirname "$0")/$service_name-stop.sh" --dir "$dir" || true
      exit 7
    fi
    sleep "$interval"
  done
}

# service_stop DIR NEEDLE SIGNAL TIMEOUT INTERVAL: sends SIGNAL to the PID in
# DIR/NAME.pid if it is still ours (its command line holds NEEDLE), polls
# every INTERVAL seconds up to TIMEOUT seconds for it to exit, then sends
# SIGKILL; removes the PID file. Nothing to do without a PID file.
service_stop() {
  local dir="$1" needle="$2" signal="$3" timeout="$4" interval="$5"
  local pid_file="$dir/$service_name.pid" pid
  [[ -s "$pid_file" ]] || return 0
  pid="$(cat "$pid_file")"
  if service_is_ours "$pid" "$needle"; then
    kill "-$signal" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + timeout))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep "$interval"
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "$service_tag: pid $pid did not stop in ${timeout}s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pid_file"
}

# service_stop_watchdog DIR: stops the watchdog in DIR/watchdog.pid if it is
# still ours (a NAME-start.sh process). It exits by itself once the server is
# gone; this only spares its one-second sleep.
service_stop_watchdog() {
  local watchdog_file="$1/watchdog.pid" wpid
  [[ -s "$watchdog_file" ]] || return 0
  wpid="$(cat "$watchdog_file")"
  if service_is_ours "$wpid" "$service_name-start.sh"; then
    kill -TERM "$wpid" 2>/dev/null || true
  fi
  rm -f "$watchdog_file"
}
