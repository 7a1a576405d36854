# Two commands on a fresh clone: `make run` and `make test`. Both create .venv themselves.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PORT ?= 8000
export PORT

.PHONY: install run test test-services test-browser lint format migrations-check ci clean bench widget

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

install: $(VENV)/.installed

# Serves daphne on $(PORT) with a Celery worker beside it (scripts/devserver.py); Ctrl-C stops both.
run: install
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py setupdemo
	$(PY) scripts/devserver.py

# pytest's exit 5 (no tests collected) is reported and fails like any other error.
test: install
	@$(VENV)/bin/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; exit $$status

# The suite again on PostgreSQL and the Redis channel layer; pytest-django creates test_<db> itself.
# The Redis DB number is this run's own (the cross-process tests use the next ones up). The widget's browser
# tests (tests/browser) run once, in `make test`: they test its JavaScript, the same on any database, and
# running them again would take minutes of CI's 30. The agents' browser test does run here, on Redis.
SERVICES_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/parley_services
SERVICES_REDIS_URL ?= redis://127.0.0.1:6379/12
# RabbitMQ, for the worker and /healthz tests that run Celery on it (each test uses a queue of its own).
SERVICES_AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672//
test-services: install
	@DATABASE_URL=$(SERVICES_DATABASE_URL) REDIS_URL=$(SERVICES_REDIS_URL) SERVICES_AMQP_URL=$(SERVICES_AMQP_URL) \
	PARLEY_SERVICES=1 $(VENV)/bin/pytest --ignore=tests/browser; \
	status=$$?; if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; exit $$status

# Benchmarks (docs/benchmarks.md); not part of `make test`. About 10 to 15 minutes.
$(VENV)/.bench-installed: bench/requirements.txt $(VENV)/.installed
	$(PY) -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	touch $@

# PostgreSQL and Redis when they answer (the database is created and dropped), else SQLite and in-memory.
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/parley_bench
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/13
bench: $(VENV)/.bench-installed
	BENCH_DATABASE_URL=$(BENCH_DATABASE_URL) BENCH_REDIS_URL=$(BENCH_REDIS_URL) $(PY) -m bench.run

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

migrations-check: install
	$(PY) manage.py makemigrations --check --dry-run

# Minify widget/parley.js into widget/dist/parley.js (committed, so a fresh clone needs no npm).
# The banner records the source's SHA-256; tests/widget/test_widget_size.py fails when the build is stale.
widget:
	cd widget && npm ci --no-audit --no-fund --silent
	cd widget && ./node_modules/.bin/esbuild parley.js --minify --target=es2017 --legal-comments=none \
		--banner:js="/*! Parley chat widget (one global: window.Parley); built from widget/parley.js sha256:$$(sha256sum parley.js | cut -c1-64) by make widget */" \
		--outfile=dist/parley.js --log-level=warning

ci: lint migrations-check test

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
