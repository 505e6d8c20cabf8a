#!/usr/bin/env bash
# Idempotently create the local base image kvbench/base:bookworm.
#
# No container registry is reachable on the development/CI machines, so the
# base image is made locally: debootstrap a minimal Debian bookworm rootfs
# (with python3 + venv) from the Debian mirror that apt on this host already
# uses, then `tar | docker import`. Real users can skip this entirely and build
# the images FROM a public image (BASE_IMAGE=python:3.11-slim or debian:bookworm).
#
# Env overrides:
#   KVB_BASE_IMAGE     image name to create (default kvbench/base:bookworm)
#   KVB_DEBIAN_MIRROR  mirror URL (default: read from /etc/apt/sources.list*)
#   KVB_FORCE=1        rebuild even if the image exists
#   KVB_LOG_DIR        where the step's log goes (default <repo>/build/logs)
#
# Quiet: one line; apt/debootstrap/import output goes to build/logs/base-image.log
# (on failure its last lines are printed).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGS="${KVB_LOG_DIR:-$REPO/build/logs}"
# shellcheck source=scripts/logged.sh
. "$REPO/scripts/logged.sh"

IMAGE="${KVB_BASE_IMAGE:-kvbench/base:bookworm}"
SUITE=bookworm
INCLUDE=python3,python3-venv,ca-certificates,curl

log() { printf '[base] %s\n' "$*"; }  # inside the logged step: into the log
die() { printf '[base] ERROR: %s\n' "$*" >&2; exit 1; }

if [ "${KVB_FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "image $IMAGE already present; nothing to do" >&2
  exit 0
fi

[ "$(id -u)" = 0 ] || die "debootstrap needs root (or build with BASE_IMAGE=debian:bookworm where a registry is reachable)"

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

ROOTFS="$(mktemp -d /tmp/kvbench-rootfs.XXXXXX)"
cleanup() { rm -rf "$ROOTFS"; }
trap cleanup EXIT

make_base() {  # the whole step; its output is the step's log
  log "mirror: $MIRROR"

  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap via apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y debootstrap
  fi

  keyring_args=()
  [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] \
    && keyring_args=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)

  start=$(date +%s)
  log "debootstrap --variant=minbase $SUITE (include: $INCLUDE) into $ROOTFS ..."
  debootstrap --variant=minbase --include="$INCLUDE" "${keyring_args[@]}" \
    "$SUITE" "$ROOTFS" "$MIRROR" || {
      [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log"
      die "debootstrap failed"
    }

  # Make apt usable inside builds: the same mirrors as the host's apt for the
  # main suite, -updates and -security (those that the host has configured).
  {
    echo "deb $MIRROR $SUITE main"
    for s in "$SUITE-updates" "$SUITE-security"; do
      m="$(apt_mirror "$s" | head -n1)"
      if [ -n "$m" ]; then echo "deb $m $s main"; fi
    done
  } >"$ROOTFS/etc/apt/sources.list"
  # Keep the image small and free of host-specific state.
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/tmp/* "$ROOTFS"/var/log/*.log
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$ROOTFS/etc/apt/apt.conf.d/99kvbench-norecommends"
  log "debootstrap done in $(( $(date +%s) - start )) s; importing as $IMAGE"

  tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap minbase $SUITE from $MIRROR" \
    - "$IMAGE"

  log "created $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes) in $(( $(date +%s) - start )) s"
}

run_logged "[base] $IMAGE (debootstrap $SUITE)" "made" "$LOGS/base-image.log" make_base
