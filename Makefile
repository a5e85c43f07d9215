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
export VELOCITY_STORE_URL ?= sqlite:///$(STATE_DIR)/operational.sqlite
# Development tokens of the local simulators; real ones come from the environment.
export VELOCITY_ERP_TOKEN ?= erp-dev-token
export VELOCITY_WMS_TOKEN ?= wms-dev-token
ERP_PORT ?= 8710
WMS_PORT ?= 8720
UI_PORT ?= 3000

.PHONY: install demo dev test check-defs clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/velocity-platform demo

dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	@set -m; trap 'kill 0' EXIT INT TERM; \
	$(BIN)/velocity-platform simulate erp --port $(ERP_PORT) & \
	$(BIN)/velocity-platform simulate wms --port $(WMS_PORT) --wms-state $(STATE_DIR)/wms_state.jsonl & \
	VELOCITY_ERP_URL=http://127.0.0.1:$(ERP_PORT) VELOCITY_WMS_URL=http://127.0.0.1:$(WMS_PORT) \
	  $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

test: $(STAMP)
	$(BIN)/pytest -q

check-defs: $(STAMP)
	$(BIN)/dg check defs

clean:
	rm -rf $(STATE_DIR)
