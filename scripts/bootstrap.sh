#!/usr/bin/env bash
# Create .venv (once) with a CPU torch and leantune installed editable with its offline extras.
# Users who already have a (CUDA) torch keep it: we only pin torch when none is importable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${LEANTUNE_VENV:-.venv}
STAMP="$VENV/.leantune-bootstrap"
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "bootstrap: installing CPU torch==2.13.0 into $VENV"
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
echo "bootstrap: installing leantune[offline,dev] into $VENV"
"$VENV/bin/python" -m pip install -q -e ".[offline,dev]"
touch "$STAMP"
