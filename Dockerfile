# cnnselect runtime image: Airflow 3 (scheduler, api-server, dag-processor,
# triggerer, Celery workers) and the MLflow tracking server all run from it.
#
#   docker build -t cnnselect:latest .
#
# Dependencies (torch, torchvision, apache-airflow, mlflow, psycopg2-binary,
# redis, apache-airflow-providers-celery) are pinned in pyproject.toml.
FROM python:3.11-slim

ARG APP_UID=50000
ARG APP_GID=50000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIRFLOW_HOME=/opt/airflow \
    CNNSELECT_HOME=/data/cnnselect

# Non-root runtime user. The directories that compose mounts named volumes
# on are created here and owned by that user, so fresh volumes inherit it.
RUN groupadd --gid "${APP_GID}" cnnselect \
    && useradd --uid "${APP_UID}" --gid "${APP_GID}" --create-home \
        --home-dir /home/cnnselect --shell /bin/bash cnnselect \
    && mkdir -p /opt/airflow/dags /opt/airflow/logs /opt/airflow/plugins \
        /opt/airflow/auth /data/cnnselect /mlartifacts \
    && chown -R cnnselect:cnnselect /opt/airflow /data/cnnselect /mlartifacts

# Install the project (non-editable, so the sources are not needed afterwards).
# Beside pyproject.toml's dependencies the stack needs:
#   mlflow[auth]  the basic-auth app's extras (resolved against the mlflow pin);
#   asyncpg       Airflow 3 also opens an async engine on its metadata DB and
#                 maps postgresql+psycopg2:// to postgresql+asyncpg://;
# and deploy/constraints.txt caps versions known to break the stack.
COPY . /tmp/cnnselect-src
WORKDIR /tmp/cnnselect-src
RUN pip install --constraint deploy/constraints.txt . "mlflow[auth]" asyncpg \
    && cd / && rm -rf /tmp/cnnselect-src

COPY --chown=cnnselect:cnnselect dags/ /opt/airflow/dags/
COPY deploy/mlflow-entrypoint.sh /usr/local/bin/mlflow-entrypoint.sh
RUN chmod 0755 /usr/local/bin/mlflow-entrypoint.sh

USER cnnselect
WORKDIR /opt/airflow

EXPOSE 8080 5000 8793

CMD ["airflow", "version"]
