# One venv per checkout; every target installs what it needs from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,rllib]"
	touch $(STAMP)

venv: $(STAMP)

## Main job on the embedded SyntheticActions data: SSL pretraining, then divide-and-conquer transfer.
demo: $(STAMP)
	$(PY) experiments/ssl_ucf101.py --out runs/ssl_ucf101 --overwrite
	$(PY) experiments/dc_transfer.py --init ssl:runs/ssl_ucf101/trunk.pth --out runs/dc_transfer --overwrite

## The test suite (CPU only, < 10 min on 2 cores) and the linter. Tests run in one process per core (at most 4),
## each test on one torch thread (tests/conftest.py), so the workers never oversubscribe the cores.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist worksteal

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache runs
