# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install litert lint ui-mlflow airflow clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# LiteRT's converter (litert-torch) pins typing-extensions < 4.13 (through xdsl) where Airflow needs >= 4.14, so the
# cnnselect[litert] extra lives in a venv of its own, layered over .venv: its own site-packages first, then .venv's
# and this checkout (a .pth), so only what LiteRT needs is installed twice. `.venv-litert/bin/cnnselect` runs the
# litert-* runners; a LiteRT worker is started from it.
LITERT := .venv-litert
LITERT_STAMP := $(LITERT)/.installed
$(LITERT_STAMP): $(STAMP)
	test -x $(LITERT)/bin/python || $(BIN)/python -m venv $(LITERT)
	$(BIN)/python -c 'import sysconfig; print("$(CURDIR)"); print(sysconfig.get_paths()["purelib"])' \
		> "$$($(LITERT)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz_cnnselect.pth"
	$(LITERT)/bin/pip install -q $$($(BIN)/python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["litert"]))')
	$(LITERT)/bin/pip install -q --no-deps -e .
	touch $(LITERT_STAMP)

litert: $(LITERT_STAMP)

## The main job on the embedded default: bundled digits, SQLite MLflow under .cnnselect/
demo: $(STAMP)
	$(BIN)/cnnselect demo

## The whole test suite (what .ci/run calls)
test: $(STAMP) $(LITERT_STAMP)
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
