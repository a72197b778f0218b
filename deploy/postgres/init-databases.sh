#!/bin/bash
# Runs once, from /docker-entrypoint-initdb.d, when the postgres data volume is
# empty. Creates each database named in CNNSELECT_DATABASES (space separated),
# owned by POSTGRES_USER. Idempotent: existing databases are left alone.
set -euo pipefail

databases="${CNNSELECT_DATABASES:-airflow mlflow mlflow_auth}"

for db in $databases; do
    echo "init-databases: ensuring database '${db}'"
    psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname postgres \
        --set=db="${db}" --set=owner="${POSTGRES_USER}" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
done
