#!/usr/bin/env bash
# The set-up steps a make target needs, the independent ones side by side:
#
#   scripts/setup.sh STEP...
#     venv        the venv with kvbench's runtime dependencies (scripts/make_venv.sh)
#     venv-test   the venv with the test extras too (make test, lint, format)
#     docker      the Docker engine and compose v2 (scripts/ensure_docker.sh)
#     images      what the CPU stack's images need before they can be built, when they are missing:
#                 the base image (scripts/make_base_image.sh) and the wheelhouses
#                 (scripts/make_wheelhouse.sh); the images themselves are built by kvbench
#                 (harness/stack/images.py) once these are there
#     images=CONFIG   the same, unless CONFIG (or a config it extends) names a GPU overlay
#     chromium    headless Chromium for the report tests (scripts/ensure_chromium.sh)
#
# On a bare machine `venv docker images` run at once: the venv, the Docker install, the base
# image's root file system and the wheelhouses need nothing from each other; the base image is
# imported once both Docker and its root file system are there. Where Docker runs already, what
# the images need is asked first (python3 harness/stack/images.py --missing: which base image and
# wheelhouses the current Dockerfiles and locks need), so a fresh clone on a machine with the images
# fetches nothing.
#
# Quiet: each step prints one line with its time when it is done (scripts/logged.sh; their logs in
# build/logs/); on a terminal one status line names the steps still running. A failed step prints
# the last lines of its log; the others are left to finish (an apt-get is not to be killed halfway),
# then the exit status is non-zero. Ctrl-C stops them all.
# Env: VENV (.venv), PYTHON (python3, for a new venv), KVB_LOG_DIR (build/logs).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/logged.sh
. "$REPO/scripts/logged.sh"
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
LOGS="${KVB_LOG_DIR:-$REPO/build/logs}"
SETUP_OUT="$LOGS/setup"  # each step's console lines while others run

die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 2; }

# --- what is needed ---------------------------------------------------------

venv_stale() {  # extra: the stamp is missing or older than what the venv is made from
  local stamp="$VENV/.installed-${1:-run}" f
  [ -f "$stamp" ] || return 0
  for f in "$REPO/pyproject.toml" "$REPO/compose/requirements/installer.lock"; do
    [ "$f" -nt "$stamp" ] && return 0
  done
  return 1
}

docker_installed() { command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1; }

