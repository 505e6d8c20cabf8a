#!/usr/bin/env bash
# Idempotently make `podman kube play` able to run the rendered CPU manifests on this host:
#   scripts/ensure_podman.sh IMAGE [IMAGE ...]     (images to copy from Docker, e.g. the CPU stack's)
# - Debian's podman (root only to install);
# - /etc/containers/containers.conf with what a container host without systemd needs:
#   default ulimits, cgroupfs, file events, runc (where installed), and a local pause image as the pods' infra image
#   (no registry is reachable here to pull one);
# - the pause image built from the local kvbench base image, and IMAGEs copied from Docker.
# Quiet: one line per step that does something; output in build/logs/podman-*.log.
# One run at a time (build/podman.lock): `make test` starts it in the background beside the tests
# (copying the 3.2 GB engine image takes ~2 min, mostly disk), and the podman test's own call waits
# for that one to finish, then finds everything done.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGS="${KVB_LOG_DIR:-$REPO/build/logs}"
mkdir -p "$REPO/build" "$LOGS"
exec 9>"$REPO/build/podman.lock"
flock 9
# shellcheck source=scripts/logged.sh
. "$REPO/scripts/logged.sh"
PAUSE=localhost/kvbench/pause:1
BASE="${KVB_BASE_IMAGE:-kvbench/base:bookworm}"
CONF=/etc/containers/containers.conf

if ! command -v podman >/dev/null 2>&1; then
  run_logged "[podman] apt-get install podman" installed "$LOGS/podman-install.log" \
    env DEBIAN_FRONTEND=noninteractive apt-get install -y podman
fi

# podman's own default ulimits ask for more than a container host may allow: use this host's limits
# (nproc at most pid_max: above it runc's setrlimit is refused here, "error setting rlimit type 6").
nofile="$(ulimit -Hn)"; nproc="$(ulimit -Hu)"
pid_max="$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)"
case "$nproc" in unlimited) nproc="$pid_max" ;; esac
[ "$nproc" -le "$pid_max" ] || nproc="$pid_max"
case "$nofile" in unlimited) nofile=1048576 ;; esac
# runc where it is there (Docker's own runtime): crun refuses a host with cgroups in hybrid mode
# (v1 controllers and a v2 mount: "crun: cgroups in hybrid mode not supported"), and podman prefers
# crun whenever both are installed.
runtime=""
command -v runc >/dev/null 2>&1 && runtime='runtime = "runc"'
if ! grep -q "nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"\]  # kvbench" "$CONF" 2>/dev/null \
   || ! grep -qx "${runtime:-# runtime: the default}" "$CONF"; then
  mkdir -p "$(dirname "$CONF")"
  cat > "$CONF" <<CONF
# kvbench: podman kube play of the rendered CPU manifests (scripts/ensure_podman.sh writes this)
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]  # kvbench

[engine]
${runtime:-# runtime: the default}
cgroup_manager = "cgroupfs"
events_logger = "file"
infra_image = "$PAUSE"
infra_command = "/pause"
CONF
  echo "[podman] wrote $CONF"
fi

if ! podman image exists "$PAUSE"; then
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
  docker save "$BASE" -o "$work/base.tar"
  cat > "$work/Containerfile" <<'CF'
FROM docker-archive:base.tar
RUN printf '#!/bin/sh\ntrap "exit 0" TERM INT\nwhile :; do sleep 3600 & wait $!; done\n' > /pause && chmod +x /pause
ENTRYPOINT ["/pause"]
CF
  # podman resolves docker-archive:base.tar against its working directory, not the build context
  run_logged "[podman] pause image $PAUSE" built "$LOGS/podman-pause.log" \
    sh -c 'cd "$1" && podman build -t "$2" -f Containerfile .' sh "$work" "$PAUSE"
fi

for image in "$@"; do
  id="$(docker image inspect -f '{{.Id}}' "$image")"
  if [ "$(podman image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)" != "${id#sha256:}" ]; then
    run_logged "[podman] copy $image from Docker" copied "$LOGS/podman-load.log" \
      sh -c "docker save '$image' | podman load"
  fi
done
