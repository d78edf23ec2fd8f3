# The two commands of the quick start: `make run` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
TEST_WORKERS ?= 2

.PHONY: install run test fuzz soak lint clean lock

# The versions and hashes in requirements-test.lock, then the project itself (no more
# dependencies): what `make run`, `make test` and CI install is what was tested.
$(STAMP): pyproject.toml requirements-test.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements-test.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## lock: the lock files again from pyproject.toml's ranges, keeping today's versions where they
##       still fit (UPGRADE=1 takes the newest), with hashes (pip-tools, in a venv of its own)
lock:
	UPGRADE=$(UPGRADE) bash scripts/lock.sh

## .env: docker-compose's settings, with a random database password (never overwritten)
.env:
	@umask 077 && printf 'POSTGRES_PASSWORD=%s\n' "$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))')" > .env
	@echo "wrote .env (0600) with a random POSTGRES_PASSWORD"

## run: install, initialise (idempotent), serve the API on the embedded SQLite default and
##      a console for a first agency (scripts/run.sh)
run: install
	$(VENV)/bin/ledger init
	VENV=$(VENV) HOST=$(HOST) PORT=$(PORT) bash scripts/run.sh

## test: the whole suite, PostgreSQL included (a throwaway database or server)
test: install
	bash scripts/ensure-chromium.sh
	PY=$(PY) bash scripts/with-postgres.sh $(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

## fuzz: the schema-driven fuzzing of the whole API, with many more examples
fuzz: install
	LEDGER_FUZZ_EXAMPLES=$${LEDGER_FUZZ_EXAMPLES:-300} $(VENV)/bin/pytest -q tests/test_fuzz.py

## soak: the SIGKILL crash test for longer, on SQLite and PostgreSQL (LEDGER_SOAK_KILLS kills over
## about LEDGER_SOAK_SECONDS seconds of serving, LEDGER_SOAK_WRITERS writers, LEDGER_SOAK_SEED)
soak: install
	LEDGER_SOAK_KILLS=$${LEDGER_SOAK_KILLS:-20} LEDGER_SOAK_SECONDS=$${LEDGER_SOAK_SECONDS:-300} \
	PY=$(PY) bash scripts/with-postgres.sh $(VENV)/bin/pytest -q -s -n 0 tests/test_crash.py $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src projections tests
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
