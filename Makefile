# oct developer entry points. Everything runs from the project venv in .venv/.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
QUICKSTART ?= examples/quickstart/oct.toml

LOCK := deploy/requirements.lock
DEV := $(VENV)/.dev

.PHONY: venv dev lock quickstart quickstart-docker destroy-quickstart test test-unit security lint bench bench-deps clean chaos schemas prices

## What running oct needs, nothing more: the dependencies exactly as locked (hash-checked, the
## same versions AWS nodes install), then oct itself (editable).
venv: $(BIN)/oct
$(BIN)/oct: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	@# (byte-compiled once: with PYTHONDONTWRITEBYTECODE set, every oct and oct-ctl process would
	@# compile oct's own modules again, about 0.1 s a start)
	$(BIN)/python -m compileall -q octctl octcli >/dev/null
	@touch $@

## Test and lint tools on top (pytest, ruff, mypy, moto).
dev: $(DEV)
$(DEV): $(BIN)/oct
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

## Re-pin the dependencies after changing them in pyproject.toml (needs the package index).
lock: venv
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --universal --python-version 3.11 -o $(LOCK)

## Start a local 3-node cluster and deploy the quickstart project on it (needs only Python).
quickstart: venv
	@command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || \
		{ echo "the quickstart needs HAProxy, which serves its public port on every node: apt-get install haproxy"; exit 1; }
	$(BIN)/oct deploy -c $(QUICKSTART)
	$(BIN)/oct status -c $(QUICKSTART)

## The same project in containers (needs a running Docker engine).
quickstart-docker: venv
	$(MAKE) quickstart QUICKSTART=examples/quickstart-docker/oct.toml

destroy-quickstart: venv
	$(BIN)/oct destroy --yes -c $(QUICKSTART)

## The whole suite: unit, runtime (real Docker engine) and end-to-end (real oct-ctl clusters).
## The 25 slowest tests are listed at the end: CI's time budget is spent there.
test: dev
	$(BIN)/pytest -q --durations=25

test-unit: dev
	$(BIN)/pytest -q tests/unit

## The attack tests alone (docs/security.md): each performs an attack against real oct-ctl processes.
security: dev
	$(BIN)/pytest -q -m security

lint: dev
	$(BIN)/ruff check octctl octcli tests bench
	$(BIN)/ruff format --check octctl octcli tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

## Refresh the AWS price table (octctl/providers/aws/prices.json) from AWS's public offer files (online).
prices: dev
	$(BIN)/python -m octctl.providers.aws.price_list

## Write the published JSON schemas (docs/schemas/) from the models they describe.
schemas: dev
	$(BIN)/python -c "import json; from octcli.plan import DeployPlan; \
	print(json.dumps(DeployPlan.model_json_schema(mode='serialization'), indent=2, sort_keys=True))" \
	> docs/schemas/plan.schema.json

## Benchmarks; each script prints its figures as one JSON object on its last line.
## They compare against anchors from apt: `make bench-deps` (as root) installs them.
bench: dev
	@for script in bench/[!_]*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

bench-deps:
	apt-get install -y docker-compose dnsperf dnsmasq-base etcd-server wrk haproxy nginx

## Fault injection (root: network namespaces): SEEDS seeds from 1 with a summary; SEED=17 (or 1,5-9) replays.
SEEDS ?= 10
chaos: dev
	$(BIN)/python -m tests.chaos.run $(if $(SEED),--seed $(SEED),--seeds $(SEEDS))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
