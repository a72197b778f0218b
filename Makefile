# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install lint ui-mlflow airflow clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default: bundled digits, SQLite MLflow under .cnnselect/
demo: $(STAMP)
	$(BIN)/cnnselect demo

## The whole test suite (what .ci/run calls)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true
	$(BIN)/mypy

# The embedded Airflow: SQLite metadata DB, LocalExecutor, no login (local only), the DAGs of this checkout.
# PATH: `airflow standalone` starts its scheduler, api-server, ... as `airflow` from PATH (this venv's).
AIRFLOW_ENV := PATH=$(CURDIR)/$(BIN):$$PATH AIRFLOW_HOME=$(CURDIR)/.cnnselect/airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=false AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=true \
	AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=false
airflow: $(STAMP)
	$(AIRFLOW_ENV) $(BIN)/airflow db migrate
	$(AIRFLOW_ENV) $(BIN)/airflow pools set cnnselect-cpu-host 1 "cnnselect: one heavy task at a time on the CPU host"
	$(AIRFLOW_ENV) $(BIN)/airflow pools set cnnselect-gpu-host 1 "cnnselect: one measurement at a time on the GPU host"
	$(AIRFLOW_ENV) $(BIN)/airflow standalone

ui-mlflow: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.cnnselect/mlflow.db --port 5000

clean:
	rm -rf .cnnselect
