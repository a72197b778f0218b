"""Static checks of the production stack in docker-compose.yml.

No Docker engine is needed: the file is validated and rendered with
`docker-compose config` (Debian's `docker-compose` package), then the rendered
YAML is checked for the expected topology.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / "deploy" / ".env.example"

# Every secret the stack needs; none may have a default.
SECRETS = (
    "POSTGRES_PASSWORD",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
)

# Optional, non-secret variables the compose file reads (they have defaults).
OPTIONAL_VARS = (
    "POSTGRES_USER",
    "MLFLOW_ADMIN_USER",
    "AIRFLOW_ADMIN_USER",
    "CNNSELECT_IMAGE",
    "AIRFLOW_API_BIND",
    "AIRFLOW_API_PORT",
    "MLFLOW_BIND",
    "MLFLOW_PORT",
    "MLFLOW_ALLOWED_HOSTS",
    "WORKER_CPU_CONCURRENCY",
)

EXPECTED_SERVICES = {
    "postgres",
    "redis",
    "mlflow",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "worker-cpu",
    "worker-gpu",
}
ONE_SHOT_SERVICES = {"airflow-init"}
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "worker-cpu",
    "worker-gpu",
}

COMMON_ENV = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__CELERY__BROKER_URL": "redis://redis:6379/0",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://airflow-apiserver:8080/execution/",
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "CNNSELECT_HOME": "/data/cnnselect",
}

DUMMY_SECRETS = {name: f"dummy-{name.lower().replace('_', '-')}" for name in SECRETS}


def _compose_binary() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        reason = (
            "!!! docker-compose binary NOT FOUND: the compose stack was NOT validated. "
            "Install it with `apt-get update && apt-get install -y docker-compose`. !!!"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return binary


def _run_config(tmp_path: Path, extra_env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run `docker-compose config` isolated from the caller's environment.

    The compose variables, COMPOSE_*/DOCKER_* settings and any `.env` in the
    project directory must not leak in, or a missing secret could be masked.
    """
    binary = _compose_binary()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in SECRETS and key not in OPTIONAL_VARS and not key.startswith(("COMPOSE_", "DOCKER_"))
    }
    env.update(extra_env)
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    cmd = [
        binary,
        "--env-file",
        str(empty_env_file),
        "--project-directory",
        str(REPO_ROOT),
        "-f",
        str(COMPOSE_FILE),
        "config",
        *args,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def _as_argv(command) -> list[str]:
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def _container_ports(service: dict) -> set[int]:
    """Container-side port of each `ports` entry (short or long syntax)."""
    result = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            result.add(int(port["target"]))
        else:
            result.add(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return result


def _has_flag(argv: list[str], flag: str, value: str) -> bool:
    return any(a == flag and b == value for a, b in zip(argv, argv[1:], strict=False)) or f"{flag}={value}" in argv


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    tmp_path = tmp_path_factory.mktemp("compose")
    result = _run_config(tmp_path, DUMMY_SECRETS)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    data = yaml.safe_load(result.stdout)
    assert isinstance(data, dict) and "services" in data
    return data


def test_compose_config_is_valid(tmp_path):
    result = _run_config(tmp_path, DUMMY_SECRETS, "-q")
    assert result.returncode == 0, f"docker-compose config -q failed:\n{result.stderr}"


def test_services_exist(rendered):
    assert set(rendered["services"]) == EXPECTED_SERVICES


def test_worker_queues(rendered):
    services = rendered["services"]
    cpu = _as_argv(services["worker-cpu"]["command"])
    gpu = _as_argv(services["worker-gpu"]["command"])
    assert cpu[:3] == ["airflow", "celery", "worker"], cpu
    assert gpu[:3] == ["airflow", "celery", "worker"], gpu
    assert _has_flag(cpu, "-q", "default,edge"), cpu
    assert _has_flag(gpu, "-q", "gpu"), gpu
    # cnn_evaluation gets one measure task per queue that has a worker (without the gpu profile: no gpu row)
    assert services["airflow-scheduler"]["environment"]["CNNSELECT_QUEUES"] == "default,edge"


def test_only_the_workers_preload_the_measuring_stack(rendered):
    services = rendered["services"]
    from tests.integration.stack import PRELOAD  # the integration stack's workers get the same

    ((key, value),) = PRELOAD.items()
    for name in AIRFLOW_SERVICES | ONE_SHOT_SERVICES:
        got = services[name]["environment"].get(key)
        assert got == (value if name.startswith("worker-") else None), (name, got)


def test_gpu_worker_reserves_nvidia_device_behind_profile(rendered):
    worker = rendered["services"]["worker-gpu"]
    assert worker.get("profiles") == ["gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and int(d.get("count", 0)) >= 1 and "gpu" in d.get("capabilities", [])
        for d in devices
    ), devices
    # Nothing else is tied to the gpu profile, and nothing else asks for a GPU.
    for name, service in rendered["services"].items():
        if name != "worker-gpu":
            assert not service.get("profiles"), name
            assert "deploy" not in service or "devices" not in str(service["deploy"]), name


def test_long_running_services_are_health_gated(rendered):
    services = rendered["services"]
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on must use conditions"
        for dep, spec in depends_on.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = spec.get("condition")
            assert condition in {"service_healthy", "service_completed_successfully"}, (name, dep, condition)
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy, but it has none"
            else:
                assert dep in ONE_SHOT_SERVICES, (name, dep)
        if name in ONE_SHOT_SERVICES:
            continue
        healthcheck = service.get("healthcheck") or {}
        has_healthcheck = (
            bool(healthcheck.get("test"))
            and not healthcheck.get("disable")
            and (_as_argv(healthcheck["test"])[:1] != ["NONE"])
        )
        waits_on_healthy = any(spec.get("condition") == "service_healthy" for spec in depends_on.values())
        assert has_healthcheck or waits_on_healthy, f"{name} is neither health-checked nor health-gated"


def test_healthcheck_targets(rendered):
    services = rendered["services"]
    assert "pg_isready" in " ".join(_as_argv(services["postgres"]["healthcheck"]["test"]))
    assert "redis-cli ping" in " ".join(_as_argv(services["redis"]["healthcheck"]["test"]))
    assert "/health" in " ".join(_as_argv(services["mlflow"]["healthcheck"]["test"]))
    assert "/api/v2/monitor/health" in " ".join(_as_argv(services["airflow-apiserver"]["healthcheck"]["test"]))


def test_airflow_services_wait_for_init_and_backends(rendered):
    services = rendered["services"]
    for name in AIRFLOW_SERVICES:
        depends_on = services[name]["depends_on"]
        assert depends_on["airflow-init"]["condition"] == "service_completed_successfully", name
        assert depends_on["postgres"]["condition"] == "service_healthy", name
        assert depends_on["redis"]["condition"] == "service_healthy", name
    for name in ("worker-cpu", "worker-gpu"):
        depends_on = services[name]["depends_on"]
        assert depends_on["airflow-apiserver"]["condition"] == "service_healthy", name
        assert depends_on["mlflow"]["condition"] == "service_healthy", name
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["airflow-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def _dag_pools() -> set[str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("cnn_evaluation_pools", REPO_ROOT / "dags" / "cnn_evaluation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pools = {t.pool for t in mod.dag.tasks}
    assert pools >= {mod.QUEUES[q] for q in mod.DEPLOYED}  # the deployed queues' host pools
    return set(mod.POOLS)  # every host pool a deployment's queues may name: airflow-init creates them all


def test_airflow_init_migrates_and_creates_pools(rendered):
    script = " ".join(_as_argv(rendered["services"]["airflow-init"]["command"]))
    assert "airflow db migrate" in script
    for pool in _dag_pools():  # every pool a DAG names exists in production
        assert re.search(rf"airflow pools set {pool} 1\b", script), pool
    assert script.index("airflow db migrate") < script.index("airflow pools set")


def test_airflow_commands(rendered):
    services = rendered["services"]
    expected = {
        "airflow-apiserver": ["airflow", "api-server"],
        "airflow-scheduler": ["airflow", "scheduler"],
        "airflow-dag-processor": ["airflow", "dag-processor"],
        "airflow-triggerer": ["airflow", "triggerer"],
    }
    for name, prefix in expected.items():
        assert _as_argv(services[name]["command"])[:2] == prefix, name
    assert 8080 in _container_ports(services["airflow-apiserver"])
    assert 5000 in _container_ports(services["mlflow"])


def test_shared_environment(rendered):
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    assert "x-airflow-common" in raw, "the shared Airflow settings must live under the x-airflow-common anchor"
    services = rendered["services"]
    images = {services[name]["image"] for name in AIRFLOW_SERVICES | ONE_SHOT_SERVICES | {"mlflow"}}
    assert len(images) == 1, images
    user = "cnnselect"
    password = DUMMY_SECRETS["POSTGRES_PASSWORD"]
    for name in AIRFLOW_SERVICES | ONE_SHOT_SERVICES:
        env = services[name]["environment"]
        for key, value in COMMON_ENV.items():
            assert env.get(key) == value, (name, key, env.get(key))
        airflow_db = f"{user}:{password}@postgres:5432/airflow"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"postgresql+psycopg2://{airflow_db}", name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == f"db+postgresql+psycopg2://{airflow_db}", name
        assert env["AIRFLOW__CORE__FERNET_KEY"] == DUMMY_SECRETS["AIRFLOW_FERNET_KEY"], name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == DUMMY_SECRETS["AIRFLOW_JWT_SECRET"], name
        assert env["MLFLOW_TRACKING_USERNAME"] == "admin", name
        assert env["MLFLOW_TRACKING_PASSWORD"] == DUMMY_SECRETS["MLFLOW_ADMIN_PASSWORD"], name


def test_mlflow_server(rendered):
    mlflow = rendered["services"]["mlflow"]
    argv = _as_argv(mlflow["command"])
    assert argv[:2] == ["mlflow", "server"], argv
    password = DUMMY_SECRETS["POSTGRES_PASSWORD"]
    assert _has_flag(argv, "--backend-store-uri", f"postgresql+psycopg2://cnnselect:{password}@postgres:5432/mlflow")
    assert _has_flag(argv, "--artifacts-destination", "/mlartifacts")
    assert "--serve-artifacts" in argv
    assert _has_flag(argv, "--host", "0.0.0.0")
    assert _has_flag(argv, "--port", "5000")
    assert _has_flag(argv, "--app-name", "basic-auth")
    assert "mlflow-entrypoint.sh" in " ".join(_as_argv(mlflow["entrypoint"]))
    env = mlflow["environment"]
    assert env["MLFLOW_ADMIN_PASSWORD"] == DUMMY_SECRETS["MLFLOW_ADMIN_PASSWORD"]
    assert env["MLFLOW_AUTH_DATABASE_URI"].endswith("@postgres:5432/mlflow_auth")
    assert env["MLFLOW_AUTH_CONFIG_PATH"]
    assert "mlflow" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")


def test_volumes(rendered):
    services = rendered["services"]

    def targets(name: str) -> set[str]:
        result = set()
        for volume in services[name].get("volumes", []):
            result.add(volume["target"] if isinstance(volume, dict) else str(volume).split(":")[1])
        return result

    assert "/var/lib/postgresql/data" in targets("postgres")
    assert any(t.startswith("/docker-entrypoint-initdb.d/") for t in targets("postgres"))
    assert "/mlartifacts" in targets("mlflow")
    for name in ("worker-cpu", "worker-gpu"):
        assert "/data/cnnselect" in targets(name), name
    assert {"postgres-data", "mlflow-artifacts", "cnnselect-data"} <= set(rendered.get("volumes") or {})


def test_secrets_never_have_defaults():
    text = COMPOSE_FILE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"(?![A-Za-z0-9_])([^}]*)\}", text)
        assert uses, f"{name} is not used by docker-compose.yml"
        for modifier in uses:
            assert modifier.startswith(":?"), f"${{{name}{modifier}}} must be ${{{name}:?...}} (no default)"
        assert not re.search(r"\$" + name + r"(?![A-Za-z0-9_{])", text), f"bare ${name} bypasses the check"


def test_env_example_lists_every_secret_empty():
    entries = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            entries[key.strip()] = value.strip()
    for name in SECRETS:
        assert name in entries, f"{name} missing from deploy/.env.example"
        assert entries[name] == "", f"{name} must be empty in deploy/.env.example"


def test_config_fails_without_secrets(tmp_path):
    result = _run_config(tmp_path, {}, "-q")
    assert result.returncode != 0, "docker-compose config succeeded with no secrets set"
    assert any(name in result.stderr for name in SECRETS), result.stderr


@pytest.mark.parametrize("missing", SECRETS)
def test_config_fails_when_one_secret_is_missing(tmp_path, missing):
    env = {name: value for name, value in DUMMY_SECRETS.items() if name != missing}
    result = _run_config(tmp_path, env, "-q")
    assert result.returncode != 0, f"docker-compose config succeeded without {missing}"
    assert missing in result.stderr, result.stderr
