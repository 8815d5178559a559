#!/usr/bin/env bash
# Create .venv and install gradgeo with the extras in $EXTRAS (default: test,harness).
# On machines that carry a local CPU wheel of torch 2.13.0 (e.g. /opt/wheels), pin it first so that
# the package's open torch range does not pull a multi-GB CUDA build. Elsewhere set TORCH_SPEC
# (e.g. TORCH_SPEC=torch) or install torch yourself beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
fi
"$PY" -m pip install -q --disable-pip-version-check -e ".[${EXTRAS:-test,harness}]"
