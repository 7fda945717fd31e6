# statarb: the two commands a new user needs are `make demo` and `make test`; both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1
# Real candles for the demo, read in place (see ../shared/data/binance-usdt-1h-2021/SOURCE.md); the environment's
# STATARB_DATA_DIR wins.
export STATARB_DATA_DIR ?= ../shared/data/binance-usdt-1h-2021

.PHONY: install demo test run web worker beat lint bench migrate seed clean cluster

# Reinstall only when a requirements file changed.
install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt package.json package-lock.json
	@if ! pkg-config --exists mysqlclient 2>/dev/null && ! pkg-config --exists mariadb 2>/dev/null; then \
		echo "Installing the MySQL/MariaDB client headers (needed to build mysqlclient)..."; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq pkg-config libmariadb-dev >/dev/null \
		|| { echo "Could not install libmariadb-dev; install it (or default-libmysqlclient-dev) by hand."; exit 1; }; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	npm ci --no-audit --no-fund --silent   # the dashboard's chart and refresh libraries (package-lock.json)
	@if ! command -v chromium >/dev/null; then \
		echo "Installing Debian's chromium (the browser test drives it headless with Playwright)..."; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y -qq chromium >/dev/null || echo "Could not install chromium; the browser test will skip."; \
	fi
	touch $(STAMP)

migrate: install
	$(PY) manage.py migrate --noinput

seed: migrate
	$(PY) manage.py setup_periodic_tasks
	$(PY) manage.py seed_demo

# The main job on the embedded default (SQLite + SQLite broker, no server needed, no network): migrate, seed,
# import the shared real candles, replay the last two months through the paper bot with the guard (notifications to the
# console), screen and grade, print the replay's KPIs and halts, then run the dashboard with a real Celery worker
# and beat beside it, on the stored-data clock: STATARB_MARKET_CLOCK=stored (the demo's simulated clock, set here
# and nowhere else) walks the paper account through the stored candles, one bar every STATARB_DEMO_BAR_SECONDS.
# DEBUG on for the demo only (readable error pages, loopback exchanges); it is off unless set.
STATARB_DEMO_BAR_SECONDS ?= 10
demo: export DEBUG := 1
demo: seed
	$(PY) manage.py collectstatic --noinput -v 0
	$(PY) manage.py demo_pipeline
	STATARB_MARKET_CLOCK=stored STATARB_DEMO_BAR_SECONDS=$(STATARB_DEMO_BAR_SECONDS) $(PY) manage.py run_stack $(DEMO_ARGS)

# One BLAS thread: the suite's many small regressions (statsmodels references) run several times faster without
# thread start-up on every call, and two test processes (worker + pytest) don't oversubscribe two cores.
test: install
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/pytest -q

run: migrate
	$(PY) manage.py setup_periodic_tasks
	$(PY) manage.py run_stack

web: migrate
	$(PY) manage.py runserver 127.0.0.1:8000

# The whole process set of a deployment on this machine (docs/OPERATIONS.md): web (gunicorn), beat, the selection
# pool, the pipelines, risk and notifications workers and one worker per enabled account, run by honcho against the
# MariaDB and Redis already running. DATABASE_URL / CELERY_BROKER_URL from the environment win over these defaults.
CLUSTER_BIND ?= 127.0.0.1:8000
CLUSTER_ARGS ?=
cluster: export DATABASE_URL ?= mysql://root@127.0.0.1:3306/statarb
cluster: export CELERY_BROKER_URL ?= redis://127.0.0.1:6379/0
cluster: install
	$(PY) manage.py cluster --bind $(CLUSTER_BIND) $(CLUSTER_ARGS)

worker: install
	$(BIN)/celery -A statarb_site worker -l info -Q default,selection,signals,risk,notifications

beat: install
	$(BIN)/celery -A statarb_site beat -l info

# ruff; the floors and ccxt's one home (import-linter, contracts in pyproject.toml); no function above cyclomatic
# complexity 20 and no module above 500 lines outside tests and migrations (radon; wc).
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	@out=$$($(BIN)/radon cc -s -n D -e "tests/*,*/migrations/*,.venv/*,var/*" .); \
	if [ -n "$$out" ]; then echo "$$out"; echo "lint: functions above cyclomatic complexity 20"; exit 1; fi
	@out=$$(find . -name '*.py' -not -path './.venv/*' -not -path './tests/*' -not -path './var/*' \
	        -not -path '*/migrations/*' -exec wc -l {} + | awk '$$2 != "total" && $$1 > 500'); \
	if [ -n "$$out" ]; then echo "$$out"; echo "lint: modules above 500 lines"; exit 1; fi

bench: install
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf var/*.sqlite3* var/static .pytest_cache .ruff_cache
