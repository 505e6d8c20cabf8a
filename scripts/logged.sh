#!/usr/bin/env bash
# Run one long set-up step quietly: its whole output goes to a log file, the
# terminal gets ONE line with the elapsed time.
#
#   scripts/logged.sh LABEL VERB LOG -- command [args...]       (as a program, e.g. from make)
#   . scripts/logged.sh; run_logged LABEL VERB LOG command ...  (from another script; a shell
#                                                                function works as the command)
#
# Done:    "LABEL: VERB in 12.3 s (log: build/logs/x.log)" (without the log where that is over 80 columns)
# Alive:   on a terminal the line shows a spinner and the seconds so far; otherwise
#          a dot is appended every 5 s (still one line). KVB_PROGRESS=none: neither (scripts/setup.sh
#          shows one status line for the steps it runs side by side).
# Failure: the last 20 lines of LOG and its path on stderr; returns the command's status.
# Ctrl-C / SIGTERM stop the command too (background commands ignore SIGINT in scripts).
# Relative LOG paths are relative to the current directory; KVB_LOG_TAIL sets the tail size.

logged_relpath() {  # shorten a path under the current directory for messages
  case "$1" in
    "$PWD"/*) printf '%s' "${1#"$PWD"/}" ;;
    *) printf '%s' "$1" ;;
  esac
}

logged_now_ms() {  # wall clock in ms (bash 5: EPOCHREALTIME; else whole seconds)
  if [ -n "${EPOCHREALTIME:-}" ]; then
    local t="${EPOCHREALTIME/[.,]/}"
    printf '%s' "$(( 10#$t / 1000 ))"
  else
    printf '%s' "$(( $(date +%s) * 1000 ))"
  fi
}

run_logged() {  # LABEL VERB LOG command...
  local label="$1" verb="$2" log="$3"
  shift 3
  local rel start pid rc=0 tty=0 n=0 tick elapsed spin='|/-\'
  mkdir -p "$(dirname "$log")"
  rel="$(logged_relpath "$log")"
  [ -t 2 ] && tty=1
  local dots=1
  [ "${KVB_PROGRESS:-}" != none ] || { tty=0; dots=0; }
  printf '# %s\n# started %s\n' "$*" "$(date '+%F %T')" >"$log"
  start="$(logged_now_ms)"
  "$@" >>"$log" 2>&1 </dev/null &
  pid=$!
  # shellcheck disable=SC2064  # expand $pid now
  trap "kill $pid 2>/dev/null; wait $pid 2>/dev/null; printf '\n%s: interrupted (log: %s)\n' '$label' '$rel' >&2; exit 130" INT TERM
  # Without spinner or dots the label waits for the outcome: one write per line, so steps run
  # side by side (scripts/setup.sh) never interleave their halves.
  local lead=""
  if [ "$tty" = 0 ] && [ "$dots" = 1 ]; then printf '%s' "$label" >&2; fi
  [ "$tty" = 1 ] || [ "$dots" = 1 ] || lead="$label"
  while kill -0 "$pid" 2>/dev/null; do
    sleep 0.2
    n=$((n + 1))
    [ $((n % 5)) = 0 ] || continue
    tick=$((n / 5))
    if [ "$tty" = 1 ]; then
      printf '\r\033[K%s %s %d s' "$label" "${spin:tick%4:1}" "$tick" >&2
    elif [ "$dots" = 1 ] && [ $((tick % 5)) = 0 ]; then
      if [ "$tick" = 5 ]; then printf ' .' >&2; else printf '.' >&2; fi
    fi
  done
  wait "$pid" || rc=$?
  trap - INT TERM
  elapsed="$(( $(logged_now_ms) - start ))"
  elapsed="$((elapsed / 1000)).$(((elapsed % 1000) / 100))"
  if [ "$tty" = 1 ]; then printf '\r\033[K%s' "$label" >&2; fi
  if [ "$rc" = 0 ]; then
    done_line=": $verb in $elapsed s (log: $rel)"
    # The log's path only where the line still fits 80 columns (a wrapped line is two on the screen).
    [ $((${#label} + ${#done_line})) -le 80 ] || done_line=": $verb in $elapsed s"
    printf '%s%s\n' "$lead" "$done_line" >&2
  else
    printf '%s: FAILED (exit %d) after %s s; last %d lines of %s:\n' "$lead" "$rc" "$elapsed" "${KVB_LOG_TAIL:-20}" "$rel" >&2
    tail -n "${KVB_LOG_TAIL:-20}" "$log" | sed 's/^/  | /' >&2
    printf '%s: FAILED, full log: %s\n' "$label" "$rel" >&2
  fi
  printf '# finished %s: exit %d after %s s\n' "$(date '+%F %T')" "$rc" "$elapsed" >>"$log"
  return "$rc"
}

# Executed (not sourced): scripts/logged.sh LABEL VERB LOG -- command...
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -uo pipefail
  [ $# -ge 5 ] && [ "$4" = "--" ] || { echo "usage: $0 LABEL VERB LOG -- command [args...]" >&2; exit 2; }
  label="$1" verb="$2" log="$3"
  shift 4
  run_logged "$label" "$verb" "$log" "$@"
  exit $?
fi
