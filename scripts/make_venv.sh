#!/usr/bin/env bash
# Create the project venv or bring it up to date, kvbench installed editable (`pip install -e .`):
#
#   scripts/make_venv.sh VENV            runtime dependencies only (make bench, bench-all, report, clean)
#   scripts/make_venv.sh VENV test       plus the test extras (make test, lint, format)
#
# uv (compose/requirements/installer.lock) resolves and installs in seconds what takes pip half a
# minute or more. The venv is made without pip (ensurepip alone took 10 s on a busy machine) and the
# host's pip puts uv into it (pip >= 22.3: --python); without a host pip, ensurepip and the venv's
# pip do. Where uv fails (no uv wheel for this platform, an index that only pip is configured for:
# uv does not read pip.conf), pip installs, as before. KVB_INSTALLER=pip: pip only.
# PYTHON: the interpreter of a new venv (python3). Its output is the step's log (scripts/setup.sh
# runs it through scripts/logged.sh).
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 VENV [EXTRA]" >&2; exit 2; }
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST_PY="${PYTHON:-python3}"
venv="$1"
spec="."
[ -z "${2:-}" ] || spec=".[$2]"
py="$venv/bin/python"
lock="$REPO/compose/requirements/installer.lock"

[ -x "$py" ] || "$HOST_PY" -m venv --without-pip "$venv"

venv_pip() {  # the venv's own pip, made by ensurepip when missing
  "$py" -m pip --version >/dev/null 2>&1 || "$py" -m ensurepip
  "$py" -m pip --disable-pip-version-check "$@"
}

get_uv() {
  [ -x "$venv/bin/uv" ] && return 0
  "$HOST_PY" -m pip --disable-pip-version-check --python "$py" install -q -r "$lock" && return 0
  echo "the host's pip could not install uv into $venv: its own pip does"
  venv_pip install -q -r "$lock"
}

# Bytecode for what kvbench imports only: compiling every installed file (uv --compile-bytecode,
# pip's default) took 38 s of a 54 s install on a bare machine, for 6,900 files; a run imports 1,200,
# compiled here in ~6 s (without them each kvbench start takes 3 s longer). Written even where
# PYTHONDONTWRITEBYTECODE is set, as uv's flag would.
compile_imports() {
  env -u PYTHONDONTWRITEBYTECODE "$py" -c 'import harness.cli, harness.stack.images, harness.report.write' \
    || echo "kvbench does not import yet (see above)"
}

if [ "${KVB_INSTALLER:-uv}" != pip ]; then
  if get_uv && (cd "$REPO" && "$venv/bin/uv" pip install --python "$py" -e "$spec"); then
    compile_imports
    exit 0
  fi
  echo "uv could not install $spec: installing with pip instead"
fi
venv_pip install --upgrade pip
(cd "$REPO" && venv_pip install --no-compile -e "$spec")
compile_imports
