# Velocity Platform — everything a newcomer needs is a target here.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

STATE_DIR := $(CURDIR)/.velocity
export VELOCITY_STATE_DIR := $(STATE_DIR)
export DAGSTER_HOME := $(STATE_DIR)/dagster_home
export VELOCITY_DUCKDB_PATH ?= $(STATE_DIR)/velocity.duckdb
export VELOCITY_LAKE_PATH ?= $(STATE_DIR)/lake
export VELOCITY_STORE_URL ?= sqlite:///$(STATE_DIR)/operational.sqlite
# Development tokens of the local simulators; real ones come from the environment.
export VELOCITY_ERP_TOKEN ?= erp-dev-token
export VELOCITY_WMS_TOKEN ?= wms-dev-token
ERP_PORT ?= 8710
WMS_PORT ?= 8720
UI_PORT ?= 3000
DELTAS_METRICS_PORT ?= 9464
# Production (deploy/): the PostgreSQL server for Dagster's storage and the operational store. Read
# from the environment by deploy/prod.py, never put on a command line that make would echo.
export VELOCITY_PG_URL ?= postgresql+psycopg2://postgres@127.0.0.1:5432
PROD_DIR ?= $(STATE_DIR)/prod
CODE_SERVER_PORT ?= 4266

.PHONY: install demo dev test bench check-defs clean prod

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	@# Bytecode compiled once, here, as pip does and uv does not by default: with
	@# PYTHONDONTWRITEBYTECODE set (as on the CI machine) every process the platform starts (code
	@# server, run worker, daemon, command line) would otherwise compile Dagster from source again.
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/velocity-platform demo

dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	@# The duckdb pool, set before the daemon's first pass (which would take a pool it has not
	@# created yet as unlimited and start the first queued runs together).
	@$(BIN)/dagster instance concurrency set duckdb 1 >/dev/null
	@# The exception service waits for both simulators to answer, then prints its ready line.
	@# Each process is a job of its own (set -m: none ignores signals); Ctrl-C reaches `dagster
	@# dev` from the terminal, and when it ends the trap sends SIGTERM to the simulators and the
	@# service and waits for them to stop cleanly (`kill 0` missed them: each job has its own group).
	@set -m; trap 'kill $$(jobs -p) 2>/dev/null; wait' EXIT; trap 'exit 130' INT TERM; \
	$(BIN)/velocity-platform simulate erp --port $(ERP_PORT) & \
	$(BIN)/velocity-platform simulate wms --port $(WMS_PORT) --wms-state $(STATE_DIR)/wms_state.jsonl & \
	export VELOCITY_ERP_URL=http://127.0.0.1:$(ERP_PORT) VELOCITY_WMS_URL=http://127.0.0.1:$(WMS_PORT) \
	  VELOCITY_DELTAS_METRICS_PORT=$(DELTAS_METRICS_PORT); \
	( until curl -sf -o /dev/null http://127.0.0.1:$(ERP_PORT)/healthz && curl -sf -o /dev/null http://127.0.0.1:$(WMS_PORT)/healthz; do sleep 0.5; done; \
	  exec $(BIN)/velocity-platform deltas ) & \
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

# Four workers on two cores: most of the suite's wall time is waiting (daemon ticks, retry
# delays, simulated outages), not computing, so two more workers overlap the waits.
test: $(STAMP)
	@# The platform's own modules too (the editable install leaves them as source): the suite starts
	@# hundreds of processes that import them. Stale bytecode is ignored by Python, never wrong.
	@$(BIN)/python -m compileall -q velocity_platform velocity_platform_tests benchmarks deploy >/dev/null
	$(BIN)/pytest -q -n 4 --dist loadgroup --no-loadscope-reorder --durations=15

# One business day of each scenario through Dagster, against the per-record way, the engine
# floor and the parse ceiling (docs/performance.md).
bench: $(STAMP)
	$(BIN)/velocity-platform bench --scenario S M L --json artifacts/bench.json

# Code server, webserver and daemon on PostgreSQL (SIMULATORS=1 adds the ERP and WMS simulators).
prod: $(STAMP)
	$(BIN)/python deploy/prod.py up --home $(PROD_DIR)/dagster_home --lake-path $(PROD_DIR)/lake --duckdb-path $(PROD_DIR)/velocity.duckdb \
	  --code-server-port $(CODE_SERVER_PORT) --ui-port $(UI_PORT) \
	  $(if $(SIMULATORS),--simulators --erp-port $(ERP_PORT) --wms-port $(WMS_PORT))

check-defs: $(STAMP)
	$(BIN)/dg check defs

clean:
	rm -rf $(STATE_DIR)
