# Yuanjiao — `make help` lists the targets.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PG_TEST_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
# Two cores: run the plain tests in two workers, the media and browser tests one at a time.
PYTEST_WORKERS ?= 2

.PHONY: help extract-messages setup setup-dev run serve test test-sqlite test-postgres test-live lint format bench vendor translations clean stack stack-down stack-deps stack-smoke

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime $@

static/vendor/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	rm -rf static/vendor && mkdir -p static/vendor/swagger-ui-dist
	cp node_modules/socket.io-client/dist/socket.io.min.js static/vendor/
	cp node_modules/hls.js/dist/hls.light.min.js static/vendor/hls.min.js
	cp node_modules/swagger-ui-dist/swagger-ui.css node_modules/swagger-ui-dist/swagger-ui-bundle.js \
	   node_modules/swagger-ui-dist/swagger-ui-standalone-preset.js static/vendor/swagger-ui-dist/
	touch $@

vendor: static/vendor/.stamp ## Copy front-end libraries from npm into static/vendor

translations: $(VENV)/.runtime ## Compile the English catalogue (Chinese is the source language)
	$(BIN)/pybabel compile -f -d translations -D messages

extract-messages: $(VENV)/.runtime ## Update translations/en from the Chinese source strings
	$(BIN)/pybabel -q extract -F babel.cfg -k _l -k lazy_gettext -k lazy_ngettext:1,2 -c TRANSLATORS: \
		--project=Yuanjiao -o translations/messages.pot \
		--ignore-dirs=".* ._ __pycache__ node_modules static tests bench migrations instance recordings docs" .
	$(BIN)/pybabel -q update -i translations/messages.pot -d translations -l en --no-fuzzy-matching --ignore-obsolete

setup: $(VENV)/.runtime vendor translations ## Install what the app needs

setup-dev: $(VENV)/.dev vendor translations ## Install what the tests need too

run: setup ## Run the app on its embedded defaults (SQLite, in-process media, demo data)
	$(BIN)/python app.py

serve: setup ## Production web process: gunicorn, one gevent worker (docs/deployment.md)
	$(BIN)/gunicorn --config gunicorn.conf.py

stack-deps: ## Debian packages the stack needs (nginx, janus); PostgreSQL and Redis are the machine's
	@{ [ -x /usr/sbin/nginx ] && [ -x /usr/bin/janus ]; } || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light janus >/dev/null; }

stack: setup stack-deps ## Start nginx :8080, 2 gunicorn web processes, a media node (PostgreSQL, Redis)
	$(BIN)/python deploy/stack.py up

stack-smoke: ## Check a running stack through nginx: check-in across processes, HLS (admin env)
	$(BIN)/python deploy/smoke.py

stack-down: ## Stop what `make stack` started
	$(BIN)/python deploy/stack.py down

test: setup-dev ## Run every test: SQLite, PostgreSQL, then media and browser tests
	$(MAKE) --no-print-directory test-sqlite test-postgres test-live

test-sqlite: setup-dev
	$(BIN)/python -m pytest -m "not browser and not media and not live" -n $(PYTEST_WORKERS) -q

test-postgres: setup-dev
	YUANJIAO_TEST_DATABASE_URL=$(PG_TEST_URL) $(BIN)/python -m pytest -m "not browser and not media and not live" -n $(PYTEST_WORKERS) -q

test-live: setup-dev
	$(BIN)/python -m pytest -m "browser or media or live" -q

lint: setup-dev ## ruff, then mypy over the packages (pyproject.toml lists them)
	$(BIN)/ruff check .
	$(BIN)/mypy

format: setup-dev
	$(BIN)/ruff check --fix .

bench: setup-dev ## Run the benchmarks under bench/ (they print their figures)
	$(BIN)/python bench/calendar.py
	$(BIN)/python bench/attendance.py
	$(BIN)/python bench/relay.py

clean:
	rm -rf $(VENV) node_modules static/vendor
