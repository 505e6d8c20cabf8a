#!/usr/bin/env bash
# Idempotently fill build/wheelhouse/<name>/ with every wheel of a pinned lock,
# and the installer's wheel (uv: compose/requirements/installer.lock).
#
#   scripts/make_wheelhouse.sh [engine|master ...]      (default: engine master)
#
# The Docker builds install from these directories with
# `uv pip install --no-index --no-deps --find-links` (pip without a uv wheel), so a build needs no
# network for Python packages (and no trust in a TLS-intercepting proxy inside the
# container): the same path serves offline / air-gapped GPU clusters.
# A wheelhouse is complete when its stamp file records the locks' sha256; it is
# then left alone. Host pip configuration (find-links, index, cert) applies, so
# torch's +cpu wheel comes from wherever pip finds it on this host (uv does not look there:
# the wheelhouse is made with pip, the builds then need nothing but it).
# The lock is fetched by KVB_WHEELHOUSE_JOBS pip processes at once (default 4; one pip
# fetches one wheel at a time).
#
# Env: PYTHON (default python3; must be CPython 3.11 for `pip wheel`, otherwise
#      wheels are fetched with `pip download --only-binary` for cp311/manylinux),
#      KVB_WHEELHOUSE_DIR (default <repo>/build/wheelhouse), KVB_FORCE=1 to redo,
#      KVB_LOG_DIR (default <repo>/build/logs).
# Quiet: one line per wheelhouse; pip's output goes to build/logs/wheelhouse-<name>.log
# (on failure its last lines are printed).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_ROOT="${KVB_WHEELHOUSE_DIR:-$REPO/build/wheelhouse}"
LOGS="${KVB_LOG_DIR:-$REPO/build/logs}"
PY="${PYTHON:-python3}"
TARGET_PY=3.11
# shellcheck source=scripts/logged.sh
. "$REPO/scripts/logged.sh"

log() { printf '[wheelhouse] %s\n' "$*" >&2; }
die() { printf '[wheelhouse] ERROR: %s\n' "$*" >&2; exit 1; }

INSTALLER_LOCK="$REPO/compose/requirements/installer.lock"
JOBS="${KVB_WHEELHOUSE_JOBS:-4}"

lock_sha() { cat "$@" | sha256sum | cut -d' ' -f1; }
# Number of requirement lines (pins) in a lock.
lock_count() { grep -cE '^[A-Za-z0-9]' "$1"; }

is_complete() {  # dir lock
  local dir="$1" lock="$2"
  [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$(lock_sha "$lock" "$INSTALLER_LOCK")" ] \
    && [ "$(find "$dir" -maxdepth 1 -name '*.whl' | wc -l)" -ge "$(( $(lock_count "$lock") + $(lock_count "$INSTALLER_LOCK") ))" ]
}

# Wheels for CPython 3.11 on glibc x86_64/aarch64 (Debian bookworm has glibc 2.36).
download_cross() {  # dir lock
  local arch plat=() v
  arch="$(uname -m)"
  plat+=(--platform "manylinux2014_$arch")
  for v in $(seq 17 36); do plat+=(--platform "manylinux_2_${v}_$arch"); done
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version "$TARGET_PY" \
    --implementation cp --abi cp311 "${plat[@]}" -r "$2" -d "$1"
}

fetch_one() {  # dir requirements-file
  if [ "$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$TARGET_PY" ]; then
    "$PY" -m pip wheel --no-deps --progress-bar off -r "$2" -w "$1"
  else
    echo "$PY is not Python $TARGET_PY: downloading binary wheels for cp311 instead"
    download_cross "$1" "$2"
  fi
}

fetch() {  # dir lock  (output: the step's log): the lock's pins in $JOBS pip processes at once
  local parts i rc=0 pids=()
  parts="$(mktemp -d)"
  { grep -E '^[A-Za-z0-9]' "$2"; grep -E '^[A-Za-z0-9]' "$INSTALLER_LOCK"; } \
    | awk -v n="$JOBS" -v d="$parts" '{ print > (d "/part" (NR % n) ".txt") }'
  for part in "$parts"/part*.txt; do
    fetch_one "$1" "$part" >"$part.log" 2>&1 &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || rc=1; done
  cat "$parts"/part*.txt.log
  rm -rf "$parts"
  return "$rc"
}

build_one() {  # name
  local name="$1" lock="$REPO/compose/requirements/$1.lock" dir="$OUT_ROOT/$1"
  [ -f "$lock" ] || die "no lock file $lock"
  if [ "${KVB_FORCE:-0}" != 1 ] && is_complete "$dir" "$lock"; then
    log "$name: complete ($(lock_count "$lock") wheels in $(logged_relpath "$dir")); nothing to do"
    return 0
  fi
  mkdir -p "$dir"
  rm -f "$dir/.complete"
  run_logged "[wheelhouse] $name ($(lock_count "$lock") wheels -> $(logged_relpath "$dir"))" "fetched" \
    "$LOGS/wheelhouse-$name.log" fetch "$dir" "$lock"
  lock_sha "$lock" "$INSTALLER_LOCK" >"$dir/.complete"
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(engine master)
if [ "${KVB_PROGRESS:-}" != none ]; then  # one spinner line at a time
  for n in "${names[@]}"; do build_one "$n"; done
  exit 0
fi
# Without spinners (scripts/setup.sh): side by side, the master's few wheels do not wait for the
# engine's 700 MB.
pids=()
for n in "${names[@]}"; do build_one "$n" & pids+=($!); done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit "$rc"
