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
# AIRFLOW_PORT: the UI's port (`make airflow AIRFLOW_PORT=8081` when 8080 is taken); the workers reach the same one.
AIRFLOW_PORT ?= 8080
AIRFLOW_ENV := PATH=$(CURDIR)/$(BIN):$$PATH AIRFLOW_HOME=$(CURDIR)/.cnnselect/airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=false AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=true \
	AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=false AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$(AIRFLOW_PORT)/execution/
airflow: $(STAMP)
	@echo "cnnselect: Airflow UI at http://127.0.0.1:$(AIRFLOW_PORT) (no login: local only, every visitor is admin)"
	$(AIRFLOW_ENV) $(BIN)/airflow db migrate
	$(AIRFLOW_ENV) $(BIN)/airflow pools set cnnselect-cpu-host 1 "cnnselect: one heavy task at a time on the CPU host"
	$(AIRFLOW_ENV) $(BIN)/airflow pools set cnnselect-gpu-host 1 "cnnselect: one measurement at a time on the GPU host"
	$(AIRFLOW_ENV) $(BIN)/airflow standalone

MLFLOW_PORT ?= 5000
ui-mlflow: $(STAMP)
	@echo "cnnselect: MLflow UI at http://127.0.0.1:$(MLFLOW_PORT)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.cnnselect/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT)

clean:
	rm -rf .cnnselect
