#!/usr/bin/env bash
# Idempotently fill build/wheelhouse/<name>/ with every wheel of a pinned lock.
#
#   scripts/make_wheelhouse.sh [engine|master ...]      (default: engine master)
#
# The Docker builds install from these directories with
# `pip install --no-index --no-deps --find-links`, so a build needs no network
# for Python packages (and no trust in a TLS-intercepting proxy inside the
# container): the same path serves offline / air-gapped GPU clusters.
# A wheelhouse is complete when its stamp file records the lock's sha256; it is
# then left alone. Host pip configuration (find-links, index, cert) applies, so
# torch's +cpu wheel comes from wherever pip finds it on this host.
#
# Env: PYTHON (default python3; must be CPython 3.11 for `pip wheel`, otherwise
#      wheels are fetched with `pip download --only-binary` for cp311/manylinux),
#      KVB_WHEELHOUSE_DIR (default <repo>/build/wheelhouse), KVB_FORCE=1 to redo.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_ROOT="${KVB_WHEELHOUSE_DIR:-$REPO/build/wheelhouse}"
PY="${PYTHON:-python3}"
TARGET_PY=3.11

log() { printf '[make-wheelhouse] %s\n' "$*" >&2; }
die() { printf '[make-wheelhouse] ERROR: %s\n' "$*" >&2; exit 1; }

lock_sha() { sha256sum "$1" | cut -d' ' -f1; }
# Number of requirement lines (pins) in a lock.
lock_count() { grep -cE '^[A-Za-z0-9]' "$1"; }

is_complete() {  # dir lock
  local dir="$1" lock="$2"
  [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$(lock_sha "$lock")" ] \
    && [ "$(find "$dir" -maxdepth 1 -name '*.whl' | wc -l)" -ge "$(lock_count "$lock")" ]
}

# Wheels for CPython 3.11 on glibc x86_64/aarch64 (Debian bookworm has glibc 2.36).
download_cross() {  # dir lock
  local arch plat=() v
  arch="$(uname -m)"
  plat+=(--platform "manylinux2014_$arch")
  for v in $(seq 17 36); do plat+=(--platform "manylinux_2_${v}_$arch"); done
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version "$TARGET_PY" \
    --implementation cp --abi cp311 "${plat[@]}" -r "$2" -d "$1" >&2
}

build_one() {  # name
  local name="$1" lock="$REPO/compose/requirements/$1.lock" dir="$OUT_ROOT/$1" start
  [ -f "$lock" ] || die "no lock file $lock"
  if [ "${KVB_FORCE:-0}" != 1 ] && is_complete "$dir" "$lock"; then
    log "$name: complete ($(lock_count "$lock") wheels in $dir); nothing to do"
    return 0
  fi
  mkdir -p "$dir"
  rm -f "$dir/.complete"
  start=$(date +%s)
  log "$name: fetching/building $(lock_count "$lock") wheels into $dir ..."
  if [ "$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$TARGET_PY" ]; then
    "$PY" -m pip wheel --no-deps --progress-bar off -r "$lock" -w "$dir" >&2
  else
    log "$PY is not Python $TARGET_PY: downloading binary wheels for cp311 instead"
    download_cross "$dir" "$lock"
  fi
  lock_sha "$lock" >"$dir/.complete"
  log "$name: done in $(( $(date +%s) - start )) s ($(du -sh "$dir" | cut -f1))"
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(engine master)
for n in "${names[@]}"; do build_one "$n"; done
