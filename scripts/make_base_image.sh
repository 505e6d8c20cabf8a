#!/usr/bin/env bash
# Idempotently create the local base image kvbench/base:bookworm.
#
#   scripts/make_base_image.sh [all|rootfs|import]
#     all (default): both steps below, nothing when the image is present
#     rootfs: bootstrap the root file system into build/base/ (no Docker needed: scripts/setup.sh
#             runs this while the Docker engine is being installed)
#     import: `docker import` it as the image, then remove the directory
#
# No container registry is reachable on the development/CI machines, so the
# base image is made locally: bootstrap a minimal Debian bookworm rootfs (python3 + venv, and the
# shared libraries Mooncake's transfer engine loads, so that the image builds need no apt) from the
# Debian mirror that apt on this host already uses, then `tar | docker import`. mmdebstrap does it
# in about half of debootstrap's time (parallel downloads, one apt run); debootstrap where
# mmdebstrap is not to be had. Real users can skip this entirely and build the images FROM a public
# image (BASE_IMAGE=python:3.11-slim or debian:bookworm).
#
# Env overrides:
#   KVB_BASE_IMAGE     image name to create (default kvbench/base:bookworm)
#   KVB_DEBIAN_MIRROR  mirror URL (default: read from /etc/apt/sources.list*)
#   KVB_BOOTSTRAP      mmdebstrap or debootstrap (default: mmdebstrap, installed when missing;
#                      debootstrap where it cannot be)
#   KVB_FORCE=1        rebuild even if the image exists
#   KVB_LOG_DIR        where the step's log goes (default <repo>/build/logs)
#
# Quiet: one line per step; apt/bootstrap/import output goes to build/logs/base-image.log
# (on failure its last lines are printed).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGS="${KVB_LOG_DIR:-$REPO/build/logs}"
# shellcheck source=scripts/logged.sh
. "$REPO/scripts/logged.sh"

IMAGE="${KVB_BASE_IMAGE:-kvbench/base:bookworm}"
SUITE=bookworm
# libibverbs1 libnuma1 (and libcurl4, through curl): Mooncake's transfer engine needs them even for TCP
INCLUDE=python3,python3-venv,ca-certificates,curl,libibverbs1,libnuma1
WHAT="${1:-all}"
# The root file system between the two steps: one directory per image name.
ROOTFS="$REPO/build/base/$(printf '%s' "$IMAGE" | tr -c 'A-Za-z0-9_.-' '_')"
LOG="$LOGS/base-image.log"

log() { printf '[base] %s\n' "$*"; }  # inside the logged step: into the log
die() { printf '[base] ERROR: %s\n' "$*" >&2; exit 1; }

case "$WHAT" in all|rootfs|import) ;; *) die "usage: $0 [all|rootfs|import]" ;; esac

if [ "${KVB_FORCE:-0}" != 1 ] && [ "$WHAT" != import ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "image $IMAGE already present; nothing to do" >&2
  exit 0
fi

[ "$WHAT" = import ] || [ "$(id -u)" = 0 ] || die "debootstrap needs root (or build with BASE_IMAGE=debian:bookworm where a registry is reachable)"

# Print the first Debian archive URI that apt is configured with for the suite
# named exactly $1 (deb822 *.sources and one-line *.list formats).
apt_mirror() {
  local f suite="$1"
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk -v suite="$suite" '
      function flush() {
        if (uris != "" && types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ")) {
          split(uris, u, " "); print u[1]; found = 1; exit
        }
        uris = ""; suites = ""; types = ""
      }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]*#/ { next }
      /^URIs:/   { sub(/^URIs:[[:space:]]*/, "");   uris = $0 }
      /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
      /^Types:/  { sub(/^Types:[[:space:]]*/, "");  types = $0 }
      END { if (!found) flush() }
    ' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    # deb [options] URI suite components...
    sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2 }'
  done
}

MIRROR="${KVB_DEBIAN_MIRROR:-$(apt_mirror "$SUITE" | head -n1)}"
[ -n "$MIRROR" ] || die "no Debian mirror for suite '$SUITE' found in /etc/apt/sources.list*; set KVB_DEBIAN_MIRROR"

TOOLS="$REPO/build/tools"

# mmdebstrap is one Perl script (it needs apt, perl and python3, which Debian has): unpacked from its
# package into build/tools/ it runs without being installed. `apt-get download` takes no lock, so this
# does not queue behind Docker's apt-get, and skips the install's triggers (man-db, needrestart):
# about 1 s where `apt-get install` took 10-17 s on a bare machine.
unpack_mmdebstrap() {  # prints the script's path
  local deb
  command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 || return 1
  rm -rf "$TOOLS/mmdebstrap" && mkdir -p "$TOOLS/mmdebstrap" || return 1
  (cd "$TOOLS" && apt-get download mmdebstrap) >&2 || return 1
  deb="$(find "$TOOLS" -maxdepth 1 -name 'mmdebstrap_*.deb' | head -n1)"
  [ -n "$deb" ] && dpkg-deb -x "$deb" "$TOOLS/mmdebstrap" && rm -f "$deb" || return 1
  [ -x "$TOOLS/mmdebstrap/usr/bin/mmdebstrap" ] && echo "$TOOLS/mmdebstrap/usr/bin/mmdebstrap"
}

