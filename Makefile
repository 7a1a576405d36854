# Two commands on a fresh clone: `make run` and `make test`. Both create .venv themselves.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PORT ?= 8000
export PORT

.PHONY: install run test test-services test-browser lint format migrations-check ci clean widget

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py setupdemo
	$(VENV)/bin/daphne -b 127.0.0.1 -p $(PORT) --websocket-max-message-size 65536 backend.asgi:application

# pytest's exit 5 (no tests collected) is reported and fails like any other error.
test: install
	@$(VENV)/bin/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; exit $$status

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
