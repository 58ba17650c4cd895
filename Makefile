# Two commands for a fresh machine (each bootstraps .venv with CPU torch==2.13.0 when no torch is there):
#   make demo   - the main job, offline, on the embedded defaults (MiniLM + the committed lab model)
#   make test   - the test suite, offline
PY := .venv/bin/python
export HF_HUB_OFFLINE ?= 1

.PHONY: bootstrap demo test inspect
bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m leantune demo --out runs/demo

test: bootstrap
	$(PY) -m pytest -p no:cacheprovider tests
