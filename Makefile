# The README's two commands: `make demo` and `make test`. Both install into .venv when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.effdl-installed
DEMO_DIR ?= runs/demo
DEMO_MODEL ?= resnet8

.PHONY: install demo test test-gpu bench lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing effdl into $(VENV) (first run only)..."
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	@test -f $(DEMO_DIR)/$(DEMO_MODEL).safetensors || \
		$(VENV)/bin/effdl zoo train $(DEMO_MODEL) -o $(DEMO_DIR)/$(DEMO_MODEL).safetensors
	$(VENV)/bin/effdl compress $(DEMO_DIR)/$(DEMO_MODEL).safetensors -r recipes/default.yaml \
		-o $(DEMO_DIR)/package --force

test: install
	$(PY) -m pytest -q

# On a machine with an NVIDIA GPU (Python 3.12 + CUDA torch there; no venv is made: GPU_PYTHON is used as is,
# with pytest/pydantic/numpy importable, e.g. from carried wheels on PYTHONPATH). Writes runs/gpu/gpu.{json,md}.
GPU_PYTHON ?= python3
test-gpu:
	PYTHONPATH=$(CURDIR):$$PYTHONPATH $(GPU_PYTHON) -m pytest -q -m "gpu or tensorrt" tests
	PYTHONPATH=$(CURDIR):$$PYTHONPATH $(GPU_PYTHON) bench/gpu.py --out runs/gpu

# Acceptance scripts for the benchmark harness and the runtime (speed targets live here, not in unit tests).
bench: install
	$(PY) bench/harness_overhead.py
	$(PY) bench/repeatability.py
	$(PY) bench/runtime_overhead.py

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs .pytest_cache
