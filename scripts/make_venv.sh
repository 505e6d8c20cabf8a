#!/usr/bin/env bash
# Create the project venv or bring it up to date, kvbench installed editable (`pip install -e .`):
#
#   scripts/make_venv.sh VENV            runtime dependencies only (make bench, bench-all, report, clean)
#   scripts/make_venv.sh VENV test       plus the test extras (make test, lint, format)
#
# uv (compose/requirements/installer.lock, installed into the venv with pip) resolves and installs
# in seconds what takes pip half a minute. Where uv is missing or fails (no uv wheel for this
# platform, an index that only pip is configured for: uv does not read pip.conf), pip installs,
# as before. KVB_INSTALLER=pip: pip only. PYTHON: the interpreter of a new venv (python3).
# Its output is the step's log (the Makefile runs it through scripts/logged.sh).
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 VENV [EXTRA]" >&2; exit 2; }
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$1"
spec="."
[ -z "${2:-}" ] || spec=".[$2]"
py="$venv/bin/python"

[ -x "$py" ] || "${PYTHON:-python3}" -m venv "$venv"

if [ "${KVB_INSTALLER:-uv}" != pip ]; then
  if [ -x "$venv/bin/uv" ] || "$py" -m pip install --disable-pip-version-check -q -r "$REPO/compose/requirements/installer.lock"; then
    if (cd "$REPO" && "$venv/bin/uv" pip install --python "$py" -e "$spec"); then
      exit 0
    fi
  fi
  echo "uv could not install $spec: installing with pip instead"
fi
"$py" -m pip install --upgrade pip
(cd "$REPO" && "$py" -m pip install -e "$spec")