config_builds_cpu_images() {  # config: false when it, or a config it extends, names a GPU overlay
  local cfg="$1" n=0
  while [ -n "$cfg" ] && [ -f "$cfg" ] && [ $n -lt 10 ]; do
    grep -Eq '^[[:space:]]*overlay:.*gpu' "$cfg" && return 1
    local parent
    parent="$(sed -nE 's/^extends:[[:space:]]*["'\'']?([^"'\''#[:space:]]+).*/\1/p' "$cfg" | head -n1)"
    [ -n "$parent" ] || return 0
    case "$parent" in /*) cfg="$parent" ;; *) cfg="$(dirname "$cfg")/$parent" ;; esac
    n=$((n + 1))
  done
  return 0
}

# --- the steps (each prints its own line; see scripts/logged.sh) -------------

step_venv() {  # extra ("" or test)
  local extra="$1" label="[venv] $VENV: kvbench (editable)"
  [ -z "$extra" ] || label="[venv] $VENV: kvbench[$extra] (editable)"
  run_logged "$label" installed "$LOGS/venv.log" env PYTHON="$PY" bash "$REPO/scripts/make_venv.sh" "$VENV" ${extra:+"$extra"} \
    || return
  touch "$VENV/.installed-run"
  [ -z "$extra" ] || touch "$VENV/.installed-$extra"
}
step_docker() { bash "$REPO/scripts/ensure_docker.sh"; }
step_base_rootfs() { bash "$REPO/scripts/make_base_image.sh" rootfs; }
step_base_import() { bash "$REPO/scripts/make_base_image.sh" import; }
step_base() { bash "$REPO/scripts/make_base_image.sh"; }
step_wheelhouse() { bash "$REPO/scripts/make_wheelhouse.sh" "${WHEELHOUSES[@]}"; }
step_chromium() { bash "$REPO/scripts/ensure_chromium.sh"; }

# --- running them -----------------------------------------------------------

NAMES=()    # in order of start
declare -A DEPS=() PID=() STATE=() START=()   # STATE: waiting running ok failed skipped

add() { NAMES+=("$1"); DEPS[$1]="${2:-}"; STATE[$1]=waiting; }

start_step() {
  local name="$1" fn="step_${1//-/_}"
  mkdir -p "$SETUP_OUT"
  # Its own process group (job control), so that Ctrl-C here can stop its whole tree;
  # its console lines go to a file, shown when it is done (no interleaved lines).
  KVB_PROGRESS=none "$fn" "${ARGS[$name]:-}" >"$SETUP_OUT/$name.out" 2>&1 </dev/null &
  PID[$name]=$!
  STATE[$name]=running
  START[$name]="$(logged_now_ms)"
}

status_line() {  # on a terminal: the running steps and the seconds since the first started
  [ "$TTY" = 1 ] || return 0
  local running=() n
  for n in "${NAMES[@]}"; do [ "${STATE[$n]}" = running ] && running+=("$n"); done
  [ ${#running[@]} -gt 0 ] || return 0
  local text="[setup] ${running[*]}"
  text="${text// /, }"; text="${text/\[setup\],/[setup]}"
  printf '\r\033[K%s %s %d s' "${text:0:66}" "${SPIN:TICK%4:1}" "$(( ($(logged_now_ms) - T0) / 1000 ))" >&2
}

clear_line() { [ "$TTY" = 1 ] && printf '\r\033[K' >&2; return 0; }

stop_all() {
  local n
  clear_line
  for n in "${NAMES[@]}"; do
    [ "${STATE[$n]}" = running ] && kill -TERM -- "-${PID[$n]}" 2>/dev/null
  done
  wait 2>/dev/null
  printf '[setup] interrupted\n' >&2
  exit 130
}

run_all() {
  local n d ready failed=0 progress=1
  set -m  # background steps get process groups of their own
  trap stop_all INT TERM
  T0="$(logged_now_ms)"; TICK=0
  while [ "$progress" = 1 ]; do
    progress=0
    for n in "${NAMES[@]}"; do
      case "${STATE[$n]}" in
        waiting)
          ready=1
          for d in ${DEPS[$n]}; do
            case "${STATE[$d]}" in
              ok) ;;
              failed|skipped) STATE[$n]=skipped; ready=0; clear_line
                printf '[setup] %s: not run (%s failed)\n' "$n" "$d" >&2; break ;;
              *) ready=0 ;;
            esac
          done
          [ "$ready" = 1 ] && start_step "$n"
          [ "${STATE[$n]}" = skipped ] || progress=1 ;;
        running)
          progress=1
          if ! kill -0 "${PID[$n]}" 2>/dev/null; then
            if wait "${PID[$n]}"; then STATE[$n]=ok; else STATE[$n]=failed; failed=1; fi
            clear_line
            cat "$SETUP_OUT/$n.out" >&2
          fi ;;
      esac
    done
    [ "$progress" = 1 ] || break
    status_line
    sleep 0.2
    TICK=$((TICK + 1))
  done
  clear_line
  trap - INT TERM
  set +m
  return "$failed"
}

# --- main -------------------------------------------------------------------

[ $# -gt 0 ] || die "usage: $0 venv|venv-test|docker|images|images=CONFIG|chromium ..."
cd "$REPO" || exit 2
TTY=0; [ -t 2 ] && TTY=1
SPIN='|/-\'
declare -A ARGS=()
want_venv="" want_docker=0 want_images=0 want_chromium=0
for arg in "$@"; do
  case "$arg" in
    venv) [ -n "$want_venv" ] || want_venv=run ;;
    venv-test) want_venv=test ;;
    docker) want_docker=1 ;;
    images) want_images=1 ;;
    images=*) config_builds_cpu_images "${arg#images=}" && want_images=1 ;;
    chromium) want_chromium=1 ;;
    *) die "unknown step '$arg'" ;;
  esac
done
[ "$want_images" = 0 ] || want_docker=1

if [ -n "$want_venv" ] && venv_stale "$want_venv"; then
  add venv; [ "$want_venv" = test ] && ARGS[venv]=test
fi
[ "$want_chromium" = 0 ] || add chromium

docker_step=""
if [ "$want_docker" = 1 ]; then
  if docker_installed; then
    # Installed: make sure it runs (a second or two) before asking what the images need.
    step_docker || exit 1
  else
    add docker; docker_step=docker
  fi
fi

WHEELHOUSES=()
if [ "$want_images" = 1 ]; then
  if [ -n "$docker_step" ]; then  # no Docker yet: no images either
    need="base wheelhouse:engine wheelhouse:master"
  else
    need="$("$PY" "$REPO/harness/stack/images.py" --missing)" || die "harness/stack/images.py --missing failed"
  fi
  for item in $need; do
    case "$item" in
      base)
        case "${KVB_BASE_IMAGE:-kvbench/base:bookworm}" in
          kvbench/*) if [ -n "$docker_step" ]; then add base-rootfs; add base-import "docker base-rootfs"; else add base; fi ;;
          *) ;;  # a public base image: kvbench pulls it
        esac ;;
      wheelhouse:*) WHEELHOUSES+=("${item#wheelhouse:}") ;;
    esac
  done
  [ ${#WHEELHOUSES[@]} = 0 ] || add wheelhouse
fi

case ${#NAMES[@]} in
  0) exit 0 ;;
  1) KVB_PROGRESS="" "step_${NAMES[0]//-/_}" "${ARGS[${NAMES[0]}]:-}" ;;  # one step: its own spinner
  *) run_all ;;
esac
