#!/usr/bin/env bash
# Idempotently make headless Chromium available for the browser tests
# (tests/test_report_html.py opens report.html in it). Present: nothing to do.
# Missing: Debian's `chromium` package is installed (root only); otherwise a clear error.
set -euo pipefail

log() { printf '[ensure-chromium] %s\n' "$*" >&2; }
die() { printf '[ensure-chromium] ERROR: %s\n' "$*" >&2; exit 1; }

have() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }

have && exit 0
[ "$(id -u)" = 0 ] || die "chromium is not installed and this user is not root: install Debian's 'chromium' package (sudo apt-get install chromium)"
command -v apt-get >/dev/null 2>&1 || die "chromium is not installed and there is no apt-get: install Chromium with this system's package manager"
export DEBIAN_FRONTEND=noninteractive
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/logged.sh
. "$REPO/scripts/logged.sh"
install_chromium() {  # scripts/apt_get.sh: one apt-get at a time (scripts/setup.sh runs steps side by side)
  bash "$REPO/scripts/apt_get.sh" update -qq && bash "$REPO/scripts/apt_get.sh" install -y -qq chromium
}
# One line; apt's output (debconf, needrestart chatter) goes to the log.
run_logged "[chromium] headless browser for the report tests" installed \
  "${KVB_LOG_DIR:-$REPO/build/logs}/chromium-install.log" install_chromium
have || die "apt-get install chromium finished but no chromium binary is on PATH"