pick_tool() {  # prints the tool's path: mmdebstrap (installed, else unpacked, else installed now), else debootstrap
  local t path
  for t in ${KVB_BOOTSTRAP:-mmdebstrap debootstrap}; do
    if path="$(command -v "$t")"; then echo "$path"; return; fi
    if [ "$t" = mmdebstrap ] && path="$(unpack_mmdebstrap)"; then
      log "mmdebstrap unpacked from its package: $path" >&2
      echo "$path"
      return
    fi
    log "installing $t via apt" >&2
    { bash "$REPO/scripts/apt_get.sh" update && bash "$REPO/scripts/apt_get.sh" install -y "$t"; } >&2 || continue
    command -v "$t" && return
  done
  die "neither mmdebstrap nor debootstrap could be installed"
}

bootstrap() {  # tool: the rootfs into $ROOTFS.tmp
  local keyring=() hooks=()
  [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
  if [ "$(basename "$1")" = mmdebstrap ]; then
    # merged /usr without the usrmerge package (which pulls in perl: +50 MB); dpkg without fsync and
    # no recommends, as in Debian's own container images (both stay configured in the image).
    # The hooks lie beside the script (/usr/bin/../share), installed or unpacked.
    local share
    share="$(dirname "$1")/../share/mmdebstrap/hooks/merged-usr"
    [ -d "$share" ] && hooks=(--hook-dir="$share")
    "$1" --variant=minbase --include="$INCLUDE" "${keyring[@]}" "${hooks[@]}" \
      --dpkgopt=force-unsafe-io --aptopt='APT::Install-Recommends "false"' \
      "$SUITE" "$ROOTFS.tmp" "$MIRROR"
  else
    "$1" --variant=minbase --include="$INCLUDE" "${keyring[@]}" "$SUITE" "$ROOTFS.tmp" "$MIRROR" || {
      [ -f "$ROOTFS.tmp/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS.tmp/debootstrap/debootstrap.log"
      return 1
    }
  fi
}

make_rootfs() {  # the rootfs step; its output is the step's log
  local start tool
  start=$(date +%s)
  log "mirror: $MIRROR"
  tool="$(pick_tool)"
  rm -rf "$ROOTFS" "$ROOTFS.tmp"
  mkdir -p "$(dirname "$ROOTFS")"
  log "$(basename "$tool") --variant=minbase $SUITE (include: $INCLUDE) into $ROOTFS ..."
  bootstrap "$tool" || die "$(basename "$tool") failed"

  # Make apt usable inside builds: the same mirrors as the host's apt for the
  # main suite, -updates and -security (those that the host has configured).
  {
    echo "deb $MIRROR $SUITE main"
    for s in "$SUITE-updates" "$SUITE-security"; do
      m="$(apt_mirror "$s" | head -n1)"
      if [ -n "$m" ]; then echo "deb $m $s main"; fi
    done
  } >"$ROOTFS.tmp/etc/apt/sources.list"
  rm -f "$ROOTFS.tmp"/etc/apt/sources.list.d/*
  # Keep the image small and free of host-specific state.
  rm -rf "$ROOTFS.tmp"/var/cache/apt/archives/*.deb "$ROOTFS.tmp"/var/lib/apt/lists/* "$ROOTFS.tmp"/tmp/* "$ROOTFS.tmp"/var/log/*.log
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$ROOTFS.tmp/etc/apt/apt.conf.d/99kvbench-norecommends"
  echo "$(basename "$tool") minbase $SUITE from $MIRROR" >"$ROOTFS.origin"
  mv "$ROOTFS.tmp" "$ROOTFS"
  log "$(basename "$tool") done in $(( $(date +%s) - start )) s: $ROOTFS"
}

import_rootfs() {  # the import step
  [ -d "$ROOTFS" ] || die "no root file system in $ROOTFS: run '$0 rootfs' first"
  tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "$(cat "$ROOTFS.origin" 2>/dev/null || echo "minbase $SUITE from $MIRROR")" \
    - "$IMAGE"
  rm -rf "$ROOTFS" "$ROOTFS.origin"
  log "created $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
}

case "$WHAT" in
  rootfs)
    run_logged "[base] root file system ($SUITE, for $IMAGE)" made "$LOG" make_rootfs ;;
  import)
    run_logged "[base] $IMAGE" imported "$LOGS/base-import.log" import_rootfs ;;
  all)
    both() { make_rootfs && import_rootfs; }
    run_logged "[base] $IMAGE ($SUITE)" made "$LOG" both ;;
esac
