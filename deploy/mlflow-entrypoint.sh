#!/bin/sh
# Entrypoint of the `mlflow` service.
#
# MLflow's basic-auth app reads an ini file (MLFLOW_AUTH_CONFIG_PATH) that
# cannot expand environment variables, so it is written here, at start-up,
# from the environment, then the command (by default `mlflow server ...`) is
# exec'd so it runs as PID 1's child under `init: true` and gets the signals.
#
# Required: MLFLOW_ADMIN_PASSWORD, MLFLOW_AUTH_DATABASE_URI.
# Optional: MLFLOW_ADMIN_USER (admin), MLFLOW_AUTH_DEFAULT_PERMISSION (READ),
#           MLFLOW_AUTH_CONFIG_PATH (/tmp/mlflow-auth/basic_auth.ini).
#
# The admin user is created in the auth database on the first start only:
# changing MLFLOW_ADMIN_PASSWORD later does not change the stored password
# (use the MLflow users API for that).
set -eu

: "${MLFLOW_ADMIN_USER:=admin}"
: "${MLFLOW_ADMIN_PASSWORD:?MLFLOW_ADMIN_PASSWORD must be set}"
: "${MLFLOW_AUTH_DATABASE_URI:?MLFLOW_AUTH_DATABASE_URI must be set}"
: "${MLFLOW_AUTH_DEFAULT_PERMISSION:=READ}"
: "${MLFLOW_AUTH_CONFIG_PATH:=/tmp/mlflow-auth/basic_auth.ini}"
export MLFLOW_ADMIN_USER MLFLOW_ADMIN_PASSWORD MLFLOW_AUTH_DATABASE_URI \
    MLFLOW_AUTH_DEFAULT_PERMISSION MLFLOW_AUTH_CONFIG_PATH

umask 077
mkdir -p "$(dirname "$MLFLOW_AUTH_CONFIG_PATH")"

python - <<'PY'
import configparser
import os
import sys

values = {
    "default_permission": os.environ["MLFLOW_AUTH_DEFAULT_PERMISSION"],
    "database_uri": os.environ["MLFLOW_AUTH_DATABASE_URI"],
    "admin_username": os.environ["MLFLOW_ADMIN_USER"],
    "admin_password": os.environ["MLFLOW_ADMIN_PASSWORD"],
    "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
}
for key, value in values.items():
    # configparser strips surrounding whitespace and cannot hold newlines.
    if not value or value != value.strip() or "\n" in value or "\r" in value:
        sys.exit(f"mlflow-entrypoint: {key} is empty or has surrounding/embedded whitespace")

config = configparser.RawConfigParser()
# MLflow reads the file with interpolation on, so a literal '%' is written '%%'.
config["mlflow"] = {key: value.replace("%", "%%") for key, value in values.items()}
path = os.environ["MLFLOW_AUTH_CONFIG_PATH"]
with open(path, "w", encoding="utf-8") as handle:
    config.write(handle)
print(f"mlflow-entrypoint: wrote basic-auth config to {path}", file=sys.stderr)
PY

# Allow `docker compose run mlflow --port 5001` style overrides.
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- mlflow server "$@"
fi
exec "$@"
