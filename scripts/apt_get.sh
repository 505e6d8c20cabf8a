#!/usr/bin/env bash
# apt-get, one at a time: scripts/setup.sh runs set-up steps side by side (Docker, the base image's
# bootstrap tool, Chromium), and two apt-gets at once fail on apt's locks. This lock orders ours;
# DPkg::Lock::Timeout makes apt wait for any other apt (unattended upgrades) instead of failing.
#   scripts/apt_get.sh update | install -y PKG...
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
exec flock "${TMPDIR:-/tmp}/kvbench-apt.lock" apt-get -o DPkg::Lock::Timeout=300 "$@"
