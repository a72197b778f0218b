"""Shared fixtures: real stores and real services, started or found on loopback; never mocks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"

# Airflow reads its configuration at import: point it at a throw-away home before anything imports it.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="cnnselect-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "false"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"
os.environ.pop("AIRFLOW__CORE__EXECUTOR", None)


def service_missing(what: str, why: str) -> None:
    """Skip loudly on a user's machine; under CI=true a missing service is a failure, never a skip."""
    msg = f"{what} is not available ({why}); start it or this test cannot run"
    if IN_CI:
        pytest.fail(f"CI=true: {msg}")
    pytest.skip(f"!!! SKIPPED: {msg}")


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own CNNSELECT_HOME unless it sets one; nothing touches the user's .cnnselect/."""
    if "CNNSELECT_HOME" not in os.environ:
        monkeypatch.setenv("CNNSELECT_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("CNNSELECT_LATENCY_LOCK", str(tmp_path_factory.getbasetemp() / "latency.lock"))
    # Shared 2-core CI runners make latency samples noisy; the results gate's CoV check is tested with explicit limits.
    monkeypatch.setenv("CNNSELECT_GATE_MAX_LATENCY_COV", os.environ.get("CNNSELECT_TEST_GATE_MAX_LATENCY_COV", "1e9"))


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled digits, written once per session."""
    from evaluators.data import write_digits

    base = tmp_path_factory.mktemp("data")
    write_digits(base / "digits", base / "index")
    root = base / "digits"
    return root


def _postgres_uri() -> str:
    return os.environ.get("CNNSELECT_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def postgres_admin_uri() -> str:
    import sqlalchemy as sa

    uri = _postgres_uri()
    try:
        sa.create_engine(uri).connect().close()
    except Exception as exc:
        service_missing("PostgreSQL", f"{uri}: {type(exc).__name__}")
    return uri


_CREATED: list[tuple[str, str]] = []  # (admin URI, database) made by this session, dropped at its end


def fresh_postgres_db(admin_uri: str) -> str:
    """A new empty database on the running server, dropped when the test session ends; returns its URI."""
    import sqlalchemy as sa

    name = f"cnnselect_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin_uri, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    _CREATED.append((admin_uri, name))
    return admin_uri.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases() -> Iterator[None]:
    """Repeated runs leave no databases behind on the developer's server."""
    yield
    if not _CREATED:
        return
    import sqlalchemy as sa

    from registry.stores.mlflow_tables import dispose_engines

    dispose_engines()  # this process's pools: their connections would hold the databases open
    for admin_uri, name in _CREATED:
        engine = sa.create_engine(admin_uri, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception as exc:  # never fails the run: a database left behind is only clutter
            print(f"could not drop test database {name}: {exc}", file=sys.stderr)
        finally:
            engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def tracking_uri(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same suite on SQLite and on PostgreSQL (MLflow's tests/db pattern: one suite, the store URI swapped).

    One fresh store per module (creating MLflow's schema takes seconds); tests keep apart by dataset name.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    else:
        yield fresh_postgres_db(request.getfixturevalue("postgres_admin_uri"))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata DB (SQLite) for dag.test()."""
    out = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return _AIRFLOW_HOME
