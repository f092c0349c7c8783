# oct developer entry points. Everything runs from the project venv in .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
QUICKSTART ?= examples/quickstart/oct.toml

.PHONY: venv quickstart quickstart-docker destroy-quickstart test test-unit lint bench bench-deps clean chaos

venv: $(BIN)/oct
$(BIN)/oct: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

## Start a local 3-node cluster and deploy the quickstart project on it (needs only Python).
quickstart: venv
	$(BIN)/oct deploy -c $(QUICKSTART)
	$(BIN)/oct status -c $(QUICKSTART)

## The same project in containers (needs a running Docker engine).
quickstart-docker: venv
	$(MAKE) quickstart QUICKSTART=examples/quickstart-docker/oct.toml

destroy-quickstart: venv
	$(BIN)/oct destroy -c $(QUICKSTART)

## The whole suite: unit, runtime (real Docker engine) and end-to-end (real oct-ctl clusters).
test: venv
	$(BIN)/pytest -q

test-unit: venv
	$(BIN)/pytest -q tests/unit

lint: venv
	$(BIN)/ruff check octctl octcli tests bench
	$(BIN)/ruff format --check octctl octcli tests bench
	$(BIN)/mypy

## Benchmarks; each script prints its figures as one JSON object on its last line.
## They compare against anchors from apt: `make bench-deps` (as root) installs them.
bench: venv
	@for script in bench/[!_]*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

bench-deps:
	apt-get install -y docker-compose dnsperf dnsmasq-base etcd-server wrk

## Fault injection (root: network namespaces): SEEDS seeds from 1 with a summary; SEED=17 (or 1,5-9) replays.
SEEDS ?= 10
chaos: venv
	$(BIN)/python -m tests.chaos.run $(if $(SEED),--seed $(SEED),--seeds $(SEEDS))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
